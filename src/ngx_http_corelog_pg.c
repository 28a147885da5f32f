
/*
 * Copyright (C) corelog authors
 *
 * One PostgreSQL connection.  libpq owns its socket; nginx owns its
 * readiness (level-triggered events) and its time (timers).  Nothing here
 * blocks: a connection is made with PQconnectStartParams() and
 * PQconnectPoll(), statements are sent with PQsendQueryParams() and
 * PQflush(), and answers are read with PQconsumeInput(), PQisBusy() and
 * PQgetResult().  The connection does not know its user: it reports
 * through the handlers it was opened with (ready, done, down, params).
 */


#include "ngx_http_corelog.h"


#define NGX_HTTP_CORELOG_PG_BACKOFF_MIN  100
#define NGX_HTTP_CORELOG_PG_BACKOFF_MAX  1000

/* a message of libpq or PostgreSQL in a log line */
#define NGX_HTTP_CORELOG_PG_TEXT_LEN     512

/*
 * A connection attempt that fails, or a connection lost before the server
 * answered a statement on it, is an error the first time, and info while
 * it keeps failing (the user logs the outage of its pool, once).
 */
#define NGX_HTTP_CORELOG_PG_LEVEL(pc)                                        \
    ((pc)->failures ? NGX_LOG_INFO : NGX_LOG_ERR)


static void ngx_http_corelog_pg_connect(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_resolved(ngx_http_corelog_resolve_t *rs);
static void ngx_http_corelog_pg_start(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_enter(ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t state);
static ngx_int_t ngx_http_corelog_pg_wrap(ngx_http_corelog_pg_conn_t *pc);
static ngx_int_t ngx_http_corelog_pg_events(ngx_http_corelog_pg_conn_t *pc,
    ngx_uint_t read, ngx_uint_t write);
static void ngx_http_corelog_pg_poll(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_connected(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_read_handler(ngx_event_t *rev);
static void ngx_http_corelog_pg_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_http_corelog_pg_flush(ngx_http_corelog_pg_conn_t *pc);
static ngx_uint_t ngx_http_corelog_pg_is_prepared(
    ngx_http_corelog_pg_conn_t *pc, const ngx_http_corelog_stmt_t *stmt);
static void ngx_http_corelog_pg_prepared(ngx_http_corelog_pg_conn_t *pc,
    PGresult *res, PGresult *error);
static void ngx_http_corelog_pg_idle_input(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_recv(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_done(ngx_http_corelog_pg_conn_t *pc);
static ngx_int_t ngx_http_corelog_pg_status(PGresult *res);
static ngx_uint_t ngx_http_corelog_pg_unusable(ngx_http_corelog_pg_conn_t *pc,
    PGresult *res);
static ngx_int_t ngx_http_corelog_pg_outcome(ngx_http_corelog_pg_conn_t *pc);
static const char *ngx_http_corelog_pg_hint(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_lost(ngx_http_corelog_pg_conn_t *pc,
    ngx_int_t rc);
static void ngx_http_corelog_pg_retry(ngx_http_corelog_pg_conn_t *pc);
static void ngx_http_corelog_pg_backoff_handler(ngx_event_t *ev);
static void ngx_http_corelog_pg_notice(void *arg, const PGresult *res);
static ngx_str_t ngx_http_corelog_pg_message(const char *msg, u_char *buf,
    size_t size);
static void ngx_http_corelog_pg_result_error(ngx_http_corelog_pg_conn_t *pc,
    PGresult *res, const char *what);
static ngx_uint_t ngx_http_corelog_pg_utf8_name(const char *name);


#if (NGX_DEBUG)

static const char  *const ngx_http_corelog_pg_states[] = {
    "down", "connecting", "idle", "busy"
};

#endif


/*
 * Configuration time: check the conninfo, resolve host names to hostaddr
 * (ngx_http_corelog_resolve.c: all the addresses of a name, in order).
 */

char *
ngx_http_corelog_pg_conninfo(ngx_conf_t *cf, ngx_http_corelog_main_conf_t *cmcf)
{
    char                      *errmsg;
    u_char                    *p;
    size_t                     len;
    ngx_str_t                  resolved;
    ngx_int_t                  given;
    ngx_uint_t                 n, i;
    const char                *host, *hostaddr, *port;
    PQconninfoOption          *opts, *o;
    ngx_http_corelog_hosts_t  *hs;
    u_char                     text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    p = ngx_pnalloc(cf->pool, cmcf->conninfo.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    (void) ngx_cpystrn(p, cmcf->conninfo.data, cmcf->conninfo.len + 1);

    errmsg = NULL;
    opts = PQconninfoParse((const char *) p, &errmsg);

    if (opts == NULL) {
        if (errmsg) {
            resolved = ngx_http_corelog_pg_message(errmsg, text, sizeof(text));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: invalid PostgreSQL conninfo: %V",
                               &resolved);
            PQfreemem(errmsg);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: PQconninfoParse() failed: "
                               "out of memory");
        }

        return NGX_CONF_ERROR;
    }

    n = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0') {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "client_encoding") == 0
            && !ngx_http_corelog_pg_utf8_name(o->val))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: client_encoding \"%s\" in conninfo: "
                               "the module sends UTF8", o->val);
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }
    }

    /*
     * room for hostaddr, client_encoding, fallback_application_name,
     * options (ngx_http_corelog_pg_options()), NULL
     */

    cmcf->keywords = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    cmcf->values = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));

    if (cmcf->keywords == NULL || cmcf->values == NULL) {
        PQconninfoFree(opts);
        return NGX_CONF_ERROR;
    }

    i = 0;
    given = -1;

    hs = &cmcf->hosts;
    hs->host_slot = -1;
    hs->hostaddr_slot = -1;
    hs->port_slot = -1;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0'
            || ngx_strcmp(o->keyword, "client_encoding") == 0)
        {
            continue;
        }

        len = ngx_strlen(o->keyword) + 1;
        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, o->keyword, len);
        cmcf->keywords[i] = (const char *) p;

        len = ngx_strlen(o->val) + 1;
        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, o->val, len);
        cmcf->values[i] = (const char *) p;

        if (ngx_strcmp(o->keyword, "host") == 0) {
            hs->host_slot = i;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            given = i;

        } else if (ngx_strcmp(o->keyword, "port") == 0) {
            hs->port_slot = i;
        }

        i++;
    }

    PQconninfoFree(opts);

    /*
     * libpq resolves host names synchronously inside PQconnectPoll():
     * resolve them here, and hand libpq the addresses, an entry each.
     */

    if (hs->host_slot != -1) {
        host = cmcf->values[hs->host_slot];
        port = (hs->port_slot != -1) ? cmcf->values[hs->port_slot] : NULL;
        hostaddr = (given != -1) ? cmcf->values[given] : NULL;

        if (ngx_http_corelog_resolve_conf(cf, hs, &host, &port, &hostaddr)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        cmcf->values[hs->host_slot] = host;

        if (hs->port_size) {
            cmcf->values[hs->port_slot] = port;
        }

        if (hs->nhosts && hostaddr) {
            cmcf->keywords[i] = "hostaddr";
            cmcf->values[i] = hostaddr;
            hs->hostaddr_slot = i;
            i++;
        }
    }

    /* the text the module sends is UTF-8, whatever the database's default */

    cmcf->keywords[i] = "client_encoding";
    cmcf->values[i] = "UTF8";
    i++;

    cmcf->keywords[i] = "fallback_application_name";
    cmcf->values[i] = "nginx-corelog";

    return NGX_CONF_OK;
}


