/* SPDX-License-Identifier: Apache-2.0
 * issue.c: Jira issues: the body of one issue (jira_item_body), apply()
 * (bulk creates, updates, dry runs) and find() (markers, in-flight scan)
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
        if (jira_number_text(v, &d) == 0) {
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

/* How a mapped value is encoded into the issue's "fields". */
enum body_enc {
    ENC_AS_IS = 0, /* the mapped JSON value unchanged (also every unknown field) */
    ENC_SUMMARY,   /* text, cleaned and cut by jira_summary_clean */
    ENC_ADF,       /* text as an ADF document */
    ENC_NAME,      /* {"name": text} */
    ENC_ACCOUNT,   /* {"accountId": ...} from an e-mail or an account id Jira knows */
    ENC_LABELS,    /* a list of cleaned labels (whole on create, add/remove on update) */
    ENC_CUSTOM,    /* by the custom field's schema kind (jira_field_kind) */
    ENC_AFTER,     /* not an issue field: done after the write (workflow.c) */
};

/* When a mapped value is left out, and which values the encoding applies to. */
#define BF_SKIP_NULL   0x01 /* null: left out */
#define BF_SKIP_EMPTY  0x02 /* "": left out */
#define BF_CREATE_ONLY 0x04 /* only on a create (moving an issue is not an edit) */
#define BF_STRING_ONLY 0x08 /* a value that is not a string goes as is */
#define BF_PREFIX      0x10 /* name is a prefix (customfield_10050) */

/* One row per field name the connector knows; the rest go as is. */
static const struct body_field {
    const char *name;
    enum body_enc enc;
    unsigned flags;
} body_fields[] = {
    { "summary", ENC_SUMMARY, BF_SKIP_NULL },
    { "description", ENC_ADF, BF_STRING_ONLY },
    { "priority", ENC_NAME, BF_SKIP_EMPTY | BF_STRING_ONLY },
    { "assignee", ENC_ACCOUNT, BF_SKIP_NULL | BF_SKIP_EMPTY | BF_STRING_ONLY },
    { "duedate", ENC_AS_IS, BF_SKIP_EMPTY }, /* a date "2026-12-10" */
    { "labels", ENC_LABELS, BF_SKIP_NULL }, /* null: leave the issue's labels alone */
    { "project", ENC_AS_IS, BF_CREATE_ONLY },
    { "issuetype", ENC_AS_IS, BF_CREATE_ONLY },
    { "customfield_", ENC_CUSTOM, BF_PREFIX | BF_STRING_ONLY },
    { "status", ENC_AFTER, 0 },   /* a transition after the write */
    { "comments", ENC_AFTER, 0 }, /* comments posted after the write */
};

static const struct body_field body_field_other = { NULL, ENC_AS_IS, 0 };

static const struct body_field *body_field_for(const char *name)
{
    for (size_t i = 0; i < sizeof(body_fields) / sizeof(body_fields[0]); i++) {
        const struct body_field *bf = &body_fields[i];

        if ((bf->flags & BF_PREFIX) != 0 ? strncmp(name, bf->name, strlen(bf->name)) == 0
                                         : strcmp(name, bf->name) == 0) {
            return bf;
        }
    }
    return &body_field_other;
}

/* The assignee for the string sv: an e-mail looked up, or an account id
 * Jira knows. *val NULL (and r->warn says why) when there is none. */
