
/*
 * Copyright (C) corelog authors
 */


#ifndef _NGX_HTTP_CORELOG_H_INCLUDED_
#define _NGX_HTTP_CORELOG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>
#include <jansson.h>


/* the module's release (CHANGES); in the error log at start and reload */
#define NGX_HTTP_CORELOG_VERSION           "1.0.0"

#define NGX_HTTP_CORELOG_MAX_FIELD_ERRORS  16
#define NGX_HTTP_CORELOG_UUID_LEN          36
#define NGX_HTTP_CORELOG_TIME_LEN          24   /* 2025-07-10T11:00:00.000Z */
#define NGX_HTTP_CORELOG_LOG_TEXT_LEN      256  /* client text in a log line */

/* a request body's JSON: values ('{', '[', ':', ','), nesting */
#define NGX_HTTP_CORELOG_JSON_VALUES_MAX   1024
#define NGX_HTTP_CORELOG_JSON_VALUES_TEXT  "1024"
#define NGX_HTTP_CORELOG_JSON_DEPTH_MAX    16
#define NGX_HTTP_CORELOG_JSON_DEPTH_TEXT   "16"
#define NGX_HTTP_CORELOG_PARSE_POOL_SIZE   16384

#define NGX_HTTP_CORELOG_TOKEN_OFF         0
#define NGX_HTTP_CORELOG_TOKEN_BEARER      1
#define NGX_HTTP_CORELOG_TOKEN_X_AUTH      2


typedef struct ngx_http_corelog_api_s      ngx_http_corelog_api_t;
typedef struct ngx_http_corelog_op_s       ngx_http_corelog_op_t;
typedef struct ngx_http_corelog_pg_conn_s  ngx_http_corelog_pg_conn_t;
typedef struct ngx_http_corelog_queue_conn_s  ngx_http_corelog_queue_conn_t;
typedef struct ngx_http_corelog_worker_s   ngx_http_corelog_worker_t;
typedef struct ngx_http_corelog_token_state_s  ngx_http_corelog_token_state_t;
typedef struct ngx_http_corelog_stats_s    ngx_http_corelog_stats_t;
typedef struct ngx_http_corelog_stats_slot_s  ngx_http_corelog_stats_slot_t;


/*
 * Lines that requests can repeat (a full queue, a failing auth service)
 * are logged at most once a second each; the next line says how many were
 * not.  ngx_http_corelog_limit() decides.
 */

typedef struct {
    ngx_msec_t                   next;            /* may log from then on */
    ngx_uint_t                   suppressed;      /* not logged since */
} ngx_http_corelog_limit_t;

#define NGX_HTTP_CORELOG_LIMIT_QUEUE_FULL     0
#define NGX_HTTP_CORELOG_LIMIT_LOOKUPS_FULL   1
#define NGX_HTTP_CORELOG_LIMIT_QUEUE_WAIT     2
#define NGX_HTTP_CORELOG_LIMIT_LOOKUP_FAILED  3
#define NGX_HTTP_CORELOG_LIMIT_AUTH_IDENTITY  4
#define NGX_HTTP_CORELOG_LIMIT_AUTH_STATUS    5
#define NGX_HTTP_CORELOG_LIMIT_AUTH_NONE      6
#define NGX_HTTP_CORELOG_LIMIT_STATEMENT      7
#define NGX_HTTP_CORELOG_LIMIT_NO_ROW         8
#define NGX_HTTP_CORELOG_LIMIT_NOTICE         9
#define NGX_HTTP_CORELOG_LIMIT_UNUSABLE       10
#define NGX_HTTP_CORELOG_LIMIT_RETRY          11
#define NGX_HTTP_CORELOG_LIMITS               12

#define NGX_HTTP_CORELOG_LIMIT_NOTE_LEN       64


/* what a statement does: each kind has its own queue bound */
#define NGX_HTTP_CORELOG_KIND_WRITE       0
#define NGX_HTTP_CORELOG_KIND_LOOKUP      1    /* reads for the auth step */
#define NGX_HTTP_CORELOG_KINDS            2


/*
 * The host list of the conninfo (ngx_http_corelog_resolve.c): each entry
 * with its addresses, host i's in addrs[offset .. offset + room - 1]; libpq
 * gets one host/hostaddr/port entry per address, in order.
 */

#define NGX_HTTP_CORELOG_RESOLVE_ADDRS  16    /* of a name, at most */

typedef struct {
    u_char                       len;
    u_char                       data[NGX_INET6_ADDRSTRLEN];
} ngx_http_corelog_addr_t;

typedef struct {
    ngx_str_t                    name;            /* as written */
    ngx_str_t                    port;            /* its own, or empty */
    ngx_uint_t                   offset;          /* in addrs */
    ngx_uint_t                   room;            /* 0: a socket, no address */
    unsigned                     resolve:1;       /* a name, not an address */
} ngx_http_corelog_host_t;

