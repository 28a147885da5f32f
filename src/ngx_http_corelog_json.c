
/*
 * Copyright (C) corelog authors
 *
 * JSON in (the request body, parsed once by jansson) and JSON out (a small
 * writer into one pool buffer, for answers).
 */


#include "ngx_http_corelog.h"


static ngx_int_t ngx_http_corelog_json_load(ngx_pool_t *pool,
    ngx_str_t *body, json_t **json, json_error_t *jerr);
static void *ngx_http_corelog_json_alloc(size_t size);
static void ngx_http_corelog_json_free(void *p);
static void ngx_http_corelog_json_cleanup(void *data);
static ngx_int_t ngx_http_corelog_json_body(ngx_http_request_t *r,
    ngx_pool_t *pool, ngx_str_t *body);
static ngx_int_t ngx_http_corelog_json_scan(ngx_str_t *body,
    ngx_http_corelog_error_t *err);
static u_char *ngx_http_corelog_out_reserve(ngx_http_corelog_out_t *out,
    size_t size);


/*
 * Parses the request body into a JSON object owned by pool, a pool of the
 * parse alone: jansson's allocator is pointed at it for the parse only,
 * the values are never freed one by one, and the whole tree goes with the
 * pool once the route has taken what it keeps.  Before jansson sees the
 * body, its values and depth are counted against fixed bounds, so that a
 * body's cost is bounded by its size and not by its shape.  NGX_DECLINED
 * with err filled for a client fault, NGX_ERROR otherwise.
 */

ngx_int_t
ngx_http_corelog_json_parse(ngx_http_request_t *r, ngx_pool_t *pool,
    json_t **root, ngx_http_corelog_error_t *err)
{
    u_char              *p;
    json_t              *json;
    ngx_int_t            rc;
    ngx_str_t            body;
    json_error_t         jerr;
    u_char               text[JSON_ERROR_TEXT_LENGTH + 64];

    rc = ngx_http_corelog_json_body(r, pool, &body);
    if (rc != NGX_OK) {
        return rc;
    }

    if (body.len == 0) {
        ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                   "Request body is empty: "
                                   "expected a JSON object");
        return NGX_DECLINED;
    }

    if (ngx_http_corelog_json_scan(&body, err) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (ngx_http_corelog_json_load(pool, &body, &json, &jerr) != NGX_OK) {
        return NGX_ERROR;
    }

    if (json == NULL) {
        switch (json_error_code(&jerr)) {

        case json_error_invalid_utf8:
            ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                       "Request body is not valid UTF-8");
            break;

        case json_error_null_character:
            ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                       "Strings must not contain \\u0000");
            break;

        case json_error_out_of_memory:
            return NGX_ERROR;

        default:

            /*
             * jansson's text quotes the body ("near '...'"): its control
             * bytes and cut or invalid UTF-8 are escaped here, so that the
             * message is text whatever the body was.
             */

            p = ngx_cpymem(text, "Malformed JSON: ",
                           sizeof("Malformed JSON: ") - 1);
            p = ngx_http_corelog_log_text(p, text + sizeof(text) - 64,
                                          (u_char *) jerr.text,
                                          ngx_strlen(jerr.text));
            p = ngx_sprintf(p, " (line %d, column %d)", jerr.line,
                            jerr.column);

            body.data = text;
            body.len = p - text;

            err->status = NGX_HTTP_BAD_REQUEST;
            err->message.data = ngx_pstrdup(r->pool, &body);
            if (err->message.data == NULL) {
                return NGX_ERROR;
            }

            err->message.len = body.len;
            break;
        }

        body.data = text;
        body.len = ngx_http_corelog_log_text(text, text + sizeof(text),
                                             (u_char *) jerr.text,
                                             ngx_strlen(jerr.text))
                   - text;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "corelog: client sent invalid JSON: %V", &body);

        return NGX_DECLINED;
    }

    if (!json_is_object(json)) {
        ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                   "Request body must be a JSON object");
        return NGX_DECLINED;
    }

    *root = json;

    return NGX_OK;
}