/*
 * After the timeouts are known: PostgreSQL's statement_timeout on every
 * connection, after the operator's own options (the last -c wins), so
 * that a statement the module gives up on is ended, rolled back, by
 * PostgreSQL first.  Not through a pooler (corelog_prepared_statements
 * off): PgBouncer refuses startup options; set it on the role there.
 */

char *
ngx_http_corelog_pg_options(ngx_conf_t *cf, ngx_http_corelog_main_conf_t *cmcf)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   i;
    const char  *options;

    options = NULL;

    for (i = 0; cmcf->keywords[i]; i++) {
        if (ngx_strcmp(cmcf->keywords[i], "options") == 0) {
            options = cmcf->values[i];
            break;
        }
    }

    len = (options ? ngx_strlen(options) + 1 : 0)
          + sizeof("-c statement_timeout=") - 1 + NGX_INT_T_LEN + 1;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->keywords[i] = "options";
    cmcf->values[i] = (const char *) p;

    if (options) {
        p = ngx_sprintf(p, "%s ", options);
    }

    p = ngx_sprintf(p, "-c statement_timeout=%M", cmcf->server_timeout);
    *p = '\0';

    return NGX_CONF_OK;
}


/*
 * Whether an encoding name is UTF8 the way PostgreSQL reads it: case and
 * characters other than letters and digits ignored ("UTF-8", "utf8"), or
 * its alias "unicode".
 */

static ngx_uint_t
ngx_http_corelog_pg_utf8_name(const char *name)
{
    u_char       c, clean[8], *p;
    const char  *s;

    p = clean;

    for (s = name; *s; s++) {
        c = ngx_tolower((u_char) *s);

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            if (p == clean + sizeof(clean) - 1) {
                return 0;
            }

            *p++ = c;
        }
    }

    *p = '\0';

    return ngx_strcmp(clean, "utf8") == 0 || ngx_strcmp(clean, "unicode") == 0;
}


/*
 * pc starts connecting: index numbers it in the debug log, handlers (with
 * data for them in pc->data) hear of it from now on, even before this
 * returns (a connection may fail at once).  NGX_ERROR: out of memory.
 */

