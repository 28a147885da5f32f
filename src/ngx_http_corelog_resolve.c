
/*
 * Copyright (C) corelog authors
 *
 * The host names of the conninfo.  libpq would resolve a name itself, and
 * block, inside PQconnectPoll(): it is given addresses instead, one host /
 * hostaddr / port entry per address of a name, so that it tries them all,
 * in order (the name stays in host, for TLS verification).  The addresses
 * are found at configuration time, with getaddrinfo() in the master.  With
 * nginx's "resolver" at the http level, each connection also resolves the
 * names again before each connect, with nginx's asynchronous resolver, and
 * keeps the addresses it last knew when that fails.  Unix sockets and IP
 * addresses are never resolved.  Nothing here talks to libpq.
 */


#include "ngx_http_corelog.h"

#include <netdb.h>
#include <sys/un.h>


/* a DNS name: at most 253 characters (RFC 1035, without the final dot) */
#define NGX_HTTP_CORELOG_RESOLVE_NAME_MAX  253

/* the addresses of a name in a log line: "a, b, ..." */
#define NGX_HTTP_CORELOG_RESOLVE_TEXT_LEN                                    \
    (NGX_HTTP_CORELOG_RESOLVE_ADDRS * (NGX_INET6_ADDRSTRLEN + 2))


static ngx_int_t ngx_http_corelog_resolve_split(ngx_conf_t *cf,
    ngx_http_corelog_hosts_t *hs, const char *host, const char *port);
static char *ngx_http_corelog_resolve_entry(ngx_conf_t *cf,
    ngx_http_corelog_host_t *h, ngx_uint_t resolve);
static char *ngx_http_corelog_resolve_getaddrinfo(ngx_conf_t *cf,
    ngx_http_corelog_hosts_t *hs, ngx_uint_t i);
static ngx_uint_t ngx_http_corelog_resolve_add(ngx_http_corelog_addr_t *addrs,
    ngx_uint_t n, ngx_uint_t room, struct sockaddr *sa, socklen_t socklen);
static void ngx_http_corelog_resolve_lists(ngx_http_corelog_hosts_t *hs,
    ngx_uint_t *naddrs, ngx_http_corelog_addr_t *addrs, u_char *host,
    u_char *hostaddr, u_char *port);
static ngx_int_t ngx_http_corelog_resolve_next(ngx_http_corelog_resolve_t *rs);
static void ngx_http_corelog_resolve_handler(ngx_resolver_ctx_t *ctx);
static void ngx_http_corelog_resolve_found(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_host_t *h, ngx_resolver_ctx_t *ctx);
static void ngx_http_corelog_resolve_failed(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_host_t *h, const char *reason);
static ngx_uint_t ngx_http_corelog_resolve_same(ngx_http_corelog_addr_t *a,
    ngx_uint_t na, ngx_http_corelog_addr_t *b, ngx_uint_t nb);


/*
 * Configuration time.  *host and *port are the conninfo's lists (port may
 * be NULL); *hostaddr NULL, or the list the conninfo gave: then the host
 * list is only checked, and nothing is resolved, now or later.  Otherwise
 * every name is resolved to all its addresses, and *host, *port (when it
 * is a list) and *hostaddr (NULL when no entry has an address: sockets
 * only) become the expanded lists.
 */

