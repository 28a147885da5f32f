
/*
 * Copyright (C) corelog authors
 *
 * The per-worker write queue and its pool of PostgreSQL connections.  A
 * request whose body is valid becomes an op in the queue; a free connection
 * takes the ops queued for one statement (up to corelog_batch_max of them)
 * and sends them as one statement of arrays, one element per op.  The
 * statement returns one row per op, so each request gets its own answer.
 * The connections (ngx_http_corelog_pg.c) report to the queue through its
 * handlers (ready, done, down, params); what an outcome means for the ops,
 * the queue decides.
 *
 * A statement that fails on the server commits nothing, so its ops may go
 * again: after a serialization failure or a deadlock, once more as they
 * were; after an error that one row may have caused, each alone, so that
 * only the row at fault gets the error.
 */


#include "ngx_http_corelog.h"


/* a connection of the pool, and the ops of its statement */

struct ngx_http_corelog_queue_conn_s {
    ngx_http_corelog_pg_conn_t   pg;
    ngx_http_corelog_worker_t   *worker;
    const ngx_http_corelog_stmt_t *stmt;        /* of the ops */
    ngx_http_corelog_op_t      **ops;         /* the statement's rows */
    ngx_uint_t                   nops;
    ngx_msec_t                   taken;       /* when the ops were */
    unsigned                     up:1;        /* counted in worker->nup */
};


static ngx_int_t ngx_http_corelog_queue_available(
    ngx_http_corelog_worker_t *w);
static void ngx_http_corelog_queue_run(ngx_http_corelog_worker_t *w);
static ngx_http_corelog_queue_conn_t *ngx_http_corelog_queue_idle(
    ngx_http_corelog_worker_t *w);
static ngx_uint_t ngx_http_corelog_queue_want(ngx_http_corelog_worker_t *w);
static ngx_uint_t ngx_http_corelog_queue_busy(ngx_http_corelog_worker_t *w);
static void ngx_http_corelog_queue_spill_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_corelog_queue_take(
    ngx_http_corelog_queue_conn_t *qc);