ngx_int_t
ngx_http_corelog_pg_open(ngx_http_corelog_pg_conn_t *pc, ngx_uint_t index,
    ngx_http_corelog_main_conf_t *cmcf,
    const ngx_http_corelog_pg_handlers_t *handlers, void *data,
    ngx_log_t *log)
{
    pc->index = index;
    pc->conf = cmcf;
    pc->handlers = handlers;
    pc->data = data;

    pc->log = *log;
    pc->backoff.handler = ngx_http_corelog_pg_backoff_handler;
    pc->backoff.data = pc;
    pc->backoff.log = log;
    pc->backoff.cancelable = 1;

    if (ngx_http_corelog_resolve_init(&pc->resolve, cmcf, &pc->log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_corelog_pg_connect(pc);

    return NGX_OK;
}


/*
 * With nginx's resolver, the host names are resolved again first (the
 * addresses last known serve when that fails); then libpq connects.
 */

static void
ngx_http_corelog_pg_connect(ngx_http_corelog_pg_conn_t *pc)
{
    pc->log.action = "resolving the PostgreSQL host names";

    if (ngx_http_corelog_resolve_start(&pc->resolve,
                                       ngx_http_corelog_pg_resolved, pc)
        == NGX_AGAIN)
    {
        ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_CONNECTING);
        return;
    }

    ngx_http_corelog_pg_start(pc);
}


static void
ngx_http_corelog_pg_resolved(ngx_http_corelog_resolve_t *rs)
{
    ngx_http_corelog_pg_start(rs->data);
}


static void
ngx_http_corelog_pg_start(ngx_http_corelog_pg_conn_t *pc)
{
    ngx_str_t                      msg;
    ngx_http_corelog_main_conf_t  *cmcf;
    u_char                         text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    cmcf = pc->conf;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog pg #%ui: connecting", pc->index);

    pc->log.action = "connecting to PostgreSQL";
    pc->conn = PQconnectStartParams(cmcf->keywords,
                                    ngx_http_corelog_resolve_values(
                                                              &pc->resolve),
                                    0);

    if (pc->conn == NULL) {
        ngx_log_error(NGX_LOG_CRIT, &pc->log, 0,
                      "corelog: PQconnectStartParams() failed: out of memory");
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (PQstatus(pc->conn) == CONNECTION_BAD) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: could not connect to PostgreSQL: %V%s", &msg,
                      ngx_http_corelog_pg_hint(pc));
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    (void) PQsetNoticeReceiver(pc->conn, ngx_http_corelog_pg_notice, pc);

    if (PQsetnonblocking(pc->conn, 1) == -1) {
        ngx_log_error(NGX_LOG_CRIT, &pc->log, 0,
                      "corelog: PQsetnonblocking() failed");
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_CONNECTING);
    pc->poll = PGRES_POLLING_WRITING;

    if (ngx_http_corelog_pg_wrap(pc) != NGX_OK
        || ngx_http_corelog_pg_events(pc, 0, 1) != NGX_OK)
    {
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    ngx_add_timer(pc->c->read, cmcf->connect_timeout);
}


static void
ngx_http_corelog_pg_enter(ngx_http_corelog_pg_conn_t *pc, ngx_uint_t state)
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog pg #%ui: %s -> %s", pc->index,
                   ngx_http_corelog_pg_states[pc->state],
                   ngx_http_corelog_pg_states[state]);

    ngx_http_corelog_stats_conn(pc->conf->worker, pc->state, state);

    pc->state = state;
}


