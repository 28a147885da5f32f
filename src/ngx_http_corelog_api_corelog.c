
/*
 * Copyright (C) corelog authors
 *
 * POST /core-log/{trafficSourceId}: a CoreLog record.  Fields, the
 * statement that checks and inserts a batch of them, and the 201.
 */


#include "ngx_http_corelog.h"


#define NGX_HTTP_CORELOG_ELAPSED_MAX      86400000.0   /* one day, in ms */
#define NGX_HTTP_CORELOG_USER_ID_MAX      255


enum {
    NGX_HTTP_CORELOG_COL_ID = 0,
    NGX_HTTP_CORELOG_COL_ACCOUNT,
    NGX_HTTP_CORELOG_COL_TRAFFIC_SOURCE,
    NGX_HTTP_CORELOG_COL_CORE_PATHNAME,
    NGX_HTTP_CORELOG_COL_REQUEST,
    NGX_HTTP_CORELOG_COL_RESPONSE,
    NGX_HTTP_CORELOG_COL_STATUS,
    NGX_HTTP_CORELOG_COL_METHOD,
    NGX_HTTP_CORELOG_COL_LEVEL,
    NGX_HTTP_CORELOG_COL_ELAPSED,
    NGX_HTTP_CORELOG_COL_USER,
    NGX_HTTP_CORELOG_COL_CREATED,
    NGX_HTTP_CORELOG_NCOLS
};