typedef struct {
    ngx_http_corelog_host_t     *hosts;           /* NULL: no host list */
    ngx_uint_t                   nhosts;
    ngx_uint_t                   nnames;          /* hosts that resolve */
    ngx_uint_t                  *naddrs;          /* per host */
    ngx_http_corelog_addr_t     *addrs;           /* at configuration time */
    ngx_uint_t                   room;            /* in addrs */
    size_t                       host_size;       /* of the longest lists */
    size_t                       port_size;       /* 0: one port for all */
    ngx_int_t                    host_slot;       /* in keywords */
    ngx_int_t                    hostaddr_slot;   /* -1: none */
    ngx_int_t                    port_slot;       /* -1: one port for all */
    ngx_resolver_t              *resolver;        /* NULL: at start only */
    ngx_msec_t                   resolver_timeout;
} ngx_http_corelog_hosts_t;


typedef struct {
    ngx_str_t                    conninfo;        /* corelog_postgres */
    const char                 **keywords;        /* NULL-terminated */
    const char                 **values;
    ngx_http_corelog_hosts_t     hosts;           /* of the conninfo */
    ngx_uint_t                   connections;     /* per worker */
    ngx_uint_t                   queue_max;       /* per worker, writes */
    ngx_uint_t                   token_queue_max; /* per worker, lookups */
    ngx_msec_t                   query_timeout;
    ngx_msec_t                   connect_timeout;

    /*
     * corelog_query_timeout, shared: a write waits for a connection at
     * most wait_timeout, then its statement runs at most statement_timeout
     * before the module closes the connection; PostgreSQL's own
     * statement_timeout (server_timeout, when the module can send it)
     * ends the statement before that, rolled back.
     */
    ngx_msec_t                   wait_timeout;
    ngx_msec_t                   statement_timeout;
    ngx_msec_t                   server_timeout;

    ngx_uint_t                   batch_max;       /* rows per statement */
    ngx_msec_t                   batch_wait;      /* for others to join */
    ngx_uint_t                   token_cache_size;
    ngx_msec_t                   token_cache_ttl;
    ngx_flag_t                   prepare;         /* named statements */
    ngx_int_t                    request_id_index;  /* $request_id */
    ngx_shm_zone_t              *stats_zone;      /* corelog_status_zone */
    ngx_http_corelog_worker_t   *worker;          /* NULL but in a worker */
} ngx_http_corelog_main_conf_t;


/* where a directive was written: merge-time errors point at it */

typedef struct {
    ngx_str_t                    file;
    ngx_uint_t                   line;
} ngx_http_corelog_conf_pos_t;


typedef struct {
    ngx_str_t                    auth_uri;        /* corelog_auth_request */
    ngx_uint_t                   token_check;     /* corelog_token_check */
    ngx_uint_t                   token_direct;    /* no subrequest needed */
    ngx_http_corelog_api_t      *api;             /* corelog_api */
    ngx_array_t                 *api_args;        /* ngx_http_complex_value_t */
    ngx_http_corelog_api_t      *error_api;       /* corelog_error */
    ngx_array_t                 *resource_types;  /* of ngx_str_t */
    ngx_http_handler_pt          handler;         /* the one of those three */
    ngx_http_corelog_conf_pos_t  auth_pos;
    ngx_http_corelog_conf_pos_t  handler_pos;
} ngx_http_corelog_loc_conf_t;


typedef struct {
    ngx_str_t                    field;
    ngx_str_t                    message;
} ngx_http_corelog_field_error_t;


/* an error answer, neutral of the route's error shape */

typedef struct {
    ngx_uint_t                   status;
    ngx_str_t                    message;
    ngx_uint_t                   nomem;           /* not a client fault */
    ngx_uint_t                   nfields;
    ngx_http_corelog_field_error_t  fields[NGX_HTTP_CORELOG_MAX_FIELD_ERRORS];
} ngx_http_corelog_error_t;


/*
 * One statement the module runs.  A batched statement takes one array per
 * column ($1 is the row ordinal, int[]; $2.. the columns) and returns one
 * row per input row with the ordinal in column 0; a plain statement takes
 * the op's values one each.  Parameters go in binary: each value is
 * encoded as its column's type (ngx_http_corelog_value.c), so that
 * PostgreSQL parses no text per row.
 */

#define NGX_HTTP_CORELOG_HIST  8     /* 1, 2-3, 4-7, ... 64-127, 128+ rows */

/* a column's type: 0 is none, a value that no parser filled */
#define NGX_HTTP_CORELOG_COL_TEXT         1    /* text[] */
#define NGX_HTTP_CORELOG_COL_UUID         2    /* uuid[] */
#define NGX_HTTP_CORELOG_COL_INT4         3    /* int[] */
#define NGX_HTTP_CORELOG_COL_BOOL         4    /* bool[] */
#define NGX_HTTP_CORELOG_COL_FLOAT8       5    /* float8[] */
#define NGX_HTTP_CORELOG_COL_TIMESTAMPTZ  6    /* timestamptz[] */
#define NGX_HTTP_CORELOG_COL_BYTEA        7    /* bytea[] */

