
/*
 * Copyright (C) corelog authors
 *
 * libFuzzer target: a body for POST /api/v1/log/create, through JSON
 * parsing and the route's prepare() (see ngx_http_corelog_fuzz.c).
 */


#include "ngx_http_corelog_fuzz.h"


/* the statement's columns (src/ngx_http_corelog_channel_log_api_log.c) */

enum {
    FUZZ_CH_ID = 0,
    FUZZ_CH_ACCOUNT,
    FUZZ_CH_CHANNEL,
    FUZZ_CH_REFERENCE,
    FUZZ_CH_LABEL,
    FUZZ_CH_BODY,
    FUZZ_CH_TYPE,
    FUZZ_CH_ALERT,
    FUZZ_CH_TAGS,
    FUZZ_CH_REFS,
    FUZZ_CH_CREATED,
    FUZZ_CH_NCOLS
};


static void ngx_http_corelog_fuzz_tags(ngx_http_corelog_fuzz_body_t *fb);
static void ngx_http_corelog_fuzz_refs(ngx_http_corelog_fuzz_body_t *fb);


static const char  *ngx_http_corelog_fuzz_types[] = {
    "page_view", "action", "success", "error", "information", NULL
};



int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const ngx_http_corelog_stmt_t  *stmt;

    ngx_http_corelog_fuzz_init();

    stmt = ngx_http_corelog_channel_log_api.stmt;

    if (stmt->nparams != FUZZ_CH_NCOLS) {
        ngx_http_corelog_fuzz_fail(NULL, 0, "channel_log: the statement has "
                                   "%lu columns, the harness knows %d",
                                   (unsigned long) stmt->nparams,
                                   FUZZ_CH_NCOLS);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_uint_t                     i;
    ngx_http_corelog_fuzz_body_t   fb;

    if (ngx_http_corelog_fuzz_request(&fb, &ngx_http_corelog_channel_log_api,
                                      data, size)
        != NGX_OK)
    {
        ngx_http_corelog_fuzz_fail(data, size, "no memory");
    }

    ngx_http_corelog_fuzz_run(&fb);
    ngx_http_corelog_fuzz_check(&fb);

    if (fb.rc != NGX_OK) {
        ngx_http_corelog_fuzz_done(&fb);
        return 0;
    }

    /* NGX_OK: the row, column by column (docs/api.md) */

    for (i = 0; i < FUZZ_CH_NCOLS; i++) {
        if (fb.op->values[i].null
            && i != FUZZ_CH_REFERENCE && i != FUZZ_CH_LABEL
            && i != FUZZ_CH_BODY && i != FUZZ_CH_REFS)
        {
            ngx_http_corelog_fuzz_fail(data, size,
                                       "NGX_OK with column %lu NULL",
                                       (unsigned long) i);
        }
    }

    ngx_http_corelog_fuzz_equal(&fb, FUZZ_CH_ACCOUNT, "account",
                                NGX_HTTP_CORELOG_FUZZ_ACCOUNT);

    ngx_http_corelog_fuzz_text(&fb, FUZZ_CH_REFERENCE, "reference", 1, 0,
                               255, 0);
    ngx_http_corelog_fuzz_text(&fb, FUZZ_CH_LABEL, "label", 1, 0, 255, 0);
    ngx_http_corelog_fuzz_text(&fb, FUZZ_CH_BODY, "body", 1, 0, 0, 65536);

    if (fb.op->values[FUZZ_CH_LABEL].u.text.len == 0
        && fb.op->values[FUZZ_CH_BODY].u.text.len == 0)
    {
        ngx_http_corelog_fuzz_fail(data, size,
                                   "NGX_OK with neither label nor body");
    }

    ngx_http_corelog_fuzz_one_of(&fb, FUZZ_CH_TYPE, "type",
                                 ngx_http_corelog_fuzz_types);

    ngx_http_corelog_fuzz_tags(&fb);
    ngx_http_corelog_fuzz_refs(&fb);

    if (fb.op->values[FUZZ_CH_CREATED].seconds) {
        ngx_http_corelog_fuzz_fail(data, size, "NGX_OK with created_at "
                                   "in seconds, not milliseconds");
    }

    ngx_http_corelog_fuzz_done(&fb);

    return 0;
}


/*
 * tags: a text[] literal {"a","b\"c"}: every element quoted, '"' and '\'
 * escaped; at most 32 tags, each 1-64 characters, trimmed, no duplicates.
 */

