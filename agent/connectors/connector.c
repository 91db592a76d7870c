/* SPDX-License-Identifier: Apache-2.0
 * connector: helpers shared by every connector (pages, secrets, logging).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/connector.h"
#include "shared/mlc_json.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"

void record_release(struct record *r)
{
    free(r->key);
    free(r->cursor);
    free(r->error);
    cJSON_Delete(r->data);
    memset(r, 0, sizeof(*r));
}

void page_release(struct page *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        record_release(&p->recs[i]);
    }
    free(p->recs);
    memset(p, 0, sizeof(*p));
}

struct record *page_push(struct page *p)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->recs = mlc_xrealloc(p->recs, p->cap * sizeof(*p->recs));
    }
    memset(&p->recs[p->n], 0, sizeof(p->recs[0]));
    return &p->recs[p->n++];
}

const char *const conn_common_allow[] = { "credential_expires", NULL };

enum mlc_rc conn_secret(struct conn *c, const char *ref, char **out)
{
    if (c->vault == NULL || c->vault->resolve == NULL) {
        mlc_errf(&c->err, "system %s: no secret store to resolve a credential from", c->name);
        return MLC_E_INVAL;
    }
    return c->vault->resolve(c->vault->ctx, ref, out, &c->err);
}

enum mlc_rc conn_secret_get(struct conn *c, const char *name, char **out)
{
    *out = NULL;
    if (c->vault == NULL || c->vault->get == NULL) {
        return MLC_E_NOTFOUND;
    }
    return c->vault->get(c->vault->ctx, name, out, &c->err);
}

enum mlc_rc conn_secret_put(struct conn *c, const char *name, const char *value)
{
    if (c->vault == NULL || c->vault->put == NULL) {
        mlc_errf(&c->err, "system %s: no secret store to keep '%s' in", c->name, name);
        return MLC_E_IO;
    }
    return c->vault->put(c->vault->ctx, name, value, &c->err);
}

/* ---------------------------------------------------------------- changes */

void change_release(struct change *ch)
{
    if (ch != NULL) {
        cJSON_Delete(ch->root);
        memset(ch, 0, sizeof(*ch));
    }
}

const struct change_item *change_item_find(const struct change *ch, const char *field)
{
    for (size_t i = 0; i < ch->n_items; i++) {
        if (strcmp(ch->items[i].field, field) == 0) {
            return &ch->items[i];
        }
    }
    return NULL;
}

cJSON *change_to_json(const char *record, const char *author, long long at_ms,
                      const cJSON *markers, const struct change_item *items, size_t n)
{
    cJSON *o = mlc_json_xobj(), *arr = mlc_json_xarr();

    mlc_json_xadd_str(o, "event", "poll");
    mlc_json_xadd_str(o, "record", record);
    mlc_json_xadd_str(o, "author", author ? author : "");
    mlc_json_xadd_num(o, "at_ms", (double)at_ms);
    if (markers != NULL) {
        mlc_json_xadd(o, "markers", cJSON_Duplicate(markers, 1));
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *it = mlc_json_xobj();
        mlc_json_xadd_str(it, "field", items[i].field);
        mlc_json_xadd_str(it, "from", items[i].from ? items[i].from : "");
        mlc_json_xadd_str(it, "to", items[i].to ? items[i].to : "");
        cJSON_AddItemToArray(arr, it);
    }
    mlc_json_xadd(o, "items", arr);
    return o;
}

/* Set (or replace: the last one wins) the item of a field. */
static void change_put(struct change *ch, const char *field, const char *from, const char *to)
{
    size_t i;

    for (i = 0; i < ch->n_items; i++) {
        if (strcmp(ch->items[i].field, field) == 0) {
            break;
        }
    }
    if (i == CHANGE_MAX_ITEMS) {
        return; /* more fields than anyone writes back: the rest are not ours */
    }
    ch->items[i].field = field;
    ch->items[i].from = from ? from : "";
    ch->items[i].to = to ? to : "";
    if (i == ch->n_items) {
        ch->n_items++;
    }
}

void change_set(struct change *ch, const char *field, const char *from, const char *to)
{
    change_put(ch, field, from, to);
}

enum mlc_rc change_begin(struct change *ch, const char *body, size_t len, const char *what,
                         struct mlc_errbuf *err)
{
    memset(ch, 0, sizeof(*ch));
    ch->root = mlc_json_parse(body, len, what, err);
    if (ch->root == NULL) {
        return MLC_E_PROTO;
    }
    if (!cJSON_IsObject(ch->root)) {
        mlc_errf(err, "%s: not a JSON object", what);
        return MLC_E_PROTO;
    }
    return MLC_OK;
}

void change_finish(struct change *ch)
{
    if (ch->record != NULL && ch->record[0] == '\0') {
        ch->record = NULL;
    }
    if (ch->author == NULL) {
        ch->author = "";
    }
    if (ch->event_id == NULL) {
        ch->event_id = "";
    }
}