char *
ngx_http_corelog_resolve_conf(ngx_conf_t *cf, ngx_http_corelog_hosts_t *hs,
    const char **host, const char **port, const char **hostaddr)
{
    u_char      *h, *a, *p;
    size_t       len;
    ngx_uint_t   i, resolve, room;

    resolve = (*hostaddr == NULL);

    if (ngx_http_corelog_resolve_split(cf, hs, *host, resolve ? *port : NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    room = 0;

    for (i = 0; i < hs->nhosts; i++) {
        if (ngx_http_corelog_resolve_entry(cf, &hs->hosts[i], resolve)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        hs->hosts[i].offset = room;
        room += hs->hosts[i].room;
    }

    if (!resolve) {
        hs->hosts = NULL;
        hs->nhosts = 0;
        return NGX_CONF_OK;
    }

    hs->room = room;
    hs->naddrs = ngx_pcalloc(cf->pool, hs->nhosts * sizeof(ngx_uint_t));
    hs->addrs = ngx_pcalloc(cf->pool,
                            (room + 1) * sizeof(ngx_http_corelog_addr_t));

    if (hs->naddrs == NULL || hs->addrs == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the longest lists: a name may get NGX_HTTP_CORELOG_RESOLVE_ADDRS */

    hs->host_size = 1;
    len = 1;

    for (i = 0; i < hs->nhosts; i++) {
        room = ngx_max(hs->hosts[i].room, 1);

        hs->host_size += room * (hs->hosts[i].name.len + 1);
        len += room * (hs->hosts[i].port.len + 1);

        if (hs->hosts[i].room
            && ngx_http_corelog_resolve_getaddrinfo(cf, hs, i) != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (hs->hosts[i].resolve) {
            hs->nnames++;
        }
    }

    hs->port_size = (*port && ngx_strchr(*port, ',')) ? len : 0;

    h = ngx_pnalloc(cf->pool, hs->host_size);
    a = ngx_pnalloc(cf->pool, (hs->room + 1) * (NGX_INET6_ADDRSTRLEN + 1));
    p = hs->port_size ? ngx_pnalloc(cf->pool, hs->port_size) : NULL;

    if (h == NULL || a == NULL || (hs->port_size && p == NULL)) {
        return NGX_CONF_ERROR;
    }

    ngx_http_corelog_resolve_lists(hs, hs->naddrs, hs->addrs, h, a, p);

    *host = (const char *) h;
    *hostaddr = hs->room ? (const char *) a : NULL;

    if (p) {
        *port = (const char *) p;
    }

    return NGX_CONF_OK;
}


/* the entries of the host list, each with its port if port is a list */

static ngx_int_t
ngx_http_corelog_resolve_split(ngx_conf_t *cf, ngx_http_corelog_hosts_t *hs,
    const char *host, const char *port)
{
    u_char                   *s, *last, *ps, *plast;
    ngx_uint_t                n, nports;
    ngx_http_corelog_host_t  *h;

    n = 1;

    for (s = (u_char *) host; *s; s++) {
        n += (*s == ',');
    }

    nports = 0;

    if (port && ngx_strchr(port, ',')) {
        nports = 1;

        for (s = (u_char *) port; *s; s++) {
            nports += (*s == ',');
        }

        if (nports != n) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: conninfo has %ui hosts but %ui "
                               "ports", n, nports);
            return NGX_ERROR;
        }
    }

    hs->hosts = ngx_pcalloc(cf->pool, n * sizeof(ngx_http_corelog_host_t));
    if (hs->hosts == NULL) {
        return NGX_ERROR;
    }

    hs->nhosts = n;

    s = (u_char *) host;
    last = s + ngx_strlen(host);
    ps = (u_char *) port;
    plast = nports ? ps + ngx_strlen(port) : NULL;

    for (h = hs->hosts; h < hs->hosts + n; h++) {
        h->name.data = s;

        while (s < last && *s != ',') {
            s++;
        }

        h->name.len = s - h->name.data;
        s++;

        if (nports) {
            h->port.data = ps;

            while (ps < plast && *ps != ',') {
                ps++;
            }

            h->port.len = ps - h->port.data;
            ps++;
        }
    }

    return NGX_OK;
}


/*
 * An entry: a unix-socket directory ("/...", "@..." or empty: no address)
 * must fit a socket address with libpq's file name; an IP address has one
 * address, a name up to NGX_HTTP_CORELOG_RESOLVE_ADDRS (and is resolved
 * again in the workers).  Nothing has addresses unless resolve is set.
 */

static char *
ngx_http_corelog_resolve_entry(ngx_conf_t *cf, ngx_http_corelog_host_t *h,
    ngx_uint_t resolve)
{
#if (NGX_HAVE_INET6)
    u_char  buf[sizeof(struct in6_addr)];
#endif

    if (h->name.len == 0 || h->name.data[0] == '@') {
        return NGX_CONF_OK;
    }

    if (h->name.data[0] == '/') {

        /* libpq adds "/.s.PGSQL.<port>": it must fit sun_path */

        if (h->name.len + sizeof("/.s.PGSQL.65535")
            > sizeof(((struct sockaddr_un *) 0)->sun_path))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: unix-socket directory \"%V\" "
                               "in conninfo is too long for a socket "
                               "address (at most %uz characters)",
                               &h->name,
                               sizeof(((struct sockaddr_un *) 0)->sun_path)
                               - sizeof("/.s.PGSQL.65535"));
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (!resolve) {
        return NGX_CONF_OK;
    }

    if (h->name.len > NGX_HTTP_CORELOG_RESOLVE_NAME_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: host name in conninfo is "
                           "longer than %d characters",
                           NGX_HTTP_CORELOG_RESOLVE_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    /* an IPv6 address with a zone ("fe80::1%eth0") is no name either */

    if (ngx_inet_addr(h->name.data, h->name.len) != INADDR_NONE
#if (NGX_HAVE_INET6)
        || ngx_inet6_addr(h->name.data, h->name.len, buf) == NGX_OK
#endif
        || ngx_strlchr(h->name.data, h->name.data + h->name.len, ':'))
    {
        h->room = 1;
        return NGX_CONF_OK;
    }

    h->room = NGX_HTTP_CORELOG_RESOLVE_ADDRS;
    h->resolve = 1;

    return NGX_CONF_OK;
}


/* the addresses of host i, in the order getaddrinfo() gives them */

static char *
ngx_http_corelog_resolve_getaddrinfo(ngx_conf_t *cf,
    ngx_http_corelog_hosts_t *hs, ngx_uint_t i)
{
    int                       rc;
    ngx_uint_t                n, total;
    struct addrinfo           hints, *res, *ai;
    ngx_http_corelog_host_t  *h;
    u_char                    name[NGX_HTTP_CORELOG_RESOLVE_NAME_MAX + 1];

    h = &hs->hosts[i];

    ngx_memcpy(name, h->name.data, h->name.len);
    name[h->name.len] = '\0';

    ngx_memzero(&hints, sizeof(struct addrinfo));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    res = NULL;
    rc = getaddrinfo((char *) name, NULL, &hints, &res);

    if (rc != 0 || res == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: host \"%V\" in conninfo "
                           "not found: %s", &h->name,
                           rc ? gai_strerror(rc) : "no address");
        if (rc == 0) {
            freeaddrinfo(res);
        }
        return NGX_CONF_ERROR;
    }

    n = 0;
    total = 0;

    for (ai = res; ai; ai = ai->ai_next) {
        total++;
        n = ngx_http_corelog_resolve_add(hs->addrs + h->offset, n, h->room,
                                         ai->ai_addr, ai->ai_addrlen);
    }

    freeaddrinfo(res);

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: host \"%V\" in conninfo "
                           "not found: %s", &h->name, "no address");
        return NGX_CONF_ERROR;
    }

    if (h->resolve && total > n && n == h->room) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "corelog: host \"%V\" in conninfo has more than "
                           "%d addresses, the first %d are used",
                           &h->name, NGX_HTTP_CORELOG_RESOLVE_ADDRS,
                           NGX_HTTP_CORELOG_RESOLVE_ADDRS);
    }

    hs->naddrs[i] = n;

    return NGX_CONF_OK;
}


