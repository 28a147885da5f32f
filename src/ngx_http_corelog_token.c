
/*
 * Copyright (C) corelog authors
 *
 * corelog_token_check: the built-in auth location.  It reads the caller's
 * token (Authorization: Bearer, or X-Auth-Token); a token not of the shape
 * corelog.create_token() makes is refused at once.  Then its SHA-256 is
 * looked up in a per-worker cache of valid tokens, in one of tokens known
 * to be invalid (a flood of bad tokens evicts only that one), or else in
 * PostgreSQL, many lookups per statement, in a queue of their own.  It
 * answers 204 with X-Corelog-Account/-Domain/-Project, 401, or 503.
 *
 * One lookup per token at a time in a worker: a request whose token is
 * already being looked up (a burst of one new token, or of every token
 * after a reload, which empties the caches) waits for that lookup and
 * gets its answer.
 */


#include "ngx_http_corelog.h"

#include <openssl/evp.h>


/* "clg_" and 64 lowercase hexadecimal digits: corelog.create_token() */
#define NGX_HTTP_CORELOG_TOKEN_PREFIX  "clg_"
#define NGX_HTTP_CORELOG_TOKEN_LEN     (sizeof("clg_") - 1 + 64)

#define NGX_HTTP_CORELOG_HASH_LEN      32
#define NGX_HTTP_CORELOG_NAME_MAX      64

/* what the store says of a token; columns of the lookup */
#define NGX_HTTP_CORELOG_TOKEN_VALID    0
#define NGX_HTTP_CORELOG_TOKEN_UNKNOWN  1
#define NGX_HTTP_CORELOG_TOKEN_REVOKED  2
#define NGX_HTTP_CORELOG_TOKEN_EXPIRED  3

#define NGX_HTTP_CORELOG_TOKEN_COL_ACCOUNT  1
#define NGX_HTTP_CORELOG_TOKEN_COL_DOMAIN   2
#define NGX_HTTP_CORELOG_TOKEN_COL_PROJECT  3
#define NGX_HTTP_CORELOG_TOKEN_COL_STATE    4
#define NGX_HTTP_CORELOG_TOKEN_COL_TTL      5
#define NGX_HTTP_CORELOG_TOKEN_NCOLS        6


typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  queue;        /* LRU, most recent first */
    u_char                       hash[NGX_HTTP_CORELOG_HASH_LEN];
    ngx_msec_t                   expires;
    ngx_uint_t                   state;        /* _TOKEN_VALID, ... */
    size_t                       domain_len;
    size_t                       project_len;
    u_char                       account[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                       domain[NGX_HTTP_CORELOG_NAME_MAX];
    u_char                       project[NGX_HTTP_CORELOG_NAME_MAX];
} ngx_http_corelog_token_node_t;


/* an rbtree on the hash and an LRU list, of at most max entries */

typedef struct {
    ngx_rbtree_t                 tree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_uint_t                   count;
    ngx_uint_t                   max;
} ngx_http_corelog_token_cache_t;


struct ngx_http_corelog_token_state_s {
    ngx_http_corelog_token_cache_t  valid;
    ngx_http_corelog_token_cache_t  invalid;

    /* the lookups in flight: the ctx of the request that made each */
    ngx_rbtree_t                 pending;
    ngx_rbtree_node_t            pending_sentinel;

    /* SHA-256, fetched once: an implicit fetch on every digest is slow */
    EVP_MD                      *md;
    EVP_MD_CTX                  *md_ctx;
};


typedef struct {
    ngx_str_t                    account;
    ngx_str_t                    domain;
    ngx_str_t                    project;
} ngx_http_corelog_identity_t;


/* why a caller is refused: each has its X-Corelog-Error text below */

typedef enum {
    NGX_HTTP_CORELOG_DENY_NO_BEARER = 0,    /* no Authorization header */
    NGX_HTTP_CORELOG_DENY_NO_HEADER,        /* no X-Auth-Token header */
    NGX_HTTP_CORELOG_DENY_NOT_BEARER,
    NGX_HTTP_CORELOG_DENY_INVALID,
    NGX_HTTP_CORELOG_DENY_REVOKED,
    NGX_HTTP_CORELOG_DENY_EXPIRED,
    NGX_HTTP_CORELOG_DENY_NONE              /* not refused */
} ngx_http_corelog_deny_e;


static const ngx_str_t  ngx_http_corelog_token_denials[] = {
    ngx_string("Missing bearer token"),
    ngx_string("Missing X-Auth-Token header"),
    ngx_string("Authorization must be \"Bearer <token>\""),
    ngx_string("Invalid token"),
    ngx_string("Token revoked"),
    ngx_string("Token expired"),
    ngx_string("not refused")
};


/*
 * A request in the checker whose token was not cached.  Either it made
 * the lookup of its token (it is in the worker's pending tree, by tn,
 * and tn.queue lists the requests that wait for it), or it waits for
 * another's (leader): then its wake event is posted with the outcome in
 * status (0: the lookup was dropped, decide again) and in tn (the state,
 * and for a 204 the identity).
 */

