/* SPDX-License-Identifier: Apache-2.0
 * looker: Looker API 4.0 as an after_load system (looker.md). After a run
 * that wrote rows into the warehouse the core calls end_run() with the
 * flow's after_load entry ({"system", "model", "datagroup"}); the connector
 * finds the datagroup by model + name (GET /datagroups, the id cached and
 * found again on 404) and PATCHes stale_before and triggered_at to a time
 * on Looker's own clock: the Date header of the answer just before, so an
 * agent clock ahead of Looker's never makes the timestamps "in the future"
 * (a 422). Login is POST /api/4.0/login with the API key (the shared
 * client_credentials provider, Looker style): renewed before expires_in
 * runs out, and once on a refusal. 429/503 with Retry-After are waited out
 * by mlc_http.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "agent/connectors/looker/looker.h"
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

struct looker_conf {
    char *type;
    char *base_url;
    char *client_id;
    char *client_secret;
    long timeout_s;
    int tls_insecure;
};

static const struct conf_key looker_keys[] = {
    { "type", CONF_STR, offsetof(struct looker_conf, type), NULL, "\"looker\"", 0, 0, NULL },
    { "base_url", CONF_URL, offsetof(struct looker_conf, base_url), NULL,
      "the Looker API host, e.g. https://acme.cloud.looker.com (add :19999 for older AWS "
      "instances); /api/4.0 is appended",
      0, 0, NULL },
    { "client_id", CONF_STR, offsetof(struct looker_conf, client_id), NULL,
      "API key client id (Admin > Users > API keys)", 0, 0, NULL },
    { "client_secret", CONF_SECRET, offsetof(struct looker_conf, client_secret), NULL,
      "API key client secret, e.g. ${MLC_LOOKER_SECRET} or secret:looker.client_secret", 0, 0,
      NULL },
    { "timeout_s", CONF_INT, offsetof(struct looker_conf, timeout_s), "60", "per request", 1, 600,
      NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct looker_conf, tls_insecure), "false",
      "skip TLS verification (labs only)", 0, 0, NULL },
    { 0 },
};

/* What a flow's after_load entry for this system may carry. */
static const char *const looker_after_keys[] = { "model", "datagroup", NULL };

#define LOOKER_MAX_DG 16

/* A datagroup id found by model + name. */
struct dg_id {
    char model[128];
    char name[128];
    char id[64];
};

struct looker {
    struct looker_conf cf;
    char path[128]; /* "systems.<name>" */
    char api[512];  /* {base_url}/api/4.0 */
    struct auth *auth;
    char *secret;
    struct dg_id ids[LOOKER_MAX_DG];
    int n_ids;
};

static enum mlc_rc looker_open(struct conn *c)
{
    struct looker *p = mlc_xcalloc(1, sizeof(*p));
    size_t n;
    enum mlc_rc rc;

