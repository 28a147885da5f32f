
/*
 * Copyright (C) corelog authors
 *
 * POST /api/v1/log/create: a log posted to a channel.  Fields (tags and
 * custom references normalised here), the statement that checks the
 * channel, inserts and raises the alert NOTIFY, and the 202.
 */


#include "ngx_http_corelog.h"


#define NGX_HTTP_CORELOG_CH_TEXT_MAX      255       /* characters */
#define NGX_HTTP_CORELOG_CH_BODY_MAX      65536     /* bytes */
#define NGX_HTTP_CORELOG_CH_TAG_MAX       64        /* characters */
#define NGX_HTTP_CORELOG_CH_TAGS_MAX      32
#define NGX_HTTP_CORELOG_CH_TAGS_IN_MAX   256       /* items before dedup */
#define NGX_HTTP_CORELOG_CH_REF_NAME_MAX  64
#define NGX_HTTP_CORELOG_CH_REFS_MAX      32


/*
 * The statement's columns (ngx_http_corelog.h: "A route declares its
 * statement once"): X(NAME, $n, "column", TYPE)
 */

#define NGX_HTTP_CORELOG_CHANNEL_LOG_PARAMS(X)                               \
    X(ID,               2,  "id",                 UUID)                      \
    X(ACCOUNT,          3,  "account_id",         UUID)                      \
    X(CHANNEL,          4,  "channel_id",         UUID)                      \
    X(REFERENCE,        5,  "reference",          TEXT)                      \
    X(LABEL,            6,  "label",              TEXT)                      \
    X(BODY,             7,  "body",               TEXT)                      \
    X(TYPE,             8,  "type",               TEXT)                      \
    X(ALERT,            9,  "alert",              BOOL)                      \
    X(TAGS,             10, "tags",               TEXT)  /* text[] literal */\
    X(REFS,             11, "custom_references",  TEXT)  /* JSON */          \
    X(CREATED,          12, "created_at",         TIMESTAMPTZ)

/*
 * Its result after the ordinal: X(NAME, "expression", status, message);
 * the NOTIFY of an alerted log, only once its channel was found
 */

#define NGX_HTTP_CORELOG_CHANNEL_LOG_NOTIFY                                  \
    "        CASE WHEN c.ch_ok AND c.alert THEN"                             \
    "          pg_notify('corelog_alert', json_build_object("                \
    "            'channel_id', c.channel_id, 'id', c.id, 'type', c.type,"    \
    "            'label', left(c.label, 255),"                               \
    "            'reference', left(c.reference, 255),"                       \
    "            'created_at', to_char(c.created_at AT TIME ZONE 'UTC',"     \
    "                                  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"  \
    "          )::text)"                                                     \
    "        END"

#define NGX_HTTP_CORELOG_CHANNEL_LOG_RESULT(X)                               \
    X(CH_OK,      "c.ch_ok",  NGX_HTTP_NOT_FOUND, "Channel not found")       \
    X(NOTIFY,     NGX_HTTP_CORELOG_CHANNEL_LOG_NOTIFY, 0, NULL)


#define NGX_HTTP_CORELOG_COL(name)  NGX_HTTP_CORELOG_CHANNEL_LOG_##name
#define NGX_HTTP_CORELOG_RES(name)  NGX_HTTP_CORELOG_CHANNEL_LOG_R_##name

NGX_HTTP_CORELOG_ROUTE_ENUMS(NGX_HTTP_CORELOG_CHANNEL_LOG_PARAMS,
                             NGX_HTTP_CORELOG_CHANNEL_LOG_RESULT)


/* the results of a tag: added (or a duplicate, dropped), or refused */

typedef enum {
    NGX_HTTP_CORELOG_CH_TAG_OK = 0,
    NGX_HTTP_CORELOG_CH_TAG_LONG,
    NGX_HTTP_CORELOG_CH_TAG_MANY
} ngx_http_corelog_channel_log_tag_e;


static ngx_int_t ngx_http_corelog_channel_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_channel_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_channel_log_tags(ngx_http_request_t *r,
    json_t *body, ngx_str_t *out, ngx_http_corelog_error_t *err);
static ngx_http_corelog_channel_log_tag_e
    ngx_http_corelog_channel_log_tag_add(ngx_str_t *tags, ngx_uint_t *n,
    u_char *p, u_char *last);
