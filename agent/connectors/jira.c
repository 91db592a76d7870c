/* SPDX-License-Identifier: Apache-2.0
 * jira: Jira Cloud target connector (REST API v3). Creates issues with bulk
 * create (50 per call), updates them with PUT, finds our marker labels with
 * /search/jql after a crash. Auth is Basic (e-mail + API token) or OAuth 2.0
 * 3LO with rotating refresh tokens kept in the secret store.
 * Protocol notes: docs/api/jira-cloud.md.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_err.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "agent/connectors/connector.h"
#include "agent/connectors/jira.h"
#include "agent/connectors/jira_adf.h"

enum { JIRA_AUTH_BASIC = 0, JIRA_AUTH_OAUTH = 1 };

/* Refresh the access token this long before Jira says it expires. */
#define JIRA_TOKEN_MARGIN_S 60
/* Cached e-mail -> accountId lookups (hits and misses). */
#define JIRA_USER_CACHE_MAX 4096
/* A search that pages longer than this is looping. */
#define JIRA_SEARCH_MAX_PAGES   10000
#define JIRA_PRIORITY_MAX_PAGES 50

struct jira_conf {
    char *type;
    char *base_url;
    int auth;
    char *email;
    char *api_token;
    char *client_id;
    char *client_secret;
    char *refresh_token;
    char *cloud_id;
    char *token_url;
    long timeout_s;
    int tls_insecure;
    long user_cache_s;
};

static const struct conf_key jira_keys[] = {
    { "type", CONF_STR, offsetof(struct jira_conf, type), NULL, "connector type: jira", 0, 0,
      NULL },
    { "base_url", CONF_URL, offsetof(struct jira_conf, base_url), NULL,
      "site URL (https://x.atlassian.net); oauth: https://api.atlassian.com", 0, 0, NULL },
    { "auth", CONF_ENUM, offsetof(struct jira_conf, auth), "basic",
      "basic (e-mail + API token) or oauth (3LO app)", 0, 0, "basic|oauth" },
    { "email", CONF_STR, offsetof(struct jira_conf, email), "", "account e-mail (basic)", 0, 0,
      NULL },
    { "api_token", CONF_SECRET, offsetof(struct jira_conf, api_token), "",
      "API token (basic), e.g. secret:jira.token", 0, 0, NULL },
    { "client_id", CONF_STR, offsetof(struct jira_conf, client_id), "", "OAuth app client id", 0, 0,
      NULL },
    { "client_secret", CONF_SECRET, offsetof(struct jira_conf, client_secret), "",
      "OAuth app client secret", 0, 0, NULL },
    { "refresh_token", CONF_SECRET, offsetof(struct jira_conf, refresh_token), "",
      "first OAuth refresh token; rotated ones go to the secret store", 0, 0, NULL },
    { "cloud_id", CONF_STR, offsetof(struct jira_conf, cloud_id), "",
      "OAuth: the site's cloud id (accessible-resources)", 0, 0, NULL },
    { "token_url", CONF_URL, offsetof(struct jira_conf, token_url), "",
      "OAuth token endpoint; empty = base_url + /oauth/token", 0, 0, NULL },
    { "timeout_s", CONF_INT, offsetof(struct jira_conf, timeout_s), "60",
      "whole-request timeout in seconds", 1, 600, NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct jira_conf, tls_insecure), "false",
      "skip TLS certificate checks (labs only)", 0, 0, NULL },
    { "user_cache_s", CONF_DURATION, offsetof(struct jira_conf, user_cache_s), "1h",
      "how long assignee e-mail lookups are cached", 0, 604800, NULL },
    { 0 },
};

enum jira_field_kind {
    FIELD_TEXT = 0,     /* plain string */
    FIELD_OPTION,       /* select/radio: {"value": v} */
    FIELD_OPTION_ARRAY, /* multi-select: [{"value": v}] */
    FIELD_ADF,          /* multi-line text: ADF document */
    FIELD_NUMBER,       /* number */
};

struct jira_field {
    char *id; /* customfield_10050 */
    char *name;
    enum jira_field_kind kind;
};

struct jira_user {
    char *email;      /* lowercased */
    char *account_id; /* NULL: no such user (a cached miss) */
    double expires;   /* monotonic seconds */
    int warned;
};

struct jira {
    struct jira_conf cf;
    int conf_loaded;
    char *path;     /* "systems.<name>" for messages */
    char *api_base; /* site URL, or base_url/ex/jira/<cloud_id> */
    char *token_url;
    char *refresh_name; /* secret store name of the current refresh token */
    struct mlc_http *own_http;

    char *basic_pass;
    char *client_secret;
    char *refresh_token; /* newest known refresh token */
    int refresh_unsaved; /* refresh_token is not yet durable in the store */
    char *access_token;
    double refresh_at; /* monotonic time to renew the access token */
    int auth_failed;   /* the last jira_call() failed while getting a token */

    struct jira_field *fields;
    size_t n_fields;
    int fields_loaded;

    struct jira_user *users;
    size_t n_users;
    size_t user_evict;
};

/* ---------------------------------------------------------------- helpers */

static double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        volatile char *v = s;

        while (*v != '\0') {
            *v++ = '\0';
        }
        free(s);
    }
}

static void set_msg(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

/* Append s to out[0..n) at *pos, truncating; out stays NUL-terminated. */
static void text_add(char *out, size_t n, size_t *pos, const char *s)
{
    size_t k = strlen(s);

    if (*pos + 1 >= n) {
        return;
    }
    if (k > n - 1 - *pos) {
        k = n - 1 - *pos;
    }
    memcpy(out + *pos, s, k);
    *pos += k;
    out[*pos] = '\0';
}

/* The part of an mlc_http message after "<METHOD> <url>: " (the reason). */
static const char *http_reason(const char *msg)
{
    const char *p = strstr(msg, ": ");

    return p != NULL ? p + 2 : msg;
}

static const char *body_str(const struct mlc_http_resp *resp)
{
    return mlc_buf_str(&resp->body);
}

/* A string member or a number member as text (Jira ids are strings, but be lenient). */
static int id_text(const cJSON *obj, const char *key, char *out, size_t n)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(it) && it->valuestring[0] != '\0' && strlen(it->valuestring) < n) {
        memcpy(out, it->valuestring, strlen(it->valuestring) + 1);
        return 0;
    }
    if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1e15 &&
        (double)(long long)it->valuedouble == it->valuedouble) {
        int k = snprintf(out, n, "%lld", (long long)it->valuedouble);

        return k > 0 && (size_t)k < n ? 0 : -1;
    }
    return -1;
}

/* ErrorCollection (or OAuth error body) -> "msg; msg; field: msg"; returns length. */
static size_t collection_text(const cJSON *ec, char *out, size_t n)
{
    static const char *const extra[] = { "error_description", "error", "message", NULL };
    const cJSON *it;
    size_t pos = 0;

    out[0] = '\0';
    if (!cJSON_IsObject(ec)) {
        return 0;
    }
    cJSON_ArrayForEach(it, mlc_json_arr(ec, "errorMessages"))
    {
        if (cJSON_IsString(it) && it->valuestring[0] != '\0') {
            text_add(out, n, &pos, pos > 0 ? "; " : "");
            text_add(out, n, &pos, it->valuestring);
        }
    }
    cJSON_ArrayForEach(it, mlc_json_obj(ec, "errors"))
    {
        char val[256];

        if (it->string == NULL || mlc_json_scalar_text(it, val, sizeof(val)) != 0) {
            continue;
        }
        text_add(out, n, &pos, pos > 0 ? "; " : "");
        text_add(out, n, &pos, it->string);
        text_add(out, n, &pos, ": ");
        text_add(out, n, &pos, val);
    }
    /* OAuth bodies: error_description is the readable one; skip error then */
    for (size_t i = 0; extra[i] != NULL; i++) {
        const char *s = mlc_json_str(ec, extra[i]);

        if (s == NULL || s[0] == '\0') {
            continue;
        }
        if (i == 1 && mlc_json_str(ec, "error_description") != NULL) {
            continue;
        }
        text_add(out, n, &pos, pos > 0 ? "; " : "");
        text_add(out, n, &pos, s);
    }
    return pos;
}

/* ----------------------------------------------------------- pure helpers */

enum mlc_rc jira_error_text(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root;
    size_t i, k;

    if (out == NULL || n == 0) {
        return MLC_E_INVAL;
    }
    out[0] = '\0';
    if (body == NULL || len == 0) {
        return MLC_E_PROTO;
    }
    root = cJSON_ParseWithLength(body, len);
    if (root != NULL && collection_text(root, out, n) > 0) {
        cJSON_Delete(root);
        return MLC_OK;
    }
    cJSON_Delete(root);
    /* not an ErrorCollection (an HTML error page, a proxy): show a clean snippet */
    k = len < 200 ? len : 200;
    if (k > n - 1) {
        k = n - 1;
    }
    for (i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)body[i];

        out[i] = (ch < 0x20 || ch >= 0x7f) ? ' ' : (char)ch;
    }
    out[k] = '\0';
    return MLC_E_PROTO;
}

enum mlc_rc jira_parse_bulk_response(const char *body, size_t len, size_t n_items,
                                     struct result *out, struct mlc_errbuf *err)
{
    cJSON *root = NULL;
    const cJSON *issues, *errors, *it;
    unsigned char *failed = NULL;
    size_t n_failed = 0, n_ok = 0, i;
    enum mlc_rc rc = MLC_E_PROTO;

    root = mlc_json_parse(body, len, "jira bulk create response", err);
    if (root == NULL) {
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        mlc_errf(err, "jira bulk create response: expected an object");
        goto out;
    }
    issues = cJSON_GetObjectItemCaseSensitive(root, "issues");
    errors = cJSON_GetObjectItemCaseSensitive(root, "errors");
    if ((issues != NULL && !cJSON_IsArray(issues)) || (errors != NULL && !cJSON_IsArray(errors))) {
        mlc_errf(err, "jira bulk create response: 'issues' and 'errors' must be arrays");
        goto out;
    }
    failed = calloc(n_items + 1, 1);
    if (failed == NULL) {
        rc = MLC_E_NOMEM;
        goto out;
    }
    /* pass 1: validate everything so out[] is only written for a sane body */
    cJSON_ArrayForEach(it, errors)
    {
        const cJSON *num = cJSON_GetObjectItemCaseSensitive(it, "failedElementNumber");
        double v;

        if (!cJSON_IsObject(it) || !cJSON_IsNumber(num)) {
            mlc_errf(err, "jira bulk create response: error entry without failedElementNumber");
            goto out;
        }
        v = num->valuedouble;
        if (!(v >= 0 && v < (double)n_items) || (double)(size_t)v != v) {
            mlc_errf(err, "jira bulk create response: failedElementNumber %g outside 0..%zu", v,
                     n_items);
            goto out;
        }
        if (failed[(size_t)v]) {
            mlc_errf(err, "jira bulk create response: failedElementNumber %zu repeated", (size_t)v);
            goto out;
        }
        failed[(size_t)v] = 1;
        n_failed++;
    }
    cJSON_ArrayForEach(it, issues)
    {
        char key[sizeof(out->target_key)], id[sizeof(out->target_id)];

        if (!cJSON_IsObject(it) || id_text(it, "key", key, sizeof(key)) != 0 ||
            id_text(it, "id", id, sizeof(id)) != 0) {
            mlc_errf(err, "jira bulk create response: created issue without a valid key and id");
            goto out;
        }
        n_ok++;
    }
    if (n_ok + n_failed != n_items) {
        mlc_errf(err, "jira bulk create response: %zu created + %zu failed for %zu sent", n_ok,
                 n_failed, n_items);
        goto out;
    }
    /* pass 2: successes fill the indexes no error names, in request order */
    i = 0;
    cJSON_ArrayForEach(it, issues)
    {
        while (failed[i]) {
            i++;
        }
        memset(&out[i], 0, sizeof(out[i]));
        out[i].rc = MLC_OK;
        id_text(it, "key", out[i].target_key, sizeof(out[i].target_key));
        id_text(it, "id", out[i].target_id, sizeof(out[i].target_id));
        i++;
    }
    cJSON_ArrayForEach(it, errors)
    {
        size_t k = (size_t)mlc_json_num(it, "failedElementNumber", 0);
        const cJSON *ee = mlc_json_obj(it, "elementErrors");
        double st = mlc_json_num(it, "status", mlc_json_num(ee, "status", 0));
        long status = (st >= 100 && st < 600) ? (long)st : 0;
        enum mlc_rc erc = status >= 400 ? mlc_http_classify(status, 0) : MLC_E_REJECTED;

        memset(&out[k], 0, sizeof(out[k]));
        out[k].rc = erc == MLC_OK ? MLC_E_REJECTED : erc;
        if (collection_text(ee, out[k].err, sizeof(out[k].err)) == 0) {
            set_msg(out[k].err, sizeof(out[k].err), "jira rejected the issue (HTTP %ld)",
                    status != 0 ? status : 400L);
        }
    }
    rc = MLC_OK;
out:
    free(failed);
    cJSON_Delete(root);
    return rc;
}

enum mlc_rc jira_parse_search_page(const char *body, size_t len,
                                   void (*on_label)(void *ctx, const char *label, const char *key,
                                                    const char *id, const char *hash),
                                   void *ctx, char **next_token, struct mlc_errbuf *err)
{
    cJSON *root;
    const cJSON *issues, *it, *last, *tok;
    enum mlc_rc rc = MLC_E_PROTO;

    *next_token = NULL;
    root = mlc_json_parse(body, len, "jira search response", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    issues = cJSON_GetObjectItemCaseSensitive(root, "issues");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(issues)) {
        mlc_errf(err, "jira search response: expected an object with an 'issues' array");
        goto out;
    }
    last = cJSON_GetObjectItemCaseSensitive(root, "isLast");
    tok = cJSON_GetObjectItemCaseSensitive(root, "nextPageToken");
    if ((last != NULL && !cJSON_IsBool(last)) ||
        (tok != NULL && !cJSON_IsString(tok) && !cJSON_IsNull(tok))) {
        mlc_errf(err, "jira search response: wrong type for isLast or nextPageToken");
        goto out;
    }
    if (cJSON_IsFalse(last) && (!cJSON_IsString(tok) || tok->valuestring[0] == '\0')) {
        mlc_errf(err, "jira search response: isLast is false but there is no nextPageToken");
        goto out;
    }
    cJSON_ArrayForEach(it, issues)
    {
        char key[64], id[32];
        const cJSON *fields, *labels, *lab, *props, *trace;
        const char *hash = NULL;

        if (!cJSON_IsObject(it) || id_text(it, "key", key, sizeof(key)) != 0 ||
            id_text(it, "id", id, sizeof(id)) != 0) {
            mlc_errf(err, "jira search response: issue without a valid key and id");
            goto out;
        }
        props = cJSON_GetObjectItemCaseSensitive(it, "properties");
        trace = cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, JIRA_TRACE_PROP)
                                      : NULL;
        if (cJSON_IsObject(trace)) {
            hash = mlc_json_str(trace, "hash");
            if (hash != NULL && strlen(hash) != 64) {
                hash = NULL; /* not a hash this agent wrote */
            }
        }
        fields = cJSON_GetObjectItemCaseSensitive(it, "fields");
        if (fields == NULL) {
            continue;
        }
        labels = cJSON_GetObjectItemCaseSensitive(fields, "labels");
        if (!cJSON_IsObject(fields) || (labels != NULL && !cJSON_IsArray(labels))) {
            mlc_errf(err, "jira search response: issue %s has malformed fields.labels", key);
            goto out;
        }
        cJSON_ArrayForEach(lab, labels)
        {
            if (!cJSON_IsString(lab)) {
                mlc_errf(err, "jira search response: issue %s has a non-string label", key);
                goto out;
            }
            if (on_label != NULL) {
                on_label(ctx, lab->valuestring, key, id, hash);
            }
        }
    }
    if (!cJSON_IsTrue(last) && cJSON_IsString(tok) && tok->valuestring[0] != '\0') {
        *next_token = mlc_xstrdup(tok->valuestring);
    }
    rc = MLC_OK;
