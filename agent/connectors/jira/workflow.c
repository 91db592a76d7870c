/* SPDX-License-Identifier: Apache-2.0
 * workflow.c: what follows the write of an issue's fields: its status
 * (a transition) and the comments the source gave. Both come from the
 * mapping, as target fields the "fields" never carry:
 *
 *   "status":   the name of the Jira status the issue should be in. After
 *               the create or update the current status is read
 *               (GET /issue/{key}?fields=status); when it differs,
 *               GET /issue/{key}/transitions lists the transitions open from
 *               it and the one whose "to" status is the wanted one is
 *               POSTed. Already there: nothing. None leads there: the record
 *               is refused with the issue, the status wanted, the current one
 *               and the ones reachable. Only the transitions open from the
 *               current status are visible over REST (the workflow itself
 *               only to administrators), so a status two steps away is
 *               reached through the flow's target.status_via: {"Approved":
 *               ["Awaiting approval"]} lists the statuses on the way, and
 *               each round takes the transition to the latest of them that
 *               is open, until the wanted one is.
 *   "comments": a list of {"id": "...", "text": "..."} (the mapping's
 *               "items" rule). Each source comment becomes exactly one Jira
 *               comment, whose last paragraph is the marker
 *               "mlc-comment:<id>".
 *
 * Exactly once for comments, across kill -9 at any moment:
 *  - the ids of the comments known to be on the issue go to the ledger with
 *    the other list values (result.lists -> tgt_item.prev next time), so an
 *    update whose comments were all posted before costs no call;
 *  - a comment id the ledger does not list may still have been posted (the
 *    agent died after the POST, before its ledger commit; or the answer was
 *    lost): before posting any, the comments are read back and the
 *    markers found there count as posted (read before write). Jira's
 *    comment list is read from the issue itself, not from the search index,
 *    so a comment that was created is there to be seen;
 *  - an issue created in this very call has no comments yet: no read.
 * A create whose follow-ups could not finish must not look finished to a
 * lookup by marker after a crash: the trace property written with the
 * create (or update) then carries the hash JIRA_TRACE_PENDING, and the real
 * content hash is written only once the status and comments are done. A
 * create found in flight with a hash that is not its own is sent again as
 * an update (pipeline.c, recover), which repeats the follow-ups safely.
 *
 * Cost: an update whose mapped status and comment ids did not change makes
 * no call here. A create reads the status once per project and issue type
 * and run (the status new issues start in is learned then); after that a
 * new issue mapped to that status needs nothing. Otherwise: one status
 * read, one transitions read and one POST per step, one comment read per
 * write with new comment ids (none on a create), one POST per comment, and
 * one trace property PUT when the write carried the pending hash.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "agent/connectors/connector.h"
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"
#include "agent/connectors/jira/jira_int.h"

/* A comment list read back longer than this many pages is looping. */
#define JIRA_COMMENT_MAX_PAGES 200
/* Most transitions one status step may take (target.status_via walks). */
#define JIRA_STATUS_STEPS 8

/* --------------------------------------------------------- pure helpers */

int jira_comment_id_ok(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;

    if (n == 0 || n > JIRA_COMMENT_ID_MAX) {
        return 0;
    }
    for (const char *p = id; *p; p++) {
        if ((unsigned char)*p < 0x21 || *p == 0x7f) {
            return 0; /* no spaces or controls: the marker is one word */
        }
    }
    return 1;
}

cJSON *jira_comment_body(const char *text, const char *id)
{
    cJSON *doc, *content, *para, *inl, *t;
    char *mark, *cut = NULL;
    size_t n = text != NULL ? strlen(text) : 0;

    if (n > JIRA_COMMENT_TEXT_MAX) {
        /* Jira refuses longer comments: keep the start, on a UTF-8 boundary */
        n = JIRA_COMMENT_TEXT_MAX;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) {
            n--;
        }
        cut = mlc_xasprintf("%.*s [...]", (int)n, text);
        text = cut;
    }
    doc = jira_adf_from_text(text);
    free(cut);
    if (doc == NULL) {
        MLC_BUG("out of memory building a jira comment");
    }
    content = cJSON_GetObjectItemCaseSensitive(doc, "content");
    /* jira_adf_from_text gives one empty paragraph for empty text: drop it */
    if (cJSON_GetArraySize(content) == 1 &&
        cJSON_GetArraySize(mlc_json_arr(cJSON_GetArrayItem(content, 0), "content")) == 0) {
        cJSON_DeleteItemFromArray(content, 0);
    }
    mark = mlc_xasprintf("%s%s", JIRA_COMMENT_MARK, id);
    para = mlc_json_xobj();
    mlc_json_xadd_str(para, "type", "paragraph");
    inl = mlc_json_xarr();
    t = mlc_json_xobj();
    mlc_json_xadd_str(t, "type", "text");
    mlc_json_xadd_str(t, "text", mark);
    cJSON_AddItemToArray(inl, t);
    mlc_json_xadd(para, "content", inl);
    cJSON_AddItemToArray(content, para);
    free(mark);
    return doc;
}

