/* SPDX-License-Identifier: Apache-2.0
 * mlc_err: the stable result codes every module returns, and the error buffer
 * that carries the first (root-cause) message up to the caller.
 */
#ifndef MLC_ERR_H
#define MLC_ERR_H

#include <stddef.h>

/* Numbers never change; a retired code keeps its number. */
enum mlc_rc {
    MLC_OK = 0,
    MLC_E_NOMEM = 1,     /* a library reported out of memory */
    MLC_E_INVAL = 2,     /* bad argument or config: an operator must fix it */
    MLC_E_IO = 3,        /* local disk or database */
    MLC_E_NET = 4,       /* connect, TLS, timeout, 5xx: retry with backoff */
    MLC_E_THROTTLED = 5, /* 429, or 503 with Retry-After: not sooner than asked */
    MLC_E_AUTH = 6,      /* 401, 403 on a token call, JDE 444: refresh once, then retry */
    MLC_E_REJECTED = 7,  /* other 4xx: dead-letter the record with its message */
    MLC_E_CONFLICT = 8,  /* 409/412: re-read, decide again */
    MLC_E_PROTO = 9,     /* the peer sent something we cannot parse */
    MLC_E_TOOBIG = 10,   /* input over its size cap */
    MLC_E_NOTFOUND = 11, /* the looked-up thing does not exist */
    MLC_E_STOPPED = 12,  /* a stop was requested (signal) */
};
#define MLC_RC_MAX 12

/* Short stable description of rc ("network error"); never NULL. */
const char *mlc_strerror(enum mlc_rc rc);

/* Nonzero when rc is worth retrying later without operator action. */
int mlc_rc_transient(enum mlc_rc rc);

/* Caller-owned message buffer. The first message set stays: later calls to
 * mlc_errf() are ignored until mlc_err_reset(), so the root cause survives. */
struct mlc_errbuf {
    int set;
    char msg[768];
};

void mlc_errf(struct mlc_errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mlc_err_reset(struct mlc_errbuf *e);
/* The message, or "" when none was set; e may be NULL. */
const char *mlc_err_msg(const struct mlc_errbuf *e);

/* Programmer error: log where and abort. */
#define MLC_BUG(...) mlc_bug(__FILE__, __LINE__, __VA_ARGS__)
void mlc_bug(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#endif