out:
    cJSON_Delete(root);
    return rc;
}

static enum mlc_rc jql_quote(struct mlc_buf *b, const char *s)
{
    enum mlc_rc rc = mlc_buf_add(b, "\"", 1);

    for (; rc == MLC_OK && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            rc = mlc_buf_add(b, "\\", 1);
            if (rc != MLC_OK) {
                break;
            }
        } else if (ch < 0x20) {
            /* a control byte cannot be in a label or project key: drop it */
            continue;
        }
        rc = mlc_buf_add(b, s, 1);
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_add(b, "\"", 1);
    }
    return rc;
}

enum mlc_rc jira_jql_markers(struct mlc_buf *b, const char *project, const char *const *markers,
                             size_t n)
{
    enum mlc_rc rc;
    size_t i;

    if (project == NULL || n == 0) {
        return MLC_E_INVAL;
    }
    rc = mlc_buf_adds(b, "project = ");
    if (rc == MLC_OK) {
        rc = jql_quote(b, project);
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_adds(b, " AND labels in (");
    }
    for (i = 0; rc == MLC_OK && i < n; i++) {
        if (i > 0) {
            rc = mlc_buf_adds(b, ", ");
        }
        if (rc == MLC_OK) {
            rc = jql_quote(b, markers[i] != NULL ? markers[i] : "");
        }
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_adds(b, ")");
    }
    return rc;
}

void jira_summary_clean(const char *in, char *out, size_t n)
{
    char *clean = jira_text_clean(in);
    size_t max = n - 1, len, i, o = 0;

    if (n == 0) {
        free(clean);
        return;
    }
    out[0] = '\0';
    if (clean == NULL) {
        return;
    }
    if (max > JIRA_SUMMARY_MAX) {
        max = JIRA_SUMMARY_MAX;
    }
    len = strlen(clean);
    /* the cleaned text is valid UTF-8, so a cut before a lead byte is safe */
    if (len > max) {
        len = max;
        while (len > 0 && ((unsigned char)clean[len] & 0xc0) == 0x80) {
            len--;
        }
    }
    for (i = 0; i < len; i++) {
        /* CRLF was already folded to one LF; LF and TAB become spaces */
        out[o++] = (clean[i] == '\n' || clean[i] == '\t') ? ' ' : clean[i];
    }
    out[o] = '\0';
    free(clean);
}

char *jira_label_clean(const char *in)
{
    char *clean = jira_text_clean(in);
    size_t i;

    if (clean == NULL) {
        return NULL;
    }
    for (i = 0; clean[i] != '\0'; i++) {
        if (isspace((unsigned char)clean[i])) {
            clean[i] = '_';
        }
    }
    if (clean[0] == '\0') {
        free(clean);
        return NULL;
    }
    return clean;
}

/* ------------------------------------------------------------ HTTP + auth */

static struct mlc_http *jira_http(struct conn *c)
{
    struct jira *j = c->priv;

    return j->own_http != NULL ? j->own_http : c->http;
}

static enum mlc_rc jira_resolve(struct conn *c, const char *key, const char *ref, char **out,
                                struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    enum mlc_rc rc;

    if (*out != NULL) {
        return MLC_OK;
    }
    rc = conn_secret(c, ref, out);
    if (rc != MLC_OK) {
        mlc_errf(err, "%s.%s: cannot resolve the secret reference (%s)", j->path, key,
                 mlc_strerror(rc));
        *out = NULL;
    }
    return rc;
}

static enum mlc_rc jira_save_refresh(struct conn *c, struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    enum mlc_rc rc;

    if (c->vault == NULL) {
        mlc_errf(err, "jira '%s': cannot keep the rotated oauth refresh token: no secret store",
                 c->name);
        return MLC_E_INVAL;
    }
    rc = c->vault->put(c->vault->ctx, j->refresh_name, j->refresh_token, err);
    if (rc != MLC_OK) {
        mlc_errf(err, "jira '%s': cannot store the rotated oauth refresh token '%s'", c->name,
                 j->refresh_name);
        return rc;
    }
    j->refresh_unsaved = 0;
    return MLC_OK;
}

/* The refresh token to use next: memory, then the store, then the config. */
static enum mlc_rc jira_current_refresh(struct conn *c, struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    struct mlc_errbuf one = { 0 };
    enum mlc_rc rc;

    if (j->refresh_token != NULL) {
        return MLC_OK;
    }
    if (c->vault != NULL) {
        rc = c->vault->get(c->vault->ctx, j->refresh_name, &j->refresh_token, &one);
        if (rc == MLC_OK) {
            return MLC_OK;
        }
        j->refresh_token = NULL;
        if (rc != MLC_E_NOTFOUND) {
            mlc_errf(err, "jira '%s': cannot read secret '%s': %s", c->name, j->refresh_name,
                     mlc_err_msg(&one));
            return rc;
        }
    }
    if (j->cf.refresh_token == NULL || j->cf.refresh_token[0] == '\0') {
        mlc_errf(err,
                 "%s.refresh_token: no oauth refresh token: authorise the app, then run "
                 "`mlc-agent secret set %s`",
                 j->path, j->refresh_name);
        return MLC_E_AUTH;
    }
    return jira_resolve(c, "refresh_token", j->cf.refresh_token, &j->refresh_token, err);
}

static enum mlc_rc jira_refresh(struct conn *c, struct mlc_errbuf *err)
{
    static const char *const hdrs[] = { "Accept: application/json",
                                        "Content-Type: application/json", NULL };
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_http_req rq = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *body = NULL, *root = NULL;
    char *json = NULL, text[300];
    const char *access, *refresh, *e;
    double expires_in;
    enum mlc_rc rc;

    rc = jira_current_refresh(c, err);
    if (rc != MLC_OK) {
        goto out;
    }
    rc = jira_resolve(c, "client_secret", j->cf.client_secret, &j->client_secret, err);
    if (rc != MLC_OK) {
        goto out;
    }
    body = mlc_json_xobj();
    mlc_json_xadd_str(body, "grant_type", "refresh_token");
    mlc_json_xadd_str(body, "client_id", j->cf.client_id);
    mlc_json_xadd_str(body, "client_secret", j->client_secret);
    mlc_json_xadd_str(body, "refresh_token", j->refresh_token);
    json = mlc_json_print(body);
    rq.method = "POST";
    rq.url = j->token_url;
    rq.headers = hdrs;
    rq.body = json;
    rq.body_len = strlen(json);
    c->api_calls++;
    rc = mlc_http_send(jira_http(c), &rq, &resp, NULL, c->stop, &one);
    if (rc != MLC_OK) {
        jira_error_text(body_str(&resp), resp.body.len, text, sizeof(text));
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        e = mlc_json_str(root, "error");
        if (resp.status >= 400 && resp.status < 500 && e != NULL &&
            strcmp(e, "invalid_grant") == 0) {
            /* the token family is dead (expired, reused, or consent revoked) */
            mlc_errf(err,
                     "jira '%s': the oauth refresh token was refused (HTTP %ld invalid_grant: "
                     "%s): re-authorise the app in a browser (re-consent), then set the new "
                     "refresh token with `mlc-agent secret set %s`",
                     c->name, resp.status, text, j->refresh_name);
            rc = MLC_E_AUTH;
            /* forget it: the next attempt re-reads the store, where the
             * operator puts the new token, without an agent restart */
            if (!j->refresh_unsaved) {
                wipe_free(j->refresh_token);
                j->refresh_token = NULL;
            }
        } else if (resp.status == 401 || resp.status == 403) {
            mlc_errf(err,
                     "jira '%s': oauth token endpoint %s refused the refresh (HTTP %ld: %s): "
                     "check client_id and client_secret",
                     c->name, j->token_url, resp.status, text);
            rc = MLC_E_AUTH;
        } else {
            mlc_errf(err, "jira '%s': oauth token refresh failed: %s", c->name, mlc_err_msg(&one));
        }
        goto out;
    }
    root = mlc_json_parse(body_str(&resp), resp.body.len, "jira oauth token response", err);
    access = mlc_json_str(root, "access_token");
    refresh = mlc_json_str(root, "refresh_token");
    if (access == NULL || access[0] == '\0') {
        mlc_errf(err, "jira '%s': oauth token response has no access_token", c->name);
        rc = MLC_E_PROTO;
        goto out;
    }
    expires_in = mlc_json_num(root, "expires_in", 3600);
    if (expires_in < 1 || expires_in > 86400 * 30) {
        expires_in = 3600;
    }
    mlc_log_add_secret(access);
    wipe_free(j->access_token);
    j->access_token = NULL;
    if (refresh != NULL && refresh[0] != '\0' && strcmp(refresh, j->refresh_token) != 0) {
        /* rotation disabled the token we just used: the new one must be durable
         * before anything relies on this grant */
        mlc_log_add_secret(refresh);
        wipe_free(j->refresh_token);
        j->refresh_token = mlc_xstrdup(refresh);
        j->refresh_unsaved = 1;
        rc = jira_save_refresh(c, err);
        if (rc != MLC_OK) {
            goto out;
        }
    }
    j->access_token = mlc_xstrdup(access);
    __atomic_add_fetch(&c->token_refreshes, 1, __ATOMIC_RELAXED);
    /* renew a minute early; short-lived test tokens at half their life */
    j->refresh_at = mono_now() + expires_in -
                    (expires_in > 2 * JIRA_TOKEN_MARGIN_S ? JIRA_TOKEN_MARGIN_S : expires_in / 2);
    conn_log(c, MLC_LOG_DEBUG, "oauth access token refreshed (expires in %.0f s)", expires_in);
    rc = MLC_OK;
out:
    cJSON_Delete(root);
    cJSON_Delete(body);
    wipe_free(json);
    mlc_http_resp_release(&resp);
    return rc;
}

/* Put credentials on rq; force = the access token was just refused. */
static enum mlc_rc jira_auth(struct conn *c, struct mlc_http_req *rq, int force,
                             struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    enum mlc_rc rc;

    if (j->cf.auth == JIRA_AUTH_BASIC) {
        rc = jira_resolve(c, "api_token", j->cf.api_token, &j->basic_pass, err);
        rq->basic_user = j->cf.email;
        rq->basic_pass = j->basic_pass;
        return rc;
    }
    if (j->refresh_unsaved) {
        rc = jira_save_refresh(c, err);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    if (force || j->access_token == NULL || mono_now() >= j->refresh_at) {
        rc = jira_refresh(c, err);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    rq->bearer = j->access_token;
    return MLC_OK;
}

/* One logical API call: path is appended to the API base (it carries the
 * query); body NULL sends none. On OAuth a 401 refreshes the token once and
 * repeats the call. resp is filled (caller releases) whatever the outcome;
 * err gets mlc_http's "<METHOD> <url>: <what>" or the token failure. */
static enum mlc_rc jira_call_r(struct conn *c, const char *method, const char *path,
                               const cJSON *body, const struct mlc_retry *retry,
                               struct mlc_http_resp *resp, struct mlc_errbuf *err)
{
    static const char *const hdrs_body[] = { "Accept: application/json",
                                             "Content-Type: application/json", NULL };
    static const char *const hdrs_get[] = { "Accept: application/json", NULL };
    struct jira *j = c->priv;
    char *url = mlc_xasprintf("%s%s", j->api_base, path);
    char *json = body != NULL ? mlc_json_print(body) : NULL;
    enum mlc_rc rc;
    int attempt;

    c->api_calls++;
    j->auth_failed = 0;
    for (attempt = 0;; attempt++) {
        struct mlc_http_req rq = { 0 };
        struct mlc_errbuf one = { 0 };

        rq.method = method;
        rq.url = url;
        rq.headers = json != NULL ? hdrs_body : hdrs_get;
        rq.body = json;
        rq.body_len = json != NULL ? strlen(json) : 0;
        rc = jira_auth(c, &rq, attempt > 0, err);
        if (rc != MLC_OK) {
            j->auth_failed = 1;
            break;
        }
        rc = mlc_http_send(jira_http(c), &rq, resp, retry, c->stop, &one);
        if (rc == MLC_E_AUTH && resp->status == 401 && j->cf.auth == JIRA_AUTH_OAUTH &&
            attempt == 0) {
            conn_log(c, MLC_LOG_INFO, "access token refused (HTTP 401): refreshing once");
            continue;
        }
        if (rc != MLC_OK) {
            mlc_errf(err, "%s", mlc_err_msg(&one));
        }
        break;
    }
    free(url);
    free(json);
    return rc;
}

static enum mlc_rc jira_call(struct conn *c, const char *method, const char *path,
                             const cJSON *body, struct mlc_http_resp *resp, struct mlc_errbuf *err)
{
    return jira_call_r(c, method, path, body, NULL, resp, err);
}

/* "<prefix><urlencoded s><suffix>" (heap). */
static char *path_with(const char *prefix, const char *s, const char *suffix)
{
    struct mlc_buf b = MLC_BUF_INIT;

    mlc_buf_adds(&b, prefix);
    mlc_http_urlencode(&b, s);
    mlc_buf_adds(&b, suffix);
    return mlc_buf_detach(&b);
}

/* ------------------------------------------------------------ open/close */

static void jira_close(struct conn *c)
{
    struct jira *j = c->priv;
    size_t i;

    if (j == NULL) {
        return;
    }
    if (j->conf_loaded) {
        mlc_conf_release(jira_keys, &j->cf);
    }
    free(j->path);
    free(j->api_base);
    free(j->token_url);
    free(j->refresh_name);
    mlc_http_free(j->own_http);
    wipe_free(j->basic_pass);
    wipe_free(j->client_secret);
    wipe_free(j->refresh_token);
    wipe_free(j->access_token);
    for (i = 0; i < j->n_fields; i++) {
        free(j->fields[i].id);
        free(j->fields[i].name);
    }
    free(j->fields);
    for (i = 0; i < j->n_users; i++) {
        free(j->users[i].email);
        free(j->users[i].account_id);
    }
    free(j->users);
    free(j);
    c->priv = NULL;
}

static int empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static enum mlc_rc jira_open(struct conn *c)
{
    struct jira *j = mlc_xcalloc(1, sizeof(*j));
    struct jira_conf *cf = &j->cf;
    enum mlc_rc rc;
    const char *p;

    c->priv = j;
    j->path = mlc_xasprintf("systems.%s", c->name);
    rc = mlc_conf_load(c->conf, j->path, jira_keys, conn_common_allow, cf, &c->err);
    j->conf_loaded = 1;
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(cf->type, "jira") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"jira\", got '%s'", j->path, cf->type);
        return MLC_E_INVAL;
    }
    if (empty(cf->base_url)) {
        mlc_errf(&c->err, "%s.base_url: required", j->path);
        return MLC_E_INVAL;
    }
    if (cf->auth == JIRA_AUTH_BASIC) {
        if (empty(cf->email)) {
            mlc_errf(&c->err, "%s.email: required when auth is basic", j->path);
            return MLC_E_INVAL;
        }
        if (empty(cf->api_token)) {
            mlc_errf(&c->err, "%s.api_token: required when auth is basic", j->path);
            return MLC_E_INVAL;
        }
        j->api_base = mlc_xstrdup(cf->base_url);
    } else {
        static const char *const need[] = { "client_id", "client_secret", "cloud_id", NULL };
        const char *const have[] = { cf->client_id, cf->client_secret, cf->cloud_id };

        for (size_t i = 0; need[i] != NULL; i++) {
            if (empty(have[i])) {
                mlc_errf(&c->err, "%s.%s: required when auth is oauth", j->path, need[i]);
                return MLC_E_INVAL;
            }
        }
        for (p = cf->cloud_id; *p != '\0'; p++) {
            if (!isalnum((unsigned char)*p) && *p != '-') {
                mlc_errf(&c->err,
                         "%s.cloud_id: '%s' is not a cloud id (the UUID listed by "
                         "accessible-resources)",
                         j->path, cf->cloud_id);
                return MLC_E_INVAL;
            }
        }
        j->api_base = mlc_xasprintf("%s/ex/jira/%s", cf->base_url, cf->cloud_id);
    }
    j->token_url = empty(cf->token_url) ? mlc_xasprintf("%s/oauth/token", cf->base_url)
                                        : mlc_xstrdup(cf->token_url);
    j->refresh_name = mlc_xasprintf("%s.oauth.refresh_token", c->name);
    if (cf->auth == JIRA_AUTH_OAUTH && empty(cf->refresh_token) && c->vault != NULL) {
        struct mlc_errbuf one = { 0 };
        char *tok = NULL;

        rc = c->vault->get(c->vault->ctx, j->refresh_name, &tok, &one);
        wipe_free(tok);
        if (rc == MLC_E_NOTFOUND) {
            mlc_errf(&c->err,
                     "%s.refresh_token: required when auth is oauth and the secret store has "
                     "no '%s' yet",
                     j->path, j->refresh_name);
            return MLC_E_INVAL;
        }
        if (rc != MLC_OK) {
            mlc_errf(&c->err, "%s: cannot read secret '%s': %s", j->path, j->refresh_name,
                     mlc_err_msg(&one));
            return rc;
        }
    }
    /* the agent builds c->http from timeout_s and tls_insecure; tools that
     * open a conn without one (tests, check-config) get a private handle */
    if (c->http == NULL) {
        struct mlc_http_opts opts = { 0 };

        opts.timeout_ms = cf->timeout_s * 1000;
        opts.tls_insecure = cf->tls_insecure;
        j->own_http = mlc_http_new(&opts);
        if (j->own_http == NULL) {
            mlc_errf(&c->err, "%s: cannot create an HTTP handle", j->path);
            return MLC_E_NOMEM;
        }
    }
    return MLC_OK;
}

