
/*
 * Copyright (C) corelog authors
 *
 * The status zone (corelog_status_zone): counters that every worker adds
 * to with atomics, in one shared memory zone that a reload keeps, and the
 * gauges of each worker in its own slot.  Nothing here takes a lock or
 * allocates; with no zone, every call returns at once.  The layers call
 * down into it; ngx_http_corelog_status.c reads it.
 */


#include "ngx_http_corelog.h"
#include "ngx_http_corelog_stats.h"


static ngx_int_t ngx_http_corelog_stats_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static size_t ngx_http_corelog_stats_need(void);
static ngx_int_t ngx_http_corelog_stats_log_handler(ngx_http_request_t *r);
static void ngx_http_corelog_stats_time(ngx_http_corelog_stats_hist_t *h,
    ngx_msec_int_t ms);
static ngx_uint_t ngx_http_corelog_stats_status(ngx_uint_t status);
static void ngx_http_corelog_stats_max(ngx_atomic_t *a, ngx_atomic_uint_t v);
static ngx_msec_t ngx_http_corelog_stats_now(void);


/* the statuses counted each on its own; the last counts every other */

const ngx_uint_t  ngx_http_corelog_stats_statuses[] = {
    200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414,
    415, 429, 494, 499, 500, 502, 503, 504, 0
};

/* the upper bounds of the time buckets, in ms and as Prometheus's "le" */

static const ngx_msec_t  ngx_http_corelog_stats_time_ms[] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};

const char *const  ngx_http_corelog_stats_times[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "10", "+Inf"
};

const char *const  ngx_http_corelog_stats_rows[] = {
    "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "+Inf"
};


/* "other" is the last status, the 0 */

#define NGX_HTTP_CORELOG_STATS_OTHER  (NGX_HTTP_CORELOG_STATS_STATUSES - 1)

_Static_assert(sizeof(ngx_http_corelog_stats_time_ms)
               / sizeof(ngx_msec_t) == NGX_HTTP_CORELOG_STATS_TIMES - 1,
               "a time bucket without its bound");
_Static_assert(sizeof(ngx_http_corelog_stats_times) / sizeof(char *)
               == NGX_HTTP_CORELOG_STATS_TIMES,
               "a time bucket without its name");
_Static_assert(sizeof(ngx_http_corelog_stats_rows) / sizeof(char *)
               == NGX_HTTP_CORELOG_STATS_ROWS,
               "a rows bucket without its name");
_Static_assert(sizeof(ngx_http_corelog_stats_statuses) / sizeof(ngx_uint_t)
               == NGX_HTTP_CORELOG_STATS_STATUSES,
               "the statuses do not fill the counters");


/* corelog_status_zone size: a zone of nginx's, reused by a reload */

char *
ngx_http_corelog_stats_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_main_conf_t *cmcf = conf;

    size_t      need;
    ssize_t     size;
    ngx_str_t  *value;

    static ngx_str_t  name = ngx_string("corelog_status");

    if (cmcf->stats_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: invalid \"corelog_status_zone\" size "
                           "\"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    need = ngx_http_corelog_stats_need();

    if ((size_t) size < need) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: \"corelog_status_zone\" %V is too small:"
                           " the status needs at least %uzk",
                           &value[1], (need + 1023) / 1024);
        return NGX_CONF_ERROR;
    }

    cmcf->stats_zone = ngx_shared_memory_add(cf, &name, size,
                                             &ngx_http_corelog_module);
    if (cmcf->stats_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->stats_zone->init = ngx_http_corelog_stats_init_zone;
    cmcf->stats_zone->data = NULL;

    return NGX_CONF_OK;
}


/* the counters and the slots, in whole pages, and the slab pool's own */

static size_t
ngx_http_corelog_stats_need(void)
{
    return ngx_align(sizeof(ngx_http_corelog_stats_t), ngx_pagesize)
           + 8 * ngx_pagesize;
}


/*
 * data is the zone's of the cycle before (a reload): the same memory, so
 * its counters go on.  A zone of another layout (another release of the
 * module, loaded by the reload) starts again.
 */

static ngx_int_t
ngx_http_corelog_stats_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_corelog_stats_t  *st;

    st = data;

    if (st
        && st->magic == NGX_HTTP_CORELOG_STATS_MAGIC
        && st->size == sizeof(ngx_http_corelog_stats_t))
    {
        shm_zone->data = st;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    if (st) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "corelog: the status zone was made by another release "
                      "of the module: its counters start again");
    }

    st = ngx_slab_calloc(shpool, sizeof(ngx_http_corelog_stats_t));
    if (st == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "corelog: \"corelog_status_zone\" has no room for the "
                      "status (%uz bytes): make it larger",
                      sizeof(ngx_http_corelog_stats_t));
        return NGX_ERROR;
    }

    st->magic = NGX_HTTP_CORELOG_STATS_MAGIC;
    st->size = sizeof(ngx_http_corelog_stats_t);
    st->started = ngx_time();

    shpool->data = st;
    shm_zone->data = st;

    return NGX_OK;
}


