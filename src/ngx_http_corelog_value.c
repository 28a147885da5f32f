
/*
 * Copyright (C) corelog authors
 *
 * An op's typed values (ngx_http_corelog_value_t): set by the routes'
 * parsers, sent as a statement's parameters (for a batched statement $1
 * the ops' ordinals and one binary array per column, PostgreSQL's
 * array_send format; for a plain one each value in binary), written as
 * JSON for the answers; and the verdict of a statement's result row.
 */


#include "ngx_http_corelog.h"


static void ngx_http_corelog_value_param(ngx_http_corelog_params_t *params,
    ngx_uint_t i, u_char *start, u_char *end, int format);
static void ngx_http_corelog_value_time(ngx_http_corelog_value_t *v,
    int64_t usec, ngx_uint_t seconds);
static size_t ngx_http_corelog_value_size(ngx_http_corelog_value_t *v);
static u_char *ngx_http_corelog_value_put(u_char *p,
    ngx_http_corelog_value_t *v);
static u_char *ngx_http_corelog_value_put32(u_char *p, uint32_t v);
static u_char *ngx_http_corelog_value_put64(u_char *p, uint64_t v);
static u_char *ngx_http_corelog_value_header(u_char *p, uint32_t oid,
    ngx_uint_t n, ngx_uint_t nulls);
static u_char *ngx_http_corelog_value_array(u_char *p,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops, ngx_uint_t column,
    ngx_log_t *log);


/* binary arrays: dimensions, null flag, element type, size, lower bound */
#define NGX_HTTP_CORELOG_ARRAY_HEADER  20

/* microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch */
#define NGX_HTTP_CORELOG_PG_EPOCH      INT64_C(946684800000000)


/* element types (pg_type.oid; fixed since PostgreSQL's first releases) */

static const uint32_t  ngx_http_corelog_value_oids[] = {
    0,                                    /* none: never sent */
    25,                                   /* NGX_HTTP_CORELOG_COL_TEXT */
    2950,                                 /* NGX_HTTP_CORELOG_COL_UUID */
    23,                                   /* NGX_HTTP_CORELOG_COL_INT4 */
    16,                                   /* NGX_HTTP_CORELOG_COL_BOOL */
    701,                                  /* NGX_HTTP_CORELOG_COL_FLOAT8 */
    1184,                                 /* NGX_HTTP_CORELOG_COL_TIMESTAMPTZ */
    17                                    /* NGX_HTTP_CORELOG_COL_BYTEA */
};


/* the setters: each gives the value its type */

void
ngx_http_corelog_value_text(ngx_http_corelog_value_t *v, const ngx_str_t *s)
{
    v->type = NGX_HTTP_CORELOG_COL_TEXT;
    v->null = (s->data == NULL);
    v->u.text = *s;
}


void
ngx_http_corelog_value_bytea(ngx_http_corelog_value_t *v, u_char *data,
    size_t len)
{
    v->type = NGX_HTTP_CORELOG_COL_BYTEA;
    v->null = 0;
    v->u.text.data = data;
    v->u.text.len = len;
}


void
ngx_http_corelog_value_uuid(ngx_http_corelog_value_t *v, u_char *uuid)
{
    v->type = NGX_HTTP_CORELOG_COL_UUID;
    v->null = 0;
    ngx_memcpy(v->u.uuid, uuid, NGX_HTTP_CORELOG_UUID_SIZE);
}


void
ngx_http_corelog_value_int4(ngx_http_corelog_value_t *v, int32_t n)
{
    v->type = NGX_HTTP_CORELOG_COL_INT4;
    v->null = 0;
    v->u.int4 = n;
}


void
ngx_http_corelog_value_float8(ngx_http_corelog_value_t *v, double d)
{
    v->type = NGX_HTTP_CORELOG_COL_FLOAT8;
    v->null = 0;
    v->u.float8 = d;
}


void
ngx_http_corelog_value_bool(ngx_http_corelog_value_t *v, ngx_uint_t b)
{
    v->type = NGX_HTTP_CORELOG_COL_BOOL;
    v->null = 0;
    v->u.boolean = b ? 1 : 0;
}