/* ------------------------------------------------------------------ ping */

static enum mlc_rc jira_ping(struct conn *c)
{
    /* a health check answers fast; the retry budget is for real work */
    static const struct mlc_retry quick = { 2, 250, 1000, 2000 };
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *root = NULL;
    char text[300];
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    rc = jira_call_r(c, "GET", "/rest/api/3/myself", NULL, &quick, &resp, &one);
    if (rc == MLC_OK) {
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        if (mlc_json_str(root, "accountId") == NULL) {
            mlc_errf(&c->err,
                     "jira at %s: /rest/api/3/myself did not return a user (is base_url the "
                     "jira site URL?)",
                     j->cf.base_url);
            rc = MLC_E_PROTO;
        }
        goto out;
    }
    if (j->auth_failed) {
        mlc_errf(&c->err, "%s", mlc_err_msg(&one));
        goto out;
    }
    jira_error_text(body_str(&resp), resp.body.len, text, sizeof(text));
    if (resp.status == 0 && rc != MLC_E_STOPPED) {
        mlc_errf(&c->err, "cannot reach jira at %s: %s", j->cf.base_url,
                 http_reason(mlc_err_msg(&one)));
    } else if (resp.status == 401 && j->cf.auth == JIRA_AUTH_BASIC) {
        mlc_errf(&c->err,
                 "jira at %s: authentication failed for %s (HTTP 401): check the API token; "
                 "tokens created after Dec 2024 expire",
                 j->cf.base_url, j->cf.email);
    } else if (resp.status == 401) {
        mlc_errf(&c->err,
                 "jira at %s: the oauth access token for cloud id %s was refused (HTTP 401) even "
                 "after a refresh: check the app's scopes and that this site is in the grant",
                 j->cf.base_url, j->cf.cloud_id);
    } else if (resp.status == 403) {
        mlc_errf(&c->err, "jira at %s: access denied (HTTP 403): %s", j->cf.base_url, text);
    } else if (resp.status == 404) {
        mlc_errf(&c->err, "jira at %s: /rest/api/3/myself not found (HTTP 404): check base_url%s",
                 j->cf.base_url, j->cf.auth == JIRA_AUTH_OAUTH ? " and cloud_id" : "");
    } else {
        mlc_errf(&c->err, "jira at %s: %s", j->cf.base_url, http_reason(mlc_err_msg(&one)));
    }
out:
    cJSON_Delete(root);
    mlc_http_resp_release(&resp);
    return rc;
}

/* --------------------------------------------------------------- prepare */

/* Whole-call failure message into c->err: "jira at <url>: <what>: <reason>". */
static void call_failed(struct conn *c, const char *what, const struct mlc_errbuf *one)
{
    struct jira *j = c->priv;

    if (j->auth_failed) {
        mlc_errf(&c->err, "%s", mlc_err_msg(one));
    } else {
        mlc_errf(&c->err, "jira at %s: %s: %s", j->cf.base_url, what, mlc_err_msg(one));
    }
}

static enum jira_field_kind field_kind(const cJSON *schema)
{
    const char *type = mlc_json_str(schema, "type");
    const char *items = mlc_json_str(schema, "items");
    const char *custom = mlc_json_str(schema, "custom");
    size_t n;

    if (type == NULL) {
        return FIELD_TEXT;
    }
    if (strcmp(type, "option") == 0) {
        return FIELD_OPTION;
    }
    if (strcmp(type, "array") == 0 && items != NULL && strcmp(items, "option") == 0) {
        return FIELD_OPTION_ARRAY;
    }
    if (strcmp(type, "number") == 0) {
        return FIELD_NUMBER;
    }
    n = custom != NULL ? strlen(custom) : 0;
    if (strcmp(type, "string") == 0 && n >= 9 && strcmp(custom + n - 9, ":textarea") == 0) {
        return FIELD_ADF;
    }
    return FIELD_TEXT;
}

static enum mlc_rc jira_load_fields(struct conn *c)
{
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *root = NULL;
    const cJSON *it;
    enum mlc_rc rc;

    if (j->fields_loaded) {
        return MLC_OK;
    }
    rc = jira_call(c, "GET", "/rest/api/3/field", NULL, &resp, &one);
    if (rc != MLC_OK) {
        call_failed(c, "cannot read the field list", &one);
        goto out;
    }
    root = mlc_json_parse(body_str(&resp), resp.body.len, "jira field list", &c->err);
    if (!cJSON_IsArray(root)) {
        mlc_errf(&c->err, "jira at %s: /rest/api/3/field did not return an array", j->cf.base_url);
        rc = MLC_E_PROTO;
        goto out;
    }
    cJSON_ArrayForEach(it, root)
    {
        const char *id = mlc_json_str(it, "id");
        const char *name = mlc_json_str(it, "name");
        struct jira_field *f;

        if (id == NULL || strncmp(id, "customfield_", 12) != 0) {
            continue;
        }
        j->fields = mlc_xrealloc(j->fields, (j->n_fields + 1) * sizeof(*j->fields));
        f = &j->fields[j->n_fields++];
        f->id = mlc_xstrdup(id);
        f->name = mlc_xstrdup(name != NULL ? name : "");
        f->kind = field_kind(mlc_json_obj(it, "schema"));
    }
    j->fields_loaded = 1;
out:
    cJSON_Delete(root);
    mlc_http_resp_release(&resp);
    return rc;
}

static const struct jira_field *field_find(const struct jira *j, const char *id)
{
    size_t i;

    for (i = 0; i < j->n_fields; i++) {
        if (strcmp(j->fields[i].id, id) == 0) {
            return &j->fields[i];
        }
    }
    return NULL;
}

static enum mlc_rc check_custom_fields(struct conn *c, const cJSON *names)
{
    struct jira *j = c->priv;
    const cJSON *it;
    enum mlc_rc rc;

    cJSON_ArrayForEach(it, names)
    {
        struct mlc_buf known = MLC_BUF_INIT;
        size_t i;

        if (!cJSON_IsString(it) || strncmp(it->valuestring, "customfield_", 12) != 0) {
            continue;
        }
        rc = jira_load_fields(c);
        if (rc != MLC_OK) {
            return rc;
        }
        if (field_find(j, it->valuestring) != NULL) {
            continue;
        }
        for (i = 0; i < j->n_fields && known.len < 400; i++) {
            mlc_buf_addf(&known, "%s%s (%s)", i > 0 ? ", " : "", j->fields[i].id,
                         j->fields[i].name);
        }
        if (i < j->n_fields) {
            mlc_buf_adds(&known, ", ...");
        }
        mlc_errf(&c->err,
                 "mapping field '%s' does not exist in jira at %s; known custom fields: %s",
                 it->valuestring, j->cf.base_url, known.len > 0 ? mlc_buf_str(&known) : "none");
        mlc_buf_release(&known);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

static enum mlc_rc check_priorities(struct conn *c, const cJSON *wanted)
{
    struct jira *j = c->priv;
    cJSON *names = mlc_json_xarr();
    const cJSON *it;
    long start = 0;
    enum mlc_rc rc = MLC_OK;
    int page;

    if (cJSON_GetArraySize(wanted) == 0) {
        goto out;
    }
    for (page = 0; page < JIRA_PRIORITY_MAX_PAGES; page++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        char path[96];
        cJSON *root;
        const cJSON *values;
        int n;

        snprintf(path, sizeof(path), "/rest/api/3/priority/search?startAt=%ld&maxResults=100",
                 start);
        rc = jira_call(c, "GET", path, NULL, &resp, &one);
        if (rc != MLC_OK) {
            call_failed(c, "cannot list priorities", &one);
            mlc_http_resp_release(&resp);
            goto out;
        }
        root = mlc_json_parse(body_str(&resp), resp.body.len, "jira priority list", &c->err);
        mlc_http_resp_release(&resp);
        values = mlc_json_arr(root, "values");
        if (values == NULL) {
            mlc_errf(&c->err, "jira at %s: /rest/api/3/priority/search returned no 'values'",
                     j->cf.base_url);
            cJSON_Delete(root);
            rc = MLC_E_PROTO;
            goto out;
        }
        cJSON_ArrayForEach(it, values)
        {
            const char *name = mlc_json_str(it, "name");

            if (name != NULL) {
                cJSON_AddItemToArray(names, cJSON_CreateString(name));
            }
        }
        n = cJSON_GetArraySize(values);
        start += n;
        if (n == 0 || mlc_json_bool(root, "isLast", 1)) {
            cJSON_Delete(root);
            break;
        }
        cJSON_Delete(root);
    }
    cJSON_ArrayForEach(it, wanted)
    {
        const cJSON *have;
        int found = 0;

        if (!cJSON_IsString(it)) {
            continue;
        }
        cJSON_ArrayForEach(have, names)
        {
            if (cJSON_IsString(have) && strcmp(have->valuestring, it->valuestring) == 0) {
                found = 1;
            }
        }
        if (!found) {
            struct mlc_buf valid = MLC_BUF_INIT;

            cJSON_ArrayForEach(have, names)
            {
                if (cJSON_IsString(have) && valid.len < 400) {
                    mlc_buf_addf(&valid, "%s%s", valid.len > 0 ? ", " : "", have->valuestring);
                }
            }
            mlc_errf(&c->err,
                     "mapping.priority: jira priority '%s' does not exist in jira at "
                     "%s; valid priorities: %s",
                     it->valuestring, j->cf.base_url, valid.len > 0 ? mlc_buf_str(&valid) : "none");
            mlc_buf_release(&valid);
            rc = MLC_E_INVAL;
            goto out;
        }
    }
out:
    cJSON_Delete(names);
    return rc;
}

static enum mlc_rc check_issue_type(struct conn *c, const cJSON *project_json, const char *project,
                                    const char *issue_type)
{
    const cJSON *types = mlc_json_arr(project_json, "issueTypes");
    const cJSON *it;
    struct mlc_buf valid = MLC_BUF_INIT;

    /* some proxies and older sites omit issueTypes: then Jira checks on create */
    if (types == NULL || cJSON_GetArraySize(types) == 0) {
        return MLC_OK;
    }
    cJSON_ArrayForEach(it, types)
    {
        const char *name = mlc_json_str(it, "name");
        const char *id = mlc_json_str(it, "id");

        if ((name != NULL && strcmp(name, issue_type) == 0) ||
            (id != NULL && strcmp(id, issue_type) == 0)) {
            return MLC_OK;
        }
    }
    cJSON_ArrayForEach(it, types)
    {
        const char *name = mlc_json_str(it, "name");

        if (name != NULL && valid.len < 400) {
            mlc_buf_addf(&valid, "%s%s", valid.len > 0 ? ", " : "", name);
        }
    }
    mlc_errf(&c->err,
             "target.issue_type: '%s' is not an issue type of jira project '%s' (valid: %s)",
             issue_type, project, mlc_buf_str(&valid));
    mlc_buf_release(&valid);
    return MLC_E_INVAL;
}

static enum mlc_rc jira_prepare(struct conn *c, const cJSON *target, const struct prep_info *pi)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    const char *project = mlc_json_str(target, "project");
    const char *issue_type = mlc_json_str(target, "issue_type");
    const char *marker = mlc_json_str(target, "marker");
    const cJSON *mapped = pi != NULL ? pi->fields : NULL;
    const cJSON *prios = cJSON_GetObjectItemCaseSensitive(mapped, "priority"), *it;
    cJSON *root = NULL, *fields = mlc_json_xarr();
    char *path = NULL;
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    cJSON_ArrayForEach(it, mapped)
    {
        cJSON_AddItemToArray(fields, cJSON_CreateString(it->string));
    }
    if (cJSON_IsNull(prios)) {
        prios = NULL; /* a free value: nothing to check ahead */
    }
    if (empty(project)) {
        mlc_errf(&c->err, "target.project: required (a jira project key such as \"MFG\")");
        return MLC_E_INVAL;
    }
    if (empty(issue_type)) {
        mlc_errf(&c->err, "target.issue_type: required (an issue type name such as \"Task\")");
        return MLC_E_INVAL;
    }
    if (marker != NULL && strcmp(marker, "label") != 0) {
        mlc_errf(&c->err, "target.marker: '%s' is not supported by jira (use \"label\")", marker);
        return MLC_E_INVAL;
    }
    if (prios != NULL && !cJSON_IsArray(prios)) {
        mlc_errf(&c->err, "mapping.priority: expected the priority names the mapping produces");
        cJSON_Delete(fields);
        return MLC_E_INVAL;
    }
    path = path_with("/rest/api/3/project/", project, "");
    rc = jira_call(c, "GET", path, NULL, &resp, &one);
    if (rc != MLC_OK) {
        if (resp.status == 404) {
            mlc_errf(&c->err, "target.project: jira project '%s' not found or not visible",
                     project);
            rc = MLC_E_INVAL;
        } else {
            call_failed(c, "cannot read the project", &one);
        }
        goto out;
    }
    root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
    rc = check_issue_type(c, root, project, issue_type);
    if (rc != MLC_OK) {
        goto out;
    }
    rc = check_custom_fields(c, fields);
    if (rc != MLC_OK) {
        goto out;
    }
    rc = check_priorities(c, prios);
out:
    cJSON_Delete(fields);
    cJSON_Delete(root);
    free(path);
    mlc_http_resp_release(&resp);
    return rc;
}

/* ------------------------------------------------------------- assignees */

static struct jira_user *user_slot(struct jira *j, const char *email)
{
    struct jira_user *u;
    double now = mono_now();
    size_t i;

