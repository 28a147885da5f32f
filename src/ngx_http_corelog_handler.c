
/*
 * Copyright (C) corelog authors
 *
 * The content handler every API route shares: method, auth verdict,
 * Content-Type, body, JSON; then the route's own prepare() turns the body
 * into a queued write, and its reply() answers once the row is committed.
 */


#include "ngx_http_corelog.h"


static void ngx_http_corelog_body_handler(ngx_http_request_t *r);
static void ngx_http_corelog_op_handler(ngx_http_corelog_op_t *op,
    ngx_int_t rc, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_json_type(ngx_http_request_t *r);
static void ngx_http_corelog_log_invalid(ngx_http_request_t *r,
    ngx_http_corelog_error_t *err);


static ngx_http_corelog_api_t  *ngx_http_corelog_apis[] = {
    &ngx_http_corelog_core_log_api,
    &ngx_http_corelog_channel_log_api,
    &ngx_http_corelog_logtank_api,
    NULL
};


ngx_http_corelog_api_t *
ngx_http_corelog_api_find(ngx_str_t *name)
{
    ngx_http_corelog_api_t  **api;

    for (api = ngx_http_corelog_apis; *api; api++) {
        if ((*api)->name.len == name->len
            && ngx_strncmp((*api)->name.data, name->data, name->len) == 0)
        {
            return *api;
        }
    }

    return NULL;
}


/* at worker exit: how many rows each route's statements carried */

void
ngx_http_corelog_apis_log_rows(ngx_cycle_t *cycle)
{
    ngx_http_corelog_api_t  **api;

    for (api = ngx_http_corelog_apis; *api; api++) {
        ngx_http_corelog_queue_log_rows(cycle, (*api)->stmt);
    }
}


ngx_int_t
ngx_http_corelog_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_http_corelog_ctx_t       *ctx;
    ngx_http_corelog_error_t      err;
    ngx_http_corelog_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    ctx = ngx_http_corelog_request_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->api = llcf->api;
    err.nfields = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog request entered: route \"%V\", method \"%V\"",
                   &ctx->api->name, &r->method_name);

    if (r->method != NGX_HTTP_POST) {
        ngx_http_corelog_error_set(&err, NGX_HTTP_NOT_ALLOWED, NULL);
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    if (ngx_http_corelog_auth_verdict(r, ctx, &err) != NGX_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog auth verdict: %ui, auth status %ui",
                       err.status, ctx->auth.status);

        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog auth verdict: %ui, account \"%V\"",
                   (ngx_uint_t) NGX_HTTP_OK, &ctx->auth.account);

    if (ngx_http_corelog_json_type(r) != NGX_OK) {
        ngx_http_corelog_error_set(&err, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                   NULL);
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    r->request_body_in_single_buf = 1;

    /*
     * A body that another module has read already (mirror, with its
     * request body) may still be in use by its subrequests: it is not ours
     * to free once parsed.
     */

    ctx->body_ours = (r->request_body == NULL);

    rc = ngx_http_read_client_request_body(r, ngx_http_corelog_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* application/json, with or without parameters */

static ngx_int_t
ngx_http_corelog_json_type(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *type;

    static u_char  json[] = "application/json";

    if (r->headers_in.content_type == NULL) {
        return NGX_DECLINED;
    }

    type = &r->headers_in.content_type->value;

    if (type->len < sizeof(json) - 1
        || ngx_strncasecmp(type->data, json, sizeof(json) - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p = type->data + sizeof(json) - 1;
    last = type->data + type->len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p == last || *p == ';') {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_corelog_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_corelog_op_t     *op;
    ngx_http_corelog_ctx_t    *ctx;
    ngx_http_corelog_error_t   err;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (r->connection->error) {
        ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        return;
    }

    op = ngx_http_corelog_queue_op(r, ctx->api->stmt);
    if (op == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    op->handler = ngx_http_corelog_op_handler;
    op->data = ctx;
    ctx->op = op;

    err.nfields = 0;

    rc = ngx_http_corelog_body_op(r, ctx, op, &err);

    if (rc == NGX_DECLINED) {
        ngx_http_corelog_log_invalid(r, &err);
        ngx_http_finalize_request(r, ngx_http_corelog_reply_error(r, ctx,
                                                                  &err));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /*
     * While the write waits, a client that goes away ends the request
     * (499), as with proxy_pass: a queued write leaves the queue unsent,
     * one in flight is committed unanswered.  Set before the post, which
     * may answer (and free) the request at once.
     */

    r->read_event_handler = ngx_http_test_reading;

    rc = ngx_http_corelog_queue_post(op);

    if (rc == NGX_OK) {
        /* the answer comes from ngx_http_corelog_op_handler() */
        return;
    }

    ngx_http_corelog_error_set(&err, NGX_HTTP_SERVICE_UNAVAILABLE,
                               rc == NGX_BUSY
                               ? "Too many writes pending, retry later"
                               : "The database is unavailable, retry later");

    ngx_http_finalize_request(r, ngx_http_corelog_reply_error(r, ctx, &err));
}


/*
 * The request body to the op's values: parsed into a pool of its own, the
 * route's prepare() copies what the row needs into the request pool, and
 * then the tree and the body are freed.  NGX_OK, NGX_DECLINED with err
 * (a client fault), or NGX_ERROR.
 */

ngx_int_t
ngx_http_corelog_body_op(ngx_http_request_t *r, ngx_http_corelog_ctx_t *ctx,
    ngx_http_corelog_op_t *op, ngx_http_corelog_error_t *err)
{
    json_t      *root;
    ngx_int_t    rc;
    ngx_pool_t  *pool;

    pool = ngx_create_pool(NGX_HTTP_CORELOG_PARSE_POOL_SIZE,
                           r->connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    err->nomem = 0;

    rc = ngx_http_corelog_json_parse(r, pool, &root, err);

    if (rc == NGX_OK) {
        rc = ctx->api->prepare(r, ctx, root, op, err);
    }

    if (err->nomem) {
        rc = NGX_ERROR;
    }

    ngx_destroy_pool(pool);

    if (ctx->body_ours) {
        ngx_http_corelog_json_release(r);
    }

    return rc;
}


/* a client fault, at info: the message may quote the client's text */

static void
ngx_http_corelog_log_invalid(ngx_http_request_t *r,
    ngx_http_corelog_error_t *err)
{
    u_char  *p;
    u_char   text[NGX_HTTP_CORELOG_LOG_TEXT_LEN];

    if (r->connection->log->log_level < NGX_LOG_INFO) {
        return;
    }

    p = ngx_http_corelog_log_text(text, text + sizeof(text),
                                  err->message.data, err->message.len);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "corelog: invalid request: %*s", p - text, text);
}


static void
ngx_http_corelog_op_handler(ngx_http_corelog_op_t *op, ngx_int_t rc,
    PGresult *res, int row)
{
    ngx_http_request_t        *r;
    ngx_http_corelog_ctx_t    *ctx;
    ngx_http_corelog_error_t   err;

    r = op->request;
    ctx = op->data;

    if (rc == NGX_OK) {
        rc = ctx->api->reply(r, ctx, res, row);

        /* the row passed the statement's checks: it is there ($corelog_id) */

        ctx->created = (ctx->error == 0);

    } else {
        err.nfields = 0;
        ngx_http_corelog_error_set(&err, rc,
                                   rc == NGX_HTTP_SERVICE_UNAVAILABLE
                                   ? "The database is unavailable, "
                                     "retry later"
                                   : NULL);
        rc = ngx_http_corelog_reply_error(r, ctx, &err);
    }

    ngx_http_corelog_request_finalize(r, rc);
}


/*
 * corelog_error: the body of an error_page for errors that nginx answers
 * itself (400, 404, 408, 413, 414...), in the route's error shape.
 */

ngx_int_t
ngx_http_corelog_error_handler(ngx_http_request_t *r)
{
    ngx_uint_t                    status;
    ngx_http_corelog_ctx_t       *ctx;
    ngx_http_corelog_error_t      err;
    ngx_http_corelog_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    ctx = ngx_http_corelog_request_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->api = llcf->error_api;

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status < NGX_HTTP_BAD_REQUEST || status > 599) {
        status = NGX_HTTP_NOT_FOUND;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog request entered: route \"%V\", error page %ui",
                   &ctx->api->name, status);

    err.nfields = 0;
    ngx_http_corelog_error_set(&err, status, NULL);

    r->err_status = 0;

    return ngx_http_corelog_reply_error(r, ctx, &err);
}