static ngx_int_t
ngx_http_corelog_pg_wrap(ngx_http_corelog_pg_conn_t *pc)
{
    int                fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->conn);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: PostgreSQL connection has no socket");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, &pc->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    /* libpq owns the socket: nginx must neither close it nor unregister it */

    c->shared = 1;
    c->data = pc;
    c->log = &pc->log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->read->handler = ngx_http_corelog_pg_read_handler;
    c->write->handler = ngx_http_corelog_pg_write_handler;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    /*
     * The connect timer does not hold a graceful shutdown or reload: with
     * nothing in flight, an unanswered connect is no reason to stay.
     */

    c->read->cancelable = 1;

    pc->log.connection = c->number;
    pc->log.action = "connecting to PostgreSQL";
    pc->c = c;

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_pg_events(ngx_http_corelog_pg_conn_t *pc, ngx_uint_t read,
    ngx_uint_t write)
{
    ngx_event_t  *rev, *wev;

    rev = pc->c->read;
    wev = pc->c->write;

    /* level-triggered: libpq may leave data in the socket */

    if (read && !rev->active) {
        if (ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (!read && rev->active) {
        if (ngx_del_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (write && !wev->active) {
        if (ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (!write && wev->active) {
        if (ngx_del_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_corelog_pg_poll(ngx_http_corelog_pg_conn_t *pc)
{
    ngx_str_t       msg;
    ngx_msec_t      timer;
    ConnStatusType  status;
    u_char          text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    pc->poll = PQconnectPoll(pc->conn);
    status = PQstatus(pc->conn);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog pg #%ui: poll %d status %d",
                   pc->index, pc->poll, status);

    if (pc->poll == PGRES_POLLING_FAILED) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: could not connect to PostgreSQL: %V%s", &msg,
                      ngx_http_corelog_pg_hint(pc));
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    /*
     * A new connect() (the next host of a multi-host conninfo, a retry
     * without SSL) may have replaced the socket, even under the same number:
     * the old one is closed, and so gone from epoll.  Wrap the new one.
     */

    if (PQsocket(pc->conn) != pc->c->fd || status == CONNECTION_STARTED) {
        timer = pc->c->read->timer_set
                ? pc->c->read->timer.key - ngx_current_msec : 0;

        ngx_close_connection(pc->c);
        pc->c = NULL;

        if (ngx_http_corelog_pg_wrap(pc) != NGX_OK) {
            ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
            return;
        }

        ngx_add_timer(pc->c->read, (ngx_msec_int_t) timer > 0 ? timer : 1);
    }

    if (pc->poll == PGRES_POLLING_OK) {
        ngx_http_corelog_pg_connected(pc);
        return;
    }

    if (ngx_http_corelog_pg_events(pc, pc->poll == PGRES_POLLING_READING,
                                   pc->poll == PGRES_POLLING_WRITING)
        != NGX_OK)
    {
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


static void
ngx_http_corelog_pg_connected(ngx_http_corelog_pg_conn_t *pc)
{
    const char  *encoding;

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    /*
     * A database of another encoding cannot store every text the routes
     * accept (or, SQL_ASCII, checks none of it): no write goes there.
     */

    encoding = PQparameterStatus(pc->conn, "server_encoding");

    if (encoding == NULL || ngx_strcmp(encoding, "UTF8") != 0) {
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: the database's encoding is %s, not UTF8: "
                      "no write goes to it",
                      encoding ? encoding : "unknown");
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (ngx_http_corelog_pg_events(pc, 1, 0) != NGX_OK) {
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    /* a statement's timer holds a shutdown: its writes await the answer */

    pc->c->read->cancelable = 0;

    /*
     * Not yet a success: a pooler accepts the connection while its server
     * is down, and closes it at the first statement.  The backoff and the
     * failures go on until a statement is answered (ngx_http_corelog_pg_done).
     */

    ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_IDLE);
    pc->log.action = "idle";

    ngx_http_corelog_stats_count(pc->conf->worker,
                                 NGX_HTTP_CORELOG_STATS_CONNECTS);

    if (pc->connected) {
        ngx_http_corelog_stats_count(pc->conf->worker,
                                     NGX_HTTP_CORELOG_STATS_RECONNECTS);
    }

    pc->connected = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog pg #%ui: connected, server %d",
                   pc->index, PQserverVersion(pc->conn));

    pc->handlers->ready(pc);
}


static void
ngx_http_corelog_pg_read_handler(ngx_event_t *rev)
{
    ngx_connection_t            *c;
    ngx_http_corelog_pg_conn_t  *pc;

    c = rev->data;
    pc = c->data;

    if (c->close) {

        /*
         * worker_shutdown_timeout: nginx closes every connection.  The
         * statement in flight has an unknown outcome (504), queued writes
         * never went (503).
         */

        ngx_log_error(NGX_LOG_INFO, &pc->log, 0,
                      "corelog: closing the PostgreSQL connection "
                      "at shutdown");
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_GATEWAY_TIME_OUT);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;

        if (pc->state == NGX_HTTP_CORELOG_PG_BUSY) {
            ngx_http_corelog_stats_count(pc->conf->worker,
                                         NGX_HTTP_CORELOG_STATS_TIMEOUTS);

            ngx_log_error(NGX_LOG_ERR, &pc->log, NGX_ETIMEDOUT,
                          "corelog: statement unanswered after %M ms, "
                          "closing the connection: its outcome is unknown",
                          pc->conf->statement_timeout);
            ngx_http_corelog_pg_lost(pc, NGX_HTTP_GATEWAY_TIME_OUT);

        } else {
            ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc),
                          &pc->log, NGX_ETIMEDOUT,
                          "corelog: connecting to PostgreSQL timed out");
            ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        }

        return;
    }

    switch (pc->state) {

    case NGX_HTTP_CORELOG_PG_CONNECTING:
        if (pc->poll == PGRES_POLLING_READING) {
            ngx_http_corelog_pg_poll(pc);
        }
        return;

    case NGX_HTTP_CORELOG_PG_IDLE:
        ngx_http_corelog_pg_idle_input(pc);
        return;

    case NGX_HTTP_CORELOG_PG_BUSY:
        ngx_http_corelog_pg_recv(pc);
        return;
    }
}


static void
ngx_http_corelog_pg_write_handler(ngx_event_t *wev)
{
    ngx_connection_t            *c;
    ngx_http_corelog_pg_conn_t  *pc;

    c = wev->data;
    pc = c->data;

    switch (pc->state) {

    case NGX_HTTP_CORELOG_PG_CONNECTING:
        if (pc->poll == PGRES_POLLING_WRITING) {
            ngx_http_corelog_pg_poll(pc);
        }
        return;

    case NGX_HTTP_CORELOG_PG_BUSY:
        if (pc->flushing) {
            (void) ngx_http_corelog_pg_flush(pc);
        }
        return;

    default:
        /* a stale write event: stop asking for it */
        (void) ngx_http_corelog_pg_events(pc, 1, 0);
        return;
    }
}


/*
 * Sends stmt as a protocol-level prepared statement (no session state
 * beyond it, so PgBouncer in transaction mode with prepared statement
 * support works).  On a connection that has not prepared it yet, the Parse
 * goes first, and the statement once the Parse is done.  The parameters
 * come from the params handler as the statement goes.  NGX_OK: sent;
 * NGX_DECLINED: nothing was left to send, pc is idle; NGX_ERROR: the
 * handlers were told (done or down).
 */

ngx_int_t
ngx_http_corelog_pg_send(ngx_http_corelog_pg_conn_t *pc,
    const ngx_http_corelog_stmt_t *stmt)
{
    int                         sent;
    ngx_int_t                   rc;
    ngx_str_t                   msg;
    ngx_uint_t                  nparams, prepared;
    ngx_http_corelog_params_t   params;
    u_char                      text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    prepared = ngx_http_corelog_pg_is_prepared(pc, stmt);

    if (pc->conf->prepare
        && !prepared
        && pc->nprepared < NGX_HTTP_CORELOG_PG_PREPARED)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                       "corelog pg #%ui: prepare \"%s\"",
                       pc->index, stmt->name);

        /* the statement's parameter types are its SQL's casts */

        pc->log.action = "preparing a statement";
        pc->preparing = stmt;
        sent = PQsendPrepare(pc->conn, stmt->name, stmt->sql, 0, NULL);

    } else {
        rc = pc->handlers->params(pc, &nparams, &params);

        if (rc == NGX_DECLINED) {
            return NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            pc->handlers->done(pc, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL,
                               NULL);
            return NGX_ERROR;
        }

        pc->log.action = "running a statement";

        if (prepared) {
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                           "corelog pg #%ui: execute \"%s\", %ui params",
                           pc->index, stmt->name, nparams);

            sent = PQsendQueryPrepared(pc->conn, stmt->name, (int) nparams,
                                       params.values, params.lengths,
                                       params.formats, 0);

        } else {
            /* unnamed: for poolers without prepared statements */

            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                           "corelog pg #%ui: run \"%s\", %ui params",
                           pc->index, stmt->name, nparams);

            sent = PQsendQueryParams(pc->conn, stmt->sql, (int) nparams,
                                     NULL, params.values, params.lengths,
                                     params.formats, 0);
        }
    }

    ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_BUSY);

    if (!sent) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: could not send \"%s\": %V", stmt->name, &msg);
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return NGX_ERROR;
    }

    ngx_add_timer(pc->c->read, pc->conf->statement_timeout);

    return ngx_http_corelog_pg_flush(pc);
}