typedef struct ngx_http_corelog_token_ctx_s  ngx_http_corelog_token_ctx_t;

struct ngx_http_corelog_token_ctx_s {
    ngx_http_corelog_token_node_t   tn;          /* first: in the tree */
    ngx_http_request_t             *request;
    ngx_http_corelog_token_ctx_t   *leader;      /* NULL: waits for none */
    ngx_queue_t                     link;        /* in leader->tn.queue */
    ngx_event_t                     wake;
    ngx_uint_t                      status;
    unsigned                        pending:1;   /* in ts->pending */
};


static ngx_http_corelog_deny_e ngx_http_corelog_token_read(
    ngx_http_request_t *r, ngx_uint_t mode, ngx_str_t *token);
static ngx_int_t ngx_http_corelog_token_decide(ngx_http_request_t *r,
    ngx_http_corelog_token_ctx_t *tc, ngx_uint_t first);
static void ngx_http_corelog_token_release(ngx_http_corelog_token_ctx_t *tc,
    ngx_uint_t status, ngx_uint_t state, ngx_http_corelog_identity_t *id);
static void ngx_http_corelog_token_wake_handler(ngx_event_t *ev);
static void ngx_http_corelog_token_cleanup(void *data);
static ngx_http_corelog_token_node_t *ngx_http_corelog_token_find(
    ngx_rbtree_t *tree, u_char *hash);
static ngx_uint_t ngx_http_corelog_token_fits(
    ngx_http_corelog_identity_t *id);
static void ngx_http_corelog_token_looked_up(ngx_http_corelog_op_t *op,
    ngx_int_t rc, PGresult *res, int row);
static ngx_uint_t ngx_http_corelog_token_state(PGresult *res, int row);
static ngx_int_t ngx_http_corelog_token_deny(ngx_http_request_t *r,
    ngx_uint_t state);
static ngx_int_t ngx_http_corelog_token_answer(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_corelog_identity_t *id,
    ngx_http_corelog_deny_e deny);
static ngx_http_corelog_token_node_t *ngx_http_corelog_token_lookup(
    ngx_http_corelog_token_cache_t *cache, u_char *hash);
static void ngx_http_corelog_token_store(ngx_http_corelog_token_cache_t *cache,
    u_char *hash, ngx_uint_t state, ngx_http_corelog_identity_t *id,
    ngx_msec_t ttl);
static void ngx_http_corelog_token_remove(
    ngx_http_corelog_token_cache_t *cache, ngx_http_corelog_token_node_t *tn);
static void ngx_http_corelog_token_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_corelog_token_hash(ngx_log_t *log,
    ngx_http_corelog_token_state_t *ts, ngx_str_t *token, u_char *hash);


/* the lookup's one column: X(NAME, $n, "column", TYPE) */

#define NGX_HTTP_CORELOG_TOKEN_PARAMS(X)                                     \
    X(HASH,             2,  "hash",               BYTEA)  /* SHA-256 */


static const ngx_http_corelog_column_t  ngx_http_corelog_token_columns[] = {
    NGX_HTTP_CORELOG_TOKEN_PARAMS(NGX_HTTP_CORELOG_PARAM_COLUMN)
};


static const ngx_http_corelog_stmt_t ngx_http_corelog_token_stmt = {
    "token_lookup",

    /* one row per input row; an unknown token has NULLs */

    "SELECT i.ord, t.account_id, t.domain_id, t.project_id,"
    "       CASE WHEN t.token_hash IS NULL THEN 'unknown'"
    "            WHEN t.revoked_at IS NOT NULL THEN 'revoked'"
    "            WHEN t.expires_at <= now() THEN 'expired'"
    "            ELSE 'valid' END,"
    "       CASE WHEN isfinite(t.expires_at) THEN"
    "         floor(extract(epoch FROM t.expires_at - now()) * 1000)::bigint"
    "       END"
    "  FROM " NGX_HTTP_CORELOG_UNNEST(NGX_HTTP_CORELOG_TOKEN_PARAMS)
    "  LEFT JOIN corelog.tokens AS t ON t.token_hash = i.hash",

    1, 1, ngx_http_corelog_token_columns,
    NGX_HTTP_CORELOG_TOKEN_NCOLS, NGX_HTTP_CORELOG_KIND_LOOKUP, NULL,
    NGX_HTTP_CORELOG_STAT_TOKEN
};


