
/*
 * Copyright (C) corelog authors
 *
 * POST /v1/logtanks: a logtank binds a cloud resource to a log group and
 * stream in the caller's project (domain and project come from the token,
 * never from the body).  Answers and errors in the provider's own shape,
 * each with the request id, which is nginx's $request_id.
 */


#include "ngx_http_corelog.h"


#define NGX_HTTP_CORELOG_LT_TYPE_MAX      64
#define NGX_HTTP_CORELOG_LT_RESOURCE_MAX  255
#define NGX_HTTP_CORELOG_LT_TIME_LEN      20        /* 2019-01-08T01:21:37Z */


enum {
    NGX_HTTP_CORELOG_LT_ID = 0,
    NGX_HTTP_CORELOG_LT_ACCOUNT,
    NGX_HTTP_CORELOG_LT_DOMAIN,
    NGX_HTTP_CORELOG_LT_PROJECT,
    NGX_HTTP_CORELOG_LT_TYPE,
    NGX_HTTP_CORELOG_LT_RESOURCE,
    NGX_HTTP_CORELOG_LT_GROUP,
    NGX_HTTP_CORELOG_LT_STREAM,
    NGX_HTTP_CORELOG_LT_CREATED,
    NGX_HTTP_CORELOG_LT_NCOLS
};


