
/*
 * Copyright (C) corelog authors
 *
 * libFuzzer target: a body for POST /core-log/{trafficSourceId}, through
 * JSON parsing and the route's prepare() (see ngx_http_corelog_fuzz.c).
 */


#include "ngx_http_corelog_fuzz.h"

#include <math.h>


/* the statement's columns (src/ngx_http_corelog_api_core_log.c) */

enum {
    FUZZ_CL_ID = 0,
    FUZZ_CL_ACCOUNT,
    FUZZ_CL_TRAFFIC_SOURCE,
    FUZZ_CL_CORE_PATHNAME,
    FUZZ_CL_REQUEST,
    FUZZ_CL_RESPONSE,
    FUZZ_CL_STATUS,
    FUZZ_CL_METHOD,
    FUZZ_CL_LEVEL,
    FUZZ_CL_ELAPSED,
    FUZZ_CL_USER,
    FUZZ_CL_CREATED,
    FUZZ_CL_NCOLS
};


#define FUZZ_CL_PATH        "0b7e3c1e-5a4f-4c55-9d5e-2f1d8a7c6b90"
#define FUZZ_CL_PATH_UPPER  "0B7E3C1E-5A4F-4C55-9D5E-2F1D8A7C6B90"


static const char  *ngx_http_corelog_fuzz_methods[] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
    "TRACE", NULL
};


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_corelog_fuzz_init();

    if (ngx_http_corelog_core_log_api.stmt->nparams != FUZZ_CL_NCOLS) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "core_log: the statement has "
                                   "%lu columns, the harness knows %d",
                                   (unsigned long)
                                   ngx_http_corelog_core_log_api.stmt->nparams,
                                   FUZZ_CL_NCOLS);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    double                         elapsed;
    ngx_int_t                      status;
    ngx_uint_t                     path, i;
    const char                    *level;
    ngx_http_complex_value_t      *cv;
    ngx_http_corelog_fuzz_body_t   fb;

    if (ngx_http_corelog_fuzz_request(&fb, &ngx_http_corelog_core_log_api,
                                      data, size)
        != NGX_OK)
    {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    /*
     * corelog_api core_log $1: one complex value, here a literal (lengths
     * NULL); an eighth of the inputs get a path that is not a UUID, an
     * eighth one in upper case
     */

    fb.llcf->api_args = ngx_array_create(fb.pool, 1,
                                         sizeof(ngx_http_complex_value_t));
    if (fb.llcf->api_args == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    cv = ngx_array_push(fb.llcf->api_args);
    if (cv == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    ngx_memzero(cv, sizeof(ngx_http_complex_value_t));

    path = (fb.hash >> 28) & 7;

    if (path == 0) {
        ngx_str_set(&cv->value, "not-a-uuid");

    } else if (path == 1) {
        ngx_str_set(&cv->value, FUZZ_CL_PATH_UPPER);

    } else {
        ngx_str_set(&cv->value, FUZZ_CL_PATH);
    }

    ngx_http_corelog_fuzz_run(&fb);
    ngx_http_corelog_fuzz_check(&fb);

    if (fb.rc != NGX_OK) {
        ngx_http_corelog_fuzz_done(&fb);
        return 0;
    }

    /* NGX_OK: the row, column by column (docs/api.md) */

    if (path == 0) {
        ngx_http_corelog_fuzz_fail(data, size,
                                   "NGX_OK with a trafficSourceId that is "
                                   "not a UUID");
    }

    for (i = 0; i < FUZZ_CL_NCOLS; i++) {
        if (i != FUZZ_CL_USER && fb.op->values[i].null) {
            ngx_http_corelog_fuzz_fail(data, size,
                                       "NGX_OK with column %lu NULL",
                                       (unsigned long) i);
        }
    }

    ngx_http_corelog_fuzz_equal(&fb, FUZZ_CL_ACCOUNT, "account",
                                NGX_HTTP_CORELOG_FUZZ_ACCOUNT);
    ngx_http_corelog_fuzz_equal(&fb, FUZZ_CL_TRAFFIC_SOURCE,
                                "trafficSourceId", FUZZ_CL_PATH);

    status = fb.op->values[FUZZ_CL_STATUS].u.int4;

    if (status < 100 || status > 599) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with status %ld",
                                   (long) status);
    }

    ngx_http_corelog_fuzz_one_of(&fb, FUZZ_CL_METHOD, "method",
                                 ngx_http_corelog_fuzz_methods);

    level = status < 400 ? "info" : status < 500 ? "warning" : "fatal";
    ngx_http_corelog_fuzz_equal(&fb, FUZZ_CL_LEVEL, "level", level);

    elapsed = fb.op->values[FUZZ_CL_ELAPSED].u.float8;

    if (!(elapsed >= 0 && elapsed <= 86400000.0) || signbit(elapsed)) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with elapsedTime %g",
                                   elapsed);
    }

    ngx_http_corelog_fuzz_text(&fb, FUZZ_CL_USER, "trafficUserId", 1, 0,
                               255, 0);

    if (fb.op->values[FUZZ_CL_CREATED].seconds) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with createdAt "
                                   "in seconds, not milliseconds");
    }

    ngx_http_corelog_fuzz_done(&fb);

    return 0;
}
