
/*
 * Copyright (C) corelog authors
 *
 * corelog_status: the status zone's counters of this nginx, summed over
 * its workers, as JSON (the default) or in Prometheus's text format
 * (?format=prometheus, or an Accept of text/plain).  Every minute at most
 * it first asks PostgreSQL for the schema version, through the queue like
 * any lookup; the answer never waits longer than a queued lookup may.
 */


#include "ngx_http_corelog.h"
#include "ngx_http_corelog_stats.h"


/* how long a schema version read serves every worker's answers */
#define NGX_HTTP_CORELOG_STATUS_SCHEMA_TTL  60

#define NGX_HTTP_CORELOG_STATUS_JSON        0
#define NGX_HTTP_CORELOG_STATUS_PROMETHEUS  1


/* the sums over the workers alive, and the zone's counters */

typedef struct {
    ngx_http_corelog_stats_t    *st;
    ngx_uint_t                   workers;
    ngx_uint_t                   queued[NGX_HTTP_CORELOG_KINDS];
    ngx_uint_t                   conns[NGX_HTTP_CORELOG_STATS_PG_STATES];
    ngx_msec_t                   outage_ms;       /* ended and under way */
} ngx_http_corelog_status_t;


static ngx_int_t ngx_http_corelog_status_format(ngx_http_request_t *r);
static void ngx_http_corelog_status_schema_done(ngx_http_corelog_op_t *op,
    ngx_int_t rc, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_status_send(ngx_http_request_t *r);
static void ngx_http_corelog_status_sum(ngx_http_corelog_status_t *s);
static void ngx_http_corelog_status_json(ngx_http_corelog_out_t *out,
    ngx_http_corelog_status_t *s);
static void ngx_http_corelog_status_json_hist(ngx_http_corelog_out_t *out,
    const char *name, ngx_atomic_t *bucket, ngx_uint_t n,
    const char *const *le, ngx_atomic_uint_t sum, ngx_uint_t ms);
static void ngx_http_corelog_status_json_statuses(ngx_http_corelog_out_t *out,
    ngx_atomic_t *counts);
static void ngx_http_corelog_status_prometheus(ngx_http_corelog_out_t *out,
    ngx_http_corelog_status_t *s);
static void ngx_http_corelog_status_prom_hist(ngx_http_corelog_out_t *out,
    const char *name, const char *label, ngx_atomic_t *bucket, ngx_uint_t n,
    const char *const *le, ngx_atomic_uint_t sum, ngx_uint_t ms);
static void ngx_http_corelog_status_help(ngx_http_corelog_out_t *out,
    const char *name, const char *type, const char *help);
static void ngx_http_corelog_status_printf(ngx_http_corelog_out_t *out,
    const char *fmt, ...);
static void ngx_http_corelog_status_seconds(ngx_http_corelog_out_t *out,
    ngx_atomic_uint_t ms);


static const ngx_http_corelog_stmt_t  ngx_http_corelog_status_schema_stmt = {
    "schema_version",
    "SELECT max(version) FROM corelog.schema_version",
    0, 0, NULL,
    1, NGX_HTTP_CORELOG_KIND_LOOKUP, NULL,
    NGX_HTTP_CORELOG_STAT_SCHEMA
};


/* the names the zone's places have in the answer */

static const char *const  ngx_http_corelog_status_stmts[] = {
    "core_log", "channel_log", "logtank", "token_lookup", "schema_version"
};

static const char *const  ngx_http_corelog_status_kinds[] = {
    "write", "lookup"
};

static const char *const  ngx_http_corelog_status_states[] = {
    "broken", "connecting", "idle", "busy"
};


ngx_int_t
ngx_http_corelog_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc, format;
    ngx_http_corelog_op_t         *op;
    ngx_http_corelog_stats_t      *st;
    ngx_http_corelog_worker_t     *w;
    ngx_http_corelog_main_conf_t  *cmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    format = ngx_http_corelog_status_format(r);

    if (format == NGX_ERROR) {
        return NGX_HTTP_BAD_REQUEST;
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_corelog_module);
    st = cmcf->stats_zone->data;
    w = cmcf->worker;

    /* the schema version, once a minute for the whole nginx */

    if (w == NULL || w->stats == NULL
        || ngx_time() - (time_t) st->schema_at
           < NGX_HTTP_CORELOG_STATUS_SCHEMA_TTL)
    {
        return ngx_http_corelog_status_send(r);
    }

    st->schema_at = ngx_time();

    op = ngx_http_corelog_queue_op(r, &ngx_http_corelog_status_schema_stmt);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->handler = ngx_http_corelog_status_schema_done;
    op->data = st;

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    if (ngx_http_corelog_queue_post(op) != NGX_OK) {
        r->main->count--;
        return ngx_http_corelog_status_send(r);
    }

    return NGX_DONE;
}


