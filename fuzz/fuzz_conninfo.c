
/*
 * Copyright (C) corelog authors
 *
 * libFuzzer target: the argument of corelog_postgres, through
 * ngx_http_corelog_pg_conninfo() (PQconninfoParse(), the host list checks
 * and the resolution of host names into hostaddr).
 *
 * getaddrinfo() and freeaddrinfo() are defined here: the executable's
 * definitions interpose libc's (and ASan's interceptors, which are weak),
 * so no DNS query is ever made.  An IP literal resolves to itself, a name
 * containing "invalid" is not found, a name containing "six" resolves to
 * the longest IPv6 address, any other name to 127.0.0.1.
 */


#include "ngx_http_corelog_fuzz.h"

#include <netdb.h>


#define FUZZ_CI_MAX_OPTIONS  128


typedef struct {
    struct addrinfo          ai;
    struct sockaddr_storage  ss;
} ngx_http_corelog_fuzz_ai_t;


static void ngx_http_corelog_fuzz_check_ok(const u_char *data, size_t size,
    const char *conninfo, ngx_http_corelog_main_conf_t *cmcf);
static void ngx_http_corelog_fuzz_hostaddr(const u_char *data, size_t size,
    const char *host, const char *hostaddr);


static ngx_uint_t       ngx_http_corelog_fuzz_lookups;
static ngx_int_t        ngx_http_corelog_fuzz_outstanding;
static ngx_conf_file_t  ngx_http_corelog_fuzz_conf_file;


int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
    int                          family;
    struct sockaddr_in          *sin;
    struct sockaddr_in6         *sin6;
    ngx_http_corelog_fuzz_ai_t  *a;

    ngx_http_corelog_fuzz_lookups++;

    *res = NULL;

    if (node == NULL) {
        return EAI_NONAME;
    }

    family = hints ? hints->ai_family : AF_UNSPEC;

    a = calloc(1, sizeof(ngx_http_corelog_fuzz_ai_t));
    if (a == NULL) {
        return EAI_MEMORY;
    }

    sin = (struct sockaddr_in *) &a->ss;
    sin6 = (struct sockaddr_in6 *) &a->ss;

    if (family != AF_INET6 && inet_pton(AF_INET, node, &sin->sin_addr) == 1)
    {
        sin->sin_family = AF_INET;

    } else if (family != AF_INET
               && inet_pton(AF_INET6, node, &sin6->sin6_addr) == 1)
    {
        sin6->sin6_family = AF_INET6;

    } else if (strstr(node, "invalid") != NULL) {
        free(a);
        return EAI_NONAME;

    } else if (strstr(node, "six") != NULL && family != AF_INET) {
        sin6->sin6_family = AF_INET6;
        ngx_memset(&sin6->sin6_addr, 0xff, sizeof(struct in6_addr));

    } else if (family != AF_INET6) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    } else {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_loopback;
    }

    a->ai.ai_family = a->ss.ss_family;
    a->ai.ai_socktype = hints ? hints->ai_socktype : SOCK_STREAM;
    a->ai.ai_protocol = IPPROTO_TCP;
    a->ai.ai_addr = (struct sockaddr *) &a->ss;
    a->ai.ai_addrlen = a->ss.ss_family == AF_INET
                       ? sizeof(struct sockaddr_in)
                       : sizeof(struct sockaddr_in6);

    ngx_http_corelog_fuzz_outstanding++;
    *res = &a->ai;

    return 0;
}


