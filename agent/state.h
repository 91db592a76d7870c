/* SPDX-License-Identifier: Apache-2.0
 * state: the agent's single source of truth (SQLite, WAL): cursors, the
 * ledger of synced records, the outbox, dead letters, the audit trail, runs,
 * and sealed secrets. Each thread opens its own handle.
 */
#ifndef MLC_STATE_H
#define MLC_STATE_H

#include <stddef.h>
#include <sqlite3.h>
#include "shared/mlc_err.h"

#define STATE_SCHEMA_VERSION 4

struct state {
    sqlite3 *db;
    char *path;
    /* prepared statements, created on first use */
    sqlite3_stmt *st[64];
    int durable; /* the open transaction commits with synchronous=FULL */
};

enum mlc_rc state_open(struct state **out, const char *path, struct mlc_errbuf *err);
void state_close(struct state *s);

enum mlc_rc state_begin(struct state *s, struct mlc_errbuf *err);
/* A transaction whose commit survives power loss too (synchronous=FULL for
 * this one commit): for "in flight" marks made before a remote write. */
enum mlc_rc state_begin_durable(struct state *s, struct mlc_errbuf *err);
enum mlc_rc state_commit(struct state *s, struct mlc_errbuf *err);
void state_rollback(struct state *s);

/* cursor: *out heap or NULL when the flow never ran */
enum mlc_rc state_cursor_get(struct state *s, const char *flow, char **out, struct mlc_errbuf *err);
enum mlc_rc state_cursor_set(struct state *s, const char *flow, const char *value,
                             struct mlc_errbuf *err);

struct ledger_row {
    char hash[65];
    char target_key[64];
    char target_id[32];
    char audit_id[33];
    long long wb_at; /* target event time (ms) of the newest change written back; read only */
    const char *lists; /* put: list values the agent set (JSON), NULL = keep; get: not read */
    long long updated_ms; /* get: when the row last changed */
};
/* MLC_E_NOTFOUND when the source key was never delivered. */
enum mlc_rc state_ledger_get(struct state *s, const char *flow, const char *key,
                             struct ledger_row *out, struct mlc_errbuf *err);
enum mlc_rc state_ledger_put(struct state *s, const char *flow, const char *key,
                             const struct ledger_row *row, struct mlc_errbuf *err);
/* Reverse lookup: the source key (into key, n bytes) and ledger row of the
 * record the flow delivered as target_key. MLC_E_NOTFOUND when none. */
enum mlc_rc state_ledger_by_target(struct state *s, const char *flow, const char *target_key,
                                   char *key, size_t n, struct ledger_row *out,
                                   struct mlc_errbuf *err);
/* Remember that a target change of time at_ms was written back to (flow, key)
 * (wb_at only grows). */
enum mlc_rc state_ledger_wb_mark(struct state *s, const char *flow, const char *key, long long at_ms,
                                 struct mlc_errbuf *err);
/* The list values (JSON object, heap) the agent set last on (flow, key)'s
 * target record; *out NULL when unknown. */
enum mlc_rc state_ledger_lists(struct state *s, const char *flow, const char *key, char **out,
                               struct mlc_errbuf *err);
/* Target keys of the newest ledger rows created before before_ms (what the
 * target had before an unanswered create was sent); heap strings. */
int state_ledger_keys_before(struct state *s, const char *flow, long long before_ms, char **ids,
                             int max);

/* outbox */
struct outbox_row {
    long long id;
    char *source_key;
    char *payload;    /* mapped record JSON */
    char hash[65];
    char audit_id[33];
    char op[8];       /* "create" or "update" */
    char target_key[64];
    char state[10];   /* "pending" or "inflight" */
    char sent_hash[65];
    int attempts;
    long long sent_at; /* unix seconds the row was last marked in flight, 0 = never */
};
void outbox_row_release(struct outbox_row *r);

