
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


enum {
    NGX_HTTP_CORELOG_CH_ID = 0,
    NGX_HTTP_CORELOG_CH_ACCOUNT,
    NGX_HTTP_CORELOG_CH_CHANNEL,
    NGX_HTTP_CORELOG_CH_REFERENCE,
    NGX_HTTP_CORELOG_CH_LABEL,
    NGX_HTTP_CORELOG_CH_BODY,
    NGX_HTTP_CORELOG_CH_TYPE,
    NGX_HTTP_CORELOG_CH_ALERT,
    NGX_HTTP_CORELOG_CH_TAGS,
    NGX_HTTP_CORELOG_CH_REFS,
    NGX_HTTP_CORELOG_CH_CREATED,
    NGX_HTTP_CORELOG_CH_NCOLS
};


typedef struct {
    u_char                    id[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    channel[NGX_HTTP_CORELOG_UUID_LEN];
    u_char                    created[NGX_HTTP_CORELOG_TIME_LEN];
} ngx_http_corelog_channel_log_t;


static ngx_int_t ngx_http_corelog_channel_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_channel_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row);
static ngx_int_t ngx_http_corelog_channel_tags(ngx_http_request_t *r,
    json_t *body, ngx_str_t *out, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_channel_tag_add(ngx_str_t *tags,
    ngx_uint_t *n, u_char *p, u_char *last);
static ngx_int_t ngx_http_corelog_channel_refs(ngx_http_request_t *r,
    json_t *body, ngx_str_t *out, ngx_http_corelog_error_t *err);
static ngx_int_t ngx_http_corelog_channel_ref(ngx_http_request_t *r,
    ngx_http_corelog_out_t *out, const char *name, json_t *value,
    ngx_str_t *names, ngx_uint_t *n, ngx_http_corelog_error_t *err);


static ngx_str_t  ngx_http_corelog_channel_types[] = {
    ngx_string("page_view"),
    ngx_string("action"),
    ngx_string("success"),
    ngx_string("error"),
    ngx_string("information"),
    ngx_null_string
};


/* the types of $2.. in the statement below, in the order of the columns */

static u_char  ngx_http_corelog_channel_columns[] = {
    NGX_HTTP_CORELOG_COL_UUID,            /* id */
    NGX_HTTP_CORELOG_COL_UUID,            /* account */
    NGX_HTTP_CORELOG_COL_UUID,            /* channel */
    NGX_HTTP_CORELOG_COL_TEXT,            /* reference */
    NGX_HTTP_CORELOG_COL_TEXT,            /* label */
    NGX_HTTP_CORELOG_COL_TEXT,            /* body */
    NGX_HTTP_CORELOG_COL_TEXT,            /* type */
    NGX_HTTP_CORELOG_COL_BOOL,            /* alert */
    NGX_HTTP_CORELOG_COL_TEXT,            /* tags, an array literal */
    NGX_HTTP_CORELOG_COL_TEXT,            /* custom references, JSON */
    NGX_HTTP_CORELOG_COL_TIMESTAMPTZ      /* created */
};


/*
 * A batch of channel logs: the channel must be the caller's; an alerted
 * log raises NOTIFY corelog_alert in the same transaction, so listeners
 * hear of it once it is committed, and only then.
 */

static ngx_http_corelog_stmt_t  ngx_http_corelog_channel_stmt = {
    "channel_log_insert",

    "WITH input AS ("
    "  SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::uuid[],"
    "                       $5::text[], $6::text[], $7::text[], $8::text[],"
    "                       $9::bool[], $10::text[], $11::text[],"
    "                       $12::timestamptz[])"
    "    AS i(ord, id, account_id, channel_id, reference, label, body, type,"
    "         alert, tags, custom_references, created_at)"
    "), checked AS ("
    "  SELECT i.*, ch.id IS NOT NULL AS ch_ok"
    "    FROM input i"
    "    LEFT JOIN corelog.channels ch"
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
    " SELECT c.ord, c.ch_ok,"
    "        CASE WHEN c.ch_ok AND c.alert THEN"
    "          pg_notify('corelog_alert', json_build_object("
    "            'channel_id', c.channel_id, 'id', c.id, 'type', c.type,"
    "            'label', left(c.label, 255),"
    "            'reference', left(c.reference, 255),"
    "            'created_at', to_char(c.created_at AT TIME ZONE 'UTC',"
    "                                  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    "          )::text)"
    "        END"
    "   FROM checked c",

    NGX_HTTP_CORELOG_CH_NCOLS, 1, { 0 },
    ngx_http_corelog_channel_columns,
    3, NGX_HTTP_CORELOG_KIND_WRITE
};


