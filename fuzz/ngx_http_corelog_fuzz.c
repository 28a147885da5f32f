
/*
 * Copyright (C) corelog authors
 *
 * The libFuzzer targets' shared part.  nginx and the module are linked in
 * statically (scripts/fuzz.sh); nothing here runs an event loop, opens a
 * socket or reads a configuration: the targets call the module's functions
 * the way its handlers do, on requests built here.
 */


#include "ngx_http_corelog_fuzz.h"

#include <math.h>


static void ngx_http_corelog_fuzz_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len);
static void ngx_http_corelog_fuzz_escape(FILE *f, const u_char *p,
    size_t len, size_t max);
static uint32_t ngx_http_corelog_fuzz_hash(const u_char *p, size_t len);
static ngx_int_t ngx_http_corelog_fuzz_bufs(ngx_http_corelog_fuzz_body_t *fb,
    ngx_http_request_body_t *rb);
static ngx_int_t ngx_http_corelog_fuzz_buf(ngx_pool_t *pool,
    ngx_chain_t ***ll, const u_char *p, size_t len, ngx_uint_t last);
static ngx_int_t ngx_http_corelog_fuzz_body_op(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static void ngx_http_corelog_fuzz_check_values(
    ngx_http_corelog_fuzz_body_t *fb);
static void ngx_http_corelog_fuzz_check_error(
    ngx_http_corelog_fuzz_body_t *fb);
static ngx_str_t *ngx_http_corelog_fuzz_value_text(
    ngx_http_corelog_fuzz_body_t *fb, ngx_uint_t col, const char *name);


ngx_log_t                    ngx_http_corelog_fuzz_log;
ngx_uint_t                   ngx_http_corelog_fuzz_nemerg;

static ngx_open_file_t       ngx_http_corelog_fuzz_log_file;
static ngx_cycle_t           ngx_http_corelog_fuzz_cycle;
static ngx_uint_t            ngx_http_corelog_fuzz_verbose;



void
ngx_http_corelog_fuzz_init(void)
{
    char        *env;
    ngx_uint_t   n;

    ngx_pagesize = getpagesize();
    for (n = ngx_pagesize; n >>= 1; ngx_pagesize_shift++) { /* void */ }
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;

    ngx_time_init();

    /* nginx writes [emerg] lines to stderr as well unless told not to */
    ngx_use_stderr = 0;

    env = getenv("CORELOG_FUZZ_LOG");
    ngx_http_corelog_fuzz_verbose = (env && env[0] && env[0] != '0');

    ngx_http_corelog_fuzz_log_file.fd = ngx_stderr;
    ngx_str_set(&ngx_http_corelog_fuzz_log_file.name, "stderr");

    ngx_http_corelog_fuzz_log.file = &ngx_http_corelog_fuzz_log_file;
    ngx_http_corelog_fuzz_log.log_level = ngx_http_corelog_fuzz_verbose
                                          ? NGX_LOG_INFO : NGX_LOG_ERR;
    ngx_http_corelog_fuzz_log.writer = ngx_http_corelog_fuzz_writer;

    /* the module indices, as ngx_init_cycle() and ngx_http_block() set */

    if (ngx_preinit_modules() != NGX_OK) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "ngx_preinit_modules() failed");
    }

    ngx_http_corelog_fuzz_cycle.log = &ngx_http_corelog_fuzz_log;
    ngx_http_corelog_fuzz_cycle.modules = ngx_modules;

    for (n = 0; ngx_modules[n]; n++) { /* void */ }
    ngx_http_corelog_fuzz_cycle.modules_n = n;

    ngx_http_corelog_fuzz_cycle.pool = ngx_create_pool(NGX_CYCLE_POOL_SIZE,
                                                   &ngx_http_corelog_fuzz_log);
    if (ngx_http_corelog_fuzz_cycle.pool == NULL) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "no memory");
    }

    ngx_cycle = &ngx_http_corelog_fuzz_cycle;

    ngx_http_max_module = ngx_count_modules(&ngx_http_corelog_fuzz_cycle,
                                            NGX_HTTP_MODULE);

    if (ngx_http_corelog_module.ctx_index >= ngx_http_max_module) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "no ctx_index for the module");
    }

}