/* adds an address to the n of addrs unless it is there or room is full */

static ngx_uint_t
ngx_http_corelog_resolve_add(ngx_http_corelog_addr_t *addrs, ngx_uint_t n,
    ngx_uint_t room, struct sockaddr *sa, socklen_t socklen)
{
    size_t      len;
    ngx_uint_t  i;
    u_char      text[NGX_SOCKADDR_STRLEN];

    if (n == room
        || (sa->sa_family != AF_INET
#if (NGX_HAVE_INET6)
            && sa->sa_family != AF_INET6
#endif
           ))
    {
        return n;
    }

    len = ngx_sock_ntop(sa, socklen, text, NGX_SOCKADDR_STRLEN, 0);

    if (len == 0 || len > NGX_INET6_ADDRSTRLEN) {
        return n;
    }

    for (i = 0; i < n; i++) {
        if (addrs[i].len == len && ngx_memcmp(addrs[i].data, text, len) == 0) {
            return n;
        }
    }

    addrs[n].len = (u_char) len;
    ngx_memcpy(addrs[n].data, text, len);

    return n + 1;
}


/*
 * The lists for libpq: an entry per address of an entry (one, with an
 * empty hostaddr, for a socket).  port is NULL when it is not a list.  A
 * name always has an address: libpq would resolve an empty one itself.
 */

