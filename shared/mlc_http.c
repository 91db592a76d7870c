/* SPDX-License-Identifier: Apache-2.0
 * mlc_http: libcurl easy-handle client with classification and retries.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "shared/mlc_crypto.h"
#include "shared/mlc_http.h"
#include "shared/mlc_log.h"

#ifndef MLC_VERSION
#define MLC_VERSION "0.0.0"
#endif

struct mlc_http {
    CURL *curl;
    struct mlc_http_opts opts;
    struct mlc_http_stats stats;
};

void mlc_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void mlc_http_global_cleanup(void)
{
    curl_global_cleanup();
}

struct mlc_http *mlc_http_new(const struct mlc_http_opts *opts)
{
    struct mlc_http *h = mlc_xcalloc(1, sizeof(*h));

    if (opts != NULL) {
        h->opts = *opts;
    }
    if (h->opts.connect_timeout_ms <= 0) {
        h->opts.connect_timeout_ms = 10000;
    }
    if (h->opts.timeout_ms <= 0) {
        h->opts.timeout_ms = 60000;
    }
    if (h->opts.max_body == 0) {
        h->opts.max_body = 64u << 20;
    }
    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        free(h);
        return NULL;
    }
    return h;
}

void mlc_http_free(struct mlc_http *h)
{
    if (h == NULL) {
        return;
    }
    curl_easy_cleanup(h->curl);
    free(h);
}

const struct mlc_http_stats *mlc_http_stats(const struct mlc_http *h)
{
    return &h->stats;
}

void mlc_http_resp_release(struct mlc_http_resp *resp)
{
    if (resp != NULL) {
        mlc_buf_release(&resp->body);
    }
}

enum mlc_rc mlc_http_classify(long status, int has_retry_after)
{
    if (status >= 200 && status < 300) {
        return MLC_OK;
    }
    switch (status) {
    case 0:
    case 408:
        return MLC_E_NET;
    case 401:
    case 444:
        return MLC_E_AUTH;
    case 409:
    case 412:
        return MLC_E_CONFLICT;
    case 413:
        return MLC_E_TOOBIG;
    case 429:
        return MLC_E_THROTTLED;
    case 503:
        return has_retry_after ? MLC_E_THROTTLED : MLC_E_NET;
    default:
        break;
    }
    if (status >= 500) {
        return MLC_E_NET;
    }
    if (status == 404) {
        return MLC_E_NOTFOUND;
    }
    return MLC_E_REJECTED;
}

long long mlc_http_date_parse(const char *value)
{
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    const char *p = value;
    char wk[4], mon[4], zone[4];
    int d, y, hh, mm, ss, consumed = 0;
    struct tm tm;

    if (value == NULL) {
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    if (sscanf(p, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3[A-Z]%n", wk, &d, mon, &y, &hh,
               &mm, &ss, zone, &consumed) != 8 ||
        strcmp(zone, "GMT") != 0) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_mon = -1;
    for (int i = 0; i < 12; i++) {
        if (strcmp(mon, months[i]) == 0) {
            tm.tm_mon = i;
        }
    }
    if (tm.tm_mon < 0 || d < 1 || d > 31 || y < 1970 || y > 9999 || hh > 23 || mm > 59 ||
        ss > 60) {
        return -1;
    }
    tm.tm_mday = d;
    tm.tm_year = y - 1900;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    return (long long)timegm(&tm);
}

long mlc_retry_after_parse(const char *value, long long now_epoch)
{
    const char *p = value;
    long long secs = 0, when;

    if (value == NULL) {
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (isdigit((unsigned char)*p)) {
        while (isdigit((unsigned char)*p)) {
            secs = secs * 10 + (*p - '0');
            if (secs > 3600) {
                secs = 3600;
            }
            p++;
        }
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            p++;
        }
        return *p ? -1 : (long)(secs * 1000);
    }
    when = mlc_http_date_parse(p);
    if (when < 0) {
        return -1;
    }
    secs = when - now_epoch;
    if (secs < 0) {
        secs = 0;
    }
    if (secs > 3600) {
        secs = 3600;
    }
    return (long)(secs * 1000);
}

long mlc_backoff_ms(int attempt, long base_ms, long cap_ms)
{
    unsigned long long ceil = (unsigned long long)base_ms;
    uint32_t r = 0;

    for (int i = 0; i < attempt && ceil < (unsigned long long)cap_ms; i++) {
        ceil *= 2;
    }
    if (ceil > (unsigned long long)cap_ms) {
        ceil = (unsigned long long)cap_ms;
    }
    if (mlc_random(&r, sizeof(r)) != MLC_OK) {
        r = (uint32_t)rand();
    }
    return (long)(r % (ceil + 1));
}

enum mlc_rc mlc_http_urlencode(struct mlc_buf *b, const char *s)
{
    enum mlc_rc rc = MLC_OK;

    for (const unsigned char *p = (const unsigned char *)s; *p && rc == MLC_OK; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            rc = mlc_buf_add(b, p, 1);
        } else {
            rc = mlc_buf_addf(b, "%%%02X", *p);
        }
    }
    return rc;
}

struct sink {
    struct mlc_http_resp *resp;
    int too_big;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;

    if (mlc_buf_add(&s->resp->body, ptr, n) != MLC_OK) {
        s->too_big = 1;
        return 0; /* aborts the transfer */
    }
    return n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t outn)
{
    size_t nl = strlen(name);
    size_t i, j = 0;

    if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':') {
        return;
    }
    i = nl + 1;
    while (i < n && (line[i] == ' ' || line[i] == '\t')) {
        i++;
    }
    while (i < n && line[i] != '\r' && line[i] != '\n' && j + 1 < outn) {
        out[j++] = line[i++];
    }
    out[j] = '\0';
}

