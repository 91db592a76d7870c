/* SPDX-License-Identifier: Apache-2.0
 * oauth_token: one call of an OAuth 2.0 token endpoint and the access token
 * a grant provider holds (see oauth_token.h). Both grants answer alike
 * (RFC 6749 5.1 and 5.2), so the answer is read and classified once, here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/connectors/auth/oauth_token.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

char *oauth_dup(const char *s)
{
    return mlc_xstrdup(s ? s : "");
}

void oauth_wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void oauth_failf(struct conn *c, const char *fmt, ...)
{
    char raw[sizeof(c->err.msg)], clean[sizeof(c->err.msg)];
    va_list ap;

    if (c->err.set) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    mlc_log_redact(raw, clean, sizeof(clean));
    explicit_bzero(raw, sizeof(raw));
    mlc_errf(&c->err, "%s", clean);
}

enum mlc_rc oauth_form_add(struct mlc_buf *b, const char *name, const char *value)
{
    enum mlc_rc rc = MLC_OK;

    if (b->len > 0) {
        rc = mlc_buf_adds(b, "&");
    }
    if (rc == MLC_OK) {
        rc = mlc_http_urlencode(b, name);
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_adds(b, "=");
    }
    if (rc == MLC_OK) {
        rc = mlc_http_urlencode(b, value ? value : "");
    }
    return rc;
}

static const char *nonempty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* Seconds as a number or a numeric string; 0 when absent or not a number. */
static double seconds_of(const cJSON *root, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    char *end;
    double v;

    if (cJSON_IsNumber(it)) {
        return it->valuedouble;
    }
    if (cJSON_IsString(it) && it->valuestring[0] != '\0') {
        v = strtod(it->valuestring, &end);
        if (*end == '\0') {
            return v;
        }
    }
    return 0;
}

/* What an OAuth error code means for the caller (RFC 6749 5.2). */
static enum mlc_rc refusal_rc(const char *code, enum mlc_rc http_rc)
{
    /* the credential itself is refused: an operator must renew the consent
     * or fix the client secret. invalid_code is what Zoho says of a refresh
     * token it does not know (an inference: zoho-crm.md lists the code, for
     * the code exchange) */
    static const char *const auth[] = { "invalid_grant", "invalid_client", "invalid_code", NULL };
    /* the request is not what this client may do: a setting is wrong */
    static const char *const inval[] = { "unauthorized_client", "unsupported_grant_type",
                                         "invalid_scope", "invalid_request", NULL };

    for (const char *const *p = auth; *p != NULL; p++) {
        if (strcmp(code, *p) == 0) {
            return MLC_E_AUTH;
        }
    }
    for (const char *const *p = inval; *p != NULL; p++) {
        if (strcmp(code, *p) == 0) {
            return MLC_E_INVAL;
        }
    }
    return http_rc == MLC_OK ? MLC_E_REJECTED : http_rc;
}

enum mlc_rc oauth_token_call(struct conn *c, const struct oauth_call *call,
                             struct oauth_answer *ans)
{
    static const char *const json_hdrs[] = { "Accept: application/json",
                                             "Content-Type: application/json", NULL };
    static const char *const form_hdrs[] = { "Accept: application/json",
                                             "Content-Type: application/x-www-form-urlencoded",
                                             NULL };
    struct mlc_http_req rq = { 0 };
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf why = { 0 };
    const char *code = NULL, *access = NULL;
    char line[300], raw[sizeof(ans->detail)];
    enum mlc_rc rc;