long long change_ms(const cJSON *obj, const char *member)
{
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(obj, member);

    return cJSON_IsNumber(ts) && ts->valuedouble > 0 && ts->valuedouble < 1e15
               ? (long long)ts->valuedouble
               : 0;
}

enum mlc_rc change_from_json(const char *body, size_t len, struct change *ch,
                             struct mlc_errbuf *err)
{
    const cJSON *it;
    enum mlc_rc rc = change_begin(ch, body, len, "polled change", err);

    if (rc != MLC_OK) {
        return rc;
    }
    ch->event = mlc_json_str(ch->root, "event");
    ch->record = mlc_json_str(ch->root, "record");
    ch->author = mlc_json_str(ch->root, "author");
    ch->at_ms = change_ms(ch->root, "at_ms");
    ch->markers = mlc_json_arr(ch->root, "markers");
    cJSON_ArrayForEach(it, mlc_json_arr(ch->root, "items"))
    {
        const char *field = mlc_json_str(it, "field");
        if (field != NULL && field[0] != '\0') {
            change_put(ch, field, mlc_json_str(it, "from"), mlc_json_str(it, "to"));
        }
    }
    change_finish(ch);
    return MLC_OK;
}

/* -------------------------------------------------------------- templates */

int conn_tmpl_check(const char *t, const char *const *names, const char *path,
                    struct mlc_errbuf *err)
{
    for (const char *p = t; *p; p++) {
        const char *end;
        size_t n;
        int known = 0;

        if (*p != '{') {
            continue;
        }
        if (p[1] == '{') {
            p++;
            continue;
        }
        end = strchr(p, '}');
        if (end == NULL) {
            mlc_errf(err, "%s: '{' without '}' in \"%s\" (write {{ for a literal brace)", path, t);
            return -1;
        }
        n = (size_t)(end - p - 1);
        for (const char *const *k = names; k && *k && !known; k++) {
            known = strlen(*k) == n && strncmp(*k, p + 1, n) == 0;
        }
        if (!known) {
            struct mlc_buf b = MLC_BUF_INIT;
            for (const char *const *k = names; k && *k; k++) {
                mlc_buf_addf(&b, "%s{%s}", k == names ? "" : ", ", *k);
            }
            mlc_errf(err, "%s: unknown placeholder {%.*s} (known here: %s)", path,
                     (int)(n > 40 ? 40 : n), p + 1, b.len ? b.ptr : "none");
            mlc_buf_release(&b);
            return -1;
        }
        p = end;
    }
    return 0;
}

char *conn_tmpl_expand(const char *t, const struct wb_var *vars, size_t nv)
{
    struct mlc_buf b = MLC_BUF_INIT;

    for (const char *p = t; *p; p++) {
        const char *end, *val = NULL;
        size_t n;

        if (*p != '{') {
            mlc_buf_add(&b, p, 1);
            continue;
        }
        if (p[1] == '{') {
            mlc_buf_add(&b, "{", 1);
            p++;
            continue;
        }
        end = strchr(p, '}');
        if (end == NULL) {
            mlc_buf_adds(&b, p); /* checks reject this; keep it visible if it ever happens */
            break;
        }
        n = (size_t)(end - p - 1);
        for (size_t i = 0; i < nv && val == NULL; i++) {
            if (strlen(vars[i].name) == n && strncmp(vars[i].name, p + 1, n) == 0) {
                val = vars[i].value;
            }
        }
        mlc_buf_adds(&b, val ? val : "");
        p = end;
    }
    {
        char *out = mlc_buf_detach(&b);
        return out ? out : mlc_xstrdup("");
    }
}

void conn_log_write(const struct conn *c, int lvl, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mlc_log_write(lvl, c->ops ? c->ops->name : "conn", 0, "[%s:%s] %s", c->ops ? c->ops->name : "?",
                  c->name ? c->name : "?", msg);
}

const char *conn_kind_type(const char *kind, char *out, size_t n)
{
    size_t len = strlen(kind);

    snprintf(out, n, "%s", kind);
    if (len > 5 && len < n && strcmp(out + len - 5, "-poll") == 0) {
        out[len - 5] = '\0';
    }
    return out;
}

const char *conn_type(const struct conn *c)
{
    return c->ops->name;
}

const char *conn_setting(const struct conn *c, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->conf, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

enum mlc_rc conn_ping(struct conn *c)
{
    return c->ops->ping ? c->ops->ping(c) : MLC_OK;
}

long long conn_cursor_time(struct conn *c, const char *cursor)
{
    if (cursor == NULL || c->ops->cursor_time == NULL) {
        return -1;
    }
    return c->ops->cursor_time(c, cursor);
}
