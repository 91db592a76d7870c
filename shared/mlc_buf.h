/* SPDX-License-Identifier: Apache-2.0
 * mlc_buf: a growable byte buffer with an optional size cap, always NUL-terminated.
 * Network-fed buffers set .max; appends past it fail with MLC_E_TOOBIG.
 */
#ifndef MLC_BUF_H
#define MLC_BUF_H

#include <stddef.h>
#include "shared/mlc_err.h"

struct mlc_buf {
    char *ptr;  /* NULL until the first append; then always NUL-terminated */
    size_t len; /* bytes used, excluding the terminator */
    size_t cap; /* bytes allocated */
    size_t max; /* 0 = no cap */
};
#define MLC_BUF_INIT { NULL, 0, 0, 0 }

enum mlc_rc mlc_buf_add(struct mlc_buf *b, const void *p, size_t n);
enum mlc_rc mlc_buf_adds(struct mlc_buf *b, const char *s);
enum mlc_rc mlc_buf_addf(struct mlc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal with quotes. */
enum mlc_rc mlc_buf_add_json_str(struct mlc_buf *b, const char *s);
/* The content, or "" for an empty buffer (lent; valid until the next append). */
const char *mlc_buf_str(const struct mlc_buf *b);
void mlc_buf_reset(struct mlc_buf *b); /* len = 0, keeps memory */
void mlc_buf_release(struct mlc_buf *b);
/* Hands the heap string to the caller (who frees it); the buffer becomes empty. */
char *mlc_buf_detach(struct mlc_buf *b);

/* Allocation wrappers that log and abort on OOM (small fixed allocations). */
void *mlc_xmalloc(size_t n);
void *mlc_xcalloc(size_t n, size_t sz);
void *mlc_xrealloc(void *p, size_t n);
char *mlc_xstrdup(const char *s);
/* Remove trailing (mlc_rstrip) or leading and trailing (mlc_strip) white space, in place. */
void mlc_rstrip(char *s);
void mlc_strip(char *s);
char *mlc_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