    for (i = 0; i < j->n_users; i++) {
        if (strcmp(j->users[i].email, email) == 0) {
            return &j->users[i];
        }
    }
    for (i = 0; i < j->n_users; i++) {
        if (j->users[i].expires <= now) {
            break;
        }
    }
    if (i == j->n_users && j->n_users == JIRA_USER_CACHE_MAX) {
        i = j->user_evict++ % JIRA_USER_CACHE_MAX;
    }
    if (i == j->n_users) {
        j->users = mlc_xrealloc(j->users, (j->n_users + 1) * sizeof(*j->users));
        j->n_users++;
    } else {
        free(j->users[i].email);
        free(j->users[i].account_id);
    }
    u = &j->users[i];
    memset(u, 0, sizeof(*u));
    u->email = mlc_xstrdup(email);
    return u;
}

/* Pick the user whose emailAddress matches, or the only result. */
static const char *pick_account(const cJSON *users, const char *email)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, users)
    {
        const char *addr = mlc_json_str(it, "emailAddress");

        if (addr != NULL && strcasecmp(addr, email) == 0) {
            return mlc_json_str(it, "accountId");
        }
    }
    if (cJSON_GetArraySize(users) == 1) {
        return mlc_json_str(cJSON_GetArrayItem(users, 0), "accountId");
    }
    return NULL;
}

/* accountId for email into *account (lent, NULL when there is none). Only
 * failures that stop the whole batch are returned; others count as a miss. */
static enum mlc_rc jira_account_for(struct conn *c, const char *email_in, const char **account,
                                    char *msg, size_t msgn)
{
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct jira_user *u;
    cJSON *root = NULL;
    char *email = mlc_xstrdup(email_in), *path = NULL;
    const char *id;
    enum mlc_rc rc;
    size_t i;

    *account = NULL;
    for (i = 0; email[i] != '\0'; i++) {
        email[i] = (char)tolower((unsigned char)email[i]);
    }
    for (i = 0; i < j->n_users; i++) {
        if (strcmp(j->users[i].email, email) == 0 && j->users[i].expires > mono_now()) {
            *account = j->users[i].account_id;
            rc = MLC_OK;
            goto out;
        }
    }
    path = path_with("/rest/api/3/user/search?query=", email, "");
    rc = jira_call(c, "GET", path, NULL, &resp, &one);
    if (rc == MLC_E_NET || rc == MLC_E_THROTTLED || rc == MLC_E_AUTH || rc == MLC_E_STOPPED ||
        rc == MLC_E_NOMEM || rc == MLC_E_IO) {
        set_msg(msg, msgn, "jira user lookup failed: %s", mlc_err_msg(&one));
        goto out;
    }
    id = NULL;
    if (rc == MLC_OK) {
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        id = pick_account(root, email);
    } else {
        conn_log(c, MLC_LOG_WARN, "jira user lookup for '%s' failed: %s", email, mlc_err_msg(&one));
    }
    u = user_slot(j, email);
    free(u->account_id);
    u->account_id = id != NULL && id[0] != '\0' ? mlc_xstrdup(id) : NULL;
    u->expires = mono_now() + (double)j->cf.user_cache_s;
    if (u->account_id == NULL && !u->warned) {
        conn_log(c, MLC_LOG_WARN,
                 "no jira user with e-mail '%s' (or the e-mail is hidden by the user's privacy "
                 "settings): issues for it stay unassigned",
                 email);
        u->warned = 1;
    }
    *account = u->account_id;
    rc = MLC_OK;
out:
    cJSON_Delete(root);
    free(path);
    free(email);
    mlc_http_resp_release(&resp);
    return rc;
}

/* Is id an accountId Jira knows? (GET /user/search?accountId=, cached like
 * e-mail look-ups under "#id"). Only failures that stop the batch return. */
static enum mlc_rc jira_account_known(struct conn *c, const char *id, int *known, char *msg,
                                      size_t msgn)
{
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct jira_user *u;
    cJSON *root = NULL;
    char *slot = mlc_xasprintf("#%s", id), *path = NULL;
    enum mlc_rc rc;
    size_t i;

    *known = 0;
    for (i = 0; i < j->n_users; i++) {
        if (strcmp(j->users[i].email, slot) == 0 && j->users[i].expires > mono_now()) {
            *known = j->users[i].account_id != NULL;
            rc = MLC_OK;
            goto out;
        }
    }
    path = path_with("/rest/api/3/user/search?accountId=", id, "");
    rc = jira_call(c, "GET", path, NULL, &resp, &one);
    if (rc == MLC_E_NET || rc == MLC_E_THROTTLED || rc == MLC_E_AUTH || rc == MLC_E_STOPPED ||
        rc == MLC_E_NOMEM || rc == MLC_E_IO) {
        set_msg(msg, msgn, "jira user lookup failed: %s", mlc_err_msg(&one));
        goto out;
    }
    if (rc == MLC_OK) {
        const cJSON *it;
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        cJSON_ArrayForEach(it, root)
        {
            const char *acc = mlc_json_str(it, "accountId");
            *known |= acc != NULL && strcmp(acc, id) == 0;
        }
    }
    u = user_slot(j, slot);
    u->account_id = *known ? mlc_xstrdup(id) : NULL;
    u->expires = mono_now() + (double)j->cf.user_cache_s;
    rc = MLC_OK;
out:
    cJSON_Delete(root);
    free(path);
    free(slot);
    mlc_http_resp_release(&resp);
    return rc;
}

/* Could s be an Atlassian accountId? ("557058:f58131cb-...", "712020:...",
 * or 24 hex digits.) A work-order number or a name cannot. */
static int account_id_shape(const char *s)
{
    size_t n = strlen(s), hex = 0;
    const char *colon = strchr(s, ':');

    if (n < 10 || n > 128) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != ':' && *p != '-') {
            return 0;
        }
        hex += isxdigit((unsigned char)*p) != 0;
    }
    return colon != NULL ? colon != s && strchr(colon + 1, ':') == NULL && colon[1] != '\0'
                         : hex == n && n == 24;
}

/* ------------------------------------------------------- field conversion */

static void add_label(cJSON *labels, const char *raw)
{
    char *lab = jira_label_clean(raw);
    const cJSON *it;

    if (lab == NULL) {
        return;
    }
    cJSON_ArrayForEach(it, labels)
    {
        if (strcmp(it->valuestring, lab) == 0) {
            free(lab);
            return;
        }
    }
    cJSON_AddItemToArray(labels, cJSON_CreateString(lab));
    free(lab);
}

static cJSON *xdup(const cJSON *v)
{
    cJSON *d = cJSON_Duplicate(v, 1);

    if (d == NULL) {
        MLC_BUG("out of memory copying a json value");
    }
    return d;
}

static cJSON *value_obj(const char *key, const char *v)
{
    cJSON *o = mlc_json_xobj();

    mlc_json_xadd_str(o, key, v);
    return o;
}

/* The custom field value for a string v, shaped by the field's type. */
static cJSON *custom_value(const struct jira_field *f, const char *v)
{
    cJSON *arr;
    char *end;
    double d;

    switch (f != NULL ? f->kind : FIELD_TEXT) {
    case FIELD_OPTION:
        return value_obj("value", v);
    case FIELD_OPTION_ARRAY:
        arr = mlc_json_xarr();
        cJSON_AddItemToArray(arr, value_obj("value", v));
        return arr;
    case FIELD_ADF:
        return jira_adf_from_text(v);
    case FIELD_NUMBER:
        d = strtod(v, &end);
        if (end != v && *end == '\0') {
            return cJSON_CreateNumber(d);
        }
        return cJSON_CreateString(v);
    case FIELD_TEXT:
        break;
    }
    return cJSON_CreateString(v);
}

/* The values of a list field as strings (a string is a list of one). */
static void list_values(const cJSON *v, cJSON *into)
{
    const cJSON *it;

    if (cJSON_IsString(v)) {
        add_label(into, v->valuestring);
        return;
    }
    cJSON_ArrayForEach(it, v)
    {
        if (cJSON_IsString(it)) {
            add_label(into, it->valuestring);
        }
    }
}

static int list_has(const cJSON *list, const char *s)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, list)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, s) == 0) {
            return 1;
        }
    }
    return 0;
}

/* One list element as the field takes it: a label is a string, an option
 * of a multi-select field is {"value": ...}. */
static cJSON *list_elem(int option, const char *v)
{
    return option ? value_obj("value", v) : cJSON_CreateString(v);
}

/* A list field on an update: add what the mapping sets now, remove what the
 * agent set last time and no longer sets (prev NULL: unknown, remove
 * nothing). Values others added stay. keep: never removed (our marker). */
static void list_ops(cJSON *update, const char *name, int option, const cJSON *now,
                     const cJSON *prev, const char *keep)
{
    cJSON *ops = mlc_json_xarr();
    const cJSON *it;

    cJSON_ArrayForEach(it, now)
    {
        cJSON *op = mlc_json_xobj();
        mlc_json_xadd(op, "add", list_elem(option, it->valuestring));
        cJSON_AddItemToArray(ops, op);
    }
    cJSON_ArrayForEach(it, prev)
    {
        if (!cJSON_IsString(it) || list_has(now, it->valuestring) ||
            (keep != NULL && strcmp(it->valuestring, keep) == 0)) {
            continue;
        }
        cJSON *op = mlc_json_xobj();
        mlc_json_xadd(op, "remove", list_elem(option, it->valuestring));
        cJSON_AddItemToArray(ops, op);
    }
    if (cJSON_GetArraySize(ops) > 0) {
        mlc_json_xadd(update, name, ops);
    } else {
        cJSON_Delete(ops);
    }
}

/* Build {"fields":..., "update":..., "properties":...} for one item into *out.
 * MLC_OK, MLC_E_REJECTED (this record only, msg says why), or a whole-batch
 * rc from an assignee lookup (msg says why). A value left out (an assignee
 * Jira does not know) is named in r->warn; r->lists gets the list values
 * set (for the next update's removals). */
static enum mlc_rc jira_item_body(struct conn *c, const cJSON *target, const struct tgt_item *item,
                                  int create, cJSON **out, struct result *r, char *msg,
                                  size_t msgn)
{
    struct jira *j = c->priv;
    cJSON *body = mlc_json_xobj();
    cJSON *fields = mlc_json_xobj();
    cJSON *update = mlc_json_xobj();
    cJSON *lists = mlc_json_xobj(); /* field -> [values] the mapping sets */
    const cJSON *it;
    enum mlc_rc rc;

    *out = NULL;
    mlc_json_xadd(body, "fields", fields);
    if (!cJSON_IsObject(item->fields)) {
        set_msg(msg, msgn, "mapped record is not a JSON object");
        rc = MLC_E_REJECTED;
        goto out;
    }
    cJSON_ArrayForEach(it, item->fields)
    {
        const char *name = it->string;
        const char *sv = cJSON_IsString(it) ? it->valuestring : NULL;
        cJSON *val = NULL;

        if (name == NULL || cJSON_GetObjectItemCaseSensitive(fields, name) != NULL ||
            cJSON_GetObjectItemCaseSensitive(lists, name) != NULL) {
            continue;
        }
        if (strcmp(name, "summary") == 0) {
            char text[512], sum[JIRA_SUMMARY_MAX + 1];

            if (cJSON_IsNull(it) || mlc_json_scalar_text(it, text, sizeof(text)) != 0) {
                continue;
            }
            jira_summary_clean(sv != NULL ? sv : text, sum, sizeof(sum));
            val = cJSON_CreateString(sum);
        } else if (strcmp(name, "description") == 0) {
            val = sv != NULL ? jira_adf_from_text(sv) : xdup(it);
        } else if (strcmp(name, "priority") == 0) {
            if (sv != NULL && sv[0] == '\0') {
                continue;
            }
            val = sv != NULL ? value_obj("name", sv) : xdup(it);
        } else if (strcmp(name, "assignee") == 0) {
            const char *account = NULL;
            int known = 0;

            if (cJSON_IsNull(it) || (sv != NULL && sv[0] == '\0')) {
                continue;
            }
            if (sv == NULL) {
                val = xdup(it);
            } else if (strchr(sv, '@') != NULL) {
                rc = jira_account_for(c, sv, &account, msg, msgn);
                if (rc != MLC_OK) {
                    goto out;
                }
                if (account == NULL) {
                    snprintf(r->warn, sizeof(r->warn),
                             "assignee '%.80s': no jira user has this e-mail (or it is hidden): "
                             "left unassigned",
                             sv);
                    continue;
                }
                val = value_obj("accountId", account);
            } else {
                /* never send a source value as an account id unless jira knows it */
                if (account_id_shape(sv)) {
                    rc = jira_account_known(c, sv, &known, msg, msgn);
                    if (rc != MLC_OK) {
                        goto out;
                    }
                }
                if (!known) {
                    snprintf(r->warn, sizeof(r->warn),
                             "assignee '%.80s' is neither mapped, nor an e-mail, nor a jira "
                             "account id: left unassigned (map it in the mapping's assignee "
                             "\"map\", or give a \"default\")",
                             sv);
                    continue;
                }
                val = value_obj("accountId", sv);
            }
        } else if (strcmp(name, "duedate") == 0) {
            if (sv != NULL && sv[0] == '\0') {
                continue;
            }
            val = xdup(it);
        } else if (strcmp(name, "labels") == 0) {
            cJSON *vals;

            if (cJSON_IsNull(it)) {
                continue; /* nothing mapped: leave the issue's labels alone */
            }
            vals = mlc_json_xarr();
            list_values(it, vals);
            mlc_json_xadd(lists, name, vals);
            continue;
        } else if (strcmp(name, "project") == 0 || strcmp(name, "issuetype") == 0) {
            if (!create) {
                continue; /* moving an issue is not an edit */
            }
            val = xdup(it);
        } else if (strncmp(name, "customfield_", 12) == 0 && sv != NULL) {
            const struct jira_field *f;

            rc = jira_load_fields(c);
            if (rc != MLC_OK) {
                set_msg(msg, msgn, "%s", mlc_err_msg(&c->err));
                goto out;
            }
            f = field_find(j, name);
            if (sv[0] == '\0' && f != NULL && f->kind != FIELD_TEXT && f->kind != FIELD_ADF) {
                continue;
            }
            if (f != NULL && f->kind == FIELD_OPTION_ARRAY) {
                cJSON *vals = mlc_json_xarr();
                list_values(it, vals);
                mlc_json_xadd(lists, name, vals);
                continue;
            }
            val = custom_value(f, sv);
        } else {
            val = xdup(it);
        }
        if (val == NULL) {
            MLC_BUG("out of memory building jira field '%s'", name);
        }
        mlc_json_xadd(fields, name, val);
    }
    /* the list fields: whole lists on a create, add/remove on an update */
    for (cJSON *l = lists->child; l != NULL; l = l->next) {
        int option = strcmp(l->string, "labels") != 0;
        const cJSON *prev = item->prev ? cJSON_GetObjectItemCaseSensitive(item->prev, l->string)
                                       : NULL;
        if (create) {
            cJSON *arr = mlc_json_xarr();
            const cJSON *v;
            cJSON_ArrayForEach(v, l)
            {
                cJSON_AddItemToArray(arr, list_elem(option, v->valuestring));
            }
            if (!option && item->marker != NULL && !list_has(l, item->marker)) {
                add_label(arr, item->marker);
            }
            mlc_json_xadd(fields, l->string, arr);
        } else {
            list_ops(update, l->string, option, l, prev, option ? NULL : item->marker);
        }
    }
    if (item->marker != NULL && cJSON_GetObjectItemCaseSensitive(lists, "labels") == NULL) {
        if (create) {
            cJSON *arr = mlc_json_xarr();
            add_label(arr, item->marker);
            mlc_json_xadd(fields, "labels", arr);
        } else {
            cJSON *ops = mlc_json_xarr();
            cJSON_AddItemToArray(ops, value_obj("add", item->marker));
            mlc_json_xadd(update, "labels", ops);
        }
    } else if (item->marker != NULL && !create) {
        /* our marker always stays: make sure it is among the adds */
        cJSON *ops = cJSON_GetObjectItemCaseSensitive(update, "labels");
        if (ops == NULL) {
            ops = mlc_json_xarr();
            mlc_json_xadd(update, "labels", ops);
        }
        if (!list_has(cJSON_GetObjectItemCaseSensitive(lists, "labels"), item->marker)) {
            cJSON_AddItemToArray(ops, value_obj("add", item->marker));
        }
    }
    if (create) {
        const char *project = mlc_json_str(target, "project");
        const char *issue_type = mlc_json_str(target, "issue_type");

        if (cJSON_GetObjectItemCaseSensitive(fields, "project") == NULL && project != NULL) {
            mlc_json_xadd(fields, "project", value_obj("key", project));
        }
        if (cJSON_GetObjectItemCaseSensitive(fields, "issuetype") == NULL && issue_type != NULL) {
            mlc_json_xadd(fields, "issuetype", value_obj("name", issue_type));
        }
    }
    if (cJSON_GetArraySize(update) > 0) {
        mlc_json_xadd(body, "update", update);
        update = NULL;
    }
    {
        /* the trace travels with the issue, set atomically with each write:
         * the audit id, our marker, and the content hash (so a lookup by
         * marker can tell whether the issue already holds this content) */
        cJSON *props = mlc_json_xarr(), *prop = mlc_json_xobj(), *trace = mlc_json_xobj();

        if (item->audit_id != NULL) {
            mlc_json_xadd_str(trace, "audit_id", item->audit_id);
        } else {
            mlc_json_xadd(trace, "audit_id", cJSON_CreateNull());
        }
        if (item->marker != NULL) {
            mlc_json_xadd_str(trace, "marker", item->marker);
        }
        if (item->hash != NULL) {
            mlc_json_xadd_str(trace, "hash", item->hash);
        }
        mlc_json_xadd_str(prop, "key", JIRA_TRACE_PROP);
        mlc_json_xadd(prop, "value", trace);
        cJSON_AddItemToArray(props, prop);
        mlc_json_xadd(body, "properties", props);
    }
    if (r != NULL && cJSON_GetArraySize(lists) > 0) {
        r->lists = mlc_json_print(lists);
    }
    *out = body;
    body = NULL;
    rc = MLC_OK;
out:
    cJSON_Delete(update);
    cJSON_Delete(lists);
    cJSON_Delete(body);
    return rc;
}