/* ?format=json|prometheus, else by Accept; NGX_ERROR: an unknown format */

static ngx_int_t
ngx_http_corelog_status_format(ngx_http_request_t *r)
{
    ngx_str_t  value, *accept;

    if (ngx_http_arg(r, (u_char *) "format", 6, &value) == NGX_OK) {

        if (value.len == 4 && ngx_strncmp(value.data, "json", 4) == 0) {
            return NGX_HTTP_CORELOG_STATUS_JSON;
        }

        if (value.len == 10 && ngx_strncmp(value.data, "prometheus", 10) == 0)
        {
            return NGX_HTTP_CORELOG_STATUS_PROMETHEUS;
        }

        return NGX_ERROR;
    }

    /* Prometheus asks for text/plain (version=0.0.4) among others */

    accept = ngx_http_corelog_header_find(&r->headers_in.headers, "Accept");

    if (accept
        && ngx_strlcasestrn(accept->data, accept->data + accept->len,
                            (u_char *) "text/plain", 10 - 1)
           != NULL)
    {
        return NGX_HTTP_CORELOG_STATUS_PROMETHEUS;
    }

    return NGX_HTTP_CORELOG_STATUS_JSON;
}


static void
ngx_http_corelog_status_schema_done(ngx_http_corelog_op_t *op, ngx_int_t rc,
    PGresult *res, int row)
{
    ngx_int_t            version;
    ngx_http_request_t  *r;

    r = op->request;
    version = -1;

    if (rc == NGX_OK && res && row >= 0 && !PQgetisnull(res, row, 0)) {
        version = ngx_atoi((u_char *) PQgetvalue(res, row, 0),
                           PQgetlength(res, row, 0));
    }

    ngx_http_corelog_stats_schema(op->data, version);

    ngx_http_corelog_request_finalize(r, ngx_http_corelog_status_send(r));
}