void
freeaddrinfo(struct addrinfo *res)
{
    struct addrinfo  *next;

    while (res) {
        next = res->ai_next;
        ngx_http_corelog_fuzz_outstanding--;
        free(res);
        res = next;
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_http_corelog_fuzz_init();

    /* so that ngx_conf_log_error() says "... in fuzz.conf:1" */

    ngx_str_set(&ngx_http_corelog_fuzz_conf_file.file.name, "fuzz.conf");
    ngx_http_corelog_fuzz_conf_file.file.fd = ngx_stderr;
    ngx_http_corelog_fuzz_conf_file.file.log = &ngx_http_corelog_fuzz_log;
    ngx_http_corelog_fuzz_conf_file.line = 1;

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                          *rc;
    u_char                        *copy;
    ngx_uint_t                     emerg;
    ngx_conf_t                     cf;
    ngx_pool_t                    *pool, *temp_pool;
    ngx_http_corelog_main_conf_t  *cmcf;

    pool = ngx_create_pool(NGX_CYCLE_POOL_SIZE, &ngx_http_corelog_fuzz_log);
    temp_pool = ngx_create_pool(NGX_CYCLE_POOL_SIZE,
                                &ngx_http_corelog_fuzz_log);
    if (pool == NULL || temp_pool == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));

    cf.name = "corelog_postgres";
    cf.cycle = (ngx_cycle_t *) ngx_cycle;
    cf.pool = pool;
    cf.temp_pool = temp_pool;
    cf.conf_file = &ngx_http_corelog_fuzz_conf_file;
    cf.log = &ngx_http_corelog_fuzz_log;
    cf.module_type = NGX_HTTP_MODULE;
    cf.cmd_type = NGX_HTTP_MAIN_CONF;

    /* a fresh main conf, as create_main_conf() makes it */

    cmcf = ngx_pcalloc(pool, sizeof(ngx_http_corelog_main_conf_t));
    copy = ngx_pnalloc(pool, size + 1);
    if (cmcf == NULL || copy == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    ngx_memcpy(copy, data, size);
    copy[size] = '\0';

    cmcf->conninfo.data = copy;
    cmcf->conninfo.len = size;

    emerg = ngx_http_corelog_fuzz_nemerg;
    ngx_http_corelog_fuzz_outstanding = 0;

    rc = ngx_http_corelog_pg_conninfo(&cf, cmcf);

    if (ngx_http_corelog_fuzz_outstanding != 0) {
        ngx_http_corelog_fuzz_fail(data, size, "%ld getaddrinfo() results "
                                   "not freed", (long)
                                   ngx_http_corelog_fuzz_outstanding);
    }

    if (rc == NGX_CONF_OK) {
        ngx_http_corelog_fuzz_check_ok(data, size, (const char *) copy, cmcf);

    } else if (rc == NGX_CONF_ERROR) {
        /* refused: with a clear [emerg], as t/002-conninfo-config.t says */

        if (ngx_http_corelog_fuzz_nemerg == emerg) {
            ngx_http_corelog_fuzz_fail(data, size,
                                       "NGX_CONF_ERROR without an [emerg]");
        }

    } else {
        ngx_http_corelog_fuzz_fail(data, size, "returned \"%s\"", rc);
    }

    ngx_destroy_pool(temp_pool);
    ngx_destroy_pool(pool);

    return 0;
}


/*
 * NGX_CONF_OK: keywords and values NULL-terminated arrays of C strings;
 * every option libpq parsed from the string (with a value) is there, in
 * order and unchanged, but client_encoding (the module sends its own);
 * then at most a hostaddr the module added, then client_encoding=UTF8,
 * then fallback_application_name.
 */

static void
ngx_http_corelog_fuzz_check_ok(const u_char *data, size_t size,
    const char *conninfo, ngx_http_corelog_main_conf_t *cmcf)
{
    char               *errmsg;
    const char         *host, *hostaddr, *added;
    ngx_uint_t          i, n;
    PQconninfoOption   *opts, *o;

    if (cmcf->keywords == NULL || cmcf->values == NULL) {
        ngx_http_corelog_fuzz_fail(data, size,
                                   "NGX_CONF_OK without keywords/values");
    }

    for (n = 0; cmcf->keywords[n]; n++) {
        if (n == FUZZ_CI_MAX_OPTIONS) {
            ngx_http_corelog_fuzz_fail(data, size,
                                       "keywords not NULL-terminated");
        }

        if (cmcf->values[n] == NULL) {
            ngx_http_corelog_fuzz_fail(data, size, "keyword %s: value NULL",
                                       cmcf->keywords[n]);
        }

        /* C strings: ASan stops a strlen() that runs off the allocation */

        if (ngx_strlen(cmcf->keywords[n]) == 0
            || ngx_strlen(cmcf->values[n]) == 0)
        {
            ngx_http_corelog_fuzz_fail(data, size, "an empty keyword or "
                                       "value at %lu", (unsigned long) n);
        }
    }

    if (cmcf->values[n] != NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "values not NULL-terminated");
    }

    if (n == 0
        || ngx_strcmp(cmcf->keywords[n - 1], "fallback_application_name")
           != 0
        || ngx_strcmp(cmcf->values[n - 1], "nginx-corelog") != 0)
    {
        ngx_http_corelog_fuzz_fail(data, size, "the last option is not "
                                   "fallback_application_name=nginx-corelog");
    }

    /* what libpq itself makes of the string */

    errmsg = NULL;
    opts = PQconninfoParse(conninfo, &errmsg);

    if (opts == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_CONF_OK but "
                                   "PQconninfoParse() fails: %s",
                                   errmsg ? errmsg : "(no message)");
    }

    i = 0;
    host = NULL;
    hostaddr = NULL;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0'
            || ngx_strcmp(o->keyword, "client_encoding") == 0)
        {
            continue;
        }

        if (i >= n - 2
            || ngx_strcmp(cmcf->keywords[i], o->keyword) != 0
            || ngx_strcmp(cmcf->values[i], o->val) != 0)
        {
            ngx_http_corelog_fuzz_fail(data, size, "option %lu is not %s "
                                       "as libpq parsed it",
                                       (unsigned long) i, o->keyword);
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = cmcf->values[i];

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = cmcf->values[i];
        }

        i++;
    }

    PQconninfoFree(opts);

    /* then client_encoding=UTF8, whatever the string said */

    if (n < 2
        || ngx_strcmp(cmcf->keywords[n - 2], "client_encoding") != 0
        || ngx_strcmp(cmcf->values[n - 2], "UTF8") != 0)
    {
        ngx_http_corelog_fuzz_fail(data, size, "the option before the last "
                                   "is not client_encoding=UTF8");
    }

    /* between the parsed options and those two: at most one hostaddr */

    added = NULL;
    n--;

    if (i == n - 2) {
        if (ngx_strcmp(cmcf->keywords[i], "hostaddr") != 0) {
            ngx_http_corelog_fuzz_fail(data, size, "an added option %s",
                                       cmcf->keywords[i]);
        }

        added = cmcf->values[i];

    } else if (i != n - 1) {
        ngx_http_corelog_fuzz_fail(data, size, "%lu options added",
                                   (unsigned long) (n - 1 - i));
    }

    if (added && (host == NULL || hostaddr != NULL)) {
        ngx_http_corelog_fuzz_fail(data, size, "hostaddr added without a "
                                   "host, or beside the given hostaddr");
    }

    if (host && hostaddr == NULL) {
        ngx_http_corelog_fuzz_hostaddr(data, size, host, added);
    }
}


