/* SPDX-License-Identifier: Apache-2.0
 * jira: Jira Cloud target connector (REST API v3). Creates issues with bulk
 * create (50 per call), updates them with PUT, finds our marker labels with
 * /search/jql after a crash. Auth is Basic (e-mail + API token) or OAuth 2.0
 * 3LO with rotating refresh tokens kept in the secret store.
 * Protocol notes: docs/api/jira-cloud.md.
 * This file: the connector vtable, open/close/ping, the configuration keys
 * and the HTTP calls (auth, jira_call); the OAuth refresh itself is the
 * shared provider in auth/oauth_refresh.c. The other jobs live
 * beside it: parse.c, schema.c, issue.c, workflow.c (status and comments
 * after a write), webhook.c, changes.c.
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
#include "agent/connectors/auth/auth.h"
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"
#include "agent/connectors/jira/jira_int.h"

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

/* ---------------------------------------------------------------- helpers */

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

/* The part of an mlc_http message after "<METHOD> <url>: " (the reason). */
static const char *http_reason(const char *msg)
{
    const char *p = strstr(msg, ": ");

    return p != NULL ? p + 2 : msg;
}

/* ------------------------------------------------------------ HTTP + auth */

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

/* The OAuth 2.0 refresh-token provider (auth/oauth_refresh.c), made on the
 * first call: the vault is handed over only after open(). The stored refresh
 * token wins; the configured one is resolved only when the store has none. */