static ngx_int_t
ngx_http_corelog_status_send(ngx_http_request_t *r)
{
    ngx_int_t                      rc, format;
    ngx_buf_t                     *b;
    ngx_chain_t                    cl;
    ngx_http_corelog_out_t         out;
    ngx_http_corelog_status_t      s;
    ngx_http_corelog_main_conf_t  *cmcf;

    static ngx_str_t  no_store = ngx_string("no-store");

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_corelog_module);

    ngx_memzero(&s, sizeof(ngx_http_corelog_status_t));
    s.st = cmcf->stats_zone->data;

    ngx_http_corelog_status_sum(&s);

    format = ngx_http_corelog_status_format(r);

    ngx_http_corelog_out_init(&out, r->pool, 16384);

    if (format == NGX_HTTP_CORELOG_STATUS_PROMETHEUS) {
        ngx_http_corelog_status_prometheus(&out, &s);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");

    } else {
        ngx_http_corelog_status_json(&out, &s);
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    if (out.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = out.pos - out.start;

    if (ngx_http_corelog_reply_header(r, "Cache-Control", &no_store)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = out.start;
    b->last = out.pos;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    cl.buf = b;
    cl.next = NULL;

    return ngx_http_output_filter(r, &cl);
}


/*
 * The gauges of the workers alive: a slot whose process is gone (killed
 * before it could clear it) counts for nothing.
 */

static void
ngx_http_corelog_status_sum(ngx_http_corelog_status_t *s)
{
    ngx_pid_t                       pid;
    ngx_uint_t                      i, k;
    ngx_msec_t                      now, since;
    ngx_time_t                     *tp;
    ngx_http_corelog_stats_slot_t  *slot;

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    s->outage_ms = s->st->outage_ms;

    for (i = 0; i < NGX_MAX_PROCESSES; i++) {
        slot = &s->st->slots[i];
        pid = (ngx_pid_t) slot->pid;

        if (pid == 0) {
            continue;
        }

        if (kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH) {

            /*
             * Killed during an outage: its time so far is added, once
             * (whoever clears down_since adds it), so that the counter
             * never goes back; its replacement starts afresh.
             */

            since = slot->down_since;

            if (since && ngx_atomic_cmp_set(&slot->down_since, since, 0)) {
                (void) ngx_atomic_fetch_add(&s->st->outage_ms,
                                            now > since ? now - since : 0);
                s->outage_ms += now > since ? now - since : 0;
            }

            continue;
        }

        s->workers++;

        for (k = 0; k < NGX_HTTP_CORELOG_KINDS; k++) {
            s->queued[k] += slot->queued[k];
        }

        for (k = 0; k < NGX_HTTP_CORELOG_STATS_PG_STATES; k++) {
            s->conns[k] += slot->conns[k];
        }

        since = slot->down_since;

        if (since && now > since) {
            s->outage_ms += now - since;
        }
    }
}


/*
 * {"version": ..., "routes": {"core_log": {"requests": {"201": n, ...},
 * ...}}, "queues": ..., "statements": ..., "tokens": ..., "auth": ...,
 * "pool": ...}
 */

static void
ngx_http_corelog_status_json(ngx_http_corelog_out_t *out,
    ngx_http_corelog_status_t *s)
{
    ngx_uint_t                       i;
    ngx_http_corelog_stats_t        *st;
    ngx_http_corelog_stats_stmt_t   *stmt;
    ngx_http_corelog_stats_route_t  *route;

    st = s->st;

    ngx_http_corelog_status_printf(out,
                     "{\"version\":\"" NGX_HTTP_CORELOG_VERSION "\","
                     "\"nginx_version\":\"" NGINX_VERSION "\","
                     "\"schema_version\":");

    if (st->schema) {
        ngx_http_corelog_status_printf(out, "%uA", st->schema - 1);

    } else {
        ngx_http_corelog_out_lit(out, "null");
    }

    ngx_http_corelog_status_printf(out, ",\"since\":%uA,\"workers\":%ui,"
                                   "\"routes\":{", st->started, s->workers);

    for (i = 0; i < NGX_HTTP_CORELOG_ROUTES; i++) {
        route = &st->routes[i];

        ngx_http_corelog_status_printf(out, "%s\"%s\":{\"requests\":",
                                       i ? "," : "",
                                       ngx_http_corelog_status_stmts[i]);
        ngx_http_corelog_status_json_statuses(out, route->requests);
        ngx_http_corelog_status_printf(out, ",\"rows_committed\":%uA,",
                                       route->rows);
        ngx_http_corelog_status_json_hist(out, "request_seconds",
                                          route->latency.bucket,
                                          NGX_HTTP_CORELOG_STATS_TIMES,
                                          ngx_http_corelog_stats_times,
                                          route->latency.sum, 1);
        ngx_http_corelog_out_lit(out, ",");
        ngx_http_corelog_status_json_hist(out, "database_seconds",
                                          route->db.bucket,
                                          NGX_HTTP_CORELOG_STATS_TIMES,
                                          ngx_http_corelog_stats_times,
                                          route->db.sum, 1);
        ngx_http_corelog_out_lit(out, "}");
    }

    ngx_http_corelog_out_lit(out, "},\"queues\":{");

    for (i = 0; i < NGX_HTTP_CORELOG_KINDS; i++) {
        ngx_http_corelog_status_printf(out,
                     "%s\"%s\":{\"depth\":%ui,\"peak\":%uA,"
                     "\"rejected\":%uA,\"expired\":%uA}",
                     i ? "," : "", ngx_http_corelog_status_kinds[i],
                     s->queued[i], st->peak[i],
                     st->kinds[i][NGX_HTTP_CORELOG_STATS_REJECTED],
                     st->kinds[i][NGX_HTTP_CORELOG_STATS_EXPIRED]);
    }

    ngx_http_corelog_out_lit(out, "},\"statements\":{");

    for (i = 0; i < NGX_HTTP_CORELOG_STAT_STMTS; i++) {
        stmt = &st->stmts[i];

        ngx_http_corelog_status_printf(out, "%s\"%s\":{\"sent\":%uA,",
                                       i ? "," : "",
                                       ngx_http_corelog_status_stmts[i],
                                       stmt->sent);
        ngx_http_corelog_status_json_hist(out, "rows", stmt->rows,
                                          NGX_HTTP_CORELOG_STATS_ROWS,
                                          ngx_http_corelog_stats_rows,
                                          stmt->rows_sum, 0);
        ngx_http_corelog_out_lit(out, "}");
    }

    ngx_http_corelog_status_printf(out,
                     "},\"tokens\":{\"lookups\":%uA,\"cache_hits\":%uA,"
                     "\"cache_misses\":%uA,\"cache_evictions\":%uA},"
                     "\"auth\":",
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_LOOKUPS],
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_HITS],
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_MISSES],
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_EVICTIONS]);

    ngx_http_corelog_status_json_statuses(out, st->auth);

    ngx_http_corelog_out_lit(out, ",\"pool\":{\"connections\":{");

    for (i = 0; i < NGX_HTTP_CORELOG_STATS_PG_STATES; i++) {
        ngx_http_corelog_status_printf(out, "%s\"%s\":%ui", i ? "," : "",
                                       ngx_http_corelog_status_states[i],
                                       s->conns[i]);
    }

    ngx_http_corelog_status_printf(out,
                     "},\"connects\":%uA,\"reconnects\":%uA,"
                     "\"connect_failures\":%uA,\"outages\":%uA,"
                     "\"outage_seconds\":",
                     st->counters[NGX_HTTP_CORELOG_STATS_CONNECTS],
                     st->counters[NGX_HTTP_CORELOG_STATS_RECONNECTS],
                     st->counters[NGX_HTTP_CORELOG_STATS_CONNECT_FAILURES],
                     st->outages);
    ngx_http_corelog_status_seconds(out, s->outage_ms);
    ngx_http_corelog_status_printf(out, ",\"statement_timeouts\":%uA}}\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TIMEOUTS]);
}