/* The marker ids in the text nodes of an ADF node (depth-limited). */
static void collect_marks(const cJSON *node, cJSON *ids, int depth)
{
    const cJSON *it;
    const char *text;

    if (depth > 32 || !cJSON_IsObject(node)) {
        return;
    }
    text = mlc_json_str(node, "text");
    if (text != NULL && strncmp(text, JIRA_COMMENT_MARK, strlen(JIRA_COMMENT_MARK)) == 0) {
        const char *id = text + strlen(JIRA_COMMENT_MARK);
        if (jira_comment_id_ok(id)) {
            cJSON_AddItemToArray(ids, cJSON_CreateString(id));
        }
    }
    cJSON_ArrayForEach(it, mlc_json_arr(node, "content"))
    {
        collect_marks(it, ids, depth + 1);
    }
}

enum mlc_rc jira_parse_comment_page(const char *body, size_t len, cJSON *ids, long *next_start,
                                    struct mlc_errbuf *err)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *comments, *it, *v;
    double start = 0, total = -1;
    int n;

    *next_start = -1;
    if (!cJSON_IsObject(root)) {
        mlc_errf(err, "jira comment list is not a JSON object");
        cJSON_Delete(root);
        return MLC_E_PROTO;
    }
    comments = cJSON_GetObjectItemCaseSensitive(root, "comments");
    if (!cJSON_IsArray(comments)) {
        mlc_errf(err, "jira comment list has no 'comments' array");
        cJSON_Delete(root);
        return MLC_E_PROTO;
    }
    cJSON_ArrayForEach(it, comments)
    {
        collect_marks(cJSON_GetObjectItemCaseSensitive(it, "body"), ids, 0);
    }
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(root, "startAt"))) {
        start = v->valuedouble;
    }
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(root, "total"))) {
        total = v->valuedouble;
    }
    n = cJSON_GetArraySize(comments);
    /* offset paging: more when total says so; without total, a full page
     * is followed by another read */
    if (n > 0 && start >= 0 && start < 1e9 &&
        (total >= 0 ? start + n < total : n >= JIRA_COMMENT_PAGE)) {
        *next_start = (long)start + n;
    }
    cJSON_Delete(root);
    return MLC_OK;
}

int jira_transition_pick(const char *body, size_t len, const char *want, char *id, size_t idn,
                         struct mlc_buf *reachable)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *it;
    int found = -1;

    id[0] = '\0';
    if (!cJSON_IsObject(root) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "transitions"))) {
        cJSON_Delete(root);
        return -1;
    }
    found = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "transitions"))
    {
        const cJSON *to = cJSON_GetObjectItemCaseSensitive(it, "to");
        const char *name = mlc_json_str(to, "name");
        char tid[32];

        if (name == NULL || id_text(it, "id", tid, sizeof(tid)) != 0 ||
            mlc_json_bool(it, "isAvailable", 1) == 0) {
            continue;
        }
        /* status names are unique in a site regardless of case; an id also does */
        if (!found && (strcasecmp(name, want) == 0 || strcmp(mlc_json_str(to, "id") ? mlc_json_str(to, "id") : "", want) == 0)) {
            snprintf(id, idn, "%s", tid);
            found = 1;
        }
        if (reachable != NULL) {
            mlc_buf_addf(reachable, "%s'%s'", reachable->len > 0 ? ", " : "", name);
        }
    }
    cJSON_Delete(root);
    return found;
}

/* ------------------------------------------------------------ the calls */

/* One failed call as this item's verdict: 404 -> the issue is gone, other
 * 4xx -> refused (the record's own problem), the rest (network, 429, auth)
 * -> its rc, tried again later. */
