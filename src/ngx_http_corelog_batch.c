
/*
 * Copyright (C) corelog authors
 *
 * The per-worker write queue.  A request whose body is valid becomes an op
 * in the queue; a free connection takes the ops queued for one statement
 * (up to corelog_batch_max of them) and sends them as one statement of
 * arrays, one element per op.  The statement returns one row per op, so
 * each request gets its own answer.
 */


#include "ngx_http_corelog.h"


static ngx_int_t ngx_http_corelog_batch_take(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_batch_unqueue(ngx_http_corelog_op_t *op);
static void ngx_http_corelog_batch_release(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_batch_spill_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_corelog_batch_params(ngx_uint_t nparams);
static void ngx_http_corelog_batch_param(ngx_uint_t i, u_char *start,
    u_char *end, int format);
static u_char *ngx_http_corelog_batch_reserve(size_t size);
static u_char *ngx_http_corelog_batch_put32(u_char *p, uint32_t v);
static u_char *ngx_http_corelog_batch_put64(u_char *p, uint64_t v);
static u_char *ngx_http_corelog_batch_header(u_char *p, uint32_t oid,
    ngx_uint_t n, ngx_uint_t nulls);
static u_char *ngx_http_corelog_batch_array(u_char *p,
    ngx_http_corelog_pg_conn_t *pc, ngx_uint_t column, ngx_uint_t type);
static u_char *ngx_http_corelog_batch_uuid(u_char *p, ngx_str_t *v);
static ngx_int_t ngx_http_corelog_batch_timestamp(ngx_str_t *v,
    uint64_t *usec);
static void ngx_http_corelog_batch_cleanup(void *data);
static void ngx_http_corelog_batch_wait_handler(ngx_event_t *ev);


/* how long queued ops wait for a busy statement before another is sent */
#define NGX_HTTP_CORELOG_BATCH_SPILL  2

/*
 * The values one statement carries at most (but always one op's): the
 * module's parameter buffer and libpq's output buffer of a connection are
 * each about this large at most, whatever corelog_batch_max is.
 */
#define NGX_HTTP_CORELOG_BATCH_BYTES  (1024 * 1024)

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


static ngx_http_corelog_main_conf_t  *ngx_http_corelog_batch_conf;
static ngx_queue_t                    ngx_http_corelog_batch_queue;
static ngx_uint_t                     ngx_http_corelog_batch_nqueued;
static ngx_uint_t                     ngx_http_corelog_batch_running;
static ngx_uint_t                     ngx_http_corelog_batch_again;
static ngx_event_t                    ngx_http_corelog_batch_spill;

/* one reusable buffer for the parameters of the statement being sent */
static u_char                        *ngx_http_corelog_batch_buf;
static size_t                         ngx_http_corelog_batch_size;
static const char                   **ngx_http_corelog_batch_values;
static int                           *ngx_http_corelog_batch_lengths;
static int                           *ngx_http_corelog_batch_formats;
static ngx_uint_t                     ngx_http_corelog_batch_nvalues;


ngx_int_t
ngx_http_corelog_batch_init_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf)
{
    ngx_http_corelog_batch_conf = cmcf;
    ngx_queue_init(&ngx_http_corelog_batch_queue);
    ngx_http_corelog_batch_nqueued = 0;

    ngx_http_corelog_batch_spill.handler = ngx_http_corelog_batch_spill_handler;
    ngx_http_corelog_batch_spill.log = cycle->log;
    ngx_http_corelog_batch_spill.cancelable = 1;

    return NGX_OK;
}


void
ngx_http_corelog_batch_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_corelog_batch_buf) {
        ngx_free(ngx_http_corelog_batch_buf);
        ngx_http_corelog_batch_buf = NULL;
        ngx_http_corelog_batch_size = 0;
    }

    if (ngx_http_corelog_batch_values) {
        ngx_free(ngx_http_corelog_batch_values);
        ngx_http_corelog_batch_values = NULL;
        ngx_http_corelog_batch_nvalues = 0;
    }

    if (ngx_http_corelog_batch_spill.timer_set) {
        ngx_del_timer(&ngx_http_corelog_batch_spill);
    }

    ngx_http_corelog_batch_conf = NULL;
}