/* Insert or replace the pending version of (flow, key). */
enum mlc_rc state_outbox_put(struct state *s, const char *flow, const char *key, const char *op,
                             const char *target_key, const char *payload, const char *hash,
                             const char *audit_id, struct mlc_errbuf *err);
/* Queue a record first seen in this run straight in flight (attempts 1,
 * sent_at 0): the run sends it in its own batches. *id is the new row's id.
 * Before a batch of such rows leaves, state_sent_mark(flow, highest id) is
 * made durable: after a crash, an in-flight row with sent_at 0 and an id at
 * or below the mark may have reached the target (sent at the mark's time);
 * one above it never left. */
enum mlc_rc state_outbox_put_fresh(struct state *s, const char *flow, const char *key,
                                   const char *op, const char *target_key, const char *payload,
                                   const char *hash, const char *audit_id, long long *id,
                                   struct mlc_errbuf *err);
/* Give an in-flight row that has no send time yet the current time. */
enum mlc_rc state_outbox_stamp_sent(struct state *s, long long id, struct mlc_errbuf *err);
enum mlc_rc state_sent_mark(struct state *s, const char *flow, long long id, struct mlc_errbuf *err);
/* The flow's sent mark: highest id and unix seconds; both 0 when none. */
void state_sent_get(struct state *s, const char *flow, long long *id, long long *at);
/* Up to max rows due now, of state st ("pending"/"inflight"), op (NULL = any).
 * Returns the count; rows must be released. */
int state_outbox_next(struct state *s, const char *flow, const char *st, const char *op,
                      struct outbox_row *rows, int max, long long now);
/* The same, for rows with id > after (to walk rows that stay in place). */
int state_outbox_next_after(struct state *s, const char *flow, const char *st, const char *op,
                            long long after, struct outbox_row *rows, int max, long long now);
enum mlc_rc state_outbox_mark_inflight(struct state *s, long long id, const char *sent_hash,
                                       struct mlc_errbuf *err);
enum mlc_rc state_outbox_resolve(struct state *s, long long id, const char *op,
                                 const char *target_key, struct mlc_errbuf *err);
enum mlc_rc state_outbox_retry_later(struct state *s, long long id, long long next_at,
                                     const char *error, struct mlc_errbuf *err);
enum mlc_rc state_outbox_delete(struct state *s, long long id, struct mlc_errbuf *err);
/* Make every waiting retry of a flow due now (a new run tries them); count or -1. */
long long state_outbox_due_now(struct state *s, const char *flow);
long long state_outbox_count(struct state *s, const char *flow);
/* Existing pending hash for (flow,key) into hash (65 bytes); 0 when found. */
int state_outbox_hash(struct state *s, const char *flow, const char *key, char *hash);

/* dead letters */
enum mlc_rc state_dead_put(struct state *s, const char *flow, const char *key, const char *payload,
                           const char *hash, const char *error, const char *audit_id, int attempts,
                           struct mlc_errbuf *err);
/* 0 when a dead letter for (flow,key) has this hash. */
int state_dead_has(struct state *s, const char *flow, const char *key, const char *hash);
long long state_dead_count(struct state *s, const char *flow);
/* Move dead letters (flow NULL = all) back to the outbox; returns count or -1. */
long long state_dead_replay(struct state *s, const char *flow, struct mlc_errbuf *err);
/* The same for one dead letter by id: 1 moved, 0 no such id, -1 error. */
long long state_dead_replay_id(struct state *s, long long id, struct mlc_errbuf *err);

/* audit trail */
enum mlc_rc state_audit(struct state *s, const char *flow, const char *key, const char *audit_id,
                        const char *action, const char *target_key, const char *detail);

/* runs */
struct run_stats {
    long read, created, updated, unchanged, failed, adopted, pending, warnings;
};
long long state_run_start(struct state *s, const char *flow);
void state_run_finish(struct state *s, long long run_id, const struct run_stats *rs,
                      const char *status, const char *error);

/* inbox: relay deliveries for the write-back direction (implemented with
 * writeback.c). seq is the relay's sequence number; local deliveries (the
 * Jira poll fallback, `mlc-agent inbox add`) use negative seqs. */