static void
ngx_http_corelog_fuzz_writer(ngx_log_t *log, ngx_uint_t level, u_char *buf,
    size_t len)
{
    if (level == NGX_LOG_EMERG) {
        ngx_http_corelog_fuzz_nemerg++;
    }

    if (ngx_http_corelog_fuzz_verbose) {
        (void) ngx_write_fd(ngx_stderr, buf, len);
        (void) ngx_write_fd(ngx_stderr, "\n", 1);
    }
}


void
ngx_http_corelog_fuzz_fail(const u_char *data, size_t size, const char *fmt,
    ...)
{
    va_list  args;

    fprintf(stderr, "\ncorelog-fuzz: INVARIANT BROKEN: ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    if (data) {
        fprintf(stderr, "\ncorelog-fuzz: input (%zu bytes): \"", size);
        ngx_http_corelog_fuzz_escape(stderr, data, size, 2048);
        fprintf(stderr, "\"");
    }

    fprintf(stderr, "\n");

    abort();
}


/* C string escapes: printable ASCII as is, the rest as \xNN */

static void
ngx_http_corelog_fuzz_escape(FILE *f, const u_char *p, size_t len,
    size_t max)
{
    size_t  i;

    for (i = 0; i < len && i < max; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            fprintf(f, "\\%c", p[i]);

        } else if (p[i] >= 0x20 && p[i] < 0x7f) {
            fputc(p[i], f);

        } else {
            fprintf(f, "\\x%02x", p[i]);
        }
    }

    if (len > max) {
        fprintf(f, "...(%zu more bytes)", len - max);
    }
}


/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing over
 * U+10FFFF; never a NUL; control characters (C0 and DEL) only when ctl.
 * NULL when valid, else what is wrong.
 */

const char *
ngx_http_corelog_fuzz_utf8(const u_char *p, size_t len, ngx_uint_t ctl)
{
    u_char        c;
    uint32_t      u, min;
    const u_char *last;
    ngx_uint_t    n, i;

    last = p + len;

    while (p < last) {
        c = *p++;

        if (c < 0x80) {
            if (c == 0) {
                return "a NUL byte";
            }

            if (!ctl && (c < 0x20 || c == 0x7f)) {
                return "a control character";
            }

            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            u = c & 0x1f;
            min = 0x80;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            u = c & 0x0f;
            min = 0x800;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            u = c & 0x07;
            min = 0x10000;

        } else {
            return "an invalid UTF-8 lead byte";
        }

        if ((size_t) (last - p) < n) {
            return "a truncated UTF-8 sequence";
        }

        for (i = 0; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return "a truncated UTF-8 sequence";
            }

            u = (u << 6) | (p[i] & 0x3f);
        }

        p += n;

        if (u < min) {
            return "an overlong UTF-8 sequence";
        }

        if (u >= 0xd800 && u <= 0xdfff) {
            return "a UTF-8 encoded surrogate";
        }

        if (u > 0x10ffff) {
            return "a code point over U+10FFFF";
        }
    }

    return NULL;
}


size_t
ngx_http_corelog_fuzz_utf8_chars(const u_char *p, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


/* FNV-1a: picks the buffer layout and the configuration of an input */

static uint32_t
ngx_http_corelog_fuzz_hash(const u_char *p, size_t len)
{
    size_t    i;
    uint32_t  h;

    h = 2166136261u;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 16777619u;
    }

    return h;
}


