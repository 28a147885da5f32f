
/*
 * Copyright (C) corelog authors
 *
 * Small helpers: UUIDs, time stamps, random bytes, UTF-8, log text, the
 * log limiter, and the way to the main conf and the worker's state.
 */


#include "ngx_http_corelog.h"

#include <sys/random.h>


static ngx_int_t ngx_http_corelog_getrandom(u_char *buf, size_t len);


/*
 * "8-4-4-4-12" hex digits in either case as the 16 bytes of the UUID;
 * NGX_ERROR if it is not a UUID.
 */

ngx_int_t
ngx_http_corelog_uuid_bytes(ngx_str_t *in, u_char *uuid)
{
    u_char      ch, digit;
    ngx_uint_t  i, n;

    if (in->len != NGX_HTTP_CORELOG_UUID_LEN) {
        return NGX_ERROR;
    }

    for (i = 0, n = 0; i < NGX_HTTP_CORELOG_UUID_LEN; i++) {
        ch = in->data[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-') {
                return NGX_ERROR;
            }

            continue;
        }

        if (ch >= '0' && ch <= '9') {
            digit = (u_char) (ch - '0');

        } else {
            ch |= 0x20;

            if (ch < 'a' || ch > 'f') {
                return NGX_ERROR;
            }

            digit = (u_char) (ch - 'a' + 10);
        }

        if (n & 1) {
            uuid[n++ / 2] |= digit;

        } else {
            uuid[n++ / 2] = (u_char) (digit << 4);
        }
    }

    return NGX_OK;
}


/* 16 bytes as "8-4-4-4-12" lower case hex digits: 36 bytes */

u_char *
ngx_http_corelog_uuid_text(u_char *out, u_char *uuid)
{
    out = ngx_hex_dump(out, uuid, 4);
    *out++ = '-';
    out = ngx_hex_dump(out, uuid + 4, 2);
    *out++ = '-';
    out = ngx_hex_dump(out, uuid + 6, 2);
    *out++ = '-';
    out = ngx_hex_dump(out, uuid + 8, 2);
    *out++ = '-';
    return ngx_hex_dump(out, uuid + 10, 6);
}


/* a UUID in its canonical lower case text (36 bytes to out), or NGX_ERROR */

ngx_int_t
ngx_http_corelog_uuid_parse(ngx_str_t *in, u_char *out)
{
    u_char  uuid[NGX_HTTP_CORELOG_UUID_SIZE];

    if (ngx_http_corelog_uuid_bytes(in, uuid) != NGX_OK) {
        return NGX_ERROR;
    }

    (void) ngx_http_corelog_uuid_text(out, uuid);

    return NGX_OK;
}


/*
 * len random bytes.  In a worker they come from its pool, which one
 * getrandom() fills with NGX_HTTP_CORELOG_RANDOM bytes, so that a request
 * id or a UUID costs a copy, not a system call or OpenSSL's RAND_bytes()
 * (its DRBG, locks and getpid(): a tenth of nginx's CPU on the logtank
 * route).  The bytes are used once each, in order, and are not secrets:
 * nothing here makes a key or a token.
 */

ngx_int_t
ngx_http_corelog_random(u_char *buf, size_t len)
{
    ngx_http_corelog_worker_t  *w;

    w = ngx_http_corelog_worker();

    if (w == NULL || len > NGX_HTTP_CORELOG_RANDOM) {
        return ngx_http_corelog_getrandom(buf, len);
    }

    if (w->nrandom < len) {
        if (ngx_http_corelog_getrandom(w->random, NGX_HTTP_CORELOG_RANDOM)
            != NGX_OK)
        {
            /* no entropy yet: the pool stays empty, this once as below */

            return ngx_http_corelog_getrandom(buf, len);
        }

        w->nrandom = NGX_HTTP_CORELOG_RANDOM;
    }

    ngx_memcpy(buf, w->random + NGX_HTTP_CORELOG_RANDOM - w->nrandom, len);
    w->nrandom -= len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_getrandom(u_char *buf, size_t len)
{
    ssize_t     n;
    ngx_uint_t  i;

    while (len) {
        n = getrandom(buf, len, GRND_NONBLOCK);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            /* no entropy pool yet: nginx's generator, not for secrets */

            for (i = 0; i < len; i++) {
                buf[i] = (u_char) ngx_random();
            }

            return NGX_DECLINED;
        }

        buf += n;
        len -= n;
    }

    return NGX_OK;
}