/* postconfiguration: with a zone, every answer is counted */

ngx_int_t
ngx_http_corelog_stats_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *hmcf;
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_corelog_module);

    if (cmcf->stats_zone == NULL) {
        return NGX_OK;
    }

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&hmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_corelog_stats_log_handler;

    return NGX_OK;
}


/* a worker takes its slot: its gauges start from its pool, all down */

void
ngx_http_corelog_stats_init_process(ngx_http_corelog_main_conf_t *cmcf)
{
    ngx_msec_t                      now, since;
    ngx_http_corelog_worker_t      *w;
    ngx_http_corelog_stats_slot_t  *slot;

    w = cmcf->worker;

    if (w == NULL || cmcf->stats_zone == NULL
        || cmcf->stats_zone->data == NULL
        || ngx_process_slot < 0 || ngx_process_slot >= NGX_MAX_PROCESSES)
    {
        return;
    }

    w->stats = cmcf->stats_zone->data;

    slot = &w->stats->slots[ngx_process_slot];

    /* the slot of a worker killed during an outage: its time is added */

    since = slot->down_since;

    if (since && ngx_atomic_cmp_set(&slot->down_since, since, 0)) {
        now = ngx_http_corelog_stats_now();
        (void) ngx_atomic_fetch_add(&w->stats->outage_ms,
                                    now > since ? now - since : 0);
    }

    ngx_memzero((void *) slot, sizeof(ngx_http_corelog_stats_slot_t));
    slot->conns[NGX_HTTP_CORELOG_PG_DOWN] = cmcf->connections;
    slot->pid = ngx_pid;

    w->slot = slot;
}


/* at worker exit, after the pool is closed: an outage under way ends */

void
ngx_http_corelog_stats_exit_process(ngx_http_corelog_worker_t *w)
{
    if (w == NULL || w->slot == NULL) {
        return;
    }

    ngx_http_corelog_stats_down(w, 0);

    ngx_memzero((void *) w->slot, sizeof(ngx_http_corelog_stats_slot_t));

    w->slot = NULL;
    w->stats = NULL;
}


/* w->queued[kind] has changed */

void
ngx_http_corelog_stats_queued(ngx_http_corelog_worker_t *w, ngx_uint_t kind)
{
    if (w == NULL || w->stats == NULL) {
        return;
    }

    w->slot->queued[kind] = w->queued[kind];

    ngx_http_corelog_stats_max(&w->stats->peak[kind], w->queued[kind]);
}


void
ngx_http_corelog_stats_count(ngx_http_corelog_worker_t *w, ngx_uint_t what)
{
    if (w == NULL || w->stats == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&w->stats->counters[what], 1);
}


void
ngx_http_corelog_stats_kind(ngx_http_corelog_worker_t *w, ngx_uint_t what,
    ngx_uint_t kind)
{
    if (w == NULL || w->stats == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&w->stats->kinds[kind][what], 1);
}


/* a statement went out with rows ops */

void
ngx_http_corelog_stats_statement(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt, ngx_uint_t rows)
{
    ngx_uint_t                      b;
    ngx_http_corelog_stats_stmt_t  *s;

    if (w == NULL || w->stats == NULL) {
        return;
    }

    s = &w->stats->stmts[stmt->stat];

    for (b = 0; b < NGX_HTTP_CORELOG_STATS_ROWS - 1; b++) {
        if (rows <= ((ngx_uint_t) 1 << b)) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&s->sent, 1);
    (void) ngx_atomic_fetch_add(&s->rows[b], 1);
    (void) ngx_atomic_fetch_add(&s->rows_sum, rows);
}


/* the auth subrequest answered status */