static void
ngx_http_corelog_fuzz_tags(ngx_http_corelog_fuzz_body_t *fb)
{
    u_char      *p, *last, *t;
    size_t       n, chars;
    ngx_str_t   *v, tags[33];
    ngx_uint_t   i, j;
    const char  *bad;
    u_char       buf[4 * 64 + 1];

    v = &fb->op->values[FUZZ_CH_TAGS].u.text;
    p = v->data;
    last = p + v->len;
    n = 0;
    bad = NULL;

    if (v->len < 2 || p[0] != '{' || last[-1] != '}') {
        bad = "not {...}";
        goto failed;
    }

    p++;
    last--;

    /* the tags are copied (unescaped) into the pool, for the checks */

    while (p < last) {
        if (n == 32) {
            bad = "more than 32 tags";
            goto failed;
        }

        if (*p++ != '"') {
            bad = "an element not quoted";
            goto failed;
        }

        t = buf;

        while (p < last && *p != '"') {
            if (*p == '\\') {
                p++;

                if (p == last || (*p != '"' && *p != '\\')) {
                    bad = "an escape of something else than '\"' or '\\'";
                    goto failed;
                }
            }

            if (t == buf + sizeof(buf) - 1) {
                bad = "a tag of more than 256 bytes";
                goto failed;
            }

            *t++ = *p++;
        }

        if (p == last) {
            bad = "an unterminated element";
            goto failed;
        }

        p++;

        if (p < last) {
            if (*p != ',' || p + 1 == last) {
                bad = "elements not separated by one ','";
                goto failed;
            }

            p++;
        }

        tags[n].len = t - buf;
        tags[n].data = ngx_pnalloc(fb->pool, tags[n].len + 1);
        if (tags[n].data == NULL) {
            ngx_http_corelog_fuzz_fail(fb->data, fb->size, "no memory");
        }

        ngx_memcpy(tags[n].data, buf, tags[n].len);

        if (tags[n].len == 0) {
            bad = "an empty tag";
            goto failed;
        }

        t = tags[n].data;

        if (t[0] == ' ' || t[0] == '\t' || t[0] == '\r' || t[0] == '\n'
            || t[tags[n].len - 1] == ' ' || t[tags[n].len - 1] == '\t'
            || t[tags[n].len - 1] == '\r' || t[tags[n].len - 1] == '\n')
        {
            bad = "a tag not trimmed";
            goto failed;
        }

        chars = ngx_http_corelog_fuzz_utf8_chars(t, tags[n].len);

        if (chars > 64) {
            bad = "a tag of more than 64 characters";
            goto failed;
        }

        n++;
    }

    for (i = 0; i < n; i++) {
        for (j = i + 1; j < n; j++) {
            if (tags[i].len == tags[j].len
                && ngx_memcmp(tags[i].data, tags[j].data, tags[i].len) == 0)
            {
                bad = "a duplicate tag";
                goto failed;
            }
        }
    }

    return;

failed:

    ngx_http_corelog_fuzz_fail(fb->data, fb->size, "NGX_OK with tags %.*s: "
                               "%s", (int) ngx_min(v->len, 1024), v->data,
                               bad);
}


/*
 * custom_references: SQL NULL, or a JSON object (for jsonb) of at most 32
 * unique names of 1-64 characters; values strings of at most 255
 * characters, numbers, true or false.
 */

static void
ngx_http_corelog_fuzz_refs(ngx_http_corelog_fuzz_body_t *fb)
{
    json_t        *obj, *value;
    ngx_str_t     *v, s;
    const char    *name, *bad;
    json_error_t   jerr;

    if (fb->op->values[FUZZ_CH_REFS].null) {
        return;
    }

    v = &fb->op->values[FUZZ_CH_REFS].u.text;

    /* jansson's own allocator: the module restored it after its parse */

    obj = json_loadb((const char *) v->data, v->len, JSON_REJECT_DUPLICATES,
                     &jerr);

    if (obj == NULL) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with custom_references %.*s: "
                                   "not JSON: %s", (int) ngx_min(v->len, 1024),
                                   v->data, jerr.text);
    }

    bad = NULL;

    if (!json_is_object(obj)) {
        bad = "not an object";

    } else if (json_object_size(obj) > 32) {
        bad = "more than 32 references";
    }

    if (bad == NULL) {
        json_object_foreach(obj, name, value) {
            s.data = (u_char *) name;
            s.len = ngx_strlen(name);

            if (s.len == 0
                || ngx_http_corelog_fuzz_utf8_chars(s.data, s.len) > 64)
            {
                bad = "a name not of 1-64 characters";
                break;
            }

            if (json_is_string(value)) {
                s.data = (u_char *) json_string_value(value);
                s.len = json_string_length(value);

                if (ngx_http_corelog_fuzz_utf8_chars(s.data, s.len) > 255) {
                    bad = "a string of more than 255 characters";
                    break;
                }

            } else if (!json_is_number(value) && !json_is_boolean(value)) {
                bad = "a value not a string, number or boolean";
                break;
            }
        }
    }

    json_decref(obj);

    if (bad) {
        ngx_http_corelog_fuzz_fail(fb->data, fb->size,
                                   "NGX_OK with custom_references %.*s: %s",
                                   (int) ngx_min(v->len, 1024), v->data, bad);
    }
}