ngx_int_t
ngx_http_corelog_token_init_process(ngx_cycle_t *cycle,
    ngx_http_corelog_main_conf_t *cmcf)
{
    ngx_uint_t                       i;
    ngx_http_corelog_token_cache_t  *cache;
    ngx_http_corelog_token_state_t  *ts;

    ts = ngx_pcalloc(cycle->pool, sizeof(ngx_http_corelog_token_state_t));
    if (ts == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < 2; i++) {
        cache = i ? &ts->invalid : &ts->valid;

        ngx_rbtree_init(&cache->tree, &cache->sentinel,
                        ngx_http_corelog_token_insert_value);
        ngx_queue_init(&cache->lru);
        cache->max = cmcf->token_cache_size;
    }

    ngx_rbtree_init(&ts->pending, &ts->pending_sentinel,
                    ngx_http_corelog_token_insert_value);

    ts->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (ts->md == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "corelog: EVP_MD_fetch(SHA256) failed");
        return NGX_ERROR;
    }

    ts->md_ctx = EVP_MD_CTX_new();
    if (ts->md_ctx == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "corelog: EVP_MD_CTX_new() failed");
        EVP_MD_free(ts->md);
        ts->md = NULL;
        return NGX_ERROR;
    }

    cmcf->worker->token = ts;

    return NGX_OK;
}


void
ngx_http_corelog_token_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_http_corelog_token_node_t   *tn;
    ngx_http_corelog_token_cache_t  *cache;
    ngx_http_corelog_token_state_t  *ts;
    ngx_http_corelog_main_conf_t    *cmcf;

    cmcf = ngx_http_corelog_main_conf();

    if (cmcf == NULL || cmcf->worker == NULL || cmcf->worker->token == NULL) {
        return;
    }

    ts = cmcf->worker->token;
    cmcf->worker->token = NULL;

    for (i = 0; i < 2; i++) {
        cache = i ? &ts->invalid : &ts->valid;

        while (!ngx_queue_empty(&cache->lru)) {
            q = ngx_queue_head(&cache->lru);
            tn = ngx_queue_data(q, ngx_http_corelog_token_node_t, queue);
            ngx_http_corelog_token_remove(cache, tn);
        }
    }

    if (ts->md_ctx) {
        EVP_MD_CTX_free(ts->md_ctx);
    }

    if (ts->md) {
        EVP_MD_free(ts->md);
    }
}


ngx_int_t
ngx_http_corelog_token_handler(ngx_http_request_t *r)
{
    ngx_str_t                        token;
    ngx_pool_cleanup_t              *cln;
    ngx_http_corelog_deny_e          deny;
    ngx_http_corelog_loc_conf_t     *llcf;
    ngx_http_corelog_token_ctx_t    *tc;
    ngx_http_corelog_token_state_t  *ts;
    ngx_http_corelog_main_conf_t    *cmcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);
    cmcf = ngx_http_corelog_main_conf();

    deny = ngx_http_corelog_token_read(r, llcf->token_check, &token);

    if (deny != NGX_HTTP_CORELOG_DENY_NONE) {
        return ngx_http_corelog_token_answer(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                             deny);
    }

    if (cmcf == NULL || cmcf->worker == NULL || cmcf->worker->token == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ts = cmcf->worker->token;

    tc = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_token_ctx_t));
    if (tc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_corelog_token_cleanup;
    cln->data = tc;

    tc->request = r;

    tc->wake.handler = ngx_http_corelog_token_wake_handler;
    tc->wake.data = tc;
    tc->wake.log = r->connection->log;

    if (ngx_http_corelog_token_hash(r->connection->log, ts, &token,
                                    tc->tn.hash)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_corelog_token_decide(r, tc, 1);
}


/*
 * From the caches, or else by the lookup in flight for the same token, or
 * else by a lookup of its own.  "first": the request's first decision
 * (counted as a cache hit or miss; a wait takes a reference on the
 * request), not one made again because the lookup it waited for was
 * dropped.  NGX_DONE: it waits.
 */

static ngx_int_t
ngx_http_corelog_token_decide(ngx_http_request_t *r,
    ngx_http_corelog_token_ctx_t *tc, ngx_uint_t first)
{
    ngx_int_t                        rc;
    ngx_http_corelog_op_t           *op;
    ngx_http_corelog_worker_t       *w;
    ngx_http_corelog_identity_t      id;
    ngx_http_corelog_token_ctx_t    *leader;
    ngx_http_corelog_token_node_t   *tn;
    ngx_http_corelog_token_state_t  *ts;

    w = ngx_http_corelog_worker();
    ts = w->token;

    tn = ngx_http_corelog_token_lookup(&ts->valid, tc->tn.hash);

    if (tn) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog token: cache hit");

        if (first) {
            ngx_http_corelog_stats_count(w, NGX_HTTP_CORELOG_STATS_TOKEN_HITS);
        }

        id.account.data = tn->account;
        id.account.len = NGX_HTTP_CORELOG_UUID_LEN;
        id.domain.data = tn->domain;
        id.domain.len = tn->domain_len;
        id.project.data = tn->project;
        id.project.len = tn->project_len;

        return ngx_http_corelog_token_answer(r, NGX_HTTP_NO_CONTENT, &id,
                                             NGX_HTTP_CORELOG_DENY_NONE);
    }

    tn = ngx_http_corelog_token_lookup(&ts->invalid, tc->tn.hash);

    if (tn) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog token: known invalid (%ui)", tn->state);

        if (first) {
            ngx_http_corelog_stats_count(w, NGX_HTTP_CORELOG_STATS_TOKEN_HITS);
        }

        return ngx_http_corelog_token_deny(r, tn->state);
    }

    if (first) {
        ngx_http_corelog_stats_count(w, NGX_HTTP_CORELOG_STATS_TOKEN_MISSES);

        /*
         * The request waits for our event, with a reference on the main
         * request.  A client that goes away meanwhile is noticed when the
         * lookup ends, as with nginx's auth_request (t/024 saw a client
         * close its connection, headers sent, and its lookup go on): the
         * lookup is bounded by the queue's wait and the statement timeout.
         */

        r->main->count++;
        r->read_event_handler = ngx_http_test_reading;
    }

    tn = ngx_http_corelog_token_find(&ts->pending, tc->tn.hash);

    if (tn) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog token: waits for its lookup in flight");

        leader = (ngx_http_corelog_token_ctx_t *) tn;

        tc->leader = leader;
        ngx_queue_insert_tail(&leader->tn.queue, &tc->link);

        return NGX_DONE;
    }

    op = ngx_http_corelog_queue_op(r, &ngx_http_corelog_token_stmt);
    if (op == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto failed;
    }

    ngx_http_corelog_value_bytea(&op->values[0], tc->tn.hash,
                                 NGX_HTTP_CORELOG_HASH_LEN);
    op->handler = ngx_http_corelog_token_looked_up;
    op->data = tc;

    /* in the tree first: the op's handler may run within the post */

    ngx_memcpy(&tc->tn.node.key, tc->tn.hash, sizeof(ngx_rbtree_key_t));
    ngx_rbtree_insert(&ts->pending, &tc->tn.node);
    ngx_queue_init(&tc->tn.queue);
    tc->pending = 1;

    if (ngx_http_corelog_queue_post(op) != NGX_OK) {
        /* the queue layer has said why, at most once a second */

        ngx_http_corelog_token_release(tc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       0, NULL);

        rc = ngx_http_corelog_token_answer(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           NULL, NGX_HTTP_CORELOG_DENY_NONE);
        goto failed;
    }

    ngx_http_corelog_stats_count(w, NGX_HTTP_CORELOG_STATS_TOKEN_LOOKUPS);

    return NGX_DONE;