/*
 * Counts the body's values (every '{', '[', ':' and ',' outside strings
 * starts one) and its depth, in one pass; the text is jansson's to check.
 */

static ngx_int_t
ngx_http_corelog_json_scan(ngx_str_t *body, ngx_http_corelog_error_t *err)
{
    u_char      *p, *last;
    ngx_uint_t   values, depth;

    values = 0;
    depth = 0;

    p = body->data;
    last = p + body->len;

    while (p < last) {

        switch (*p++) {

        case '"':
            while (p < last && *p != '"') {
                if (*p++ == '\\' && p < last) {
                    p++;
                }
            }

            if (p < last) {
                p++;
            }

            break;

        case '{':
        case '[':
            if (++depth > NGX_HTTP_CORELOG_JSON_DEPTH_MAX) {
                ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                           "Request body is nested too "
                                           "deeply (at most "
                                           NGX_HTTP_CORELOG_JSON_DEPTH_TEXT
                                           " levels)");
                return NGX_DECLINED;
            }

            /* fall through */

        case ':':
        case ',':
            if (++values > NGX_HTTP_CORELOG_JSON_VALUES_MAX) {
                ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST,
                                           "Request body has too many JSON "
                                           "values (at most "
                                           NGX_HTTP_CORELOG_JSON_VALUES_TEXT
                                           ")");
                return NGX_DECLINED;
            }

            break;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }

            break;
        }
    }

    return NGX_OK;
}


/*
 * In a worker, jansson allocates from pool (the worker's json_pool while
 * it parses).  Elsewhere (the fuzz harness: no worker, no configuration)
 * it allocates with its own allocator, and the tree is released with the
 * pool all the same.  *json is NULL, with jerr filled, if the body is not
 * JSON; NGX_ERROR: no memory.
 */

static ngx_int_t
ngx_http_corelog_json_load(ngx_pool_t *pool, ngx_str_t *body, json_t **json,
    json_error_t *jerr)
{
    json_free_t                 saved_free;
    json_malloc_t               saved_malloc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_corelog_worker_t  *w;

    w = ngx_http_corelog_worker();

    cln = NULL;
    saved_malloc = NULL;
    saved_free = NULL;

    if (w) {
        json_get_alloc_funcs(&saved_malloc, &saved_free);
        json_set_alloc_funcs(ngx_http_corelog_json_alloc,
                             ngx_http_corelog_json_free);
        w->json_pool = pool;

    } else {
        cln = ngx_pool_cleanup_add(pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }
    }

    *json = json_loadb((const char *) body->data, body->len,
                       JSON_REJECT_DUPLICATES|JSON_DECODE_ANY, jerr);

    if (w) {
        w->json_pool = NULL;
        json_set_alloc_funcs(saved_malloc, saved_free);

    } else {
        cln->handler = ngx_http_corelog_json_cleanup;
        cln->data = *json;
    }

    return NGX_OK;
}


static void *
ngx_http_corelog_json_alloc(size_t size)
{
    ngx_http_corelog_worker_t  *w;

    w = ngx_http_corelog_worker();

    return ngx_palloc(w->json_pool, size);
}


static void
ngx_http_corelog_json_free(void *p)
{
    /* freed with the pool of the parse */
}


static void
ngx_http_corelog_json_cleanup(void *data)
{
    json_t  *json = data;

    if (json) {
        json_decref(json);
    }
}


/* the body as one piece of memory: in place when nginx read it so */

