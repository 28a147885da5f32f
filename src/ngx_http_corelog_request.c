
/*
 * Copyright (C) corelog authors
 *
 * A request's own state, beneath the phases that use it: its context
 * (made by whichever of our handlers meets the request first: the access
 * phase's auth, the content handler or the error page), its $request_id,
 * and finalizing it from an event of ours.
 */


#include "ngx_http_corelog.h"


ngx_http_corelog_ctx_t *
ngx_http_corelog_request_ctx(ngx_http_request_t *r)
{
    ngx_http_corelog_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_corelog_module);
    }

    return ctx;
}


/*
 * The request's $request_id: the same id as in the access log.  When
 * nothing has asked for it yet, the module makes it as nginx does (16
 * random bytes in hex: ngx_http_variable_request_id()), but from the
 * worker's pool (ngx_http_corelog_random()) instead of OpenSSL's
 * RAND_bytes(), and caches it in the request's variables as nginx's own
 * would be; the access log and anything later read that value.  Once
 * nginx has made it (an earlier "set" or proxy_set_header, say), that one
 * is the id.
 */

ngx_int_t
ngx_http_corelog_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char                        random[16];
    ngx_http_variable_value_t     *vv;
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_corelog_main_conf();

    if (cmcf == NULL) {
        ngx_str_null(id);
        return NGX_ERROR;
    }

    r = r->main;
    vv = &r->variables[cmcf->request_id_index];

    if (!vv->valid && !vv->not_found) {
        vv->data = ngx_pnalloc(r->pool, 2 * sizeof(random));
        if (vv->data == NULL) {
            ngx_str_null(id);
            return NGX_ERROR;
        }

        (void) ngx_http_corelog_random(random, sizeof(random));
        ngx_hex_dump(vv->data, random, sizeof(random));

        vv->len = 2 * sizeof(random);
        vv->valid = 1;
        vv->no_cacheable = 0;
        vv->not_found = 0;

    } else {
        vv = ngx_http_get_indexed_variable(r, cmcf->request_id_index);

        if (vv == NULL || vv->not_found) {
            ngx_str_null(id);
            return NGX_ERROR;
        }
    }

    id->data = vv->data;
    id->len = vv->len;

    return NGX_OK;
}


/* finalize from an event of ours, then run what that posted */

void
ngx_http_corelog_request_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}
