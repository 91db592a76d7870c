/* SPDX-License-Identifier: Apache-2.0
 * memconn: a test connector ("memtest") that is a source, a target and a
 * write-back system at once, entirely in memory. The core has never heard of
 * it: a test registers it with connector_register() and names it in a
 * config's "systems" like any other type; it is reached only through the
 * registry and struct connector.
 *
 *   source:     mem.src[] (key -> cJSON columns); every change takes the
 *               next value of a counter; a record's cursor is "VER@MS" (its
 *               counter value and its change time, ms). poll() pages
 *               mem.page_size records with VER above the cursor.
 *   write-back: wb_keys {"action"} (a template of {placeholders});
 *               write_back() sets wb_write.set on the record (a new VER)
 *               and records the call in mem.wb[].
 *   target:     mem.tgt[] keyed T-1, T-2 ...; apply() creates/updates,
 *               find() looks a marker up (in memory: not found = absent).
 *               max_batch 3. "memupsert" is the same with CONN_UPSERT: a
 *               create whose marker exists updates that record.
 *   events:     {"rec":"T-1","author":"..","at":123,"labels":[..],
 *                "changes":[{"f":"status","from":"a","to":"b"}]}
 *   faults:     mem.wb_fault / mem.apply_fault: the call numbered at (from
 *               1) fails with rc; lost = 1: it takes effect first (a lost
 *               answer). mem.apply_partial: that apply call writes the
 *               records, but each created one comes back with
 *               mem.partial_rc and its key (what the target does after its
 *               write failed). mem.store_pending: the
 *               target keeps the hash "pending" with what it writes, as a
 *               target does whose write is not complete yet.
 */
#ifndef MLC_TEST_MEMCONN_H
#define MLC_TEST_MEMCONN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/connector.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"

#define MEM_UNUSED __attribute__((unused))
#define MEM_MAX 64
#define MEM_CALLS 32

struct mem_src {
    char key[32];
    cJSON *data;
    long long ver;
    long long at_ms; /* change time (cursor_time) */
};

struct mem_tgt {
    char key[16];
    char marker[128];
    char hash[65];
    cJSON *fields;
};

struct mem_wb_call {
    char action[256]; /* the expanded "action" template */
    char key[32];
    char set[512];    /* wb_write.set as a JSON object */
    char audit_id[40];
};

struct mem_fault {
    int at;          /* 1-based call number, 0 = none */
    enum mlc_rc rc;
    int lost;        /* the call takes effect, then rc is returned */
};

static struct {
    struct mem_src src[MEM_MAX];
    int n_src;
    long long counter;
    int page_size;
    struct mem_tgt tgt[MEM_MAX];
    int n_tgt;
    int polls, fetches, applies, finds, wb_calls;
    int apply_sizes[MEM_CALLS];
    struct mem_wb_call wb[MEM_CALLS];
    struct mem_fault wb_fault[4], apply_fault[4];
    int apply_partial; /* the apply call numbered so (from 1): see partial above */
    enum mlc_rc partial_rc;
    int store_pending;
} mem;

static void mem_reset(void)
{
    for (int i = 0; i < mem.n_src; i++) {
        cJSON_Delete(mem.src[i].data);
    }
    for (int i = 0; i < mem.n_tgt; i++) {
        cJSON_Delete(mem.tgt[i].fields);
    }
    memset(&mem, 0, sizeof(mem));
    mem.page_size = 4;
}

static struct mem_src *mem_src_find(const char *key)
{
    for (int i = 0; i < mem.n_src; i++) {
        if (strcmp(mem.src[i].key, key) == 0) {
            return &mem.src[i];
        }
    }
    return NULL;
}

/* Create or replace a source record from JSON text, changed at at_ms. */
MEM_UNUSED static void mem_src_put(const char *key, const char *json, long long at_ms)
{
    struct mem_src *r = mem_src_find(key);

    if (r == NULL) {
        r = &mem.src[mem.n_src++];
        snprintf(r->key, sizeof(r->key), "%s", key);
    }
    cJSON_Delete(r->data);
    r->data = cJSON_Parse(json);
    r->ver = ++mem.counter;
    r->at_ms = at_ms;
}