    c->priv = p;
    snprintf(p->path, sizeof(p->path), "systems.%s", c->name);
    rc = mlc_conf_load(c->conf, p->path, looker_keys, conn_common_allow, &p->cf, &c->err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(p->cf.type, "looker") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"looker\"", p->path);
        return MLC_E_INVAL;
    }
    /* the SDK's base_url is the host; take one written with /api/4.0 too */
    n = strlen(p->cf.base_url);
    if (n >= 8 && strcmp(p->cf.base_url + n - 8, "/api/4.0") == 0) {
        p->cf.base_url[n - 8] = '\0';
    }
    if (strlen(p->cf.base_url) + 9 >= sizeof(p->api)) {
        mlc_errf(&c->err, "%s.base_url: too long", p->path);
        return MLC_E_INVAL;
    }
    snprintf(p->api, sizeof(p->api), "%s/api/4.0", p->cf.base_url);
    if (p->cf.client_id[0] == '\0') {
        mlc_errf(&c->err, "%s.client_id: must not be empty", p->path);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

static void looker_close(struct conn *c)
{
    struct looker *p = c->priv;

    if (p == NULL) {
        return;
    }
    if (p->secret != NULL) {
        memset(p->secret, 0, strlen(p->secret));
    }
    free(p->secret);
    auth_free(p->auth);
    mlc_conf_release(looker_keys, &p->cf);
    free(p);
    c->priv = NULL;
}

static enum mlc_rc looker_resolve(struct conn *c)
{
    struct looker *p = c->priv;
    struct auth_cc_conf cc = { 0 };
    char *url;
    enum mlc_rc rc;

    if (p->auth != NULL) {
        return MLC_OK;
    }
    rc = conn_secret(c, p->cf.client_secret, &p->secret);
    if (rc != MLC_OK) {
        return rc;
    }
    url = mlc_xasprintf("%s/login", p->api);
    cc.token_url = url;
    cc.client_id = p->cf.client_id;
    cc.client_secret = p->secret;
    cc.style = AUTH_CC_LOOKER;
    cc.scheme = "token"; /* the documented form (looker.md 2.2) */
    p->auth = auth_client_credentials_new(&cc);
    free(url);
    return MLC_OK;
}

/* Add the settings to name to a login refusal in c->err. */
static void name_settings(struct conn *c)
{
    struct looker *p = c->priv;
    char prev[sizeof(c->err.msg)];

    snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
    mlc_err_reset(&c->err);
    mlc_errf(&c->err, "%s (settings %s.base_url, %s.client_id, %s.client_secret)", prev, p->path,
             p->path, p->path);
}

/* One API call (path below /api/4.0) through the auth provider. relogin404:
 * the endpoint always exists, so a 404 means the session is not accepted
 * (Looker's "not found" style, looker.md 3): log in again and retry once.
 * On failure c->err says what failed; resp holds the answer. */
static enum mlc_rc looker_send(struct conn *c, const char *method, const char *path,
                               const char *body, int relogin404, struct mlc_http_resp *resp)
{
    struct looker *p = c->priv;
    struct mlc_http_req rq = { 0 };
    const char *h[3];
    char *url, msg[400];
    enum mlc_rc rc;
    int n = 0;

    rc = looker_resolve(c);
    if (rc != MLC_OK) {
        return rc;
    }
    url = mlc_xasprintf("%s%s", p->api, path);
    h[n++] = "Accept: application/json";
    if (body != NULL) {
        h[n++] = "Content-Type: application/json";
    }
    h[n] = NULL;
    rq.method = method;
    rq.url = url;
    rq.headers = h;
    rq.body = body;
    rq.body_len = body != NULL ? strlen(body) : 0;
    for (int attempt = 0;; attempt++) {
        c->api_calls++;
        rc = auth_send(p->auth, c, &rq, resp);
        if (rc == MLC_E_NOTFOUND && relogin404 && attempt == 0) {
            conn_log(c, MLC_LOG_INFO, "looker %s %s: 404, logging in again once", method, path);
            mlc_http_resp_release(resp);
            p->auth->have = 0;
            continue;
        }
        break;
    }
    if (rc != MLC_OK) {
        if (resp->status == 0) {
            if (rc == MLC_E_AUTH) {
                name_settings(c);
            }
        } else {
            looker_error_line(mlc_buf_str(&resp->body), resp->body.len, msg, sizeof(msg));
            mlc_err_reset(&c->err);
            if (resp->status == 401 || resp->status == 403) {
                mlc_errf(&c->err,
                         "looker %s %s%s: refused with a fresh login (HTTP %ld: %s): the API "
                         "user's role needs access to this (datagroups: an admin role or "
                         "one allowed to update datagroups)",
                         method, p->api, path, resp->status, msg);
            } else {
                mlc_errf(&c->err, "looker %s %s%s failed (HTTP %ld: %s)", method, p->api, path,
                         resp->status, msg);
            }
        }
    }
    free(url);
    return rc;
}

static enum mlc_rc looker_ping(struct conn *c)
{
    struct looker *p = c->priv;
    enum mlc_rc rc = looker_resolve(c);

    if (rc != MLC_OK) {
        return rc;
    }
    p->auth->renew_at_ms = 0;
    rc = p->auth->ops->renew(p->auth, c, 1);
    if (rc == MLC_E_AUTH) {
        name_settings(c);
    } else if (rc == MLC_OK) {
        p->auth->have = 1;
    }
    return rc;
}

static struct dg_id *id_slot(struct looker *p, const char *model, const char *name, int make)
{
    for (int i = 0; i < p->n_ids; i++) {
        if (strcmp(p->ids[i].model, model) == 0 && strcmp(p->ids[i].name, name) == 0) {
            return &p->ids[i];
        }
    }
    if (!make) {
        return NULL;
    }
    if (p->n_ids == LOOKER_MAX_DG) {
        p->n_ids = 0; /* a cache: start over */
    }
    struct dg_id *d = &p->ids[p->n_ids++];
    snprintf(d->model, sizeof(d->model), "%s", model);
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->id[0] = '\0';
    return d;
}

/* Find the datagroup's id by listing them all; *date: Looker's clock then. */
static enum mlc_rc dg_resolve(struct conn *c, struct dg_id *d, long long *date)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf e = { 0 };
    enum mlc_rc rc = looker_send(c, "GET", "/datagroups", NULL, 1, &resp);
    int found;

    d->id[0] = '\0';
    if (rc != MLC_OK) {
        mlc_http_resp_release(&resp);
        return rc;
    }
    *date = resp.date;
    found = looker_datagroup_find(mlc_buf_str(&resp.body), resp.body.len, d->model, d->name, d->id,
                                  sizeof(d->id), &e);
    mlc_http_resp_release(&resp);
    if (found != 0) {
        mlc_err_reset(&c->err);
        mlc_errf(&c->err, "looker GET %s/api/4.0/datagroups: %s", ((struct looker *)c->priv)->cf.base_url,
                 mlc_err_msg(&e));
        return found < 0 ? MLC_E_PROTO : MLC_E_NOTFOUND;
    }
    conn_log(c, MLC_LOG_DEBUG, "looker: datagroup %s/%s is id %s", d->model, d->name, d->id);
    return MLC_OK;
}

