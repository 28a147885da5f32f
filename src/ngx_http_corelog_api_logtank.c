
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


/*
 * The statement's columns (ngx_http_corelog.h: "A route declares its
 * statement once"): X(NAME, $n, "column", TYPE)
 */

#define NGX_HTTP_CORELOG_LOGTANK_PARAMS(X)                                   \
    X(ID,               2,  "id",                 UUID)                      \
    X(ACCOUNT,          3,  "account_id",         UUID)                      \
    X(DOMAIN,           4,  "domain_id",          TEXT)                      \
    X(PROJECT,          5,  "project_id",         TEXT)                      \
    X(TYPE,             6,  "resource_type",      TEXT)                      \
    X(RESOURCE,         7,  "resource_id",        TEXT)                      \
    X(GROUP,            8,  "log_group_id",       UUID)                      \
    X(STREAM,           9,  "log_stream_id",      UUID)                      \
    X(CREATED,          10, "created_at",         TIMESTAMPTZ)

/* its result after the ordinal: X(NAME, "expression", status, message) */

#define NGX_HTTP_CORELOG_LOGTANK_RESULT(X)                                   \
    X(GROUP_OK,   "c.group_ok",  NGX_HTTP_NOT_FOUND,                         \
      "Log group not found in this project")                                 \
    X(STREAM_OK,  "c.stream_ok", NGX_HTTP_NOT_FOUND,                         \
      "Log stream not found in this log group")                              \
    X(INSERTED,                                                              \
      "EXISTS (SELECT 1 FROM inserted WHERE inserted.id = c.id)",            \
      NGX_HTTP_CONFLICT,                                                     \
      "The project already has a logtank for this resource")


#define NGX_HTTP_CORELOG_COL(name)  NGX_HTTP_CORELOG_LOGTANK_##name
#define NGX_HTTP_CORELOG_RES(name)  NGX_HTTP_CORELOG_LOGTANK_R_##name

NGX_HTTP_CORELOG_ROUTE_ENUMS(NGX_HTTP_CORELOG_LOGTANK_PARAMS,
                             NGX_HTTP_CORELOG_LOGTANK_RESULT)