ngx_int_t
ngx_http_corelog_fuzz_request(ngx_http_corelog_fuzz_body_t *fb,
    ngx_http_corelog_api_t *api, const uint8_t *data, size_t size)
{
    ngx_pool_t                    *pool;
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_corelog_ctx_t        *ctx;
    ngx_http_request_body_t       *rb;
    ngx_http_corelog_loc_conf_t   *llcf;
    ngx_http_corelog_main_conf_t  *cmcf;

    ngx_memzero(fb, sizeof(ngx_http_corelog_fuzz_body_t));

    fb->data = data;
    fb->size = size;
    fb->hash = ngx_http_corelog_fuzz_hash(data, size);

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &ngx_http_corelog_fuzz_log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    fb->pool = pool;

    c = ngx_pcalloc(pool, sizeof(ngx_connection_t));
    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    rb = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));
    ctx = ngx_pcalloc(pool, sizeof(ngx_http_corelog_ctx_t));
    llcf = ngx_pcalloc(pool, sizeof(ngx_http_corelog_loc_conf_t));
    cmcf = ngx_pcalloc(pool, sizeof(ngx_http_corelog_main_conf_t));

    if (c == NULL || r == NULL || rb == NULL || ctx == NULL || llcf == NULL
        || cmcf == NULL)
    {
        return NGX_ERROR;
    }

    c->log = &ngx_http_corelog_fuzz_log;
    c->pool = pool;

    r->pool = pool;
    r->connection = c;
    r->main = r;
    r->method = NGX_HTTP_POST;
    r->request_body_in_single_buf = 1;

    r->ctx = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    r->main_conf = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    r->srv_conf = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    r->loc_conf = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);

    if (r->ctx == NULL || r->main_conf == NULL || r->srv_conf == NULL
        || r->loc_conf == NULL)
    {
        return NGX_ERROR;
    }

    /* the merged location: the route; the targets add api_args and so on */

    llcf->api = api;
    llcf->resource_types = NULL;
    ngx_str_null(&llcf->auth_uri);

    cmcf->request_id_index = NGX_ERROR;

    r->loc_conf[ngx_http_corelog_module.ctx_index] = llcf;
    r->main_conf[ngx_http_corelog_module.ctx_index] = cmcf;

    /* what the access phase left: an allowed identity */

    ctx->api = api;
    ctx->auth.status = NGX_HTTP_OK;
    ctx->auth.started = 1;
    ctx->auth.done = 1;
    ctx->auth.allowed = 1;
    ctx->body_ours = 1;             /* the body is freed once parsed */
    ngx_str_set(&ctx->auth.account, NGX_HTTP_CORELOG_FUZZ_ACCOUNT);
    ngx_str_set(&ctx->auth.domain, NGX_HTTP_CORELOG_FUZZ_DOMAIN);
    ngx_str_set(&ctx->auth.project, NGX_HTTP_CORELOG_FUZZ_PROJECT);

    ngx_http_set_ctx(r, ctx, ngx_http_corelog_module);

    r->request_body = rb;

    if (ngx_http_corelog_fuzz_bufs(fb, rb) != NGX_OK) {
        return NGX_ERROR;
    }

    fb->r = r;
    fb->ctx = ctx;
    fb->llcf = llcf;

    return NGX_OK;
}


/*
 * The body as nginx may hand it over: one buffer (half of the inputs: the
 * in-place path), two or three buffers, or those followed by an empty
 * last buffer (a zeroed ngx_buf_t with last_buf, as the length and chunked
 * filters of ngx_http_request_body.c make).  Each piece is its own
 * allocation of its exact size, so that ASan sees a read past it.
 */

