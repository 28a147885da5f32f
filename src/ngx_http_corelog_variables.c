
/*
 * Copyright (C) corelog authors
 *
 * The module's variables, for log_format: what a request of ours made
 * ($corelog_id), for whom ($corelog_account), on which route
 * ($corelog_route), how it failed ($corelog_error), and what its write
 * cost ($corelog_queue_time, $corelog_db_time, $corelog_batch_rows).  The
 * request's context and its op keep a few numbers; the text is made here,
 * only for a variable that is read.  A value that does not apply to the
 * request (not our location, no statement) is not found: "-" in a log.
 */


#include "ngx_http_corelog.h"


static ngx_int_t ngx_http_corelog_variables_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_corelog_variables_account(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_corelog_variables_route(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_corelog_variables_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_corelog_variables_rows(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_corelog_variables_error(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_http_corelog_op_t *ngx_http_corelog_variables_op(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_corelog_variables_value(
    ngx_http_variable_value_t *v, u_char *data, u_char *last);
static ngx_int_t ngx_http_corelog_variables_none(
    ngx_http_variable_value_t *v);


/* which time $corelog_*_time is */
#define NGX_HTTP_CORELOG_VARIABLES_QUEUE  0    /* queued until sent */
#define NGX_HTTP_CORELOG_VARIABLES_DB     1    /* sent until answered */


static ngx_http_variable_t  ngx_http_corelog_variables[] = {

    { ngx_string("corelog_id"), NULL,
      ngx_http_corelog_variables_id, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_account"), NULL,
      ngx_http_corelog_variables_account, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_route"), NULL,
      ngx_http_corelog_variables_route, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_queue_time"), NULL,
      ngx_http_corelog_variables_time, NGX_HTTP_CORELOG_VARIABLES_QUEUE,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_db_time"), NULL,
      ngx_http_corelog_variables_time, NGX_HTTP_CORELOG_VARIABLES_DB,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_batch_rows"), NULL,
      ngx_http_corelog_variables_rows, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("corelog_error"), NULL,
      ngx_http_corelog_variables_error, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* preconfiguration: the variables exist before any log_format names one */

ngx_int_t
ngx_http_corelog_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_corelog_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* the id of the row the request created: its route's id column */

static ngx_int_t
ngx_http_corelog_variables_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    ngx_http_corelog_ctx_t    *ctx;
    ngx_http_corelog_value_t  *id;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL || !ctx->created || ctx->op == NULL || ctx->api == NULL) {
        return ngx_http_corelog_variables_none(v);
    }

    id = &ctx->op->values[ctx->api->id];

    if (id->type != NGX_HTTP_CORELOG_COL_UUID) {
        return ngx_http_corelog_variables_none(v);
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_CORELOG_UUID_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_variables_value(v, p,
                                  ngx_http_corelog_uuid_text(p, id->u.uuid));
}


/* the account the auth subrequest allowed */

static ngx_int_t
ngx_http_corelog_variables_account(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_corelog_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL || !ctx->auth.allowed || ctx->auth.account.len == 0) {
        return ngx_http_corelog_variables_none(v);
    }

    return ngx_http_corelog_variables_value(v, ctx->auth.account.data,
                                            ctx->auth.account.data
                                            + ctx->auth.account.len);
}


/* the location's corelog_api */

static ngx_int_t
ngx_http_corelog_variables_route(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_corelog_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    if (llcf == NULL || llcf->api == NULL) {
        return ngx_http_corelog_variables_none(v);
    }

    return ngx_http_corelog_variables_value(v, llcf->api->name.data,
                                            llcf->api->name.data
                                            + llcf->api->name.len);
}


/* seconds with milliseconds, as $upstream_response_time: "0.002" */

static ngx_int_t
ngx_http_corelog_variables_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_msec_int_t          ms;
    ngx_http_corelog_op_t  *op;

    op = ngx_http_corelog_variables_op(r);

    if (op == NULL
        || (data == NGX_HTTP_CORELOG_VARIABLES_DB && !op->answered))
    {
        return ngx_http_corelog_variables_none(v);
    }

    if (data == NGX_HTTP_CORELOG_VARIABLES_QUEUE) {
        ms = (ngx_msec_int_t) (op->sent_at - op->queued_at);

    } else {
        ms = (ngx_msec_int_t) (op->done_at - op->sent_at);
    }

    ms = ngx_max(ms, 0);

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_variables_value(v, p,
                                            ngx_sprintf(p, "%T.%03M",
                                                        (time_t) ms / 1000,
                                                        ms % 1000));
}


/* the rows of the statement the write went in */

static ngx_int_t
ngx_http_corelog_variables_rows(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_http_corelog_op_t  *op;

    op = ngx_http_corelog_variables_op(r);

    if (op == NULL) {
        return ngx_http_corelog_variables_none(v);
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_variables_value(v, p,
                                            ngx_sprintf(p, "%ui", op->rows));
}


/*
 * The code of the error the request was answered, as its body carries it
 * ("NotFound", "CLG.0404"); empty for an answer without one.
 */

static ngx_int_t
ngx_http_corelog_variables_error(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                  *p;
    ngx_http_corelog_api_t  *api;
    ngx_http_corelog_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL) {
        return ngx_http_corelog_variables_none(v);
    }

    if (ctx->error == 0) {
        return ngx_http_corelog_variables_value(v, (u_char *) "",
                                                (u_char *) "");
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_CORELOG_ERROR_CODE_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    api = ngx_http_corelog_reply_api(r, ctx);

    return ngx_http_corelog_variables_value(v, p,
                             api ? api->error_code(p, ctx->error)
                                 : ngx_http_corelog_reply_code_corelog(p,
                                                                ctx->error));
}


/* the request's write, once it went out in a statement */

static ngx_http_corelog_op_t *
ngx_http_corelog_variables_op(ngx_http_request_t *r)
{
    ngx_http_corelog_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL || ctx->op == NULL || ctx->op->rows == 0) {
        return NULL;
    }

    return ctx->op;
}


static ngx_int_t
ngx_http_corelog_variables_value(ngx_http_variable_value_t *v, u_char *data,
    u_char *last)
{
    v->len = last - data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = data;

    return NGX_OK;
}


/* the value does not apply to the request: "-" in a log */

static ngx_int_t
ngx_http_corelog_variables_none(ngx_http_variable_value_t *v)
{
    v->not_found = 1;

    return NGX_OK;
}