/* the same types as the SQL spells their arrays */
#define NGX_HTTP_CORELOG_SQL_TEXT         "text[]"
#define NGX_HTTP_CORELOG_SQL_UUID         "uuid[]"
#define NGX_HTTP_CORELOG_SQL_INT4         "int[]"
#define NGX_HTTP_CORELOG_SQL_BOOL         "bool[]"
#define NGX_HTTP_CORELOG_SQL_FLOAT8       "float8[]"
#define NGX_HTTP_CORELOG_SQL_TIMESTAMPTZ  "timestamptz[]"
#define NGX_HTTP_CORELOG_SQL_BYTEA        "bytea[]"

#define NGX_HTTP_CORELOG_UUID_SIZE        16

/* a worker's pool of random bytes: 64 request ids or UUIDs a getrandom() */
#define NGX_HTTP_CORELOG_RANDOM           1024


/*
 * Each statement's place in the status zone (ngx_http_corelog_stats.c):
 * a route's is also the route's.
 */

#define NGX_HTTP_CORELOG_STAT_CORE_LOG     0
#define NGX_HTTP_CORELOG_STAT_CHANNEL_LOG  1
#define NGX_HTTP_CORELOG_STAT_LOGTANK      2
#define NGX_HTTP_CORELOG_ROUTES            3
#define NGX_HTTP_CORELOG_STAT_TOKEN        3
#define NGX_HTTP_CORELOG_STAT_SCHEMA       4
#define NGX_HTTP_CORELOG_STAT_STMTS        5


/*
 * One value of an op, filled once by its route's parser (the setters in
 * ngx_http_corelog_value.c), then encoded to binary for PostgreSQL and
 * written as JSON for the answer from the same bytes.
 */

typedef struct {
    ngx_uint_t                   type;            /* _COL_TEXT, ... */
    unsigned                     null:1;          /* SQL NULL, JSON null */
    unsigned                     seconds:1;       /* time written as s */
    union {
        u_char                   uuid[NGX_HTTP_CORELOG_UUID_SIZE];
        int32_t                  int4;
        double                   float8;
        int64_t                  usec;            /* since 1970, UTC */
        ngx_uint_t               boolean;
        ngx_str_t                text;            /* also bytea */
    } u;
} ngx_http_corelog_value_t;


/*
 * A route declares its statement once, as two lists that the SQL, the
 * parameter encoder and the answer all read:
 *
 *   PARAMS(X): X(NAME, n, "column", TYPE), one per column of a row, in
 *   the order of $n (n from 2: $1 is the ordinal); the unnest() list of
 *   the SQL and its column names are made from it, the position enum
 *   too, and a static assertion checks each n against its place;
 *
 *   RESULT(X): X(NAME, "expression", status, "message"), the columns the
 *   statement returns after the ordinal (column 0): the SELECT list is
 *   made from it, and a column with a status is a check, its error when
 *   the value is not true (ngx_http_corelog_value_verdict()).
 */

#define NGX_HTTP_CORELOG_PARAM_SQL(name, n, column, type)                    \
    ", $" #n "::" NGX_HTTP_CORELOG_SQL_##type