void
ngx_http_corelog_stats_auth(ngx_http_corelog_worker_t *w, ngx_uint_t status)
{
    if (w == NULL || w->stats == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(
                     &w->stats->auth[ngx_http_corelog_stats_status(status)], 1);
}


/* a connection of the worker's pool went from one state to another */

void
ngx_http_corelog_stats_conn(ngx_http_corelog_worker_t *w, ngx_uint_t from,
    ngx_uint_t to)
{
    if (w == NULL || w->slot == NULL || from == to
        || from >= NGX_HTTP_CORELOG_STATS_PG_STATES
        || to >= NGX_HTTP_CORELOG_STATS_PG_STATES)
    {
        return;
    }

    w->slot->conns[from]--;
    w->slot->conns[to]++;
}


/*
 * The worker's pool lost its last connection (down 1: "PostgreSQL is
 * unavailable"), or has one again (down 0).
 */

void
ngx_http_corelog_stats_down(ngx_http_corelog_worker_t *w, ngx_uint_t down)
{
    ngx_msec_t                      now, since;
    ngx_http_corelog_stats_slot_t  *slot;

    if (w == NULL || w->slot == NULL) {
        return;
    }

    slot = w->slot;
    now = ngx_http_corelog_stats_now();

    if (down) {
        if (slot->down_since == 0) {
            slot->down_since = now;
            (void) ngx_atomic_fetch_add(&w->stats->outages, 1);
        }

        return;
    }

    since = slot->down_since;

    if (since) {
        slot->down_since = 0;
        (void) ngx_atomic_fetch_add(&w->stats->outage_ms,
                                    now > since ? now - since : 0);
    }
}


/* the schema version a worker read, -1: none could be read */

void
ngx_http_corelog_stats_schema(ngx_http_corelog_stats_t *st, ngx_int_t version)
{
    if (st == NULL) {
        return;
    }

    if (version >= 0) {
        st->schema = version + 1;
    }

    st->schema_at = ngx_time();
}


/*
 * The log phase of every request: one answered by a route's location (or
 * by a corelog_error location, in that route's shape) counts for that
 * route, by status, with its time; a committed row with its time in the
 * queue and the database.
 */

static ngx_int_t
ngx_http_corelog_stats_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                       status;
    ngx_time_t                      *tp;
    ngx_msec_int_t                   ms;
    ngx_http_corelog_op_t           *op;
    ngx_http_corelog_api_t          *api;
    ngx_http_corelog_ctx_t          *ctx;
    ngx_http_corelog_worker_t       *w;
    ngx_http_corelog_loc_conf_t     *llcf;
    ngx_http_corelog_stats_route_t  *route;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    api = llcf->api ? llcf->api : llcf->error_api;

    if (api == NULL) {
        return NGX_OK;
    }

    w = ngx_http_corelog_worker();

    if (w == NULL || w->stats == NULL) {
        return NGX_OK;
    }

    route = &w->stats->routes[api->stmt->stat];

    status = r->err_status ? r->err_status : r->headers_out.status;

    (void) ngx_atomic_fetch_add(
                     &route->requests[ngx_http_corelog_stats_status(status)],
                     1);

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ngx_http_corelog_stats_time(&route->latency, ms);

    ctx = ngx_http_get_module_ctx(r, ngx_http_corelog_module);

    if (ctx == NULL || !ctx->created || ctx->op == NULL) {
        return NGX_OK;
    }

    op = ctx->op;

    (void) ngx_atomic_fetch_add(&route->rows, 1);

    if (op->answered) {
        ngx_http_corelog_stats_time(&route->db,
                                    (ngx_msec_int_t) (op->done_at
                                                      - op->queued_at));
    }

    return NGX_OK;
}


static void
ngx_http_corelog_stats_time(ngx_http_corelog_stats_hist_t *h,
    ngx_msec_int_t ms)
{
    ngx_uint_t  b;

    if (ms < 0) {
        ms = 0;
    }

    for (b = 0; b < NGX_HTTP_CORELOG_STATS_TIMES - 1; b++) {
        if ((ngx_msec_t) ms <= ngx_http_corelog_stats_time_ms[b]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->bucket[b], 1);
    (void) ngx_atomic_fetch_add(&h->sum, (ngx_atomic_uint_t) ms);
}


/* the status's counter: its own, or "other" */

static ngx_uint_t
ngx_http_corelog_stats_status(ngx_uint_t status)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_CORELOG_STATS_OTHER; i++) {
        if (ngx_http_corelog_stats_statuses[i] == status) {
            return i;
        }
    }

    return NGX_HTTP_CORELOG_STATS_OTHER;
}


static void
ngx_http_corelog_stats_max(ngx_atomic_t *a, ngx_atomic_uint_t v)
{
    ngx_atomic_uint_t  old;

    for ( ;; ) {
        old = *a;

        if (v <= old || ngx_atomic_cmp_set(a, old, v)) {
            return;
        }
    }
}


/* ms since 1970: every worker's clock is the same one */

static ngx_msec_t
ngx_http_corelog_stats_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_msec_t) tp->sec * 1000 + tp->msec;
}
