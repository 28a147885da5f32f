
/*
 * Copyright (C) corelog authors
 *
 * corelog_auth_request: in the access phase, before the body is read, a
 * subrequest (as in nginx's auth_request) to the auth location, with the
 * caller's headers but never the body, its Content-Length or its
 * Transfer-Encoding.  Its status and X-Corelog-* headers become the
 * caller's identity, or a 401/403/429/503/500 answered there and then in
 * JSON: whatever serves the location, and for every method (but the 405
 * that an API location gives to any method but POST, without a round
 * trip).  With "satisfy any", a 401 or 403 lets the other access modules
 * decide, as with auth_request; an API location still needs the identity.
 */


#include "ngx_http_corelog.h"


static ngx_int_t ngx_http_corelog_auth_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_corelog_auth_decide(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx);
static ngx_int_t ngx_http_corelog_auth_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_corelog_auth_headers(ngx_http_request_t *r,
    ngx_http_request_t *sr);
static ngx_int_t ngx_http_corelog_auth_printable(ngx_str_t *s);
static ngx_http_corelog_loc_conf_t *ngx_http_corelog_auth_direct(
    ngx_http_request_t *r, ngx_str_t *uri);


ngx_int_t
ngx_http_corelog_auth_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_corelog_auth_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_auth_handler(ngx_http_request_t *r)
{
    ngx_http_request_t           *sr;
    ngx_http_corelog_ctx_t       *ctx;
    ngx_http_post_subrequest_t   *ps;
    ngx_http_corelog_loc_conf_t  *llcf, *tlcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    if (llcf->auth_uri.len == 0 || r != r->main) {
        return NGX_DECLINED;
    }

    /* an API location answers other methods 405, without an auth round trip */

    if (r->method != NGX_HTTP_POST && llcf->api != NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_corelog_request_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ctx->auth.done) {
        return ngx_http_corelog_auth_decide(r, ctx);
    }

    if (ctx->auth.started) {
        return NGX_AGAIN;
    }

    /* the built-in checker's cache, where the subrequest would find it */

    tlcf = ngx_http_corelog_auth_direct(r, &llcf->auth_uri);

    if (tlcf
        && ngx_http_corelog_token_cached(r, tlcf->token_check, &ctx->auth)
           == NGX_OK)
    {
        return ngx_http_corelog_auth_decide(r, ctx);
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_corelog_auth_done;
    ps->data = ctx;

    if (ngx_http_subrequest(r, &llcf->auth_uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_corelog_auth_headers(r, sr) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->auth.started = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog auth: subrequest \"%V\"", &llcf->auth_uri);

    return NGX_AGAIN;
}


/*
 * The location a subrequest to uri would run in, if it is a
 * "corelog_token_check" that nothing can refuse or redirect before its
 * content handler (token_direct, set at configuration): then the checker's
 * cache can answer here.  The search is nginx's for static locations
 * (ngx_http_core_find_static_location), in the server's tree, keeping
 * only an exact match: nginx looks no further for one, not even among
 * regular expressions.
 */

static ngx_http_corelog_loc_conf_t *
ngx_http_corelog_auth_direct(ngx_http_request_t *r, ngx_str_t *uri)
{
    u_char                         *p;
    size_t                          len, n;
    ngx_int_t                       rc;
    ngx_http_core_srv_conf_t       *cscf;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_corelog_loc_conf_t    *tlcf;
    ngx_http_location_tree_node_t  *node;

    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
    clcf = cscf->ctx->loc_conf[ngx_http_core_module.ctx_index];

    node = clcf->static_locations;
    p = uri->data;
    len = uri->len;

    while (node) {
        n = (len <= (size_t) node->len) ? len : node->len;

        rc = ngx_filename_cmp(p, node->name, n);

        if (rc != 0) {
            node = (rc < 0) ? node->left : node->right;
            continue;
        }

        if (len > (size_t) node->len) {

            if (node->inclusive) {
                node = node->tree;
                p += n;
                len -= n;
                continue;
            }

            node = node->right;
            continue;
        }

        if (len < (size_t) node->len) {
            node = node->left;
            continue;
        }

        if (node->exact == NULL) {
            return NULL;
        }

        tlcf = node->exact->loc_conf[ngx_http_corelog_module.ctx_index];

        return tlcf->token_direct ? tlcf : NULL;
    }

    return NULL;
}


/*
 * The subrequest is done: NGX_OK lets the request through; a denial is
 * answered here, in the location's error shape, and the request is over.
 */

static ngx_int_t
ngx_http_corelog_auth_decide(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_corelog_error_t    err;
    ngx_http_core_loc_conf_t   *clcf;

    err.nfields = 0;

    if (ngx_http_corelog_auth_verdict(r, ctx, &err) == NGX_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog auth: allowed, account \"%V\"",
                       &ctx->auth.account);
        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog auth verdict: %ui, auth status %ui",
                   err.status, ctx->auth.status);

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY
        && (err.status == NGX_HTTP_UNAUTHORIZED
            || err.status == NGX_HTTP_FORBIDDEN))
    {
        return err.status;
    }

    rc = ngx_http_corelog_reply_error(r, ctx, &err);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * The subrequest gets the caller's headers without Content-Length and
 * Transfer-Encoding, and an empty body: a proxied auth location must not
 * wait for a body that never comes.
 */

static ngx_int_t
ngx_http_corelog_auth_headers(ngx_http_request_t *r, ngx_http_request_t *sr)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) {
        return NGX_ERROR;
    }

    sr->header_only = 1;

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 16,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if ((h[i].key.len == sizeof("Content-Length") - 1
             && ngx_strncasecmp(h[i].key.data, (u_char *) "Content-Length",
                                h[i].key.len) == 0)
            || (h[i].key.len == sizeof("Transfer-Encoding") - 1
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Transfer-Encoding",
                                   h[i].key.len) == 0))
        {
            continue;
        }

        nh = ngx_list_push(&sr->headers_in.headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
    }

    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.chunked = 0;

    return NGX_OK;
}


