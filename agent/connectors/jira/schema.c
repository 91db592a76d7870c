/* SPDX-License-Identifier: Apache-2.0
 * schema.c: what the Jira site knows: field metadata, the custom field,
 * priority and issue type checks of prepare(), and the assignee (user) lookups
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

/* Cached e-mail -> accountId lookups (hits and misses). */
#define JIRA_USER_CACHE_MAX 4096
#define JIRA_PRIORITY_MAX_PAGES 50

/* --------------------------------------------------------------- prepare */

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

enum mlc_rc jira_load_fields(struct conn *c)
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
        jira_call_failed(c, "cannot read the field list", &one);
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

const struct jira_field *jira_field_find(const struct jira *j, const char *id)
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
        if (jira_field_find(j, it->valuestring) != NULL) {
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
            jira_call_failed(c, "cannot list priorities", &one);
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

/* The status names the mapping can produce must be statuses of the issue
 * type in the project (GET /project/{key}/statuses), or no transition will
 * ever reach them: a typo stops the flow at start-up, not each record. */
static enum mlc_rc check_statuses(struct conn *c, const char *project, const char *issue_type,
                                  const cJSON *wanted)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct mlc_buf valid = MLC_BUF_INIT;
    const cJSON *type = NULL, *it, *st, *types;
    cJSON *root = NULL;
    char *path;
    enum mlc_rc rc;

    if (cJSON_GetArraySize(wanted) == 0) {
        return MLC_OK;
    }
    path = path_with("/rest/api/3/project/", project, "/statuses");
    rc = jira_call(c, "GET", path, NULL, &resp, &one);
    free(path);
    if (rc != MLC_OK) {
        if (resp.status == 404 || resp.status == 403) {
            /* not readable here: each transition will tell instead */
            conn_log(c, MLC_LOG_WARN, "cannot read the statuses of jira project '%s' (HTTP %ld): "
                     "mapped statuses are checked on each record instead", project, resp.status);
            rc = MLC_OK;
        } else {
            jira_call_failed(c, "cannot read the project's statuses", &one);
        }
        goto out;
    }
    root = cJSON_ParseWithLength(body_str(&resp), resp.body.len);
    types = cJSON_IsArray(root) ? root : NULL;
    cJSON_ArrayForEach(it, types)
    {
        const char *name = mlc_json_str(it, "name"), *id = mlc_json_str(it, "id");
        if ((name != NULL && strcmp(name, issue_type) == 0) || (id != NULL && strcmp(id, issue_type) == 0)) {
            type = it;
        }
    }
    if (type == NULL) {
        goto out; /* the issue type check speaks for that */
    }
    cJSON_ArrayForEach(it, wanted)
    {
        int found = 0;
        if (!cJSON_IsString(it)) {
            continue;
        }
        cJSON_ArrayForEach(st, mlc_json_arr(type, "statuses"))
        {
            const char *name = mlc_json_str(st, "name");
            found |= name != NULL && strcasecmp(name, it->valuestring) == 0;
        }
        if (found) {
            continue;
        }
        cJSON_ArrayForEach(st, mlc_json_arr(type, "statuses"))
        {
            const char *name = mlc_json_str(st, "name");
            if (name != NULL && valid.len < 400) {
                mlc_buf_addf(&valid, "%s'%s'", valid.len > 0 ? ", " : "", name);
            }
        }
        mlc_errf(&c->err,
                 "mapping.status (or target.status_via): '%s' is not a status of issue type '%s' "
                 "in jira project '%s' (its statuses: %s)",
                 it->valuestring, issue_type, project, valid.len > 0 ? mlc_buf_str(&valid) : "none");
        rc = MLC_E_INVAL;
        goto out;
    }
out:
    mlc_buf_release(&valid);
    cJSON_Delete(root);
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc prepare_project(struct conn *c, const cJSON *target, const struct prep_info *pi,
                                   const char *project)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
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
            jira_call_failed(c, "cannot read the project", &one);
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
    if (rc != MLC_OK) {
        goto out;
    }
    {
        /* the statuses the mapping can produce, and the ones on the way */
        const cJSON *sts = cJSON_GetObjectItemCaseSensitive(mapped, "status");
        const cJSON *via = cJSON_GetObjectItemCaseSensitive(target, "status_via"), *v, *step;
        cJSON *names = mlc_json_xarr();

        if (!cJSON_IsArray(sts)) {
            sts = NULL;
        }
        cJSON_ArrayForEach(v, sts)
        {
            cJSON_AddItemToArray(names, xdup(v));
        }
        if (via != NULL && !cJSON_IsObject(via)) {
            mlc_errf(&c->err, "target.status_via: expected an object of status -> [statuses on "
                              "the way], e.g. {\"Approved\": [\"Awaiting approval\"]}");
            rc = MLC_E_INVAL;
            via = NULL;
        }
        cJSON_ArrayForEach(v, via)
        {
            if (!cJSON_IsArray(v)) {
                mlc_errf(&c->err, "target.status_via.%s: expected a list of status names", v->string);
                rc = MLC_E_INVAL;
                break;
            }
            cJSON_AddItemToArray(names, cJSON_CreateString(v->string));
            cJSON_ArrayForEach(step, v)
            {
                if (!cJSON_IsString(step) || step->valuestring[0] == '\0') {
                    mlc_errf(&c->err, "target.status_via.%s: expected a list of status names",
                             v->string);
                    rc = MLC_E_INVAL;
                    break;
                }
                cJSON_AddItemToArray(names, xdup(step));
            }
        }
        if (rc == MLC_OK) {
            rc = check_statuses(c, project, issue_type, names);
        }
        cJSON_Delete(names);
    }
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
enum mlc_rc jira_account_for(struct conn *c, const char *email_in, const char **account,
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
enum mlc_rc jira_account_known(struct conn *c, const char *id, int *known, char *msg,
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
int jira_account_id_shape(const char *s)
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

enum mlc_rc jira_prepare(struct conn *c, const cJSON *target, const struct prep_info *pi)
{
    const char *all = jira_projects(c, target);
    enum mlc_rc rc = MLC_OK;
    char one[128];

    if (empty(all)) {
        return prepare_project(c, target, pi, all);
    }
    /* each project the mapping may pick: it exists, has the issue type and
     * the statuses */
    for (const char *p = all; rc == MLC_OK && jira_project_next(&p, one, sizeof(one));) {
        rc = prepare_project(c, target, pi, one);
    }
    return rc;
}