/* whether stmt is prepared on pc: the first statements used on it are */

static ngx_uint_t
ngx_http_corelog_pg_is_prepared(ngx_http_corelog_pg_conn_t *pc,
    const ngx_http_corelog_stmt_t *stmt)
{
    ngx_uint_t  i;

    for (i = 0; i < pc->nprepared; i++) {
        if (pc->prepared[i] == stmt) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_corelog_pg_flush(ngx_http_corelog_pg_conn_t *pc)
{
    int        rc;
    ngx_str_t  msg;
    u_char     text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    rc = PQflush(pc->conn);

    if (rc == -1) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: could not send to PostgreSQL: %V", &msg);
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return NGX_ERROR;
    }

    pc->flushing = (rc == 1);

    if (ngx_http_corelog_pg_events(pc, 1, pc->flushing) != NGX_OK) {
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* input on an idle connection: a notice, a NOTIFY, or the server leaving */

static void
ngx_http_corelog_pg_idle_input(ngx_http_corelog_pg_conn_t *pc)
{
    ngx_str_t  msg;
    PGnotify  *notify;
    PGresult  *res;
    u_char     text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    if (!PQconsumeInput(pc->conn) || PQstatus(pc->conn) == CONNECTION_BAD) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: PostgreSQL closed an idle connection: %V",
                      &msg);
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    while ((notify = PQnotifies(pc->conn)) != NULL) {
        PQfreemem(notify);
    }

    while (!PQisBusy(pc->conn)) {
        res = PQgetResult(pc->conn);
        if (res == NULL) {
            break;
        }

        ngx_log_error(NGX_LOG_WARN, &pc->log, 0,
                      "corelog: unexpected result on an idle connection");
        PQclear(res);
    }
}


static void
ngx_http_corelog_pg_recv(ngx_http_corelog_pg_conn_t *pc)
{
    ngx_str_t  msg;
    PGresult  *res;
    u_char     text[NGX_HTTP_CORELOG_PG_TEXT_LEN];

    if (!PQconsumeInput(pc->conn)) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: PostgreSQL connection lost: %V", &msg);
        ngx_http_corelog_pg_lost(pc, ngx_http_corelog_pg_outcome(pc));
        return;
    }

    if (pc->flushing && ngx_http_corelog_pg_flush(pc) != NGX_OK) {
        return;
    }

    while (!PQisBusy(pc->conn)) {
        res = PQgetResult(pc->conn);

        if (res == NULL) {
            /* ReadyForQuery: the statement's transaction has ended */
            ngx_http_corelog_pg_done(pc);
            return;
        }

        switch (PQresultStatus(res)) {

        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
            if (pc->res == NULL) {
                pc->res = res;
                continue;
            }
            break;

        default:
            if (pc->error == NULL) {
                pc->error = res;
                continue;
            }
            break;
        }

        PQclear(res);
    }

    if (PQstatus(pc->conn) == CONNECTION_BAD) {
        msg = ngx_http_corelog_pg_message(PQerrorMessage(pc->conn), text,
                                          sizeof(text));
        ngx_log_error(NGX_HTTP_CORELOG_PG_LEVEL(pc), &pc->log, 0,
                      "corelog: PostgreSQL connection lost: %V", &msg);
        ngx_http_corelog_pg_lost(pc, ngx_http_corelog_pg_outcome(pc));
    }
}


static void
ngx_http_corelog_pg_done(ngx_http_corelog_pg_conn_t *pc)
{
    char       *sqlstate;
    ngx_int_t   rc;
    PGresult   *res, *error;

    if (pc->c->read->timer_set) {
        ngx_del_timer(pc->c->read);
    }

    /* the server answered a statement to its end: the connection works */

    if (PQtransactionStatus(pc->conn) == PQTRANS_IDLE) {
        pc->delay = 0;
        pc->failures = 0;
    }

    res = pc->res;
    error = pc->error;
    pc->res = NULL;
    pc->error = NULL;

    if (pc->preparing) {
        ngx_http_corelog_pg_prepared(pc, res, error);
        return;
    }

    if (error) {
        rc = ngx_http_corelog_pg_status(error);
        ngx_http_corelog_pg_result_error(pc, error, "statement");

        sqlstate = PQresultErrorField(error, PG_DIAG_SQLSTATE);

        if (sqlstate && ngx_strcmp(sqlstate, "57014") == 0) {
            /* PostgreSQL's statement_timeout (or a cancel) ended it */
            ngx_http_corelog_stats_count(pc->conf->worker,
                                         NGX_HTTP_CORELOG_STATS_TIMEOUTS);
        }

        if (ngx_http_corelog_pg_unusable(pc, error)) {
            ngx_http_corelog_pg_lost(pc, rc);
            goto done;
        }

    } else if (res == NULL) {
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: statement returned no result");
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else {
        rc = NGX_OK;
    }

    if (PQtransactionStatus(pc->conn) != PQTRANS_IDLE) {

        /* no COMMIT was seen: no write of this statement may be answered */

        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: connection left in transaction state %d, "
                      "closing it", PQtransactionStatus(pc->conn));

        if (rc == NGX_OK) {
            rc = PQstatus(pc->conn) == CONNECTION_BAD
                 ? NGX_HTTP_GATEWAY_TIME_OUT           /* commit unknown */
                 : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_corelog_pg_lost(pc, rc);

    } else {
        ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_IDLE);
        pc->log.action = "idle";

        pc->handlers->done(pc, rc, rc == NGX_OK ? res : NULL,
                           error ? PQresultErrorField(error, PG_DIAG_SQLSTATE)
                                 : NULL);
    }

done:

    if (res) {
        PQclear(res);
    }

    if (error) {
        PQclear(error);
    }

    if (pc->state == NGX_HTTP_CORELOG_PG_IDLE) {
        pc->handlers->ready(pc);
    }
}


/*
 * Whether a failed statement says the connection cannot write: it is on a
 * read-only server (a standby, or a primary demoted by a failover), or its
 * prepared statements are gone (26000) or were made by another client
 * (42P05): a pooler gave it another server.  Another connection may land
 * on a server that can.
 */

static ngx_uint_t
ngx_http_corelog_pg_unusable(ngx_http_corelog_pg_conn_t *pc, PGresult *res)
{
    char       *state;
    ngx_str_t   note;
    u_char      buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state == NULL
        || (ngx_strcmp(state, "25006") != 0 && ngx_strcmp(state, "26000") != 0
            && ngx_strcmp(state, "42P05") != 0))
    {
        return 0;
    }

    /* each new connection may land there again: at most one line a second */

    if (!ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_UNUSABLE, &note, buf)) {
        return 1;
    }

    if (state[0] == '2' && state[1] == '5') {
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: the server is read-only, closing the "
                      "connection (to find the primary after a failover, "
                      "list every host with target_session_attrs=read-write "
                      "in the conninfo)%V", &note);

    } else {
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: the connection's prepared statements are "
                      "not its own (SQLSTATE %s), closing it (behind a "
                      "pooler in transaction mode, set "
                      "corelog_prepared_statements off)%V", state, &note);
    }

    return 1;
}


