/* SPDX-License-Identifier: Apache-2.0
 * webhook.c: the Jira connector's watch(): keep a dynamic (OAuth app) or admin
 * webhook registered for the project, or say to poll
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
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"
#include "agent/connectors/jira/jira_int.h"

/* ---------------------------------------------------- change notifications */

/* Re-check a registration at least this often, and never sooner than this. */
#define JIRA_WATCH_MAX_MS   (6LL * 3600000LL)
#define JIRA_WATCH_MIN_MS   60000LL
#define JIRA_WATCH_RETRY_MS (5LL * 60000LL)
/* In poll mode, look again for a usable (admin) webhook this often. */
#define JIRA_POLL_RECHECK_MS 3600000LL
#define JIRA_HOOK_EVENT      "jira:issue_updated"
#define JIRA_HOOK_MAX_PAGES  20

/* ---- watch(): keep a webhook registered ---- */

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
            jira_call_failed(c, "cannot list the dynamic webhooks", &one);
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
        jira_call_failed(c, "cannot refresh the dynamic webhook", &one);
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
            jira_call_failed(c, "cannot register the dynamic webhook", &one);
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
            jira_call_failed(c, "cannot register the admin webhook", &one);
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
            jira_call_failed(c, "cannot list the admin webhooks", &one);
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
        char pk[128];
        for (const char *p = project; !empty(filter) && jira_project_next(&p, pk, sizeof(pk));) {
            if (strstr(filter, pk) == NULL) {
                conn_log(c, MLC_LOG_WARN,
                         "admin webhook %lld filters on \"%s\", which may leave out project %s",
                         id, filter, pk);
            }
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

enum mlc_rc jira_watch(struct conn *c, const cJSON *target, const struct watch_req *req,
                              cJSON *state, long long *next_ms)
{
    struct jira *j = c->priv;
    const char *project = jira_projects(c, target);
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