/*
 * The hostaddr list the module added for a host list: one entry per host
 * entry (libpq refuses lists of two lengths); an address for a name, an
 * empty entry for an empty one or a unix socket ('/' or '@'); none at all
 * when the host list has no names.
 */

static void
ngx_http_corelog_fuzz_hostaddr(const u_char *data, size_t size,
    const char *host, const char *hostaddr)
{
    u_char          addr[sizeof(struct in6_addr)];
    size_t          hlen, alen;
    ngx_uint_t      names, name, entry;
    const char     *h, *hend, *a, *aend;
    char            text[NGX_SOCKADDR_STRLEN + 1];

    names = 0;

    for (h = host; ; h = hend + 1) {
        hend = strchr(h, ',');
        if (hend == NULL) {
            hend = h + ngx_strlen(h);
        }

        if (hend > h && h[0] != '/' && h[0] != '@') {
            names++;
        }

        if (*hend == '\0') {
            break;
        }
    }

    if (names == 0) {
        if (hostaddr) {
            ngx_http_corelog_fuzz_fail(data, size, "hostaddr \"%s\" added "
                                       "for a host list without names",
                                       hostaddr);
        }

        return;
    }

    if (hostaddr == NULL) {
        ngx_http_corelog_fuzz_fail(data, size, "no hostaddr for host \"%s\"",
                                   host);
    }

    h = host;
    a = hostaddr;

    for (entry = 0; ; entry++) {
        hend = strchr(h, ',');
        if (hend == NULL) {
            hend = h + ngx_strlen(h);
        }

        aend = strchr(a, ',');
        if (aend == NULL) {
            aend = a + ngx_strlen(a);
        }

        hlen = hend - h;
        alen = aend - a;
        name = (hlen && h[0] != '/' && h[0] != '@');

        if (name) {
            if (alen == 0 || alen > NGX_SOCKADDR_STRLEN) {
                ngx_http_corelog_fuzz_fail(data, size, "hostaddr entry %lu "
                                           "of %lu bytes for a name",
                                           (unsigned long) entry,
                                           (unsigned long) alen);
            }

            ngx_memcpy(text, a, alen);
            text[alen] = '\0';

            if (inet_pton(AF_INET, text, addr) != 1
                && inet_pton(AF_INET6, text, addr) != 1)
            {
                ngx_http_corelog_fuzz_fail(data, size, "hostaddr entry %lu "
                                           "\"%s\" is not an address",
                                           (unsigned long) entry, text);
            }

        } else if (alen) {
            ngx_http_corelog_fuzz_fail(data, size, "hostaddr entry %lu is "
                                       "not empty for host entry \"%.*s\"",
                                       (unsigned long) entry, (int) hlen, h);
        }

        if ((*hend == '\0') != (*aend == '\0')) {
            ngx_http_corelog_fuzz_fail(data, size, "host \"%s\" and hostaddr "
                                       "\"%s\": lists of two lengths", host,
                                       hostaddr);
        }

        if (*hend == '\0') {
            break;
        }

        h = hend + 1;
        a = aend + 1;
    }
}