static enum mlc_rc call_verdict(struct conn *c, enum mlc_rc rc, const struct mlc_http_resp *resp,
                                const struct mlc_errbuf *one, const char *key, const char *what,
                                struct result *r)
{
    struct jira *j = c->priv;
    char msg[300];

    jira_error_text(body_str(resp), resp->body.len, msg, sizeof(msg));
    r->rc = rc;
    if (resp->status == 404) {
        r->rc = MLC_E_NOTFOUND;
        snprintf(r->err, sizeof(r->err), "jira issue %s does not exist or is not visible (HTTP 404) "
                 "while %s", key, what);
    } else if (resp->status >= 400 && resp->status < 500 && resp->status != 401 &&
               resp->status != 408 && resp->status != 409 && resp->status != 429 && !j->auth_failed) {
        r->rc = MLC_E_REJECTED;
        snprintf(r->err, sizeof(r->err), "jira refused %s on %s (HTTP %ld): %s", what, key,
                 resp->status, msg);
    } else {
        snprintf(r->err, sizeof(r->err), "jira at %s: %s on %s failed: %s", j->cf.base_url, what,
                 key, mlc_err_msg(one));
    }
    return r->rc;
}

/* The ids of our comments on issue key (markers read back), into ids. */
static enum mlc_rc read_comment_marks(struct conn *c, const char *key, cJSON *ids, struct result *r)
{
    long start = 0;

    for (int page = 0; start >= 0; page++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        char *path, q[64];
        enum mlc_rc rc;

        if (page == JIRA_COMMENT_MAX_PAGES) {
            r->rc = MLC_E_PROTO;
            snprintf(r->err, sizeof(r->err), "jira: the comments of %s did not end after %d pages",
                     key, page);
            return r->rc;
        }
        snprintf(q, sizeof(q), "/comment?startAt=%ld&maxResults=%d", start, JIRA_COMMENT_PAGE);
        path = path_with("/rest/api/3/issue/", key, q);
        rc = jira_call(c, "GET", path, NULL, &resp, &one);
        free(path);
        if (rc != MLC_OK) {
            rc = call_verdict(c, rc, &resp, &one, key, "reading the comments", r);
            mlc_http_resp_release(&resp);
            return rc;
        }
        rc = jira_parse_comment_page(body_str(&resp), resp.body.len, ids, &start, &one);
        mlc_http_resp_release(&resp);
        if (rc != MLC_OK) {
            r->rc = rc;
            snprintf(r->err, sizeof(r->err), "jira: reading the comments of %s: %s", key,
                     mlc_err_msg(&one));
            return rc;
        }
    }
    return MLC_OK;
}

static int ids_has(const cJSON *ids, const char *id)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, ids)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, id) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The comments step: post each mapped comment not yet on the issue; done
 * gets the ids now known to be there. */
static enum mlc_rc do_comments(struct conn *c, const struct tgt_item *item, const char *key,
                               int fresh, cJSON *done, struct result *r)
{
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(item->fields, "comments"), *it;
    const cJSON *prev = item->prev ? cJSON_GetObjectItemCaseSensitive(item->prev, "comments") : NULL;
    cJSON *seen = NULL;
    enum mlc_rc rc = MLC_OK;

    cJSON_ArrayForEach(it, want)
    {
        const char *id = mlc_json_str(it, "id"), *text = mlc_json_str(it, "text");
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        cJSON *req;
        char *path;

        if (text == NULL || text[0] == '\0') {
            continue; /* nothing to say */
        }
        if (ids_has(done, id)) {
            continue; /* the same id twice in the source: one comment */
        }
        if (ids_has(prev, id)) {
            cJSON_AddItemToArray(done, cJSON_CreateString(id));
            continue;
        }
        if (!fresh && seen == NULL) {
            /* read before write: it may be there from a run that died */
            seen = mlc_json_xarr();
            rc = read_comment_marks(c, key, seen, r);
            if (rc != MLC_OK) {
                break;
            }
        }
        if (ids_has(seen, id)) {
            cJSON_AddItemToArray(done, cJSON_CreateString(id));
            continue;
        }
        req = mlc_json_xobj();
        mlc_json_xadd(req, "body", jira_comment_body(text, id));
        path = path_with("/rest/api/3/issue/", key, "/comment");
        rc = jira_call(c, "POST", path, req, &resp, &one);
        free(path);
        cJSON_Delete(req);
        if (rc != MLC_OK) {
            char what[JIRA_COMMENT_ID_MAX + 40];
            snprintf(what, sizeof(what), "adding comment %s", id);
            rc = call_verdict(c, rc, &resp, &one, key, what, r);
            mlc_http_resp_release(&resp);
            break;
        }
        mlc_http_resp_release(&resp);
        cJSON_AddItemToArray(done, cJSON_CreateString(id));
    }
    cJSON_Delete(seen);
    return rc;
}