static ngx_int_t
ngx_http_corelog_fuzz_bufs(ngx_http_corelog_fuzz_body_t *fb,
    ngx_http_request_body_t *rb)
{
    size_t          size, cut1, cut2;
    uint32_t        h;
    ngx_uint_t      pieces, empty_last;
    ngx_chain_t   **ll;
    const u_char   *p;

    h = fb->hash;
    p = fb->data;
    size = fb->size;

    ll = &rb->bufs;
    rb->last_saved = 1;

    if (size == 0) {
        /* Content-Length: 0 gives the empty last buffer; else no bufs */
        return (h & 1) ? ngx_http_corelog_fuzz_buf(fb->pool, &ll, NULL, 0, 1)
                       : NGX_OK;
    }

    switch (h & 7) {
    case 4:
        pieces = 2;
        empty_last = 0;
        break;
    case 5:
        pieces = 3;
        empty_last = 0;
        break;
    case 6:
        pieces = 1;
        empty_last = 1;
        break;
    case 7:
        pieces = 2;
        empty_last = 1;
        break;
    default:
        pieces = 1;
        empty_last = 0;
    }

    if (pieces > size) {
        pieces = size;
    }

    cut1 = size;
    cut2 = size;

    if (pieces >= 2) {
        cut1 = 1 + (h >> 8) % (size - pieces + 1);
    }

    if (pieces == 3) {
        cut2 = cut1 + 1 + (h >> 20) % (size - cut1 - 1);
    }

    if (ngx_http_corelog_fuzz_buf(fb->pool, &ll, p, cut1,
                                  pieces == 1 && !empty_last)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pieces >= 2
        && ngx_http_corelog_fuzz_buf(fb->pool, &ll, p + cut1, cut2 - cut1,
                                     pieces == 2 && !empty_last)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pieces == 3
        && ngx_http_corelog_fuzz_buf(fb->pool, &ll, p + cut2, size - cut2,
                                     !empty_last)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (empty_last) {
        return ngx_http_corelog_fuzz_buf(fb->pool, &ll, NULL, 0, 1);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_fuzz_buf(ngx_pool_t *pool, ngx_chain_t ***ll,
    const u_char *p, size_t len, ngx_uint_t last)
{
    u_char       *m;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_calloc_buf(pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (len) {
        m = ngx_pnalloc(pool, len);
        if (m == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(m, p, len);

        b->temporary = 1;
        b->start = m;
        b->pos = m;
        b->last = m + len;
        b->end = m + len;
    }

    b->last_buf = last;

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    **ll = cl;
    *ll = &cl->next;

    return NGX_OK;
}


/*
 * THE call under test: what ngx_http_corelog_body_handler() runs between
 * reading the body and queueing the write (JSON parse, then the route's
 * prepare()), in one place should its name or arguments change.
 */

static ngx_int_t
ngx_http_corelog_fuzz_body_op(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    return ngx_http_corelog_body_op(r, ctx, op, err);
}


void
ngx_http_corelog_fuzz_run(ngx_http_corelog_fuzz_body_t *fb)
{
    ngx_http_corelog_op_t  *op;

    /* what the handler leaves set: nfields; the rest is poisoned */

    ngx_memset(&fb->err, 0xa5, sizeof(ngx_http_corelog_error_t));
    fb->err.status = 0;
    ngx_str_null(&fb->err.message);
    fb->err.nfields = 0;

    op = ngx_http_corelog_queue_op(fb->r, fb->ctx->api->stmt);
    if (op == NULL) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "ngx_http_corelog_queue_op() failed");
    }

    op->data = fb->ctx;
    fb->op = op;

    fb->rc = ngx_http_corelog_fuzz_body_op(fb->r, fb->ctx, op, &fb->err);
}


void
ngx_http_corelog_fuzz_check(ngx_http_corelog_fuzz_body_t *fb)
{
    ngx_uint_t                 i;
    ngx_http_corelog_out_t     out;
    ngx_http_corelog_value_t  *v;

    if (ngx_http_corelog_fuzz_verbose) {
        /* CORELOG_FUZZ_LOG=1: what became of the input */

        fprintf(stderr, "corelog-fuzz: layout %u, rc %ld",
                (unsigned) (fb->hash & 7), (long) fb->rc);

        if (fb->rc == NGX_DECLINED) {
            fprintf(stderr, ", %lu \"", (unsigned long) fb->err.status);
            ngx_http_corelog_fuzz_escape(stderr, fb->err.message.data,
                                         fb->err.message.len, 512);
            fprintf(stderr, "\"");

            for (i = 0; i < fb->err.nfields; i++) {
                fprintf(stderr, "\n    %.*s: %.*s",
                        (int) fb->err.fields[i].field.len,
                        fb->err.fields[i].field.data,
                        (int) fb->err.fields[i].message.len,
                        fb->err.fields[i].message.data);
            }

        } else if (fb->rc == NGX_OK) {
            for (i = 0; i < fb->op->stmt->nparams; i++) {
                fprintf(stderr, "\n    $%lu: ", (unsigned long) i + 2);

                v = &fb->op->values[i];

                if (v->type == NGX_HTTP_CORELOG_COL_BYTEA) {
                    fprintf(stderr, "%lu bytes", (unsigned long) v->u.text.len);
                    continue;
                }

                ngx_http_corelog_out_init(&out, fb->pool, 64);
                ngx_http_corelog_value_json(&out, v);

                if (!out.failed) {
                    ngx_http_corelog_fuzz_escape(stderr, out.start,
                                                 out.pos - out.start, 200);
                }
            }
        }

        fprintf(stderr, "\n");
    }

    switch (fb->rc) {

    case NGX_OK:
        ngx_http_corelog_fuzz_check_values(fb);
        break;

    case NGX_DECLINED:
        ngx_http_corelog_fuzz_check_error(fb);
        break;

    default:
        /* NGX_ERROR is for no memory: never here, with 64K inputs */
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "rc %ld: neither NGX_OK nor NGX_DECLINED",
                                   (long) fb->rc);
    }
}


void
ngx_http_corelog_fuzz_done(ngx_http_corelog_fuzz_body_t *fb)
{
    if (fb->pool) {
        ngx_destroy_pool(fb->pool);
        fb->pool = NULL;
    }
}


/* NGX_OK: every value fits its column's type (ngx_http_corelog_stmt_t) */

static void
ngx_http_corelog_fuzz_check_values(ngx_http_corelog_fuzz_body_t *fb)
{
    ngx_uint_t                      i, type;
    const char                     *bad;
    ngx_http_corelog_op_t          *op;
    ngx_http_corelog_value_t       *v;
    const ngx_http_corelog_stmt_t  *stmt;

    op = fb->op;
    stmt = fb->ctx->api->stmt;

    if (op->stmt != stmt || op->state != NGX_HTTP_CORELOG_OP_NEW
        || op->request != fb->r)
    {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with the op changed");
    }

    for (i = 0; i < stmt->nparams; i++) {
        v = &op->values[i];
        type = stmt->columns[i].type;

        if (v->type != type) {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                       "column %lu (%s): a value of type "
                                       "%lu, not %lu", (unsigned long) i,
                                       stmt->columns[i].name,
                                       (unsigned long) v->type,
                                       (unsigned long) type);
        }

        if (v->null) {
            continue;
        }

        bad = NULL;

        switch (type) {

        case NGX_HTTP_CORELOG_COL_TEXT:
            /* PostgreSQL's text: UTF-8 (the database's), never a NUL */
            bad = ngx_http_corelog_fuzz_utf8(v->u.text.data, v->u.text.len,
                                             1);
            break;

        case NGX_HTTP_CORELOG_COL_BOOL:
            if (v->u.boolean > 1) {
                bad = "not 0 or 1";
            }
            break;

        case NGX_HTTP_CORELOG_COL_FLOAT8:
            if (!isfinite(v->u.float8)) {
                bad = "not a finite double";
            }
            break;

        case NGX_HTTP_CORELOG_COL_TIMESTAMPTZ:
            /* after 2020-01-01, in whole milliseconds or seconds */
            if (v->u.usec < INT64_C(1577836800000000)
                || v->u.usec % (v->seconds ? 1000000 : 1000) != 0)
            {
                bad = "not a time now, in ms or s";
            }
            break;

        default: /* UUID, INT4, BYTEA: any bytes */
            break;
        }

        if (bad) {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                       "column %lu (type %lu): %s",
                                       (unsigned long) i,
                                       (unsigned long) type, bad);
        }
    }
}