/* The datagroup's id, checked against Looker (GET /datagroups/{id}: still
 * there and still the same one, else found again), and *date: the Date of
 * that answer, Looker's clock. */
static enum mlc_rc dg_current(struct conn *c, struct dg_id *d, long long *date)
{
    struct mlc_http_resp resp = { 0 };
    enum mlc_rc rc;
    char path[128];
    int same = -1;

    *date = 0;
    if (d->id[0] == '\0') {
        return dg_resolve(c, d, date);
    }
    snprintf(path, sizeof(path), "/datagroups/%s", d->id);
    rc = looker_send(c, "GET", path, NULL, 0, &resp);
    if (rc == MLC_OK) {
        same = looker_datagroup_check(mlc_buf_str(&resp.body), resp.body.len, d->model, d->name,
                                      NULL);
        *date = resp.date;
    }
    mlc_http_resp_release(&resp);
    if (rc == MLC_OK && same == 0) {
        return MLC_OK;
    }
    if (rc != MLC_OK && rc != MLC_E_NOTFOUND) {
        return rc;
    }
    conn_log(c, MLC_LOG_INFO, "looker: datagroup %s/%s is no longer id %s; looking it up again",
             d->model, d->name, d->id);
    mlc_err_reset(&c->err);
    return dg_resolve(c, d, date);
}

static enum mlc_rc looker_end_run(struct conn *c, const cJSON *entry, const struct run_totals *t)
{
    struct looker *p = c->priv;
    const char *model = mlc_json_str(entry, "model");
    const char *name = mlc_json_str(entry, "datagroup");
    struct dg_id *d;
    struct mlc_http_resp resp = { 0 };
    long long date = 0, ts;
    char path[128], body[128];
    enum mlc_rc rc;

    if (model == NULL || name == NULL || model[0] == '\0' || name[0] == '\0' ||
        strlen(model) >= sizeof(d->model) || strlen(name) >= sizeof(d->name)) {
        mlc_errf(&c->err,
                 "after_load for %s: needs \"model\" and \"datagroup\" (the LookML model and "
                 "datagroup names, e.g. \"mlc_finance\" and \"mlc_staging_load\")",
                 p->path);
        return MLC_E_INVAL;
    }
    d = id_slot(p, model, name, 1);
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = dg_current(c, d, &date);
        if (rc != MLC_OK) {
            return rc;
        }
        /* Looker's clock, whole seconds: never after Looker's "now" */
        ts = date > 0 ? date : (long long)time(NULL) - 120;
        if (date <= 0) {
            conn_log(c, MLC_LOG_WARN,
                     "looker: the answer carried no Date header; using the agent's clock less 2 "
                     "minutes for stale_before");
        }
        snprintf(path, sizeof(path), "/datagroups/%s", d->id);
        snprintf(body, sizeof(body), "{\"stale_before\":%lld,\"triggered_at\":%lld}", ts, ts);
        rc = looker_send(c, "PATCH", path, body, 0, &resp);
        if (rc == MLC_E_NOTFOUND && attempt == 0) {
            /* re-created between the check and the PATCH: look it up again */
            mlc_http_resp_release(&resp);
            d->id[0] = '\0';
            mlc_err_reset(&c->err);
            continue;
        }
        break;
    }
    mlc_http_resp_release(&resp);
    if (rc != MLC_OK) {
        char prev[sizeof(c->err.msg)];
        snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
        mlc_err_reset(&c->err);
        mlc_errf(&c->err, "triggering datagroup %s/%s (id %s) failed: %s", model, name, d->id,
                 prev);
        return rc;
    }
    conn_log(c, MLC_LOG_INFO,
             "looker: datagroup %s/%s (id %s) triggered at %lld (Looker's clock) after %ld "
             "created, %ld updated",
             model, name, d->id, ts, t != NULL ? t->created : 0, t != NULL ? t->updated : 0);
    return MLC_OK;
}

/* An after_load entry: "model" and "datagroup", LookML names. */
static enum mlc_rc looker_after_check(const cJSON *entry, const char *path, struct mlc_errbuf *err)
{
    static const char *const need[] = { "model", "datagroup" };

    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        const char *v = mlc_json_str(entry, need[i]);
        size_t n = v != NULL ? strlen(v) : 0;
        int ok = n > 0 && n < sizeof(((struct dg_id *)0)->model);
        for (size_t k = 0; ok && k < n; k++) {
            char ch = v[k];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_';
        }
        if (!ok) {
            mlc_errf(err,
                     "%s.%s: required, the LookML %s name (letters, digits and _, e.g. \"%s\")",
                     path, need[i], need[i], i == 0 ? "mlc_finance" : "mlc_staging_load");
            return MLC_E_INVAL;
        }
    }
    return MLC_OK;
}

const struct connector connector_looker = {
    .name = "looker",
    .caps = 0,
    .keys = looker_keys,
    .open = looker_open,
    .close = looker_close,
    .ping = looker_ping,
    .end_run = looker_end_run,
    .after_keys = looker_after_keys,
    .after_check = looker_after_check,
};