static ngx_int_t ngx_http_corelog_channel_log_refs(ngx_http_request_t *r,
    json_t *body, ngx_str_t *out, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_channel_log_ref(ngx_http_request_t *r,
    ngx_http_corelog_out_t *out, const char *name, json_t *value,
    ngx_str_t *names, ngx_uint_t *n, ngx_http_corelog_error_t *err);


static const ngx_str_t  ngx_http_corelog_channel_types[] = {
    ngx_string("page_view"),
    ngx_string("action"),
    ngx_string("success"),
    ngx_string("error"),
    ngx_string("information"),
    ngx_null_string
};


static const ngx_http_corelog_column_t
    ngx_http_corelog_channel_log_columns[] =
{
    NGX_HTTP_CORELOG_CHANNEL_LOG_PARAMS(NGX_HTTP_CORELOG_PARAM_COLUMN)
};


static const ngx_http_corelog_result_t
    ngx_http_corelog_channel_log_results[] =
{
    { "c.ord", 0, NULL },
    NGX_HTTP_CORELOG_CHANNEL_LOG_RESULT(NGX_HTTP_CORELOG_RESULT_COLUMN)
};


/*
 * A batch of channel logs: the channel must be the caller's, and
 * corelog.key_share_channels() locks it FOR KEY SHARE as a foreign key's
 * check would (sql/004: channel_logs has no foreign key); an alerted
 * log raises NOTIFY corelog_alert in the same transaction, so listeners
 * hear of it once it is committed, and only then.
 */

static const ngx_http_corelog_stmt_t ngx_http_corelog_channel_log_stmt = {
    "channel_log_insert",

    "WITH input AS ("
    "  SELECT * FROM "
    NGX_HTTP_CORELOG_UNNEST(NGX_HTTP_CORELOG_CHANNEL_LOG_PARAMS)
    "), ch AS ("
    "  SELECT * FROM corelog.key_share_channels("
    "                  ARRAY(SELECT channel_id FROM input))"
    "), checked AS ("
    "  SELECT i.*, ch.id IS NOT NULL AS ch_ok"
    "    FROM input i"
    "    LEFT JOIN ch"
    "           ON ch.id = i.channel_id AND ch.account_id = i.account_id"
    "), inserted AS ("
    "  INSERT INTO corelog.channel_logs"
    "              (id, channel_id, reference, label, body, type, alert,"
    "               tags, custom_references, created_at)"
    "  SELECT id, channel_id, reference, label, body, type, alert,"
    "         tags::text[], custom_references::jsonb, created_at"
    "    FROM checked WHERE ch_ok"
    "  RETURNING id"
    ")"
    NGX_HTTP_CORELOG_SELECT(NGX_HTTP_CORELOG_CHANNEL_LOG_RESULT)
    "   FROM checked c",

    NGX_HTTP_CORELOG_CHANNEL_LOG_NCOLS, 1,
    ngx_http_corelog_channel_log_columns,
    NGX_HTTP_CORELOG_CHANNEL_LOG_R_NFIELDS, NGX_HTTP_CORELOG_KIND_WRITE,
    ngx_http_corelog_channel_log_results,
    NGX_HTTP_CORELOG_STAT_CHANNEL_LOG
};


ngx_http_corelog_api_t  ngx_http_corelog_channel_log_api = {
    ngx_string("channel_log"),
    0,
    &ngx_http_corelog_channel_log_stmt,
    ngx_http_corelog_channel_log_prepare,
    ngx_http_corelog_channel_log_reply,
    ngx_http_corelog_reply_error_corelog,
    ngx_http_corelog_reply_code_corelog,
    NGX_HTTP_CORELOG_CHANNEL_LOG_ID
};


static ngx_int_t
ngx_http_corelog_channel_log_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                    *v;
    ngx_str_t                  type, tags, refs, reference, label, text;
    ngx_uint_t                 alert;
    const ngx_str_t           *t;
    ngx_http_corelog_value_t  *values;
    u_char                     uuid[NGX_HTTP_CORELOG_UUID_SIZE];

    values = op->values;
    ctx->data = values;

    if (ngx_http_corelog_json_uuid(r->pool, body, "channel_id", uuid, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_uuid(
                           &values[NGX_HTTP_CORELOG_CHANNEL_LOG_CHANNEL], uuid);
    }

    if (ngx_http_corelog_json_string(r->pool, body, "reference", 0,
                                     NGX_HTTP_CORELOG_CH_TEXT_MAX, 0,
                                     &reference, err)
        == NGX_OK)
    {
        ngx_http_corelog_value_text(
                       &values[NGX_HTTP_CORELOG_CHANNEL_LOG_REFERENCE],
                       &reference);
    }

    if (ngx_http_corelog_json_string(r->pool, body, "label", 0,
                                     NGX_HTTP_CORELOG_CH_TEXT_MAX, 0,
                                     &label, err)
        == NGX_OK
        && ngx_http_corelog_json_string(r->pool, body, "body", 0, 0,
                                        NGX_HTTP_CORELOG_CH_BODY_MAX,
                                        &text, err)
           == NGX_OK)
    {
        if (label.len == 0 && text.len == 0) {
            ngx_http_corelog_error_field(err, "label",
                                         "label or body is required: "
                                         "at least one of them, not empty");
        }

        ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_LABEL],
                                    &label);
        ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_BODY],
                                    &text);
    }

    /* type: one of the five, information by default */

    if (ngx_http_corelog_json_string(r->pool, body, "type", 0, 0, 0, &type,
                                     err)
        == NGX_OK)
    {
        if (type.data == NULL) {
            ngx_str_set(&type, "information");
        }

        for (t = ngx_http_corelog_channel_types; t->len; t++) {
            if (t->len == type.len
                && ngx_strncmp(t->data, type.data, type.len) == 0)
            {
                break;
            }
        }

        if (t->len == 0) {
            ngx_http_corelog_error_field(err, "type",
                                         "type must be one of page_view, "
                                         "action, success, error, "
                                         "information");
        }

        ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_TYPE],
                                    t);
    }

    /* alert: false by default */

    alert = 0;
    v = json_object_get(body, "alert");

    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            ngx_http_corelog_error_field(err, "alert",
                                         "alert must be true or false");
        } else {
            alert = json_is_true(v);
        }
    }

    if (ngx_http_corelog_channel_log_tags(r, body, &tags, err) == NGX_ERROR
        || ngx_http_corelog_channel_log_refs(r, body, &refs, err) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (err->nfields) {
        return NGX_DECLINED;
    }

    ngx_http_corelog_value_bool(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_ALERT],
                                alert);
    ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_TAGS],
                                &tags);
    ngx_http_corelog_value_text(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_REFS],
                                &refs);

    /* the server's own fields */

    ngx_http_corelog_value_uuid_v7(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_ID]);
    ngx_http_corelog_value_now(&values[NGX_HTTP_CORELOG_CHANNEL_LOG_CREATED],
                               0);

    if (ngx_http_corelog_value_uuid_parse(
                              &values[NGX_HTTP_CORELOG_CHANNEL_LOG_ACCOUNT],
                              &ctx->auth.account)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_corelog_value_debug(r, &ngx_http_corelog_channel_log_api.name, op);

    return NGX_OK;
}