/*
 * NGX_DECLINED: a 4xx whose message and field errors are clean text: valid
 * UTF-8 without control characters (they end up in JSON and in the error
 * log); the first field error is also the message.
 */

static void
ngx_http_corelog_fuzz_check_error(ngx_http_corelog_fuzz_body_t *fb)
{
    ngx_str_t                  *m;
    ngx_uint_t                  i;
    const char                 *bad;
    ngx_http_corelog_error_t   *err;
    ngx_http_corelog_field_error_t  *fe;

    err = &fb->err;
    m = &err->message;

    if (err->status < 400 || err->status > 499) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_DECLINED with status %lu",
                                   (unsigned long) err->status);
    }

    if (m->data == NULL || m->len == 0) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_DECLINED without a message");
    }

    bad = ngx_http_corelog_fuzz_utf8(m->data, m->len, 0);

    if (bad) {
        fprintf(stderr, "corelog-fuzz: message: \"");
        ngx_http_corelog_fuzz_escape(stderr, m->data, m->len, 512);
        fprintf(stderr, "\"\n");
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "error message with %s", bad);
    }

    if (err->nfields > NGX_HTTP_CORELOG_MAX_FIELD_ERRORS) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size, "%lu field errors",
                                   (unsigned long) err->nfields);
    }

    for (i = 0; i < err->nfields; i++) {
        fe = &err->fields[i];

        if (fe->field.data == NULL || fe->field.len == 0
            || fe->message.data == NULL || fe->message.len == 0)
        {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                       "field error %lu is empty",
                                       (unsigned long) i);
        }

        bad = ngx_http_corelog_fuzz_utf8(fe->field.data, fe->field.len, 0);
        if (bad == NULL) {
            bad = ngx_http_corelog_fuzz_utf8(fe->message.data,
                                             fe->message.len, 0);
        }

        if (bad) {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                       "field error %lu with %s",
                                       (unsigned long) i, bad);
        }
    }

    if (err->nfields
        && (m->len != err->fields[0].message.len
            || ngx_memcmp(m->data, err->fields[0].message.data, m->len) != 0))
    {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "the message is not the first field "
                                   "error's");
    }
}


