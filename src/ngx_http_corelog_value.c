
/*
 * Copyright (C) corelog authors
 *
 * The values of a statement's ops as its parameters: for a batched
 * statement, $1 the ops' ordinals and one binary array per column, each
 * element encoded as the column's type (PostgreSQL's array_send format);
 * for a plain one, the op's values as text.
 */


#include "ngx_http_corelog.h"


static void ngx_http_corelog_value_param(ngx_http_corelog_params_t *params,
    ngx_uint_t i, u_char *start, u_char *end, int format);
static u_char *ngx_http_corelog_value_put32(u_char *p, uint32_t v);
static u_char *ngx_http_corelog_value_put64(u_char *p, uint64_t v);
static u_char *ngx_http_corelog_value_header(u_char *p, uint32_t oid,
    ngx_uint_t n, ngx_uint_t nulls);
static u_char *ngx_http_corelog_value_array(u_char *p,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops, ngx_uint_t column,
    ngx_uint_t type, ngx_log_t *log);
static u_char *ngx_http_corelog_value_uuid(u_char *p, ngx_str_t *v);
static ngx_int_t ngx_http_corelog_value_timestamp(ngx_str_t *v,
    uint64_t *usec);


/* binary arrays: dimensions, null flag, element type, size, lower bound */
#define NGX_HTTP_CORELOG_ARRAY_HEADER  20

/* element types (pg_type.oid; fixed since PostgreSQL's first releases) */
#define NGX_HTTP_CORELOG_OID_BOOL         16
#define NGX_HTTP_CORELOG_OID_BYTEA        17
#define NGX_HTTP_CORELOG_OID_INT4         23
#define NGX_HTTP_CORELOG_OID_TEXT         25
#define NGX_HTTP_CORELOG_OID_FLOAT8       701
#define NGX_HTTP_CORELOG_OID_TIMESTAMPTZ  1184
#define NGX_HTTP_CORELOG_OID_UUID         2950



/* the bytes of one op's values: what a statement's bound counts */

size_t
ngx_http_corelog_value_op_size(ngx_http_corelog_op_t *op)
{
    size_t      size;
    ngx_uint_t  i;

    size = 0;

    for (i = 0; i < op->stmt->nparams; i++) {
        size += op->values[i].len;
    }

    return size;
}


/* the bytes the parameters of these ops take at most */

size_t
ngx_http_corelog_value_params_size(ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops)
{
    size_t      size;
    ngx_uint_t  i, n;

    if (stmt->batched) {
        /* binary arrays: header, then a length and the bytes per element */

        size = NGX_HTTP_CORELOG_ARRAY_HEADER + nops * 8;

        for (i = 0; i < stmt->nparams; i++) {
            size += NGX_HTTP_CORELOG_ARRAY_HEADER;

            for (n = 0; n < nops; n++) {
                size += 4 + ngx_max(ops[n]->values[i].len, 16);
            }
        }

        return size;
    }

    /* one text parameter per column, NUL-terminated */

    size = 0;

    for (i = 0; i < stmt->nparams; i++) {
        size += ops[0]->values[i].len + 1;
    }

    return size;
}


/*
 * Writes the parameters of the ops into p (of params_size() bytes) and
 * points params at them: stmt->nparams of them, one more when batched.
 */