ngx_http_corelog_op_t *
ngx_http_corelog_batch_op(ngx_http_request_t *r, ngx_http_corelog_stmt_t *stmt)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_corelog_op_t  *op;

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_op_t));
    if (op == NULL) {
        return NULL;
    }

    op->values = ngx_pcalloc(r->pool, stmt->nparams * sizeof(ngx_str_t));
    if (op->values == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_corelog_batch_cleanup;
    cln->data = op;

    op->request = r;
    op->stmt = stmt;
    op->row = -1;
    op->state = NGX_HTTP_CORELOG_OP_NEW;

    op->wait.handler = ngx_http_corelog_batch_wait_handler;
    op->wait.data = op;
    op->wait.log = r->connection->log;

    return op;
}


/*
 * NGX_OK: queued (its handler may even have run already);
 * NGX_BUSY: the queue is full; NGX_DECLINED: PostgreSQL is unavailable.
 */

ngx_int_t
ngx_http_corelog_batch_post(ngx_http_corelog_op_t *op)
{
    ngx_str_t                      note;
    ngx_uint_t                     i, kind, max;
    ngx_http_corelog_main_conf_t  *cmcf;
    u_char                         buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    cmcf = ngx_http_corelog_batch_conf;

    if (cmcf == NULL || ngx_http_corelog_pg_available() != NGX_OK) {
        return NGX_DECLINED;
    }

    /* writes and lookups have a bound each: neither starves the other */

    kind = op->stmt->kind;

    if (kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        max = cmcf->token_queue_max;

    } else {
        max = cmcf->queue_max;
    }

    if (cmcf->worker->queued[kind] >= max) {
        if (ngx_http_corelog_limit(kind == NGX_HTTP_CORELOG_KIND_LOOKUP
                                   ? NGX_HTTP_CORELOG_LIMIT_LOOKUPS_FULL
                                   : NGX_HTTP_CORELOG_LIMIT_QUEUE_FULL,
                                   &note, buf))
        {
            ngx_log_error(NGX_LOG_WARN, op->request->connection->log, 0,
                          "corelog: %s queue full (%ui), answering 503%V",
                          kind == NGX_HTTP_CORELOG_KIND_LOOKUP
                          ? "token lookup" : "write", max, &note);
        }

        return NGX_BUSY;
    }

    op->size = 0;

    for (i = 0; i < op->stmt->nparams; i++) {
        op->size += op->values[i].len;
    }

    ngx_queue_insert_tail(&ngx_http_corelog_batch_queue, &op->queue);
    ngx_http_corelog_batch_nqueued++;
    cmcf->worker->queued[kind]++;
    op->state = NGX_HTTP_CORELOG_OP_QUEUED;

    ngx_add_timer(&op->wait, cmcf->query_timeout);

    ngx_http_corelog_batch_run();

    return NGX_OK;
}


/*
 * Hands queued ops to idle connections; never re-entered.  While a
 * statement is in flight, new ops wait for it (they go together in the
 * next one) rather than open a second statement at once: more rows per
 * statement and commit.  Another idle connection is used when a full
 * batch is waiting, or when the ops have waited the spill delay.
 */