static void ngx_http_corelog_queue_count_rows(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt, ngx_uint_t rows);
static ngx_uint_t ngx_http_corelog_queue_stmt(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt);
static void ngx_http_corelog_queue_unqueue(ngx_http_corelog_op_t *op);
static void ngx_http_corelog_queue_release(ngx_http_corelog_queue_conn_t *qc);
static void ngx_http_corelog_queue_ready(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_queue_done(ngx_http_corelog_pg_conn_t *pc,
    ngx_int_t rc, PGresult *res, const char *sqlstate);
static ngx_uint_t ngx_http_corelog_queue_retry(ngx_int_t rc,
    const char *sqlstate, ngx_uint_t nops);
static void ngx_http_corelog_queue_again(ngx_http_corelog_queue_conn_t *qc,
    ngx_uint_t how, const char *sqlstate, ngx_queue_t *done,
    ngx_queue_t *late);
static void ngx_http_corelog_queue_enqueue(ngx_http_corelog_op_t *op,
    ngx_msec_t timer, ngx_uint_t head);
static void ngx_http_corelog_queue_down(ngx_http_corelog_pg_conn_t *pc,
    ngx_int_t rc);
static ngx_int_t ngx_http_corelog_queue_params(ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t *nparams, ngx_http_corelog_params_t *params);
static ngx_int_t ngx_http_corelog_queue_args(ngx_http_corelog_worker_t *w,
    ngx_uint_t nparams);
static u_char *ngx_http_corelog_queue_reserve(ngx_http_corelog_worker_t *w,
    size_t size);
static void ngx_http_corelog_queue_detach(ngx_http_corelog_queue_conn_t *qc,
    ngx_int_t rc, PGresult *res, ngx_queue_t *done);
static void ngx_http_corelog_queue_answer(ngx_queue_t *done, ngx_int_t rc,
    PGresult *res);
static void ngx_http_corelog_queue_fail_queued(ngx_http_corelog_worker_t *w,
    ngx_int_t rc);
static void ngx_http_corelog_queue_wait_handler(ngx_event_t *ev);
static void ngx_http_corelog_queue_cleanup(void *data);


/*
 * The rows of a write statement that make its clients a crowd: once it
 * has committed, they are likely to send again at once, and the next
 * statement waits for them (ngx_http_corelog_queue_done()).
 */
#define NGX_HTTP_CORELOG_QUEUE_CROWD  4

/*
 * The values one statement carries at most (but always one op's): the
 * module's parameter buffer and libpq's output buffer of a connection are
 * each about this large at most, whatever corelog_batch_max is.
 */
#define NGX_HTTP_CORELOG_QUEUE_BYTES  (1024 * 1024)

/* what becomes of the ops of a statement that failed on the server */
#define NGX_HTTP_CORELOG_QUEUE_ANSWER  0    /* each gets the error */
#define NGX_HTTP_CORELOG_QUEUE_AGAIN   1    /* rolled back: once more */
#define NGX_HTTP_CORELOG_QUEUE_ALONE   2    /* each again, in no batch */


static const ngx_http_corelog_pg_handlers_t  ngx_http_corelog_queue_handlers = {
    ngx_http_corelog_queue_ready,
    ngx_http_corelog_queue_done,
    ngx_http_corelog_queue_down,
    ngx_http_corelog_queue_params
};


/* the queue of a worker with a conninfo, and its pool, connecting */

ngx_int_t
ngx_http_corelog_queue_init_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf)
{
    ngx_uint_t                      i;
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_queue_conn_t  *qc;

    w = cmcf->worker;

    w->conf = cmcf;
    ngx_queue_init(&w->queue);

    w->spill.handler = ngx_http_corelog_queue_spill_handler;
    w->spill.data = w;
    w->spill.log = cycle->log;
    w->spill.cancelable = 1;

    w->conns = ngx_pcalloc(cycle->pool, cmcf->connections
                                     * sizeof(ngx_http_corelog_queue_conn_t));
    if (w->conns == NULL) {
        return NGX_ERROR;
    }

    w->nconns = cmcf->connections;

    for (i = 0; i < w->nconns; i++) {
        qc = &w->conns[i];

        qc->worker = w;
        qc->ops = ngx_pcalloc(cycle->pool, cmcf->batch_max
                                           * sizeof(ngx_http_corelog_op_t *));
        if (qc->ops == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_corelog_pg_open(&qc->pg, i, cmcf,
                                     &ngx_http_corelog_queue_handlers, qc,
                                     cycle->log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_corelog_queue_exit_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf)
{
    ngx_uint_t                  i;
    ngx_http_corelog_worker_t  *w;

    w = cmcf->worker;

    if (w == NULL) {
        return;
    }

    for (i = 0; i < w->nconns; i++) {
        ngx_http_corelog_pg_close(&w->conns[i].pg);
    }

    w->nconns = 0;

    if (w->buf) {
        ngx_free(w->buf);
        w->buf = NULL;
        w->size = 0;
    }

    if (w->params.values) {
        ngx_free(w->params.values);
        w->params.values = NULL;
        w->nparams = 0;
    }

    if (w->spill.timer_set) {
        ngx_del_timer(&w->spill);
    }
}


ngx_http_corelog_op_t *
ngx_http_corelog_queue_op(ngx_http_request_t *r,
    const ngx_http_corelog_stmt_t *stmt)
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

    cln->handler = ngx_http_corelog_queue_cleanup;
    cln->data = op;

    op->request = r;
    op->worker = ngx_http_corelog_worker();
    op->stmt = stmt;
    op->row = -1;
    op->state = NGX_HTTP_CORELOG_OP_NEW;

    op->wait.handler = ngx_http_corelog_queue_wait_handler;
    op->wait.data = op;
    op->wait.log = r->connection->log;

    return op;
}


/*
 * NGX_OK: queued (its handler may even have run already);
 * NGX_BUSY: the queue is full; NGX_DECLINED: PostgreSQL is unavailable.
 */

ngx_int_t
ngx_http_corelog_queue_post(ngx_http_corelog_op_t *op)
{
    ngx_str_t                      note;
    ngx_uint_t                     kind, max;
    ngx_http_corelog_worker_t     *w;
    ngx_http_corelog_main_conf_t  *cmcf;
    u_char                         buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    w = op->worker;

    if (w == NULL || ngx_http_corelog_queue_available(w) != NGX_OK) {
        return NGX_DECLINED;
    }

    cmcf = w->conf;

    /* writes and lookups have a bound each: neither starves the other */

    kind = op->stmt->kind;

    if (kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        max = cmcf->token_queue_max;

    } else {
        max = cmcf->queue_max;
    }

    if (w->queued[kind] >= max) {
        ngx_http_corelog_stats_kind(w, NGX_HTTP_CORELOG_STATS_REJECTED, kind);

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

    /* its waits in the queue, sent again or not, end then */

    op->queued_at = ngx_current_msec;
    op->deadline = op->queued_at + cmcf->wait_timeout;

    ngx_http_corelog_queue_enqueue(op, cmcf->wait_timeout, 0);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                   "corelog queued: depth %ui, \"%s\"",
                   w->nqueued, op->stmt->name);

    ngx_http_corelog_queue_run(w);

    return NGX_OK;
}


/*
 * NGX_OK when a write can expect a connection soon: one is up, or a first
 * attempt is still under way (nginx just started).  During an outage the
 * caller answers 503 at once instead of waiting.
 */

static ngx_int_t
ngx_http_corelog_queue_available(ngx_http_corelog_worker_t *w)
{
    ngx_uint_t                   i;
    ngx_http_corelog_pg_conn_t  *pc;

    if (w->nup) {
        return NGX_OK;
    }

    for (i = 0; i < w->nconns; i++) {
        pc = &w->conns[i].pg;

        if (pc->state == NGX_HTTP_CORELOG_PG_CONNECTING && pc->failures == 0) {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * Hands queued ops to idle connections; never re-entered.  While a
 * statement is in flight, new ops wait for it (they go together in the
 * next one) rather than open a second statement at once: more rows per
 * statement and commit.  Another idle connection is used when a full
 * batch is waiting, or when the ops have waited corelog_batch_wait.  With
 * no statement in flight, ops wait the same way for the clients of the
 * last one (w->hold), so that they too go together.
 */

static void
ngx_http_corelog_queue_run(ngx_http_corelog_worker_t *w)
{
    ngx_http_corelog_queue_conn_t  *qc;

    if (w->running) {
        w->again = 1;
        return;
    }

    w->running = 1;

    do {
        w->again = 0;

        while (!ngx_queue_empty(&w->queue)) {
            qc = ngx_http_corelog_queue_idle(w);
            if (qc == NULL) {
                break;
            }

            if (w->nqueued < ngx_http_corelog_queue_want(w)
                && !w->spill.timedout)
            {
                if (!w->spill.timer_set) {
                    ngx_add_timer(&w->spill, w->conf->batch_wait);
                }

                break;
            }

            if (ngx_http_corelog_queue_take(qc) != NGX_OK) {
                break;
            }

            w->hold = 0;
        }

    } while (w->again);

    w->spill.timedout = 0;

    if (ngx_queue_empty(&w->queue) && w->spill.timer_set) {
        ngx_del_timer(&w->spill);
    }

    w->running = 0;
}


/* an idle connection, or NULL */

static ngx_http_corelog_queue_conn_t *
ngx_http_corelog_queue_idle(ngx_http_corelog_worker_t *w)
{
    ngx_uint_t  i;

    for (i = 0; i < w->nconns; i++) {
        if (w->conns[i].pg.state == NGX_HTTP_CORELOG_PG_IDLE) {
            return &w->conns[i];
        }
    }

    return NULL;
}


/*
 * How many queued ops the next statement waits for (up to
 * corelog_batch_wait): a full batch while a statement is in flight, the
 * clients of the last one when none is, none with corelog_batch_wait 0.
 * The first of those clients comes within corelog_batch_wait of the
 * commit, or none is waited for: an op that comes later is not theirs.
 */

static ngx_uint_t
ngx_http_corelog_queue_want(ngx_http_corelog_worker_t *w)
{
    if (w->conf->batch_wait == 0) {
        return 0;
    }

    if (ngx_http_corelog_queue_busy(w)) {
        return w->conf->batch_max;
    }

    if (w->hold && !w->spill.timer_set
        && ngx_current_msec - w->held > w->conf->batch_wait)
    {
        w->hold = 0;
    }

    return w->hold;
}


/* connections with a statement in flight */

static ngx_uint_t
ngx_http_corelog_queue_busy(ngx_http_corelog_worker_t *w)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < w->nconns; i++) {
        if (w->conns[i].pg.state == NGX_HTTP_CORELOG_PG_BUSY) {
            n++;
        }
    }

    return n;
}


/* ops waited corelog_batch_wait: they go as they are */

static void
ngx_http_corelog_queue_spill_handler(ngx_event_t *ev)
{
    ngx_http_corelog_queue_run(ev->data);
}


/*
 * The oldest queued op that may go now, and the ops of its statement
 * queued after it, up to corelog_batch_max of them and
 * NGX_HTTP_CORELOG_QUEUE_BYTES of values, go to qc.  Lookups use at most
 * half the connections (one if there is one): the others stay for writes.
 * NGX_DECLINED: nothing may go now.
 */

static ngx_int_t
ngx_http_corelog_queue_take(ngx_http_corelog_queue_conn_t *qc)
{
    size_t                         size;
    ngx_uint_t                     n, lookups;
    ngx_queue_t                   *q, *next;
    ngx_http_corelog_op_t         *op, *first;
    const ngx_http_corelog_stmt_t *stmt;
    ngx_http_corelog_worker_t     *w;
    ngx_http_corelog_main_conf_t  *cmcf;

    w = qc->worker;
    cmcf = w->conf;

    lookups = ngx_max(cmcf->connections / 2, 1);

    first = NULL;

    for (q = ngx_queue_head(&w->queue);
         q != ngx_queue_sentinel(&w->queue);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        if (op->stmt->kind != NGX_HTTP_CORELOG_KIND_LOOKUP
            || w->lookups < lookups)
        {
            first = op;
            break;
        }
    }

    if (first == NULL) {
        return NGX_DECLINED;
    }

    stmt = first->stmt;
    n = (stmt->batched && !first->alone) ? cmcf->batch_max : 1;
    size = 0;

    /* take up to n ops of the same statement, oldest first, none alone */

    qc->nops = 0;

    while (q != ngx_queue_sentinel(&w->queue)
           && qc->nops < n)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        if (op->stmt == stmt && (qc->nops == 0 || !op->alone)) {

            if (qc->nops && size + op->size > NGX_HTTP_CORELOG_QUEUE_BYTES) {
                break;
            }

            size += op->size;

            ngx_http_corelog_queue_unqueue(op);

            op->state = NGX_HTTP_CORELOG_OP_SENT;
            op->conn = qc;
            op->slot = qc->nops;
            qc->ops[qc->nops++] = op;
        }

        q = next;
    }

    qc->stmt = stmt;
    qc->taken = ngx_current_msec;

    if (stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        w->lookups++;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &qc->pg.log, 0,
                   "corelog queue: %ui op(s) of \"%s\", %uz bytes",
                   qc->nops, stmt->name, size);

#if (NGX_DEBUG)

    for (n = 0; n < qc->nops; n++) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP,
                       qc->ops[n]->request->connection->log, 0,
                       "corelog taken into statement \"%s\": %ui row(s), "
                       "PostgreSQL connection #%ui",
                       stmt->name, qc->nops, qc->pg.index);
    }

#endif

    ngx_http_corelog_queue_count_rows(w, stmt, qc->nops);
    ngx_http_corelog_stats_statement(w, stmt, qc->nops);

    (void) ngx_http_corelog_pg_send(&qc->pg, stmt);

    return NGX_OK;
}