ngx_http_corelog_api_t  ngx_http_corelog_api_channel = {
    ngx_string("channel_log"),
    0,
    &ngx_http_corelog_channel_stmt,
    ngx_http_corelog_channel_prepare,
    ngx_http_corelog_channel_reply,
    ngx_http_corelog_reply_error_corelog
};


static ngx_int_t
ngx_http_corelog_channel_prepare(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, json_t *body, ngx_http_corelog_op_t *op,
    ngx_http_corelog_error_t *err)
{
    json_t                          *v;
    ngx_str_t                        type, tags, refs, *t, *values;
    ngx_time_t                      *tp;
    ngx_uint_t                       alert;
    ngx_http_corelog_channel_log_t  *cl;

    cl = ngx_pcalloc(r->pool, sizeof(ngx_http_corelog_channel_log_t));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    ctx->data = cl;
    values = op->values;

    (void) ngx_http_corelog_json_uuid(r->pool, body, "channel_id",
                                      cl->channel, err);

    (void) ngx_http_corelog_json_string(r->pool, body, "reference", 0,
                                        NGX_HTTP_CORELOG_CH_TEXT_MAX, 0,
                                        &values[NGX_HTTP_CORELOG_CH_REFERENCE],
                                        err);

    if (ngx_http_corelog_json_string(r->pool, body, "label", 0,
                                     NGX_HTTP_CORELOG_CH_TEXT_MAX, 0,
                                     &values[NGX_HTTP_CORELOG_CH_LABEL], err)
        == NGX_OK
        && ngx_http_corelog_json_string(r->pool, body, "body", 0, 0,
                                        NGX_HTTP_CORELOG_CH_BODY_MAX,
                                        &values[NGX_HTTP_CORELOG_CH_BODY], err)
           == NGX_OK
        && values[NGX_HTTP_CORELOG_CH_LABEL].len == 0
        && values[NGX_HTTP_CORELOG_CH_BODY].len == 0)
    {
        ngx_http_corelog_error_field(err, "label",
                                     "label or body is required: "
                                     "at least one of them, not empty");
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

        values[NGX_HTTP_CORELOG_CH_TYPE] = *t;
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

    if (ngx_http_corelog_channel_tags(r, body, &tags, err) == NGX_ERROR
        || ngx_http_corelog_channel_refs(r, body, &refs, err) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    if (err->nfields) {
        return NGX_DECLINED;
    }

    ngx_http_corelog_uuid_v7(cl->id);

    tp = ngx_timeofday();
    ngx_http_corelog_time_rfc3339(cl->created, tp->sec, tp->msec);

    values[NGX_HTTP_CORELOG_CH_ID].data = cl->id;
    values[NGX_HTTP_CORELOG_CH_ID].len = NGX_HTTP_CORELOG_UUID_LEN;
    values[NGX_HTTP_CORELOG_CH_ACCOUNT] = ctx->auth.account;
    values[NGX_HTTP_CORELOG_CH_CHANNEL].data = cl->channel;
    values[NGX_HTTP_CORELOG_CH_CHANNEL].len = NGX_HTTP_CORELOG_UUID_LEN;

    if (alert) {
        ngx_str_set(&values[NGX_HTTP_CORELOG_CH_ALERT], "t");

    } else {
        ngx_str_set(&values[NGX_HTTP_CORELOG_CH_ALERT], "f");
    }

    values[NGX_HTTP_CORELOG_CH_TAGS] = tags;
    values[NGX_HTTP_CORELOG_CH_REFS] = refs;
    values[NGX_HTTP_CORELOG_CH_CREATED].data = cl->created;
    values[NGX_HTTP_CORELOG_CH_CREATED].len = NGX_HTTP_CORELOG_TIME_LEN;

    return NGX_OK;
}


/*
 * tags: "a, b,,a" or ["a", " b", "a"]: trimmed, empty ones dropped,
 * duplicates dropped (the first kept); out is a text[] literal.
 */

static ngx_int_t
ngx_http_corelog_channel_tags(ngx_http_request_t *r, json_t *body,
    ngx_str_t *out, ngx_http_corelog_error_t *err)
{
    u_char      *p, *last, *start, *q;
    size_t       size, i;
    json_t      *v, *item;
    ngx_int_t    rc;
    ngx_str_t    tags[NGX_HTTP_CORELOG_CH_TAGS_MAX + 1];
    ngx_uint_t   n, items;

    ngx_str_set(out, "{}");

    v = json_object_get(body, "tags");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    n = 0;
    rc = NGX_OK;

    if (json_is_string(v)) {
        p = (u_char *) json_string_value(v);
        last = p + json_string_length(v);
        items = 0;

        for (start = p; rc == NGX_OK; start = p + 1) {
            p = ngx_strlchr(start, last, ',');
            if (p == NULL) {
                p = last;
            }

            if (++items > NGX_HTTP_CORELOG_CH_TAGS_IN_MAX) {
                rc = NGX_DECLINED;
                break;
            }

            rc = ngx_http_corelog_channel_tag_add(tags, &n, start, p);

            if (p == last) {
                break;
            }
        }

    } else if (json_is_array(v)) {

        if (json_array_size(v) > NGX_HTTP_CORELOG_CH_TAGS_IN_MAX) {
            rc = NGX_DECLINED;
        }

        for (i = 0; rc == NGX_OK && i < json_array_size(v); i++) {
            item = json_array_get(v, i);

            if (!json_is_string(item)) {
                ngx_http_corelog_error_field(err, "tags",
                                             "tags must be a comma-delimited "
                                             "string or an array of strings");
                return NGX_DECLINED;
            }

            p = (u_char *) json_string_value(item);
            rc = ngx_http_corelog_channel_tag_add(tags, &n, p,
                                              p + json_string_length(item));
        }

    } else {
        ngx_http_corelog_error_field(err, "tags",
                                     "tags must be a comma-delimited "
                                     "string or an array of strings");
        return NGX_DECLINED;
    }

    if (rc == NGX_ERROR) {
        ngx_http_corelog_error_fieldf(r->pool, err, "tags",
                                      "must each be at most %d "
                                      "characters",
                                      NGX_HTTP_CORELOG_CH_TAG_MAX);
        return NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
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


/* NGX_OK, NGX_ERROR: a tag too long, NGX_DECLINED: too many tags */

static ngx_int_t
ngx_http_corelog_channel_tag_add(ngx_str_t *tags, ngx_uint_t *n, u_char *p,
    u_char *last)
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
        return NGX_OK;
    }

    tag.data = p;
    tag.len = last - p;

    if (ngx_http_corelog_utf8_length(&tag) > NGX_HTTP_CORELOG_CH_TAG_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < *n; i++) {
        if (tags[i].len == tag.len
            && ngx_strncmp(tags[i].data, tag.data, tag.len) == 0)
        {
            return NGX_OK;
        }
    }

    if (*n == NGX_HTTP_CORELOG_CH_TAGS_MAX) {
        return NGX_DECLINED;
    }

    tags[(*n)++] = tag;

    return NGX_OK;
}


/*
 * custom_references: {"name": value, ...} or [{"name": value}, ...],
 * stored as one jsonb object; values are strings, numbers or booleans.
 */

static ngx_int_t
ngx_http_corelog_channel_refs(ngx_http_request_t *r, json_t *body,
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
            rc = ngx_http_corelog_channel_ref(r, &o, name, value, names, &n,
                                              err);
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
                rc = ngx_http_corelog_channel_ref(r, &o, name, value, names,
                                                  &n, err);
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
ngx_http_corelog_channel_ref(ngx_http_request_t *r,
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
ngx_http_corelog_channel_reply(ngx_http_request_t *r,
    ngx_http_corelog_ctx_t *ctx, PGresult *res, int row)
{
    ngx_http_corelog_out_t    out;
    ngx_http_corelog_error_t  err;

    if (PQgetvalue(res, row, 1)[0] != 't') {
        err.nfields = 0;
        ngx_http_corelog_error_set(&err, NGX_HTTP_NOT_FOUND,
                                   "Channel not found");
        return ngx_http_corelog_reply_error(r, ctx, &err);
    }

    ngx_http_corelog_out_init(&out, r->pool, 2);
    ngx_http_corelog_out_lit(&out, "{}");

    return ngx_http_corelog_reply_send(r, NGX_HTTP_ACCEPTED, &out);
}