/* the Parse of pc->preparing is done: send the statement itself */

static void
ngx_http_corelog_pg_prepared(ngx_http_corelog_pg_conn_t *pc, PGresult *res,
    PGresult *error)
{
    ngx_int_t                 rc;
    const ngx_http_corelog_stmt_t *stmt;

    stmt = pc->preparing;
    pc->preparing = NULL;
    ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_IDLE);
    pc->log.action = "idle";

    rc = NGX_OK;

    if (error) {
        rc = ngx_http_corelog_pg_status(error);
        ngx_http_corelog_pg_result_error(pc, error, "preparing");

        if (ngx_http_corelog_pg_unusable(pc, error)) {
            PQclear(error);

            if (res) {
                PQclear(res);
            }

            ngx_http_corelog_pg_lost(pc, rc);
            return;
        }

        PQclear(error);

    } else {
        pc->prepared[pc->nprepared++] = stmt;
    }

    if (res) {
        PQclear(res);
    }

    if (PQtransactionStatus(pc->conn) != PQTRANS_IDLE) {
        ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                      "corelog: connection in transaction state %d after "
                      "preparing \"%s\", closing it",
                      PQtransactionStatus(pc->conn), stmt->name);
        ngx_http_corelog_pg_lost(pc, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    if (rc != NGX_OK) {
        pc->handlers->done(pc, rc, NULL, NULL);

    } else {
        (void) ngx_http_corelog_pg_send(pc, stmt);
    }

    /* the Parse failed, or every request of the statement went away */

    if (pc->state == NGX_HTTP_CORELOG_PG_IDLE) {
        pc->handlers->ready(pc);
    }
}


