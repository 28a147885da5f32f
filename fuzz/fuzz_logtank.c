
/*
 * Copyright (C) corelog authors
 *
 * libFuzzer target: a body for POST /v1/logtanks, through JSON parsing and
 * the route's prepare() (see ngx_http_corelog_fuzz.c).
 */


#include "ngx_http_corelog_fuzz.h"


/* the statement's columns (src/ngx_http_corelog_api_logtank.c) */

enum {
    FUZZ_LT_ID = 0,
    FUZZ_LT_ACCOUNT,
    FUZZ_LT_DOMAIN,
    FUZZ_LT_PROJECT,
    FUZZ_LT_TYPE,
    FUZZ_LT_RESOURCE,
    FUZZ_LT_GROUP,
    FUZZ_LT_STREAM,
    FUZZ_LT_CREATED,
    FUZZ_LT_NCOLS
};


/* corelog_logtank_resource_types, for half of the inputs */

static const char  *ngx_http_corelog_fuzz_resource_types[] = {
    "LISTENER", "loadbalancer", "ecs.instance", "A", NULL
};


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_corelog_fuzz_init();

    if (ngx_http_corelog_logtank_api.stmt->nparams != FUZZ_LT_NCOLS) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "logtank: the statement has "
                                   "%lu columns, the harness knows %d",
                                   (unsigned long)
                                   ngx_http_corelog_logtank_api.stmt->nparams,
                                   FUZZ_LT_NCOLS);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                        *p;
    ngx_str_t                     *v, *type;
    ngx_uint_t                     i, typed, domain;
    const char                   **t;
    ngx_http_corelog_fuzz_body_t   fb;

    if (ngx_http_corelog_fuzz_request(&fb, &ngx_http_corelog_logtank_api,
                                      data, size)
        != NGX_OK)
    {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    /* resource_types: NULL (any type), or a fixed list for half */

    typed = fb.hash & 8;

    if (typed) {
        fb.llcf->resource_types = ngx_array_create(fb.pool, 4,
                                                   sizeof(ngx_str_t));
        if (fb.llcf->resource_types == NULL) {
            ngx_http_corelog_fuzz_fail(data, size, "no memory");
        }

        for (t = ngx_http_corelog_fuzz_resource_types; *t; t++) {
            type = ngx_array_push(fb.llcf->resource_types);
            if (type == NULL) {
                ngx_http_corelog_fuzz_fail(data, size, "no memory");
            }

            type->data = (u_char *) *t;
            type->len = ngx_strlen(*t);
        }
    }

    /* a token without a domain, for a quarter */

    domain = ((fb.hash >> 28) & 3) != 0;

    if (!domain) {
        ngx_str_null(&fb.ctx->auth.domain);
    }

    ngx_http_corelog_fuzz_run(&fb);
    ngx_http_corelog_fuzz_check(&fb);

    if (fb.rc != NGX_OK) {
        ngx_http_corelog_fuzz_done(&fb);
        return 0;
    }

    /* NGX_OK: the row, column by column (docs/api.md) */

    for (i = 0; i < FUZZ_LT_NCOLS; i++) {
        if (i != FUZZ_LT_DOMAIN && fb.op->values[i].null) {
            ngx_http_corelog_fuzz_fail(data, size,
                                       "NGX_OK with column %lu NULL",
                                       (unsigned long) i);
        }
    }

    ngx_http_corelog_fuzz_equal(&fb, FUZZ_LT_ACCOUNT, "account",
                                NGX_HTTP_CORELOG_FUZZ_ACCOUNT);
    ngx_http_corelog_fuzz_equal(&fb, FUZZ_LT_PROJECT, "project_id",
                                NGX_HTTP_CORELOG_FUZZ_PROJECT);

    if (domain) {
        ngx_http_corelog_fuzz_equal(&fb, FUZZ_LT_DOMAIN, "domain_id",
                                    NGX_HTTP_CORELOG_FUZZ_DOMAIN);

    } else if (!fb.op->values[FUZZ_LT_DOMAIN].null) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with a domain_id, "
                                   "the token has none");
    }

    /* resource_type: 1-64 of [A-Za-z0-9_.-], one of the list when set */

    ngx_http_corelog_fuzz_text(&fb, FUZZ_LT_TYPE, "resource_type", 0, 1, 64,
                               64);

    v = &fb.op->values[FUZZ_LT_TYPE].u.text;

    for (p = v->data; p < v->data + v->len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
              || *p == '.'))
        {
            ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with a "
                                       "resource_type of other characters");
        }
    }

    if (typed) {
        ngx_http_corelog_fuzz_one_of(&fb, FUZZ_LT_TYPE, "resource_type",
                                     ngx_http_corelog_fuzz_resource_types);
    }

    ngx_http_corelog_fuzz_text(&fb, FUZZ_LT_RESOURCE, "resource_id", 0, 1,
                               255, 0);

    if (!fb.op->values[FUZZ_LT_CREATED].seconds) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with created_at "
                                   "not in whole seconds");
    }

    ngx_http_corelog_fuzz_done(&fb);

    return 0;
}