typedef struct {
    u_char                    id[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    traffic_source[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    core_pathname[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    request[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    response[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    created[NGX_HTTP_CORELOG_TIME_LEN];
    u_char                    status_text[NGX_INT_T_LEN];
    ngx_int_t                 status;
    double                    elapsed;
    ngx_str_t                 method;
    ngx_str_t                 level;
    ngx_str_t                 user;               /* data NULL: null */
} ngx_http_corelog_core_log_t;


static ngx_int_t ngx_http_corelog_core_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_core_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);


static ngx_str_t  ngx_http_corelog_methods[] = {
    ngx_string("GET"),
    ngx_string("HEAD"),
    ngx_string("POST"),
    ngx_string("PUT"),
    ngx_string("PATCH"),
    ngx_string("DELETE"),
    ngx_string("OPTIONS"),
    ngx_string("CONNECT"),
    ngx_string("TRACE"),
    ngx_null_string
};


/* the types of $2.. in the statement below, in the order of the columns */

static u_char  ngx_http_corelog_core_log_columns[] = {
    NGX_HTTP_CORELOG_COL_UUID,            /* id */
    NGX_HTTP_CORELOG_COL_UUID,            /* account */
    NGX_HTTP_CORELOG_COL_UUID,            /* traffic source */
    NGX_HTTP_CORELOG_COL_UUID,            /* core pathname */
    NGX_HTTP_CORELOG_COL_UUID,            /* request */
    NGX_HTTP_CORELOG_COL_UUID,            /* response */
    NGX_HTTP_CORELOG_COL_INT4,            /* status */
    NGX_HTTP_CORELOG_COL_TEXT,            /* method */
    NGX_HTTP_CORELOG_COL_TEXT,            /* level */
    NGX_HTTP_CORELOG_COL_FLOAT8,          /* elapsed time */
    NGX_HTTP_CORELOG_COL_TEXT,            /* traffic user */
    NGX_HTTP_CORELOG_COL_TIMESTAMPTZ      /* created */
};


/*
 * One statement for a batch of core logs: the ownership checks are joins,
 * the one-log-per-request/response rule is the claims insert (ON CONFLICT
 * DO NOTHING), and every input row comes back with its verdict, so one bad
 * row never fails the rows beside it.
 */

static ngx_http_corelog_stmt_t  ngx_http_corelog_core_log_stmt = {
    "core_log_insert",

    "WITH input AS ("
    "  SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::uuid[],"
    "                       $5::uuid[], $6::uuid[], $7::uuid[], $8::int[],"
    "                       $9::text[], $10::text[], $11::float8[],"
    "                       $12::text[], $13::timestamptz[])"
    "    AS i(ord, id, account_id, traffic_source_id, core_pathname_id,"
    "         request_id, response_id, status, method, level, elapsed_time,"
    "         traffic_user_id, created_at)"
    "), checked AS ("
    "  SELECT i.*,"
    "         ts.id IS NOT NULL AS ts_ok, cp.id IS NOT NULL AS cp_ok,"
    "         rq.id IS NOT NULL AS rq_ok, rs.id IS NOT NULL AS rs_ok"
    "    FROM input i"
    "    LEFT JOIN corelog.traffic_sources ts"
    "           ON ts.id = i.traffic_source_id"
    "          AND ts.account_id = i.account_id"
    "    LEFT JOIN corelog.core_pathnames cp"
    "           ON cp.id = i.core_pathname_id AND cp.traffic_source_id = ts.id"
    "    LEFT JOIN corelog.requests rq"
    "           ON rq.id = i.request_id AND rq.traffic_source_id = ts.id"
    "    LEFT JOIN corelog.responses rs"
    "           ON rs.id = i.response_id AND rs.traffic_source_id = ts.id"
    "), claimed AS ("
    "  INSERT INTO corelog.core_log_claims"
    "              (request_id, response_id, core_log_id)"
    "  SELECT request_id, response_id, id FROM checked"
    "   WHERE ts_ok AND cp_ok AND rq_ok AND rs_ok"
    "   ORDER BY ord"
    "  ON CONFLICT DO NOTHING"
    "  RETURNING core_log_id"
    "), inserted AS ("
    "  INSERT INTO corelog.core_logs"
    "              (id, traffic_source_id, core_pathname_id, request_id,"
    "               response_id, status, method, level, elapsed_time,"
    "               traffic_user_id, created_at)"
    "  SELECT c.id, c.traffic_source_id, c.core_pathname_id, c.request_id,"
    "         c.response_id, c.status, c.method, c.level, c.elapsed_time,"
    "         c.traffic_user_id, c.created_at"
    "    FROM checked c JOIN claimed ON claimed.core_log_id = c.id"
    "  RETURNING id"
    ")"
    " SELECT c.ord, c.ts_ok, c.cp_ok, c.rq_ok, c.rs_ok,"
    "        EXISTS (SELECT 1 FROM inserted WHERE inserted.id = c.id)"
    "   FROM checked c",

    NGX_HTTP_CORELOG_NCOLS, 1, { 0 },
    ngx_http_corelog_core_log_columns,
    6, NGX_HTTP_CORELOG_KIND_WRITE
};


ngx_http_corelog_api_t  ngx_http_corelog_api_corelog = {
    ngx_string("core_log"),
    1,
    &ngx_http_corelog_core_log_stmt,
    ngx_http_corelog_core_log_prepare,
    ngx_http_corelog_core_log_reply,
    ngx_http_corelog_reply_error_corelog
};


static ngx_int_t
ngx_http_corelog_core_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                       *v;
    ngx_str_t                     s, *m, *values;
    ngx_uint_t                    i;
    ngx_time_t                   *tp;
    ngx_http_corelog_core_log_t  *cl;
    ngx_http_corelog_loc_conf_t  *llcf;
    ngx_http_complex_value_t     *cv;

    cl = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_core_log_t));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    ctx->data = cl;

    /* trafficSourceId: from the path */

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);
    cv = llcf->api_args->elts;

    if (ngx_http_complex_value(r, &cv[0], &s) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_corelog_uuid_parse(&s, cl->traffic_source) != NGX_OK) {
        ngx_http_corelog_error_field(err, "trafficSourceId",
                                     "trafficSourceId must be a UUID");
    }

    /* status */

    v = json_object_get(body, "status");

    if (v == NULL) {
        ngx_http_corelog_error_field(err, "status", "status is required");

    } else if (!json_is_integer(v)
               || json_integer_value(v) < 100
               || json_integer_value(v) > 599)
    {
        ngx_http_corelog_error_field(err, "status",
                                     "status must be an integer "
                                     "from 100 to 599");

    } else {
        cl->status = (ngx_int_t) json_integer_value(v);
    }

    /* method */

    v = json_object_get(body, "method");

    if (v == NULL) {
        ngx_http_corelog_error_field(err, "method", "method is required");

    } else {
        m = NULL;

        if (json_is_string(v)) {
            s.data = (u_char *) json_string_value(v);
            s.len = json_string_length(v);

            for (m = ngx_http_corelog_methods; m->len; m++) {
                if (m->len == s.len
                    && ngx_strncasecmp(m->data, s.data, s.len) == 0)
                {
                    break;
                }
            }
        }

        if (m == NULL || m->len == 0) {
            ngx_http_corelog_error_field(err, "method",
                                         "method must be one of GET, HEAD, "
                                         "POST, PUT, PATCH, DELETE, OPTIONS, "
                                         "CONNECT, TRACE");
        } else {
            cl->method = *m;
        }
    }

    /* elapsedTime */

    v = json_object_get(body, "elapsedTime");

    if (v == NULL) {
        ngx_http_corelog_error_field(err, "elapsedTime",
                                     "elapsedTime is required");

    } else if (!json_is_number(v)
               || !(json_number_value(v) >= 0)
               || json_number_value(v) > NGX_HTTP_CORELOG_ELAPSED_MAX)
    {
        ngx_http_corelog_error_field(err, "elapsedTime",
                                     "elapsedTime must be a number of "
                                     "milliseconds from 0 to 86400000");

    } else {
        cl->elapsed = json_number_value(v) + 0.0;     /* no -0 */
    }

    /* trafficUserId: optional */

    (void) ngx_http_corelog_json_string(r->pool, body, "trafficUserId", 0,
                                        NGX_HTTP_CORELOG_USER_ID_MAX, 0,
                                        &cl->user, err);

    (void) ngx_http_corelog_json_uuid(r->pool, body, "corePathnameId",
                                      cl->core_pathname, err);
    (void) ngx_http_corelog_json_uuid(r->pool, body, "requestId",
                                      cl->request, err);
    (void) ngx_http_corelog_json_uuid(r->pool, body, "responseId",
                                      cl->response, err);

    if (err->nfields) {
        return NGX_DECLINED;
    }

    /* the server's own fields */

    ngx_http_corelog_uuid_v7(cl->id);

    tp = ngx_timeofday();
    ngx_http_corelog_time_rfc3339(cl->created, tp->sec, tp->msec);

    if (cl->status < 400) {
        ngx_str_set(&cl->level, "info");

    } else if (cl->status < 500) {
        ngx_str_set(&cl->level, "warning");

    } else {
        ngx_str_set(&cl->level, "fatal");
    }

    values = op->values;

    values[NGX_HTTP_CORELOG_COL_ID].data = cl->id;
    values[NGX_HTTP_CORELOG_COL_ACCOUNT] = ctx->auth.account;
    values[NGX_HTTP_CORELOG_COL_TRAFFIC_SOURCE].data = cl->traffic_source;
    values[NGX_HTTP_CORELOG_COL_CORE_PATHNAME].data = cl->core_pathname;
    values[NGX_HTTP_CORELOG_COL_REQUEST].data = cl->request;
    values[NGX_HTTP_CORELOG_COL_RESPONSE].data = cl->response;

    for (i = NGX_HTTP_CORELOG_COL_ID; i <= NGX_HTTP_CORELOG_COL_RESPONSE; i++) {
        if (i != NGX_HTTP_CORELOG_COL_ACCOUNT) {
            values[i].len = NGX_HTTP_CORELOG_UUID_LEN;
        }
    }

    values[NGX_HTTP_CORELOG_COL_STATUS].data = cl->status_text;
    values[NGX_HTTP_CORELOG_COL_STATUS].len =
                          ngx_sprintf(cl->status_text, "%i", cl->status)
                          - cl->status_text;

    values[NGX_HTTP_CORELOG_COL_METHOD] = cl->method;
    values[NGX_HTTP_CORELOG_COL_LEVEL] = cl->level;

    /* a float8 column takes the double itself: no text round trip */

    values[NGX_HTTP_CORELOG_COL_ELAPSED].data = (u_char *) &cl->elapsed;
    values[NGX_HTTP_CORELOG_COL_ELAPSED].len = sizeof(double);

    values[NGX_HTTP_CORELOG_COL_USER] = cl->user;

    values[NGX_HTTP_CORELOG_COL_CREATED].data = cl->created;
    values[NGX_HTTP_CORELOG_COL_CREATED].len = NGX_HTTP_CORELOG_TIME_LEN;

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_core_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row)
{
    int                           col;
    ngx_http_corelog_out_t        out;
    ngx_http_corelog_error_t      err;
    ngx_http_corelog_core_log_t  *cl;

    static const char  *not_found[] = {
        "Traffic source not found",
        "Core pathname not found",
        "Request not found",
        "Response not found"
    };

    cl = ctx->data;
    err.nfields = 0;

    /* columns 1-4: the four existence checks, in the order to report */

    for (col = 1; col <= 4; col++) {
        if (PQgetvalue(res, row, col)[0] != 't') {
            ngx_http_corelog_error_set(&err, NGX_HTTP_NOT_FOUND,
                                       not_found[col - 1]);
            return ngx_http_corelog_reply_error(r, ctx, &err);
        }
    }

    if (PQgetvalue(res, row, 5)[0] != 't') {
        ngx_http_corelog_error_set(&err, NGX_HTTP_CONFLICT,
                                   "The request or the response already "
                                   "has a core log");
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    ngx_http_corelog_out_init(&out, r->pool, 512 + 6 * cl->user.len);

    ngx_http_corelog_out_lit(&out, "{\"id\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->id, NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"trafficSourceId\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->traffic_source,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"corePathnameId\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->core_pathname,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"requestId\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->request,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"responseId\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->response,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"status\":");
    ngx_http_corelog_out_int(&out, cl->status);
    ngx_http_corelog_out_lit(&out, ",\"method\":");
    ngx_http_corelog_out_str(&out, &cl->method);
    ngx_http_corelog_out_lit(&out, ",\"level\":");
    ngx_http_corelog_out_str(&out, &cl->level);
    ngx_http_corelog_out_lit(&out, ",\"elapsedTime\":");
    ngx_http_corelog_out_double(&out, cl->elapsed);
    ngx_http_corelog_out_lit(&out, ",\"trafficUserId\":");
    ngx_http_corelog_out_str_or_null(&out, &cl->user);
    ngx_http_corelog_out_lit(&out, ",\"createdAt\":\"");
    ngx_http_corelog_out_raw(&out, (char *) cl->created,
                             NGX_HTTP_CORELOG_TIME_LEN);
    ngx_http_corelog_out_lit(&out, "\"}");

    return ngx_http_corelog_reply_send(r, NGX_HTTP_CREATED, &out);
}