#define NGX_HTTP_CORELOG_PARAM_NAME(name, n, column, type)  ", " column
#define NGX_HTTP_CORELOG_PARAM_COLUMN(name, n, column, type)                 \
    { column, NGX_HTTP_CORELOG_COL_##type, n },

#define NGX_HTTP_CORELOG_RESULT_SQL(name, expr, status, message)  ", " expr
#define NGX_HTTP_CORELOG_RESULT_COLUMN(name, expr, status, message)          \
    { expr, status, message },

/*
 * The position enums of a route: NGX_HTTP_CORELOG_COL(NAME) for each of
 * its columns and NCOLS, NGX_HTTP_CORELOG_RES(NAME) for each result column
 * (ORD is 0) and NFIELDS, both macros defined by the route's file; then a
 * static assertion per column that its $n is its place + 2.
 */

#define NGX_HTTP_CORELOG_PARAM_ENUM(name, n, column, type)                   \
    NGX_HTTP_CORELOG_COL(name),
#define NGX_HTTP_CORELOG_PARAM_CHECK(name, n, column, type)                  \
    _Static_assert(n == NGX_HTTP_CORELOG_COL(name) + 2,                      \
                   "the $n of column " column " is not its place + 2");
#define NGX_HTTP_CORELOG_RESULT_ENUM(name, expr, status, message)            \
    NGX_HTTP_CORELOG_RES(name),

#define NGX_HTTP_CORELOG_ROUTE_ENUMS(params, result)                         \
    enum {                                                                   \
        params(NGX_HTTP_CORELOG_PARAM_ENUM)                                  \
        NGX_HTTP_CORELOG_COL(NCOLS)                                          \
    };                                                                       \
    enum {                                                                   \
        NGX_HTTP_CORELOG_RES(ORD) = 0,                                       \
        result(NGX_HTTP_CORELOG_RESULT_ENUM)                                 \
        NGX_HTTP_CORELOG_RES(NFIELDS)                                        \
    };                                                                       \
    params(NGX_HTTP_CORELOG_PARAM_CHECK)

/* "unnest($1::int[], $2::uuid[], ...) AS i(ord, id, ...)" */
#define NGX_HTTP_CORELOG_UNNEST(params)                                      \
    "unnest($1::int[]" params(NGX_HTTP_CORELOG_PARAM_SQL) ")"                \
    " AS i(ord" params(NGX_HTTP_CORELOG_PARAM_NAME) ")"

/* "SELECT c.ord, ..." */
#define NGX_HTTP_CORELOG_SELECT(result)                                      \
    " SELECT c.ord" result(NGX_HTTP_CORELOG_RESULT_SQL)


typedef struct {
    const char                  *name;            /* in the SQL */
    ngx_uint_t                   type;            /* _COL_TEXT, ... */
    ngx_uint_t                   param;           /* its $n */
} ngx_http_corelog_column_t;


/* an answer's field: its JSON text before the value, and the column */

typedef struct {
    const char                  *text;            /* ",\"name\":" */
    ngx_uint_t                   column;
} ngx_http_corelog_field_t;


typedef struct {
    const char                  *name;            /* its SQL expression */
    ngx_uint_t                   status;          /* 0: not a check */
    const char                  *message;
} ngx_http_corelog_result_t;


typedef struct {
    const char                  *name;
    const char                  *sql;
    ngx_uint_t                   nparams;         /* columns of one row */
    unsigned                     batched:1;
    const ngx_http_corelog_column_t  *columns;   /* nparams of them */
    ngx_uint_t                   nfields;         /* of its result rows */
    ngx_uint_t                   kind;            /* _KIND_WRITE, ... */
    const ngx_http_corelog_result_t  *results;   /* nfields, or NULL */
    ngx_uint_t                   stat;            /* _STAT_CORE_LOG, ... */
} ngx_http_corelog_stmt_t;


/* a statement's parameters, as PQsendQueryPrepared takes them */

typedef struct {
    const char                 **values;
    int                         *lengths;
    int                         *formats;
} ngx_http_corelog_params_t;


/*
 * The handler is called once: with rc NGX_OK, res and the row of this op,
 * or with rc an HTTP status (503, 504, 500) and res NULL.  The op is gone
 * from every queue when it runs; the handler finalizes the request.
 */

typedef void (*ngx_http_corelog_op_handler_pt)(ngx_http_corelog_op_t *op,
    ngx_int_t rc, PGresult *res, int row);


#define NGX_HTTP_CORELOG_OP_NEW       0
#define NGX_HTTP_CORELOG_OP_QUEUED    1    /* in the worker's queue */
#define NGX_HTTP_CORELOG_OP_SENT      2    /* in conn->ops[slot] */
#define NGX_HTTP_CORELOG_OP_DISPATCH  3    /* its answer is being given */
#define NGX_HTTP_CORELOG_OP_DONE      4


struct ngx_http_corelog_op_s {
    ngx_queue_t                  queue;
    ngx_http_request_t          *request;
    ngx_http_corelog_worker_t   *worker;          /* NULL: no queue */
    const ngx_http_corelog_stmt_t *stmt;
    ngx_http_corelog_value_t    *values;          /* stmt->nparams */
    ngx_http_corelog_op_handler_pt  handler;
    void                        *data;
    ngx_http_corelog_queue_conn_t  *conn;         /* while SENT */
    ngx_uint_t                   slot;            /* in conn->ops */
    ngx_int_t                    row;             /* in the result */
    size_t                       size;            /* of its values */
    ngx_uint_t                   state;
    ngx_msec_t                   deadline;        /* of its queue waits */
    ngx_event_t                  wait;            /* queue wait bound */

    /*
     * What its write cost, for the access log: when it entered the queue
     * (first), when it last went out in a statement of rows ops, and when
     * that statement ended (answered); rows 0: it never went out
     */
    ngx_msec_t                   queued_at;
    ngx_msec_t                   sent_at;
    ngx_msec_t                   done_at;
    ngx_uint_t                   rows;

    unsigned                     alone:1;         /* goes in no batch */
    unsigned                     retried:1;       /* after a rollback */
    unsigned                     answered:1;      /* done_at is set */
};


#define NGX_HTTP_CORELOG_PG_DOWN        0
#define NGX_HTTP_CORELOG_PG_CONNECTING  1
#define NGX_HTTP_CORELOG_PG_IDLE        2
#define NGX_HTTP_CORELOG_PG_BUSY        3

/* statements one connection keeps prepared; others go unnamed */
#define NGX_HTTP_CORELOG_PG_PREPARED    8


/*
 * What a connection tells its user (pc->data is the user's), the way an
 * upstream's peer.get/free reach their balancer: the connection knows
 * libpq and nginx's events, never who uses it.
 */

typedef struct {
    /* pc is idle: connected, or its statement is over and pc is reusable */
    void                       (*ready)(ngx_http_corelog_pg_conn_t *pc);

    /*
     * pc's statement ended: rc NGX_OK and res (until the call returns), or
     * an HTTP status; pc is idle again, and may be sent to from here.
     * sqlstate (until the call returns) is the code of the server's error
     * that ended the statement's run (not its Parse): its transaction was
     * rolled back, nothing of it is committed; NULL otherwise.
     */
    void                       (*done)(ngx_http_corelog_pg_conn_t *pc,
                                   ngx_int_t rc, PGresult *res,
                                   const char *sqlstate);

    /*
     * pc is lost, or could not be made: its statement, if any, ended with
     * rc; pc connects again by itself after a backoff
     */
    void                       (*down)(ngx_http_corelog_pg_conn_t *pc,
                                   ngx_int_t rc);

    /*
     * the parameters of pc's statement as it goes out (after its Parse if
     * it was not prepared yet): NGX_OK; NGX_DECLINED, nothing is left to
     * send; NGX_ERROR, they could not be made
     */
    ngx_int_t                  (*params)(ngx_http_corelog_pg_conn_t *pc,
                                   ngx_uint_t *nparams,
                                   ngx_http_corelog_params_t *params);
} ngx_http_corelog_pg_handlers_t;


/*
 * A connection's own resolution of the host names (with nginx's resolver,
 * before each connect): the last addresses known, the lists for libpq.
 */

typedef struct ngx_http_corelog_resolve_s  ngx_http_corelog_resolve_t;

typedef void (*ngx_http_corelog_resolve_handler_pt)(
    ngx_http_corelog_resolve_t *rs);

struct ngx_http_corelog_resolve_s {
    ngx_http_corelog_main_conf_t  *conf;
    ngx_resolver_ctx_t          *ctx;         /* the name being resolved */
    ngx_uint_t                   next;        /* its host */
    ngx_uint_t                  *naddrs;      /* per host: last known */
    ngx_uint_t                  *failures;    /* per host: in a row */
    ngx_http_corelog_addr_t     *addrs;
    const char                 **values;      /* the conninfo's, lists ours */
    u_char                      *host;
    u_char                      *hostaddr;
    u_char                      *port;
    ngx_log_t                   *log;
    ngx_http_corelog_resolve_handler_pt  handler;  /* all names done */
    void                        *data;
    unsigned                     calling:1;   /* in ngx_resolve_name() */
};


struct ngx_http_corelog_pg_conn_s {
    PGconn                      *conn;
    ngx_connection_t            *c;           /* wraps PQsocket() */
    ngx_uint_t                   state;
    ngx_uint_t                   index;
    PostgresPollingStatusType    poll;
    ngx_event_t                  backoff;     /* cancelable reconnect */
    ngx_msec_t                   delay;
    ngx_uint_t                   failures;    /* since an answered statement */
    PGresult                    *res;
    PGresult                    *error;
    const ngx_http_corelog_stmt_t *prepared[NGX_HTTP_CORELOG_PG_PREPARED];
    ngx_uint_t                   nprepared;
    const ngx_http_corelog_stmt_t *preparing;
    ngx_http_corelog_main_conf_t  *conf;
    const ngx_http_corelog_pg_handlers_t  *handlers;
    void                        *data;        /* the user's */
    ngx_http_corelog_resolve_t   resolve;
    ngx_log_t                    log;
    unsigned                     flushing:1;
    unsigned                     connected:1;  /* once: the next a reconnect */
};


/* statements a worker counts rows of (ngx_http_corelog_queue_log_rows) */
#define NGX_HTTP_CORELOG_STMTS  8


/* a worker's own state, made in init_process, hung off the main conf */

struct ngx_http_corelog_worker_s {
    ngx_http_corelog_limit_t     limits[NGX_HTTP_CORELOG_LIMITS];
    ngx_uint_t                   queued[NGX_HTTP_CORELOG_KINDS];
    ngx_uint_t                   lookups;         /* statements in flight */
    ngx_http_corelog_token_state_t  *token;       /* token.c's */
    ngx_http_corelog_stats_t    *stats;           /* NULL: no status zone */
    ngx_http_corelog_stats_slot_t  *slot;         /* this worker's, in it */
    ngx_pool_t                  *json_pool;       /* of the parse under way */
    uint64_t                     uuid_ms;         /* the last UUIDv7's time */
    u_char                       uuid[16];        /* and its bytes */
    size_t                       nrandom;         /* bytes left in random, */
    u_char                       random[NGX_HTTP_CORELOG_RANDOM];  /* its end */

    /* the queue's (ngx_http_corelog_queue.c) */
    ngx_http_corelog_main_conf_t  *conf;
    ngx_http_corelog_queue_conn_t  *conns;        /* the pool */
    ngx_uint_t                   nconns;
    ngx_uint_t                   nup;             /* connections up */
    ngx_queue_t                  queue;           /* ops waiting */
    ngx_uint_t                   nqueued;
    ngx_uint_t                   hold;            /* ops expected back */
    ngx_msec_t                   held;            /* since: the commit */
    ngx_event_t                  spill;           /* corelog_batch_wait */

    /* one reusable buffer for the parameters of the statement being sent */
    u_char                      *buf;
    size_t                       size;
    ngx_http_corelog_params_t    params;
    ngx_uint_t                   nparams;         /* room in params */

    /* rows per statement, by powers of two: logged at worker exit */
    const ngx_http_corelog_stmt_t *stmts[NGX_HTTP_CORELOG_STMTS];
    ngx_uint_t                   rows[NGX_HTTP_CORELOG_STMTS]
                                     [NGX_HTTP_CORELOG_HIST];
    ngx_uint_t                   nstmts;

    unsigned                     running:1;
    unsigned                     again:1;
    unsigned                     down_logged:1;
};


typedef struct {
    ngx_uint_t                   status;          /* of the subrequest */
    ngx_str_t                    account;
    ngx_str_t                    domain;
    ngx_str_t                    project;
    ngx_str_t                    error;           /* X-Corelog-Error */
    ngx_str_t                    www_authenticate;
    ngx_str_t                    retry_after;
    unsigned                     started:1;
    unsigned                     done:1;
    unsigned                     allowed:1;
} ngx_http_corelog_auth_t;


typedef struct {
    ngx_http_corelog_auth_t      auth;
    ngx_http_corelog_api_t      *api;
    void                        *data;            /* the api's request state */
    ngx_http_corelog_op_t       *op;              /* its write, once made */
    ngx_uint_t                   error;           /* the error answered */
    unsigned                     body_ours:1;     /* we read it: we free it */
    unsigned                     created:1;       /* its row is committed */
} ngx_http_corelog_ctx_t;


struct ngx_http_corelog_api_s {
    ngx_str_t                    name;
    ngx_uint_t                   nargs;           /* corelog_api arguments */
    const ngx_http_corelog_stmt_t *stmt;

    /* validate the parsed body; fill op->values; NGX_DECLINED + err */
    ngx_int_t                  (*prepare)(ngx_http_request_t *r,
                                   ngx_http_corelog_ctx_t *ctx, json_t *body,
                                   ngx_http_corelog_op_t *op,
                                   ngx_http_corelog_error_t *err);

    /* the statement's row for this request: send the answer */
    ngx_int_t                  (*reply)(ngx_http_request_t *r,
                                   ngx_http_corelog_ctx_t *ctx,
                                   PGresult *res, int row);

    /* send an error in this route's shape */
    ngx_int_t                  (*send_error)(ngx_http_request_t *r,
                                   ngx_http_corelog_ctx_t *ctx,
                                   ngx_http_corelog_error_t *err);

    /* the code of an error in this shape, as its body carries it */
    u_char                    *(*error_code)(u_char *buf, ngx_uint_t status);

    ngx_uint_t                   id;              /* the row's id column */
};


/* "UnsupportedMediaType", "CLG.0415": the longest error code */
#define NGX_HTTP_CORELOG_ERROR_CODE_LEN  32


/* a JSON writer into one growing pool buffer */

typedef struct {
    ngx_pool_t                  *pool;
    u_char                      *start;
    u_char                      *pos;
    u_char                      *end;
    unsigned                     failed:1;
} ngx_http_corelog_out_t;


extern ngx_module_t  ngx_http_corelog_module;

extern ngx_http_corelog_api_t  ngx_http_corelog_core_log_api;
extern ngx_http_corelog_api_t  ngx_http_corelog_channel_log_api;
extern ngx_http_corelog_api_t  ngx_http_corelog_logtank_api;


/* ngx_http_corelog_handler.c */
ngx_int_t ngx_http_corelog_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_corelog_body_op(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
ngx_int_t ngx_http_corelog_error_handler(ngx_http_request_t *r);
ngx_http_corelog_api_t *ngx_http_corelog_api_find(ngx_str_t *name);
void ngx_http_corelog_apis_log_rows(ngx_cycle_t *cycle);

/* ngx_http_corelog_request.c */
ngx_http_corelog_ctx_t *ngx_http_corelog_request_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_corelog_request_id(ngx_http_request_t *r, ngx_str_t *id);
void ngx_http_corelog_request_finalize(ngx_http_request_t *r, ngx_int_t rc);

/* ngx_http_corelog_auth.c */
ngx_int_t ngx_http_corelog_auth_init(ngx_conf_t *cf);
ngx_int_t ngx_http_corelog_auth_verdict(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err);

/* ngx_http_corelog_token.c */
ngx_int_t ngx_http_corelog_token_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_corelog_token_cached(ngx_http_request_t *r,
    ngx_uint_t mode, ngx_http_corelog_auth_t *a);
ngx_int_t ngx_http_corelog_token_init_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf);
void ngx_http_corelog_token_exit_process(ngx_cycle_t *cycle);

/* ngx_http_corelog_pg.c */
char *ngx_http_corelog_pg_options(ngx_conf_t *cf,
    ngx_http_corelog_main_conf_t *cmcf);
char *ngx_http_corelog_pg_conninfo(ngx_conf_t *cf,
    ngx_http_corelog_main_conf_t *cmcf);
ngx_int_t ngx_http_corelog_pg_open(ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t index, ngx_http_corelog_main_conf_t *cmcf,
    const ngx_http_corelog_pg_handlers_t *handlers, void *data,
    ngx_log_t *log);
ngx_int_t ngx_http_corelog_pg_send(ngx_http_corelog_pg_conn_t *pc,
    const ngx_http_corelog_stmt_t *stmt);
void ngx_http_corelog_pg_close(ngx_http_corelog_pg_conn_t *pc);

/* ngx_http_corelog_resolve.c */
char *ngx_http_corelog_resolve_conf(ngx_conf_t *cf,
    ngx_http_corelog_hosts_t *hs, const char **host, const char **port,
    const char **hostaddr);
ngx_int_t ngx_http_corelog_resolve_init(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_main_conf_t *cmcf, ngx_log_t *log);
ngx_int_t ngx_http_corelog_resolve_start(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_resolve_handler_pt handler, void *data);
const char **ngx_http_corelog_resolve_values(ngx_http_corelog_resolve_t *rs);
void ngx_http_corelog_resolve_cancel(ngx_http_corelog_resolve_t *rs);

/* ngx_http_corelog_queue.c */
ngx_int_t ngx_http_corelog_queue_init_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf);
void ngx_http_corelog_queue_exit_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf);
ngx_http_corelog_op_t *ngx_http_corelog_queue_op(ngx_http_request_t *r,
    const ngx_http_corelog_stmt_t *stmt);