struct inbox_row {
    long long seq;
    char kind[16];       /* "jira", "zoho", "jira-poll" */
    char *ext_id;
    char *body;
    long long received_ms; /* when the relay stored it */
    long long stored_ms;   /* when the agent stored it */
    int attempts;
    char state[10];        /* "pending" or "inflight" (the source call may have happened) */
    long long sent_ms;     /* when it was last marked in flight */
};
void inbox_row_release(struct inbox_row *r);
/* Durable on return (even across power loss: the relay forgets a delivery
 * once acked) when called outside a transaction; inside one, the caller's
 * commit decides. ext_id may be NULL (no de-duplication by id). *fresh = 1
 * when stored now, 0 when this seq or (kind, ext_id) was already in the inbox
 * (a re-sent delivery). Safe from any thread on its own handle. */
enum mlc_rc state_inbox_put(struct state *s, long long seq, const char *kind, const char *ext_id,
                            const char *body, long long received_ms, int *fresh,
                            struct mlc_errbuf *err);
/* One relay delivery for state_inbox_put_many(); the strings need no NUL
 * (they may point into a tunnel frame). */
struct inbox_new {
    long long seq;
    const char *kind, *ext_id, *body;
    size_t kind_len, ext_id_len, body_len;
    long long received_ms;
    int fresh; /* out: 1 stored now, 0 already there (by seq or by kind and ext_id) */
};
/* Store n relay deliveries in one transaction that waits for the disk
 * (synchronous=FULL, as state_inbox_put alone): all durable on MLC_OK,
 * none stored otherwise. Call outside a transaction. */
enum mlc_rc state_inbox_put_many(struct state *s, struct inbox_new *rows, size_t n,
                                 struct mlc_errbuf *err);
/* Pending (not yet applied) rows due now, oldest first; count, rows released by caller. */
int state_inbox_next(struct state *s, struct inbox_row *rows, int max, long long now_ms);
/* Mark a row in flight (commit it durably before calling the source). */
enum mlc_rc state_inbox_mark_inflight(struct state *s, long long seq, struct mlc_errbuf *err);
/* Outcome of one row: "applied", "ignored", "echo", "dead", with detail. */
enum mlc_rc state_inbox_done(struct state *s, long long seq, const char *outcome,
                             const char *detail, struct mlc_errbuf *err);
/* Try the row again at next_ms; it keeps its state (an in-flight row is
 * read back before it is called again). */
enum mlc_rc state_inbox_retry_later(struct state *s, long long seq, long long next_ms,
                                    const char *error, struct mlc_errbuf *err);
/* The same, setting the state (st "pending": known not to have reached the source). */
enum mlc_rc state_inbox_retry(struct state *s, long long seq, long long next_ms, const char *st,
                              const char *error, struct mlc_errbuf *err);
long long state_inbox_pending(struct state *s);
/* Rows in one state ("pending", "applied", "ignored", "echo", "dead"); -1 on error. */
long long state_inbox_count(struct state *s, const char *st);
/* Make every pending row due now (an operator's `inbox apply`); count or -1. */
long long state_inbox_retry_now(struct state *s);
/* Forget finished rows (applied, ignored, echo; dead ones stay) done before
 * before_ms; count or -1. */
long long state_inbox_prune(struct state *s, long long before_ms);
/* Next negative seq for a local delivery. */
long long state_inbox_local_seq(struct state *s);

/* echo suppression: values the agent itself wrote lately. One value per
 * (system, record, field): a newer write replaces the older one, so a value
 * the agent wrote and then overwrote no longer counts as its own. */
enum mlc_rc state_echo_put(struct state *s, const char *system, const char *record,
                           const char *field, const char *value, long long expires_ms,
                           struct mlc_errbuf *err);
/* 1 when (system, record, field, value) was written by the agent and has not expired. */
int state_echo_has(struct state *s, const char *system, const char *record, const char *field,
                   const char *value, long long now_ms);