static enum mlc_rc jira_oauth(struct conn *c, struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    struct auth_oauth_conf oc = { 0 };
    char *stored = NULL, *configured = NULL;
    enum mlc_rc rc;

    if (j->oauth != NULL) {
        return MLC_OK;
    }
    rc = jira_resolve(c, "client_secret", j->cf.client_secret, &j->client_secret, err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (conn_secret_get(c, j->refresh_name, &stored) != MLC_OK && !empty(j->cf.refresh_token)) {
        rc = jira_resolve(c, "refresh_token", j->cf.refresh_token, &configured, err);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    mlc_err_reset(&c->err); /* a store without the token is no failure */
    wipe_free(stored);
    oc.token_url = j->token_url;
    oc.client_id = j->cf.client_id;
    oc.client_secret = j->client_secret;
    oc.refresh_token = configured;
    oc.vault_name = j->refresh_name;
    oc.form = 0; /* Atlassian takes a JSON body */
    j->oauth = auth_oauth_refresh_new(&oc);
    wipe_free(configured);
    return MLC_OK;
}

/* Put credentials on rq; force = the access token was just refused. The
 * provider's message (in c->err) moves to err, c->err is left as it was. */
static enum mlc_rc jira_auth(struct conn *c, struct mlc_http_req *rq, int force,
                             struct mlc_errbuf *err)
{
    struct jira *j = c->priv;
    struct mlc_errbuf keep;
    enum mlc_rc rc;

    if (j->cf.auth == JIRA_AUTH_BASIC) {
        rc = jira_resolve(c, "api_token", j->cf.api_token, &j->basic_pass, err);
        rq->basic_user = j->cf.email;
        rq->basic_pass = j->basic_pass;
        return rc;
    }
    rc = jira_oauth(c, err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (force || !j->oauth->have ||
        (j->oauth->renew_at_ms > 0 && auth_now_ms(j->oauth) >= j->oauth->renew_at_ms)) {
        keep = c->err;
        mlc_err_reset(&c->err);
        j->oauth->have = 0;
        j->oauth->renew_at_ms = 0;
        rc = j->oauth->ops->renew(j->oauth, c, force);
        if (rc != MLC_OK) {
            mlc_errf(err, "%s", c->err.set ? mlc_err_msg(&c->err) : mlc_strerror(rc));
        } else {
            j->oauth->have = 1;
            conn_log(c, MLC_LOG_DEBUG, "oauth access token refreshed");
        }
        c->err = keep;
        if (rc != MLC_OK) {
            return rc;
        }
    }
    j->oauth->ops->apply(j->oauth, rq);
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
        rc = mlc_http_send(c->http, &rq, resp, retry, c->stop, &one);
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

enum mlc_rc jira_call(struct conn *c, const char *method, const char *path,
                             const cJSON *body, struct mlc_http_resp *resp, struct mlc_errbuf *err)
{
    return jira_call_r(c, method, path, body, NULL, resp, err);
}

enum mlc_rc jira_search_page(struct conn *c, const char *jql, const char *const *fields,
                             const char *expand, const char *token, struct mlc_http_resp *resp,
                             struct mlc_errbuf *err)
{
    cJSON *req = mlc_json_xobj(), *arr = mlc_json_xarr();
    enum mlc_rc rc;

    mlc_json_xadd_str(req, "jql", jql);
    for (const char *const *f = fields; *f != NULL; f++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(*f));
    }
    mlc_json_xadd(req, "fields", arr);
    arr = mlc_json_xarr();
    cJSON_AddItemToArray(arr, cJSON_CreateString(JIRA_TRACE_PROP));
    mlc_json_xadd(req, "properties", arr);
    if (expand != NULL) {
        mlc_json_xadd_str(req, "expand", expand);
    }
    mlc_json_xadd_num(req, "maxResults", 100);
    if (token != NULL) {
        mlc_json_xadd_str(req, "nextPageToken", token);
    }
    rc = jira_call(c, "POST", "/rest/api/3/search/jql", req, resp, err);
    cJSON_Delete(req);
    return rc;
}

/* Whole-call failure message into c->err: "jira at <url>: <what>: <reason>". */
void jira_call_failed(struct conn *c, const char *what, const struct mlc_errbuf *one)
{
    struct jira *j = c->priv;

    if (j->auth_failed) {
        mlc_errf(&c->err, "%s", mlc_err_msg(one));
    } else {
        mlc_errf(&c->err, "jira at %s: %s: %s", j->cf.base_url, what, mlc_err_msg(one));
    }
}

/* ------------------------------------------------------------ open/close */

/* A jira project key: a capital letter, then capitals, digits or _. */
static int project_key_ok(const char *k)
{
    if (!isupper((unsigned char)k[0])) {
        return 0;
    }
    for (; *k != '\0'; k++) {
        if (!isupper((unsigned char)*k) && !isdigit((unsigned char)*k) && *k != '_') {
            return 0;
        }
    }
    return 1;
}

/* A mapping that picks the project: every project it can pick becomes the
 * target's scope (searched for markers, polled and watched for changes). */
static enum mlc_rc jira_bind(struct conn *c, const cJSON *target, const struct prep_info *pi)
{
    struct jira *j = c->priv;
    const char *project = mlc_json_str(target, "project");
    const cJSON *vals = pi != NULL ? cJSON_GetObjectItemCaseSensitive(pi->fields, "project") : NULL;
    const cJSON *v;
    struct mlc_buf list = MLC_BUF_INIT;
    size_t i;

    if (vals == NULL) {
        return MLC_OK; /* the target's one project */
    }
    if (!cJSON_IsArray(vals) || cJSON_GetArraySize(vals) == 0) {
        mlc_errf(&c->err, "mapping.project: take the jira project from a \"map\" of source value "
                          "-> project key, with a \"default\" (the agent must know every project it "
                          "writes to, to find its issues there)");
        return MLC_E_INVAL;
    }
    if (empty(project) || !project_key_ok(project)) {
        mlc_errf(&c->err, "target.project: required as a jira project key such as \"MFG\", also "
                          "when the mapping picks the project (it is searched too)");
        return MLC_E_INVAL;
    }
    mlc_buf_adds(&list, project);
    cJSON_ArrayForEach(v, vals)
    {
        const char *k = cJSON_IsString(v) ? v->valuestring : "";
        if (!project_key_ok(k)) {
            mlc_errf(&c->err, "mapping.project: '%.60s' is not a jira project key (a capital letter, "
                              "then capitals, digits or _)", k);
            mlc_buf_release(&list);
            return MLC_E_INVAL;
        }
        if (!jira_project_in(mlc_buf_str(&list), k)) {
            mlc_buf_addf(&list, ",%s", k);
        }
    }
    for (i = 0; i < j->n_scopes && j->scopes[i].target != target; i++) {
    }
    if (i == j->n_scopes) {
        j->scopes = mlc_xrealloc(j->scopes, (j->n_scopes + 1) * sizeof(*j->scopes));
        j->scopes[j->n_scopes++] = (struct jira_scope){ target, NULL };
    }
    free(j->scopes[i].projects);
    j->scopes[i].projects = mlc_buf_detach(&list);
    return MLC_OK;
}

const char *jira_projects(struct conn *c, const cJSON *target)
{
    const struct jira *j = c->priv;

    for (size_t i = 0; j != NULL && i < j->n_scopes; i++) {
        if (j->scopes[i].target == target) {
            return j->scopes[i].projects;
        }
    }
    return mlc_json_str(target, "project");
}

int jira_project_next(const char **p, char *out, size_t n)
{
    size_t m;

    if (*p == NULL || **p == '\0') {
        return 0;
    }
    m = strcspn(*p, ",");
    snprintf(out, n, "%.*s", (int)m, *p);
    *p += m + ((*p)[m] == ',');
    return 1;
}

int jira_project_in(const char *list, const char *key)
{
    char one[128];

    while (jira_project_next(&list, one, sizeof(one))) {
        if (strcmp(one, key) == 0) {
            return 1;
        }
    }
    return 0;
}

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
    if (c->http == j->own_http) {
        c->http = NULL;
    }
    mlc_http_free(j->own_http);
    wipe_free(j->basic_pass);
    wipe_free(j->client_secret);
    auth_free(j->oauth);
    for (i = 0; i < j->n_fields; i++) {
        free(j->fields[i].id);
        free(j->fields[i].name);
    }
    free(j->fields);
    for (i = 0; i < j->n_scopes; i++) {
        free(j->scopes[i].projects);
    }
    free(j->scopes);
    for (i = 0; i < j->n_users; i++) {
        free(j->users[i].email);
        free(j->users[i].account_id);
    }
    free(j->users);
    cJSON_Delete(j->initial);
    free(j);
    c->priv = NULL;
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
        c->http = j->own_http; /* lent to the conn until close() */
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
    .bind = jira_bind,
    .prepare = jira_prepare,
    .apply = jira_apply,
    .find = jira_find,
    .watch = jira_watch,
    .changes = jira_changes,
    .event_parse = jira_event_parse,
};