ngx_int_t ngx_http_corelog_queue_post(ngx_http_corelog_op_t *op);
void ngx_http_corelog_queue_log_rows(ngx_cycle_t *cycle,
    const ngx_http_corelog_stmt_t *stmt);

/* ngx_http_corelog_value.c */
size_t ngx_http_corelog_value_op_size(ngx_http_corelog_op_t *op);
size_t ngx_http_corelog_value_params_size(const ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops);
ngx_int_t ngx_http_corelog_value_params(const ngx_http_corelog_stmt_t *stmt,
    ngx_http_corelog_op_t **ops, ngx_uint_t nops, u_char *p,
    ngx_http_corelog_params_t *params, ngx_log_t *log);
void ngx_http_corelog_value_text(ngx_http_corelog_value_t *v,
    const ngx_str_t *s);
void ngx_http_corelog_value_bytea(ngx_http_corelog_value_t *v, u_char *data,
    size_t len);
void ngx_http_corelog_value_uuid(ngx_http_corelog_value_t *v, u_char *uuid);
void ngx_http_corelog_value_int4(ngx_http_corelog_value_t *v, int32_t n);
void ngx_http_corelog_value_float8(ngx_http_corelog_value_t *v, double d);
void ngx_http_corelog_value_bool(ngx_http_corelog_value_t *v, ngx_uint_t b);
void ngx_http_corelog_value_now(ngx_http_corelog_value_t *v,
    ngx_uint_t seconds);
