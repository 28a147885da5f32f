
/*
 * Copyright (C) corelog authors
 *
 * The error model, beneath everything that answers: an error (a status,
 * a message and field errors), the statuses the module answers with their
 * names and usual messages.  JSON parsing, the routes' validation and the
 * answers all fill or read an ngx_http_corelog_error_t; how it is written
 * out is the route's error shape (reply.c, the routes).
 */


#include "ngx_http_corelog.h"


typedef struct {
    ngx_uint_t    status;
    const char   *name;
    const char   *message;
} ngx_http_corelog_status_t;


static const ngx_http_corelog_status_t *ngx_http_corelog_error_status(
    ngx_uint_t status);


static const ngx_http_corelog_status_t  ngx_http_corelog_error_statuses[] = {
    { 400, "BadRequest", "Bad request" },
    { 401, "Unauthorized", "Authentication required" },
    { 403, "Forbidden", "Forbidden" },
    { 404, "NotFound", "Not found" },
    { 405, "MethodNotAllowed", "Method not allowed: use POST" },
    { 408, "RequestTimeout", "Request timed out" },
    { 409, "Conflict", "Conflict" },
    { 411, "LengthRequired", "Length required" },
    { 413, "PayloadTooLarge", "Request body too large" },
    { 414, "URITooLong", "Request URI too long" },
    { 415, "UnsupportedMediaType",
      "Content-Type must be application/json" },
    { 429, "TooManyRequests", "Too many requests" },
    { 500, "InternalServerError", "Internal server error" },
    { 502, "BadGateway", "Bad gateway" },
    { 503, "ServiceUnavailable", "Service unavailable, retry later" },
    { 504, "GatewayTimeout", "The database did not answer in time" },
    { 0, NULL, NULL }
};


static const ngx_http_corelog_status_t *
ngx_http_corelog_error_status(ngx_uint_t status)
{
    const ngx_http_corelog_status_t  *s;

    for (s = ngx_http_corelog_error_statuses; s->status; s++) {
        if (s->status == status) {
            return s;
        }
    }

    return NULL;
}


/* the status's name in an answer: "BadRequest", "NotFound", ... */

const char *
ngx_http_corelog_error_status_name(ngx_uint_t status)
{
    const ngx_http_corelog_status_t  *s;

    s = ngx_http_corelog_error_status(status);

    if (s) {
        return s->name;
    }

    return status < 500 ? "BadRequest" : "InternalServerError";
}


/* message NULL: the status's usual message */

void
ngx_http_corelog_error_set(ngx_http_corelog_error_t *err, ngx_uint_t status,
    const char *message)
{
    const ngx_http_corelog_status_t  *s;

    if (message == NULL) {
        s = ngx_http_corelog_error_status(status);
        message = s ? s->message : "Error";
    }

    err->status = status;
    err->message.data = (u_char *) message;
    err->message.len = ngx_strlen(message);
}


/* a field error; the first one also becomes the message */

void
ngx_http_corelog_error_field(ngx_http_corelog_error_t *err,
    const char *field, const char *message)
{
    ngx_http_corelog_field_error_t  *fe;

    if (err->nfields == 0) {
        ngx_http_corelog_error_set(err, NGX_HTTP_BAD_REQUEST, message);
    }

    if (err->nfields == NGX_HTTP_CORELOG_MAX_FIELD_ERRORS) {
        return;
    }

    fe = &err->fields[err->nfields++];

    fe->field.data = (u_char *) field;
    fe->field.len = ngx_strlen(field);
    fe->message.data = (u_char *) message;
    fe->message.len = ngx_strlen(message);
}


/* a field error whose message is made here: "<field> <text>" */

void
ngx_http_corelog_error_fieldf(ngx_pool_t *pool, ngx_http_corelog_error_t *err,
    const char *field, const char *fmt, ...)
{
    u_char   *p, *last;
    size_t    len;
    va_list   args;

    len = ngx_strlen(field) + 256;

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        ngx_http_corelog_error_field(err, field, "invalid value");
        return;
    }

    last = ngx_sprintf(p, "%s ", field);

    va_start(args, fmt);
    last = ngx_vslprintf(last, p + len - 1, fmt, args);
    va_end(args);

    *last = '\0';

    ngx_http_corelog_error_field(err, field, (const char *) p);
}