/* "name":{"count":n,"sum":s,"buckets":{"0.001":n,...,"+Inf":n}} */

static void
ngx_http_corelog_status_json_hist(ngx_http_corelog_out_t *out,
    const char *name, ngx_atomic_t *bucket, ngx_uint_t n,
    const char *const *le, ngx_atomic_uint_t sum, ngx_uint_t ms)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  count;

    count = 0;

    for (i = 0; i < n; i++) {
        count += bucket[i];
    }

    ngx_http_corelog_status_printf(out, "\"%s\":{\"count\":%uA,\"sum\":",
                                   name, count);

    if (ms) {
        ngx_http_corelog_status_seconds(out, sum);

    } else {
        ngx_http_corelog_status_printf(out, "%uA", sum);
    }

    ngx_http_corelog_out_lit(out, ",\"buckets\":{");

    for (count = 0, i = 0; i < n; i++) {
        count += bucket[i];
        ngx_http_corelog_status_printf(out, "%s\"%s\":%uA", i ? "," : "",
                                       le[i], count);
    }

    ngx_http_corelog_out_lit(out, "}}");
}


/* {"201":n,...,"other":n}: every status counted, 0 or not */

static void
ngx_http_corelog_status_json_statuses(ngx_http_corelog_out_t *out,
    ngx_atomic_t *counts)
{
    ngx_uint_t  i;

    ngx_http_corelog_out_lit(out, "{");

    for (i = 0; i < NGX_HTTP_CORELOG_STATS_STATUSES - 1; i++) {
        ngx_http_corelog_status_printf(out, "%s\"%ui\":%uA", i ? "," : "",
                                       ngx_http_corelog_stats_statuses[i],
                                       counts[i]);
    }

    ngx_http_corelog_status_printf(out, ",\"other\":%uA}", counts[i]);
}


/* the text exposition format 0.0.4: base units, counters end in _total */

