/* SPDX-License-Identifier: Apache-2.0
 * auth: the provider-independent part (see auth.h): the send wrapper that
 * renews a refused credential once, custom providers, error lines.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"

struct auth *auth_custom_new(const struct auth_ops *ops, void *priv)
{
    struct auth *au = mlc_xcalloc(1, sizeof(*au));

    au->ops = ops;
    au->priv = priv;
    return au;
}

void auth_free(struct auth *au)
{
    if (au == NULL) {
        return;
    }
    if (au->ops != NULL && au->ops->release != NULL) {
        au->ops->release(au);
    }
    memset(au->header, 0, sizeof(au->header));
    free(au);
}

long long auth_now_ms(const struct auth *au)
{
    struct timespec ts;

    if (au->now_ms != NULL) {
        return au->now_ms();
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void auth_set_lifetime(struct auth *au, double seconds)
{
    long long life, margin;

    if (!(seconds > 0)) {
        au->renew_at_ms = 0;
        return;
    }
    if (seconds > 366.0 * 86400) {
        seconds = 366.0 * 86400; /* a year is "long"; keeps the sum below in range */
    }
    life = (long long)(seconds * 1000);
    margin = life > 2 * AUTH_RENEW_BEFORE_MS ? AUTH_RENEW_BEFORE_MS : life / 2;
    au->renew_at_ms = auth_now_ms(au) + life - margin;
    if (au->renew_at_ms == 0) {
        au->renew_at_ms = 1; /* 0 means "never" */
    }
}

/* One send with the credential on: the request's own headers plus the
 * provider's header (at most 31 headers in all). */
static enum mlc_rc send_once(struct auth *au, struct conn *c, struct mlc_http_req *rq,
                             struct mlc_http_resp *resp)
{
    const char *h[32];
    const char *const *orig = rq->headers;
    size_t n = 0;
    enum mlc_rc rc;

    if (au->ops->apply != NULL) {
        au->ops->apply(au, rq);
    }
    if (au->header[0] != '\0') {
        for (const char *const *p = orig; p != NULL && *p != NULL && n < 30; p++) {
            h[n++] = *p;
        }
        h[n++] = au->header;
        h[n] = NULL;
        rq->headers = h;
    }
    rc = mlc_http_send(c->http, rq, resp, NULL, c->stop, &c->err);
    rq->headers = orig;
    return rc;
}

/* renew() with renew_at_ms cleared first: a provider that does not set a
 * lifetime has a credential that does not run out. */
static enum mlc_rc renew(struct auth *au, struct conn *c, int force)
{
    enum mlc_rc rc;

    au->renew_at_ms = 0;
    rc = au->ops->renew(au, c, force);
    if (rc == MLC_OK) {
        au->have = 1;
    }
    return rc;
}

enum mlc_rc auth_send(struct auth *au, struct conn *c, struct mlc_http_req *rq,
                      struct mlc_http_resp *resp)
{
    int err_was_set = c->err.set;
    enum mlc_rc rc;

    if (au->have && au->renew_at_ms != 0 && auth_now_ms(au) >= au->renew_at_ms) {
        /* about to run out: a new one now costs less than a refused call */
        au->have = 0;
    }
    if (!au->have) {
        rc = renew(au, c, 0);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    rc = send_once(au, c, rq, resp);
    if (rc != MLC_E_AUTH) {
        return rc;
    }
    /* refused: the credential expired or was revoked; renew it once */
    au->have = 0;
    mlc_http_resp_release(resp);
    memset(resp, 0, sizeof(*resp));
    if (!err_was_set) {
        /* the refusal is handled here; what fails from now on is the root
         * cause (and a retry that succeeds leaves no stale message behind) */
        mlc_err_reset(&c->err);
    }
    rc = renew(au, c, 1);
    if (rc != MLC_OK) {
        return rc;
    }
    return send_once(au, c, rq, resp);
}

/* First non-empty string among a JSON error body's usual members. */
static const char *json_message(const cJSON *o)
{
    static const char *const keys[] = { "message", "error_description", "errorMessage",
                                        "userDefinedErrorText", "error", NULL };
    const cJSON *arr, *it;

    for (const char *const *k = keys; *k; k++) {
        const char *s = mlc_json_str(o, *k);
        if (s != NULL && s[0] != '\0') {
            return s;
        }
        it = cJSON_GetObjectItemCaseSensitive(o, *k);
        if (cJSON_IsObject(it)) {
            const char *inner = json_message(it);
            if (inner != NULL) {
                return inner;
            }
        }
    }
    arr = mlc_json_arr(o, "errorMessages");
    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it) && it->valuestring[0] != '\0') {
            return it->valuestring;
        }
    }
    return NULL;
}

void auth_error_line(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root = NULL;
    const char *msg = NULL;
    size_t k = 0;

    if (n == 0) {
        return;
    }
    out[0] = '\0';
    if (body == NULL || len == 0) {
        return;
    }
    root = cJSON_ParseWithLength(body, len);
    if (cJSON_IsObject(root)) {
        msg = json_message(root);
    }
    if (msg == NULL) {
        msg = body;
    } else {
        len = strlen(msg);
    }
    /* one line: control characters and runs of blanks become one space */
    for (size_t i = 0; i < len && msg[i] != '\0' && k + 1 < n; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch < 0x20 || ch == 0x7f || isspace(ch)) {
            if (k > 0 && out[k - 1] != ' ') {
                out[k++] = ' ';
            }
            continue;
        }
        out[k++] = (char)ch;
    }
    while (k > 0 && out[k - 1] == ' ') {
        k--;
    }
    out[k] = '\0';
    cJSON_Delete(root);
}