/*
 * tags: "a, b,,a" or ["a", " b", "a"]: trimmed, empty ones dropped,
 * duplicates dropped (the first kept); out is a text[] literal.
 */

static ngx_int_t
ngx_http_corelog_channel_log_tags(ngx_http_request_t *r, json_t *body,
    ngx_str_t *out, ngx_http_corelog_error_t *err)
{
    u_char      *p, *last, *start, *q;
    size_t       size, i;
    json_t      *v, *item;
    ngx_str_t    tags[NGX_HTTP_CORELOG_CH_TAGS_MAX + 1];
    ngx_uint_t   n, items;

    ngx_http_corelog_channel_log_tag_e  rc;

    ngx_str_set(out, "{}");

    v = json_object_get(body, "tags");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    n = 0;
    rc = NGX_HTTP_CORELOG_CH_TAG_OK;

    if (json_is_string(v)) {
        p = (u_char *) json_string_value(v);
        last = p + json_string_length(v);
        items = 0;

        for (start = p; rc == NGX_HTTP_CORELOG_CH_TAG_OK; start = p + 1) {
            p = ngx_strlchr(start, last, ',');
            if (p == NULL) {
                p = last;
            }

            if (++items > NGX_HTTP_CORELOG_CH_TAGS_IN_MAX) {
                rc = NGX_HTTP_CORELOG_CH_TAG_MANY;
                break;
            }

            rc = ngx_http_corelog_channel_log_tag_add(tags, &n, start, p);

            if (p == last) {
                break;
            }
        }

    } else if (json_is_array(v)) {

        if (json_array_size(v) > NGX_HTTP_CORELOG_CH_TAGS_IN_MAX) {
            rc = NGX_HTTP_CORELOG_CH_TAG_MANY;
        }

        for (i = 0;
             rc == NGX_HTTP_CORELOG_CH_TAG_OK && i < json_array_size(v);
             i++)
        {
            item = json_array_get(v, i);

            if (!json_is_string(item)) {
                ngx_http_corelog_error_field(err, "tags",
                                             "tags must be a comma-delimited "
                                             "string or an array of strings");
                return NGX_DECLINED;
            }

            p = (u_char *) json_string_value(item);
            rc = ngx_http_corelog_channel_log_tag_add(tags, &n, p,
                                                  p + json_string_length(item));
        }

    } else {
        ngx_http_corelog_error_field(err, "tags",
                                     "tags must be a comma-delimited "
                                     "string or an array of strings");
        return NGX_DECLINED;
    }

    if (rc == NGX_HTTP_CORELOG_CH_TAG_LONG) {
        ngx_http_corelog_error_fieldf(r->pool, err, "tags",
                                      "must each be at most %d "
                                      "characters",
                                      NGX_HTTP_CORELOG_CH_TAG_MAX);
        return NGX_DECLINED;
    }

    if (rc == NGX_HTTP_CORELOG_CH_TAG_MANY) {
        ngx_http_corelog_error_fieldf(r->pool, err, "tags",
                                      "must hold at most %d tags",
                                      NGX_HTTP_CORELOG_CH_TAGS_MAX);
        return NGX_DECLINED;
    }

    /* the text[] literal: {"a","b\"c"} */

    size = 2;

    for (i = 0; i < n; i++) {
        size += 2 * tags[i].len + 3;
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    *p++ = '{';

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '"';

        for (q = tags[i].data; q < tags[i].data + tags[i].len; q++) {
            if (*q == '"' || *q == '\\') {
                *p++ = '\\';
            }

            *p++ = *q;
        }

        *p++ = '"';
    }

    *p++ = '}';
    out->len = p - out->data;

    return NGX_OK;
}