static void
ngx_http_corelog_status_prometheus(ngx_http_corelog_out_t *out,
    ngx_http_corelog_status_t *s)
{
    u_char                           label[64];
    ngx_uint_t                       i, k;
    ngx_http_corelog_stats_t        *st;

    st = s->st;

    ngx_http_corelog_status_help(out, "corelog_build_info", "gauge",
                     "The module's release, its nginx's version and the "
                     "schema version found in the database (\"\": not "
                     "read yet).");
    ngx_http_corelog_status_printf(out,
                     "corelog_build_info{version=\"" NGX_HTTP_CORELOG_VERSION
                     "\",nginx_version=\"" NGINX_VERSION "\","
                     "schema_version=\"");

    if (st->schema) {
        ngx_http_corelog_status_printf(out, "%uA", st->schema - 1);
    }

    ngx_http_corelog_out_lit(out, "\"} 1\n");

    ngx_http_corelog_status_help(out, "corelog_start_time_seconds", "gauge",
                     "When the status zone was made (it outlives "
                     "reloads), in seconds since 1970.");
    ngx_http_corelog_status_printf(out, "corelog_start_time_seconds %uA\n",
                                   st->started);

    ngx_http_corelog_status_help(out, "corelog_workers", "gauge",
                     "Worker processes with a pool, old ones finishing "
                     "after a reload included.");
    ngx_http_corelog_status_printf(out, "corelog_workers %ui\n", s->workers);

    ngx_http_corelog_status_help(out, "corelog_requests_total", "counter",
                     "Requests answered by a route's location (or in its "
                     "shape by its corelog_error location), by status.");

    for (i = 0; i < NGX_HTTP_CORELOG_ROUTES; i++) {
        for (k = 0; k < NGX_HTTP_CORELOG_STATS_STATUSES; k++) {
            ngx_http_corelog_status_printf(out,
                     "corelog_requests_total{route=\"%s\",status=\"",
                     ngx_http_corelog_status_stmts[i]);

            if (k < NGX_HTTP_CORELOG_STATS_STATUSES - 1) {
                ngx_http_corelog_status_printf(out, "%ui",
                                         ngx_http_corelog_stats_statuses[k]);

            } else {
                ngx_http_corelog_out_lit(out, "other");
            }

            ngx_http_corelog_status_printf(out, "\"} %uA\n",
                                           st->routes[i].requests[k]);
        }
    }

    ngx_http_corelog_status_help(out, "corelog_rows_committed_total",
                     "counter", "Rows committed, each one request's.");

    for (i = 0; i < NGX_HTTP_CORELOG_ROUTES; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_rows_committed_total{route=\"%s\"} %uA\n",
                     ngx_http_corelog_status_stmts[i], st->routes[i].rows);
    }

    ngx_http_corelog_status_help(out, "corelog_request_duration_seconds",
                     "histogram", "From the request's first byte to its "
                     "answer (the log phase), as $request_time.");

    for (i = 0; i < NGX_HTTP_CORELOG_ROUTES; i++) {
        (void) ngx_sprintf(label, "route=\"%s\"%Z",
                           ngx_http_corelog_status_stmts[i]);
        ngx_http_corelog_status_prom_hist(out,
                     "corelog_request_duration_seconds", (char *) label,
                     st->routes[i].latency.bucket,
                     NGX_HTTP_CORELOG_STATS_TIMES,
                     ngx_http_corelog_stats_times,
                     st->routes[i].latency.sum, 1);
    }

    ngx_http_corelog_status_help(out, "corelog_database_duration_seconds",
                     "histogram", "Of a committed row: from entering the "
                     "queue to its statement's answer.");

    for (i = 0; i < NGX_HTTP_CORELOG_ROUTES; i++) {
        (void) ngx_sprintf(label, "route=\"%s\"%Z",
                           ngx_http_corelog_status_stmts[i]);
        ngx_http_corelog_status_prom_hist(out,
                     "corelog_database_duration_seconds", (char *) label,
                     st->routes[i].db.bucket, NGX_HTTP_CORELOG_STATS_TIMES,
                     ngx_http_corelog_stats_times, st->routes[i].db.sum, 1);
    }

    ngx_http_corelog_status_help(out, "corelog_queue_depth", "gauge",
                     "Writes and token lookups waiting for a connection, "
                     "now, summed over the workers.");

    for (i = 0; i < NGX_HTTP_CORELOG_KINDS; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_queue_depth{queue=\"%s\"} %ui\n",
                     ngx_http_corelog_status_kinds[i], s->queued[i]);
    }

    ngx_http_corelog_status_help(out, "corelog_queue_depth_peak", "gauge",
                     "The deepest one worker's queue has been.");

    for (i = 0; i < NGX_HTTP_CORELOG_KINDS; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_queue_depth_peak{queue=\"%s\"} %uA\n",
                     ngx_http_corelog_status_kinds[i], st->peak[i]);
    }

    ngx_http_corelog_status_help(out, "corelog_queue_rejected_total",
                     "counter", "Answered 503 at once: the queue was full.");

    for (i = 0; i < NGX_HTTP_CORELOG_KINDS; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_queue_rejected_total{queue=\"%s\"} %uA\n",
                     ngx_http_corelog_status_kinds[i],
                     st->kinds[i][NGX_HTTP_CORELOG_STATS_REJECTED]);
    }

    ngx_http_corelog_status_help(out, "corelog_queue_expired_total",
                     "counter", "Answered 503 after waiting half of "
                     "corelog_query_timeout for a connection.");

    for (i = 0; i < NGX_HTTP_CORELOG_KINDS; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_queue_expired_total{queue=\"%s\"} %uA\n",
                     ngx_http_corelog_status_kinds[i],
                     st->kinds[i][NGX_HTTP_CORELOG_STATS_EXPIRED]);
    }

    ngx_http_corelog_status_help(out, "corelog_statements_total", "counter",
                     "Statements sent to PostgreSQL.");

    for (i = 0; i < NGX_HTTP_CORELOG_STAT_STMTS; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_statements_total{statement=\"%s\"} %uA\n",
                     ngx_http_corelog_status_stmts[i], st->stmts[i].sent);
    }

    ngx_http_corelog_status_help(out, "corelog_statement_rows", "histogram",
                     "Rows (requests) per statement sent.");

    for (i = 0; i < NGX_HTTP_CORELOG_STAT_STMTS; i++) {
        (void) ngx_sprintf(label, "statement=\"%s\"%Z",
                           ngx_http_corelog_status_stmts[i]);
        ngx_http_corelog_status_prom_hist(out, "corelog_statement_rows",
                     (char *) label, st->stmts[i].rows,
                     NGX_HTTP_CORELOG_STATS_ROWS, ngx_http_corelog_stats_rows,
                     st->stmts[i].rows_sum, 0);
    }

    ngx_http_corelog_status_help(out, "corelog_token_lookups_total",
                     "counter", "Tokens looked up in PostgreSQL.");
    ngx_http_corelog_status_printf(out, "corelog_token_lookups_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_LOOKUPS]);

    ngx_http_corelog_status_help(out, "corelog_token_cache_hits_total",
                     "counter", "Tokens found in a worker's cache, valid "
                     "or known invalid.");
    ngx_http_corelog_status_printf(out,
                     "corelog_token_cache_hits_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_HITS]);

    ngx_http_corelog_status_help(out, "corelog_token_cache_misses_total",
                     "counter", "Tokens not in the cache.");
    ngx_http_corelog_status_printf(out,
                     "corelog_token_cache_misses_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_MISSES]);

    ngx_http_corelog_status_help(out, "corelog_token_cache_evictions_total",
                     "counter", "Cached tokens dropped for a new one: the "
                     "cache was full.");
    ngx_http_corelog_status_printf(out,
                     "corelog_token_cache_evictions_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TOKEN_EVICTIONS]);

    ngx_http_corelog_status_help(out, "corelog_auth_answers_total",
                     "counter", "Answers of the auth subrequest, by status.");

    for (k = 0; k < NGX_HTTP_CORELOG_STATS_STATUSES; k++) {
        if (k < NGX_HTTP_CORELOG_STATS_STATUSES - 1) {
            ngx_http_corelog_status_printf(out,
                     "corelog_auth_answers_total{status=\"%ui\"} %uA\n",
                     ngx_http_corelog_stats_statuses[k], st->auth[k]);

        } else {
            ngx_http_corelog_status_printf(out,
                     "corelog_auth_answers_total{status=\"other\"} %uA\n",
                     st->auth[k]);
        }
    }

    ngx_http_corelog_status_help(out, "corelog_pool_connections", "gauge",
                     "PostgreSQL connections of the workers' pools, by "
                     "state (broken: waiting to connect again).");

    for (i = 0; i < NGX_HTTP_CORELOG_STATS_PG_STATES; i++) {
        ngx_http_corelog_status_printf(out,
                     "corelog_pool_connections{state=\"%s\"} %ui\n",
                     ngx_http_corelog_status_states[i], s->conns[i]);
    }

    ngx_http_corelog_status_help(out, "corelog_pool_connects_total",
                     "counter", "Connections made.");
    ngx_http_corelog_status_printf(out, "corelog_pool_connects_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_CONNECTS]);

    ngx_http_corelog_status_help(out, "corelog_pool_reconnects_total",
                     "counter", "Connections made again after one was "
                     "lost.");
    ngx_http_corelog_status_printf(out, "corelog_pool_reconnects_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_RECONNECTS]);

    ngx_http_corelog_status_help(out, "corelog_pool_connect_failures_total",
                     "counter", "Connection attempts that failed.");
    ngx_http_corelog_status_printf(out,
                     "corelog_pool_connect_failures_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_CONNECT_FAILURES]);

    ngx_http_corelog_status_help(out, "corelog_pool_outages_total",
                     "counter", "Times a worker's pool lost every "
                     "connection (each worker counts its own).");
    ngx_http_corelog_status_printf(out, "corelog_pool_outages_total %uA\n",
                                   st->outages);

    ngx_http_corelog_status_help(out, "corelog_pool_outage_seconds_total",
                     "counter", "Time the workers' pools spent without a "
                     "connection, summed over the workers.");
    ngx_http_corelog_out_lit(out, "corelog_pool_outage_seconds_total ");
    ngx_http_corelog_status_seconds(out, s->outage_ms);
    ngx_http_corelog_out_lit(out, "\n");

    ngx_http_corelog_status_help(out, "corelog_statement_timeouts_total",
                     "counter", "Statements ended by a timeout: "
                     "PostgreSQL's statement_timeout, or the module's own.");
    ngx_http_corelog_status_printf(out,
                     "corelog_statement_timeouts_total %uA\n",
                     st->counters[NGX_HTTP_CORELOG_STATS_TIMEOUTS]);
}


static void
ngx_http_corelog_status_prom_hist(ngx_http_corelog_out_t *out,
    const char *name, const char *label, ngx_atomic_t *bucket, ngx_uint_t n,
    const char *const *le, ngx_atomic_uint_t sum, ngx_uint_t ms)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  count;

    for (count = 0, i = 0; i < n; i++) {
        count += bucket[i];
        ngx_http_corelog_status_printf(out, "%s_bucket{%s,le=\"%s\"} %uA\n",
                                       name, label, le[i], count);
    }

    ngx_http_corelog_status_printf(out, "%s_sum{%s} ", name, label);

    if (ms) {
        ngx_http_corelog_status_seconds(out, sum);

    } else {
        ngx_http_corelog_status_printf(out, "%uA", sum);
    }

    ngx_http_corelog_status_printf(out, "\n%s_count{%s} %uA\n", name, label,
                                   count);
}


static void
ngx_http_corelog_status_help(ngx_http_corelog_out_t *out, const char *name,
    const char *type, const char *help)
{
    ngx_http_corelog_status_printf(out, "# HELP %s %s\n# TYPE %s %s\n",
                                   name, help, name, type);
}


/* a line's worth of text at most: every value is short */

static void
ngx_http_corelog_status_printf(ngx_http_corelog_out_t *out, const char *fmt,
    ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[512];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    ngx_http_corelog_out_raw(out, (char *) buf, p - buf);
}


/* ms as seconds: "1.250" */

static void
ngx_http_corelog_status_seconds(ngx_http_corelog_out_t *out,
    ngx_atomic_uint_t ms)
{
    ngx_http_corelog_status_printf(out, "%uA.%03uA", ms / 1000, ms % 1000);
}
