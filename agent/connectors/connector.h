/* SPDX-License-Identifier: Apache-2.0
 * connector: the small interface every external system implements.
 * A connector knows its wire protocol, auth and paging; it knows nothing of
 * flows, the ledger or mapping. It classifies outcomes and never sleeps or
 * retries beyond one re-authentication (transient retries live in mlc_http).
 */
#ifndef MLC_CONNECTOR_H
#define MLC_CONNECTOR_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_log.h"

struct mlc_buf;

enum {
    CONN_SOURCE = 1u << 0,    /* poll() */
    CONN_WRITEBACK = 1u << 1, /* write_back() */
    CONN_TARGET = 1u << 2,    /* prepare(), apply(), find() */
    CONN_UPSERT = 1u << 3,    /* apply() is idempotent by marker: a repeated create
                               * cannot double a record, so no in-flight/find() path */
};

/* Secrets, as the agent hands them to connectors (no connector includes
 * agent code). resolve: a config reference ("secret:NAME", "${VAR}", or a
 * literal); get/put: a named secret (put is durable when it returns MLC_OK,
 * e.g. a rotated refresh token stored before it is used). *out is a heap copy
 * the caller wipes and frees; every value is registered with the log redactor. */
struct vault {
    void *ctx;
    enum mlc_rc (*resolve)(void *ctx, const char *ref, char **out, struct mlc_errbuf *err);
    enum mlc_rc (*get)(void *ctx, const char *name, char **out, struct mlc_errbuf *err);
    enum mlc_rc (*put)(void *ctx, const char *name, const char *value, struct mlc_errbuf *err);
};

/* One configured system instance ("systems.<name>" in the config). */
struct conn {
    const struct connector *ops;
    char *name;                   /* config name, e.g. "jde" */
    const cJSON *conf;            /* its config object (lent by the agent) */
    const struct vault *vault;    /* resolve "secret:NAME", persist rotated tokens (may be NULL) */
    struct mlc_http *http;        /* owned by the agent; one per conn */
    const volatile int *stop;     /* nonzero when a shutdown was requested */
    struct mlc_errbuf err;        /* details of the last failure */
    unsigned long api_calls;      /* logical API calls made (for stats/bench) */
    unsigned long token_refreshes; /* new sessions / access tokens obtained */
    void *priv;                   /* connector state, built by open() */
};

/* ---- source side ---- */

/* One record read from a source. key is the stable source key ("100001");
 * data holds the raw columns (aliases without the table prefix, e.g. "DOCO").
 * cursor is the watermark *at* this record, stored after the page commits. */
struct record {
    char *key;
    cJSON *data;
    char *cursor;
    char *error; /* non-NULL: this row could not be read (dead-letter it) */
};

struct page {
    struct record *recs;
    size_t n, cap;
    int more; /* 1: call poll() again with first = 0 for the next page */
};

struct poll_req {
    const cJSON *source; /* the flow's "source" object: table, columns, filter, ... */
    const char *cursor;  /* last committed watermark, NULL = from the beginning */
    int first;           /* 1: start a new query from cursor; 0: continue paging */
};

void record_release(struct record *r); /* frees its members; r itself may be on the stack */
void page_release(struct page *p);
struct record *page_push(struct page *p); /* zeroed slot, aborts on OOM */

/* ---- target side ---- */

/* One item to create (target_key == NULL) or update. fields is the mapped
 * record (target field name -> value); marker is our source-key marker that
 * find() can search for after a crash; audit_id travels with the record. */
struct tgt_item {
    const char *marker;
    const char *source_key; /* the record's source key as read (may be NULL) */
    const char *target_key;
    const cJSON *fields;
    const char *audit_id;
    const char *hash;  /* content hash of fields; the target keeps it with the record
                        * (so find() can tell whether it already holds this content) */
    const cJSON *prev; /* list values the agent set last time ({"labels": [...]}), or
                        * NULL when unknown: only those may be removed from the record */
};

struct batch {
    const cJSON *target; /* the flow's "target" object: project, issue type, ... */
    struct tgt_item *items;
    size_t n;
    int dry_run;         /* 1: check and convert each item (read-only calls), write nothing */
    const char *flow;    /* the flow's name (e.g. for a load log at the target) */
};

/* Per-item outcome of apply(). */
struct result {
    enum mlc_rc rc;
    char target_key[64]; /* e.g. "MFG-12" */
    char target_id[32];  /* e.g. "10012" */
    char err[512];       /* root cause when rc != MLC_OK */
    char warn[256];      /* a value left out of the record, and why ("" = none) */
    char *lists;         /* heap JSON: the list values set ({"labels": [...]}), or NULL */
    int unchanged;       /* rc == MLC_OK and the target already held this content: it
                          * wrote nothing (counted as unchanged, not created/updated) */
};

