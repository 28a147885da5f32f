
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
static u_char *ngx_http_corelog_batch_reserve(size_t size);
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

static ngx_http_corelog_main_conf_t  *ngx_http_corelog_batch_conf;
static ngx_queue_t                    ngx_http_corelog_batch_queue;
static ngx_uint_t                     ngx_http_corelog_batch_nqueued;
static ngx_uint_t                     ngx_http_corelog_batch_running;
static ngx_uint_t                     ngx_http_corelog_batch_again;
static ngx_event_t                    ngx_http_corelog_batch_spill;

/* one reusable buffer for the parameters of the statement being sent */
static u_char                        *ngx_http_corelog_batch_buf;
static size_t                         ngx_http_corelog_batch_size;
static ngx_http_corelog_params_t      ngx_http_corelog_batch_args;
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

    if (ngx_http_corelog_batch_args.values) {
        ngx_free(ngx_http_corelog_batch_args.values);
        ngx_http_corelog_batch_args.values = NULL;
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

    op->values = ngx_pcalloc(r->pool,
                             stmt->nparams * sizeof(ngx_http_corelog_value_t));
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
    ngx_uint_t                     kind, max;
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

    op->size = ngx_http_corelog_value_op_size(op);

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
    u_char                   *p;
    ngx_uint_t                i, n, nparams;
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

    p = ngx_http_corelog_batch_reserve(
                          ngx_http_corelog_value_params_size(stmt, pc->ops,
                                                             pc->nops));
    if (p == NULL) {
        goto failed;
    }

    if (ngx_http_corelog_value_params(stmt, pc->ops, pc->nops, p,
                                      &ngx_http_corelog_batch_args, &pc->log)
        != NGX_OK)
    {
        goto failed;
    }

    (void) ngx_http_corelog_pg_send(pc, stmt, (int) nparams,
                                    ngx_http_corelog_batch_args.values,
                                    ngx_http_corelog_batch_args.lengths,
                                    ngx_http_corelog_batch_args.formats);
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

    if (ngx_http_corelog_batch_args.values) {
        ngx_free(ngx_http_corelog_batch_args.values);
        ngx_http_corelog_batch_args.values = NULL;
        ngx_http_corelog_batch_nvalues = 0;
    }

    p = ngx_alloc(nparams * (sizeof(char *) + 2 * sizeof(int)),
                  ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_corelog_batch_args.values = (const char **) p;
    ngx_http_corelog_batch_args.lengths = (int *) (p + nparams * sizeof(char *));
    ngx_http_corelog_batch_args.formats = ngx_http_corelog_batch_args.lengths + nparams;
    ngx_http_corelog_batch_nvalues = nparams;

    return NGX_OK;
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