/* ----------------------------------------------------------------- apply */

static void result_set(struct result *r, enum mlc_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void result_set(struct result *r, enum mlc_rc rc, const char *fmt, ...)
{
    va_list ap;

    r->rc = rc;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
}

/* A whole-call failure: every item without a verdict yet gets rc and msg. */
static void fail_rest(const struct batch *in, struct result *out, const unsigned char *done,
                      enum mlc_rc rc, const char *msg)
{
    size_t i;

    for (i = 0; i < in->n; i++) {
        if (!done[i]) {
            result_set(&out[i], rc, "%s", msg);
        }
    }
}

static enum mlc_rc apply_creates(struct conn *c, const struct batch *in, struct result *out,
                                 unsigned char *done)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct result tmp[JIRA_BULK_MAX];
    struct result side[JIRA_BULK_MAX]; /* warn and lists of each sent item */
    size_t idx[JIRA_BULK_MAX], nc = 0, i, k;
    cJSON *req = mlc_json_xobj(), *updates = mlc_json_xarr();
    char msg[512];
    enum mlc_rc rc = MLC_OK;

    memset(side, 0, sizeof(side));
    mlc_json_xadd(req, "issueUpdates", updates);
    for (i = 0; i < in->n; i++) {
        cJSON *entry = NULL;

        if (in->items[i].target_key != NULL) {
            continue;
        }
        msg[0] = '\0';
        memset(&side[nc], 0, sizeof(side[nc]));
        rc = jira_item_body(c, in->target, &in->items[i], 1, &entry, &side[nc], msg, sizeof(msg));
        if (rc == MLC_E_REJECTED) {
            free(side[nc].lists);
            side[nc].lists = NULL;
            result_set(&out[i], rc, "%s", msg);
            done[i] = 1;
            continue;
        }
        if (rc != MLC_OK) {
            free(side[nc].lists);
            side[nc].lists = NULL;
            mlc_errf(&c->err, "%s", msg);
            goto out;
        }
        cJSON_AddItemToArray(updates, entry);
        idx[nc++] = i;
    }
    if (nc == 0) {
        rc = MLC_OK;
        goto out;
    }
    rc = jira_call(c, "POST", "/rest/api/3/issue/bulk", req, &resp, &one);
    if (rc == MLC_OK || resp.status == 400) {
        struct mlc_errbuf perr = { 0 };
        enum mlc_rc prc = jira_parse_bulk_response(body_str(&resp), resp.body.len, nc, tmp, &perr);

        if (prc == MLC_OK) {
            for (k = 0; k < nc; k++) {
                out[idx[k]] = tmp[k];
                if (tmp[k].rc == MLC_OK) {
                    memcpy(out[idx[k]].warn, side[k].warn, sizeof(side[k].warn));
                    out[idx[k]].lists = side[k].lists;
                    side[k].lists = NULL;
                }
                done[idx[k]] = 1;
            }
            rc = MLC_OK;
            goto out;
        }
        if (rc != MLC_OK) {
            /* a 400 about the request as a whole: each record is refused with it */
            jira_error_text(body_str(&resp), resp.body.len, msg, sizeof(msg));
            for (k = 0; k < nc; k++) {
                result_set(&out[idx[k]], MLC_E_REJECTED,
                           "jira rejected the bulk create (HTTP 400): %s", msg);
                done[idx[k]] = 1;
            }
            rc = MLC_OK;
            goto out;
        }
        /* created, but we cannot tell which issue is which: find() will know */
        mlc_errf(&c->err, "jira at %s: %s", ((struct jira *)c->priv)->cf.base_url,
                 mlc_err_msg(&perr));
        rc = MLC_E_PROTO;
        goto out;
    }
    call_failed(c, "bulk create failed", &one);
out:
    if (rc != MLC_OK) {
        for (k = 0; k < nc; k++) {
            result_set(&out[idx[k]], rc, "%s", mlc_err_msg(&c->err));
            done[idx[k]] = 1;
        }
    }
    for (k = 0; k < nc; k++) {
        free(side[k].lists);
    }
    cJSON_Delete(req);
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc apply_update(struct conn *c, const struct batch *in, size_t i, struct result *r)
{
    const struct tgt_item *item = &in->items[i];
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct result side = { 0 };
    cJSON *body = NULL;
    char *path = NULL, msg[400];
    enum mlc_rc rc;

    msg[0] = '\0';
    rc = jira_item_body(c, in->target, item, 0, &body, &side, msg, sizeof(msg));
    if (rc == MLC_E_REJECTED) {
        result_set(r, rc, "%s", msg);
        rc = MLC_OK;
        goto out;
    }
    if (rc != MLC_OK) {
        mlc_errf(&c->err, "%s", msg);
        goto out;
    }
    path = path_with("/rest/api/3/issue/", item->target_key, "");
    rc = jira_call(c, "PUT", path, body, &resp, &one);
    if (rc == MLC_OK) {
        memset(r, 0, sizeof(*r));
        snprintf(r->target_key, sizeof(r->target_key), "%s", item->target_key);
        memcpy(r->warn, side.warn, sizeof(r->warn));
        r->lists = side.lists;
        side.lists = NULL;
        goto out;
    }
    jira_error_text(body_str(&resp), resp.body.len, msg, sizeof(msg));
    if (resp.status == 404) {
        result_set(r, MLC_E_NOTFOUND, "jira issue %s does not exist or is not visible (HTTP 404)",
                   item->target_key);
        rc = MLC_OK;
    } else if (resp.status >= 400 && resp.status < 500 && resp.status != 401 &&
               resp.status != 408 && resp.status != 409 && resp.status != 429 &&
               !((struct jira *)c->priv)->auth_failed) {
        result_set(r, rc, "jira refused the update of %s (HTTP %ld): %s", item->target_key,
                   resp.status, msg);
        rc = MLC_OK;
    } else if (resp.status == 409) {
        /* an edit that collided with another one: worth another try */
        result_set(r, MLC_E_CONFLICT, "jira: the update of %s collided with another edit "
                   "(HTTP 409): %s", item->target_key, msg);
        rc = MLC_OK;
    } else {
        call_failed(c, "update failed", &one);
    }
out:
    free(side.lists);
    cJSON_Delete(body);
    free(path);
    mlc_http_resp_release(&resp);
    return rc;
}

/* --dry-run: each item converted as it would be sent (read-only look-ups
 * included), nothing written. Warnings and rejections come back per item. */
static enum mlc_rc apply_dry(struct conn *c, const struct batch *in, struct result *out)
{
    for (size_t i = 0; i < in->n; i++) {
        struct result side = { 0 };
        cJSON *body = NULL;
        char msg[400] = "";
        enum mlc_rc rc = jira_item_body(c, in->target, &in->items[i],
                                        in->items[i].target_key == NULL, &body, &side, msg,
                                        sizeof(msg));
        cJSON_Delete(body);
        free(side.lists);
        if (rc == MLC_E_REJECTED) {
            result_set(&out[i], rc, "%s", msg);
            continue;
        }
        if (rc != MLC_OK) {
            mlc_errf(&c->err, "%s", msg);
            return rc;
        }
        memcpy(out[i].warn, side.warn, sizeof(out[i].warn));
    }
    return MLC_OK;
}

static enum mlc_rc jira_apply(struct conn *c, const struct batch *in, struct result *out)
{
    unsigned char *done;
    size_t i, creates = 0;
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    for (i = 0; i < in->n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        if (in->items[i].target_key == NULL) {
            creates++;
        }
    }
    if (in->dry_run) {
        return apply_dry(c, in, out);
    }
    if (creates > JIRA_BULK_MAX) {
        MLC_BUG("jira apply: %zu creates in one batch (at most %d)", creates, JIRA_BULK_MAX);
    }
    if (creates > 0 && (empty(mlc_json_str(in->target, "project")) ||
                        empty(mlc_json_str(in->target, "issue_type")))) {
        mlc_errf(&c->err, "target.project and target.issue_type are required to create issues");
        for (i = 0; i < in->n; i++) {
            result_set(&out[i], MLC_E_INVAL, "%s", mlc_err_msg(&c->err));
        }
        return MLC_E_INVAL;
    }
    done = mlc_xcalloc(in->n + 1, 1);
    rc = apply_creates(c, in, out, done);
    for (i = 0; rc == MLC_OK && i < in->n; i++) {
        if (in->items[i].target_key == NULL) {
            continue;
        }
        rc = apply_update(c, in, i, &out[i]);
        if (rc == MLC_OK) {
            done[i] = 1;
        }
    }
    if (rc != MLC_OK) {
        char msg[sizeof(out->err)];

        snprintf(msg, sizeof(msg), "%s", mlc_err_msg(&c->err));
        for (i = 0; i < in->n; i++) {
            if (!done[i]) {
                free(out[i].lists);
                out[i].lists = NULL;
            }
        }
        fail_rest(in, out, done, rc, msg);
    }
    free(done);
    return rc;
}

/* ------------------------------------------------------------------ find */

struct find_ctx {
    struct conn *c;
    const char *const *markers;
    size_t n;
    struct tgt_found *out;
};

static void find_on_label(void *ctx, const char *label, const char *key, const char *id,
                          const char *hash)
{
    struct find_ctx *f = ctx;
    size_t i;

    for (i = 0; i < f->n; i++) {
        struct tgt_found *o = &f->out[i];
        if (f->markers[i] == NULL || strcmp(f->markers[i], label) != 0) {
            continue;
        }
        if (!o->found) {
            o->found = 1;
            snprintf(o->target_key, sizeof(o->target_key), "%s", key);
            snprintf(o->target_id, sizeof(o->target_id), "%s", id);
            snprintf(o->hash, sizeof(o->hash), "%s", hash ? hash : "");
        } else if (strcmp(o->target_key, key) != 0) {
            conn_log(f->c, MLC_LOG_WARN, "marker '%s' is on more than one issue (%s and %s)",
                     label, o->target_key, key);
        }
    }
}

static enum mlc_rc find_chunk(struct conn *c, const char *project, const char *const *markers,
                              size_t n, struct tgt_found *out)
{
    struct find_ctx ctx = { c, markers, n, out };
    struct mlc_buf jql = MLC_BUF_INIT;
    char *token = NULL;
    enum mlc_rc rc;
    int page;

    rc = jira_jql_markers(&jql, project, markers, n);
    if (rc != MLC_OK) {
        mlc_errf(&c->err, "jira find: cannot build the query");
        goto out;
    }
    for (page = 0;; page++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        cJSON *req, *flds;
        char *next = NULL;

        if (page == JIRA_SEARCH_MAX_PAGES) {
            mlc_errf(&c->err, "jira search did not end after %d pages", page);
            rc = MLC_E_PROTO;
            break;
        }
        req = mlc_json_xobj();
        flds = mlc_json_xarr();
        mlc_json_xadd_str(req, "jql", mlc_buf_str(&jql));
        cJSON_AddItemToArray(flds, cJSON_CreateString("labels"));
        mlc_json_xadd(req, "fields", flds);
        flds = mlc_json_xarr();
        cJSON_AddItemToArray(flds, cJSON_CreateString(JIRA_TRACE_PROP));
        mlc_json_xadd(req, "properties", flds);
        mlc_json_xadd_num(req, "maxResults", 100);
        if (token != NULL) {
            mlc_json_xadd_str(req, "nextPageToken", token);
        }
        rc = jira_call(c, "POST", "/rest/api/3/search/jql", req, &resp, &one);
        cJSON_Delete(req);
        if (rc != MLC_OK) {
            call_failed(c, "search failed", &one);
            mlc_http_resp_release(&resp);
            break;
        }
        rc = jira_parse_search_page(body_str(&resp), resp.body.len, find_on_label, &ctx, &next,
                                    &c->err);
        mlc_http_resp_release(&resp);
        free(token);
        token = next;
        if (rc != MLC_OK || token == NULL) {
            break;
        }
    }
out:
    free(token);
    mlc_buf_release(&jql);
    return rc;
}

/* The number of an issue key of project ("MFG-12" -> 12), -1 when it is not one. */
static long long key_number(const char *key, const char *project)
{
    size_t pl = strlen(project);
    char *end;
    long long v;

    if (strncmp(key, project, pl) != 0 || key[pl] != '-' || !isdigit((unsigned char)key[pl + 1])) {
        return -1;
    }
    v = strtoll(key + pl + 1, &end, 10);
    return *end == '\0' ? v : -1;
}

/* Read every issue of the project numbered after the highest of before[]
 * with bulk fetch, which reads the issues themselves rather than the search
 * index (no lag), 100 keys a call, until a call finds none. *complete = 1
 * when that end was reached: a marker not seen then is on no issue created
 * since. */
static enum mlc_rc find_scan(struct conn *c, const char *project, const char *const *before,
                             size_t n_before, struct find_ctx *ctx, int *complete)
{
    long long next = -1;
    enum mlc_rc rc = MLC_OK;

    *complete = 0;
    for (size_t i = 0; i < n_before; i++) {
        /* "": the agent had created nothing before: count from the first issue */
        long long v = before[i] == NULL ? -1 : before[i][0] == '\0' ? 0 : key_number(before[i], project);
        if (v > next) {
            next = v;
        }
    }
    if (next < 0) {
        return MLC_OK; /* nothing to count from */
    }
    next++;
    for (int call = 0; call < JIRA_SCAN_MAX_CALLS; call++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        cJSON *req = mlc_json_xobj(), *ids = mlc_json_xarr(), *flds = mlc_json_xarr(), *root;
        char *tok = NULL;
        int existing;

        for (int k = 0; k < JIRA_SCAN_CHUNK; k++) {
            char kb[96];
            snprintf(kb, sizeof(kb), "%s-%lld", project, next + k);
            cJSON_AddItemToArray(ids, cJSON_CreateString(kb));
        }
        mlc_json_xadd(req, "issueIdsOrKeys", ids);
        cJSON_AddItemToArray(flds, cJSON_CreateString("labels"));
        mlc_json_xadd(req, "fields", flds);
        flds = mlc_json_xarr();
        cJSON_AddItemToArray(flds, cJSON_CreateString(JIRA_TRACE_PROP));
        mlc_json_xadd(req, "properties", flds);
        rc = jira_call(c, "POST", "/rest/api/3/issue/bulkfetch", req, &resp, &one);
        cJSON_Delete(req);
        if (rc != MLC_OK && !mlc_rc_transient(rc) && rc != MLC_E_AUTH && rc != MLC_E_STOPPED) {
            /* no bulk fetch here (or not for us): the search alone decides */
            conn_log(c, MLC_LOG_WARN, "jira bulk fetch is not available (%s): unanswered creates "
                                      "wait for the search index instead",
                     mlc_err_msg(&one));
            mlc_http_resp_release(&resp);
            return MLC_OK;
        }
        if (rc != MLC_OK) {
            call_failed(c, "bulk fetch failed", &one);
            mlc_http_resp_release(&resp);
            return rc;
        }
        rc = jira_parse_search_page(body_str(&resp), resp.body.len, find_on_label, ctx, &tok,
                                    &c->err);
        free(tok);
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        existing = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "issues"));
        cJSON_Delete(root);
        mlc_http_resp_release(&resp);
        if (rc != MLC_OK) {
            return rc;
        }
        if (existing == 0) {
            *complete = 1;
            return MLC_OK;
        }
        next += JIRA_SCAN_CHUNK;
    }
    conn_log(c, MLC_LOG_INFO,
             "%d00 issues were created in %s since; not reading further for in-flight creates",
             JIRA_SCAN_MAX_CALLS, project);
    return MLC_OK;
}