/* seconds: the answer writes it without milliseconds */

static void
ngx_http_corelog_value_time(ngx_http_corelog_value_t *v, int64_t usec,
    ngx_uint_t seconds)
{
    v->type = NGX_HTTP_CORELOG_COL_TIMESTAMPTZ;
    v->null = 0;
    v->seconds = seconds ? 1 : 0;
    v->u.usec = usec;
}


/* the time now: whole seconds, or milliseconds (ngx_timeofday()) */

void
ngx_http_corelog_value_now(ngx_http_corelog_value_t *v, ngx_uint_t seconds)
{
    ngx_time_t  *tp;

    if (seconds) {
        ngx_http_corelog_value_time(v, (int64_t) ngx_time() * 1000000, 1);
        return;
    }

    tp = ngx_timeofday();
    ngx_http_corelog_value_time(v, (int64_t) tp->sec * 1000000
                                   + (int64_t) tp->msec * 1000, 0);
}


/* a new UUIDv7: a row's own id */

void
ngx_http_corelog_value_uuid_v7(ngx_http_corelog_value_t *v)
{
    v->type = NGX_HTTP_CORELOG_COL_UUID;
    v->null = 0;
    ngx_http_corelog_uuid_v7(v->u.uuid);
}


/* a UUID in text that was checked already (the auth's account) */

ngx_int_t
ngx_http_corelog_value_uuid_parse(ngx_http_corelog_value_t *v, ngx_str_t *s)
{
    v->type = NGX_HTTP_CORELOG_COL_UUID;
    v->null = 0;

    return ngx_http_corelog_uuid_bytes(s, v->u.uuid);
}


/* the bytes of one op's values: what a statement's bound counts */

size_t
ngx_http_corelog_value_op_size(ngx_http_corelog_op_t *op)
{
    size_t      size;
    ngx_uint_t  i;

    size = 0;

    for (i = 0; i < op->stmt->nparams; i++) {
        size += ngx_http_corelog_value_size(&op->values[i]);
    }

    return size;
}


/* the bytes the parameters of these ops take at most */

size_t
ngx_http_corelog_value_params_size(const ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops)
{
    size_t      size;
    ngx_uint_t  i, n;

    if (!stmt->batched) {
        return ngx_http_corelog_value_op_size(ops[0]);
    }

    /* binary arrays: header, then a length and the bytes per element */

    size = NGX_HTTP_CORELOG_ARRAY_HEADER + nops * 8;

    for (i = 0; i < stmt->nparams; i++) {
        size += NGX_HTTP_CORELOG_ARRAY_HEADER;

        for (n = 0; n < nops; n++) {
            size += 4 + ngx_http_corelog_value_size(&ops[n]->values[i]);
        }
    }

    return size;
}


/*
 * Writes the parameters of the ops into p (of params_size() bytes) and
 * points params at them: stmt->nparams of them, one more when batched.
 */