void ngx_http_corelog_value_uuid_v7(ngx_http_corelog_value_t *v);
ngx_int_t ngx_http_corelog_value_uuid_parse(ngx_http_corelog_value_t *v,
    ngx_str_t *s);
void ngx_http_corelog_value_json(ngx_http_corelog_out_t *out,
    ngx_http_corelog_value_t *v);
void ngx_http_corelog_value_fields(ngx_http_corelog_out_t *out,
    ngx_http_corelog_value_t *values, const ngx_http_corelog_field_t *fields,
    ngx_uint_t n);
ngx_int_t ngx_http_corelog_value_verdict(const ngx_http_corelog_stmt_t *stmt,
    PGresult *res, int row, ngx_http_corelog_error_t *err);
#if (NGX_DEBUG)
void ngx_http_corelog_value_debug(ngx_http_request_t *r, ngx_str_t *route,
    ngx_http_corelog_op_t *op);
#else
#define ngx_http_corelog_value_debug(r, route, op)
#endif

/* ngx_http_corelog_json.c */
ngx_int_t ngx_http_corelog_json_parse(ngx_http_request_t *r, ngx_pool_t *pool,
    json_t **root, ngx_http_corelog_error_t *err);
void ngx_http_corelog_json_release(ngx_http_request_t *r);
ngx_int_t ngx_http_corelog_json_string(ngx_pool_t *pool, json_t *obj,
    const char *field, ngx_uint_t required, size_t max_chars,
    size_t max_bytes, ngx_str_t *out, ngx_http_corelog_error_t *err);
