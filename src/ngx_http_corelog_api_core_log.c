
/*
 * Copyright (C) corelog authors
 *
 * POST /core-log/{trafficSourceId}: a CoreLog record.  Its columns, the
 * statement that checks and inserts a batch of them, the fields that fill
 * the columns' values, and the 201 written from them.
 */


#include "ngx_http_corelog.h"


#define NGX_HTTP_CORELOG_ELAPSED_MAX      86400000.0   /* one day, in ms */
#define NGX_HTTP_CORELOG_USER_ID_MAX      255


/*
 * The statement's columns (ngx_http_corelog.h: "A route declares its
 * statement once"): X(NAME, $n, "column", TYPE)
 */

#define NGX_HTTP_CORELOG_CORE_LOG_PARAMS(X)                                  \
    X(ID,               2,  "id",                 UUID)                      \
    X(ACCOUNT,          3,  "account_id",         UUID)                      \
    X(TRAFFIC_SOURCE,   4,  "traffic_source_id",  UUID)                      \
    X(CORE_PATHNAME,    5,  "core_pathname_id",   UUID)                      \
    X(REQUEST,          6,  "request_id",         UUID)                      \
    X(RESPONSE,         7,  "response_id",        UUID)                      \
    X(STATUS,           8,  "status",             INT4)                      \
    X(METHOD,           9,  "method",             TEXT)                      \
    X(LEVEL,            10, "level",              TEXT)                      \
    X(ELAPSED,          11, "elapsed_time",       FLOAT8)                    \
    X(USER,             12, "traffic_user_id",    TEXT)                      \
    X(CREATED,          13, "created_at",         TIMESTAMPTZ)

/* its result after the ordinal: X(NAME, "expression", status, message) */

#define NGX_HTTP_CORELOG_CORE_LOG_RESULT(X)                                  \
    X(TS_OK,      "c.ts_ok",  NGX_HTTP_NOT_FOUND, "Traffic source not found")\
    X(CP_OK,      "c.cp_ok",  NGX_HTTP_NOT_FOUND, "Core pathname not found") \
    X(RQ_OK,      "c.rq_ok",  NGX_HTTP_NOT_FOUND, "Request not found")       \
    X(RS_OK,      "c.rs_ok",  NGX_HTTP_NOT_FOUND, "Response not found")      \
    X(INSERTED,                                                              \
      "EXISTS (SELECT 1 FROM inserted WHERE inserted.id = c.id)",            \
      NGX_HTTP_CONFLICT,                                                     \
      "The request or the response already has a core log")


#define NGX_HTTP_CORELOG_COL(name)  NGX_HTTP_CORELOG_CORE_LOG_##name
#define NGX_HTTP_CORELOG_RES(name)  NGX_HTTP_CORELOG_CORE_LOG_R_##name

NGX_HTTP_CORELOG_ROUTE_ENUMS(NGX_HTTP_CORELOG_CORE_LOG_PARAMS,
                             NGX_HTTP_CORELOG_CORE_LOG_RESULT)


static ngx_int_t ngx_http_corelog_core_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_core_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);


