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

enum {
    CONN_SOURCE = 1u << 0,    /* poll() */
    CONN_WRITEBACK = 1u << 1, /* write_back() */
    CONN_TARGET = 1u << 2,    /* prepare(), apply(), find() */
};

struct secret_store; /* agent/secrets.h */

/* One configured system instance ("systems.<name>" in the config). */
struct conn {
    const struct connector *ops;
    char *name;                   /* config name, e.g. "jde" */
    const cJSON *conf;            /* its config object (lent by the agent) */
    struct secret_store *secrets; /* resolve "secret:NAME", persist rotated tokens */
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

void page_release(struct page *p);
struct record *page_push(struct page *p); /* zeroed slot, aborts on OOM */

/* ---- target side ---- */

/* One item to create (target_key == NULL) or update. fields is the mapped
 * record (target field name -> value); marker is our source-key marker that
 * find() can search for after a crash; audit_id travels with the record. */
struct tgt_item {
    const char *marker;
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
};

/* Per-item outcome of apply(). */
struct result {
    enum mlc_rc rc;
    char target_key[64]; /* e.g. "MFG-12" */
    char target_id[32];  /* e.g. "10012" */
    char err[512];       /* root cause when rc != MLC_OK */
    char warn[256];      /* a value left out of the record, and why ("" = none) */
    char *lists;         /* heap JSON: the list values set ({"labels": [...]}), or NULL */
};

/* What find() learned of one marker at the target. */
struct tgt_found {
    int found;
    int absent; /* not found, and the target's answer was consistent: it is not there */
    char target_key[64];
    char target_id[32];
    char hash[65]; /* the content hash stored with the agent's last write, "" = unknown */
};

/* A write-back command (relay delivery → source system): call the named
 * operation (JD Edwards: an orchestration) with string inputs. */
struct wb_command {
    const char *action;     /* "orchestrate" */
    const char *source_key; /* e.g. work order number, for messages */
    const char *name;       /* orchestration name, e.g. "MLC_UpdateWOStatus" */
    const cJSON *inputs;    /* object: input name -> string value */
    const char *audit_id;
};

/* Target -> agent change notifications (the write-back direction). */
struct watch_req {
    const char *url;         /* the tenant's relay webhook URL, e.g. https://relay/hooks/jira/t1 */
    const char *hook_secret; /* admin-webhook HMAC secret the agent may register, or NULL */
    long long now_ms;        /* the agent's clock (the connector may prefer the server's) */
};

struct connector {
    const char *name;            /* the `type` value in config, e.g. "jde" */
    unsigned caps;               /* CONN_SOURCE | CONN_WRITEBACK | CONN_TARGET */
    const struct conf_key *keys; /* settings it accepts; unknown keys are an error */
    const char *const *allow;    /* extra members it reads itself (may be NULL) */

    enum mlc_rc (*open)(struct conn *c); /* read c->conf, build c->priv; no network */
    void (*close)(struct conn *c);       /* must accept a half-open conn */
    /* Reach the system and authenticate; one-line reason in c->err. */
    enum mlc_rc (*ping)(struct conn *c);
    enum mlc_rc (*poll)(struct conn *c, const struct poll_req *rq, struct page *out);
    enum mlc_rc (*write_back)(struct conn *c, const struct wb_command *cmd);
    /* Read one record by its source key, where the flow's "source" object
     * says (read-before-write: an in-flight write-back is settled by reading
     * the record back). *out: its columns as poll() gives them, or NULL when
     * there is no such record (MLC_OK). Optional. */
    enum mlc_rc (*fetch)(struct conn *c, const cJSON *source, const char *key, cJSON **out);
    /* Validate the flow's target options against the live system at start-up
     * (custom field IDs, project, priorities); message names the bad ID. */
    enum mlc_rc (*prepare)(struct conn *c, const cJSON *target);
    /* Sets out[i] for every item; returns MLC_OK when each item has its own
     * verdict, or a whole-batch error, after which the caller treats the
     * outcome of every item as unknown (creates are looked up with find()).
     * The pipeline never mixes creates and updates in one batch. */
    enum mlc_rc (*apply)(struct conn *c, const struct batch *in, struct result *out);
    /* Look up markers[0..n) at the target; out[i] says whether and where each
     * one is. The target's search may lag its writes, so a marker not found
     * is no proof that no record carries it; out[i].absent says when it is.
     * before: target keys of records the agent created before the markers'
     * records were sent ("" alone: nothing was created before; NULL: no such
     * bound, as before creating new records): a target that numbers its records
     * may read every record after them consistently and so set absent. */
    enum mlc_rc (*find)(struct conn *c, const cJSON *target, const char *const *markers, size_t n,
                        const char *const *before, size_t n_before, struct tgt_found *out);

    /* ---- change notifications (optional; NULL when unsupported) ---- */
    /* Make sure the target notifies req->url of changes to the flow's records
     * (Jira: register, refresh before expiry, or re-register a vanished dynamic
     * webhook; or find/register an admin webhook). state is a JSON object the
     * agent persists between calls and the connector owns the contents of:
     * it must set "mode" to "dynamic", "admin" or "poll" ("poll": no webhook
     * can be used, the agent falls back to changes()). *next_ms: when to call
     * again (agent clock). */
    enum mlc_rc (*watch)(struct conn *c, const cJSON *target, const struct watch_req *req,
                         cJSON *state, long long *next_ms);
    /* Fallback without webhooks: records changed since *cursor (NULL = start
     * now: set the cursor, return nothing), appended to events as bodies shaped
     * like the target's webhook deliveries (Jira: {"webhookEvent":
     * "jira:issue_updated","issue":{...},"changelog":{"items":[...]}}, with a
     * status item only when the status differs from state's last known one).
     * *cursor is replaced (heap) when it advances. */
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

/* Helpers for connectors (connector.c). */
enum mlc_rc conn_secret(struct conn *c, const char *ref, char **out); /* resolve a CONF_SECRET */
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

#endif