static enum mlc_rc jira_find(struct conn *c, const cJSON *target, const char *const *markers,
                             size_t n, const char *const *before, size_t n_before,
                             struct tgt_found *out)
{
    const char *project = mlc_json_str(target, "project");
    size_t i, start, missing = 0;
    int complete = 0;
    enum mlc_rc rc = MLC_OK;

    mlc_err_reset(&c->err);
    memset(out, 0, n * sizeof(*out));
    if (empty(project)) {
        mlc_errf(&c->err, "target.project: required");
        rc = MLC_E_INVAL;
        goto out;
    }
    for (start = 0; start < n && rc == MLC_OK; start += JIRA_FIND_CHUNK) {
        size_t cnt = n - start < JIRA_FIND_CHUNK ? n - start : JIRA_FIND_CHUNK;

        rc = find_chunk(c, project, markers + start, cnt, out + start);
    }
    for (i = 0; rc == MLC_OK && i < n; i++) {
        missing += !out[i].found;
    }
    if (rc == MLC_OK && missing > 0 && n_before > 0) {
        /* search may lag: read what was created since, consistently */
        struct find_ctx ctx = { c, markers, n, out };
        rc = find_scan(c, project, before, n_before, &ctx, &complete);
        for (i = 0; rc == MLC_OK && complete && i < n; i++) {
            out[i].absent = !out[i].found;
        }
    }
out:
    if (rc != MLC_OK) {
        memset(out, 0, n * sizeof(*out));
    }
    return rc;
}

/* ---------------------------------------------------- change notifications */

/* Re-check a registration at least this often, and never sooner than this. */
#define JIRA_WATCH_MAX_MS   (6LL * 3600000LL)
#define JIRA_WATCH_MIN_MS   60000LL
#define JIRA_WATCH_RETRY_MS (5LL * 60000LL)
/* In poll mode, look again for a usable (admin) webhook this often. */
#define JIRA_POLL_RECHECK_MS 3600000LL
#define JIRA_HOOK_EVENT      "jira:issue_updated"
#define JIRA_HOOK_MAX_PAGES  20

static const cJSON *json_member(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static int digits_at(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int jira_time_parse(const char *s, long long *ms)
{
    int y, mo, d, hh, mi, ss, frac = 0, fdig = 0, zh = 0, zm = 0, sign = 1;
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    const char *p;
    struct tm tm;

    if (s == NULL || strlen(s) < 19) {
        return -1;
    }
    if (digits_at(s, 4, &y) || s[4] != '-' || digits_at(s + 5, 2, &mo) || s[7] != '-' ||
        digits_at(s + 8, 2, &d) || (s[10] != 'T' && s[10] != ' ') || digits_at(s + 11, 2, &hh) ||
        s[13] != ':' || digits_at(s + 14, 2, &mi) || s[16] != ':' || digits_at(s + 17, 2, &ss)) {
        return -1;
    }
    p = s + 19;
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++) {
            if (fdig < 3) {
                frac = frac * 10 + (*p - '0');
                fdig++;
            }
        }
        if (fdig == 0) {
            return -1;
        }
        for (; fdig < 3; fdig++) {
            frac *= 10;
        }
    }
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits_at(p, 2, &zh) != 0) {
            return -1;
        }
        p += 2;
        if (*p == ':') {
            p++;
        }
        if (digits_at(p, 2, &zm) != 0) {
            return -1;
        }
        p += 2;
    } else {
        return -1; /* without a zone the instant is ambiguous */
    }
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || hh > 23 ||
        mi > 59 || ss > 60 || zh > 23 || zm > 59) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = hh;
    tm.tm_min = mi;
    tm.tm_sec = ss;
    *ms = ((long long)timegm(&tm) - sign * (zh * 3600LL + zm * 60LL)) * 1000LL + frac;
    return 0;
}

void jira_time_format(long long ms, char *out, size_t n)
{
    time_t secs;
    struct tm tm;
    char full[48];
    size_t k;
    int milli;

    if (n == 0) {
        return;
    }
    if (ms < 0) {
        ms = 0;
    }
    secs = (time_t)(ms / 1000);
    milli = (int)(ms % 1000);
    gmtime_r(&secs, &tm);
    k = strftime(full, sizeof(full) - 10, "%Y-%m-%dT%H:%M:%S", &tm);
    full[k++] = '.';
    full[k++] = (char)('0' + milli / 100);
    full[k++] = (char)('0' + milli / 10 % 10);
    full[k++] = (char)('0' + milli % 10);
    memcpy(full + k, "+0000", 6);
    k += 5;
    if (k > n - 1) {
        k = n - 1;
    }
    memcpy(out, full, k);
    out[k] = '\0';
}

int jira_expiration_parse(const cJSON *v, long long *ms)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;

        if (!(d >= 0 && d < 1e15)) {
            return -1;
        }
        *ms = (long long)d;
        return 0;
    }
    if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        const char *s = v->valuestring;
        size_t i;

        for (i = 0; isdigit((unsigned char)s[i]); i++) {
        }
        if (s[i] == '\0' && i < 16) {
            *ms = strtoll(s, NULL, 10);
            return 0;
        }
        return jira_time_parse(s, ms);
    }
    return -1;
}

enum mlc_rc jira_jql_project(struct mlc_buf *b, const char *project)
{
    size_t i;
    int plain;

    if (empty(project)) {
        return MLC_E_INVAL;
    }
    plain = isupper((unsigned char)project[0]);
    for (i = 0; plain && project[i] != '\0'; i++) {
        plain = isupper((unsigned char)project[i]) || isdigit((unsigned char)project[i]) ||
                project[i] == '_';
    }
    if (plain) {
        return mlc_buf_addf(b, "project = %s", project);
    }
    if (mlc_buf_adds(b, "project = ") != MLC_OK) {
        return MLC_E_NOMEM;
    }
    return jql_quote(b, project);
}

/* Minutes the changes() query looks back: from since to now, plus overlap. */
static long long changes_minutes(long long since_ms, long long now_ms)
{
    long long mins = since_ms < now_ms ? (now_ms - since_ms) / 60000 : 0;

    if (mins > 10LL * 366 * 1440) {
        mins = 10LL * 366 * 1440; /* a cursor years old: ten years is everything */
    }
    return mins + 2;
}

enum mlc_rc jira_jql_changes(struct mlc_buf *b, const char *project, long long since_ms,
                             long long server_now_ms)
{
    enum mlc_rc rc = jira_jql_project(b, project);

    if (rc == MLC_OK) {
        rc = mlc_buf_addf(b, " AND updated >= \"-%lldm\" ORDER BY updated ASC",
                          changes_minutes(since_ms, server_now_ms));
    }
    return rc;
}

static cJSON *xstr(const char *s)
{
    cJSON *v = s != NULL ? cJSON_CreateString(s) : cJSON_CreateNull();

    if (v == NULL) {
        MLC_BUG("out of memory building a json string");
    }
    return v;
}

/* The oldest status change at or after window_ms in an issue's changelog
 * (*first), and the newest (*last) with its history (for author and time). */
struct status_scan {
    const cJSON *first, *last, *last_history;
    long long first_ms, last_ms;
};

static void scan_changelog(const cJSON *issue, long long window_ms, struct status_scan *sc)
{
    const cJSON *h, *it;

    memset(sc, 0, sizeof(*sc));
    cJSON_ArrayForEach(h, mlc_json_arr(mlc_json_obj(issue, "changelog"), "histories"))
    {
        long long when;

        if (jira_time_parse(mlc_json_str(h, "created"), &when) != 0 || when < window_ms) {
            continue;
        }
        cJSON_ArrayForEach(it, mlc_json_arr(h, "items"))
        {
            const char *field = mlc_json_str(it, "fieldId");

            if (field == NULL) {
                field = mlc_json_str(it, "field");
            }
            if (field == NULL || strcmp(field, "status") != 0) {
                continue;
            }
            if (sc->first == NULL || when < sc->first_ms) {
                sc->first = it;
                sc->first_ms = when;
            }
            if (sc->last == NULL || when >= sc->last_ms) {
                sc->last = it;
                sc->last_ms = when;
                sc->last_history = h;
            }
        }
    }
}