static const ngx_str_t  ngx_http_corelog_methods[] = {
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


static const ngx_http_corelog_column_t  ngx_http_corelog_core_log_columns[] = {
    NGX_HTTP_CORELOG_CORE_LOG_PARAMS(NGX_HTTP_CORELOG_PARAM_COLUMN)
};


static const ngx_http_corelog_result_t  ngx_http_corelog_core_log_results[] = {
    { "c.ord", 0, NULL },
    NGX_HTTP_CORELOG_CORE_LOG_RESULT(NGX_HTTP_CORELOG_RESULT_COLUMN)
};


/*
 * One statement for a batch of core logs: the ownership checks are joins
 * with the parent rows, which corelog.key_share_*() lock FOR KEY SHARE as
 * a foreign key's check would (sql/004: the log tables have no foreign
 * keys, and a parent's delete waits for the lock and then sees the log),
 * the one-log-per-request/response rule is the claims insert (ON CONFLICT
 * DO NOTHING), and every input row comes back with its verdict, so one bad
 * row never fails the rows beside it.  The claims are inserted in the
 * order of their key, whatever the order of the requests, so that two
 * statements that claim the same rows wait for each other in one order
 * and never deadlock.
 */

static const ngx_http_corelog_stmt_t ngx_http_corelog_core_log_stmt = {
    "core_log_insert",

    "WITH input AS ("
    "  SELECT * FROM "
    NGX_HTTP_CORELOG_UNNEST(NGX_HTTP_CORELOG_CORE_LOG_PARAMS)
    "), ts AS ("
    "  SELECT * FROM corelog.key_share_traffic_sources("
    "                  ARRAY(SELECT traffic_source_id FROM input))"
    "), cp AS ("
    "  SELECT * FROM corelog.key_share_core_pathnames("
    "                  ARRAY(SELECT core_pathname_id FROM input))"
    "), rq AS ("
    "  SELECT * FROM corelog.key_share_requests("
    "                  ARRAY(SELECT request_id FROM input))"
    "), rs AS ("
    "  SELECT * FROM corelog.key_share_responses("
    "                  ARRAY(SELECT response_id FROM input))"
    "), checked AS ("
    "  SELECT i.*,"
    "         ts.id IS NOT NULL AS ts_ok, cp.id IS NOT NULL AS cp_ok,"
    "         rq.id IS NOT NULL AS rq_ok, rs.id IS NOT NULL AS rs_ok"
    "    FROM input i"
    "    LEFT JOIN ts"
    "           ON ts.id = i.traffic_source_id"
    "          AND ts.account_id = i.account_id"
    "    LEFT JOIN cp"
    "           ON cp.id = i.core_pathname_id AND cp.traffic_source_id = ts.id"
    "    LEFT JOIN rq"
    "           ON rq.id = i.request_id AND rq.traffic_source_id = ts.id"
    "    LEFT JOIN rs"
    "           ON rs.id = i.response_id AND rs.traffic_source_id = ts.id"
    "), claimed AS ("
    "  INSERT INTO corelog.core_log_claims"
    "              (request_id, response_id, core_log_id)"
    "  SELECT request_id, response_id, id FROM checked"
    "   WHERE ts_ok AND cp_ok AND rq_ok AND rs_ok"
    "   ORDER BY request_id, response_id"
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
    NGX_HTTP_CORELOG_SELECT(NGX_HTTP_CORELOG_CORE_LOG_RESULT)
    "   FROM checked c",

    NGX_HTTP_CORELOG_CORE_LOG_NCOLS, 1,
    ngx_http_corelog_core_log_columns,
    NGX_HTTP_CORELOG_CORE_LOG_R_NFIELDS, NGX_HTTP_CORELOG_KIND_WRITE,
    ngx_http_corelog_core_log_results,
    NGX_HTTP_CORELOG_STAT_CORE_LOG
};


/* the 201's fields (README: API reference) */

static const ngx_http_corelog_field_t  ngx_http_corelog_core_log_fields[] = {
    { "{\"id\":",                NGX_HTTP_CORELOG_CORE_LOG_ID },
    { ",\"trafficSourceId\":",   NGX_HTTP_CORELOG_CORE_LOG_TRAFFIC_SOURCE },
    { ",\"corePathnameId\":",    NGX_HTTP_CORELOG_CORE_LOG_CORE_PATHNAME },
    { ",\"requestId\":",         NGX_HTTP_CORELOG_CORE_LOG_REQUEST },
    { ",\"responseId\":",        NGX_HTTP_CORELOG_CORE_LOG_RESPONSE },
    { ",\"status\":",            NGX_HTTP_CORELOG_CORE_LOG_STATUS },
    { ",\"method\":",            NGX_HTTP_CORELOG_CORE_LOG_METHOD },
    { ",\"level\":",             NGX_HTTP_CORELOG_CORE_LOG_LEVEL },
    { ",\"elapsedTime\":",       NGX_HTTP_CORELOG_CORE_LOG_ELAPSED },
    { ",\"trafficUserId\":",     NGX_HTTP_CORELOG_CORE_LOG_USER },
    { ",\"createdAt\":",         NGX_HTTP_CORELOG_CORE_LOG_CREATED }
};


ngx_http_corelog_api_t  ngx_http_corelog_core_log_api = {
    ngx_string("core_log"),
    1,
    &ngx_http_corelog_core_log_stmt,
    ngx_http_corelog_core_log_prepare,
    ngx_http_corelog_core_log_reply,
    ngx_http_corelog_reply_error_corelog,
    ngx_http_corelog_reply_code_corelog,
    NGX_HTTP_CORELOG_CORE_LOG_ID
};


static ngx_int_t
ngx_http_corelog_core_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                       *v;
    ngx_str_t                     s, level, user;
    ngx_int_t                     status;
    const ngx_str_t              *m;
    ngx_http_corelog_value_t     *values;
    ngx_http_complex_value_t     *cv;
    ngx_http_corelog_loc_conf_t  *llcf;
    u_char                        uuid[NGX_HTTP_CORELOG_UUID_SIZE];

    values = op->values;
    ctx->data = values;

    /* trafficSourceId: from the path */

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);
    cv = llcf->api_args->elts;

    if (ngx_http_complex_value(r, &cv[0], &s) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_corelog_uuid_bytes(&s, uuid) != NGX_OK) {
        ngx_http_corelog_error_field(err, "trafficSourceId",
                                     "trafficSourceId must be a UUID");
    } else {
        ngx_http_corelog_value_uuid(
                       &values[NGX_HTTP_CORELOG_CORE_LOG_TRAFFIC_SOURCE], uuid);
    }

    /* status */

    status = 0;
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
        status = (ngx_int_t) json_integer_value(v);
        ngx_http_corelog_value_int4(&values[NGX_HTTP_CORELOG_CORE_LOG_STATUS],
                                    (int32_t) status);
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
            ngx_http_corelog_value_text(
                               &values[NGX_HTTP_CORELOG_CORE_LOG_METHOD], m);
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
        ngx_http_corelog_value_float8(
                             &values[NGX_HTTP_CORELOG_CORE_LOG_ELAPSED],
                             json_number_value(v) + 0.0);     /* no -0 */
    }

    /* trafficUserId: optional */

    if (ngx_http_corelog_json_string(r->pool, body, "trafficUserId", 0,
                                     NGX_HTTP_CORELOG_USER_ID_MAX, 0,
                                     &user, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CORE_LOG_USER],
                                    &user);
    }

    if (ngx_http_corelog_json_uuid(r->pool, body, "corePathnameId", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(
                        &values[NGX_HTTP_CORELOG_CORE_LOG_CORE_PATHNAME], uuid);
    }

    if (ngx_http_corelog_json_uuid(r->pool, body, "requestId", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(&values[NGX_HTTP_CORELOG_CORE_LOG_REQUEST],
                                    uuid);
    }

    if (ngx_http_corelog_json_uuid(r->pool, body, "responseId", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(
                             &values[NGX_HTTP_CORELOG_CORE_LOG_RESPONSE], uuid);
    }

    if (err->nfields) {
        return NGX_DECLINED;
    }

    /* the server's own fields */

    ngx_http_corelog_value_uuid_v7(&values[NGX_HTTP_CORELOG_CORE_LOG_ID]);
    ngx_http_corelog_value_now(&values[NGX_HTTP_CORELOG_CORE_LOG_CREATED], 0);

    if (ngx_http_corelog_value_uuid_parse(
                              &values[NGX_HTTP_CORELOG_CORE_LOG_ACCOUNT],
                              &ctx->auth.account)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (status < 400) {
        ngx_str_set(&level, "info");

    } else if (status < 500) {
        ngx_str_set(&level, "warning");

    } else {
        ngx_str_set(&level, "fatal");
    }

    ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CORE_LOG_LEVEL],
                                &level);

    ngx_http_corelog_value_debug(r, &ngx_http_corelog_core_log_api.name, op);

    return NGX_OK;
}


/* the 201: the stored row, read from the values that were sent */

static ngx_int_t
ngx_http_corelog_core_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row)
{
    size_t                     len;
    ngx_http_corelog_out_t     out;
    ngx_http_corelog_error_t   err;
    ngx_http_corelog_value_t  *values;

    if (ngx_http_corelog_value_verdict(&ngx_http_corelog_core_log_stmt, res,
                                       row, &err)
        != NGX_OK)
    {
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    values = ctx->data;

    len = values[NGX_HTTP_CORELOG_CORE_LOG_USER].u.text.len;

    ngx_http_corelog_out_init(&out, r->pool, 512 + 6 * len);

    ngx_http_corelog_value_fields(&out, values,
                                  ngx_http_corelog_core_log_fields,
                                  sizeof(ngx_http_corelog_core_log_fields)
                                  / sizeof(ngx_http_corelog_field_t));
    ngx_http_corelog_out_lit(&out, "}");

    return ngx_http_corelog_reply_send(r, NGX_HTTP_CREATED, &out);
}