/*
 * Rows per statement, by powers of two, logged at worker exit: each
 * statement gets its number in the worker's table when first sent.
 */

static void
ngx_http_corelog_queue_count_rows(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt, ngx_uint_t rows)
{
    ngx_uint_t  s, n;

    s = ngx_http_corelog_queue_stmt(w, stmt);

    if (s == w->nstmts) {
        if (s == NGX_HTTP_CORELOG_STMTS) {
            return;     /* cannot happen: a handful of statements */
        }

        w->stmts[w->nstmts++] = stmt;
    }

    for (n = 0; n < NGX_HTTP_CORELOG_HIST - 1 && rows >> (n + 1); n++) {
        /* void */
    }

    w->rows[s][n]++;
}


/* the statement's number in the worker's table; w->nstmts: not in it */

static ngx_uint_t
ngx_http_corelog_queue_stmt(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt)
{
    ngx_uint_t  s;

    for (s = 0; s < w->nstmts; s++) {
        if (w->stmts[s] == stmt) {
            break;
        }
    }

    return s;
}


/* "corelog: rows per statement "x": 1:5 2-3:7 ..." for the statement */

void
ngx_http_corelog_queue_log_rows(ngx_cycle_t *cycle,
    const ngx_http_corelog_stmt_t *stmt)
{
    u_char                     *p, *last;
    ngx_uint_t                  i, s, any, *rows;
    ngx_http_corelog_worker_t  *w;
    u_char                      text[NGX_HTTP_CORELOG_HIST
                                     * (2 * NGX_INT_T_LEN + 8)];

    w = ngx_http_corelog_worker();

    if (w == NULL) {
        return;
    }

    s = ngx_http_corelog_queue_stmt(w, stmt);

    if (s == w->nstmts) {
        return;
    }

    rows = w->rows[s];

    p = text;
    last = text + sizeof(text);
    any = 0;

    for (i = 0; i < NGX_HTTP_CORELOG_HIST; i++) {
        any |= rows[i];

        if (i == 0) {
            p = ngx_slprintf(p, last, " 1:%ui", rows[i]);

        } else if (i == NGX_HTTP_CORELOG_HIST - 1) {
            p = ngx_slprintf(p, last, " %ui+:%ui", (ngx_uint_t) 1 << i,
                             rows[i]);

        } else {
            p = ngx_slprintf(p, last, " %ui-%ui:%ui", (ngx_uint_t) 1 << i,
                             ((ngx_uint_t) 2 << i) - 1, rows[i]);
        }
    }

    if (any) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "corelog: rows per statement \"%s\":%*s",
                      stmt->name, p - text, text);
    }
}


