
/*
 * Copyright (C) corelog authors
 *
 * corelog_token_check: the built-in auth location.  It reads the caller's
 * token (Authorization: Bearer, or X-Auth-Token), looks up its SHA-256 in
 * PostgreSQL (or in a per-worker cache with a size bound and a TTL), and
 * answers 204 with X-Corelog-Account/-Domain/-Project, 401, or 503.
 */


#include "ngx_http_corelog.h"

#include <openssl/evp.h>


#define NGX_HTTP_CORELOG_TOKEN_MAX    512
#define NGX_HTTP_CORELOG_HASH_LEN     32
#define NGX_HTTP_CORELOG_NAME_MAX     64


typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  queue;        /* LRU, most recent first */
    u_char                       hash[NGX_HTTP_CORELOG_HASH_LEN];
    ngx_msec_t                   expires;
    size_t                       domain_len;
    size_t                       project_len;
    u_char                       account[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                       domain[NGX_HTTP_CORELOG_NAME_MAX];
    u_char                       project[NGX_HTTP_CORELOG_NAME_MAX];
} ngx_http_corelog_token_node_t;


typedef struct {
    ngx_str_t                    account;
    ngx_str_t                    domain;
    ngx_str_t                    project;
} ngx_http_corelog_identity_t;


typedef struct {
    u_char                       hash[NGX_HTTP_CORELOG_HASH_LEN];
    u_char                       hex[2 * NGX_HTTP_CORELOG_HASH_LEN];
} ngx_http_corelog_token_ctx_t;


static ngx_int_t ngx_http_corelog_token_read(ngx_http_request_t *r,
    ngx_uint_t mode, ngx_str_t *token, const char **reason);