/*
 * A UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then random
 * bits, version 7 and variant 10: 16 bytes to uuid.
 * Ids made by one worker in one millisecond are still increasing: the
 * random part of the later one is the earlier one's plus one.
 */

void
ngx_http_corelog_uuid_v7(u_char *uuid)
{
    u_char                      b[16];
    uint64_t                    ms;
    ngx_uint_t                  i;
    ngx_time_t                 *tp;
    ngx_http_corelog_worker_t  *w;

    /* the last id is the worker's; the fuzz harness has no worker */

    w = ngx_http_corelog_worker();

    tp = ngx_timeofday();
    ms = (uint64_t) tp->sec * 1000 + tp->msec;

    if (w && ms <= w->uuid_ms) {
        /* the same millisecond: increment the previous id's random tail */

        ngx_memcpy(b, w->uuid, 16);

        for (i = 15; i > 8; i--) {
            if (++b[i] != 0) {
                break;
            }
        }

        ms = w->uuid_ms;

    } else {
        (void) ngx_http_corelog_random(b, 16);

        b[0] = (u_char) (ms >> 40);
        b[1] = (u_char) (ms >> 32);
        b[2] = (u_char) (ms >> 24);
        b[3] = (u_char) (ms >> 16);
        b[4] = (u_char) (ms >> 8);
        b[5] = (u_char) ms;
        b[6] = (u_char) (0x70 | (b[6] & 0x0f));
        b[8] = (u_char) (0x80 | (b[8] & 0x3f));

        /* leave room to count up within the millisecond */
        b[9] &= 0x7f;
    }

    if (w) {
        w->uuid_ms = ms;
        ngx_memcpy(w->uuid, b, 16);
    }

    ngx_memcpy(uuid, b, 16);
}


/*
 * "2025-07-10T11:00:00.000Z" (NGX_HTTP_CORELOG_TIME_LEN bytes), or with
 * seconds "2025-07-10T11:00:00Z" (20): usec since 1970-01-01, UTC
 */