failed:

    if (first) {
        r->main->count--;
    }

    return rc;
}


/*
 * The access phase of an API location whose auth location is this
 * checker (and nothing else runs there first: see auth.c) asks here
 * before it makes the subrequest.  NGX_OK: the token is in the worker's
 * cache of valid tokens, and "a" has the identity the checker would have
 * answered (copied into the request pool), counted as the checker counts
 * a cache hit and its 204.  NGX_DECLINED: anything else (no token, one of
 * the wrong shape, known invalid, not cached); the subrequest decides and
 * counts, as it did before.
 */

ngx_int_t
ngx_http_corelog_token_cached(ngx_http_request_t *r, ngx_uint_t mode,
    ngx_http_corelog_auth_t *a)
{
    ngx_str_t                        token;
    ngx_http_corelog_token_node_t   *tn;
    ngx_http_corelog_token_state_t  *ts;
    ngx_http_corelog_main_conf_t    *cmcf;
    u_char                           hash[NGX_HTTP_CORELOG_HASH_LEN];

    cmcf = ngx_http_corelog_main_conf();

    if (cmcf == NULL || cmcf->worker == NULL || cmcf->worker->token == NULL) {
        return NGX_DECLINED;
    }

    ts = cmcf->worker->token;

    if (ts->valid.count == 0
        || ngx_http_corelog_token_read(r, mode, &token)
           != NGX_HTTP_CORELOG_DENY_NONE
        || ngx_http_corelog_token_hash(r->connection->log, ts, &token, hash)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    tn = ngx_http_corelog_token_lookup(&ts->valid, hash);

    if (tn == NULL) {
        return NGX_DECLINED;
    }

    a->account.data = ngx_pnalloc(r->pool, NGX_HTTP_CORELOG_UUID_LEN
                                           + tn->domain_len + tn->project_len);
    if (a->account.data == NULL) {
        return NGX_DECLINED;
    }

    a->account.len = NGX_HTTP_CORELOG_UUID_LEN;
    a->domain.data = ngx_cpymem(a->account.data, tn->account,
                                NGX_HTTP_CORELOG_UUID_LEN);
    a->domain.len = tn->domain_len;
    a->project.data = ngx_cpymem(a->domain.data, tn->domain, tn->domain_len);
    a->project.len = tn->project_len;
    ngx_memcpy(a->project.data, tn->project, tn->project_len);

    a->status = NGX_HTTP_NO_CONTENT;
    a->done = 1;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog token: cache hit, no subrequest");

    ngx_http_corelog_stats_count(cmcf->worker,
                                 NGX_HTTP_CORELOG_STATS_TOKEN_HITS);
    ngx_http_corelog_stats_auth(cmcf->worker, NGX_HTTP_NO_CONTENT);

    return NGX_OK;
}


/*
 * The token of the header the location reads: NGX_HTTP_CORELOG_DENY_NONE,
 * or why the caller is refused without a look-up.
 */

static ngx_http_corelog_deny_e
ngx_http_corelog_token_read(ngx_http_request_t *r, ngx_uint_t mode,
    ngx_str_t *token)
{
    u_char     *p, *last;
    ngx_str_t  *found;

    if (mode == NGX_HTTP_CORELOG_TOKEN_BEARER) {
        found = r->headers_in.authorization
                ? &r->headers_in.authorization->value : NULL;

    } else {
        found = ngx_http_corelog_header_find(&r->headers_in.headers,
                                             "X-Auth-Token");
    }

    if (found == NULL) {
        return (mode == NGX_HTTP_CORELOG_TOKEN_BEARER)
               ? NGX_HTTP_CORELOG_DENY_NO_BEARER
               : NGX_HTTP_CORELOG_DENY_NO_HEADER;
    }

    p = found->data;
    last = p + found->len;

    if (mode == NGX_HTTP_CORELOG_TOKEN_BEARER) {
        if (found->len < sizeof("Bearer ") - 1
            || ngx_strncasecmp(p, (u_char *) "Bearer ", sizeof("Bearer ") - 1)
               != 0)
        {
            return NGX_HTTP_CORELOG_DENY_NOT_BEARER;
        }

        p += sizeof("Bearer ") - 1;

        while (p < last && *p == ' ') {
            p++;
        }
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    token->data = p;
    token->len = last - p;

    /* no lookup for what corelog.create_token() cannot have made */

    if (token->len != NGX_HTTP_CORELOG_TOKEN_LEN
        || ngx_strncmp(p, NGX_HTTP_CORELOG_TOKEN_PREFIX,
                       sizeof(NGX_HTTP_CORELOG_TOKEN_PREFIX) - 1)
           != 0)
    {
        return NGX_HTTP_CORELOG_DENY_INVALID;
    }

    for (p += sizeof(NGX_HTTP_CORELOG_TOKEN_PREFIX) - 1; p < last; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return NGX_HTTP_CORELOG_DENY_INVALID;
        }
    }

    return NGX_HTTP_CORELOG_DENY_NONE;
}


static void
ngx_http_corelog_token_looked_up(ngx_http_corelog_op_t *op, ngx_int_t rc,
    PGresult *res, int row)
{
    ngx_int_t                        ms;
    ngx_str_t                        note;
    ngx_uint_t                       state;
    ngx_msec_t                       ttl;
    ngx_http_request_t              *r;
    ngx_http_corelog_identity_t      id;
    ngx_http_corelog_main_conf_t    *cmcf;
    ngx_http_corelog_token_ctx_t    *tc;
    ngx_http_corelog_token_state_t  *ts;
    u_char                           buf[NGX_HTTP_CORELOG_LIMIT_NOTE_LEN];

    r = op->request;
    tc = op->data;

    if (rc != NGX_OK) {
        if (ngx_http_corelog_limit(NGX_HTTP_CORELOG_LIMIT_LOOKUP_FAILED,
                                   &note, buf))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "corelog: token lookup failed with status %i%V",
                          rc, &note);
        }

        /* unavailable or slow: 503; anything else (no schema...): 500 */

        if (rc == NGX_HTTP_SERVICE_UNAVAILABLE
            || rc == NGX_HTTP_GATEWAY_TIME_OUT)
        {
            ngx_http_corelog_token_release(tc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           0, NULL);

            rc = ngx_http_corelog_token_answer(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               NULL,
                                               NGX_HTTP_CORELOG_DENY_NONE);
        } else {
            ngx_http_corelog_token_release(tc,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           0, NULL);

            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_corelog_request_finalize(r, rc);
        return;
    }

    cmcf = ngx_http_corelog_main_conf();
    ts = cmcf->worker->token;

    state = ngx_http_corelog_token_state(res, row);

    ttl = cmcf->token_cache_ttl;

    if (!PQgetisnull(res, row, NGX_HTTP_CORELOG_TOKEN_COL_TTL)) {
        ms = ngx_atoi((u_char *) PQgetvalue(res, row,
                                            NGX_HTTP_CORELOG_TOKEN_COL_TTL),
                      PQgetlength(res, row, NGX_HTTP_CORELOG_TOKEN_COL_TTL));

        if (ms != NGX_ERROR && (ngx_msec_t) ms < ttl) {
            ttl = (ngx_msec_t) ms;
        }
    }

    if (state != NGX_HTTP_CORELOG_TOKEN_VALID) {
        if (ts->invalid.max) {
            ngx_http_corelog_token_store(&ts->invalid, tc->tn.hash, state,
                                         NULL, cmcf->token_cache_ttl);
        }

        ngx_http_corelog_token_release(tc, NGX_HTTP_UNAUTHORIZED, state,
                                       NULL);

        rc = ngx_http_corelog_token_deny(r, state);
        ngx_http_corelog_request_finalize(r, rc);
        return;
    }

    id.account.data = (u_char *) PQgetvalue(res, row,
                                            NGX_HTTP_CORELOG_TOKEN_COL_ACCOUNT);
    id.account.len = PQgetlength(res, row, NGX_HTTP_CORELOG_TOKEN_COL_ACCOUNT);
    id.domain.data = (u_char *) PQgetvalue(res, row,
                                           NGX_HTTP_CORELOG_TOKEN_COL_DOMAIN);
    id.domain.len = PQgetlength(res, row, NGX_HTTP_CORELOG_TOKEN_COL_DOMAIN);
    id.project.data = (u_char *) PQgetvalue(res, row,
                                            NGX_HTTP_CORELOG_TOKEN_COL_PROJECT);
    id.project.len = PQgetlength(res, row, NGX_HTTP_CORELOG_TOKEN_COL_PROJECT);

    if (ts->valid.max && ttl) {
        ngx_http_corelog_token_store(&ts->valid, tc->tn.hash, state, &id,
                                     ttl);
    }

    ngx_http_corelog_token_release(tc, NGX_HTTP_NO_CONTENT, state, &id);

    /* the values live in res: the answer copies them into the pool */

    rc = ngx_http_corelog_token_answer(r, NGX_HTTP_NO_CONTENT, &id,
                                       NGX_HTTP_CORELOG_DENY_NONE);
    ngx_http_corelog_request_finalize(r, rc);
}