/* Text of entry[i] of a seen entry, or NULL. */
static const char *seen_text(const cJSON *entry, int i)
{
    const cJSON *v = cJSON_GetArrayItem(entry, i);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cJSON *jira_change_event(const cJSON *issue, cJSON *seen, long long window_ms, int emit)
{
    const char *key = mlc_json_str(issue, "key");
    const cJSON *fields = mlc_json_obj(issue, "fields");
    const cJSON *status = mlc_json_obj(fields, "status");
    const cJSON *prev;
    const char *sname = mlc_json_str(status, "name");
    const char *due = mlc_json_str(fields, "duedate");
    const char *prio = mlc_json_str(mlc_json_obj(fields, "priority"), "name");
    char sid[32], from_id[64] = "", from_name[256] = "";
    int changed = 0;
    struct status_scan sc;
    struct change_item items[3];
    size_t n = 0;
    cJSON *ev = NULL, *entry;
    const char *author = "";
    long long when = 0;

    if (empty(key) || status == NULL || id_text(status, "id", sid, sizeof(sid)) != 0 ||
        sname == NULL || !cJSON_IsObject(seen)) {
        return NULL;
    }
    scan_changelog(issue, window_ms, &sc);
    prev = cJSON_GetObjectItemCaseSensitive(seen, key);
    if (cJSON_IsArray(prev) && seen_text(prev, 0) != NULL && seen_text(prev, 1) != NULL) {
        snprintf(from_id, sizeof(from_id), "%s", seen_text(prev, 0));
        snprintf(from_name, sizeof(from_name), "%s", seen_text(prev, 1));
        changed = strcmp(from_id, sid) != 0;
    } else if (sc.first != NULL) {
        /* not seen before: its changelog says whether the status moved lately */
        const char *fi = mlc_json_str(sc.first, "from");
        const char *fs = mlc_json_str(sc.first, "fromString");

        snprintf(from_id, sizeof(from_id), "%s", fi != NULL ? fi : "");
        snprintf(from_name, sizeof(from_name), "%s", fs != NULL ? fs : "");
        changed = fi != NULL ? strcmp(fi, sid) != 0 : (fs == NULL || strcmp(fs, sname) != 0);
    }
    if (changed) {
        items[n++] = (struct change_item){ "status", from_name, sname };
    }
    /* due date and priority: only against a value seen before (entries of
     * older agents have none: nothing is reported until one is known) */
    if (cJSON_IsArray(prev) && cJSON_GetArraySize(prev) >= 4) {
        const char *pd = seen_text(prev, 2), *pp = seen_text(prev, 3);
        if (pd != NULL && strcmp(pd, due ? due : "") != 0) {
            items[n++] = (struct change_item){ "duedate", pd, due ? due : "" };
        }
        if (pp != NULL && strcmp(pp, prio ? prio : "") != 0) {
            items[n++] = (struct change_item){ "priority", pp, prio ? prio : "" };
        }
    }
    if (emit && n > 0) {
        /* the change's own time when the changelog has it: the same change
         * gets the same time however often it is seen */
        if (sc.last != NULL && (n == 1 && changed)) {
            when = sc.last_ms;
        } else if (jira_time_parse(mlc_json_str(fields, "updated"), &when) != 0) {
            when = sc.last != NULL ? sc.last_ms : 0;
        }
        if (sc.last_history != NULL) {
            const char *acc = mlc_json_str(mlc_json_obj(sc.last_history, "author"), "accountId");
            author = acc != NULL ? acc : "";
        }
        ev = change_to_json(key, author, when, mlc_json_arr(fields, "labels"), items, n);
    }
    /* remember the values; the entry moves to the end (most recently seen) */
    entry = mlc_json_xarr();
    cJSON_AddItemToArray(entry, xstr(sid));
    cJSON_AddItemToArray(entry, xstr(sname));
    cJSON_AddItemToArray(entry, xstr(due ? due : ""));
    cJSON_AddItemToArray(entry, xstr(prio ? prio : ""));
    cJSON_DeleteItemFromObjectCaseSensitive(seen, key);
    mlc_json_xadd(seen, key, entry);
    return ev;
}

/* ---- event_parse(): one webhook delivery as a generic change ---- */

/* Changelog fields whose raw "to"/"from" is the value as the API writes it
 * (an ISO date); the others are compared by their display strings. */
static const char *const raw_valued[] = { "duedate", NULL };

enum mlc_rc jira_event_parse(const char *body, size_t len, struct change *ch,
                             struct mlc_errbuf *err)
{
    const cJSON *issue, *it, *ts;

    memset(ch, 0, sizeof(*ch));
    ch->root = mlc_json_parse(body, len, "jira webhook body", err);
    if (ch->root == NULL) {
        return MLC_E_PROTO;
    }
    if (!cJSON_IsObject(ch->root)) {
        mlc_errf(err, "jira webhook body: not a JSON object");
        return MLC_E_PROTO;
    }
    ch->event = mlc_json_str(ch->root, "webhookEvent");
    ch->event_id = "";
    issue = mlc_json_obj(ch->root, "issue");
    ch->record = mlc_json_str(issue, "key");
    if (ch->record != NULL && ch->record[0] == '\0') {
        ch->record = NULL;
    }
    ch->markers = mlc_json_arr(mlc_json_obj(issue, "fields"), "labels");
    ch->author = mlc_json_str(mlc_json_obj(ch->root, "user"), "accountId");
    if (ch->author == NULL) {
        ch->author = "";
    }
    ts = cJSON_GetObjectItemCaseSensitive(ch->root, "timestamp");
    if (cJSON_IsNumber(ts) && ts->valuedouble > 0 && ts->valuedouble < 1e15) {
        ch->at_ms = (long long)ts->valuedouble;
    }
    cJSON_ArrayForEach(it, mlc_json_arr(mlc_json_obj(ch->root, "changelog"), "items"))
    {
        const char *field = mlc_json_str(it, "fieldId");
        int raw = 0;

        if (field == NULL) {
            field = mlc_json_str(it, "field");
        }
        if (field == NULL || field[0] == '\0') {
            continue;
        }
        for (const char *const *r = raw_valued; *r && !raw; r++) {
            raw = strcmp(*r, field) == 0;
        }
        if (raw) {
            change_set(ch, field, mlc_json_str(it, "from"), mlc_json_str(it, "to"));
        } else {
            change_set(ch, field, mlc_json_str(it, "fromString"), mlc_json_str(it, "toString"));
        }
    }
    return MLC_OK;
}

void jira_seen_trim(cJSON *seen, size_t max)
{
    while (seen != NULL && seen->child != NULL && (size_t)cJSON_GetArraySize(seen) > max) {
        cJSON_Delete(cJSON_DetachItemViaPointer(seen, seen->child));
    }
}

/* ---- watch(): keep a webhook registered ---- */

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The server's clock from the Date header, or fallback. */
static long long server_ms(const struct mlc_http_resp *resp, long long fallback)
{
    return resp->date > 0 ? resp->date * 1000LL : fallback;
}

static void state_set(cJSON *state, const char *key, cJSON *val)
{
    if (val == NULL) {
        MLC_BUG("out of memory building the watch state");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(state, key);
    mlc_json_xadd(state, key, val);
}

/* mode with its id (< 0: none); the other registration keys are dropped. */
static void state_mode(cJSON *state, const char *mode, long long id)
{
    cJSON_DeleteItemFromObjectCaseSensitive(state, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(state, "expires_ms");
    cJSON_DeleteItemFromObjectCaseSensitive(state, "reason");
    state_set(state, "mode", cJSON_CreateString(mode));
    if (id >= 0) {
        state_set(state, "id", cJSON_CreateNumber((double)id));
    }
}

/* The webhook id this state already knows for mode, or -1. */
static long long state_id(const cJSON *state, const char *mode)
{
    const char *m = mlc_json_str(state, "mode");
    double id = mlc_json_num(state, "id", -1);

    if (m == NULL || strcmp(m, mode) != 0 || !(id >= 0 && id < 1e15)) {
        return -1;
    }
    return (long long)id;
}

/* No webhook can be used: the agent polls with changes(). The reason is
 * logged as a warning when it is new, so an hourly re-check stays quiet. */
static void watch_poll(struct conn *c, cJSON *state, const char *reason, long long now,
                       long long *next_ms)
{
    const char *mode = mlc_json_str(state, "mode"), *old = mlc_json_str(state, "reason");

    if (mode != NULL && strcmp(mode, "poll") == 0 && old != NULL && strcmp(old, reason) == 0) {
        conn_log(c, MLC_LOG_DEBUG, "still polling for status changes: %s", reason);
    } else {
        conn_log(c, MLC_LOG_WARN, "%s; polling jira for status changes instead", reason);
    }
    state_mode(state, "poll", -1);
    state_set(state, "reason", cJSON_CreateString(reason));
    *next_ms = now + JIRA_POLL_RECHECK_MS;
}

static int has_event(const cJSON *events, const char *name)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, events)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int json_id(const cJSON *v, long long *out)
{
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e15) {
        *out = (long long)v->valuedouble;
        return 0;
    }
    if (cJSON_IsString(v) && isdigit((unsigned char)v->valuestring[0])) {
        char *end;
        long long n = strtoll(v->valuestring, &end, 10);

        if (*end == '\0' && n >= 0) {
            *out = n;
            return 0;
        }
    }
    return -1;
}

/* The agent-clock time to look again at a dynamic webhook expiring at expires
 * (server clock): when fewer than 5 days remain, but at least every 6 hours. */
static long long dyn_next(long long agent_now, long long server_now, long long expires)
{
    long long due = expires - JIRA_HOOK_REFRESH_MS - (server_now - agent_now);
    long long next = agent_now + JIRA_WATCH_MAX_MS;

    if (due < next) {
        next = due;
    }
    if (next < agent_now + JIRA_WATCH_MIN_MS) {
        next = agent_now + JIRA_WATCH_MIN_MS;
    }
    return next;
}

struct dyn_found {
    long long id;      /* ours (url + filter + event), -1 when none */
    long long expires; /* its expirationDate, -1 when unknown */
    long long server_now;
    cJSON *stale; /* ids registered for another URL */
};

/* List the app's dynamic webhooks (GET /rest/api/3/webhook, paged). */
static enum mlc_rc dyn_find(struct conn *c, const char *url, const char *jql, long long want,
                            struct dyn_found *out, long *status)
{
    long start = 0;
    enum mlc_rc rc = MLC_OK;

    for (int page = 0; page < JIRA_HOOK_MAX_PAGES; page++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        const cJSON *values, *it;
        cJSON *root;
        char path[96];
        int n;

        snprintf(path, sizeof(path), "/rest/api/3/webhook?startAt=%ld&maxResults=100", start);
        rc = jira_call(c, "GET", path, NULL, &resp, &one);
        *status = resp.status;
        out->server_now = server_ms(&resp, out->server_now);
        if (rc != MLC_OK) {
            call_failed(c, "cannot list the dynamic webhooks", &one);
            mlc_http_resp_release(&resp);
            return rc;
        }
        root = mlc_json_parse(body_str(&resp), resp.body.len, "jira webhook list", &c->err);
        mlc_http_resp_release(&resp);
        values = mlc_json_arr(root, "values");
        if (values == NULL) {
            mlc_errf(&c->err, "jira webhook list: expected a page with 'values'");
            cJSON_Delete(root);
            return MLC_E_PROTO;
        }
        cJSON_ArrayForEach(it, values)
        {
            const char *u = mlc_json_str(it, "url"), *q = mlc_json_str(it, "jqlFilter");
            long long id, exp;

            if (json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) != 0 || u == NULL) {
                continue;
            }
            if (strcmp(u, url) != 0) {
                /* Jira allows one URL per app: these are left over from an old relay URL */
                cJSON_AddItemToArray(out->stale, cJSON_CreateNumber((double)id));
                continue;
            }
            if (q == NULL || strcmp(q, jql) != 0 ||
                !has_event(mlc_json_arr(it, "events"), JIRA_HOOK_EVENT)) {
                continue;
            }
            if (out->id < 0 || id == want) {
                out->id = id;
                if (jira_expiration_parse(json_member(it, "expirationDate"), &exp) != 0) {
                    exp = -1; /* unreadable: refreshed to learn it */
                }
                out->expires = exp;
            }
        }
        n = cJSON_GetArraySize(values);
        start += n;
        if (n == 0 || mlc_json_bool(root, "isLast", 1)) {
            cJSON_Delete(root);
            return MLC_OK;
        }
        cJSON_Delete(root);
    }
    mlc_errf(&c->err, "jira webhook list did not end after %d pages", JIRA_HOOK_MAX_PAGES);
    return MLC_E_PROTO;
}

/* Body {"webhookIds":[...]} for refresh and delete. */
static cJSON *ids_body(const cJSON *ids)
{
    cJSON *b = mlc_json_xobj();

    mlc_json_xadd(b, "webhookIds", xdup(ids));
    return b;
}

static enum mlc_rc dyn_refresh(struct conn *c, long long id, struct dyn_found *f)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *ids = mlc_json_xarr(), *body, *root = NULL;
    long long exp;
    enum mlc_rc rc;

    cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)id));
    body = ids_body(ids);
    rc = jira_call(c, "PUT", "/rest/api/3/webhook/refresh", body, &resp, &one);
    f->server_now = server_ms(&resp, f->server_now);
    if (rc != MLC_OK) {
        call_failed(c, "cannot refresh the dynamic webhook", &one);
        goto out;
    }
    root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
    if (jira_expiration_parse(json_member(root, "expirationDate"), &exp) == 0) {
        f->expires = exp;
    } else {
        /* refreshed, but the date is unreadable: count the documented 30 days */
        conn_log(c, MLC_LOG_DEBUG, "webhook refresh answer has no readable expirationDate");
        f->expires = f->server_now + JIRA_HOOK_TTL_MS;
    }
    conn_log(c, MLC_LOG_INFO, "dynamic webhook %lld refreshed", id);
out:
    cJSON_Delete(root);
    cJSON_Delete(body);
    cJSON_Delete(ids);
    mlc_http_resp_release(&resp);
    return rc;
}

static void dyn_delete(struct conn *c, const cJSON *ids)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *body = ids_body(ids);
    char *list = mlc_json_print(ids);

    if (jira_call(c, "DELETE", "/rest/api/3/webhook", body, &resp, &one) == MLC_OK) {
        conn_log(c, MLC_LOG_INFO, "deleted dynamic webhooks %s registered for another URL", list);
    } else {
        conn_log(c, MLC_LOG_WARN, "cannot delete old dynamic webhooks %s: %s", list,
                 mlc_err_msg(&one));
    }
    free(list);
    cJSON_Delete(body);
    mlc_http_resp_release(&resp);
}

/* Register our dynamic webhook. *id stays -1 when Jira refused it; then
 * reason says why (an operator matter, not a transient failure). */
static enum mlc_rc dyn_register(struct conn *c, const char *url, const char *jql, long long *id,
                                struct dyn_found *f, char *reason, size_t rn)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *body = mlc_json_xobj(), *hooks = mlc_json_xarr(), *hook = mlc_json_xobj();
    cJSON *events = mlc_json_xarr(), *fids = mlc_json_xarr(), *root = NULL;
    const cJSON *first, *it;
    char text[400];
    enum mlc_rc rc;

    *id = -1;
    mlc_json_xadd_str(body, "url", url);
    cJSON_AddItemToArray(events, cJSON_CreateString(JIRA_HOOK_EVENT));
    mlc_json_xadd(hook, "events", events);
    mlc_json_xadd_str(hook, "jqlFilter", jql);
    cJSON_AddItemToArray(fids, cJSON_CreateString("status"));
    mlc_json_xadd(hook, "fieldIdsFilter", fids);
    cJSON_AddItemToArray(hooks, hook);
    mlc_json_xadd(body, "webhooks", hooks);
    rc = jira_call(c, "POST", "/rest/api/3/webhook", body, &resp, &one);
    f->server_now = server_ms(&resp, f->server_now);
    if (rc != MLC_OK) {
        if (resp.status >= 400 && resp.status < 500 && resp.status != 401 && resp.status != 408 &&
            resp.status != 429 && !((struct jira *)c->priv)->auth_failed) {
            jira_error_text(body_str(&resp), resp.body.len, text, sizeof(text));
            set_msg(reason, rn, "jira refused to register a dynamic webhook (HTTP %ld: %s)%s",
                    resp.status, text,
                    resp.status == 403 ? ": the oauth app needs the manage:jira-webhook scope"
                                       : "");
            rc = MLC_OK;
        } else {
            call_failed(c, "cannot register the dynamic webhook", &one);
        }
        goto out;
    }
    root = mlc_json_parse(body_str(&resp), resp.body.len, "jira webhook registration", &c->err);
    first = cJSON_GetArrayItem(mlc_json_arr(root, "webhookRegistrationResult"), 0);
    if (json_id(cJSON_GetObjectItemCaseSensitive(first, "createdWebhookId"), id) == 0) {
        f->expires = f->server_now + JIRA_HOOK_TTL_MS;
        conn_log(c, MLC_LOG_INFO, "registered dynamic webhook %lld for %s (%s)", *id, url, jql);
        goto out;
    }
    text[0] = '\0';
    cJSON_ArrayForEach(it, mlc_json_arr(first, "errors"))
    {
        if (cJSON_IsString(it)) {
            size_t k = strlen(text);

            snprintf(text + k, sizeof(text) - k, "%s%s", k > 0 ? "; " : "", it->valuestring);
        }
    }
    if (first == NULL) {
        mlc_errf(&c->err, "jira webhook registration: no webhookRegistrationResult");
        rc = MLC_E_PROTO;
        goto out;
    }
    set_msg(reason, rn, "jira refused the dynamic webhook for '%s': %s", jql,
            text[0] ? text : "no reason given");
