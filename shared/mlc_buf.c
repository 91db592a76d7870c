/* SPDX-License-Identifier: Apache-2.0
 * mlc_buf: growable, optionally capped byte buffer.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

void *mlc_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        mlc_error("out of memory allocating %zu bytes", n);
        abort();
    }
    return p;
}

void *mlc_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);

    if (p == NULL) {
        mlc_error("out of memory allocating %zu x %zu bytes", n, sz);
        abort();
    }
    return p;
}

void *mlc_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL) {
        mlc_error("out of memory reallocating %zu bytes", n);
        abort();
    }
    return q;
}

void mlc_rstrip(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
}

void mlc_strip(char *s)
{
    size_t i = 0;

    mlc_rstrip(s);
    while (s[i] && isspace((unsigned char)s[i])) {
        i++;
    }
    if (i > 0) {
        memmove(s, s + i, strlen(s + i) + 1);
    }
}

char *mlc_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = mlc_xmalloc(n);

    memcpy(p, s, n);
    return p;
}

char *mlc_xasprintf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *p;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        MLC_BUG("bad format '%s'", fmt);
    }
    p = mlc_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static enum mlc_rc buf_grow(struct mlc_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > ((size_t)-1) / 2 - b->len) {
        return MLC_E_TOOBIG;
    }
    need = b->len + extra + 1;
    if (b->max != 0 && need > b->max + 1) {
        return MLC_E_TOOBIG;
    }
    if (need <= b->cap) {
        return MLC_OK;
    }
    cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(b->ptr, cap);
    if (p == NULL) {
        return MLC_E_NOMEM;
    }
    b->ptr = p;
    b->cap = cap;
    return MLC_OK;
}

enum mlc_rc mlc_buf_add(struct mlc_buf *b, const void *p, size_t n)
{
    enum mlc_rc rc;

    /* room already, and under the cap: no call (the common case) */
    if (n < b->cap - b->len && (b->max == 0 || b->len + n <= b->max)) {
        memcpy(b->ptr + b->len, p, n);
        b->len += n;
        b->ptr[b->len] = '\0';
        return MLC_OK;
    }
    rc = buf_grow(b, n);
    if (rc != MLC_OK) {
        return rc;
    }
    if (n > 0) {
        memcpy(b->ptr + b->len, p, n);
    }
    b->len += n;
    b->ptr[b->len] = '\0';
    return MLC_OK;
}

enum mlc_rc mlc_buf_adds(struct mlc_buf *b, const char *s)
{
    return mlc_buf_add(b, s, strlen(s));
}

enum mlc_rc mlc_buf_addf(struct mlc_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    enum mlc_rc rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return MLC_E_INVAL;
    }
    rc = buf_grow(b, (size_t)n);
    if (rc != MLC_OK) {
        return rc;
    }
    va_start(ap, fmt);
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MLC_OK;
}

enum mlc_rc mlc_buf_add_json_str(struct mlc_buf *b, const char *s)
{
    enum mlc_rc rc = mlc_buf_add(b, "\"", 1);
    const unsigned char *p;

    for (p = (const unsigned char *)s; rc == MLC_OK && *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = { '\\', (char)*p };
            rc = mlc_buf_add(b, esc, 2);
        } else if (*p < 0x20) {
            rc = mlc_buf_addf(b, "\\u%04x", *p);
        } else {
            rc = mlc_buf_add(b, p, 1);
        }
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_add(b, "\"", 1);
    }
    return rc;
}

const char *mlc_buf_str(const struct mlc_buf *b)
{
    return b->ptr ? b->ptr : "";
}

void mlc_buf_reset(struct mlc_buf *b)
{
    b->len = 0;
    if (b->ptr) {
        b->ptr[0] = '\0';
    }
}

void mlc_buf_release(struct mlc_buf *b)
{
    if (b == NULL) {
        return;
    }
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

char *mlc_buf_detach(struct mlc_buf *b)
{
    char *p = b->ptr ? b->ptr : mlc_xstrdup("");

    b->ptr = NULL;
    b->len = b->cap = 0;
    return p;
}