struct hdr_sink {
    struct mlc_http_resp *resp;
    char retry_after[64];
    char date[64];
};

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct hdr_sink *hs = ud;
    size_t n = size * nmemb;

    /* a new status line (redirect, 100-continue) starts a fresh header set */
    if (n > 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        hs->retry_after[0] = '\0';
        hs->date[0] = '\0';
        hs->resp->etag[0] = '\0';
        hs->resp->content_type[0] = '\0';
    }
    header_value(ptr, n, "Retry-After", hs->retry_after, sizeof(hs->retry_after));
    header_value(ptr, n, "ETag", hs->resp->etag, sizeof(hs->resp->etag));
    header_value(ptr, n, "Date", hs->date, sizeof(hs->date));
    header_value(ptr, n, "Content-Type", hs->resp->content_type, sizeof(hs->resp->content_type));
    return n;
}

/* The URL without its query string, for messages (queries may carry filters). */
static void url_for_msg(const char *url, char *out, size_t n)
{
    size_t i = 0;

    while (url[i] && url[i] != '?' && i + 1 < n) {
        out[i] = url[i];
        i++;
    }
    out[i] = '\0';
}

enum mlc_rc mlc_http_do(struct mlc_http *h, const struct mlc_http_req *rq,
                        struct mlc_http_resp *resp, struct mlc_errbuf *err)
{
    struct curl_slist *hdrs = NULL;
    struct sink sink = { resp, 0 };
    struct hdr_sink hs = { resp, "", "" };
    char ua[64], shown[512], *auth = NULL;
    CURL *c = h->curl;
    CURLcode cc;
    enum mlc_rc rc;