out:
    cJSON_Delete(root);
    cJSON_Delete(body);
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc watch_dynamic(struct conn *c, const struct watch_req *req, const char *jql,
                                 cJSON *state, long long *next_ms)
{
    struct dyn_found f = { -1, -1, req->now_ms, mlc_json_xarr() };
    long long want = state_id(state, "dynamic"), id;
    char reason[600] = "";
    long status = 0;
    enum mlc_rc rc;

    rc = dyn_find(c, req->url, jql, want, &f, &status);
    if (rc != MLC_OK) {
        if (status == 403) {
            mlc_err_reset(&c->err);
            watch_poll(c, state,
                       "jira refused to list the dynamic webhooks (HTTP 403): the oauth app needs "
                       "the manage:jira-webhook scope",
                       req->now_ms, next_ms);
            rc = MLC_OK;
        }
        goto out;
    }
    if (cJSON_GetArraySize(f.stale) > 0) {
        dyn_delete(c, f.stale);
    }
    id = f.id;
    if (id < 0) {
        if (want >= 0) {
            conn_log(c, MLC_LOG_INFO,
                     "dynamic webhook %lld expired or was deleted: registering again", want);
        }
        rc = dyn_register(c, req->url, jql, &id, &f, reason, sizeof(reason));
        if (rc != MLC_OK) {
            goto out;
        }
        if (id < 0) {
            watch_poll(c, state, reason, req->now_ms, next_ms);
            goto out;
        }
    } else if (f.expires < 0 || f.expires - f.server_now < JIRA_HOOK_REFRESH_MS) {
        rc = dyn_refresh(c, id, &f);
        if (rc != MLC_OK) {
            goto out;
        }
    }
    state_mode(state, "dynamic", id);
    state_set(state, "expires_ms", cJSON_CreateNumber((double)f.expires));
    *next_ms = dyn_next(req->now_ms, f.server_now, f.expires);
out:
    cJSON_Delete(f.stale);
    return rc;
}

/* The id at the end of an admin webhook's self link (.../webhook/72). */
static long long admin_id(const cJSON *hook)
{
    const char *self = mlc_json_str(hook, "self"), *slash;
    char *end;
    long long id;

    if (json_id(cJSON_GetObjectItemCaseSensitive(hook, "id"), &id) == 0) {
        return id;
    }
    slash = self != NULL ? strrchr(self, '/') : NULL;
    if (slash == NULL || !isdigit((unsigned char)slash[1])) {
        return -1;
    }
    id = strtoll(slash + 1, &end, 10);
    return *end == '\0' && id >= 0 ? id : -1;
}

static enum mlc_rc admin_register(struct conn *c, const struct watch_req *req, const char *project,
                                  const char *jql, long long *id, char *reason, size_t rn)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *body = mlc_json_xobj(), *events = mlc_json_xarr(), *filters = mlc_json_xobj();
    cJSON *root = NULL;
    char *name = mlc_xasprintf("ml-connector %s", c->name);
    char *desc = mlc_xasprintf("ml-connector: status changes in jira project %s", project);
    char text[400];
    enum mlc_rc rc;

    *id = -1;
    mlc_json_xadd_str(body, "name", name);
    mlc_json_xadd_str(body, "description", desc);
    mlc_json_xadd_str(body, "url", req->url);
    cJSON_AddItemToArray(events, cJSON_CreateString(JIRA_HOOK_EVENT));
    mlc_json_xadd(body, "events", events);
    mlc_json_xadd_str(filters, "issue-related-events-section", jql);
    mlc_json_xadd(body, "filters", filters);
    cJSON_AddFalseToObject(body, "excludeBody");
    mlc_json_xadd_str(body, "secret", req->hook_secret);
    rc = jira_call(c, "POST", "/rest/webhooks/1.0/webhook", body, &resp, &one);
    if (rc != MLC_OK) {
        if (resp.status >= 400 && resp.status < 500 && resp.status != 401 && resp.status != 408 &&
            resp.status != 429 && !((struct jira *)c->priv)->auth_failed) {
            jira_error_text(body_str(&resp), resp.body.len, text, sizeof(text));
            set_msg(reason, rn, "jira refused to register the admin webhook (HTTP %ld: %s)%s",
                    resp.status, text,
                    resp.status == 403 ? ": the jira user is not a jira administrator" : "");
            rc = MLC_OK;
        } else {
            call_failed(c, "cannot register the admin webhook", &one);
        }
        goto out;
    }
    root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
    *id = admin_id(root);
    if (*id < 0) {
        mlc_errf(&c->err, "jira admin webhook registration: the answer has no webhook id");
        rc = MLC_E_PROTO;
        goto out;
    }
    conn_log(c, MLC_LOG_INFO, "registered admin webhook %lld for %s (%s, signed)", *id, req->url,
             jql);
out:
    cJSON_Delete(root);
    cJSON_Delete(body);
    free(name);
    free(desc);
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc watch_admin(struct conn *c, const struct watch_req *req, const char *project,
                               const char *jql, cJSON *state, long long *next_ms)
{
    struct jira *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    long long want = state_id(state, "admin"), id = -1;
    const cJSON *it, *found = NULL;
    cJSON *root = NULL;
    char reason[900] = "";
    enum mlc_rc rc;

    rc = jira_call(c, "GET", "/rest/webhooks/1.0/webhook", NULL, &resp, &one);
    if (rc != MLC_OK) {
        if ((resp.status == 403 || resp.status == 404) && !j->auth_failed) {
            set_msg(
                reason, sizeof(reason),
                "the jira user %s cannot list admin webhooks (HTTP %ld%s); a jira administrator "
                "can register one by hand for %s (event issue updated, JQL \"%s\", with the "
                "relay's webhook secret)",
                j->cf.email, resp.status, resp.status == 403 ? ": not a jira administrator" : "",
                req->url, jql);
            watch_poll(c, state, reason, req->now_ms, next_ms);
            rc = MLC_OK;
        } else {
            call_failed(c, "cannot list the admin webhooks", &one);
        }
        goto out;
    }
    root = mlc_json_parse(body_str(&resp), resp.body.len, "jira admin webhook list", &c->err);
    if (!cJSON_IsArray(root)) {
        mlc_errf(&c->err, "jira admin webhook list: expected an array");
        rc = MLC_E_PROTO;
        goto out;
    }
    cJSON_ArrayForEach(it, root)
    {
        const char *u = mlc_json_str(it, "url");
        long long hid = admin_id(it);

        if (u == NULL || strcmp(u, req->url) != 0 || hid < 0) {
            continue;
        }
        if (found == NULL || hid == want) {
            found = it;
            id = hid;
        }
    }
    if (found != NULL) {
        const char *filter =
            mlc_json_str(mlc_json_obj(found, "filters"), "issue-related-events-section");

        if (!mlc_json_bool(found, "enabled", 1)) {
            conn_log(c, MLC_LOG_WARN, "admin webhook %lld for %s is disabled in jira", id,
                     req->url);
        }
        if (!has_event(mlc_json_arr(found, "events"), JIRA_HOOK_EVENT)) {
            conn_log(c, MLC_LOG_WARN, "admin webhook %lld for %s does not send %s events", id,
                     req->url, JIRA_HOOK_EVENT);
        }
        if (!mlc_json_bool(found, "isSigned", 0)) {
            conn_log(c, MLC_LOG_WARN,
                     "admin webhook %lld for %s has no secret: the relay cannot verify it", id,
                     req->url);
        }
        if (!empty(filter) && strstr(filter, project) == NULL) {
            conn_log(c, MLC_LOG_WARN,
                     "admin webhook %lld filters on \"%s\", which may leave out project %s", id,
                     filter, project);
        }
    } else if (!empty(req->hook_secret)) {
        rc = admin_register(c, req, project, jql, &id, reason, sizeof(reason));
        if (rc != MLC_OK) {
            goto out;
        }
        if (id < 0) {
            watch_poll(c, state, reason, req->now_ms, next_ms);
            goto out;
        }
    } else {
        set_msg(reason, sizeof(reason),
                "no admin webhook for %s is registered in jira and no webhook secret is "
                "configured to register one: a jira administrator can add it (event issue "
                "updated, JQL \"%s\", with the relay's webhook secret)",
                req->url, jql);
        watch_poll(c, state, reason, req->now_ms, next_ms);
        goto out;
    }
    state_mode(state, "admin", id);
    *next_ms = req->now_ms + JIRA_WATCH_MAX_MS;
out:
    cJSON_Delete(root);
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc jira_watch(struct conn *c, const cJSON *target, const struct watch_req *req,
                              cJSON *state, long long *next_ms)
{
    struct jira *j = c->priv;
    const char *project = mlc_json_str(target, "project");
    struct mlc_buf jql = MLC_BUF_INIT;
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    *next_ms = req->now_ms + JIRA_WATCH_RETRY_MS;
    if (empty(project)) {
        mlc_errf(&c->err, "target.project: required");
        return MLC_E_INVAL;
    }
    if (req->url == NULL ||
        (strncmp(req->url, "https://", 8) != 0 && strncmp(req->url, "http://", 7) != 0)) {
        mlc_errf(&c->err, "jira watch: the relay webhook url '%s' is not an http(s) URL",
                 req->url != NULL ? req->url : "");
        return MLC_E_INVAL;
    }
    if (!cJSON_IsObject(state)) {
        mlc_errf(&c->err, "jira watch: the state must be a JSON object");
        return MLC_E_INVAL;
    }
    if (jira_jql_project(&jql, project) != MLC_OK) {
        mlc_buf_release(&jql);
        mlc_errf(&c->err, "jira watch: cannot build the webhook filter");
        return MLC_E_NOMEM;
    }
    /* dynamic webhooks are for OAuth apps only (others get 403): Basic auth
     * needs an admin webhook */
    if (j->cf.auth == JIRA_AUTH_OAUTH) {
        rc = watch_dynamic(c, req, mlc_buf_str(&jql), state, next_ms);
    } else {
        rc = watch_admin(c, req, project, mlc_buf_str(&jql), state, next_ms);
    }
    mlc_buf_release(&jql);
    return rc;
}

/* ---- changes(): the polling fallback ---- */

static enum mlc_rc jira_changes(struct conn *c, const cJSON *target, char **cursor, cJSON *state,
                                cJSON *events)
{
    const char *project = mlc_json_str(target, "project");
    long long agent_now = wall_ms(), skew = 0, since = 0, est, window, scan = -1;
    struct mlc_buf jql = MLC_BUF_INIT;
    cJSON *seen = NULL, *got = mlc_json_xarr(), *ev;
    char *token = NULL, stamp[40];
    int first = *cursor == NULL, page;
    enum mlc_rc rc = MLC_OK;

    mlc_err_reset(&c->err);
    if (empty(project) || !cJSON_IsObject(state) || !cJSON_IsArray(events)) {
        mlc_errf(&c->err, "jira changes: target.project, an object state and an events array "
                          "are required");
        rc = MLC_E_INVAL;
        goto out;
    }
    /* the window is on the server's clock, as seen in earlier Date headers */
    skew = (long long)mlc_json_num(state, "skew_ms", 0);
    est = agent_now + skew;
    if (!first && jira_time_parse(*cursor, &since) != 0) {
        conn_log(c, MLC_LOG_WARN, "unreadable changes cursor '%s': starting again from now",
                 *cursor);
        first = 1;
    }
    if (first) {
        since = est;
    }
    seen = cJSON_Duplicate(mlc_json_obj(state, "seen"), 1);
    if (seen == NULL) {
        seen = mlc_json_xobj();
    }
    window = est - changes_minutes(since, est) * 60000LL;
    if (jira_jql_changes(&jql, project, since, est) != MLC_OK) {
        mlc_errf(&c->err, "jira changes: cannot build the query");
        rc = MLC_E_NOMEM;
        goto out;
    }
    for (page = 0;; page++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        cJSON *req, *flds, *root;
        const cJSON *it, *tok;

        if (page == JIRA_SEARCH_MAX_PAGES) {
            mlc_errf(&c->err, "jira search did not end after %d pages", page);
            rc = MLC_E_PROTO;
            break;
        }
        req = mlc_json_xobj();
        flds = mlc_json_xarr();
        mlc_json_xadd_str(req, "jql", mlc_buf_str(&jql));
        cJSON_AddItemToArray(flds, cJSON_CreateString("status"));
        cJSON_AddItemToArray(flds, cJSON_CreateString("updated"));
        cJSON_AddItemToArray(flds, cJSON_CreateString("labels"));
        cJSON_AddItemToArray(flds, cJSON_CreateString("duedate"));
        cJSON_AddItemToArray(flds, cJSON_CreateString("priority"));
        mlc_json_xadd(req, "fields", flds);
        flds = mlc_json_xarr();
        cJSON_AddItemToArray(flds, cJSON_CreateString(JIRA_TRACE_PROP));
        mlc_json_xadd(req, "properties", flds);
        /* for issues not seen before, the changelog tells whether the status moved */
        mlc_json_xadd_str(req, "expand", "changelog");
        mlc_json_xadd_num(req, "maxResults", 100);
        if (token != NULL) {
            mlc_json_xadd_str(req, "nextPageToken", token);
        }
        rc = jira_call(c, "POST", "/rest/api/3/search/jql", req, &resp, &one);
        cJSON_Delete(req);
        if (rc != MLC_OK) {
            call_failed(c, "search for changes failed", &one);
            mlc_http_resp_release(&resp);
            break;
        }
        if (scan < 0) {
            /* the next window starts where this one was taken, on the server's clock */
            scan = server_ms(&resp, est);
            if (resp.date > 0) {
                skew = scan - agent_now;
            }
        }
        root = mlc_json_parse(body_str(&resp), resp.body.len, "jira search response", &c->err);
        mlc_http_resp_release(&resp);
        if (!cJSON_IsArray(mlc_json_arr(root, "issues"))) {
            mlc_errf(&c->err, "jira search response: expected an object with an 'issues' array");
            cJSON_Delete(root);
            rc = MLC_E_PROTO;
            break;
        }
        cJSON_ArrayForEach(it, mlc_json_arr(root, "issues"))
        {
            ev = jira_change_event(it, seen, window, !first);
            if (ev != NULL) {
                cJSON_AddItemToArray(got, ev);
            }
        }
        tok = cJSON_GetObjectItemCaseSensitive(root, "nextPageToken");
        free(token);
        token = NULL;
        if (!mlc_json_bool(root, "isLast", 1) && cJSON_IsString(tok) && tok->valuestring[0]) {
            token = mlc_xstrdup(tok->valuestring);
        }
        cJSON_Delete(root);
        if (token == NULL) {
            break;
        }
    }
    if (rc != MLC_OK) {
        goto out; /* nothing changes: the next call looks at the same window again */
    }
    jira_seen_trim(seen, JIRA_SEEN_MAX);
    state_set(state, "seen", seen);
    seen = NULL;
    state_set(state, "skew_ms", cJSON_CreateNumber((double)skew));
    while (got->child != NULL) {
        cJSON_AddItemToArray(events, cJSON_DetachItemViaPointer(got, got->child));
    }
    jira_time_format(scan, stamp, sizeof(stamp));
    free(*cursor);
    *cursor = mlc_xstrdup(stamp);
out:
    free(token);
    cJSON_Delete(seen);
    cJSON_Delete(got);
    mlc_buf_release(&jql);
    return rc;
}

const struct connector connector_jira = {
    .name = "jira",
    .caps = CONN_TARGET,
    .max_batch = JIRA_BULK_MAX,
    .keys = jira_keys,
    .allow = NULL,
    .open = jira_open,
    .close = jira_close,
    .ping = jira_ping,
    .poll = NULL,
    .write_back = NULL,
    .prepare = jira_prepare,
    .apply = jira_apply,
    .find = jira_find,
    .watch = jira_watch,
    .changes = jira_changes,
    .event_parse = jira_event_parse,
};