/* the op leaves the queue: its bound and its wait timer */

static void
ngx_http_corelog_queue_unqueue(ngx_http_corelog_op_t *op)
{
    ngx_http_corelog_worker_t  *w;

    w = op->worker;

    ngx_queue_remove(&op->queue);
    w->nqueued--;
    w->queued[op->stmt->kind]--;
    ngx_http_corelog_stats_queued(w, op->stmt->kind);

    if (op->wait.timer_set) {
        ngx_del_timer(&op->wait);
    }
}


/* qc's statement is over (or never went): qc counts for no kind */

static void
ngx_http_corelog_queue_release(ngx_http_corelog_queue_conn_t *qc)
{
    if (qc->stmt && qc->stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP) {
        qc->worker->lookups--;
    }

    qc->stmt = NULL;
}


/* the pg handlers: pc->data is its ngx_http_corelog_queue_conn_t */

static void
ngx_http_corelog_queue_ready(ngx_http_corelog_pg_conn_t *pc)
{
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_queue_conn_t  *qc;

    qc = pc->data;
    w = qc->worker;

    if (!qc->up) {
        qc->up = 1;
        w->nup++;

        ngx_http_corelog_stats_down(w, 0);

        if (w->down_logged) {
            w->down_logged = 0;
            ngx_log_error(NGX_LOG_NOTICE, &pc->log, 0,
                          "corelog: PostgreSQL is available again");
        }
    }

    ngx_http_corelog_queue_run(w);
}