void
ngx_http_corelog_batch_run(void)
{
    ngx_http_corelog_pg_conn_t  *pc;

    if (ngx_http_corelog_batch_running) {
        ngx_http_corelog_batch_again = 1;
        return;
    }

    ngx_http_corelog_batch_running = 1;

    do {
        ngx_http_corelog_batch_again = 0;

        while (!ngx_queue_empty(&ngx_http_corelog_batch_queue)) {
            pc = ngx_http_corelog_pg_idle();
            if (pc == NULL) {
                break;
            }

            if (ngx_http_corelog_pg_busy()
                && ngx_http_corelog_batch_nqueued
                   < ngx_http_corelog_batch_conf->batch_max
                && !ngx_http_corelog_batch_spill.timedout)
            {
                if (!ngx_http_corelog_batch_spill.timer_set) {
                    ngx_add_timer(&ngx_http_corelog_batch_spill,
                                  NGX_HTTP_CORELOG_BATCH_SPILL);
                }

                break;
            }

            if (ngx_http_corelog_batch_take(pc) != NGX_OK) {
                break;
            }
        }

    } while (ngx_http_corelog_batch_again);

    ngx_http_corelog_batch_spill.timedout = 0;

    if (ngx_queue_empty(&ngx_http_corelog_batch_queue)
        && ngx_http_corelog_batch_spill.timer_set)
    {
        ngx_del_timer(&ngx_http_corelog_batch_spill);
    }

    ngx_http_corelog_batch_running = 0;
}


/* ops waited the spill delay behind a busy statement: use another one */

static void
ngx_http_corelog_batch_spill_handler(ngx_event_t *ev)
{
    ngx_http_corelog_batch_run();
}


/*
 * The oldest queued op that may go now, and the ops of its statement
 * queued after it, up to corelog_batch_max of them and
 * NGX_HTTP_CORELOG_BATCH_BYTES of values, go to pc.  Lookups use at most
 * half the connections (one if there is one): the others stay for writes.
 * NGX_DECLINED: nothing may go now.
 */

static ngx_int_t
ngx_http_corelog_batch_take(ngx_http_corelog_pg_conn_t *pc)
{
    size_t                         size;
    ngx_uint_t                     n, lookups;
    ngx_queue_t                   *q, *next;
    ngx_http_corelog_op_t         *op;
    ngx_http_corelog_stmt_t       *stmt;
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_corelog_batch_conf;

    lookups = ngx_max(cmcf->connections / 2, 1);

    stmt = NULL;

    for (q = ngx_queue_head(&ngx_http_corelog_batch_queue);
         q != ngx_queue_sentinel(&ngx_http_corelog_batch_queue);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        if (op->stmt->kind != NGX_HTTP_CORELOG_KIND_LOOKUP
            || cmcf->worker->lookups < lookups)
        {
            stmt = op->stmt;
            break;
        }
    }

    if (stmt == NULL) {
        return NGX_DECLINED;
    }

    n = stmt->batched ? cmcf->batch_max : 1;
    size = 0;

    /* take up to n ops of the same statement, oldest first */

    pc->nops = 0;

    while (q != ngx_queue_sentinel(&ngx_http_corelog_batch_queue)
           && pc->nops < n)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        if (op->stmt == stmt) {

            if (pc->nops && size + op->size > NGX_HTTP_CORELOG_BATCH_BYTES) {
                break;
            }

            size += op->size;

            ngx_http_corelog_batch_unqueue(op);

            op->state = NGX_HTTP_CORELOG_OP_SENT;
            op->conn = pc;
            op->slot = pc->nops;
            pc->ops[pc->nops++] = op;
        }

        q = next;
    }

    pc->stmt = stmt;

    if (stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        cmcf->worker->lookups++;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog batch: %ui op(s) of \"%s\", %uz bytes",
                   pc->nops, stmt->name, size);

    /* rows per statement, by powers of two: logged at worker exit */

    for (n = 0; n < NGX_HTTP_CORELOG_HIST - 1 && pc->nops >> (n + 1); n++) {
        /* void */
    }

    stmt->rows[n]++;

    ngx_http_corelog_batch_send(pc);

    return NGX_OK;
}


/* the op leaves the queue: its bound and its wait timer */

static void
ngx_http_corelog_batch_unqueue(ngx_http_corelog_op_t *op)
{
    ngx_queue_remove(&op->queue);
    ngx_http_corelog_batch_nqueued--;
    ngx_http_corelog_batch_conf->worker->queued[op->stmt->kind]--;

    if (op->wait.timer_set) {
        ngx_del_timer(&op->wait);
    }
}


/* pc's statement is over (or never went): pc counts for no kind */