static enum mlc_rc assignee_value(struct conn *c, const char *sv, struct result *r, cJSON **val,
                                  char *msg, size_t msgn)
{
    const char *account = NULL;
    int known = 0;
    enum mlc_rc rc;

    if (strchr(sv, '@') != NULL) {
        rc = jira_account_for(c, sv, &account, msg, msgn);
        if (rc != MLC_OK) {
            return rc;
        }
        if (account == NULL) {
            snprintf(r->warn, sizeof(r->warn),
                     "assignee '%.80s': no jira user has this e-mail (or it is hidden): "
                     "left unassigned",
                     sv);
            return MLC_OK;
        }
        *val = value_obj("accountId", account);
        return MLC_OK;
    }
    /* never send a source value as an account id unless jira knows it */
    if (jira_account_id_shape(sv)) {
        rc = jira_account_known(c, sv, &known, msg, msgn);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    if (!known) {
        snprintf(r->warn, sizeof(r->warn),
                 "assignee '%.80s' is neither mapped, nor an e-mail, nor a jira "
                 "account id: left unassigned (map it in the mapping's assignee "
                 "\"map\", or give a \"default\")",
                 sv);
        return MLC_OK;
    }
    *val = value_obj("accountId", sv);
    return MLC_OK;
}

/* One mapped value it (field bf) as *val for "fields", or as *list (the
 * values of a list field); both NULL: left out. MLC_OK, or a whole-batch rc
 * from a lookup (msg says why). */
static enum mlc_rc field_value(struct conn *c, const struct body_field *bf, const cJSON *it,
                               int create, struct result *r, cJSON **val, cJSON **list, char *msg,
                               size_t msgn)
{
    const char *sv = cJSON_IsString(it) ? it->valuestring : NULL;
    enum body_enc enc = bf->enc;
    const struct jira_field *f;
    char text[512], sum[JIRA_SUMMARY_MAX + 1];
    enum mlc_rc rc;

    if (((bf->flags & BF_SKIP_NULL) && cJSON_IsNull(it)) ||
        ((bf->flags & BF_SKIP_EMPTY) && sv != NULL && sv[0] == '\0') ||
        ((bf->flags & BF_CREATE_ONLY) && !create)) {
        return MLC_OK;
    }
    if (enc == ENC_AFTER) {
        return MLC_OK;
    }
    if ((bf->flags & BF_STRING_ONLY) && sv == NULL) {
        enc = ENC_AS_IS;
    }
    switch (enc) {
    case ENC_SUMMARY:
        if (mlc_json_scalar_text(it, text, sizeof(text)) != 0) {
            return MLC_OK;
        }
        jira_summary_clean(sv != NULL ? sv : text, sum, sizeof(sum));
        *val = cJSON_CreateString(sum);
        break;
    case ENC_ADF:
        *val = jira_adf_from_text(sv);
        break;
    case ENC_NAME:
        *val = value_obj("name", sv);
        break;
    case ENC_ACCOUNT:
        return assignee_value(c, sv, r, val, msg, msgn);
    case ENC_LABELS:
        *list = mlc_json_xarr();
        list_values(it, *list);
        return MLC_OK;
    case ENC_CUSTOM:
        rc = jira_load_fields(c);
        if (rc != MLC_OK) {
            set_msg(msg, msgn, "%s", mlc_err_msg(&c->err));
            return rc;
        }
        f = jira_field_find(c->priv, it->string);
        if (sv[0] == '\0' && f != NULL && f->kind != FIELD_TEXT && f->kind != FIELD_ADF) {
            return MLC_OK;
        }
        if (f != NULL && f->kind == FIELD_OPTION_ARRAY) {
            *list = mlc_json_xarr();
            list_values(it, *list);
            return MLC_OK;
        }
        if (f != NULL && f->kind == FIELD_NUMBER && jira_number_text(sv, NULL) != 0) {
            set_msg(msg, msgn, "%s (%s) is a number field in jira: '%.60s' is not a number",
                    it->string, f->name, sv);
            return MLC_E_REJECTED;
        }
        *val = custom_value(f, sv);
        break;
    case ENC_AFTER:
        break;
    case ENC_AS_IS:
        *val = xdup(it);
        break;
    }
    if (*val == NULL) {
        MLC_BUG("out of memory building jira field '%s'", it->string);
    }
    return MLC_OK;
}

/* Build {"fields":..., "update":..., "properties":...} for one item into *out.
 * MLC_OK, MLC_E_REJECTED (this record only, msg says why), or a whole-batch
 * rc from an assignee lookup (msg says why). A value left out (an assignee
 * Jira does not know) is named in r->warn; r->lists gets the list values
 * set (for the next update's removals). */
enum mlc_rc jira_item_body(struct conn *c, const cJSON *target, const struct tgt_item *item,
                           int create, cJSON **out, struct result *r, char *msg, size_t msgn)
{
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
    rc = jira_item_check_after(item, msg, msgn);
    if (rc != MLC_OK) {
        goto out;
    }
    cJSON_ArrayForEach(it, item->fields)
    {
        const char *name = it->string;
        cJSON *val = NULL, *list = NULL;

        if (name == NULL || cJSON_GetObjectItemCaseSensitive(fields, name) != NULL ||
            cJSON_GetObjectItemCaseSensitive(lists, name) != NULL) {
            continue;
        }
        if (strcmp(name, "project") == 0 && cJSON_IsString(it)) {
            /* picked by the mapping: only on a create, and only a project
             * the target knows (where its lookups search) */
            const char *all = jira_projects(c, target);
            if (!create || it->valuestring[0] == '\0') {
                continue;
            }
            if (!jira_project_in(all, it->valuestring)) {
                set_msg(msg, msgn, "jira project '%.60s' is not one the mapping names (%.200s): "
                                   "add it to mapping.project.map",
                        it->valuestring, all != NULL ? all : "none");
                rc = MLC_E_REJECTED;
                goto out;
            }
            mlc_json_xadd(fields, name, value_obj("key", it->valuestring));
            continue;
        }
        rc = field_value(c, body_field_for(name), it, create, r, &val, &list, msg, msgn);
        if (rc != MLC_OK) {
            goto out;
        }
        if (list != NULL) {
            mlc_json_xadd(lists, name, list);
        } else if (val != NULL) {
            mlc_json_xadd(fields, name, val);
        }
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
        cJSON *props = mlc_json_xarr(), *prop = mlc_json_xobj(), *trace;

        /* with a status or comments still to do, the content is not
         * complete until jira_item_after() writes the real hash */
        trace = jira_trace_json(item, item->hash != NULL && jira_item_has_after(c, target, item, create)
                                          ? JIRA_TRACE_PENDING
                                          : item->hash);
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

/* The status and comments of an item just written (r->rc MLC_OK, target
 * key set). A failure of the item's own (refused, gone) or a passing one
 * (network, throttling) becomes the item's verdict, its target key kept: a
 * create that landed is recorded, the rest is done by the update the
 * pipeline sends next. Once a passing failure happened, down holds it and
 * the remaining items of the batch get it without a call. Any other failure
 * (auth, a shutdown) fails the whole batch: returned, with c->err set; the
 * creates of the batch are then looked up again, their pending trace says
 * they are not finished. */
static enum mlc_rc after_write(struct conn *c, const cJSON *target, const struct tgt_item *item,
                               int fresh, int pending, struct result *r, struct result *down)
{
    enum mlc_rc rc = MLC_OK;

    if (cJSON_GetObjectItemCaseSensitive(item->fields, "status") == NULL &&
        cJSON_GetObjectItemCaseSensitive(item->fields, "comments") == NULL) {
        return MLC_OK;
    }
    if (down->rc != MLC_OK) {
        r->rc = down->rc;
        memcpy(r->err, down->err, sizeof(r->err));
    } else {
        rc = jira_item_after(c, target, item, r->target_key, fresh, pending, r);
        if (mlc_rc_transient(rc)) {
            *down = *r;
            down->lists = NULL;
        } else if (rc != MLC_OK && rc != MLC_E_REJECTED && rc != MLC_E_NOTFOUND &&
                   rc != MLC_E_PROTO) {
            mlc_errf(&c->err, "%s", r->err);
        } else {
            rc = MLC_OK;
        }
    }
    if (r->rc != MLC_OK) {
        free(r->lists);
        r->lists = NULL;
    }
    return mlc_rc_transient(rc) ? MLC_OK : rc;
}

static enum mlc_rc apply_creates(struct conn *c, const struct batch *in, struct result *out,
                                 unsigned char *done)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct result tmp[JIRA_BULK_MAX];
    struct result side[JIRA_BULK_MAX]; /* warn and lists of each sent item */
    size_t idx[JIRA_BULK_MAX], nc = 0, i, k;
    unsigned char pend[JIRA_BULK_MAX]; /* the body said "pending" (jira_item_has_after) */
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
        /* decided now, as the body did: what later creates teach about
         * the initial status must not change this item's mind */
        pend[nc] = (unsigned char)jira_item_has_after(c, in->target, &in->items[i], 1);
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
            struct result down = { 0 }; /* a follow-up that failed for the site, not the item */
            enum mlc_rc arc = MLC_OK;
            for (k = 0; k < nc; k++) {
                out[idx[k]] = tmp[k];
                if (tmp[k].rc == MLC_OK) {
                    memcpy(out[idx[k]].warn, side[k].warn, sizeof(side[k].warn));
                    out[idx[k]].lists = side[k].lists;
                    side[k].lists = NULL;
                    if (arc == MLC_OK) {
                        arc = after_write(c, in->target, &in->items[idx[k]], 1, pend[k],
                                          &out[idx[k]], &down);
                    }
                }
                done[idx[k]] = 1;
            }
            rc = arc;
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
    jira_call_failed(c, "bulk create failed", &one);
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

static enum mlc_rc apply_update(struct conn *c, const struct batch *in, size_t i, struct result *r,
                                struct result *down)
{
    const struct tgt_item *item = &in->items[i];
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf one = { 0 };
    struct result side = { 0 };
    cJSON *body = NULL;
    char *path = NULL, msg[400];
    enum mlc_rc rc;
    int pending;

    msg[0] = '\0';
    rc = jira_item_body(c, in->target, item, 0, &body, &side, msg, sizeof(msg));
    if (rc == MLC_E_REJECTED) {
        result_set(r, rc, "%s", msg);
        rc = MLC_OK;
        goto out;
    }
    pending = jira_item_has_after(c, in->target, item, 0);
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
        rc = after_write(c, in->target, item, 0, pending, r, down);
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
        jira_call_failed(c, "update failed", &one);
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

enum mlc_rc jira_apply(struct conn *c, const struct batch *in, struct result *out)
{
    struct result down = { 0 }; /* see after_write() */
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
        rc = apply_update(c, in, i, &out[i], &down);
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

/* what find_chunk() reads of each issue (and the trace property) */
static const char *const label_fields[] = { "labels", NULL };

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
        char *next = NULL;

        if (page == JIRA_SEARCH_MAX_PAGES) {
            mlc_errf(&c->err, "jira search did not end after %d pages", page);
            rc = MLC_E_PROTO;
            break;
        }
        rc = jira_search_page(c, mlc_buf_str(&jql), label_fields, NULL, token, &resp, &one);
        if (rc != MLC_OK) {
            jira_call_failed(c, "search failed", &one);
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
            jira_call_failed(c, "bulk fetch failed", &one);
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

enum mlc_rc jira_find(struct conn *c, const cJSON *target, const char *const *markers,
                             size_t n, const char *const *before, size_t n_before,
                             struct tgt_found *out)
{
    const char *project = jira_projects(c, target);
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
        const char *p = project;
        char one[128];

        /* each project the target may write to, all of them read to the end */
        complete = 1;
        while (rc == MLC_OK && complete && jira_project_next(&p, one, sizeof(one))) {
            rc = find_scan(c, one, before, n_before, &ctx, &complete);
        }
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
