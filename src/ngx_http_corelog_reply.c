
/*
 * Copyright (C) corelog authors
 *
 * Answers: a JSON body with its status, and errors in the route's shape.
 */


#include "ngx_http_corelog.h"


ngx_int_t
ngx_http_corelog_reply_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


ngx_int_t
ngx_http_corelog_reply_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_corelog_out_t *out)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   cl;

    static ngx_str_t  no_store = ngx_string("no-store");

    if (out->failed) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog answered: %ui, %uz bytes", status,
                   (size_t) (out->pos - out->start));

    r->headers_out.status = status;
    r->headers_out.content_length_n = out->pos - out->start;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_corelog_reply_header(r, "Cache-Control", &no_store)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = out->start;
    b->last = out->pos;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    cl.buf = b;
    cl.next = NULL;

    return ngx_http_output_filter(r, &cl);
}


/*
 * Sends err in the route's shape, with the headers its status calls for:
 * Allow on 405, Retry-After on 503 and 429, WWW-Authenticate on 401.
 */

ngx_int_t
ngx_http_corelog_reply_error(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err)
{
    ngx_str_t                value;
    ngx_http_corelog_api_t  *api;

    static ngx_str_t  post = ngx_string("POST");
    static ngx_str_t  one = ngx_string("1");

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    switch (err->status) {

    case NGX_HTTP_NOT_ALLOWED:
        if (ngx_http_corelog_reply_header(r, "Allow", &post) != NGX_OK) {
            return NGX_ERROR;
        }
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
    case NGX_HTTP_TOO_MANY_REQUESTS:

        /* the auth service's Retry-After, else 1 s on our own 503 */

        if (ctx && ctx->auth.retry_after.len) {
            value = ctx->auth.retry_after;

        } else if (err->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
            value = one;

        } else {
            break;
        }

        if (ngx_http_corelog_reply_header(r, "Retry-After", &value) != NGX_OK) {
            return NGX_ERROR;
        }
        break;

    case NGX_HTTP_UNAUTHORIZED:
        if (ctx && ctx->auth.www_authenticate.len) {
            if (ngx_http_corelog_reply_header(r, "WWW-Authenticate",
                                              &ctx->auth.www_authenticate)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
        break;
    }

    if (ctx) {
        ctx->error = err->status;       /* $corelog_error */
    }

    api = ngx_http_corelog_reply_api(r, ctx);

    if (api == NULL) {
        return ngx_http_corelog_reply_error_corelog(r, ctx, err);
    }

    return api->send_error(r, ctx, err);
}


/*
 * The route whose error shape the request's errors take: the one
 * answering it, else the location's (corelog_api, corelog_error); NULL:
 * none, the core logs' shape.
 */

ngx_http_corelog_api_t *
ngx_http_corelog_reply_api(ngx_http_request_t *r, ngx_http_corelog_ctx_t *ctx)
{
    ngx_http_corelog_loc_conf_t  *llcf;

    if (ctx && ctx->api) {
        return ctx->api;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    return llcf->api ? llcf->api : llcf->error_api;
}


/* the core logs' error code, the status's name: "NotFound" */

u_char *
ngx_http_corelog_reply_code_corelog(u_char *buf, ngx_uint_t status)
{
    const char  *name;

    name = ngx_http_corelog_error_status_name(status);

    return ngx_cpymem(buf, name, ngx_strlen(name));
}


/* {"name": "BadRequest", "message": "...", "fieldErrors": {"f": "..."}} */

ngx_int_t
ngx_http_corelog_reply_error_corelog(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err)
{
    u_char                  name[NGX_HTTP_CORELOG_ERROR_CODE_LEN];
    ngx_uint_t              i;
    ngx_http_corelog_out_t  out;

    ngx_http_corelog_out_init(&out, r->pool, 256);

    ngx_http_corelog_out_lit(&out, "{\"name\":\"");
    ngx_http_corelog_out_raw(&out, (char *) name,
                             ngx_http_corelog_reply_code_corelog(name,
                                                                 err->status)
                             - name);
    ngx_http_corelog_out_lit(&out, "\",\"message\":");
    ngx_http_corelog_out_str(&out, &err->message);

    if (err->nfields) {
        ngx_http_corelog_out_lit(&out, ",\"fieldErrors\":{");

        for (i = 0; i < err->nfields; i++) {
            if (i) {
                ngx_http_corelog_out_lit(&out, ",");
            }

            ngx_http_corelog_out_str(&out, &err->fields[i].field);
            ngx_http_corelog_out_lit(&out, ":");
            ngx_http_corelog_out_str(&out, &err->fields[i].message);
        }

        ngx_http_corelog_out_lit(&out, "}");
    }

    ngx_http_corelog_out_lit(&out, "}");

    return ngx_http_corelog_reply_send(r, err->status, &out);
}