    mlc_buf_release(&resp->body);
    resp->body.max = h->opts.max_body;
    resp->status = 0;
    resp->retry_after_ms = -1;
    resp->date = 0;
    resp->etag[0] = resp->content_type[0] = '\0';
    url_for_msg(rq->url, shown, sizeof(shown));

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, rq->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->opts.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->opts.timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hs);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    snprintf(ua, sizeof(ua), "%s", h->opts.user_agent ? h->opts.user_agent : "ml-connector/" MLC_VERSION);
    curl_easy_setopt(c, CURLOPT_USERAGENT, ua);
    if (h->opts.tls_insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (h->opts.ca_file) {
        curl_easy_setopt(c, CURLOPT_CAINFO, h->opts.ca_file);
    }
    if (rq->basic_user != NULL) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, rq->basic_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, rq->basic_pass ? rq->basic_pass : "");
    }
    if (rq->bearer != NULL) {
        auth = mlc_xasprintf("Authorization: Bearer %s", rq->bearer);
        hdrs = curl_slist_append(hdrs, auth);
    }
    for (const char *const *hp = rq->headers; hp && *hp; hp++) {
        hdrs = curl_slist_append(hdrs, *hp);
    }
    if (rq->body != NULL) {
        hdrs = curl_slist_append(hdrs, "Expect:");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    }
    if (strcmp(rq->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(rq->method, "POST") == 0) {
        if (rq->body == NULL) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        }
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

    h->stats.requests++;
    cc = curl_easy_perform(c);
    if (auth != NULL) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    curl_slist_free_all(hdrs);
    if (sink.too_big) {
        mlc_errf(err, "%s %s: response larger than %zu bytes", rq->method, shown, h->opts.max_body);
        return MLC_E_TOOBIG;
    }
    if (cc != CURLE_OK) {
        __atomic_add_fetch(&h->stats.by_class[0], 1, __ATOMIC_RELAXED);
        mlc_errf(err, "%s %s: %s", rq->method, shown, curl_easy_strerror(cc));
        return MLC_E_NET;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->status >= 100 && resp->status < 600) {
        __atomic_add_fetch(&h->stats.by_class[resp->status / 100], 1, __ATOMIC_RELAXED);
    }
    if (hs.retry_after[0]) {
        resp->retry_after_ms = mlc_retry_after_parse(hs.retry_after, (long long)time(NULL));
    }
    if (hs.date[0]) {
        long long when = mlc_http_date_parse(hs.date);

        resp->date = when > 0 ? when : 0;
    }
    rc = mlc_http_classify(resp->status, resp->retry_after_ms >= 0);
    if (rc != MLC_OK) {
        char snippet[160];
        size_t n = resp->body.len < sizeof(snippet) - 1 ? resp->body.len : sizeof(snippet) - 1;
        memcpy(snippet, mlc_buf_str(&resp->body), n);
        snippet[n] = '\0';
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)snippet[i] < 0x20) {
                snippet[i] = ' ';
            }
        }
        mlc_errf(err, "%s %s: HTTP %ld: %s", rq->method, shown, resp->status, snippet);
    }
    return rc;
}

static int sleep_ms(long ms, const volatile int *stop)
{
    while (ms > 0) {
        long step = ms > 100 ? 100 : ms;
        struct timespec ts = { step / 1000, (step % 1000) * 1000000L };
        if (stop != NULL && *stop) {
            return -1;
        }
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            if (stop != NULL && *stop) {
                return -1;
            }
        }
        ms -= step;
    }
    return 0;
}

enum mlc_rc mlc_http_send(struct mlc_http *h, const struct mlc_http_req *rq,
                          struct mlc_http_resp *resp, const struct mlc_retry *retry,
                          const volatile int *stop, struct mlc_errbuf *err)
{
    static const struct mlc_retry dflt = MLC_RETRY_DEFAULT;
    const struct mlc_retry *r = retry ? retry : &dflt;
    long waited = 0;
    enum mlc_rc rc = MLC_E_NET;

    /* Transport failures and plain 5xx get max_attempts tries. Throttling
     * answers (429, 503 + Retry-After) say when to come back, so they are
     * bounded by the total wait budget instead: a storm is waited out. */
    for (int attempt = 0, tries = 0, throttles = 0;; attempt++) {
        struct mlc_errbuf one = { 0 };
        long wait;

        rc = mlc_http_do(h, rq, resp, &one);
        if (rc != MLC_E_NET && rc != MLC_E_THROTTLED) {
            if (rc != MLC_OK) {
                mlc_errf(err, "%s", one.msg);
            }
            return rc;
        }
        if (rc == MLC_E_THROTTLED) {
            throttles++;
        } else {
            tries++;
        }
        if (tries >= r->max_attempts || throttles > 100) {
            mlc_errf(err, "%s (gave up after %d attempts)", one.msg, attempt + 1);
            break;
        }
        wait = mlc_backoff_ms(rc == MLC_E_THROTTLED ? throttles - 1 : tries - 1, r->base_ms, r->cap_ms);
        if (resp->retry_after_ms >= 0 && resp->retry_after_ms > wait) {
            /* never sooner than the server asked: a small margin covers clock granularity */
            wait = resp->retry_after_ms + 20;
        }
        if (waited + wait > r->max_wait_ms) {
            mlc_errf(err, "%s (gave up: waiting %ld ms more would exceed %ld ms)", one.msg, wait,
                     r->max_wait_ms);
            break;
        }
        mlc_debug("retrying %s in %ld ms (attempt %d): %s", rq->method, wait, attempt + 2, one.msg);
        if (sleep_ms(wait, stop) != 0) {
            mlc_errf(err, "%s (stopped while waiting to retry)", one.msg);
            return MLC_E_STOPPED;
        }
        waited += wait;
        h->stats.retries++;
        h->stats.waited_ms += (unsigned long)wait;
    }
    return rc;
}