ngx_int_t
ngx_http_corelog_value_params(const ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops, u_char *p,
    ngx_http_corelog_params_t *params, ngx_log_t *log)
{
    u_char                    *start;
    ngx_uint_t                 i, n;
    ngx_http_corelog_value_t  *v;

    if (stmt->batched) {
        start = p;
        p = ngx_http_corelog_value_header(p, 23, nops, 0);    /* int4 */

        for (n = 0; n < nops; n++) {
            p = ngx_http_corelog_value_put32(p, 4);
            p = ngx_http_corelog_value_put32(p, (uint32_t) n);
        }

        ngx_http_corelog_value_param(params, 0, start, p, 1);

        for (i = 0; i < stmt->nparams; i++) {
            start = p;
            p = ngx_http_corelog_value_array(p, ops, nops, i, log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_http_corelog_value_param(params, i + 1, start, p, 1);
        }

        return NGX_OK;
    }

    for (i = 0; i < stmt->nparams; i++) {
        v = &ops[0]->values[i];

        if (v->type != stmt->columns[i].type) {
            goto invalid;
        }

        if (v->null) {
            ngx_http_corelog_value_param(params, i, NULL, NULL, 1);
            continue;
        }

        start = p;
        p = ngx_http_corelog_value_put(p, v);

        ngx_http_corelog_value_param(params, i, start, p, 1);
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "corelog: \"%s\" of \"%s\" has a value of type %ui, "
                  "not %ui", stmt->columns[i].name, stmt->name,
                  ops[0]->values[i].type, stmt->columns[i].type);

    return NGX_ERROR;
}


static void
ngx_http_corelog_value_param(ngx_http_corelog_params_t *params, ngx_uint_t i,
    u_char *start, u_char *end, int format)
{
    params->values[i] = (const char *) start;
    params->lengths[i] = (int) (end - start);
    params->formats[i] = format;
}


/* the bytes of a value in PostgreSQL's binary format */

static size_t
ngx_http_corelog_value_size(ngx_http_corelog_value_t *v)
{
    if (v->null) {
        return 0;
    }

    switch (v->type) {

    case NGX_HTTP_CORELOG_COL_TEXT:
    case NGX_HTTP_CORELOG_COL_BYTEA:
        return v->u.text.len;

    case NGX_HTTP_CORELOG_COL_UUID:
        return NGX_HTTP_CORELOG_UUID_SIZE;

    case NGX_HTTP_CORELOG_COL_INT4:
        return 4;

    case NGX_HTTP_CORELOG_COL_BOOL:
        return 1;

    default: /* FLOAT8, TIMESTAMPTZ; none: not sent */
        return 8;
    }
}


static u_char *
ngx_http_corelog_value_put(u_char *p, ngx_http_corelog_value_t *v)
{
    uint64_t  bits;

    switch (v->type) {

    case NGX_HTTP_CORELOG_COL_TEXT:
    case NGX_HTTP_CORELOG_COL_BYTEA:
        return ngx_cpymem(p, v->u.text.data, v->u.text.len);

    case NGX_HTTP_CORELOG_COL_UUID:
        return ngx_cpymem(p, v->u.uuid, NGX_HTTP_CORELOG_UUID_SIZE);

    case NGX_HTTP_CORELOG_COL_INT4:
        return ngx_http_corelog_value_put32(p, (uint32_t) v->u.int4);

    case NGX_HTTP_CORELOG_COL_BOOL:
        *p++ = (u_char) v->u.boolean;
        return p;

    case NGX_HTTP_CORELOG_COL_FLOAT8:
        ngx_memcpy(&bits, &v->u.float8, sizeof(double));
        return ngx_http_corelog_value_put64(p, bits);

    default: /* NGX_HTTP_CORELOG_COL_TIMESTAMPTZ */
        return ngx_http_corelog_value_put64(p, (uint64_t)
                                    (v->u.usec - NGX_HTTP_CORELOG_PG_EPOCH));
    }
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
 * One column of the ops as a binary array of its type.  The values were
 * set by the routes, so one of another type is a bug: NULL.
 */

static u_char *
ngx_http_corelog_value_array(u_char *p, ngx_http_corelog_op_t **ops,
    ngx_uint_t nops, ngx_uint_t column, ngx_log_t *log)
{
    u_char                           *len;
    ngx_uint_t                        n, nulls, type;
    ngx_http_corelog_value_t         *v;
    const ngx_http_corelog_column_t  *col;

    col = &ops[0]->stmt->columns[column];
    type = col->type;

    for (n = 0, nulls = 0; n < nops; n++) {
        v = &ops[n]->values[column];

        if (v->type != type) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "corelog: \"%s\" of \"%s\" has a value of type "
                          "%ui, not %ui", col->name, ops[0]->stmt->name,
                          v->type, type);
            return NULL;
        }

        nulls |= v->null;
    }

    p = ngx_http_corelog_value_header(p, ngx_http_corelog_value_oids[type],
                                      nops, nulls);

    for (n = 0; n < nops; n++) {
        v = &ops[n]->values[column];

        if (v->null) {
            p = ngx_http_corelog_value_put32(p, (uint32_t) -1);
            continue;
        }

        len = p;
        p = ngx_http_corelog_value_put(p + 4, v);

        (void) ngx_http_corelog_value_put32(len, (uint32_t) (p - len - 4));
    }

    return p;
}


/* a value as JSON: the answers' form of what was stored */