ngx_int_t ngx_http_corelog_json_uuid(ngx_pool_t *pool, json_t *obj,
    const char *field, u_char *uuid, ngx_http_corelog_error_t *err);
void ngx_http_corelog_out_init(ngx_http_corelog_out_t *out, ngx_pool_t *pool,
    size_t size);
void ngx_http_corelog_out_raw(ngx_http_corelog_out_t *out, const char *s,
    size_t len);
#define ngx_http_corelog_out_lit(out, s)                                     \
    ngx_http_corelog_out_raw(out, s, sizeof(s) - 1)
void ngx_http_corelog_out_str(ngx_http_corelog_out_t *out, ngx_str_t *s);
void ngx_http_corelog_out_str_or_null(ngx_http_corelog_out_t *out,
    ngx_str_t *s);
void ngx_http_corelog_out_int(ngx_http_corelog_out_t *out, int64_t n);
void ngx_http_corelog_out_double(ngx_http_corelog_out_t *out, double d);

/* ngx_http_corelog_reply.c */
ngx_int_t ngx_http_corelog_reply_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_corelog_out_t *out);
ngx_int_t ngx_http_corelog_reply_error(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err);
ngx_int_t ngx_http_corelog_reply_error_corelog(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_error_t *err);
ngx_int_t ngx_http_corelog_reply_header(ngx_http_request_t *r,
    const char *key, ngx_str_t *value);