/* "PROJECT/Issue type" of a create by target (NULL when the mapping sets
 * either itself: then the initial status is not known ahead). Heap. */
static char *initial_slot(const cJSON *target, const struct tgt_item *item)
{
    const char *p = mlc_json_str(target, "project"), *t = mlc_json_str(target, "issue_type");

    if (p == NULL || t == NULL || cJSON_GetObjectItemCaseSensitive(item->fields, "project") != NULL ||
        cJSON_GetObjectItemCaseSensitive(item->fields, "issuetype") != NULL) {
        return NULL;
    }
    return mlc_xasprintf("%s/%s", p, t);
}

/* The status new issues of this kind start in, or NULL when not known yet. */
static const char *initial_status(struct conn *c, const cJSON *target, const struct tgt_item *item)
{
    struct jira *j = c->priv;
    char *slot = initial_slot(target, item);
    const char *st = slot != NULL ? mlc_json_str(j->initial, slot) : NULL;

    free(slot);
    return st;
}

static void initial_learn(struct conn *c, const cJSON *target, const struct tgt_item *item,
                          const char *status)
{
    struct jira *j = c->priv;
    char *slot = initial_slot(target, item);

    if (slot == NULL) {
        return;
    }
    if (j->initial == NULL) {
        j->initial = mlc_json_xobj();
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j->initial, slot);
    mlc_json_xadd_str(j->initial, slot, status);
    free(slot);
}

/* The status step: move the issue to want when it is elsewhere. */
/* One transition of issue key to the status reached by transition tid. */
static enum mlc_rc post_transition(struct conn *c, const char *key, const char *tid,
                                   const char *to, struct result *r)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    cJSON *req = mlc_json_xobj(), *tr = mlc_json_xobj();
    char *path = path_with("/rest/api/3/issue/", key, "/transitions");
    enum mlc_rc rc;

    mlc_json_xadd_str(tr, "id", tid);
    mlc_json_xadd(req, "transition", tr);
    rc = jira_call(c, "POST", path, req, &resp, &one);
    if (rc != MLC_OK) {
        char what[200];
        snprintf(what, sizeof(what), "the transition to '%.120s'", to);
        rc = call_verdict(c, rc, &resp, &one, key, what, r);
    }
    cJSON_Delete(req);
    free(path);
    mlc_http_resp_release(&resp);
    return rc;
}

/* The status step: move the issue to want when it is elsewhere. Each round
 * reads the current status and the transitions open from it (so a run that
 * died half-way goes on from where the issue is) and takes the one to want;
 * when there is none, the one to the latest of target.status_via[want] (the
 * statuses on the way, in workflow order) that is open now. */