/*
 * The lookup that tc made has an outcome (status; for a 401 the token's
 * state, for a 204 its identity), or is dropped (status 0): tc leaves the
 * pending tree, and each request that waited for it gets the outcome in
 * its own ctx and its wake event posted (it answers from the event loop,
 * not from within this lookup's answer or cleanup).  A request that
 * waited for a dropped lookup decides again.
 */

static void
ngx_http_corelog_token_release(ngx_http_corelog_token_ctx_t *tc,
    ngx_uint_t status, ngx_uint_t state, ngx_http_corelog_identity_t *id)
{
    ngx_queue_t                     *q;
    ngx_http_corelog_token_ctx_t    *f;
    ngx_http_corelog_worker_t       *w;

    if (!tc->pending) {
        return;
    }

    tc->pending = 0;

    w = ngx_http_corelog_worker();

    if (w == NULL || w->token == NULL) {
        /* the worker's token state is gone (its exit): no tree, no wait */
        return;
    }

    ngx_rbtree_delete(&w->token->pending, &tc->tn.node);

    if (id && !ngx_http_corelog_token_fits(id)) {
        /* not what a token can be: let each look it up */
        status = 0;
    }

    while (!ngx_queue_empty(&tc->tn.queue)) {
        q = ngx_queue_head(&tc->tn.queue);
        ngx_queue_remove(q);

        f = ngx_queue_data(q, ngx_http_corelog_token_ctx_t, link);
        f->leader = NULL;
        f->status = status;
        f->tn.state = state;

        if (status == NGX_HTTP_NO_CONTENT) {
            ngx_memcpy(f->tn.account, id->account.data,
                       NGX_HTTP_CORELOG_UUID_LEN);
            f->tn.domain_len = id->domain.len;
            ngx_memcpy(f->tn.domain, id->domain.data, id->domain.len);
            f->tn.project_len = id->project.len;
            ngx_memcpy(f->tn.project, id->project.data, id->project.len);
        }

        ngx_post_event(&f->wake, &ngx_posted_events);
    }
}