/*
 * The statement on pc has ended: rc NGX_OK with its result, or an HTTP
 * status.  Every op of it is answered once, or queued again when the
 * statement failed on the server (sqlstate).  The ops are first moved to
 * a local list, so that handlers may post new ops, even on this
 * connection; and the next statement goes out before this one's answers
 * are written: PostgreSQL works on it while nginx answers.
 *
 * The clients of a committed write statement of a crowd's rows are
 * likely to send again as soon as they have their answers: the next
 * statement waits for as many ops as this one carried and those already
 * queued (w->hold, at most corelog_batch_max, for corelog_batch_wait at
 * most), so that they go together instead of one or two at once and the
 * rest after them.  The wait starts when the first of them is queued,
 * which must be within corelog_batch_wait of the commit: their requests
 * come in while nginx writes this statement's answers.
 */

static void
ngx_http_corelog_queue_done(ngx_http_corelog_pg_conn_t *pc, ngx_int_t rc,
    PGresult *res, const char *sqlstate)
{
    ngx_uint_t                      nops;
    ngx_queue_t                     done, late;
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_queue_conn_t  *qc;

    qc = pc->data;
    w = qc->worker;
    nops = qc->nops;

    if (qc->stmt && qc->stmt->kind == NGX_HTTP_CORELOG_KIND_WRITE) {
        w->hold = (rc == NGX_OK && nops >= NGX_HTTP_CORELOG_QUEUE_CROWD)
                  ? ngx_min(nops + w->nqueued, w->conf->batch_max) : 0;
        w->held = ngx_current_msec;
    }

    ngx_http_corelog_queue_detach(qc, rc, res, &done);

    ngx_queue_init(&late);

    if (rc != NGX_OK && sqlstate != NULL) {
        ngx_http_corelog_queue_again(qc,
                             ngx_http_corelog_queue_retry(rc, sqlstate, nops),
                             sqlstate, &done, &late);
    }

    ngx_http_corelog_queue_run(w);
    ngx_http_corelog_queue_answer(&done, rc, res);
    ngx_http_corelog_queue_answer(&late, NGX_HTTP_SERVICE_UNAVAILABLE, NULL);
}