static enum mlc_rc do_status(struct conn *c, const cJSON *target, const struct tgt_item *item,
                             int fresh, const char *key, const char *want, struct result *r)
{
    const cJSON *via = mlc_json_arr(mlc_json_obj(target, "status_via"), want);
    enum mlc_rc rc = MLC_OK;

    for (int round = 0; round < JIRA_STATUS_STEPS; round++) {
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        struct mlc_buf reach = MLC_BUF_INIT;
        cJSON *root = NULL;
        const char *cur, *to = want;
        char *path, tid[32], current[128];
        int pick;

        path = path_with("/rest/api/3/issue/", key, "?fields=status");
        rc = jira_call(c, "GET", path, NULL, &resp, &one);
        free(path);
        if (rc != MLC_OK) {
            rc = call_verdict(c, rc, &resp, &one, key, "reading the status", r);
            mlc_http_resp_release(&resp);
            return rc;
        }
        root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
        mlc_http_resp_release(&resp);
        cur = mlc_json_str(mlc_json_obj(mlc_json_obj(root, "fields"), "status"), "name");
        if (cur == NULL) {
            cJSON_Delete(root);
            r->rc = MLC_E_PROTO;
            snprintf(r->err, sizeof(r->err), "jira: issue %s came back without fields.status.name",
                     key);
            return r->rc;
        }
        snprintf(current, sizeof(current), "%s", cur);
        cJSON_Delete(root);
        if (fresh && round == 0) {
            initial_learn(c, target, item, current);
        }
        if (strcasecmp(current, want) == 0) {
            return MLC_OK; /* already there */
        }
        memset(&resp, 0, sizeof(resp));
        path = path_with("/rest/api/3/issue/", key, "/transitions");
        rc = jira_call(c, "GET", path, NULL, &resp, &one);
        free(path);
        if (rc != MLC_OK) {
            rc = call_verdict(c, rc, &resp, &one, key, "reading the transitions", r);
            mlc_http_resp_release(&resp);
            return rc;
        }
        pick = jira_transition_pick(body_str(&resp), resp.body.len, want, tid, sizeof(tid), &reach);
        for (int i = cJSON_GetArraySize(via) - 1; pick == 0 && i >= 0; i--) {
            const cJSON *step = cJSON_GetArrayItem(via, i);
            if (cJSON_IsString(step) && strcasecmp(step->valuestring, current) != 0 &&
                jira_transition_pick(body_str(&resp), resp.body.len, step->valuestring, tid,
                                     sizeof(tid), NULL) == 1) {
                pick = 1;
                to = step->valuestring;
            }
        }
        mlc_http_resp_release(&resp);
        if (pick < 0) {
            mlc_buf_release(&reach);
            r->rc = MLC_E_PROTO;
            snprintf(r->err, sizeof(r->err),
                     "jira: the transitions of %s are not a 'transitions' list", key);
            return r->rc;
        }
        if (pick == 0) {
            r->rc = MLC_E_REJECTED;
            snprintf(r->err, sizeof(r->err),
                     "jira issue %s cannot move from status '%s' to '%s': no transition open to "
                     "the sync user leads there (reachable from '%s': %s); check the mapping's "
                     "status values against the project's workflow, or list the statuses on the "
                     "way in target.status_via",
                     key, current, want, current, reach.len > 0 ? mlc_buf_str(&reach) : "none");
            mlc_buf_release(&reach);
            return r->rc;
        }
        mlc_buf_release(&reach);
        rc = post_transition(c, key, tid, to, r);
        if (rc != MLC_OK || to == want) {
            return rc;
        }
    }
    r->rc = MLC_E_REJECTED;
    snprintf(r->err, sizeof(r->err),
             "jira issue %s did not reach status '%s' in %d transitions: check "
             "target.status_via['%s'] against the project's workflow",
             key, want, JIRA_STATUS_STEPS, want);
    return r->rc;
}

int jira_item_has_after(struct conn *c, const cJSON *target, const struct tgt_item *item,
                        int create)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item->fields, "status");
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(item->fields, "comments"), *it;
    const cJSON *prev_st = item->prev ? cJSON_GetObjectItemCaseSensitive(item->prev, "status") : NULL;
    const cJSON *prev_cm = item->prev ? cJSON_GetObjectItemCaseSensitive(item->prev, "comments")
                                      : NULL;

    if (cJSON_IsString(st) && st->valuestring[0] != '\0') {
        const cJSON *p = cJSON_GetArrayItem(prev_st, 0);
        const char *init = create ? initial_status(c, target, item) : NULL;
        if (create ? init == NULL || strcasecmp(init, st->valuestring) != 0
                   : !cJSON_IsString(p) || strcmp(p->valuestring, st->valuestring) != 0) {
            return 1;
        }
    }
    cJSON_ArrayForEach(it, cm)
    {
        const char *text = mlc_json_str(it, "text"), *id = mlc_json_str(it, "id");
        if (text != NULL && text[0] != '\0' && (create || id == NULL || !ids_has(prev_cm, id))) {
            return 1;
        }
    }
    return 0;
}