ngx_int_t
ngx_http_corelog_value_params(ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops, u_char *p,
    ngx_http_corelog_params_t *params, ngx_log_t *log)
{
    u_char                 *start;
    ngx_uint_t              i, n;
    ngx_http_corelog_op_t  *op;

    if (stmt->batched) {
        start = p;
        p = ngx_http_corelog_value_header(p, NGX_HTTP_CORELOG_OID_INT4,
                                          nops, 0);

        for (n = 0; n < nops; n++) {
            p = ngx_http_corelog_value_put32(p, 4);
            p = ngx_http_corelog_value_put32(p, (uint32_t) n);
        }

        ngx_http_corelog_value_param(params, 0, start, p, 1);

        for (i = 0; i < stmt->nparams; i++) {
            start = p;
            p = ngx_http_corelog_value_array(p, ops, nops, i,
                                             stmt->columns
                                             ? stmt->columns[i]
                                             : NGX_HTTP_CORELOG_COL_TEXT,
                                             log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_http_corelog_value_param(params, i + 1, start, p, 1);
        }

        return NGX_OK;
    }

    op = ops[0];

    for (i = 0; i < stmt->nparams; i++) {
        if (op->values[i].data == NULL) {
            ngx_http_corelog_value_param(params, i, NULL, NULL, 0);
            continue;
        }

        start = p;
        p = ngx_cpymem(p, op->values[i].data, op->values[i].len);
        *p++ = '\0';

        ngx_http_corelog_value_param(params, i, start, p - 1, 0);
    }

    return NGX_OK;
}


static void
ngx_http_corelog_value_param(ngx_http_corelog_params_t *params, ngx_uint_t i,
    u_char *start, u_char *end, int format)
{
    params->values[i] = (const char *) start;
    params->lengths[i] = (int) (end - start);
    params->formats[i] = format;
}


static u_char *
ngx_http_corelog_value_put32(u_char *p, uint32_t v)
{
    *p++ = (u_char) (v >> 24);
    *p++ = (u_char) (v >> 16);
    *p++ = (u_char) (v >> 8);
    *p++ = (u_char) v;

    return p;
}


static u_char *
ngx_http_corelog_value_put64(u_char *p, uint64_t v)
{
    p = ngx_http_corelog_value_put32(p, (uint32_t) (v >> 32));
    return ngx_http_corelog_value_put32(p, (uint32_t) v);
}


/* a one-dimensional array in PostgreSQL's binary format (array_send) */

static u_char *
ngx_http_corelog_value_header(u_char *p, uint32_t oid, ngx_uint_t n,
    ngx_uint_t nulls)
{
    p = ngx_http_corelog_value_put32(p, 1);                /* dimensions */
    p = ngx_http_corelog_value_put32(p, nulls ? 1 : 0);
    p = ngx_http_corelog_value_put32(p, oid);
    p = ngx_http_corelog_value_put32(p, (uint32_t) n);
    return ngx_http_corelog_value_put32(p, 1);             /* lower bound */
}


/*
 * One column of the ops as a binary array of its type.  The values
 * were made by the routes, so one that does not convert is a bug: NULL.
 */

static u_char *
ngx_http_corelog_value_array(u_char *p, ngx_http_corelog_op_t **ops,
    ngx_uint_t nops, ngx_uint_t column, ngx_uint_t type, ngx_log_t *log)
{
    u_char      *len;
    uint32_t     oid;
    uint64_t     bits;
    ngx_int_t    rc;
    ngx_str_t   *v;
    ngx_uint_t   n, nulls;

    static uint32_t  oids[] = {
        NGX_HTTP_CORELOG_OID_TEXT, NGX_HTTP_CORELOG_OID_UUID,
        NGX_HTTP_CORELOG_OID_INT4, NGX_HTTP_CORELOG_OID_BOOL,
        NGX_HTTP_CORELOG_OID_FLOAT8, NGX_HTTP_CORELOG_OID_TIMESTAMPTZ,
        NGX_HTTP_CORELOG_OID_BYTEA
    };

    if (type >= sizeof(oids) / sizeof(oids[0])) {
        goto invalid;
    }

    oid = oids[type];

    for (n = 0, nulls = 0; n < nops; n++) {
        nulls |= (ops[n]->values[column].data == NULL);
    }

    p = ngx_http_corelog_value_header(p, oid, nops, nulls);

    for (n = 0; n < nops; n++) {
        v = &ops[n]->values[column];

        if (v->data == NULL) {
            p = ngx_http_corelog_value_put32(p, (uint32_t) -1);
            continue;
        }

        len = p;
        p += 4;

        switch (type) {

        case NGX_HTTP_CORELOG_COL_TEXT:
        case NGX_HTTP_CORELOG_COL_BYTEA:
            p = ngx_cpymem(p, v->data, v->len);
            break;

        case NGX_HTTP_CORELOG_COL_UUID:
            p = ngx_http_corelog_value_uuid(p, v);
            break;

        case NGX_HTTP_CORELOG_COL_INT4:
            rc = ngx_atoi(v->data, v->len);
            p = (rc == NGX_ERROR || rc > NGX_MAX_INT32_VALUE)
                ? NULL : ngx_http_corelog_value_put32(p, (uint32_t) rc);
            break;

        case NGX_HTTP_CORELOG_COL_BOOL:
            if (v->len != 1 || (v->data[0] != 't' && v->data[0] != 'f')) {
                p = NULL;
                break;
            }

            *p++ = (v->data[0] == 't');
            break;

        case NGX_HTTP_CORELOG_COL_FLOAT8:
            if (v->len != sizeof(double)) {
                p = NULL;
                break;
            }

            ngx_memcpy(&bits, v->data, sizeof(double));
            p = ngx_http_corelog_value_put64(p, bits);
            break;

        default: /* NGX_HTTP_CORELOG_COL_TIMESTAMPTZ */
            p = (ngx_http_corelog_value_timestamp(v, &bits) == NGX_OK)
                ? ngx_http_corelog_value_put64(p, bits) : NULL;
            break;
        }

        if (p == NULL) {
            goto invalid;
        }

        (void) ngx_http_corelog_value_put32(len, (uint32_t) (p - len - 4));
    }

    return p;

invalid:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "corelog: column %ui of \"%s\" does not convert to "
                  "its type %ui", column, ops[0]->stmt->name, type);

    return NULL;
}