/* Set one column of a source record (a change at the source). */
MEM_UNUSED static void mem_src_set(const char *key, const char *col, const char *val,
                                   long long at_ms)
{
    struct mem_src *r = mem_src_find(key);

    if (r == NULL) {
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(r->data, col);
    mlc_json_xadd_str(r->data, col, val);
    r->ver = ++mem.counter;
    r->at_ms = at_ms;
}

MEM_UNUSED static const char *mem_src_col(const char *key, const char *col)
{
    struct mem_src *r = mem_src_find(key);

    return r ? mlc_json_str(r->data, col) : NULL;
}

static struct mem_tgt *mem_tgt_find(const char *key)
{
    for (int i = 0; i < mem.n_tgt; i++) {
        if (strcmp(mem.tgt[i].key, key) == 0) {
            return &mem.tgt[i];
        }
    }
    return NULL;
}

/* A target record's field as text ("" when absent). */
MEM_UNUSED static const char *mem_tgt_field(const char *key, const char *field)
{
    struct mem_tgt *t = mem_tgt_find(key);
    const char *s = t ? mlc_json_str(t->fields, field) : NULL;

    return s ? s : "";
}

/* The fault for call number n of a list, or NULL. */
static const struct mem_fault *mem_fault_at(const struct mem_fault *f, int n)
{
    for (int i = 0; i < 4; i++) {
        if (f[i].at == n) {
            return &f[i];
        }
    }
    return NULL;
}

/* ------------------------------------------------------------- lifecycle */

static enum mlc_rc mem_open(struct conn *c)
{
    c->priv = &mem;
    return MLC_OK;
}

static void mem_close(struct conn *c)
{
    c->priv = NULL;
}

static enum mlc_rc mem_ping(struct conn *c)
{
    (void)c;
    return MLC_OK;
}

/* ---------------------------------------------------------------- source */

static long long mem_cursor_ver(const char *cursor)
{
    return cursor ? strtoll(cursor, NULL, 10) : 0;
}

static long long mem_cursor_time(struct conn *c, const char *cursor)
{
    (void)c;
    const char *at = cursor ? strchr(cursor, '@') : NULL;
    long long ms = at ? strtoll(at + 1, NULL, 10) : 0;

    return ms > 0 ? ms : -1;
}

static void mem_fill(struct record *out, const struct mem_src *r)
{
    out->key = mlc_xstrdup(r->key);
    out->data = cJSON_Duplicate(r->data, 1);
    out->cursor = mlc_xasprintf("%lld@%lld", r->ver, r->at_ms);
}

static enum mlc_rc mem_poll(struct conn *c, const struct poll_req *rq, struct page *out)
{
    long long after = mem_cursor_ver(rq->cursor);
    int taken = 0;

    (void)c;
    mem.polls++;
    /* records in VER order: repeatedly the smallest VER above the last one */
    for (;;) {
        const struct mem_src *next = NULL;
        for (int i = 0; i < mem.n_src; i++) {
            if (mem.src[i].ver > after && (next == NULL || mem.src[i].ver < next->ver)) {
                next = &mem.src[i];
            }
        }
        if (next == NULL) {
            out->more = 0;
            return MLC_OK;
        }
        if (taken == mem.page_size) {
            out->more = 1;
            return MLC_OK;
        }
        mem_fill(page_push(out), next);
        after = next->ver;
        taken++;
    }
}

static enum mlc_rc mem_fetch(struct conn *c, const cJSON *source, const char *key,
                             struct record *out)
{
    const struct mem_src *r = mem_src_find(key);

    (void)c;
    (void)source;
    mem.fetches++;
    memset(out, 0, sizeof(*out));
    if (r != NULL) {
        mem_fill(out, r);
    }
    return MLC_OK;
}

/* ------------------------------------------------------------ write-back */

static const char *const mem_wb_keys[] = { "action", NULL };

struct mem_plan {
    char *action;
};

static void mem_plan_free(void *p)
{
    struct mem_plan *pl = p;

    if (pl != NULL) {
        free(pl->action);
        free(pl);
    }
}

static void *mem_plan_new(const cJSON *action, const char *path, const char *const *vars,
                          struct mlc_errbuf *err)
{
    const char *a = mlc_json_str(action, "action");
    struct mem_plan *pl;
    char sub[400];

    snprintf(sub, sizeof(sub), "%s.action", path);
    if (a == NULL || a[0] == '\0') {
        mlc_errf(err, "%s: required: what the memtest system does, e.g. \"set {key}\"", sub);
        return NULL;
    }
    if (conn_tmpl_check(a, vars, sub, err) != 0) {
        return NULL;
    }
    pl = mlc_xcalloc(1, sizeof(*pl));
    pl->action = mlc_xstrdup(a);
    return pl;
}

static void mem_plan_describe(const void *p, char *out, size_t n)
{
    const struct mem_plan *pl = p;

    snprintf(out, n, "memtest action %s", pl ? pl->action : "?");
}

static enum mlc_rc mem_write_back(struct conn *c, const struct wb_write *w)
{
    const struct mem_plan *pl = w->plan;
    const struct mem_fault *f;
    struct mem_wb_call *call;
    struct mem_src *r;
    char *act;
    cJSON *set;

    mem.wb_calls++;
    f = mem_fault_at(mem.wb_fault, mem.wb_calls);
    if (f != NULL && !f->lost) {
        mlc_errf(&c->err, "memtest write of %s failed (%s)", w->source_key, mlc_strerror(f->rc));
        return f->rc;
    }
    r = mem_src_find(w->source_key);
    if (r == NULL) {
        mlc_errf(&c->err, "memtest: no record %s", w->source_key);
        return MLC_E_REJECTED;
    }
    act = conn_tmpl_expand(pl->action, w->vars, w->n_vars);
    set = mlc_json_xobj();
    for (size_t i = 0; i < w->n_set; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(r->data, w->set[i].name);
        mlc_json_xadd_str(r->data, w->set[i].name, w->set[i].value);
        mlc_json_xadd_str(set, w->set[i].name, w->set[i].value);
    }
    r->ver = ++mem.counter;
    if (mem.wb_calls <= MEM_CALLS) {
        char *js = mlc_json_print(set);
        call = &mem.wb[mem.wb_calls - 1];
        snprintf(call->action, sizeof(call->action), "%s", act);
        snprintf(call->key, sizeof(call->key), "%s", w->source_key);
        snprintf(call->set, sizeof(call->set), "%s", js);
        snprintf(call->audit_id, sizeof(call->audit_id), "%s", w->audit_id ? w->audit_id : "");
        free(js);
    }
    free(act);
    cJSON_Delete(set);
    if (f != NULL) {
        mlc_errf(&c->err, "memtest write of %s: answer lost (%s)", w->source_key,
                 mlc_strerror(f->rc));
        return f->rc;
    }
    return MLC_OK;
}

/* ---------------------------------------------------------------- target */

static struct mem_tgt *mem_tgt_by_marker(const char *marker)
{
    for (int i = 0; i < mem.n_tgt; i++) {
        if (strcmp(mem.tgt[i].marker, marker) == 0) {
            return &mem.tgt[i];
        }
    }
    return NULL;
}

static void mem_tgt_write(struct mem_tgt *t, const struct tgt_item *it)
{
    cJSON_Delete(t->fields);
    t->fields = cJSON_Duplicate(it->fields, 1);
    snprintf(t->marker, sizeof(t->marker), "%s", it->marker ? it->marker : "");
    snprintf(t->hash, sizeof(t->hash), "%s", mem.store_pending ? "pending" : it->hash ? it->hash : "");
}

static enum mlc_rc mem_apply_items(struct conn *c, const struct batch *in, struct result *out)
{
    int upsert = (c->ops->caps & CONN_UPSERT) != 0;

    for (size_t i = 0; i < in->n; i++) {
        const struct tgt_item *it = &in->items[i];
        struct mem_tgt *t = NULL;

        memset(&out[i], 0, sizeof(out[i]));
        if (it->target_key != NULL) {
            t = mem_tgt_find(it->target_key);
            if (t == NULL) {
                out[i].rc = MLC_E_NOTFOUND;
                snprintf(out[i].err, sizeof(out[i].err), "memtest: no record %s", it->target_key);
                continue;
            }
        } else if (upsert && it->marker != NULL) {
            t = mem_tgt_by_marker(it->marker);
        }
        if (t == NULL) {
            if (mem.n_tgt == MEM_MAX) {
                out[i].rc = MLC_E_REJECTED;
                snprintf(out[i].err, sizeof(out[i].err), "memtest: target full");
                continue;
            }
            t = &mem.tgt[mem.n_tgt++];
            snprintf(t->key, sizeof(t->key), "T-%d", mem.n_tgt);
        }
        if (!in->dry_run) {
            mem_tgt_write(t, it);
        }
        out[i].rc = MLC_OK;
        snprintf(out[i].target_key, sizeof(out[i].target_key), "%s", t->key);
        snprintf(out[i].target_id, sizeof(out[i].target_id), "%s", t->key + 2);
    }
    return MLC_OK;
}

static enum mlc_rc mem_apply(struct conn *c, const struct batch *in, struct result *out)
{
    const struct mem_fault *f;
    enum mlc_rc rc;

    mem.applies++;
    if (mem.applies <= MEM_CALLS) {
        mem.apply_sizes[mem.applies - 1] = (int)in->n;
    }
    if (in->n > c->ops->max_batch) {
        mlc_errf(&c->err, "memtest: %zu items in one batch (at most %u)", in->n, c->ops->max_batch);
        return MLC_E_INVAL;
    }
    f = mem_fault_at(mem.apply_fault, mem.applies);
    if (f != NULL && !f->lost) {
        mlc_errf(&c->err, "memtest apply failed (%s)", mlc_strerror(f->rc));
        return f->rc;
    }
    rc = mem_apply_items(c, in, out);
    if (mem.apply_partial == mem.applies) {
        for (size_t i = 0; i < in->n; i++) {
            if (out[i].rc == MLC_OK && in->items[i].target_key == NULL) {
                out[i].rc = mem.partial_rc;
                snprintf(out[i].err, sizeof(out[i].err), "memtest: %s created, its follow-up failed (%s)",
                         out[i].target_key, mlc_strerror(mem.partial_rc));
            }
        }
        return rc;
    }
    if (f != NULL) {
        mlc_errf(&c->err, "memtest apply: answer lost (%s)", mlc_strerror(f->rc));
        return f->rc;
    }
    return rc;
}

static enum mlc_rc mem_find(struct conn *c, const cJSON *target, const char *const *markers,
                            size_t n, const char *const *before, size_t n_before,
                            struct tgt_found *out)
{
    (void)c;
    (void)target;
    (void)before;
    (void)n_before;
    mem.finds++;
    for (size_t i = 0; i < n; i++) {
        const struct mem_tgt *t = mem_tgt_by_marker(markers[i]);
        memset(&out[i], 0, sizeof(out[i]));
        out[i].found = t != NULL;
        out[i].absent = t == NULL; /* memory has no search lag */
        if (t != NULL) {
            snprintf(out[i].target_key, sizeof(out[i].target_key), "%s", t->key);
            snprintf(out[i].target_id, sizeof(out[i].target_id), "%s", t->key + 2);
            snprintf(out[i].hash, sizeof(out[i].hash), "%s", t->hash);
        }
    }
    return MLC_OK;
}

/* ---------------------------------------------------------------- events */

static enum mlc_rc mem_event_parse(const char *body, size_t len, struct change *ch,
                                   struct mlc_errbuf *err)
{
    const cJSON *it;
    enum mlc_rc rc = change_begin(ch, body, len, "memtest event", err);

    if (rc != MLC_OK) {
        return rc;
    }
    ch->event = "memtest:change";
    ch->record = mlc_json_str(ch->root, "rec");
    ch->author = mlc_json_str(ch->root, "author");
    ch->at_ms = change_ms(ch->root, "at");
    ch->markers = mlc_json_arr(ch->root, "labels");
    cJSON_ArrayForEach(it, mlc_json_arr(ch->root, "changes"))
    {
        const char *f = mlc_json_str(it, "f");
        if (f != NULL && f[0] != '\0') {
            change_set(ch, f, mlc_json_str(it, "from"), mlc_json_str(it, "to"));
        }
    }
    change_finish(ch);
    return MLC_OK;
}

#define MEMCONN_OPS                          \
    .keys = NULL, .allow = NULL,             \
    .max_batch = 3,                          \
    .open = mem_open, .close = mem_close,    \
    .ping = mem_ping,                        \
    .poll = mem_poll, .fetch = mem_fetch,    \
    .cursor_time = mem_cursor_time,          \
    .wb_keys = mem_wb_keys,                  \
    .wb_plan = mem_plan_new,                 \
    .wb_plan_free = mem_plan_free,           \
    .wb_describe = mem_plan_describe,        \
    .write_back = mem_write_back,            \
    .apply = mem_apply, .find = mem_find,    \
    .event_parse = mem_event_parse

static const struct connector memconn = {
    .name = "memtest",
    .caps = CONN_SOURCE | CONN_TARGET | CONN_WRITEBACK,
    MEMCONN_OPS,
};

MEM_UNUSED static const struct connector memupsert = {
    .name = "memupsert",
    .caps = CONN_SOURCE | CONN_TARGET | CONN_WRITEBACK | CONN_UPSERT,
    MEMCONN_OPS,
};

#endif