static void
ngx_http_corelog_batch_release(ngx_http_corelog_pg_conn_t *pc)
{
    if (pc->stmt && pc->stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        ngx_http_corelog_batch_conf->worker->lookups--;
    }

    pc->stmt = NULL;
}


/* "corelog: rows per statement "x": 1:5 2-3:7 ..." for each statement */

void
ngx_http_corelog_batch_log_rows(ngx_log_t *log, ngx_http_corelog_stmt_t *stmt)
{
    u_char      *p, *last;
    ngx_uint_t   i, any;
    u_char       text[NGX_HTTP_CORELOG_HIST * (2 * NGX_INT_T_LEN + 8)];

    p = text;
    last = text + sizeof(text);
    any = 0;

    for (i = 0; i < NGX_HTTP_CORELOG_HIST; i++) {
        any |= stmt->rows[i];

        if (i == 0) {
            p = ngx_slprintf(p, last, " 1:%ui", stmt->rows[i]);

        } else if (i == NGX_HTTP_CORELOG_HIST - 1) {
            p = ngx_slprintf(p, last, " %ui+:%ui", (ngx_uint_t) 1 << i,
                             stmt->rows[i]);

        } else {
            p = ngx_slprintf(p, last, " %ui-%ui:%ui", (ngx_uint_t) 1 << i,
                             ((ngx_uint_t) 2 << i) - 1, stmt->rows[i]);
        }
    }

    if (any) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "corelog: rows per statement \"%s\":%*s",
                      stmt->name, p - text, text);
    }
}


/*
 * Builds the parameters of the ops on pc and sends the statement; also
 * called again by the pool once the statement is prepared on pc.
 */

void
ngx_http_corelog_batch_send(ngx_http_corelog_pg_conn_t *pc)
{
    u_char                   *p, *start;
    size_t                    size;
    ngx_uint_t                i, n, nparams;
    ngx_http_corelog_op_t    *op;
    ngx_http_corelog_stmt_t  *stmt;

    /* requests gone while the statement was being prepared */

    for (i = 0, n = 0; i < pc->nops; i++) {
        if (pc->ops[i]) {
            pc->ops[i]->slot = n;
            pc->ops[n++] = pc->ops[i];
        }
    }

    pc->nops = n;

    if (n == 0) {
        ngx_http_corelog_batch_release(pc);
        return;
    }

    stmt = pc->ops[0]->stmt;

    nparams = stmt->nparams + (stmt->batched ? 1 : 0);

    if (ngx_http_corelog_batch_params(nparams) != NGX_OK) {
        goto failed;
    }

    if (stmt->batched) {
        /* binary arrays: header, then a length and the bytes per element */

        size = NGX_HTTP_CORELOG_ARRAY_HEADER + pc->nops * 8;

        for (i = 0; i < stmt->nparams; i++) {
            size += NGX_HTTP_CORELOG_ARRAY_HEADER;

            for (n = 0; n < pc->nops; n++) {
                size += 4 + ngx_max(pc->ops[n]->values[i].len, 16);
            }
        }

    } else {
        /* one text parameter per column, NUL-terminated */

        size = 0;

        for (i = 0; i < stmt->nparams; i++) {
            size += pc->ops[0]->values[i].len + 1;
        }
    }

    p = ngx_http_corelog_batch_reserve(size);
    if (p == NULL) {
        goto failed;
    }

    if (stmt->batched) {
        start = p;
        p = ngx_http_corelog_batch_header(p, NGX_HTTP_CORELOG_OID_INT4,
                                          pc->nops, 0);

        for (n = 0; n < pc->nops; n++) {
            p = ngx_http_corelog_batch_put32(p, 4);
            p = ngx_http_corelog_batch_put32(p, (uint32_t) n);
        }

        ngx_http_corelog_batch_param(0, start, p, 1);

        for (i = 0; i < stmt->nparams; i++) {
            start = p;
            p = ngx_http_corelog_batch_array(p, pc, i,
                                             stmt->columns
                                             ? stmt->columns[i]
                                             : NGX_HTTP_CORELOG_COL_TEXT);
            if (p == NULL) {
                goto failed;
            }

            ngx_http_corelog_batch_param(i + 1, start, p, 1);
        }

    } else {
        op = pc->ops[0];

        for (i = 0; i < stmt->nparams; i++) {
            if (op->values[i].data == NULL) {
                ngx_http_corelog_batch_param(i, NULL, NULL, 0);
                continue;
            }

            start = p;
            p = ngx_cpymem(p, op->values[i].data, op->values[i].len);
            *p++ = '\0';

            ngx_http_corelog_batch_param(i, start, p - 1, 0);
        }
    }

    (void) ngx_http_corelog_pg_send(pc, stmt, (int) nparams,
                                    ngx_http_corelog_batch_values,
                                    ngx_http_corelog_batch_lengths,
                                    ngx_http_corelog_batch_formats);
    return;

failed:

    ngx_http_corelog_batch_done(pc, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL);
}