/* 8-4-4-4-12 hexadecimal digits: 16 bytes */

static u_char *
ngx_http_corelog_value_uuid(u_char *p, ngx_str_t *v)
{
    u_char     *s, *last;
    ngx_int_t   byte;

    if (v->len != NGX_HTTP_CORELOG_UUID_LEN) {
        return NULL;
    }

    s = v->data;
    last = s + v->len;

    while (s < last) {
        if (s - v->data == 8 || s - v->data == 13 || s - v->data == 18
            || s - v->data == 23)
        {
            if (*s++ != '-') {
                return NULL;
            }

            continue;
        }

        byte = ngx_hextoi(s, 2);
        if (byte == NGX_ERROR) {
            return NULL;
        }

        *p++ = (u_char) byte;
        s += 2;
    }

    return p;
}


/*
 * "2025-07-10T11:00:00Z" or "2025-07-10T11:00:00.000Z" (UTC, as the routes
 * make them): microseconds since 2000-01-01, PostgreSQL's timestamptz.
 */

static ngx_int_t
ngx_http_corelog_value_timestamp(ngx_str_t *v, uint64_t *usec)
{
    u_char     *s;
    int64_t     days, secs, frac;
    ngx_int_t   y, m, d, hh, mm, ss;

    s = v->data;

    if ((v->len != 20 && v->len != 24)
        || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':'
        || s[16] != ':' || s[v->len - 1] != 'Z'
        || (v->len == 24 && s[19] != '.'))
    {
        return NGX_ERROR;
    }

    y = ngx_atoi(s, 4);
    m = ngx_atoi(s + 5, 2);
    d = ngx_atoi(s + 8, 2);
    hh = ngx_atoi(s + 11, 2);
    mm = ngx_atoi(s + 14, 2);
    ss = ngx_atoi(s + 17, 2);
    frac = (v->len == 24) ? ngx_atoi(s + 20, 3) : 0;

    if (y == NGX_ERROR || m < 1 || m > 12 || d < 1 || d > 31
        || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60
        || frac < 0)
    {
        return NGX_ERROR;
    }

    /* days since 1970-01-01 of a proleptic Gregorian date */

    if (m <= 2) {
        y--;
    }

    days = (int64_t) y * 365 + y / 4 - y / 100 + y / 400
           + (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1 - 719468;

    secs = days * 86400 + hh * 3600 + mm * 60 + ss - 946684800;

    *usec = (uint64_t) (secs * 1000000 + frac * 1000);

    return NGX_OK;
}