static void
ngx_http_corelog_resolve_lists(ngx_http_corelog_hosts_t *hs,
    ngx_uint_t *naddrs, ngx_http_corelog_addr_t *addrs, u_char *host,
    u_char *hostaddr, u_char *port)
{
    ngx_uint_t                i, j, n;
    ngx_http_corelog_addr_t  *a;
    ngx_http_corelog_host_t  *h;

    for (i = 0; i < hs->nhosts; i++) {
        h = &hs->hosts[i];
        n = ngx_max(naddrs[i], 1);

        for (j = 0; j < n; j++) {
            if (i || j) {
                *host++ = ',';
                *hostaddr++ = ',';

                if (port) {
                    *port++ = ',';
                }
            }

            host = ngx_cpymem(host, h->name.data, h->name.len);

            if (naddrs[i]) {
                a = &addrs[h->offset + j];
                hostaddr = ngx_cpymem(hostaddr, a->data, a->len);
            }

            if (port) {
                port = ngx_cpymem(port, h->port.data, h->port.len);
            }
        }
    }

    *host = '\0';
    *hostaddr = '\0';

    if (port) {
        *port = '\0';
    }
}


/*
 * A worker's connection: with a resolver and names to resolve, its own
 * copy of the addresses and of the conninfo's values, whose host, hostaddr
 * and port become its lists.
 */