static ngx_int_t
ngx_http_corelog_json_body(ngx_http_request_t *r, ngx_pool_t *pool,
    ngx_str_t *body)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, (size_t) len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);
            if (n == NGX_ERROR || n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "corelog: could not read the request body "
                              "from \"%V\"", &b->file->name);
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        if (b->last > b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


/*
 * Once the body is parsed, its buffers go back to the allocator: a write
 * that waits in the queue holds its row's values, not its body.  Buffers
 * that are not the request pool's own (a body read with the header) are
 * left alone: ngx_pfree() frees only large allocations of that pool.
 */

void
ngx_http_corelog_json_release(ngx_http_request_t *r)
{
    ngx_chain_t               *cl;
    ngx_http_request_body_t   *rb;

    rb = r->request_body;

    if (rb == NULL) {
        return;
    }

    for (cl = rb->bufs; cl; cl = cl->next) {
        if (!cl->buf->in_file && cl->buf->start) {
            (void) ngx_pfree(r->pool, cl->buf->start);
        }
    }

    if (rb->buf && rb->buf->start) {
        (void) ngx_pfree(r->pool, rb->buf->start);
    }

    rb->bufs = NULL;
    rb->buf = NULL;
}


void
ngx_http_corelog_out_init(ngx_http_corelog_out_t *out, ngx_pool_t *pool,
    size_t size)
{
    out->pool = pool;
    out->failed = 0;

    out->start = ngx_pnalloc(pool, size);
    if (out->start == NULL) {
        out->failed = 1;
        out->pos = NULL;
        out->end = NULL;
        return;
    }

    out->pos = out->start;
    out->end = out->start + size;
}


static u_char *
ngx_http_corelog_out_reserve(ngx_http_corelog_out_t *out, size_t size)
{
    u_char  *p;
    size_t   used, n;

    if (out->failed) {
        return NULL;
    }

    if ((size_t) (out->end - out->pos) >= size) {
        return out->pos;
    }

    used = out->pos - out->start;
    n = ngx_max(2 * (size_t) (out->end - out->start), used + size);

    p = ngx_pnalloc(out->pool, n);
    if (p == NULL) {
        out->failed = 1;
        return NULL;
    }

    ngx_memcpy(p, out->start, used);

    /* a large buffer goes back at once: a queued write keeps only one */

    (void) ngx_pfree(out->pool, out->start);

    out->start = p;
    out->pos = p + used;
    out->end = p + n;

    return out->pos;
}


void
ngx_http_corelog_out_raw(ngx_http_corelog_out_t *out, const char *s,
    size_t len)
{
    u_char  *p;

    p = ngx_http_corelog_out_reserve(out, len);
    if (p == NULL) {
        return;
    }

    out->pos = ngx_cpymem(p, s, len);
}


/*
 * A JSON string: quotes, escapes for '"', '\\' and control characters,
 * and U+FFFD for each byte that is not part of valid UTF-8, so that every
 * answer is valid UTF-8 whatever the text came from.
 */

void
ngx_http_corelog_out_str(ngx_http_corelog_out_t *out, ngx_str_t *s)
{
    u_char  *p, *src, *last, ch;
    size_t   n;

    static u_char  hex[] = "0123456789abcdef";

    p = ngx_http_corelog_out_reserve(out, 6 * s->len + 2);
    if (p == NULL) {
        return;
    }

    *p++ = '"';

    src = s->data;
    last = src + s->len;

    while (src < last) {
        ch = *src;

        if (ch >= 0x80) {
            n = ngx_http_corelog_utf8_next(src, last);

            if (n == 0) {
                p = ngx_cpymem(p, "\\ufffd", 6);
                src++;
                continue;
            }

            p = ngx_cpymem(p, src, n);
            src += n;
            continue;
        }

        src++;

        switch (ch) {

        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = ch;
            break;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;

        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;

        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;

        default:
            if (ch < 0x20 || ch == 0x7f) {
                p = ngx_cpymem(p, "\\u00", 4);
                *p++ = hex[ch >> 4];
                *p++ = hex[ch & 0x0f];
                break;
            }

            *p++ = ch;
        }
    }

    *p++ = '"';

    out->pos = p;
}


void
ngx_http_corelog_out_str_or_null(ngx_http_corelog_out_t *out, ngx_str_t *s)
{
    if (s == NULL || s->data == NULL) {
        ngx_http_corelog_out_lit(out, "null");
        return;
    }

    ngx_http_corelog_out_str(out, s);
}


/*
 * An integer; the magnitude of a negative one is taken as unsigned, so
 * that INT64_MIN (a client's custom reference) is no signed overflow.
 */

void
ngx_http_corelog_out_int(ngx_http_corelog_out_t *out, int64_t n)
{
    u_char  *p;

    p = ngx_http_corelog_out_reserve(out, NGX_INT64_LEN);
    if (p == NULL) {
        return;
    }

    if (n < 0) {
        *p++ = '-';
        out->pos = ngx_sprintf(p, "%uL", (uint64_t) 0 - (uint64_t) n);
        return;
    }

    out->pos = ngx_sprintf(p, "%uL", (uint64_t) n);
}


/* the shortest text that reads back as the same double */

void
ngx_http_corelog_out_double(ngx_http_corelog_out_t *out, double d)
{
    int   n;
    char  text[32];

    n = snprintf(text, sizeof(text), "%.15g", d);

    if (strtod(text, NULL) != d) {
        n = snprintf(text, sizeof(text), "%.17g", d);
    }

    ngx_http_corelog_out_raw(out, text, n);
}


/*
 * A string field: NGX_OK with out set to a copy in pool (out->data NULL
 * when an optional field is absent or null), or NGX_DECLINED with the
 * field error added.  max_chars counts UTF-8 characters, max_bytes bytes;
 * 0 is no bound.
 */

ngx_int_t
ngx_http_corelog_json_string(ngx_pool_t *pool, json_t *obj,
    const char *field, ngx_uint_t required, size_t max_chars,
    size_t max_bytes, ngx_str_t *out, ngx_http_corelog_error_t *err)
{
    json_t  *v;

    ngx_str_null(out);

    v = json_object_get(obj, field);

    if (v == NULL || json_is_null(v)) {
        if (required) {
            ngx_http_corelog_error_fieldf(pool, err, field,
                                          "is required");
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (!json_is_string(v)) {
        ngx_http_corelog_error_fieldf(pool, err, field,
                                      required ? "must be a string"
                                               : "must be a string "
                                                 "or null");
        return NGX_DECLINED;
    }

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    if (max_chars
        && (size_t) ngx_http_corelog_utf8_length(out) > max_chars)
    {
        ngx_http_corelog_error_fieldf(pool, err, field,
                                      "must be at most %uz characters",
                                      max_chars);
        return NGX_DECLINED;
    }

    if (max_bytes && out->len > max_bytes) {
        ngx_http_corelog_error_fieldf(pool, err, field,
                                      "must be at most %uz bytes",
                                      max_bytes);
        return NGX_DECLINED;
    }

    /* the tree goes once the body is parsed: keep a copy */

    out->data = ngx_pstrdup(pool, out);
    if (out->data == NULL) {
        err->nomem = 1;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a required UUID string, its 16 bytes to out */

ngx_int_t
ngx_http_corelog_json_uuid(ngx_pool_t *pool, json_t *obj, const char *field,
    u_char *out, ngx_http_corelog_error_t *err)
{
    json_t     *v;
    ngx_str_t   s;

    v = json_object_get(obj, field);

    if (v == NULL || json_is_null(v)) {
        ngx_http_corelog_error_fieldf(pool, err, field, "is required");
        return NGX_DECLINED;
    }

    if (json_is_string(v)) {
        s.data = (u_char *) json_string_value(v);
        s.len = json_string_length(v);

        if (ngx_http_corelog_uuid_bytes(&s, out) == NGX_OK) {
            return NGX_OK;
        }
    }

    ngx_http_corelog_error_fieldf(pool, err, field, "must be a UUID");

    return NGX_DECLINED;
}