    memset(ans, 0, sizeof(*ans));
    rq.method = "POST";
    rq.url = call->url;
    rq.headers = call->json ? json_hdrs : form_hdrs;
    rq.body = call->body;
    rq.body_len = strlen(call->body);
    rq.basic_user = call->basic_user;
    rq.basic_pass = call->basic_pass;
    c->api_calls++;
    rc = mlc_http_send(c->http, &rq, &resp, call->retry, c->stop, &why);
    ans->status = resp.status;
    if (resp.status != 0 && resp.body.len > 0) {
        ans->root = cJSON_ParseWithLength(mlc_buf_str(&resp.body), resp.body.len);
        if (!cJSON_IsObject(ans->root)) {
            cJSON_Delete(ans->root);
            ans->root = NULL;
        }
    }
    if (ans->root != NULL) {
        code = nonempty(mlc_json_str(ans->root, "error"));
        if (rc == MLC_OK) {
            /* kept even when the rest fails: a rotated token must be stored */
            ans->refresh_token = nonempty(mlc_json_str(ans->root, "refresh_token"));
            access = nonempty(mlc_json_str(ans->root, "access_token"));
        }
    }
    if (access != NULL) {
        ans->access_token = access;
        ans->api_domain = nonempty(mlc_json_str(ans->root, "api_domain"));
        /* Zoho's older answers gave expires_in in ms next to expires_in_sec */
        ans->expires_in = seconds_of(ans->root, "expires_in_sec");
        if (ans->expires_in <= 0) {
            ans->expires_in = seconds_of(ans->root, "expires_in");
        }
        rc = MLC_OK;
        goto out;
    }
    if (code != NULL) {
        /* a refusal, whatever the status (Zoho may answer 200 with an error) */
        snprintf(ans->error, sizeof(ans->error), "%s", code);
        auth_error_line(mlc_buf_str(&resp.body), resp.body.len, line, sizeof(line));
        if (strcmp(line, code) == 0) {
            snprintf(ans->detail, sizeof(ans->detail), "HTTP %ld, %s", resp.status, ans->error);
        } else {
            snprintf(ans->detail, sizeof(ans->detail), "HTTP %ld, %s: %s", resp.status, ans->error,
                     line);
        }
        rc = refusal_rc(code, rc);
    } else if (rc == MLC_OK) {
        snprintf(ans->detail, sizeof(ans->detail), "HTTP %ld answer without an access_token",
                 resp.status);
        rc = MLC_E_PROTO;
    } else {
        snprintf(ans->detail, sizeof(ans->detail), "%s", mlc_err_msg(&why));
    }
    memcpy(raw, ans->detail, sizeof(raw));
    mlc_log_redact(raw, ans->detail, sizeof(ans->detail));
    explicit_bzero(raw, sizeof(raw));
out:
    explicit_bzero(line, sizeof(line));
    mlc_http_resp_release(&resp);
    return rc;
}

void oauth_answer_release(struct oauth_answer *ans)
{
    if (ans != NULL) {
        cJSON_Delete(ans->root);
        memset(ans, 0, sizeof(*ans));
    }
}

/* RFC 6750 2.1: b64token characters only, so nothing can end the header. */
static int token_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

enum mlc_rc oauth_token_take(struct auth *au, struct oauth_token *t, const struct oauth_answer *ans,
                             struct conn *c)
{
    size_t len = strlen(ans->access_token);

    if (!token_ok(ans->access_token)) {
        oauth_failf(c,
                    "system '%s': the token endpoint sent an access token with blanks or "
                    "control characters",
                    c->name);
        return MLC_E_PROTO;
    }
    if (t->scheme != NULL &&
        strlen("Authorization: ") + strlen(t->scheme) + 1 + len >= sizeof(au->header)) {
        oauth_failf(c,
                    "system '%s': the access token (%zu bytes) does not fit in an "
                    "Authorization header of %zu bytes",
                    c->name, len, sizeof(au->header) - 1);
        return MLC_E_PROTO;
    }
    mlc_log_add_secret(ans->access_token);
    oauth_wipe_free(t->access);
    t->access = mlc_xstrdup(ans->access_token);
    if (t->scheme != NULL) {
        snprintf(au->header, sizeof(au->header), "Authorization: %s %s", t->scheme, t->access);
    } else {
        explicit_bzero(au->header, sizeof(au->header));
    }
    auth_set_lifetime(au, ans->expires_in);
    __atomic_add_fetch(&c->token_refreshes, 1, __ATOMIC_RELAXED);
    conn_log(c, MLC_LOG_DEBUG, "new access token (expires in %.0f s)", ans->expires_in);
    return MLC_OK;
}

char *oauth_scheme_dup(const char *scheme)
{
    if (scheme == NULL || scheme[0] == '\0' || strcasecmp(scheme, "Bearer") == 0) {
        return NULL;
    }
    return mlc_xstrdup(scheme);
}

void oauth_token_apply(const struct oauth_token *t, struct mlc_http_req *rq)
{
    if (t->scheme == NULL) {
        rq->bearer = t->access;
    }
}

void oauth_token_release(struct oauth_token *t)
{
    if (t != NULL) {
        oauth_wipe_free(t->access);
        free(t->scheme);
        t->access = t->scheme = NULL;
    }
}