ngx_int_t
ngx_http_corelog_resolve_init(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_main_conf_t *cmcf, ngx_log_t *log)
{
    ngx_uint_t                 n;
    ngx_pool_t                *pool;
    ngx_http_corelog_hosts_t  *hs;

    rs->conf = cmcf;
    rs->log = log;

    hs = &cmcf->hosts;

    if (hs->resolver == NULL || hs->nnames == 0) {
        return NGX_OK;
    }

    pool = ngx_cycle->pool;

    for (n = 0; cmcf->keywords[n]; n++) { /* void */ }

    rs->values = ngx_palloc(pool, (n + 1) * sizeof(char *));
    rs->naddrs = ngx_palloc(pool, hs->nhosts * sizeof(ngx_uint_t));
    rs->failures = ngx_pcalloc(pool, hs->nhosts * sizeof(ngx_uint_t));
    rs->addrs = ngx_palloc(pool, hs->room * sizeof(ngx_http_corelog_addr_t));
    rs->host = ngx_pnalloc(pool, hs->host_size);
    rs->hostaddr = ngx_pnalloc(pool,
                               (hs->room + 1) * (NGX_INET6_ADDRSTRLEN + 1));

    if (rs->values == NULL || rs->naddrs == NULL || rs->failures == NULL
        || rs->addrs == NULL || rs->host == NULL || rs->hostaddr == NULL)
    {
        return NGX_ERROR;
    }

    if (hs->port_size) {
        rs->port = ngx_pnalloc(pool, hs->port_size);
        if (rs->port == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(rs->values, cmcf->values, (n + 1) * sizeof(char *));
    ngx_memcpy(rs->naddrs, hs->naddrs, hs->nhosts * sizeof(ngx_uint_t));
    ngx_memcpy(rs->addrs, hs->addrs,
               hs->room * sizeof(ngx_http_corelog_addr_t));

    rs->values[hs->host_slot] = (const char *) rs->host;
    rs->values[hs->hostaddr_slot] = (const char *) rs->hostaddr;

    if (rs->port) {
        rs->values[hs->port_slot] = (const char *) rs->port;
    }

    return NGX_OK;
}


/*
 * Resolves the names again: NGX_OK, done (or nothing to do); NGX_AGAIN,
 * handler is called when it is.  A name that does not resolve keeps the
 * addresses last known.
 */

ngx_int_t
ngx_http_corelog_resolve_start(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_resolve_handler_pt handler, void *data)
{
    if (rs->values == NULL) {
        return NGX_OK;
    }

    rs->handler = handler;
    rs->data = data;
    rs->next = 0;

    return ngx_http_corelog_resolve_next(rs);
}


/* the values for PQconnectStartParams(), with the addresses last known */

const char **
ngx_http_corelog_resolve_values(ngx_http_corelog_resolve_t *rs)
{
    if (rs->values == NULL) {
        return rs->conf->values;
    }

    ngx_http_corelog_resolve_lists(&rs->conf->hosts, rs->naddrs, rs->addrs,
                                   rs->host, rs->hostaddr, rs->port);

    return rs->values;
}


/* also at worker exit: the handler is not called */

void
ngx_http_corelog_resolve_cancel(ngx_http_corelog_resolve_t *rs)
{
    if (rs->ctx) {
        ngx_resolve_name_done(rs->ctx);
        rs->ctx = NULL;
    }
}


/*
 * The names from rs->next on, one at a time; a cached answer comes at
 * once, from inside ngx_resolve_name(), and its handler leaves the loop
 * to go on here.
 */

static ngx_int_t
ngx_http_corelog_resolve_next(ngx_http_corelog_resolve_t *rs)
{
    ngx_int_t                  rc;
    ngx_resolver_ctx_t        *ctx;
    ngx_http_corelog_host_t   *h;
    ngx_http_corelog_hosts_t  *hs;

    hs = &rs->conf->hosts;

    while (rs->next < hs->nhosts) {
        h = &hs->hosts[rs->next];

        if (!h->resolve) {
            rs->next++;
            continue;
        }

        ctx = ngx_resolve_start(hs->resolver, NULL);

        if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
            ngx_http_corelog_resolve_failed(rs, h, ctx ? "no resolver"
                                                       : "out of memory");
            rs->next++;
            continue;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "corelog resolve: \"%V\", host %ui",
                       &h->name, rs->next);

        ctx->name = h->name;
        ctx->handler = ngx_http_corelog_resolve_handler;
        ctx->data = rs;
        ctx->timeout = hs->resolver_timeout;
        ctx->cancelable = 1;

        rs->ctx = ctx;
        rs->calling = 1;

        rc = ngx_resolve_name(ctx);

        rs->calling = 0;

        if (rc != NGX_OK) {
            /* ngx_resolve_name() has freed ctx */
            rs->ctx = NULL;
            ngx_http_corelog_resolve_failed(rs, h, "resolver failed");
            rs->next++;
            continue;
        }

        if (rs->ctx) {
            return NGX_AGAIN;
        }
    }

    return NGX_OK;
}


static void
ngx_http_corelog_resolve_handler(ngx_resolver_ctx_t *ctx)
{
    ngx_http_corelog_host_t     *h;
    ngx_http_corelog_resolve_t  *rs;

    rs = ctx->data;
    h = &rs->conf->hosts.hosts[rs->next];

    if (ctx->state == NGX_OK && ctx->naddrs) {
        ngx_http_corelog_resolve_found(rs, h, ctx);

    } else {
        ngx_http_corelog_resolve_failed(rs, h,
                                        ctx->state
                                        ? ngx_resolver_strerror(ctx->state)
                                        : "no address");
    }

    ngx_resolve_name_done(ctx);
    rs->ctx = NULL;
    rs->next++;

    if (rs->calling || ngx_http_corelog_resolve_next(rs) == NGX_AGAIN) {
        return;
    }

    rs->handler(rs);
}


/*
 * The name's addresses now.  nginx's resolver may rotate the order of a
 * cached answer: a change is a change of the set, logged once.
 */

static void
ngx_http_corelog_resolve_found(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_host_t *h, ngx_resolver_ctx_t *ctx)
{
    u_char                   *p, *last;
    ngx_uint_t                i, n, k, same;
    ngx_http_corelog_addr_t  *old;
    ngx_http_corelog_addr_t   addrs[NGX_HTTP_CORELOG_RESOLVE_ADDRS];
    u_char                    text[NGX_HTTP_CORELOG_RESOLVE_TEXT_LEN];

    k = h - rs->conf->hosts.hosts;
    old = &rs->addrs[h->offset];

    n = 0;

    for (i = 0; i < ctx->naddrs; i++) {
        n = ngx_http_corelog_resolve_add(addrs, n, h->room,
                                         ctx->addrs[i].sockaddr,
                                         ctx->addrs[i].socklen);
    }

    if (n == 0) {
        ngx_http_corelog_resolve_failed(rs, h, "no address");
        return;
    }

    same = ngx_http_corelog_resolve_same(old, rs->naddrs[k], addrs, n);

    ngx_memcpy(old, addrs, n * sizeof(ngx_http_corelog_addr_t));
    rs->naddrs[k] = n;

    if (same && rs->failures[k] == 0) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "corelog resolve: \"%V\", %ui addresses, unchanged",
                       &h->name, n);
        return;
    }

    rs->failures[k] = 0;

    p = text;
    last = text + sizeof(text);

    for (i = 0; i < n; i++) {
        p = ngx_slprintf(p, last, "%s%*s", i ? ", " : "",
                         (size_t) addrs[i].len, addrs[i].data);
    }

    ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                  "corelog: PostgreSQL host \"%V\" resolves to %*s",
                  &h->name, (size_t) (p - text), text);
}


static void
ngx_http_corelog_resolve_failed(ngx_http_corelog_resolve_t *rs,
    ngx_http_corelog_host_t *h, const char *reason)
{
    ngx_uint_t  k, level;

    k = h - rs->conf->hosts.hosts;

    /* an error the first time, info while it keeps failing */

    level = rs->failures[k] ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, rs->log, 0,
                  "corelog: could not resolve PostgreSQL host \"%V\": %s, "
                  "connecting to its last known addresses",
                  &h->name, reason);

    rs->failures[k]++;
}


/* whether a and b hold the same addresses, in whatever order */

static ngx_uint_t
ngx_http_corelog_resolve_same(ngx_http_corelog_addr_t *a, ngx_uint_t na,
    ngx_http_corelog_addr_t *b, ngx_uint_t nb)
{
    ngx_uint_t  i, j;

    if (na != nb) {
        return 0;
    }

    for (i = 0; i < na; i++) {
        for (j = 0; j < nb; j++) {
            if (a[i].len == b[j].len
                && ngx_memcmp(a[i].data, b[j].data, a[i].len) == 0)
            {
                break;
            }
        }

        if (j == nb) {
            return 0;
        }
    }

    return 1;
}