enum mlc_rc jira_item_check_after(const struct tgt_item *item, char *msg, size_t msgn)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item->fields, "status");
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(item->fields, "comments"), *it;

    if (st != NULL && !cJSON_IsString(st) && !cJSON_IsNull(st)) {
        set_msg(msg, msgn, "mapped field 'status' must be the name of a jira status");
        return MLC_E_REJECTED;
    }
    if (cm != NULL && !cJSON_IsArray(cm) && !cJSON_IsNull(cm)) {
        set_msg(msg, msgn, "mapped field 'comments' must be a list of {\"id\", \"text\"} (the "
                           "mapping's \"items\" rule)");
        return MLC_E_REJECTED;
    }
    cJSON_ArrayForEach(it, cm)
    {
        const char *id = mlc_json_str(it, "id"), *text = mlc_json_str(it, "text");
        if (!cJSON_IsObject(it)) {
            set_msg(msg, msgn, "mapped field 'comments': every entry must be an object "
                               "{\"id\", \"text\"}");
            return MLC_E_REJECTED;
        }
        if (text != NULL && text[0] != '\0' && !jira_comment_id_ok(id)) {
            set_msg(msg, msgn, "mapped field 'comments': comment id '%.80s' must be 1 to %d "
                               "characters without spaces (the source's own comment id)",
                    id ? id : "", JIRA_COMMENT_ID_MAX);
            return MLC_E_REJECTED;
        }
    }
    return MLC_OK;
}

/* The trace property as it goes with a write (hash NULL: none). */
cJSON *jira_trace_json(const struct tgt_item *item, const char *hash)
{
    cJSON *trace = mlc_json_xobj();

    if (item->audit_id != NULL) {
        mlc_json_xadd_str(trace, "audit_id", item->audit_id);
    } else {
        mlc_json_xadd(trace, "audit_id", cJSON_CreateNull());
    }
    if (item->marker != NULL) {
        mlc_json_xadd_str(trace, "marker", item->marker);
    }
    if (hash != NULL) {
        mlc_json_xadd_str(trace, "hash", hash);
    }
    return trace;
}

enum mlc_rc jira_item_after(struct conn *c, const cJSON *target, const struct tgt_item *item,
                            const char *key, int fresh, int pending, struct result *r)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item->fields, "status");
    const cJSON *prev_st = item->prev ? cJSON_GetObjectItemCaseSensitive(item->prev, "status") : NULL;
    const cJSON *p0 = cJSON_GetArrayItem(prev_st, 0);
    cJSON *lists = NULL, *done = mlc_json_xarr();
    enum mlc_rc rc = MLC_OK;

    /* comments first: a transition may close the issue to further comments */
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(item->fields, "comments"))) {
        rc = do_comments(c, item, key, fresh, done, r);
    }
    if (rc == MLC_OK && cJSON_IsString(st) && st->valuestring[0] != '\0') {
        /* a new issue mapped to the status new issues start in needs no
         * call; an update, only when the mapped status changed */
        const char *init = fresh ? initial_status(c, target, item) : NULL;
        if (fresh ? init == NULL || strcasecmp(init, st->valuestring) != 0
                  : !cJSON_IsString(p0) || strcmp(p0->valuestring, st->valuestring) != 0) {
            rc = do_status(c, target, item, fresh, key, st->valuestring, r);
        }
    }
    if (rc == MLC_OK && pending) {
        /* finished: the trace now tells a lookup that this content is complete */
        struct mlc_http_resp resp = { 0 };
        struct mlc_errbuf one = { 0 };
        cJSON *trace = jira_trace_json(item, item->hash);
        char *path = path_with("/rest/api/3/issue/", key, "/properties/" JIRA_TRACE_PROP);

        rc = jira_call(c, "PUT", path, trace, &resp, &one);
        if (rc != MLC_OK) {
            rc = call_verdict(c, rc, &resp, &one, key, "writing the trace property", r);
        }
        cJSON_Delete(trace);
        free(path);
        mlc_http_resp_release(&resp);
    }
    if (rc != MLC_OK) {
        cJSON_Delete(done);
        return rc;
    }
    /* what the ledger keeps for next time: the comment ids on the issue and
     * the status set, beside the list values of the write itself */
    lists = r->lists != NULL ? cJSON_Parse(r->lists) : NULL;
    if (!cJSON_IsObject(lists)) {
        cJSON_Delete(lists);
        lists = mlc_json_xobj();
    }
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(item->fields, "comments"))) {
        mlc_json_xadd(lists, "comments", done);
        done = NULL;
    }
    if (cJSON_IsString(st) && st->valuestring[0] != '\0') {
        cJSON *s = mlc_json_xarr();
        cJSON_AddItemToArray(s, cJSON_CreateString(st->valuestring));
        mlc_json_xadd(lists, "status", s);
    }
    if (cJSON_GetArraySize(lists) > 0) {
        free(r->lists);
        r->lists = mlc_json_print(lists);
    }
    cJSON_Delete(lists);
    cJSON_Delete(done);
    return MLC_OK;
}