/* What find() learned of one marker at the target. */
struct tgt_found {
    int found;
    int absent; /* not found, and the target's answer was consistent: it is not there */
    char target_key[64];
    char target_id[32];
    char hash[65]; /* the content hash stored with the agent's last write, "" = unknown */
};

/* ---- change notifications and write-back (the way back) ---- */

/* One field of a change: the values as the system's API shows them on the
 * record (a status or priority name, an ISO date "2026-12-10"), "" = empty. */
struct change_item {
    const char *field; /* the system's field name, e.g. "status", "duedate", "priority" */
    const char *from;
    const char *to;
};

#define CHANGE_MAX_ITEMS 16

/* A change of one record, from a system's notification or a polled change,
 * in generic terms. Strings are lent from root (freed by change_release). */
struct change {
    cJSON *root;
    const char *event;    /* the system's event name, for messages ("jira:issue_updated") */
    const char *event_id; /* the system's delivery or event id, "" = none */
    const char *record;   /* the record's key at that system, e.g. "MFG-12"; NULL = not a record event */
    const char *author;   /* account that made it, "" = unknown */
    long long at_ms;      /* when it was made (ms since the epoch), 0 = unknown */
    const cJSON *markers; /* array of strings the record carries (labels), or NULL */
    struct change_item items[CHANGE_MAX_ITEMS]; /* the last change per field */
    size_t n_items;
};
void change_release(struct change *ch);
/* Polled changes travel as this generic JSON (the inbox kind "TYPE-poll"):
 * {"event":"poll","record":"MFG-12","author":"","at_ms":0,"markers":[..],
 *  "items":[{"field":"status","from":"To Do","to":"Done"}]} */
cJSON *change_to_json(const char *record, const char *author, long long at_ms,
                      const cJSON *markers, const struct change_item *items, size_t n);
enum mlc_rc change_from_json(const char *body, size_t len, struct change *out,
                             struct mlc_errbuf *err);
/* For event_parse(): parse body into ch->root (what names it in messages)
 * and require a JSON object (MLC_E_PROTO otherwise); the caller then reads
 * its members and calls change_finish(), which sets the empty defaults
 * (author and event_id "", an empty record NULL). */
enum mlc_rc change_begin(struct change *ch, const char *body, size_t len, const char *what,
                         struct mlc_errbuf *err);
void change_finish(struct change *ch);
/* A time member in ms since the epoch (a positive number below 1e15), else 0. */
long long change_ms(const cJSON *obj, const char *member);
const struct change_item *change_item_find(const struct change *ch, const char *field);
/* For event_parse(): set the item of a field (the last one set wins); the
 * strings must live as long as ch->root. */
void change_set(struct change *ch, const char *field, const char *from, const char *to);

/* Placeholder values for a write-back's templates: {key}, {value}, {code},
 * {status}, {issue}, {audit_id}, and the source field names being set. */
struct wb_var {
    const char *name;
    const char *value;
};

/* A write-back: set fields of one source record. plan is what the
 * connector's wb_plan() compiled from the flow's writeback config for this
 * action (JD Edwards: the orchestration and its inputs). */
struct wb_write {
    const void *plan;
    const char *source_key;   /* e.g. a work order number */
    const struct wb_var *set; /* source field -> new value, in the source's own format */
    size_t n_set;
    const struct wb_var *vars; /* template values (see struct wb_var) */
    size_t n_vars;
    const char *audit_id;
    const cJSON *source;      /* the flow's "source" object (where the record lives), or NULL */
};

/* Target -> agent change notifications (the write-back direction). */
struct watch_req {
    const char *url;         /* the tenant's relay webhook URL, e.g. https://relay/hooks/<type>/t1 */
    const char *hook_secret; /* admin-webhook HMAC secret the agent may register, or NULL */
    long long now_ms;        /* the agent's clock (the connector may prefer the server's) */
};

/* What prepare() is told of the flow's mapping: "fields" is an object of
 * every mapped target field -> array of the values the mapping can produce
 * (a value map's values), or null when the value is free. */
struct prep_info {
    const cJSON *fields;
};

/* Totals of one run of a flow, for end_run(). */
struct run_totals {
    long created, updated, unchanged, failed, pending;
    const char *flow; /* the flow's name */
};

