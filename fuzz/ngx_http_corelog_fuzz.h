
/*
 * Copyright (C) corelog authors
 *
 * What the libFuzzer targets in fuzz/ share: nginx's globals set up once,
 * a log, a strict UTF-8 check, a fake request that carries one body to a
 * route's parse-and-validate step, and the checks of what comes back.
 */


#ifndef _NGX_HTTP_CORELOG_FUZZ_H_INCLUDED_
#define _NGX_HTTP_CORELOG_FUZZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_corelog.h"


/* the identity every fake request carries (an allowed auth verdict) */
#define NGX_HTTP_CORELOG_FUZZ_ACCOUNT  "5b2e1d0a-3c4f-4e6a-8b7c-9d0e1f2a3b4c"
#define NGX_HTTP_CORELOG_FUZZ_DOMAIN   "dom"
#define NGX_HTTP_CORELOG_FUZZ_PROJECT  "proj"


/* one body through one route */

typedef struct {
    ngx_pool_t                    *pool;
    ngx_http_request_t            *r;
    ngx_http_corelog_ctx_t        *ctx;
    ngx_http_corelog_loc_conf_t   *llcf;
    ngx_http_corelog_op_t         *op;
    ngx_http_corelog_error_t       err;
    ngx_int_t                      rc;

    /* bits of the input's hash: which buffers, which configuration */
    uint32_t                       hash;

    const u_char                  *data;          /* the input */
    size_t                         size;
} ngx_http_corelog_fuzz_body_t;


extern ngx_log_t   ngx_http_corelog_fuzz_log;
extern ngx_uint_t  ngx_http_corelog_fuzz_nemerg;    /* [emerg] lines */


void ngx_http_corelog_fuzz_init(void);
void ngx_http_corelog_fuzz_fail(const u_char *data, size_t size,
    const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));

/* NULL when valid UTF-8 (no NUL, no control characters unless ctl) */
const char *ngx_http_corelog_fuzz_utf8(const u_char *p, size_t len,
    ngx_uint_t ctl);
size_t ngx_http_corelog_fuzz_utf8_chars(const u_char *p, size_t len);

/* the fake request, ready for the route's step; NGX_ERROR: no memory */
ngx_int_t ngx_http_corelog_fuzz_request(ngx_http_corelog_fuzz_body_t *fb,
    ngx_http_corelog_api_t *api, const uint8_t *data, size_t size);
/* the route's step, as the body handler runs it */
void ngx_http_corelog_fuzz_run(ngx_http_corelog_fuzz_body_t *fb);
/* the checks that hold for every route, then the pool is destroyed */
void ngx_http_corelog_fuzz_check(ngx_http_corelog_fuzz_body_t *fb);
void ngx_http_corelog_fuzz_done(ngx_http_corelog_fuzz_body_t *fb);

/* checks of one column's value (text, or a UUID as text) after NGX_OK */
void ngx_http_corelog_fuzz_text(ngx_http_corelog_fuzz_body_t *fb,
    ngx_uint_t col, const char *name, ngx_uint_t nullable, size_t min_chars,
    size_t max_chars, size_t max_bytes);
void ngx_http_corelog_fuzz_one_of(ngx_http_corelog_fuzz_body_t *fb,
    ngx_uint_t col, const char *name, const char **allowed);
void ngx_http_corelog_fuzz_equal(ngx_http_corelog_fuzz_body_t *fb,
    ngx_uint_t col, const char *name, const char *want);


#endif /* _NGX_HTTP_CORELOG_FUZZ_H_INCLUDED_ */