void
ngx_http_corelog_value_json(ngx_http_corelog_out_t *out,
    ngx_http_corelog_value_t *v)
{
    u_char  *p;
    u_char   buf[NGX_HTTP_CORELOG_UUID_LEN + 2];    /* or a time's 24 */

    if (v->null) {
        ngx_http_corelog_out_lit(out, "null");
        return;
    }

    switch (v->type) {

    case NGX_HTTP_CORELOG_COL_UUID:
        buf[0] = '"';
        p = ngx_http_corelog_uuid_text(buf + 1, v->u.uuid);
        *p++ = '"';
        ngx_http_corelog_out_raw(out, (char *) buf, p - buf);
        break;

    case NGX_HTTP_CORELOG_COL_INT4:
        ngx_http_corelog_out_int(out, v->u.int4);
        break;

    case NGX_HTTP_CORELOG_COL_BOOL:
        if (v->u.boolean) {
            ngx_http_corelog_out_lit(out, "true");

        } else {
            ngx_http_corelog_out_lit(out, "false");
        }
        break;

    case NGX_HTTP_CORELOG_COL_FLOAT8:
        ngx_http_corelog_out_double(out, v->u.float8);
        break;

    case NGX_HTTP_CORELOG_COL_TIMESTAMPTZ:
        buf[0] = '"';
        p = ngx_http_corelog_time_rfc3339(buf + 1, v->u.usec, v->seconds);
        *p++ = '"';
        ngx_http_corelog_out_raw(out, (char *) buf, p - buf);
        break;

    default: /* TEXT; BYTEA is not answered */
        ngx_http_corelog_out_str(out, &v->u.text);
        break;
    }
}


/* an answer's fields, each its text and then its column's value */

void
ngx_http_corelog_value_fields(ngx_http_corelog_out_t *out,
    ngx_http_corelog_value_t *values, const ngx_http_corelog_field_t *fields,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        ngx_http_corelog_out_raw(out, fields[i].text,
                                 ngx_strlen(fields[i].text));
        ngx_http_corelog_value_json(out, &values[fields[i].column]);
    }
}


/*
 * The verdict of a result row: the first check column (a status in the
 * statement's results) that is not true sets err: NGX_DECLINED.
 */

ngx_int_t
ngx_http_corelog_value_verdict(const ngx_http_corelog_stmt_t *stmt,
    PGresult *res, int row, ngx_http_corelog_error_t *err)
{
    ngx_uint_t                        i;
    const ngx_http_corelog_result_t  *rc;

    for (i = 1; i < stmt->nfields; i++) {
        rc = &stmt->results[i];

        if (rc->status && PQgetvalue(res, row, (int) i)[0] != 't') {
            err->nfields = 0;
            ngx_http_corelog_error_set(err, rc->status, rc->message);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


#if (NGX_DEBUG)

/* the route's parser is done: its values, one debug line each */

void
ngx_http_corelog_value_debug(ngx_http_request_t *r, ngx_str_t *route,
    ngx_http_corelog_op_t *op)
{
    u_char                    *p;
    ngx_uint_t                 i;
    ngx_http_corelog_out_t     out;
    ngx_http_corelog_value_t  *v;
    u_char                     text[NGX_HTTP_CORELOG_LOG_TEXT_LEN];

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog body parsed: route \"%V\", %ui values",
                   route, op->stmt->nparams);

    if ((r->connection->log->log_level & NGX_LOG_DEBUG_HTTP) == 0) {
        return;
    }

    for (i = 0; i < op->stmt->nparams; i++) {
        v = &op->values[i];

        if (v->type == NGX_HTTP_CORELOG_COL_BYTEA) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "corelog value %s: %uz bytes",
                           op->stmt->columns[i].name, v->u.text.len);
            continue;
        }

        ngx_http_corelog_out_init(&out, r->pool, 64);
        ngx_http_corelog_value_json(&out, v);

        if (out.failed) {
            return;
        }

        p = ngx_http_corelog_log_text(text, text + sizeof(text), out.start,
                                      out.pos - out.start);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog value %s: %*s",
                       op->stmt->columns[i].name, p - text, text);
    }
}

#endif