u_char *
ngx_http_corelog_time_rfc3339(u_char *out, int64_t usec, ngx_uint_t seconds)
{
    time_t    sec;
    int64_t   msec;
    ngx_tm_t  tm;

    sec = (time_t) (usec / 1000000);
    msec = (usec % 1000000) / 1000;

    if (msec < 0) {
        sec--;
        msec += 1000;
    }

    ngx_gmtime(sec, &tm);

    if (seconds) {
        return ngx_sprintf(out, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
    }

    return ngx_sprintf(out, "%4d-%02d-%02dT%02d:%02d:%02d.%03LZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, msec);
}


/* characters in a string that jansson has already checked to be UTF-8 */

ngx_int_t
ngx_http_corelog_utf8_length(ngx_str_t *s)
{
    size_t      i;
    ngx_int_t   n;

    n = 0;

    for (i = 0; i < s->len; i++) {
        if ((s->data[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


/*
 * The length of the UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if there is none.
 */

size_t
ngx_http_corelog_utf8_next(u_char *p, u_char *last)
{
    u_char  c, lo, hi;
    size_t  len, i;

    c = *p;

    if (c < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = (c == 0xe0) ? 0xa0 : 0x80;          /* overlong */
        hi = (c == 0xed) ? 0x9f : 0xbf;          /* surrogates */

    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = (c == 0xf0) ? 0x90 : 0x80;          /* overlong */
        hi = (c == 0xf4) ? 0x8f : 0xbf;          /* above U+10FFFF */

    } else {
        return 0;
    }

    if ((size_t) (last - p) < len) {
        return 0;
    }

    if (p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return len;
}


/*
 * Text from a client or a server, made fit for one line of the error log:
 * white space becomes one space, other control bytes and invalid UTF-8
 * become \xHH, and the text is cut (with "...") to what fits in
 * [dst, last).  Returns the end of what was written.
 */

u_char *
ngx_http_corelog_log_text(u_char *dst, u_char *last, u_char *src, size_t len)
{
    u_char  *end, *start;
    size_t   n;

    start = dst;
    end = src + len;

    if (last - dst < 4) {
        return dst;
    }

    last -= 3;                                   /* room for "..." */

    while (src < end) {

        if (*src == '\n' || *src == '\r' || *src == '\t' || *src == ' ') {
            src++;

            if (dst > start && dst[-1] != ' ') {
                if (dst == last) {
                    goto cut;
                }

                *dst++ = ' ';
            }

            continue;
        }

        n = ngx_http_corelog_utf8_next(src, end);

        if (n == 1 && (*src < 0x20 || *src == 0x7f)) {
            n = 0;
        }

        if (n == 0) {
            if (last - dst < 4) {
                goto cut;
            }

            dst = ngx_sprintf(dst, "\\x%02xd", *src++);
            continue;
        }

        if ((size_t) (last - dst) < n) {
            goto cut;
        }

        dst = ngx_cpymem(dst, src, n);
        src += n;
    }

    while (dst > start && dst[-1] == ' ') {
        dst--;
    }

    return dst;

cut:

    return ngx_cpymem(dst, "...", 3);
}


/* the value of the first header of that name in a list, or NULL */

ngx_str_t *
ngx_http_corelog_header_find(ngx_list_t *headers, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0 || h[i].key.len != len) {
            continue;
        }

        if (ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0) {
            return &h[i].value;
        }
    }
}


/* 1..max of letters, digits, '_', '-', '.': NGX_OK, else NGX_DECLINED */

ngx_int_t
ngx_http_corelog_identifier(ngx_str_t *s, size_t max)
{
    u_char  ch, *p, *last;

    if (s->len == 0 || s->len > max) {
        return NGX_DECLINED;
    }

    for (p = s->data, last = p + s->len; p < last; p++) {
        ch = *p;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'
              || ch == '.'))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * Whether a line of this kind may be logged now: at most one a second
 * per worker; the others are counted, and the next line's note says how
 * many were not logged ("" or " (and 12 more not logged)", in buf, of
 * NGX_HTTP_CORELOG_LIMIT_NOTE_LEN bytes).  Outside a worker: always.
 */

ngx_uint_t
ngx_http_corelog_limit(ngx_uint_t kind, ngx_str_t *note, u_char *buf)
{
    ngx_http_corelog_limit_t   *l;
    ngx_http_corelog_worker_t  *w;

    ngx_str_null(note);
    note->data = buf;

    w = ngx_http_corelog_worker();

    if (w == NULL) {
        return 1;
    }

    l = &w->limits[kind];

    if ((ngx_msec_int_t) (ngx_current_msec - l->next) < 0) {
        l->suppressed++;
        return 0;
    }

    if (l->suppressed) {
        note->len = ngx_snprintf(buf, NGX_HTTP_CORELOG_LIMIT_NOTE_LEN,
                                 " (and %ui more not logged)", l->suppressed)
                    - buf;
    }

    l->next = ngx_current_msec + 1000;
    l->suppressed = 0;

    return 1;
}


/*
 * The main conf of the running cycle, the one way the module's run time
 * reaches its configuration and its worker's state (cmcf->worker: NULL
 * but in a worker), also where no request is at hand (the log limiter,
 * jansson's allocator, UUIDv7).  NULL without a configuration: the fuzz
 * harness's cycle has none.
 */

ngx_http_corelog_main_conf_t *
ngx_http_corelog_main_conf(void)
{
    if (ngx_cycle == NULL || ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_corelog_module);
}


/* the worker's state: NULL but in a worker (and in the fuzz harness) */

ngx_http_corelog_worker_t *
ngx_http_corelog_worker(void)
{
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_corelog_main_conf();

    return cmcf ? cmcf->worker : NULL;
}