/* a column's value after NGX_OK as text (a UUID's 36 characters), or NULL */

static ngx_str_t *
ngx_http_corelog_fuzz_value_text(ngx_http_corelog_fuzz_body_t *fb,
    ngx_uint_t col, const char *name)
{
    ngx_str_t                 *s;
    ngx_http_corelog_value_t  *v;

    v = &fb->op->values[col];

    if (v->null) {
        return NULL;
    }

    if (v->type == NGX_HTTP_CORELOG_COL_TEXT) {
        return &v->u.text;
    }

    if (v->type != NGX_HTTP_CORELOG_COL_UUID) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with %s neither text nor a UUID",
                                   name);
    }

    s = ngx_palloc(fb->pool, sizeof(ngx_str_t) + NGX_HTTP_CORELOG_UUID_LEN);
    if (s == NULL) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size, "no memory");
    }

    s->data = (u_char *) (s + 1);
    s->len = ngx_http_corelog_uuid_text(s->data, v->u.uuid) - s->data;

    return s;
}


/* a TEXT column after NGX_OK: presence and length bounds (0: none) */

void
ngx_http_corelog_fuzz_text(ngx_http_corelog_fuzz_body_t *fb, ngx_uint_t col,
    const char *name, ngx_uint_t nullable, size_t min_chars,
    size_t max_chars, size_t max_bytes)
{
    size_t      chars;
    ngx_str_t  *v;

    v = ngx_http_corelog_fuzz_value_text(fb, col, name);

    if (v == NULL) {
        if (!nullable) {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                       "NGX_OK without %s", name);
        }

        return;
    }

    chars = ngx_http_corelog_fuzz_utf8_chars(v->data, v->len);

    if (chars < min_chars || (max_chars && chars > max_chars)
        || (max_bytes && v->len > max_bytes))
    {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with %s of %lu characters, "
                                   "%lu bytes", name, (unsigned long) chars,
                                   (unsigned long) v->len);
    }
}


void
ngx_http_corelog_fuzz_one_of(ngx_http_corelog_fuzz_body_t *fb,
    ngx_uint_t col, const char *name, const char **allowed)
{
    ngx_str_t  *v;

    v = ngx_http_corelog_fuzz_value_text(fb, col, name);

    if (v) {
        for ( /* void */ ; *allowed; allowed++) {
            if (ngx_strlen(*allowed) == v->len
                && ngx_memcmp(*allowed, v->data, v->len) == 0)
            {
                return;
            }
        }
    }

    ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                               "NGX_OK with %s not one of the allowed", name);
}


void
ngx_http_corelog_fuzz_equal(ngx_http_corelog_fuzz_body_t *fb, ngx_uint_t col,
    const char *name, const char *want)
{
    ngx_str_t  *v;

    v = ngx_http_corelog_fuzz_value_text(fb, col, name);

    if (v == NULL || v->len != ngx_strlen(want)
        || ngx_memcmp(v->data, want, v->len) != 0)
    {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with %s not \"%s\"", name, want);
    }
}