/* room for the values, lengths and formats of nparams parameters */

static ngx_int_t
ngx_http_corelog_batch_params(ngx_uint_t nparams)
{
    u_char  *p;

    if (nparams <= ngx_http_corelog_batch_nvalues) {
        return NGX_OK;
    }

    if (ngx_http_corelog_batch_values) {
        ngx_free(ngx_http_corelog_batch_values);
        ngx_http_corelog_batch_values = NULL;
        ngx_http_corelog_batch_nvalues = 0;
    }

    p = ngx_alloc(nparams * (sizeof(char *) + 2 * sizeof(int)),
                  ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_corelog_batch_values = (const char **) p;
    ngx_http_corelog_batch_lengths = (int *) (p + nparams * sizeof(char *));
    ngx_http_corelog_batch_formats = ngx_http_corelog_batch_lengths + nparams;
    ngx_http_corelog_batch_nvalues = nparams;

    return NGX_OK;
}


static void
ngx_http_corelog_batch_param(ngx_uint_t i, u_char *start, u_char *end,
    int format)
{
    ngx_http_corelog_batch_values[i] = (const char *) start;
    ngx_http_corelog_batch_lengths[i] = (int) (end - start);
    ngx_http_corelog_batch_formats[i] = format;
}


static u_char *
ngx_http_corelog_batch_reserve(size_t size)
{
    if (size > ngx_http_corelog_batch_size) {
        if (ngx_http_corelog_batch_buf) {
            ngx_free(ngx_http_corelog_batch_buf);
        }

        size = ngx_max(size, 4096);

        ngx_http_corelog_batch_buf = ngx_alloc(size, ngx_cycle->log);
        if (ngx_http_corelog_batch_buf == NULL) {
            ngx_http_corelog_batch_size = 0;
            return NULL;
        }

        ngx_http_corelog_batch_size = size;
    }

    return ngx_http_corelog_batch_buf;
}


static u_char *
ngx_http_corelog_batch_put32(u_char *p, uint32_t v)
{
    *p++ = (u_char) (v >> 24);
    *p++ = (u_char) (v >> 16);
    *p++ = (u_char) (v >> 8);
    *p++ = (u_char) v;

    return p;
}


static u_char *
ngx_http_corelog_batch_put64(u_char *p, uint64_t v)
{
    p = ngx_http_corelog_batch_put32(p, (uint32_t) (v >> 32));
    return ngx_http_corelog_batch_put32(p, (uint32_t) v);
}


/* a one-dimensional array in PostgreSQL's binary format (array_send) */

static u_char *
ngx_http_corelog_batch_header(u_char *p, uint32_t oid, ngx_uint_t n,
    ngx_uint_t nulls)
{
    p = ngx_http_corelog_batch_put32(p, 1);                /* dimensions */
    p = ngx_http_corelog_batch_put32(p, nulls ? 1 : 0);
    p = ngx_http_corelog_batch_put32(p, oid);
    p = ngx_http_corelog_batch_put32(p, (uint32_t) n);
    return ngx_http_corelog_batch_put32(p, 1);             /* lower bound */
}


/*
 * One column of the ops on pc as a binary array of its type.  The values
 * were made by the routes, so one that does not convert is a bug: NULL.
 */

static u_char *
ngx_http_corelog_batch_array(u_char *p, ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t column, ngx_uint_t type)
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

    for (n = 0, nulls = 0; n < pc->nops; n++) {
        nulls |= (pc->ops[n]->values[column].data == NULL);
    }

    p = ngx_http_corelog_batch_header(p, oid, pc->nops, nulls);

    for (n = 0; n < pc->nops; n++) {
        v = &pc->ops[n]->values[column];

        if (v->data == NULL) {
            p = ngx_http_corelog_batch_put32(p, (uint32_t) -1);
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
            p = ngx_http_corelog_batch_uuid(p, v);
            break;

        case NGX_HTTP_CORELOG_COL_INT4:
            rc = ngx_atoi(v->data, v->len);
            p = (rc == NGX_ERROR || rc > NGX_MAX_INT32_VALUE)
                ? NULL : ngx_http_corelog_batch_put32(p, (uint32_t) rc);
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
            p = ngx_http_corelog_batch_put64(p, bits);
            break;

        default: /* NGX_HTTP_CORELOG_COL_TIMESTAMPTZ */
            p = (ngx_http_corelog_batch_timestamp(v, &bits) == NGX_OK)
                ? ngx_http_corelog_batch_put64(p, bits) : NULL;
            break;
        }

        if (p == NULL) {
            goto invalid;
        }

        (void) ngx_http_corelog_batch_put32(len, (uint32_t) (p - len - 4));
    }

    return p;

invalid:

    ngx_log_error(NGX_LOG_ALERT, &pc->log, 0,
                  "corelog: column %ui of \"%s\" does not convert to "
                  "its type %ui", column, pc->ops[0]->stmt->name, type);

    return NULL;
}


