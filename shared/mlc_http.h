/* SPDX-License-Identifier: Apache-2.0
 * mlc_http: blocking HTTP over a libcurl easy handle (one per worker thread),
 * with timeouts, TLS verification on by default, a response size cap, outcome
 * classification, and a retry loop (exponential backoff with full jitter,
 * Retry-After honoured) for transient failures only.
 */
#ifndef MLC_HTTP_H
#define MLC_HTTP_H

#include <stddef.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"

struct mlc_http_opts {
    long connect_timeout_ms; /* default 10000 */
    long timeout_ms;         /* whole request; default 60000 */
    size_t max_body;         /* response cap; default 64 MiB */
    int tls_insecure;        /* 1 = skip peer verification (only for labs; logged) */
    const char *ca_file;     /* optional CA bundle */
    const char *user_agent;  /* default "ml-connector/<version>" */
};

struct mlc_retry {
    int max_attempts;  /* tries for transport errors and 5xx; default 6 (throttling: see max_wait_ms) */
    long base_ms;      /* first backoff ceiling; default 250 */
    long cap_ms;       /* backoff ceiling; default 30000 */
    long max_wait_ms;  /* give up when the summed waits would exceed this; default 300000 */
};
#define MLC_RETRY_DEFAULT { 6, 250, 30000, 300000 }

struct mlc_http_req {
    const char *method;          /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *url;
    const char *const *headers;  /* NULL-terminated "Name: value" list, or NULL */
    const char *body;            /* may be NULL */
    size_t body_len;
    const char *basic_user;      /* with basic_pass: HTTP Basic (never logged) */
    const char *basic_pass;
    const char *bearer;          /* Authorization: Bearer (never logged) */
};

struct mlc_http_resp {
    long status;           /* 0 when no HTTP answer arrived */
    struct mlc_buf body;
    long retry_after_ms;   /* parsed Retry-After, -1 when absent/invalid */
    char etag[256];        /* ETag header value, "" when absent */
    char content_type[128];
    long long date;        /* Date header (the server's clock), epoch s; 0 when absent/invalid */
};

struct mlc_http;

/* Counters for benchmarks and the status page. */
struct mlc_http_stats {
    unsigned long requests; /* HTTP requests actually sent (each retry counts) */
    unsigned long retries;
    unsigned long waited_ms;
    /* answers by status class: [0] transport errors, [1..5] 1xx..5xx. Written
     * by the handle's thread, read by others with __atomic_load_n. */
    unsigned long by_class[6];
};

/* NULL opts = defaults. Returns NULL only if libcurl cannot make a handle. */
struct mlc_http *mlc_http_new(const struct mlc_http_opts *opts);
void mlc_http_free(struct mlc_http *h);
const struct mlc_http_stats *mlc_http_stats(const struct mlc_http *h);

/* One attempt. Fills resp (caller releases it). The return value is the
 * classified outcome: MLC_OK for 2xx, else see mlc_http_classify(); transport
 * failures are MLC_E_NET, an over-cap body MLC_E_TOOBIG. err gets
 * "<METHOD> <url without query>: <what>" on failure. */
enum mlc_rc mlc_http_do(struct mlc_http *h, const struct mlc_http_req *rq,
                        struct mlc_http_resp *resp, struct mlc_errbuf *err);

/* mlc_http_do() plus retries of MLC_E_NET and MLC_E_THROTTLED, sleeping
 * max(Retry-After, jittered backoff). retry NULL = MLC_RETRY_DEFAULT. Stops
 * early (MLC_E_STOPPED) if *stop becomes nonzero (stop may be NULL). */
enum mlc_rc mlc_http_send(struct mlc_http *h, const struct mlc_http_req *rq,
                          struct mlc_http_resp *resp, const struct mlc_retry *retry,
                          const volatile int *stop, struct mlc_errbuf *err);

void mlc_http_resp_release(struct mlc_http_resp *resp);

/* 2xx OK; 401 AUTH; 408 NET; 409/412 CONFLICT; 413 TOOBIG; 429 THROTTLED;
 * 503 with Retry-After THROTTLED; other 5xx NET; 404 NOTFOUND; other 4xx REJECTED;
 * 0 (no answer) NET. JDE's 444 is AUTH. */
enum mlc_rc mlc_http_classify(long status, int has_retry_after);

/* Parse a Retry-After value (delta-seconds or an IMF-fixdate HTTP-date) into
 * milliseconds from now_epoch. Returns -1 if unparseable; caps at 1 hour. */
long mlc_retry_after_parse(const char *value, long long now_epoch);

/* Parse an IMF-fixdate HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT", as in the
 * Date header) into epoch seconds. Returns -1 if unparseable. */
long long mlc_http_date_parse(const char *value);

/* Full-jitter backoff: random in [0, min(cap, base * 2^attempt)]. */
long mlc_backoff_ms(int attempt, long base_ms, long cap_ms);

/* URL-encode s into b (RFC 3986 unreserved kept). */
enum mlc_rc mlc_http_urlencode(struct mlc_buf *b, const char *s);

/* Global init/cleanup (curl_global_*); call once from main. */
void mlc_http_global_init(void);
void mlc_http_global_cleanup(void);

#endif