struct connector {
    const char *name;            /* the `type` value in config, e.g. "jde" */
    unsigned caps;               /* CONN_SOURCE | CONN_WRITEBACK | CONN_TARGET | CONN_UPSERT */
    const struct conf_key *keys; /* settings it accepts; unknown keys are an error */
    const char *const *allow;    /* extra members it reads itself (may be NULL) */
    /* Target: most items apply() takes at once (e.g. 50 for a bulk create API).
     * The flow's batch_size may be smaller, never larger. */
    unsigned max_batch;

    enum mlc_rc (*open)(struct conn *c); /* read c->conf, build c->priv; no network */
    void (*close)(struct conn *c);       /* must accept a half-open conn */
    /* Reach the system and authenticate; one-line reason in c->err. */
    enum mlc_rc (*ping)(struct conn *c);

    /* ---- source ---- */
    enum mlc_rc (*poll)(struct conn *c, const struct poll_req *rq, struct page *out);
    /* Read one record by its source key, where the flow's "source" object
     * says: id-only notifications, and read-before-write for exactly-once
     * write-back. out->data = NULL when there is no such record (MLC_OK);
     * out->cursor, when set, is the record's watermark (its change time, see
     * cursor_time). Optional. */
    enum mlc_rc (*fetch)(struct conn *c, const cJSON *source, const char *key, struct record *out);
    /* The time a cursor stands for, ms since the epoch (UTC), or -1 when it
     * has none (for lag on the status page, and newest_wins). c gives the
     * system's own clock facts (a server's time zone). Optional. */
    long long (*cursor_time)(struct conn *c, const char *cursor);

    /* ---- write-back (source side) ---- */
    /* Config members an action of the flow's "writeback" object may carry for
     * this connector (JD Edwards: "orchestration", "inputs"). */
    const char *const *wb_keys;
    /* Compile one action (an object holding wb_keys) at config path; vars
     * lists the placeholders its templates may use. NULL with err set. */
    void *(*wb_plan)(const cJSON *action, const char *path, const char *const *vars,
                     struct mlc_errbuf *err);
    void (*wb_plan_free)(void *plan);
    /* One line naming what a plan calls, for messages ("orchestration X"). */
    void (*wb_describe)(const void *plan, char *out, size_t n);
    /* Make the change. MLC_OK: done. After a transient failure (or a crash)
     * the outcome is unknown: the core settles it with fetch() first. */
    enum mlc_rc (*write_back)(struct conn *c, const struct wb_write *w);

    /* ---- target ---- */
    /* Told once, when the configuration is read (no network), which values
     * each mapped field of a flow into this target can take, e.g. every
     * project a mapping may pick, so that lookups and change polls cover
     * them all. Optional; the message names the setting. */
    enum mlc_rc (*bind)(struct conn *c, const cJSON *target, const struct prep_info *pi);
    /* Validate the flow's target options against the live system at start-up
     * (custom field IDs, project, the values a mapping can produce); the
     * message names the bad ID. */
    enum mlc_rc (*prepare)(struct conn *c, const cJSON *target, const struct prep_info *pi);
    /* Sets out[i] for every item; returns MLC_OK when each item has its own
     * verdict, or a whole-batch error, after which the caller treats the
     * outcome of every item as unknown (creates are looked up with find(),
     * unless the target has CONN_UPSERT). in->n <= max_batch. The pipeline
     * never mixes creates and updates in one batch. */
    enum mlc_rc (*apply)(struct conn *c, const struct batch *in, struct result *out);
    /* Look up markers[0..n) at the target; out[i] says whether and where each
     * one is. The target's search may lag its writes, so a marker not found
     * is no proof that no record carries it; out[i].absent says when it is.
     * before: target keys of records the agent created before the markers'
     * records were sent ("" alone: nothing was created before; NULL: no such
     * bound, as before creating new records): a target that numbers its records
     * may read every record after them consistently and so set absent.
     * Not called for a CONN_UPSERT target. */
    enum mlc_rc (*find)(struct conn *c, const cJSON *target, const char *const *markers, size_t n,
                        const char *const *before, size_t n_before, struct tgt_found *out);
    /* After a run of a flow into this target wrote something (e.g. refresh
     * a BI tool's cache after a load). Optional. */
    enum mlc_rc (*end_run)(struct conn *c, const cJSON *target, const struct run_totals *t);
    /* Create (or complete) what the flows' targets[0..n) need at the target
     * before the first run (`mlc-agent warehouse init`): tables, indexes,
     * grants; idempotent, never drops anything. The statements go to *script
     * (for a DBA to read or run); print_only: only that, nothing is run.
     * Optional. */
    enum mlc_rc (*init_targets)(struct conn *c, const cJSON *const *targets, size_t n,
                                int print_only, struct mlc_buf *script);
    /* A system named by a flow's "after_load" (a BI tool told that a load
     * changed rows): the members such an entry may carry besides "system"
     * (NULL-terminated; NULL = the connector cannot be an after_load system).
     * After a run that wrote rows the core calls end_run() with the entry as
     * target; it is called again after later runs until it succeeds. */
    const char *const *after_keys;
    /* Check one such entry when the configuration is read (no network):
     * required members, their values; the message names path. Optional. */
    enum mlc_rc (*after_check)(const cJSON *entry, const char *path, struct mlc_errbuf *err);