static ngx_int_t ngx_http_corelog_logtank_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_logtank_type(ngx_http_request_t *r,
    ngx_str_t *type, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_logtank_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_logtank_error(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err);
static u_char *ngx_http_corelog_logtank_code(u_char *buf, ngx_uint_t status);
static ngx_int_t ngx_http_corelog_logtank_request_id(ngx_http_request_t *r,
    ngx_str_t *id);


static const ngx_http_corelog_column_t  ngx_http_corelog_logtank_columns[] = {
    NGX_HTTP_CORELOG_LOGTANK_PARAMS(NGX_HTTP_CORELOG_PARAM_COLUMN)
};


static const ngx_http_corelog_result_t  ngx_http_corelog_logtank_results[] = {
    { "c.ord", 0, NULL },
    NGX_HTTP_CORELOG_LOGTANK_RESULT(NGX_HTTP_CORELOG_RESULT_COLUMN)
};


/*
 * A batch of logtanks: the group must be in the caller's project and the
 * stream in that group, both locked FOR KEY SHARE by
 * corelog.key_share_*() as a foreign key's check would (sql/004: logtanks
 * has no foreign keys; the account is held through its group, whose
 * foreign key to accounts stays); the unique (account, resource id,
 * resource type, project) key (sql/007: in that order, so that most
 * comparisons end at the resource id) makes a second logtank for a
 * resource in a project a 409, also when two requests race for it.  Rows
 * are inserted in the order of that key, whatever the order of the
 * requests, so that two statements racing for the same resources wait
 * for each other in one order and never deadlock; its text compared byte
 * by byte (COLLATE "C", as the key's columns are since sql/006), not with
 * the database's default collation.  ON CONFLICT names no target: a
 * target's columns need SELECT on them, which the writers' role does not
 * have (docs/operations.md), so every unique index, the primary key too,
 * is an arbiter.
 */

static const ngx_http_corelog_stmt_t ngx_http_corelog_logtank_stmt = {
    "logtank_insert",

    "WITH input AS ("
    "  SELECT * FROM "
    NGX_HTTP_CORELOG_UNNEST(NGX_HTTP_CORELOG_LOGTANK_PARAMS)
    "), g AS ("
    "  SELECT * FROM corelog.key_share_log_groups("
    "                  ARRAY(SELECT log_group_id FROM input))"
    "), s AS ("
    "  SELECT * FROM corelog.key_share_log_streams("
    "                  ARRAY(SELECT log_stream_id FROM input))"
    "), checked AS ("
    "  SELECT i.*, g.id IS NOT NULL AS group_ok, s.id IS NOT NULL AS stream_ok"
    "    FROM input i"
    "    LEFT JOIN g"
    "           ON g.id = i.log_group_id AND g.account_id = i.account_id"
    "          AND g.project_id = i.project_id"
    "    LEFT JOIN s"
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
    "   ORDER BY account_id, resource_id COLLATE \"C\","
    "            resource_type COLLATE \"C\", project_id COLLATE \"C\""
    "  ON CONFLICT DO NOTHING"
    "  RETURNING id"
    ")"
    NGX_HTTP_CORELOG_SELECT(NGX_HTTP_CORELOG_LOGTANK_RESULT)
    "   FROM checked c",

    NGX_HTTP_CORELOG_LOGTANK_NCOLS, 1,
    ngx_http_corelog_logtank_columns,
    NGX_HTTP_CORELOG_LOGTANK_R_NFIELDS, NGX_HTTP_CORELOG_KIND_WRITE,
    ngx_http_corelog_logtank_results,
    NGX_HTTP_CORELOG_STAT_LOGTANK
};


/* the 201's fields (the request id follows them) */

static const ngx_http_corelog_field_t  ngx_http_corelog_logtank_fields[] = {
    { "{\"logtank\":{\"id\":",     NGX_HTTP_CORELOG_LOGTANK_ID },
    { ",\"domain_id\":",           NGX_HTTP_CORELOG_LOGTANK_DOMAIN },
    { ",\"project_id\":",          NGX_HTTP_CORELOG_LOGTANK_PROJECT },
    { ",\"resource_type\":",       NGX_HTTP_CORELOG_LOGTANK_TYPE },
    { ",\"resource_id\":",         NGX_HTTP_CORELOG_LOGTANK_RESOURCE },
    { ",\"log_group_id\":",        NGX_HTTP_CORELOG_LOGTANK_GROUP },
    { ",\"log_stream_id\":",       NGX_HTTP_CORELOG_LOGTANK_STREAM },
    { ",\"status\":\"ACTIVE\",\"created_at\":",
                                   NGX_HTTP_CORELOG_LOGTANK_CREATED },
    { ",\"updated_at\":",          NGX_HTTP_CORELOG_LOGTANK_CREATED }
};


ngx_http_corelog_api_t  ngx_http_corelog_logtank_api = {
    ngx_string("logtank"),
    0,
    &ngx_http_corelog_logtank_stmt,
    ngx_http_corelog_logtank_prepare,
    ngx_http_corelog_logtank_reply,
    ngx_http_corelog_logtank_error,
    ngx_http_corelog_logtank_code,
    NGX_HTTP_CORELOG_LOGTANK_ID
};


static ngx_int_t
ngx_http_corelog_logtank_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                    *lt;
    ngx_str_t                  type, resource, none;
    ngx_http_corelog_value_t  *values;
    u_char                     uuid[NGX_HTTP_CORELOG_UUID_SIZE];

    if (ctx->auth.project.len == 0) {
        ngx_http_corelog_error_set(err, NGX_HTTP_FORBIDDEN,
                                   "The token is not scoped to a project");
        return NGX_DECLINED;
    }

    values = op->values;
    ctx->data = values;

    lt = json_object_get(body, "logtank");

    if (lt == NULL || !json_is_object(lt)) {
        ngx_http_corelog_error_field(err, "logtank",
                                     "logtank is required: an object");
        return NGX_DECLINED;
    }

    if (ngx_http_corelog_json_string(r->pool, lt, "resource_type", 1, 0,
                                     NGX_HTTP_CORELOG_LT_TYPE_MAX,
                                     &type, err)
        == NGX_OK
        && ngx_http_corelog_logtank_type(r, &type, err) == NGX_OK)
    {
        ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_LOGTANK_TYPE],
                                    &type);
    }

    if (ngx_http_corelog_json_string(r->pool, lt, "resource_id", 1,
                                     NGX_HTTP_CORELOG_LT_RESOURCE_MAX, 0,
                                     &resource, err)
        == NGX_OK)
    {
        if (resource.len == 0) {
            ngx_http_corelog_error_field(err, "resource_id",
                                         "resource_id must not be empty");
        }

        ngx_http_corelog_value_text(
                         &values[NGX_HTTP_CORELOG_LOGTANK_RESOURCE], &resource);
    }

    if (ngx_http_corelog_json_uuid(r->pool, lt, "log_group_id", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(&values[NGX_HTTP_CORELOG_LOGTANK_GROUP],
                                    uuid);
    }

    if (ngx_http_corelog_json_uuid(r->pool, lt, "log_stream_id", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(&values[NGX_HTTP_CORELOG_LOGTANK_STREAM],
                                    uuid);
    }

    if (err->nfields) {
        return NGX_DECLINED;
    }

    /* the server's own fields; domain and project from the token */

    ngx_http_corelog_value_uuid_v7(&values[NGX_HTTP_CORELOG_LOGTANK_ID]);

    if (ngx_http_corelog_value_uuid_parse(
                                &values[NGX_HTTP_CORELOG_LOGTANK_ACCOUNT],
                                &ctx->auth.account)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_null(&none);

    ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_LOGTANK_DOMAIN],
                                ctx->auth.domain.len ? &ctx->auth.domain
                                                     : &none);
    ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_LOGTANK_PROJECT],
                                &ctx->auth.project);

    /* whole seconds, as the answer shows it */

    ngx_http_corelog_value_now(&values[NGX_HTTP_CORELOG_LOGTANK_CREATED], 1);

    ngx_http_corelog_value_debug(r, &ngx_http_corelog_logtank_api.name, op);

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
    size_t                     len;
    ngx_str_t                  id;
    ngx_http_corelog_out_t     out;
    ngx_http_corelog_error_t   err;
    ngx_http_corelog_value_t  *values;

    if (ngx_http_corelog_value_verdict(&ngx_http_corelog_logtank_stmt, res,
                                       row, &err)
        != NGX_OK)
    {
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    if (ngx_http_corelog_logtank_request_id(r, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    values = ctx->data;

    len = values[NGX_HTTP_CORELOG_LOGTANK_RESOURCE].u.text.len;

    ngx_http_corelog_out_init(&out, r->pool, 512 + 6 * len);

    ngx_http_corelog_value_fields(&out, values,
                                  ngx_http_corelog_logtank_fields,
                                  sizeof(ngx_http_corelog_logtank_fields)
                                  / sizeof(ngx_http_corelog_field_t));
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
    u_char                  code[NGX_HTTP_CORELOG_ERROR_CODE_LEN], *p;
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
                             ngx_http_corelog_logtank_code(code, err->status)
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


/* "CLG.0" and the status: "CLG.0400" */

static u_char *
ngx_http_corelog_logtank_code(u_char *buf, ngx_uint_t status)
{
    return ngx_sprintf(buf, "CLG.0%03ui", status);
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