/* one tag: added, dropped as empty or a duplicate, or refused */

static ngx_http_corelog_channel_log_tag_e
ngx_http_corelog_channel_log_tag_add(ngx_str_t *tags, ngx_uint_t *n,
    u_char *p, u_char *last)
{
    ngx_str_t   tag;
    ngx_uint_t  i;

    while (p < last && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    while (last > p
           && (last[-1] == ' ' || last[-1] == '\t' || last[-1] == '\n'
               || last[-1] == '\r'))
    {
        last--;
    }

    if (p == last) {
        return NGX_HTTP_CORELOG_CH_TAG_OK;
    }

    tag.data = p;
    tag.len = last - p;

    if (ngx_http_corelog_utf8_length(&tag) > NGX_HTTP_CORELOG_CH_TAG_MAX) {
        return NGX_HTTP_CORELOG_CH_TAG_LONG;
    }

    for (i = 0; i < *n; i++) {
        if (tags[i].len == tag.len
            && ngx_strncmp(tags[i].data, tag.data, tag.len) == 0)
        {
            return NGX_HTTP_CORELOG_CH_TAG_OK;
        }
    }

    if (*n == NGX_HTTP_CORELOG_CH_TAGS_MAX) {
        return NGX_HTTP_CORELOG_CH_TAG_MANY;
    }

    tags[(*n)++] = tag;

    return NGX_HTTP_CORELOG_CH_TAG_OK;
}


/*
 * custom_references: {"name": value, ...} or [{"name": value}, ...],
 * stored as one jsonb object; values are strings, numbers or booleans.
 */

static ngx_int_t
ngx_http_corelog_channel_log_refs(ngx_http_request_t *r, json_t *body,
    ngx_str_t *out, ngx_http_corelog_error_t *err)
{
    size_t                   i;
    json_t                  *v, *item, *value;
    ngx_int_t                rc;
    ngx_str_t                names[NGX_HTTP_CORELOG_CH_REFS_MAX];
    ngx_uint_t               n;
    const char              *name;
    ngx_http_corelog_out_t   o;

    ngx_str_null(out);

    v = json_object_get(body, "custom_references");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_object(v) && !json_is_array(v)) {
        ngx_http_corelog_error_field(err, "custom_references",
                                     "custom_references must be an object "
                                     "or an array of objects");
        return NGX_DECLINED;
    }

    ngx_http_corelog_out_init(&o, r->pool, 256);
    ngx_http_corelog_out_lit(&o, "{");

    n = 0;

    if (json_is_object(v)) {
        json_object_foreach(v, name, value) {
            rc = ngx_http_corelog_channel_log_ref(r, &o, name, value, names,
                                                  &n, err);
            if (rc != NGX_OK) {
                return rc;
            }
        }

    } else {
        for (i = 0; i < json_array_size(v); i++) {
            item = json_array_get(v, i);

            if (!json_is_object(item)) {
                ngx_http_corelog_error_field(err, "custom_references",
                                             "custom_references must be an "
                                             "object or an array of "
                                             "objects");
                return NGX_DECLINED;
            }

            json_object_foreach(item, name, value) {
                rc = ngx_http_corelog_channel_log_ref(r, &o, name, value,
                                                      names, &n, err);
                if (rc != NGX_OK) {
                    return rc;
                }
            }
        }
    }

    ngx_http_corelog_out_lit(&o, "}");

    if (o.failed) {
        return NGX_ERROR;
    }

    out->data = o.start;
    out->len = o.pos - o.start;

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_channel_log_ref(ngx_http_request_t *r,
    ngx_http_corelog_out_t *out, const char *name, json_t *value,
    ngx_str_t *names, ngx_uint_t *n, ngx_http_corelog_error_t *err)
{
    ngx_str_t   s;
    ngx_uint_t  i;

    s.data = (u_char *) name;
    s.len = ngx_strlen(name);

    if (s.len == 0
        || ngx_http_corelog_utf8_length(&s) > NGX_HTTP_CORELOG_CH_REF_NAME_MAX)
    {
        ngx_http_corelog_error_fieldf(r->pool, err, "custom_references",
                                      "names must be 1 to %d characters",
                                      NGX_HTTP_CORELOG_CH_REF_NAME_MAX);
        return NGX_DECLINED;
    }

    for (i = 0; i < *n; i++) {
        if (names[i].len == s.len
            && ngx_strncmp(names[i].data, s.data, s.len) == 0)
        {
            ngx_http_corelog_error_field(err, "custom_references",
                                         "custom_references names must be "
                                         "unique");
            return NGX_DECLINED;
        }
    }

    if (*n == NGX_HTTP_CORELOG_CH_REFS_MAX) {
        ngx_http_corelog_error_fieldf(r->pool, err, "custom_references",
                                      "must hold at most %d references",
                                      NGX_HTTP_CORELOG_CH_REFS_MAX);
        return NGX_DECLINED;
    }

    names[(*n)++] = s;

    if (*n > 1) {
        ngx_http_corelog_out_lit(out, ",");
    }

    ngx_http_corelog_out_str(out, &s);
    ngx_http_corelog_out_lit(out, ":");

    switch (json_typeof(value)) {

    case JSON_STRING:
        s.data = (u_char *) json_string_value(value);
        s.len = json_string_length(value);

        if (ngx_http_corelog_utf8_length(&s) > NGX_HTTP_CORELOG_CH_TEXT_MAX) {
            ngx_http_corelog_error_fieldf(r->pool, err,
                                          "custom_references",
                                          "values must be at most %d "
                                          "characters",
                                          NGX_HTTP_CORELOG_CH_TEXT_MAX);
            return NGX_DECLINED;
        }

        ngx_http_corelog_out_str(out, &s);
        break;

    case JSON_INTEGER:
        ngx_http_corelog_out_int(out, (int64_t) json_integer_value(value));
        break;

    case JSON_REAL:
        ngx_http_corelog_out_double(out, json_real_value(value));
        break;

    case JSON_TRUE:
        ngx_http_corelog_out_lit(out, "true");
        break;

    case JSON_FALSE:
        ngx_http_corelog_out_lit(out, "false");
        break;

    default:
        ngx_http_corelog_error_field(err, "custom_references",
                                     "custom_references values must be "
                                     "strings, numbers or booleans");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_channel_log_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row)
{
    ngx_http_corelog_out_t    out;
    ngx_http_corelog_error_t  err;

    if (ngx_http_corelog_value_verdict(&ngx_http_corelog_channel_log_stmt,
                                       res, row, &err)
        != NGX_OK)
    {
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    ngx_http_corelog_out_init(&out, r->pool, 2);
    ngx_http_corelog_out_lit(&out, "{}");

    return ngx_http_corelog_reply_send(r, NGX_HTTP_ACCEPTED, &out);
}