/* 8-4-4-4-12 hexadecimal digits: 16 bytes */

static u_char *
ngx_http_corelog_batch_uuid(u_char *p, ngx_str_t *v)
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
ngx_http_corelog_batch_timestamp(ngx_str_t *v, uint64_t *usec)
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


/*
 * The statement on pc has ended: rc NGX_OK with its result, or an HTTP
 * status.  Every op of it is answered once.  The ops are first moved to a
 * local list, so that handlers may post new ops, even on this connection.
 */

void
ngx_http_corelog_batch_done(ngx_http_corelog_pg_conn_t *pc, ngx_int_t rc,
    PGresult *res)
{
    ngx_queue_t  done;

    ngx_http_corelog_batch_detach(pc, res, &done);
    ngx_http_corelog_batch_answer(&done, rc, res);
}


/*
 * Moves the ops of pc's statement to the list done, each with its row of
 * res; pc is free for the next statement once this returns.
 */

void
ngx_http_corelog_batch_detach(ngx_http_corelog_pg_conn_t *pc, PGresult *res,
    ngx_queue_t *done)
{
    int                     row, rows;
    ngx_int_t               ord;
    ngx_uint_t              i, n;
    ngx_queue_t            *q;
    ngx_http_corelog_op_t  *op;

    ngx_queue_init(done);

    ngx_http_corelog_batch_release(pc);

    n = pc->nops;
    pc->nops = 0;

    /* a result of another shape answers no op: they get a 500 */

    for (i = 0; res && i < n; i++) {
        op = pc->ops[i];

        if (op == NULL) {
            continue;
        }

        if (PQnfields(res) != (int) op->stmt->nfields) {
            ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                          "corelog: statement \"%s\" returned %d columns, "
                          "expected %ui", op->stmt->name, PQnfields(res),
                          op->stmt->nfields);
            res = NULL;
        }

        break;
    }

    for (i = 0; i < n; i++) {
        op = pc->ops[i];

        if (op == NULL) {
            continue;               /* its request is gone */
        }

        pc->ops[i] = NULL;
        op->state = NGX_HTTP_CORELOG_OP_DISPATCH;
        op->conn = NULL;
        op->row = -1;
        ngx_queue_insert_tail(done, &op->queue);

        if (res && !op->stmt->batched) {
            op->row = PQntuples(res) ? 0 : -1;
        }
    }

    if (res == NULL || ngx_queue_empty(done)) {
        return;
    }

    op = ngx_queue_data(ngx_queue_head(done), ngx_http_corelog_op_t, queue);

    if (!op->stmt->batched) {
        return;
    }

    /* column 0 is the op's ordinal in the statement, its slot */

    rows = PQntuples(res);

    for (q = ngx_queue_head(done);
         q != ngx_queue_sentinel(done);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        for (row = 0; row < rows; row++) {
            ord = ngx_atoi((u_char *) PQgetvalue(res, row, 0),
                           PQgetlength(res, row, 0));

            if (ord == (ngx_int_t) op->slot) {
                op->row = row;
                break;
            }
        }
    }
}