static ngx_int_t
ngx_http_corelog_pg_status(PGresult *res)
{
    char  *state;

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /*
     * Rolled back, and a retry may succeed: connection exceptions,
     * shutdown, resources, serialization, deadlock, a read-only server, a
     * prepared statement gone or another's, and a statement cancelled
     * (statement_timeout, or an operator's pg_cancel_backend()).
     */

    if (ngx_strncmp(state, "08", 2) == 0
        || ngx_strncmp(state, "57P", 3) == 0
        || ngx_strncmp(state, "53", 2) == 0
        || ngx_strcmp(state, "40001") == 0
        || ngx_strcmp(state, "40P01") == 0
        || ngx_strcmp(state, "25006") == 0
        || ngx_strcmp(state, "26000") == 0
        || ngx_strcmp(state, "42P05") == 0
        || ngx_strcmp(state, "57014") == 0)
    {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * The connection broke with a statement in flight.  Unless PostgreSQL said
 * it ended the statement (a FATAL error: rolled back), or it was a Parse
 * (which writes nothing), it may have committed: its outcome is unknown.
 */

static ngx_int_t
ngx_http_corelog_pg_outcome(ngx_http_corelog_pg_conn_t *pc)
{
    if (pc->preparing) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (pc->error) {
        return ngx_http_corelog_pg_status(pc->error);
    }

    return NGX_HTTP_GATEWAY_TIME_OUT;
}


/*
 * What to do about a failed connection attempt, when libpq's message says:
 * PgBouncer refuses startup options it does not know, such as the
 * statement_timeout the module sends with corelog_prepared_statements on.
 */

static const char *
ngx_http_corelog_pg_hint(ngx_http_corelog_pg_conn_t *pc)
{
    char  *msg;

    msg = PQerrorMessage(pc->conn);

    if (msg && ngx_strstr(msg, "unsupported startup parameter")) {
        return " (a pooler that refuses startup options: set "
               "corelog_prepared_statements off)";
    }

    return "";
}


/* the connection is gone or unusable: fail its statement, reconnect later */

static void
ngx_http_corelog_pg_lost(ngx_http_corelog_pg_conn_t *pc, ngx_int_t rc)
{
    if (pc->state != NGX_HTTP_CORELOG_PG_IDLE
        && pc->state != NGX_HTTP_CORELOG_PG_BUSY
        && !ngx_exiting)
    {
        ngx_http_corelog_stats_count(pc->conf->worker,
                                     NGX_HTTP_CORELOG_STATS_CONNECT_FAILURES);
    }

    ngx_http_corelog_pg_close(pc);
    ngx_http_corelog_pg_retry(pc);

    pc->handlers->down(pc, rc);
}


/* also at worker exit: no handler is called */

void
ngx_http_corelog_pg_close(ngx_http_corelog_pg_conn_t *pc)
{
    if (pc->backoff.timer_set) {
        ngx_del_timer(&pc->backoff);
    }

    ngx_http_corelog_resolve_cancel(&pc->resolve);

    ngx_http_corelog_pg_enter(pc, NGX_HTTP_CORELOG_PG_DOWN);
    pc->flushing = 0;
    pc->nprepared = 0;
    pc->preparing = NULL;

    if (pc->c) {
        ngx_close_connection(pc->c);
        pc->c = NULL;
    }

    if (pc->conn) {
        PQfinish(pc->conn);
        pc->conn = NULL;
    }

    if (pc->res) {
        PQclear(pc->res);
        pc->res = NULL;
    }

    if (pc->error) {
        PQclear(pc->error);
        pc->error = NULL;
    }

    pc->log.action = NULL;
}


static void
ngx_http_corelog_pg_retry(ngx_http_corelog_pg_conn_t *pc)
{
    pc->failures++;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (pc->delay == 0) {
        pc->delay = NGX_HTTP_CORELOG_PG_BACKOFF_MIN;

    } else {
        pc->delay = ngx_min(pc->delay * 2, NGX_HTTP_CORELOG_PG_BACKOFF_MAX);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &pc->log, 0,
                   "corelog pg #%ui: reconnect in %M ms", pc->index, pc->delay);

    if (!pc->backoff.timer_set) {
        ngx_add_timer(&pc->backoff, pc->delay);
    }
}


static void
ngx_http_corelog_pg_backoff_handler(ngx_event_t *ev)
{
    ngx_http_corelog_pg_conn_t  *pc;

    pc = ev->data;

    if (pc->state == NGX_HTTP_CORELOG_PG_DOWN) {
        ngx_http_corelog_pg_connect(pc);
    }
}


/*
 * A notice or warning of the server: its severity, SQLSTATE and primary
 * message, on one line; never its DETAIL, which may quote row data.
 */

static void
ngx_http_corelog_pg_notice(void *arg, const PGresult *res)
{
    ngx_http_corelog_pg_conn_t  *pc = arg;

    char       *severity, *state;
    ngx_str_t   msg, note;
    u_char      text[NGX_HTTP_CORELOG_PG_TEXT_LEN];
    u_char      buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    /* a trigger's notice may come with every row: at most one a second */

    if (!ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_NOTICE, &note, buf)) {
        return;
    }

    severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    msg = ngx_http_corelog_pg_message(
                          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
                          text, sizeof(text));

    ngx_log_error(NGX_LOG_NOTICE, &pc->log, 0,
                  "corelog: PostgreSQL says: %s: %V (SQLSTATE %s)%V",
                  severity ? severity : "NOTICE", &msg,
                  state ? state : "none", &note);
}


/*
 * A failed statement: its SQLSTATE, primary message, table and
 * constraint, on one line; never the DETAIL ("Failing row contains ...")
 * or the statement, which carry the clients' data.  At most one a second.
 */

static void
ngx_http_corelog_pg_result_error(ngx_http_corelog_pg_conn_t *pc,
    PGresult *res, const char *what)
{
    char       *state, *table, *constraint;
    ngx_str_t   msg, note;
    u_char      text[NGX_HTTP_CORELOG_PG_TEXT_LEN];
    u_char      buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    if (!ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_STATEMENT, &note, buf)) {
        return;
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
    constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

    msg = ngx_http_corelog_pg_message(
                          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
                          text, sizeof(text));

    if (msg.len == 0) {
        msg = ngx_http_corelog_pg_message(PQresultErrorMessage(res), text,
                                          sizeof(text));
    }

    ngx_log_error(NGX_LOG_ERR, &pc->log, 0,
                  "corelog: %s failed with SQLSTATE %s: %V%s%s%s%s%s%V",
                  what, state ? state : "none", &msg,
                  table ? " (table " : "", table ? table : "",
                  constraint ? ", constraint " : "",
                  constraint ? constraint : "", table ? ")" : "", &note);
}


/* a message of libpq or the server as one line of the error log */

static ngx_str_t
ngx_http_corelog_pg_message(const char *msg, u_char *buf, size_t size)
{
    ngx_str_t  s;

    s.data = buf;
    s.len = msg ? ngx_http_corelog_log_text(buf, buf + size, (u_char *) msg,
                                            ngx_strlen(msg))
                  - buf
                : 0;

    return s;
}