static void
ngx_http_corelog_token_wake_handler(ngx_event_t *ev)
{
    ngx_int_t                      rc;
    ngx_http_request_t            *r;
    ngx_http_corelog_identity_t    id;
    ngx_http_corelog_token_ctx_t  *tc;

    tc = ev->data;
    r = tc->request;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog token: the lookup waited for: %ui", tc->status);

    switch (tc->status) {

    case 0:
        rc = ngx_http_corelog_token_decide(r, tc, 0);

        if (rc == NGX_DONE) {
            return;
        }

        break;

    case NGX_HTTP_NO_CONTENT:
        id.account.data = tc->tn.account;
        id.account.len = NGX_HTTP_CORELOG_UUID_LEN;
        id.domain.data = tc->tn.domain;
        id.domain.len = tc->tn.domain_len;
        id.project.data = tc->tn.project;
        id.project.len = tc->tn.project_len;

        rc = ngx_http_corelog_token_answer(r, NGX_HTTP_NO_CONTENT, &id,
                                           NGX_HTTP_CORELOG_DENY_NONE);
        break;

    case NGX_HTTP_UNAUTHORIZED:
        rc = ngx_http_corelog_token_deny(r, tc->tn.state);
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        rc = ngx_http_corelog_token_answer(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           NULL, NGX_HTTP_CORELOG_DENY_NONE);
        break;

    default:
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_corelog_request_finalize(r, rc);
}


/* the request is gone: it waits for no lookup, and none waits for its */

static void
ngx_http_corelog_token_cleanup(void *data)
{
    ngx_http_corelog_token_ctx_t  *tc = data;

    if (tc->leader) {
        ngx_queue_remove(&tc->link);
        tc->leader = NULL;
    }

    if (tc->wake.posted) {
        ngx_delete_posted_event(&tc->wake);
    }

    ngx_http_corelog_token_release(tc, 0, 0, NULL);
}


static ngx_uint_t
ngx_http_corelog_token_state(PGresult *res, int row)
{
    char  *state;

    state = PQgetvalue(res, row, NGX_HTTP_CORELOG_TOKEN_COL_STATE);

    if (ngx_strcmp(state, "valid") == 0
        && PQgetlength(res, row, NGX_HTTP_CORELOG_TOKEN_COL_ACCOUNT)
           == NGX_HTTP_CORELOG_UUID_LEN)
    {
        return NGX_HTTP_CORELOG_TOKEN_VALID;
    }

    if (ngx_strcmp(state, "revoked") == 0) {
        return NGX_HTTP_CORELOG_TOKEN_REVOKED;
    }

    if (ngx_strcmp(state, "expired") == 0) {
        return NGX_HTTP_CORELOG_TOKEN_EXPIRED;
    }

    return NGX_HTTP_CORELOG_TOKEN_UNKNOWN;
}


static ngx_int_t
ngx_http_corelog_token_deny(ngx_http_request_t *r, ngx_uint_t state)
{
    ngx_http_corelog_deny_e  deny;

    switch (state) {

    case NGX_HTTP_CORELOG_TOKEN_REVOKED:
        deny = NGX_HTTP_CORELOG_DENY_REVOKED;
        break;

    case NGX_HTTP_CORELOG_TOKEN_EXPIRED:
        deny = NGX_HTTP_CORELOG_DENY_EXPIRED;
        break;

    default:
        deny = NGX_HTTP_CORELOG_DENY_INVALID;
    }

    return ngx_http_corelog_token_answer(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                         deny);
}


/*
 * The answer of the auth location: a status and headers, no body.  The
 * values are copied into the request pool.  A 401 says why in
 * X-Corelog-Error; without a token at all, its WWW-Authenticate has no
 * error="invalid_token".
 */

static ngx_int_t
ngx_http_corelog_token_answer(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_corelog_identity_t *id, ngx_http_corelog_deny_e deny)
{
    ngx_str_t                     v;
    ngx_http_corelog_loc_conf_t  *llcf;

    static ngx_str_t  bearer = ngx_string("Bearer realm=\"corelog\"");
    static ngx_str_t  invalid =
        ngx_string("Bearer realm=\"corelog\", error=\"invalid_token\"");
    static ngx_str_t  one = ngx_string("1");
    static ngx_str_t  down =
        ngx_string("The token store is unavailable, retry later");

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "corelog token answer: %ui, %V", status,
                   &ngx_http_corelog_token_denials[deny]);

    r->headers_out.status = status;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    if (status == NGX_HTTP_NO_CONTENT) {
        v.data = ngx_pstrdup(r->pool, &id->account);
        v.len = id->account.len;

        if (v.data == NULL
            || ngx_http_corelog_reply_header(r, "X-Corelog-Account", &v)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (id->domain.len) {
            v.data = ngx_pstrdup(r->pool, &id->domain);
            v.len = id->domain.len;

            if (v.data == NULL
                || ngx_http_corelog_reply_header(r, "X-Corelog-Domain", &v)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (id->project.len) {
            v.data = ngx_pstrdup(r->pool, &id->project);
            v.len = id->project.len;

            if (v.data == NULL
                || ngx_http_corelog_reply_header(r, "X-Corelog-Project", &v)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (status == NGX_HTTP_UNAUTHORIZED) {
        if (llcf->token_check == NGX_HTTP_CORELOG_TOKEN_BEARER) {
            v = (deny == NGX_HTTP_CORELOG_DENY_NO_BEARER) ? bearer : invalid;

            if (ngx_http_corelog_reply_header(r, "WWW-Authenticate", &v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        v = ngx_http_corelog_token_denials[deny];

        if (ngx_http_corelog_reply_header(r, "X-Corelog-Error", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        if (ngx_http_corelog_reply_header(r, "Retry-After", &one) != NGX_OK
            || ngx_http_corelog_reply_header(r, "X-Corelog-Error", &down)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_send_header(r);
}


/* the identity fits a node (a token's, whose CHECKs bound it): 1 or 0 */

static ngx_uint_t
ngx_http_corelog_token_fits(ngx_http_corelog_identity_t *id)
{
    return id->account.len == NGX_HTTP_CORELOG_UUID_LEN
           && id->domain.len <= NGX_HTTP_CORELOG_NAME_MAX
           && id->project.len <= NGX_HTTP_CORELOG_NAME_MAX;
}


/* a cache's live entry for the hash, now the most recent; or NULL */

static ngx_http_corelog_token_node_t *
ngx_http_corelog_token_lookup(ngx_http_corelog_token_cache_t *cache,
    u_char *hash)
{
    ngx_http_corelog_token_node_t  *tn;

    tn = ngx_http_corelog_token_find(&cache->tree, hash);

    if (tn == NULL) {
        return NULL;
    }

    if ((ngx_msec_int_t) (tn->expires - ngx_current_msec) <= 0) {
        ngx_http_corelog_token_remove(cache, tn);
        return NULL;
    }

    ngx_queue_remove(&tn->queue);
    ngx_queue_insert_head(&cache->lru, &tn->queue);

    return tn;
}


/* the tree's node for the hash, or NULL */

static ngx_http_corelog_token_node_t *
ngx_http_corelog_token_find(ngx_rbtree_t *tree, u_char *hash)
{
    ngx_int_t                       rc;
    ngx_rbtree_key_t                key;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_corelog_token_node_t  *tn;

    ngx_memcpy(&key, hash, sizeof(ngx_rbtree_key_t));

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        tn = (ngx_http_corelog_token_node_t *) node;

        rc = ngx_memcmp(hash, tn->hash, NGX_HTTP_CORELOG_HASH_LEN);

        if (rc == 0) {
            return tn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_corelog_token_store(ngx_http_corelog_token_cache_t *cache,
    u_char *hash, ngx_uint_t state, ngx_http_corelog_identity_t *id,
    ngx_msec_t ttl)
{
    ngx_queue_t                    *q;
    ngx_http_corelog_token_node_t  *tn;

    if (id && !ngx_http_corelog_token_fits(id)) {
        return;
    }

    tn = ngx_http_corelog_token_lookup(cache, hash);

    if (tn == NULL) {
        if (cache->count >= cache->max) {
            q = ngx_queue_last(&cache->lru);
            tn = ngx_queue_data(q, ngx_http_corelog_token_node_t, queue);
            ngx_http_corelog_token_remove(cache, tn);

            ngx_http_corelog_stats_count(ngx_http_corelog_worker(),
                                     NGX_HTTP_CORELOG_STATS_TOKEN_EVICTIONS);
        }

        tn = ngx_alloc(sizeof(ngx_http_corelog_token_node_t), ngx_cycle->log);
        if (tn == NULL) {
            return;
        }

        ngx_memcpy(tn->hash, hash, NGX_HTTP_CORELOG_HASH_LEN);
        ngx_memcpy(&tn->node.key, hash, sizeof(ngx_rbtree_key_t));

        ngx_rbtree_insert(&cache->tree, &tn->node);
        ngx_queue_insert_head(&cache->lru, &tn->queue);
        cache->count++;
    }

    tn->expires = ngx_current_msec + ttl;
    tn->state = state;
    tn->domain_len = 0;
    tn->project_len = 0;

    if (id == NULL) {
        return;
    }

    ngx_memcpy(tn->account, id->account.data, NGX_HTTP_CORELOG_UUID_LEN);
    tn->domain_len = id->domain.len;
    ngx_memcpy(tn->domain, id->domain.data, id->domain.len);
    tn->project_len = id->project.len;
    ngx_memcpy(tn->project, id->project.data, id->project.len);
}


static void
ngx_http_corelog_token_remove(ngx_http_corelog_token_cache_t *cache,
    ngx_http_corelog_token_node_t *tn)
{
    ngx_rbtree_delete(&cache->tree, &tn->node);
    ngx_queue_remove(&tn->queue);
    cache->count--;
    ngx_free(tn);
}


static void
ngx_http_corelog_token_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_corelog_token_node_t  *tn, *tt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            tn = (ngx_http_corelog_token_node_t *) node;
            tt = (ngx_http_corelog_token_node_t *) temp;

            p = (ngx_memcmp(tn->hash, tt->hash, NGX_HTTP_CORELOG_HASH_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_int_t
ngx_http_corelog_token_hash(ngx_log_t *log, ngx_http_corelog_token_state_t *ts,
    ngx_str_t *token, u_char *hash)
{
    unsigned int  len;

    if (EVP_DigestInit_ex2(ts->md_ctx, ts->md, NULL) != 1
        || EVP_DigestUpdate(ts->md_ctx, token->data, token->len) != 1
        || EVP_DigestFinal_ex(ts->md_ctx, hash, &len) != 1
        || len != NGX_HTTP_CORELOG_HASH_LEN)
    {
        ngx_log_error(NGX_LOG_CRIT, log, 0,
                      "corelog: SHA-256 of a token failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}