/* answers the detached ops: their handlers finalize their requests */

void
ngx_http_corelog_batch_answer(ngx_queue_t *done, ngx_int_t rc,
    PGresult *res)
{
    ngx_str_t               note;
    ngx_queue_t            *q;
    ngx_http_corelog_op_t  *op;
    u_char                  buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    while (!ngx_queue_empty(done)) {
        q = ngx_queue_head(done);
        ngx_queue_remove(q);

        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);
        op->state = NGX_HTTP_CORELOG_OP_DONE;

        if (rc == NGX_OK && (res == NULL || op->row < 0)) {
            if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_NO_ROW, &note,
                                       buf))
            {
                ngx_log_error(NGX_LOG_ERR, op->request->connection->log, 0,
                              "corelog: statement \"%s\" returned no row "
                              "for this request%V", op->stmt->name, &note);
            }

            op->handler(op, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL, -1);
            continue;
        }

        op->handler(op, rc, res, (int) op->row);
    }
}


void
ngx_http_corelog_batch_fail_queued(ngx_int_t rc)
{
    ngx_queue_t            *q;
    ngx_http_corelog_op_t  *op;

    while (!ngx_queue_empty(&ngx_http_corelog_batch_queue)) {
        q = ngx_queue_head(&ngx_http_corelog_batch_queue);
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        ngx_http_corelog_batch_unqueue(op);

        op->state = NGX_HTTP_CORELOG_OP_DONE;
        op->handler(op, rc, NULL, -1);
    }
}


static void
ngx_http_corelog_batch_wait_handler(ngx_event_t *ev)
{
    ngx_str_t               note;
    ngx_http_corelog_op_t  *op;
    u_char                  buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    op = ev->data;

    if (op->state != NGX_HTTP_CORELOG_OP_QUEUED) {
        return;
    }

    ngx_http_corelog_batch_unqueue(op);
    op->state = NGX_HTTP_CORELOG_OP_DONE;

    if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_QUEUE_WAIT, &note, buf)) {
        ngx_log_error(NGX_LOG_WARN, op->request->connection->log, 0,
                      "corelog: %s waited %M ms for a PostgreSQL "
                      "connection, answering 503%V",
                      op->stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP
                      ? "token lookup" : "write",
                      ngx_http_corelog_batch_conf->query_timeout, &note);
    }

    op->handler(op, NGX_HTTP_SERVICE_UNAVAILABLE, NULL, -1);
}


/* the request is gone: its op must be found nowhere */

static void
ngx_http_corelog_batch_cleanup(void *data)
{
    ngx_http_corelog_op_t  *op = data;

    switch (op->state) {

    case NGX_HTTP_CORELOG_OP_QUEUED:
        ngx_http_corelog_batch_unqueue(op);
        break;

    case NGX_HTTP_CORELOG_OP_SENT:
        op->conn->ops[op->slot] = NULL;
        break;

    case NGX_HTTP_CORELOG_OP_DISPATCH:
        ngx_queue_remove(&op->queue);
        break;
    }

    if (op->wait.timer_set) {
        ngx_del_timer(&op->wait);
    }

    op->state = NGX_HTTP_CORELOG_OP_DONE;
}