/*
 * What becomes of the nops ops of a statement that failed with sqlstate
 * and was rolled back.  A serialization failure or a deadlock says
 * nothing of the rows: the same rows may well go through now.  An error
 * answered 500 may be one row's (a constraint, a trigger, a value out of
 * range): a statement of several ops is split, unless the error's class
 * says the statement, the session or the server is at fault.
 */

static ngx_uint_t
ngx_http_corelog_queue_retry(ngx_int_t rc, const char *sqlstate,
    ngx_uint_t nops)
{
    const char *const  *c;

    static const char *const  not_rows[] = {
        "0A",     /* feature not supported */
        "25",     /* invalid transaction state */
        "26",     /* invalid SQL statement name */
        "28",     /* invalid authorization */
        "3D",     /* invalid catalog name */
        "3F",     /* invalid schema name */
        "42",     /* syntax error or access rule violation */
        "55",     /* object not in prerequisite state: lock_timeout */
        "58",     /* system error */
        "F0",     /* configuration file error */
        "XX",     /* internal error */
        NULL
    };

    if (ngx_strcmp(sqlstate, "40001") == 0
        || ngx_strcmp(sqlstate, "40P01") == 0)
    {
        return NGX_HTTP_CORELOG_QUEUE_AGAIN;
    }

    if (rc != NGX_HTTP_INTERNAL_SERVER_ERROR || nops < 2) {
        return NGX_HTTP_CORELOG_QUEUE_ANSWER;
    }

    for (c = not_rows; *c; c++) {
        if (ngx_strncmp(sqlstate, *c, 2) == 0) {
            return NGX_HTTP_CORELOG_QUEUE_ANSWER;
        }
    }

    return NGX_HTTP_CORELOG_QUEUE_ALONE;
}


/*
 * The ops of the list done that may go again are queued at the head of
 * the queue, in their order: after a rollback (how _AGAIN) those not sent
 * again yet, once; after a row's error (_ALONE) every one, each to go in a
 * statement of its own.  The others stay in done and get the statement's
 * error.  An op keeps the deadline of its first wait: one whose time in
 * the queue and in failed statements reached its wait bound (half of
 * corelog_query_timeout) moves to the list late instead (503).
 */

static void
ngx_http_corelog_queue_again(ngx_http_corelog_queue_conn_t *qc,
    ngx_uint_t how, const char *sqlstate, ngx_queue_t *done,
    ngx_queue_t *late)
{
    ngx_str_t                   note;
    ngx_uint_t                  n;
    ngx_queue_t                *q, *prev;
    ngx_msec_int_t              left;
    const char                 *name;
    ngx_http_corelog_op_t      *op;
    u_char                      buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    if (how == NGX_HTTP_CORELOG_QUEUE_ANSWER || ngx_queue_empty(done)) {
        return;
    }

    n = 0;
    name = NULL;

    for (q = ngx_queue_last(done);
         q != ngx_queue_sentinel(done);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);
        name = op->stmt->name;

        if (how == NGX_HTTP_CORELOG_QUEUE_AGAIN) {
            if (op->retried) {
                continue;
            }

            op->retried = 1;

        } else {
            op->alone = 1;
        }

        ngx_queue_remove(q);

        left = (ngx_msec_int_t) (op->deadline - ngx_current_msec);

        if (left <= 0) {
            ngx_queue_insert_head(late, q);
            continue;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                       "corelog queued again%s: %M ms left",
                       how == NGX_HTTP_CORELOG_QUEUE_ALONE ? " alone" : "",
                       (ngx_msec_t) left);

        ngx_http_corelog_queue_enqueue(op, (ngx_msec_t) left, 1);
        n++;
    }

    if (n && ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_RETRY, &note, buf))
    {
        ngx_log_error(NGX_LOG_WARN, &qc->pg.log, 0,
                      "corelog: statement \"%s\" failed with SQLSTATE %s, "
                      "sending %ui of its rows again %s%V", name, sqlstate, n,
                      how == NGX_HTTP_CORELOG_QUEUE_ALONE
                      ? "one by one" : "once more", &note);
    }
}