/* small key/value of agent-side state (webhook registrations, poll cursors);
 * get: *out heap, or NULL (and MLC_OK) when the key was never set */
enum mlc_rc state_kv_get(struct state *s, const char *key, char **out, struct mlc_errbuf *err);
enum mlc_rc state_kv_set(struct state *s, const char *key, const char *value,
                         struct mlc_errbuf *err);

/* secrets */
enum mlc_rc state_secret_get(struct state *s, const char *name, void **blob, int *len,
                             struct mlc_errbuf *err);
enum mlc_rc state_secret_put(struct state *s, const char *name, const void *blob, int len,
                             struct mlc_errbuf *err);

/* ---- read-only views (the status page, /metrics, `mlc-agent status`) ---- */

/* The newest run of a flow. */
struct run_row {
    long long started_at;  /* unix seconds */
    long long finished_at; /* unix seconds, -1 while it runs */
    char status[16];       /* "running", "ok", "error", ... */
    long long created, updated, unchanged, failed, adopted, pending, warnings;
    char *error;           /* heap, NULL when the run has no error */
};
/* MLC_E_NOTFOUND when the flow never ran; release the row with run_row_release. */
enum mlc_rc state_run_latest(struct state *s, const char *flow, struct run_row *out,
                             struct mlc_errbuf *err);
void run_row_release(struct run_row *r);
/* When the flow's newest successful run ended (unix seconds), -1 when none did. */
long long state_run_last_ok_at(struct state *s, const char *flow);
/* Every run of a flow added up (all zero when it never ran). */
struct run_sums {
    long long created, updated, unchanged, failed, adopted, warnings;
};
void state_run_totals(struct state *s, const char *flow, struct run_sums *out);
/* Records created or updated per hour, by every flow: records[i] for the hour
 * starting at since + i * 3600 (since a multiple of 3600), i < hours. A run
 * counts in the hour it ended, or started while it still runs. */
void state_run_records_hourly(struct state *s, long long since, int hours, long long *records);
/* Records of a flow in the ledger (delivered at least once). */
long long state_ledger_count(struct state *s, const char *flow);
/* Creates of a flow sent without an answer and not found at the target yet. */
long long state_outbox_unanswered(struct state *s, const char *flow);
/* When the oldest undelivered record of a flow was queued (unix seconds), -1 when none. */
long long state_outbox_oldest_at(struct state *s, const char *flow);
/* When the oldest pending inbox row was stored (ms), -1 when none. */
long long state_inbox_oldest_pending_ms(struct state *s);

/* Audit entries and dead letters, lent to a callback one at a time (the
 * strings live until it returns; a NULL column reads as ""). */
struct audit_entry {
    long long id;
    long long at; /* unix seconds */
    const char *flow, *source_key, *target_key, *audit_id, *action, *detail;
};
/* The newest limit entries (1 to 500, else 50), all of them when q is NULL or
 * "", else those whose source key, target key or audit ID is q or whose key
 * starts with q. Returns how many were passed to fn. */
int state_audit_recent(struct state *s, const char *q, int limit,
                       void (*fn)(void *ctx, const struct audit_entry *e), void *ctx);
struct dead_entry {
    long long id;
    long long at; /* unix seconds */
    int attempts;
    const char *flow, *source_key, *error, *audit_id;
};
/* Dead letters of a flow (NULL = every flow), oldest first, at most limit
 * (<= 0: 50). Returns how many were passed to fn. */
int state_dead_list(struct state *s, const char *flow, int limit,
                    void (*fn)(void *ctx, const struct dead_entry *e), void *ctx);
/* The flow of dead letter id into flow (n bytes); MLC_E_NOTFOUND when there
 * is no such dead letter. */
enum mlc_rc state_dead_flow(struct state *s, long long id, char *flow, size_t n);

long long state_now(void); /* unix seconds */
long long state_now_ms(void);

#endif