typedef struct {
    u_char                    id[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    group[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    stream[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    created[NGX_HTTP_CORELOG_LT_TIME_LEN];
    ngx_str_t                 type;
    ngx_str_t                 resource;
} ngx_http_corelog_logtank_t;


static ngx_int_t ngx_http_corelog_logtank_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_logtank_type(ngx_http_request_t *r,
    ngx_str_t *type, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_logtank_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_logtank_error(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_logtank_request_id(ngx_http_request_t *r,
    ngx_str_t *id);


/* the types of $2.. in the statement below, in the order of the columns */

static u_char  ngx_http_corelog_logtank_columns[] = {
    NGX_HTTP_CORELOG_COL_UUID,            /* id */
    NGX_HTTP_CORELOG_COL_UUID,            /* account */
    NGX_HTTP_CORELOG_COL_TEXT,            /* domain */
    NGX_HTTP_CORELOG_COL_TEXT,            /* project */
    NGX_HTTP_CORELOG_COL_TEXT,            /* resource type */
    NGX_HTTP_CORELOG_COL_TEXT,            /* resource id */
    NGX_HTTP_CORELOG_COL_UUID,            /* log group */
    NGX_HTTP_CORELOG_COL_UUID,            /* log stream */
    NGX_HTTP_CORELOG_COL_TIMESTAMPTZ      /* created */
};


/*
 * A batch of logtanks: the group must be in the caller's project and the
 * stream in that group; the unique (account, project, resource type,
 * resource id) makes a second logtank for a resource a 409, also when
 * two requests race for it.
 */

static ngx_http_corelog_stmt_t  ngx_http_corelog_logtank_stmt = {
    "logtank_insert",

    "WITH input AS ("
    "  SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[],"
    "                       $5::text[], $6::text[], $7::text[], $8::uuid[],"
    "                       $9::uuid[], $10::timestamptz[])"
    "    AS i(ord, id, account_id, domain_id, project_id, resource_type,"
    "         resource_id, log_group_id, log_stream_id, created_at)"
    "), checked AS ("
    "  SELECT i.*, g.id IS NOT NULL AS group_ok, s.id IS NOT NULL AS stream_ok"
    "    FROM input i"
    "    LEFT JOIN corelog.log_groups g"
    "           ON g.id = i.log_group_id AND g.account_id = i.account_id"
    "          AND g.project_id = i.project_id"
    "    LEFT JOIN corelog.log_streams s"
    "           ON s.id = i.log_stream_id AND s.log_group_id = g.id"
    "), inserted AS ("
    "  INSERT INTO corelog.logtanks"
    "              (id, account_id, domain_id, project_id, resource_type,"
    "               resource_id, log_group_id, log_stream_id, status,"
    "               created_at, updated_at)"
    "  SELECT id, account_id, domain_id, project_id, resource_type,"
    "         resource_id, log_group_id, log_stream_id, 'ACTIVE',"
    "         created_at, created_at"
    "    FROM checked WHERE group_ok AND stream_ok"
    "   ORDER BY ord"
    "  ON CONFLICT DO NOTHING"
    "  RETURNING id"
    ")"
    " SELECT c.ord, c.group_ok, c.stream_ok,"
    "        EXISTS (SELECT 1 FROM inserted WHERE inserted.id = c.id)"
    "   FROM checked c",

    NGX_HTTP_CORELOG_LT_NCOLS, 1, { 0 },
    ngx_http_corelog_logtank_columns,
    4, NGX_HTTP_CORELOG_KIND_WRITE
};


ngx_http_corelog_api_t  ngx_http_corelog_api_logtank = {
    ngx_string("logtank"),
    0,
    &ngx_http_corelog_logtank_stmt,
    ngx_http_corelog_logtank_prepare,
    ngx_http_corelog_logtank_reply,
    ngx_http_corelog_logtank_error
};


static ngx_int_t
ngx_http_corelog_logtank_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                      *lt;
    ngx_tm_t                     tm;
    ngx_str_t                   *values;
    ngx_http_corelog_logtank_t  *tank;

    if (ctx->auth.project.len == 0) {
        ngx_http_corelog_error_set(err, NGX_HTTP_FORBIDDEN,
                                   "The token is not scoped to a project");
        return NGX_DECLINED;
    }

    tank = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_logtank_t));
    if (tank == NULL) {
        return NGX_ERROR;
    }

    ctx->data = tank;

    lt = json_object_get(body, "logtank");

    if (lt == NULL || !json_is_object(lt)) {
        ngx_http_corelog_error_field(err, "logtank",
                                     "logtank is required: an object");
        return NGX_DECLINED;
    }

    if (ngx_http_corelog_json_string(r->pool, lt, "resource_type", 1, 0,
                                     NGX_HTTP_CORELOG_LT_TYPE_MAX,
                                     &tank->type, err)
        == NGX_OK)
    {
        (void) ngx_http_corelog_logtank_type(r, &tank->type, err);
    }

    if (ngx_http_corelog_json_string(r->pool, lt, "resource_id", 1,
                                     NGX_HTTP_CORELOG_LT_RESOURCE_MAX, 0,
                                     &tank->resource, err)
        == NGX_OK
        && tank->resource.len == 0)
    {
        ngx_http_corelog_error_field(err, "resource_id",
                                     "resource_id must not be empty");
    }

    (void) ngx_http_corelog_json_uuid(r->pool, lt, "log_group_id",
                                      tank->group, err);
    (void) ngx_http_corelog_json_uuid(r->pool, lt, "log_stream_id",
                                      tank->stream, err);

    if (err->nfields) {
        return NGX_DECLINED;
    }

    ngx_http_corelog_uuid_v7(tank->id);

    ngx_gmtime(ngx_time(), &tm);
    (void) ngx_sprintf(tank->created, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    values = op->values;

    values[NGX_HTTP_CORELOG_LT_ID].data = tank->id;
    values[NGX_HTTP_CORELOG_LT_ID].len = NGX_HTTP_CORELOG_UUID_LEN;
    values[NGX_HTTP_CORELOG_LT_ACCOUNT] = ctx->auth.account;

    if (ctx->auth.domain.len) {
        values[NGX_HTTP_CORELOG_LT_DOMAIN] = ctx->auth.domain;
    }

    values[NGX_HTTP_CORELOG_LT_PROJECT] = ctx->auth.project;
    values[NGX_HTTP_CORELOG_LT_TYPE] = tank->type;
    values[NGX_HTTP_CORELOG_LT_RESOURCE] = tank->resource;
    values[NGX_HTTP_CORELOG_LT_GROUP].data = tank->group;
    values[NGX_HTTP_CORELOG_LT_GROUP].len = NGX_HTTP_CORELOG_UUID_LEN;
    values[NGX_HTTP_CORELOG_LT_STREAM].data = tank->stream;
    values[NGX_HTTP_CORELOG_LT_STREAM].len = NGX_HTTP_CORELOG_UUID_LEN;
    values[NGX_HTTP_CORELOG_LT_CREATED].data = tank->created;
    values[NGX_HTTP_CORELOG_LT_CREATED].len = NGX_HTTP_CORELOG_LT_TIME_LEN;

    return NGX_OK;
}


/* an identifier, and one of corelog_logtank_resource_types when set */

static ngx_int_t
ngx_http_corelog_logtank_type(ngx_http_request_t *r, ngx_str_t *type,
    ngx_http_corelog_error_t *err)
{
    ngx_str_t                    *allowed;
    ngx_uint_t                    i;
    ngx_http_corelog_loc_conf_t  *llcf;

    if (ngx_http_corelog_identifier(type, NGX_HTTP_CORELOG_LT_TYPE_MAX)
        != NGX_OK)
    {
        ngx_http_corelog_error_field(err, "resource_type",
                                     "resource_type must be 1 to 64 "
                                     "letters, digits, '_', '-' or '.'");
        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    if (llcf->resource_types == NULL) {
        return NGX_OK;
    }

    allowed = llcf->resource_types->elts;

    for (i = 0; i < llcf->resource_types->nelts; i++) {
        if (allowed[i].len == type->len
            && ngx_strncmp(allowed[i].data, type->data, type->len) == 0)
        {
            return NGX_OK;
        }
    }

    ngx_http_corelog_error_field(err, "resource_type",
                                 "resource_type is not one of the types "
                                 "this service accepts");
    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_corelog_logtank_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row)
{
    ngx_str_t                    id, created;
    ngx_http_corelog_out_t       out;
    ngx_http_corelog_error_t     err;
    ngx_http_corelog_logtank_t  *tank;

    tank = ctx->data;
    err.nfields = 0;

    if (PQgetvalue(res, row, 1)[0] != 't') {
        ngx_http_corelog_error_set(&err, NGX_HTTP_NOT_FOUND,
                                   "Log group not found in this project");
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    if (PQgetvalue(res, row, 2)[0] != 't') {
        ngx_http_corelog_error_set(&err, NGX_HTTP_NOT_FOUND,
                                   "Log stream not found in this log group");
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    if (PQgetvalue(res, row, 3)[0] != 't') {
        ngx_http_corelog_error_set(&err, NGX_HTTP_CONFLICT,
                                   "The project already has a logtank for "
                                   "this resource");
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    if (ngx_http_corelog_logtank_request_id(r, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    created.data = tank->created;
    created.len = NGX_HTTP_CORELOG_LT_TIME_LEN;

    ngx_http_corelog_out_init(&out, r->pool, 512 + 6 * tank->resource.len);

    ngx_http_corelog_out_lit(&out, "{\"logtank\":{\"id\":\"");
    ngx_http_corelog_out_raw(&out, (char *) tank->id,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"domain_id\":");
    ngx_http_corelog_out_str_or_null(&out, ctx->auth.domain.len
                                           ? &ctx->auth.domain : NULL);
    ngx_http_corelog_out_lit(&out, ",\"project_id\":");
    ngx_http_corelog_out_str(&out, &ctx->auth.project);
    ngx_http_corelog_out_lit(&out, ",\"resource_type\":");
    ngx_http_corelog_out_str(&out, &tank->type);
    ngx_http_corelog_out_lit(&out, ",\"resource_id\":");
    ngx_http_corelog_out_str(&out, &tank->resource);
    ngx_http_corelog_out_lit(&out, ",\"log_group_id\":\"");
    ngx_http_corelog_out_raw(&out, (char *) tank->group,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"log_stream_id\":\"");
    ngx_http_corelog_out_raw(&out, (char *) tank->stream,
                             NGX_HTTP_CORELOG_UUID_LEN);
    ngx_http_corelog_out_lit(&out, "\",\"status\":\"ACTIVE\",\"created_at\":");
    ngx_http_corelog_out_str(&out, &created);
    ngx_http_corelog_out_lit(&out, ",\"updated_at\":");
    ngx_http_corelog_out_str(&out, &created);
    ngx_http_corelog_out_lit(&out, "},\"request_id\":");
    ngx_http_corelog_out_str(&out, &id);
    ngx_http_corelog_out_lit(&out, "}");

    return ngx_http_corelog_reply_send(r, NGX_HTTP_CREATED, &out);
}


/*
 * {"error_code": "CLG.0400", "error_msg": "...", "request_id": "..."}:
 * the code is CLG.0 and the status; the message names every invalid field.
 */

static ngx_int_t
ngx_http_corelog_logtank_error(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err)
{
    u_char                  code[16], *p;
    size_t                  len;
    ngx_str_t               id, msg;
    ngx_uint_t              i;
    ngx_http_corelog_out_t  out;

    if (ngx_http_corelog_logtank_request_id(r, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_corelog_out_init(&out, r->pool, 256);

    ngx_http_corelog_out_lit(&out, "{\"error_code\":\"");
    ngx_http_corelog_out_raw(&out, (char *) code,
                             ngx_sprintf(code, "CLG.0%03ui", err->status)
                             - code);
    ngx_http_corelog_out_lit(&out, "\",\"error_msg\":");

    msg = err->message;

    if (err->nfields) {
        len = sizeof("Invalid logtank: ") - 1;

        for (i = 0; i < err->nfields; i++) {
            len += err->fields[i].message.len + 2;
        }

        msg.data = ngx_pnalloc(r->pool, len);
        if (msg.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(msg.data, "Invalid logtank: ",
                       sizeof("Invalid logtank: ") - 1);

        for (i = 0; i < err->nfields; i++) {
            if (i) {
                *p++ = ';';
                *p++ = ' ';
            }

            p = ngx_cpymem(p, err->fields[i].message.data,
                           err->fields[i].message.len);
        }

        msg.len = p - msg.data;
    }

    ngx_http_corelog_out_str(&out, &msg);

    ngx_http_corelog_out_lit(&out, ",\"request_id\":");
    ngx_http_corelog_out_str(&out, &id);
    ngx_http_corelog_out_lit(&out, "}");

    return ngx_http_corelog_reply_send(r, err->status, &out);
}


/* $request_id, also sent as X-Request-Id */

static ngx_int_t
ngx_http_corelog_logtank_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    if (ngx_http_corelog_request_id(r, id) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_reply_header(r, "X-Request-Id", id);
}