/* the op waits in the queue, at most timer, oldest first or at its head */

static void
ngx_http_corelog_queue_enqueue(ngx_http_corelog_op_t *op, ngx_msec_t timer,
    ngx_uint_t head)
{
    ngx_http_corelog_worker_t  *w;

    w = op->worker;

    if (head) {
        ngx_queue_insert_head(&w->queue, &op->queue);

    } else {
        ngx_queue_insert_tail(&w->queue, &op->queue);
    }

    w->nqueued++;
    w->queued[op->stmt->kind]++;
    ngx_http_corelog_stats_queued(w, op->stmt->kind);
    op->state = NGX_HTTP_CORELOG_OP_QUEUED;

    ngx_add_timer(&op->wait, timer);
}


/*
 * pc is lost: its ops get rc; when no connection is up or coming, every
 * queued op gets 503 at once rather than wait for one.  "PostgreSQL is
 * unavailable" and "available again" are logged once per outage of the
 * whole pool.
 */

static void
ngx_http_corelog_queue_down(ngx_http_corelog_pg_conn_t *pc, ngx_int_t rc)
{
    ngx_queue_t                     done;
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_queue_conn_t  *qc;

    qc = pc->data;
    w = qc->worker;

    if (qc->up) {
        qc->up = 0;
        w->nup--;
    }

    ngx_http_corelog_queue_detach(qc, rc, NULL, &done);
    ngx_http_corelog_queue_answer(&done, rc, NULL);

    if (ngx_http_corelog_queue_available(w) != NGX_OK) {
        if (!ngx_exiting) {
            ngx_http_corelog_stats_down(w, 1);
        }

        if (!w->down_logged && !ngx_exiting) {
            w->down_logged = 1;
            ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                          "corelog: PostgreSQL is unavailable, "
                          "answering 503 until a connection is made");
        }

        ngx_http_corelog_queue_fail_queued(w, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


/*
 * The parameters of the ops on pc, as its statement goes out: at once, or
 * once the statement is prepared on pc, without the ops whose requests
 * went away meanwhile.
 */

static ngx_int_t
ngx_http_corelog_queue_params(ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t *nparams, ngx_http_corelog_params_t *params)
{
    u_char                         *p;
    ngx_uint_t                      i, n;
    const ngx_http_corelog_stmt_t  *stmt;
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_queue_conn_t  *qc;

    qc = pc->data;
    w = qc->worker;

    for (i = 0, n = 0; i < qc->nops; i++) {
        if (qc->ops[i]) {
            qc->ops[i]->slot = n;
            qc->ops[n++] = qc->ops[i];
        }
    }

    qc->nops = n;

    /* for the access log: when each went, and with how many rows */

    for (i = 0; i < n; i++) {
        qc->ops[i]->sent_at = ngx_current_msec;
        qc->ops[i]->rows = n;
        qc->ops[i]->answered = 0;
    }

    if (n == 0) {
        ngx_http_corelog_queue_release(qc);
        return NGX_DECLINED;
    }

    stmt = qc->stmt;

    *nparams = stmt->nparams + (stmt->batched ? 1 : 0);

    if (ngx_http_corelog_queue_args(w, *nparams) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_corelog_queue_reserve(w,
                          ngx_http_corelog_value_params_size(stmt, qc->ops,
                                                             qc->nops));
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_corelog_value_params(stmt, qc->ops, qc->nops, p, &w->params,
                                      &pc->log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    *params = w->params;

    return NGX_OK;
}


/* room for the values, lengths and formats of nparams parameters */

static ngx_int_t
ngx_http_corelog_queue_args(ngx_http_corelog_worker_t *w, ngx_uint_t nparams)
{
    u_char  *p;

    if (nparams <= w->nparams) {
        return NGX_OK;
    }

    if (w->params.values) {
        ngx_free(w->params.values);
        w->params.values = NULL;
        w->nparams = 0;
    }

    p = ngx_alloc(nparams * (sizeof(char *) + 2 * sizeof(int)),
                  ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    w->params.values = (const char **) p;
    w->params.lengths = (int *) (p + nparams * sizeof(char *));
    w->params.formats = w->params.lengths + nparams;
    w->nparams = nparams;

    return NGX_OK;
}


static u_char *
ngx_http_corelog_queue_reserve(ngx_http_corelog_worker_t *w, size_t size)
{
    if (size > w->size || w->buf == NULL) {
        if (w->buf) {
            ngx_free(w->buf);
        }

        size = ngx_max(size, 4096);

        w->buf = ngx_alloc(size, ngx_cycle->log);
        if (w->buf == NULL) {
            w->size = 0;
            return NULL;
        }

        w->size = size;
    }

    return w->buf;
}


/*
 * Moves the ops of qc's statement to the list done, each with its row of
 * res; qc is free for the next statement once this returns.
 */

static void
ngx_http_corelog_queue_detach(ngx_http_corelog_queue_conn_t *qc,
    ngx_int_t rc, PGresult *res, ngx_queue_t *done)
{
    int                     row, rows;
    ngx_int_t               ord;
    ngx_uint_t              i, n;
    ngx_queue_t            *q;
    ngx_http_corelog_op_t  *op;

    ngx_queue_init(done);

    ngx_http_corelog_queue_release(qc);

    n = qc->nops;
    qc->nops = 0;

    /* a result of another shape answers no op: they get a 500 */

    for (i = 0; res && i < n; i++) {
        op = qc->ops[i];

        if (op == NULL) {
            continue;
        }

        if (PQnfields(res) != (int) op->stmt->nfields) {
            ngx_log_error(NGX_LOG_ERR, &qc->pg.log, 0,
                          "corelog: statement \"%s\" returned %d columns, "
                          "expected %ui", op->stmt->name, PQnfields(res),
                          op->stmt->nfields);
            res = NULL;
        }

        break;
    }

    for (i = 0; i < n; i++) {
        op = qc->ops[i];

        if (op == NULL) {
            continue;               /* its request is gone */
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                       "corelog statement done: rc %i, %M ms",
                       rc, ngx_current_msec - qc->taken);

        qc->ops[i] = NULL;
        op->state = NGX_HTTP_CORELOG_OP_DISPATCH;
        op->conn = NULL;
        op->row = -1;
        op->done_at = ngx_current_msec;
        op->answered = 1;
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

static void
ngx_http_corelog_queue_answer(ngx_queue_t *done, ngx_int_t rc,
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


static void
ngx_http_corelog_queue_fail_queued(ngx_http_corelog_worker_t *w,
    ngx_int_t rc)
{
    ngx_queue_t            *q;
    ngx_http_corelog_op_t  *op;

    while (!ngx_queue_empty(&w->queue)) {
        q = ngx_queue_head(&w->queue);
        op = ngx_queue_data(q, ngx_http_corelog_op_t, queue);

        ngx_http_corelog_queue_unqueue(op);

        op->state = NGX_HTTP_CORELOG_OP_DONE;
        op->handler(op, rc, NULL, -1);
    }
}


static void
ngx_http_corelog_queue_wait_handler(ngx_event_t *ev)
{
    ngx_str_t               note;
    ngx_http_corelog_op_t  *op;
    u_char                  buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    op = ev->data;

    if (op->state != NGX_HTTP_CORELOG_OP_QUEUED) {
        return;
    }

    ngx_http_corelog_queue_unqueue(op);
    op->state = NGX_HTTP_CORELOG_OP_DONE;

    ngx_http_corelog_stats_kind(op->worker, NGX_HTTP_CORELOG_STATS_EXPIRED,
                                op->stmt->kind);

    if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_QUEUE_WAIT, &note, buf)) {
        ngx_log_error(NGX_LOG_WARN, op->request->connection->log, 0,
                      "corelog: %s waited %M ms for a PostgreSQL "
                      "connection, answering 503%V",
                      op->stmt->kind == NGX_HTTP_CORELOG_KIND_LOOKUP
                      ? "token lookup" : "write",
                      op->worker->conf->wait_timeout, &note);
    }

    op->handler(op, NGX_HTTP_SERVICE_UNAVAILABLE, NULL, -1);
}


/* the request is gone: its op must be found nowhere */

static void
ngx_http_corelog_queue_cleanup(void *data)
{
    ngx_http_corelog_op_t  *op = data;

    switch (op->state) {

    case NGX_HTTP_CORELOG_OP_QUEUED:
        ngx_http_corelog_queue_unqueue(op);
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
