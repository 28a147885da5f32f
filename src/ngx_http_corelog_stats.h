
/*
 * Copyright (C) corelog authors
 *
 * The status zone's layout: written by ngx_http_corelog_stats.c (every
 * worker, atomics), read by ngx_http_corelog_status.c.
 */


#ifndef _NGX_HTTP_CORELOG_STATS_H_INCLUDED_
#define _NGX_HTTP_CORELOG_STATS_H_INCLUDED_


#include "ngx_http_corelog.h"


/* changes whenever the layout below does: a zone of another is reset */
#define NGX_HTTP_CORELOG_STATS_MAGIC     0x636c6701

/* seconds: le 0.001 0.0025 0.005 ... 10, +Inf */
#define NGX_HTTP_CORELOG_STATS_TIMES     14

/* rows per statement: le 1 2 4 ... 512, +Inf */
#define NGX_HTTP_CORELOG_STATS_ROWS      11

/* the answers counted by status (ngx_http_corelog_stats_statuses), other */
#define NGX_HTTP_CORELOG_STATS_STATUSES  23

#define NGX_HTTP_CORELOG_STATS_PG_STATES 4     /* NGX_HTTP_CORELOG_PG_* */


typedef struct {
    ngx_atomic_t                 bucket[NGX_HTTP_CORELOG_STATS_TIMES];
    ngx_atomic_t                 sum;             /* ms; count: the buckets */
} ngx_http_corelog_stats_hist_t;


typedef struct {
    ngx_atomic_t                 requests[NGX_HTTP_CORELOG_STATS_STATUSES];
    ngx_atomic_t                 rows;            /* committed */
    ngx_http_corelog_stats_hist_t  latency;       /* start to answer */
    ngx_http_corelog_stats_hist_t  db;            /* queued to committed */
} ngx_http_corelog_stats_route_t;


typedef struct {
    ngx_atomic_t                 sent;
    ngx_atomic_t                 rows[NGX_HTTP_CORELOG_STATS_ROWS];
    ngx_atomic_t                 rows_sum;
} ngx_http_corelog_stats_stmt_t;


/*
 * A worker's gauges, in the slot of its process (ngx_process_slot): only
 * that worker writes them, and clears them at exit; a crashed worker's
 * replacement takes its slot over.
 */

struct ngx_http_corelog_stats_slot_s {
    ngx_atomic_t                 pid;             /* 0: free */
    ngx_atomic_t                 queued[NGX_HTTP_CORELOG_KINDS];
    ngx_atomic_t                 conns[NGX_HTTP_CORELOG_STATS_PG_STATES];
    ngx_atomic_t                 down_since;      /* ms since 1970; 0: up */
};


struct ngx_http_corelog_stats_s {
    ngx_atomic_t                 magic;
    ngx_atomic_t                 size;
    ngx_atomic_t                 started;         /* s since 1970 */
    ngx_http_corelog_stats_route_t  routes[NGX_HTTP_CORELOG_ROUTES];
    ngx_http_corelog_stats_stmt_t  stmts[NGX_HTTP_CORELOG_STAT_STMTS];
    ngx_atomic_t                 kinds[NGX_HTTP_CORELOG_KINDS]
                                      [NGX_HTTP_CORELOG_STATS_KIND_COUNTERS];
    ngx_atomic_t                 peak[NGX_HTTP_CORELOG_KINDS];
    ngx_atomic_t                 counters[NGX_HTTP_CORELOG_STATS_COUNTERS];
    ngx_atomic_t                 auth[NGX_HTTP_CORELOG_STATS_STATUSES];
    ngx_atomic_t                 outages;
    ngx_atomic_t                 outage_ms;       /* of the ended ones */
    ngx_atomic_t                 schema;          /* version + 1; 0: unknown */
    ngx_atomic_t                 schema_at;       /* s since 1970, last asked */
    ngx_http_corelog_stats_slot_t  slots[NGX_MAX_PROCESSES];
};


extern const ngx_uint_t  ngx_http_corelog_stats_statuses[];
extern const char *const  ngx_http_corelog_stats_times[];
extern const char *const  ngx_http_corelog_stats_rows[];


#endif /* _NGX_HTTP_CORELOG_STATS_H_INCLUDED_ */