    /* ---- change notifications from the target (optional) ---- */
    /* Parse one notification body (network input) into a change. MLC_E_PROTO
     * with a message when it is not one; ch->record = NULL for an event that
     * concerns no record. Must not need a conn (fuzzed alone). */
    enum mlc_rc (*event_parse)(const char *body, size_t len, struct change *ch,
                               struct mlc_errbuf *err);
    /* Make sure the target notifies req->url of changes to the flow's records
     * (Jira: register, refresh before expiry, or re-register a vanished dynamic
     * webhook; or find/register an admin webhook). state is a JSON object the
     * agent persists between calls and the connector owns the contents of:
     * it must set "mode" to "dynamic", "admin" or "poll" ("poll": no webhook
     * can be used, the agent falls back to changes()). *next_ms: when to call
     * again (agent clock). */
    enum mlc_rc (*watch)(struct conn *c, const cJSON *target, const struct watch_req *req,
                         cJSON *state, long long *next_ms);
    /* Fallback without notifications: records changed since *cursor (NULL =
     * start now: set the cursor, return nothing), appended to events as
     * change_to_json() objects, with an item only for a field whose value
     * differs from the last one state knows. *cursor is replaced (heap) when
     * it advances. */
    enum mlc_rc (*changes)(struct conn *c, const cJSON *target, char **cursor, cJSON *state,
                           cJSON *events);
};

/* Settings every system accepts besides its connector's own (read by the
 * agent, not the connector): "credential_expires": "YYYY-MM-DD", when the
 * API token / password / consent runs out, for the status page. */
extern const char *const conn_common_allow[];

/* registry.c */
const struct connector *connector_find(const char *name);
const struct connector *const *connector_all(size_t *n);
/* Add a connector the registry does not list (tests: a system the core has
 * never heard of). At most 8; not thread-safe (call before agent_load). */
void connector_register(const struct connector *c);

/* Helpers for connectors (connector.c). */
enum mlc_rc conn_secret(struct conn *c, const char *ref, char **out); /* resolve a CONF_SECRET */
/* A named secret from the vault (MLC_E_NOTFOUND when absent, or no vault),
 * and storing one durably (rotated tokens: before they are used). */
enum mlc_rc conn_secret_get(struct conn *c, const char *name, char **out);
enum mlc_rc conn_secret_put(struct conn *c, const char *name, const char *value);

/* Templates with {placeholders} ("{{" is a literal '{'), for write-back
 * inputs: check that every placeholder is in names (message for path in
 * err), and expand one with vars (unknown names expand to ""; heap string). */
int conn_tmpl_check(const char *tmpl, const char *const *names, const char *path,
                    struct mlc_errbuf *err);
char *conn_tmpl_expand(const char *tmpl, const struct wb_var *vars, size_t n);
/* The connector type a change delivery comes from: its kind is "TYPE" (the
 * system's own notifications) or "TYPE-poll" (changes the agent polled).
 * Written into out (n bytes) and returned. */
const char *conn_kind_type(const char *kind, char *out, size_t n);
void conn_log_write(const struct conn *c, int lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define conn_log(c, lvl, ...)                       \
    do {                                            \
        if ((lvl) <= mlc_log_level) {               \
            conn_log_write((c), (lvl), __VA_ARGS__); \
        }                                           \
    } while (0)

/* Read-only views of a system for the core (status page, commands), so it
 * need not reach into struct conn or its ops (connector.c). */
/* The connector type name, the `type` value in config (e.g. "ifs"). Lent. */
const char *conn_type(const struct conn *c);
/* The string member key of the system's config object, or NULL when it is
 * absent or not a string. Lent for as long as the config. */
const char *conn_setting(const struct conn *c, const char *key);
/* Reach the system and authenticate (ops->ping); MLC_OK when the connector
 * has no ping. The one-line reason of a failure is in c->err. */
enum mlc_rc conn_ping(struct conn *c);
/* The time a cursor of this system stands for (ops->cursor_time), ms since
 * the epoch, or -1 when it has none or the connector cannot tell. */
long long conn_cursor_time(struct conn *c, const char *cursor);

#endif