/*
 * Called as the subrequest finalizes (perhaps more than once): record its
 * status and headers.  It neither finalizes nor runs posted requests.
 */

static ngx_int_t
ngx_http_corelog_auth_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_corelog_ctx_t  *ctx = data;

    ngx_str_t                *v;
    ngx_list_t               *headers;
    ngx_http_corelog_auth_t  *a;

    a = &ctx->auth;
    a->done = 1;

    a->status = sr->headers_out.status;

    if (a->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        a->status = rc;
    }

    if (a->status == 0 && rc == NGX_ERROR) {
        a->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "corelog auth done: status %ui, rc %i", a->status, rc);

    ngx_http_corelog_stats_auth(ngx_http_corelog_worker(), a->status);

    headers = &sr->headers_out.headers;

    if (ngx_http_corelog_header_find(headers, "X-Corelog-Account") == NULL
        && sr->upstream)
    {
        headers = &sr->upstream->headers_in.headers;
    }

    v = ngx_http_corelog_header_find(headers, "X-Corelog-Account");
    a->account = v ? *v : (ngx_str_t) ngx_null_string;

    v = ngx_http_corelog_header_find(headers, "X-Corelog-Domain");
    a->domain = v ? *v : (ngx_str_t) ngx_null_string;

    v = ngx_http_corelog_header_find(headers, "X-Corelog-Project");
    a->project = v ? *v : (ngx_str_t) ngx_null_string;

    v = ngx_http_corelog_header_find(headers, "X-Corelog-Error");
    a->error = v ? *v : (ngx_str_t) ngx_null_string;

    v = ngx_http_corelog_header_find(headers, "WWW-Authenticate");
    a->www_authenticate = v ? *v : (ngx_str_t) ngx_null_string;

    v = ngx_http_corelog_header_find(headers, "Retry-After");
    a->retry_after = v ? *v : (ngx_str_t) ngx_null_string;

    return rc;
}


/*
 * The content handler asks: NGX_OK with the identity in ctx->auth, or
 * NGX_DECLINED with the error to answer.
 */

ngx_int_t
ngx_http_corelog_auth_verdict(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err)
{
    u_char                       *msg;
    ngx_str_t                     note;
    ngx_http_corelog_auth_t      *a;
    ngx_http_corelog_loc_conf_t  *llcf;
    u_char                        uuid[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                        buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    a = &ctx->auth;

    if (a->allowed) {
        return NGX_OK;
    }

    if (!a->done) {
        llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

        if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_AUTH_NONE, &note,
                                   buf))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "corelog: no auth verdict for \"%V\" (auth "
                          "request \"%V\" did not run)%V", &r->uri,
                          &llcf->auth_uri, &note);
        }

        ngx_http_corelog_error_set(err, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL);
        return NGX_DECLINED;
    }

    if (a->status >= 200 && a->status < 300) {

        msg = NULL;

        if (a->account.len == 0) {
            msg = (u_char *) "no X-Corelog-Account header";

        } else if (ngx_http_corelog_uuid_parse(&a->account, uuid) != NGX_OK) {
            msg = (u_char *) "X-Corelog-Account is not a UUID";

        } else if (a->domain.len
                   && ngx_http_corelog_identifier(&a->domain, 64) != NGX_OK)
        {
            msg = (u_char *) "invalid X-Corelog-Domain";

        } else if (a->project.len
                   && ngx_http_corelog_identifier(&a->project, 64) != NGX_OK)
        {
            msg = (u_char *) "invalid X-Corelog-Project";
        }

        if (msg) {
            llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

            if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_AUTH_IDENTITY,
                                       &note, buf))
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "corelog: auth request \"%V\" allowed the "
                              "caller but gave %s%V", &llcf->auth_uri, msg,
                              &note);
            }

            ngx_http_corelog_error_set(err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       NULL);
            return NGX_DECLINED;
        }

        a->account.data = ngx_pnalloc(r->pool, NGX_HTTP_CORELOG_UUID_LEN);
        if (a->account.data == NULL) {
            ngx_http_corelog_error_set(err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       NULL);
            return NGX_DECLINED;
        }

        ngx_memcpy(a->account.data, uuid, NGX_HTTP_CORELOG_UUID_LEN);
        a->allowed = 1;

        return NGX_OK;
    }

    switch (a->status) {

    case NGX_HTTP_UNAUTHORIZED:
    case NGX_HTTP_FORBIDDEN:
    case NGX_HTTP_TOO_MANY_REQUESTS:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_http_corelog_error_set(err, a->status, NULL);

        if (a->error.len && a->error.len <= 200
            && ngx_http_corelog_auth_printable(&a->error) == NGX_OK)
        {
            err->message = a->error;
        }

        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_AUTH_STATUS, &note,
                               buf))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "corelog: auth request \"%V\" answered unexpected "
                      "status %ui%V", &llcf->auth_uri, a->status, &note);
    }

    ngx_http_corelog_error_set(err, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL);

    return NGX_DECLINED;
}


/* a message from the auth service: printable ASCII only */

static ngx_int_t
ngx_http_corelog_auth_printable(ngx_str_t *s)
{
    ngx_uint_t  i;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < 0x20 || s->data[i] > 0x7e) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