u_char *ngx_http_corelog_reply_code_corelog(u_char *buf, ngx_uint_t status);
ngx_http_corelog_api_t *ngx_http_corelog_reply_api(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx);

/* the status zone's counters: ngx_http_corelog_stats_count(w, what) */
#define NGX_HTTP_CORELOG_STATS_TOKEN_LOOKUPS     0
#define NGX_HTTP_CORELOG_STATS_TOKEN_HITS        1
#define NGX_HTTP_CORELOG_STATS_TOKEN_MISSES      2
#define NGX_HTTP_CORELOG_STATS_TOKEN_EVICTIONS   3
#define NGX_HTTP_CORELOG_STATS_CONNECTS          4
#define NGX_HTTP_CORELOG_STATS_RECONNECTS        5
#define NGX_HTTP_CORELOG_STATS_CONNECT_FAILURES  6
#define NGX_HTTP_CORELOG_STATS_TIMEOUTS          7
#define NGX_HTTP_CORELOG_STATS_COUNTERS          8

/* and a queue's: ngx_http_corelog_stats_kind(w, what, kind) */
#define NGX_HTTP_CORELOG_STATS_REJECTED          0
#define NGX_HTTP_CORELOG_STATS_EXPIRED           1
#define NGX_HTTP_CORELOG_STATS_KIND_COUNTERS     2

/* ngx_http_corelog_stats.c */
char *ngx_http_corelog_stats_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_corelog_stats_init(ngx_conf_t *cf);
void ngx_http_corelog_stats_init_process(ngx_http_corelog_main_conf_t *cmcf);
void ngx_http_corelog_stats_exit_process(ngx_http_corelog_worker_t *w);
void ngx_http_corelog_stats_queued(ngx_http_corelog_worker_t *w,
    ngx_uint_t kind);
void ngx_http_corelog_stats_count(ngx_http_corelog_worker_t *w,
    ngx_uint_t what);
void ngx_http_corelog_stats_kind(ngx_http_corelog_worker_t *w,
    ngx_uint_t what, ngx_uint_t kind);
void ngx_http_corelog_stats_statement(ngx_http_corelog_worker_t *w,
    const ngx_http_corelog_stmt_t *stmt, ngx_uint_t rows);
void ngx_http_corelog_stats_auth(ngx_http_corelog_worker_t *w,
    ngx_uint_t status);
void ngx_http_corelog_stats_conn(ngx_http_corelog_worker_t *w,
    ngx_uint_t from, ngx_uint_t to);
void ngx_http_corelog_stats_down(ngx_http_corelog_worker_t *w,
    ngx_uint_t down);
void ngx_http_corelog_stats_schema(ngx_http_corelog_stats_t *st,
    ngx_int_t version);

/* ngx_http_corelog_status.c */
ngx_int_t ngx_http_corelog_status_handler(ngx_http_request_t *r);

/* ngx_http_corelog_variables.c */
ngx_int_t ngx_http_corelog_variables_add(ngx_conf_t *cf);

/* ngx_http_corelog_error.c */
void ngx_http_corelog_error_set(ngx_http_corelog_error_t *err,
    ngx_uint_t status, const char *message);
void ngx_http_corelog_error_field(ngx_http_corelog_error_t *err,
    const char *field, const char *message);
void ngx_http_corelog_error_fieldf(ngx_pool_t *pool,
    ngx_http_corelog_error_t *err, const char *field, const char *fmt, ...);
const char *ngx_http_corelog_error_status_name(ngx_uint_t status);

/* ngx_http_corelog_util.c */
ngx_int_t ngx_http_corelog_uuid_parse(ngx_str_t *in, u_char *out);
ngx_int_t ngx_http_corelog_uuid_bytes(ngx_str_t *in, u_char *uuid);
u_char *ngx_http_corelog_uuid_text(u_char *out, u_char *uuid);
void ngx_http_corelog_uuid_v7(u_char *uuid);
u_char *ngx_http_corelog_time_rfc3339(u_char *out, int64_t usec,
    ngx_uint_t seconds);
ngx_int_t ngx_http_corelog_utf8_length(ngx_str_t *s);
size_t ngx_http_corelog_utf8_next(u_char *p, u_char *last);
u_char *ngx_http_corelog_log_text(u_char *dst, u_char *last, u_char *src,
    size_t len);
ngx_int_t ngx_http_corelog_random(u_char *buf, size_t len);
ngx_str_t *ngx_http_corelog_header_find(ngx_list_t *headers,
    const char *name);
ngx_int_t ngx_http_corelog_identifier(ngx_str_t *s, size_t max);
ngx_uint_t ngx_http_corelog_limit(ngx_uint_t kind, ngx_str_t *note,
    u_char *buf);
ngx_http_corelog_main_conf_t *ngx_http_corelog_main_conf(void);
ngx_http_corelog_worker_t *ngx_http_corelog_worker(void);


#endif /* _NGX_HTTP_CORELOG_H_INCLUDED_ */