static void ngx_http_corelog_token_looked_up(ngx_http_corelog_op_t *op,
    ngx_int_t rc, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_token_answer(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_corelog_identity_t *id, const char *reason);
static ngx_http_corelog_token_node_t *ngx_http_corelog_token_lookup(
    u_char *hash);
static void ngx_http_corelog_token_store(u_char *hash,
    ngx_http_corelog_identity_t *id, ngx_msec_t ttl);
static void ngx_http_corelog_token_remove(ngx_http_corelog_token_node_t *tn);
static void ngx_http_corelog_token_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_corelog_token_hash(ngx_log_t *log, ngx_str_t *token,
    u_char *hash);


static ngx_http_corelog_stmt_t  ngx_http_corelog_token_stmt = {
    "token_lookup",

    /* always one row: NULLs when the token is unknown */

    "SELECT t.account_id, t.domain_id, t.project_id,"
    "       CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'"
    "            WHEN t.expires_at <= now() THEN 'expired'"
    "            ELSE 'valid' END,"
    "       floor(extract(epoch FROM t.expires_at - now()) * 1000)::bigint"
    "  FROM (SELECT 1) AS one"
    "  LEFT JOIN corelog.tokens AS t"
    "         ON t.token_hash = decode($1, 'hex')",

    1, 0, { 0 }, NULL, 5
};


static ngx_rbtree_t        ngx_http_corelog_token_tree;
static ngx_rbtree_node_t   ngx_http_corelog_token_sentinel;
static ngx_queue_t         ngx_http_corelog_token_lru;
static ngx_uint_t          ngx_http_corelog_token_count;
static ngx_uint_t          ngx_http_corelog_token_ready;

/* SHA-256, fetched once per worker: an implicit fetch on every digest is slow */
static EVP_MD             *ngx_http_corelog_token_md;
static EVP_MD_CTX         *ngx_http_corelog_token_md_ctx;


ngx_int_t
ngx_http_corelog_token_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      token;
    const char                    *reason;
    ngx_http_corelog_op_t         *op;
    ngx_http_corelog_identity_t    id;
    ngx_http_corelog_loc_conf_t   *llcf;
    ngx_http_corelog_token_ctx_t  *tc;
    ngx_http_corelog_token_node_t *tn;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_corelog_module);

    if (ngx_http_corelog_token_read(r, llcf->token_check, &token, &reason)
        != NGX_OK)
    {
        return ngx_http_corelog_token_answer(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                             reason);
    }

    tc = ngx_palloc(r->pool, sizeof(ngx_http_corelog_token_ctx_t));
    if (tc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_corelog_token_hash(r->connection->log, &token, tc->hash)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tn = ngx_http_corelog_token_lookup(tc->hash);

    if (tn) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "corelog token: cache hit");

        id.account.data = tn->account;
        id.account.len = NGX_HTTP_CORELOG_UUID_LEN;
        id.domain.data = tn->domain;
        id.domain.len = tn->domain_len;
        id.project.data = tn->project;
        id.project.len = tn->project_len;

        return ngx_http_corelog_token_answer(r, NGX_HTTP_NO_CONTENT, &id,
                                             NULL);
    }

    op = ngx_http_corelog_batch_op(r, &ngx_http_corelog_token_stmt);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_hex_dump(tc->hex, tc->hash, NGX_HTTP_CORELOG_HASH_LEN);

    op->values[0].data = tc->hex;
    op->values[0].len = sizeof(tc->hex);
    op->handler = ngx_http_corelog_token_looked_up;
    op->data = tc;

    /* as an upstream would: the request waits for our event */

    r->main->count++;

    rc = ngx_http_corelog_batch_post(op);

    if (rc != NGX_OK) {
        r->main->count--;

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "corelog: cannot check the token: %s",
                      rc == NGX_BUSY ? "write queue full"
                                     : "PostgreSQL unavailable");

        return ngx_http_corelog_token_answer(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             NULL, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_corelog_token_read(ngx_http_request_t *r, ngx_uint_t mode,
    ngx_str_t *token, const char **reason)
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
        *reason = (mode == NGX_HTTP_CORELOG_TOKEN_BEARER)
                  ? "Missing bearer token" : "Missing X-Auth-Token header";
        return NGX_DECLINED;
    }

    p = found->data;
    last = p + found->len;

    if (mode == NGX_HTTP_CORELOG_TOKEN_BEARER) {
        if (found->len < sizeof("Bearer ") - 1
            || ngx_strncasecmp(p, (u_char *) "Bearer ", sizeof("Bearer ") - 1)
               != 0)
        {
            *reason = "Authorization must be \"Bearer <token>\"";
            return NGX_DECLINED;
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

    if (token->len == 0 || token->len > NGX_HTTP_CORELOG_TOKEN_MAX) {
        *reason = "Invalid token";
        return NGX_DECLINED;
    }

    for ( /* void */ ; p < last; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            *reason = "Invalid token";
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static void
ngx_http_corelog_token_looked_up(ngx_http_corelog_op_t *op, ngx_int_t rc,
    PGresult *res, int row)
{
    ngx_int_t                      ms;
    ngx_msec_t                     ttl;
    const char                    *state;
    ngx_http_request_t            *r;
    ngx_http_corelog_identity_t    id;
    ngx_http_corelog_main_conf_t  *cmcf;
    ngx_http_corelog_token_ctx_t  *tc;

    r = op->request;
    tc = op->data;

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "corelog: token lookup failed with status %i", rc);

        /* unavailable or slow: 503; anything else (no schema...): 500 */

        if (rc == NGX_HTTP_SERVICE_UNAVAILABLE
            || rc == NGX_HTTP_GATEWAY_TIME_OUT)
        {
            rc = ngx_http_corelog_token_answer(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               NULL, NULL);
        } else {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_corelog_finalize(r, rc);
        return;
    }

    if (PQgetisnull(res, row, 0)) {
        rc = ngx_http_corelog_token_answer(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                           "Invalid token");
        ngx_http_corelog_finalize(r, rc);
        return;
    }

    state = PQgetvalue(res, row, 3);

    if (ngx_strcmp(state, "valid") != 0) {
        rc = ngx_http_corelog_token_answer(r, NGX_HTTP_UNAUTHORIZED, NULL,
                                           state[0] == 'r' ? "Token revoked"
                                                           : "Token expired");
        ngx_http_corelog_finalize(r, rc);
        return;
    }

    id.account.data = (u_char *) PQgetvalue(res, row, 0);
    id.account.len = PQgetlength(res, row, 0);
    id.domain.data = (u_char *) PQgetvalue(res, row, 1);
    id.domain.len = PQgetlength(res, row, 1);
    id.project.data = (u_char *) PQgetvalue(res, row, 2);
    id.project.len = PQgetlength(res, row, 2);

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_corelog_module);

    if (cmcf->token_cache_size) {
        ttl = cmcf->token_cache_ttl;

        if (!PQgetisnull(res, row, 4)) {
            ms = ngx_atoi((u_char *) PQgetvalue(res, row, 4),
                          PQgetlength(res, row, 4));

            if (ms != NGX_ERROR && (ngx_msec_t) ms < ttl) {
                ttl = (ngx_msec_t) ms;
            }
        }

        if (ttl) {
            ngx_http_corelog_token_store(tc->hash, &id, ttl);
        }
    }

    /* the values live in res: the answer copies them into the pool */

    rc = ngx_http_corelog_token_answer(r, NGX_HTTP_NO_CONTENT, &id, NULL);
    ngx_http_corelog_finalize(r, rc);
}


/*
 * The answer of the auth location: a status and headers, no body.  The
 * values are copied into the request pool.
 */

static ngx_int_t
ngx_http_corelog_token_answer(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_corelog_identity_t *id, const char *reason)
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
            if (ngx_http_corelog_reply_header(r, "WWW-Authenticate",
                                              reason[0] == 'M' ? &bearer
                                                               : &invalid)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        v.data = (u_char *) reason;
        v.len = ngx_strlen(reason);

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


/* the per-worker token cache: an rbtree on the hash, and an LRU list */

static ngx_http_corelog_token_node_t *
ngx_http_corelog_token_lookup(u_char *hash)
{
    ngx_int_t                       rc;
    ngx_rbtree_key_t                key;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_corelog_token_node_t  *tn;

    if (!ngx_http_corelog_token_ready) {
        return NULL;
    }

    ngx_memcpy(&key, hash, sizeof(ngx_rbtree_key_t));

    node = ngx_http_corelog_token_tree.root;
    sentinel = ngx_http_corelog_token_tree.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        tn = (ngx_http_corelog_token_node_t *) node;

        rc = ngx_memcmp(hash, tn->hash, NGX_HTTP_CORELOG_HASH_LEN);

        if (rc == 0) {
            if ((ngx_msec_int_t) (tn->expires - ngx_current_msec) <= 0) {
                ngx_http_corelog_token_remove(tn);
                return NULL;
            }

            ngx_queue_remove(&tn->queue);
            ngx_queue_insert_head(&ngx_http_corelog_token_lru, &tn->queue);

            return tn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_corelog_token_store(u_char *hash, ngx_http_corelog_identity_t *id,
    ngx_msec_t ttl)
{
    ngx_queue_t                    *q;
    ngx_http_corelog_main_conf_t   *cmcf;
    ngx_http_corelog_token_node_t  *tn;

    if (id->account.len != NGX_HTTP_CORELOG_UUID_LEN
        || id->domain.len > NGX_HTTP_CORELOG_NAME_MAX
        || id->project.len > NGX_HTTP_CORELOG_NAME_MAX)
    {
        return;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_corelog_module);

    if (!ngx_http_corelog_token_ready) {
        ngx_rbtree_init(&ngx_http_corelog_token_tree,
                        &ngx_http_corelog_token_sentinel,
                        ngx_http_corelog_token_insert_value);
        ngx_queue_init(&ngx_http_corelog_token_lru);
        ngx_http_corelog_token_count = 0;
        ngx_http_corelog_token_ready = 1;
    }

    tn = ngx_http_corelog_token_lookup(hash);

    if (tn == NULL) {
        if (ngx_http_corelog_token_count >= cmcf->token_cache_size) {
            q = ngx_queue_last(&ngx_http_corelog_token_lru);
            tn = ngx_queue_data(q, ngx_http_corelog_token_node_t, queue);
            ngx_http_corelog_token_remove(tn);
        }

        tn = ngx_alloc(sizeof(ngx_http_corelog_token_node_t), ngx_cycle->log);
        if (tn == NULL) {
            return;
        }

        ngx_memcpy(tn->hash, hash, NGX_HTTP_CORELOG_HASH_LEN);
        ngx_memcpy(&tn->node.key, hash, sizeof(ngx_rbtree_key_t));

        ngx_rbtree_insert(&ngx_http_corelog_token_tree, &tn->node);
        ngx_queue_insert_head(&ngx_http_corelog_token_lru, &tn->queue);
        ngx_http_corelog_token_count++;
    }

    tn->expires = ngx_current_msec + ttl;
    ngx_memcpy(tn->account, id->account.data, NGX_HTTP_CORELOG_UUID_LEN);
    tn->domain_len = id->domain.len;
    ngx_memcpy(tn->domain, id->domain.data, id->domain.len);
    tn->project_len = id->project.len;
    ngx_memcpy(tn->project, id->project.data, id->project.len);
}


static void
ngx_http_corelog_token_remove(ngx_http_corelog_token_node_t *tn)
{
    ngx_rbtree_delete(&ngx_http_corelog_token_tree, &tn->node);
    ngx_queue_remove(&tn->queue);
    ngx_http_corelog_token_count--;
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
ngx_http_corelog_token_hash(ngx_log_t *log, ngx_str_t *token, u_char *hash)
{
    unsigned int  len;

    if (ngx_http_corelog_token_md_ctx == NULL) {
        ngx_http_corelog_token_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (ngx_http_corelog_token_md == NULL) {
            ngx_log_error(NGX_LOG_CRIT, log, 0,
                          "corelog: EVP_MD_fetch(SHA256) failed");
            return NGX_ERROR;
        }

        ngx_http_corelog_token_md_ctx = EVP_MD_CTX_new();
        if (ngx_http_corelog_token_md_ctx == NULL) {
            ngx_log_error(NGX_LOG_CRIT, log, 0,
                          "corelog: EVP_MD_CTX_new() failed");
            EVP_MD_free(ngx_http_corelog_token_md);
            ngx_http_corelog_token_md = NULL;
            return NGX_ERROR;
        }
    }

    if (EVP_DigestInit_ex2(ngx_http_corelog_token_md_ctx,
                           ngx_http_corelog_token_md, NULL) != 1
        || EVP_DigestUpdate(ngx_http_corelog_token_md_ctx, token->data,
                            token->len) != 1
        || EVP_DigestFinal_ex(ngx_http_corelog_token_md_ctx, hash, &len) != 1
        || len != NGX_HTTP_CORELOG_HASH_LEN)
    {
        ngx_log_error(NGX_LOG_CRIT, log, 0,
                      "corelog: SHA-256 of a token failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_corelog_token_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                    *q;
    ngx_http_corelog_token_node_t  *tn;

    if (ngx_http_corelog_token_md_ctx) {
        EVP_MD_CTX_free(ngx_http_corelog_token_md_ctx);
        EVP_MD_free(ngx_http_corelog_token_md);
        ngx_http_corelog_token_md_ctx = NULL;
        ngx_http_corelog_token_md = NULL;
    }

    if (!ngx_http_corelog_token_ready) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_corelog_token_lru)) {
        q = ngx_queue_head(&ngx_http_corelog_token_lru);
        tn = ngx_queue_data(q, ngx_http_corelog_token_node_t, queue);
        ngx_http_corelog_token_remove(tn);
    }

    ngx_http_corelog_token_ready = 0;
}
