/* SPDX-License-Identifier: Apache-2.0
 * changes.c: the Jira connector's polling fallback: changes(), and the per
 * issue comparison against the last known values (jira_change_event)
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

void jira_seen_trim(cJSON *seen, size_t max)
{
    while (seen != NULL && seen->child != NULL && (size_t)cJSON_GetArraySize(seen) > max) {
        cJSON_Delete(cJSON_DetachItemViaPointer(seen, seen->child));
    }
}

/* ---- changes(): the polling fallback ---- */

/* what changes() reads of each issue */
static const char *const change_fields[] = { "status", "updated", "labels", "duedate",
                                             "priority", NULL };

enum mlc_rc jira_changes(struct conn *c, const cJSON *target, char **cursor, cJSON *state,
                                cJSON *events)
{
    const char *project = jira_projects(c, target);
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
        cJSON *root;
        const cJSON *it, *tok;

        if (page == JIRA_SEARCH_MAX_PAGES) {
            mlc_errf(&c->err, "jira search did not end after %d pages", page);
            rc = MLC_E_PROTO;
            break;
        }
        /* for issues not seen before, the changelog tells whether the status moved */
        rc = jira_search_page(c, mlc_buf_str(&jql), change_fields, "changelog", token, &resp, &one);
        if (rc != MLC_OK) {
            jira_call_failed(c, "search for changes failed", &one);
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
