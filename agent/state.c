/* SPDX-License-Identifier: Apache-2.0
 * state: SQLite state database (WAL). Statements live in state_sql.h.
 *
 * Durability: WAL with synchronous=NORMAL survives a process crash (kill -9)
 * with every committed transaction; only an OS crash or power loss may drop
 * the newest commits, which the ledger/marker recovery then repeats safely.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "agent/state.h"
#include "agent/state_sql.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_log.h"

_Static_assert(SQ__COUNT <= sizeof(((struct state *)0)->st) / sizeof(sqlite3_stmt *),
               "struct state has too few statement slots");

long long state_now(void)
{
    return (long long)time(NULL);
}

long long state_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum mlc_rc exec(struct state *s, const char *sql, struct mlc_errbuf *err)
{
    char *msg = NULL;

    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        mlc_errf(err, "state database '%s': %s", s->path, msg ? msg : "error");
        sqlite3_free(msg);
        return MLC_E_IO;
    }
    return MLC_OK;
}

static sqlite3_stmt *stmt(struct state *s, enum state_stmt which)
{
    if (s->st[which] == NULL) {
        if (sqlite3_prepare_v3(s->db, state_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
                               &s->st[which], NULL) != SQLITE_OK) {
            MLC_BUG("cannot prepare statement %d: %s", which, sqlite3_errmsg(s->db));
        }
    }
    sqlite3_reset(s->st[which]);
    sqlite3_clear_bindings(s->st[which]);
    return s->st[which];
}

static void bind_text(sqlite3_stmt *q, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(q, name);

    if (i == 0) {
        MLC_BUG("statement has no parameter %s", name);
    }
    if (v == NULL) {
        sqlite3_bind_null(q, i);
    } else {
        sqlite3_bind_text(q, i, v, -1, SQLITE_TRANSIENT);
    }
}

/* The same without a copy, for the hot path: v must stay valid until the
 * statement is reset, which every caller of it does before it returns. */
static void bind_text_lent(sqlite3_stmt *q, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(q, name);

    if (i == 0) {
        MLC_BUG("statement has no parameter %s", name);
    }
    if (v == NULL) {
        sqlite3_bind_null(q, i);
    } else {
        sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
    }
}

static void bind_int(sqlite3_stmt *q, const char *name, long long v)
{
    int i = sqlite3_bind_parameter_index(q, name);

    if (i == 0) {
        MLC_BUG("statement has no parameter %s", name);
    }
    sqlite3_bind_int64(q, i, v);
}

static enum mlc_rc step_done(struct state *s, sqlite3_stmt *q, struct mlc_errbuf *err)
{
    int rc = sqlite3_step(q);

    sqlite3_reset(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_OK;
}

static void copy_col(sqlite3_stmt *q, int col, char *dst, size_t n)
{
    const unsigned char *v = sqlite3_column_text(q, col);

    snprintf(dst, n, "%s", v ? (const char *)v : "");
}

enum mlc_rc state_open(struct state **out, const char *path, struct mlc_errbuf *err)
{
    struct state *s = mlc_xcalloc(1, sizeof(*s));
    sqlite3_stmt *q = NULL;
    int version = 0;
    enum mlc_rc rc;

    s->path = mlc_xstrdup(path);
    if (path[0] != '\0' && path[0] != ':') {
        /* The file holds the audit trail and the encrypted secrets: create it
         * 0600 whatever the umask. SQLite gives -wal and -shm the mode of the
         * database file, so they follow. O_EXCL, and no fd on a file that
         * exists: closing any fd of a database file drops the POSIX locks
         * this process's other SQLite connections hold on it. */
        struct stat sb;
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
        } else if (errno != EEXIST) {
            mlc_errf(err, "cannot create state database '%s': %s (check the directory exists and is writable)",
                     path, strerror(errno));
            state_close(s);
            return MLC_E_IO;
        } else if (stat(path, &sb) == 0 && (sb.st_mode & 077) != 0 && sb.st_uid == geteuid()) {
            chmod(path, sb.st_mode & 0700); /* an older agent made it world-readable */
        }
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        mlc_errf(err, "cannot open state database '%s': %s (check the directory exists and is writable)",
                 path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        state_close(s);
        return MLC_E_IO;
    }
    sqlite3_busy_timeout(s->db, 10000);
    rc = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err);
    if (rc != MLC_OK) {
        state_close(s);
        return rc;
    }
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        version = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    if (version > STATE_SCHEMA_VERSION) {
        mlc_errf(err, "state database '%s' has schema version %d, newer than this agent knows (%d): "
                 "upgrade the agent", path, version, STATE_SCHEMA_VERSION);
        state_close(s);
        return MLC_E_INVAL;
    }
    for (int v = version; v < STATE_SCHEMA_VERSION; v++) {
        char pragma[64];
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d;", v + 1);
        if ((rc = exec(s, "BEGIN IMMEDIATE", err)) != MLC_OK ||
            (rc = exec(s, state_migrations[v], err)) != MLC_OK ||
            (rc = exec(s, pragma, err)) != MLC_OK || (rc = exec(s, "COMMIT", err)) != MLC_OK) {
            exec(s, "ROLLBACK", NULL);
            state_close(s);
            return rc;
        }
        mlc_info("state database '%s' migrated to schema version %d", path, v + 1);
    }
    *out = s;
    return MLC_OK;
}

void state_close(struct state *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < sizeof(s->st) / sizeof(s->st[0]); i++) {
        sqlite3_finalize(s->st[i]);
    }
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

/* BEGIN, COMMIT and the synchronous switch run once per transaction: they
 * are prepared once like every other statement instead of parsed each time. */
static enum mlc_rc run(struct state *s, enum state_stmt which, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, which);
    int rc = sqlite3_step(q);

    sqlite3_reset(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        mlc_errf(err, "state database '%s': %s failed: %s", s->path, state_sql[which],
                 sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_OK;
}

enum mlc_rc state_begin(struct state *s, struct mlc_errbuf *err)
{
    return run(s, SQ_BEGIN, err);
}

enum mlc_rc state_begin_durable(struct state *s, struct mlc_errbuf *err)
{
    enum mlc_rc rc = run(s, SQ_SYNC_FULL, err);

    if (rc != MLC_OK) {
        return rc;
    }
    s->durable = 1;
    rc = run(s, SQ_BEGIN, err);
    if (rc != MLC_OK) {
        run(s, SQ_SYNC_NORMAL, NULL);
        s->durable = 0;
    }
    return rc;
}

static void end_durable(struct state *s)
{
    if (s->durable) {
        s->durable = 0;
        run(s, SQ_SYNC_NORMAL, NULL);
    }
}

enum mlc_rc state_commit(struct state *s, struct mlc_errbuf *err)
{
    enum mlc_rc rc = run(s, SQ_COMMIT, err);

    if (rc == MLC_OK) {
        end_durable(s);
    }
    return rc;
}

void state_rollback(struct state *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        run(s, SQ_ROLLBACK, NULL);
    }
    end_durable(s);
}

/* One optional text value from a bound statement: *out heap or NULL (no row). */
static enum mlc_rc step_text(struct state *s, sqlite3_stmt *q, char **out, struct mlc_errbuf *err)
{
    int rc = sqlite3_step(q);

    *out = NULL;
    if (rc == SQLITE_ROW) {
        *out = mlc_xstrdup((const char *)sqlite3_column_text(q, 0));
    } else if (rc != SQLITE_DONE) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        sqlite3_reset(q);
        return MLC_E_IO;
    }
    sqlite3_reset(q);
    return MLC_OK;
}

enum mlc_rc state_cursor_get(struct state *s, const char *flow, char **out, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_CURSOR_GET);

    bind_text(q, ":flow", flow);
    return step_text(s, q, out, err);
}

enum mlc_rc state_cursor_set(struct state *s, const char *flow, const char *value,
                             struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_CURSOR_SET);

    bind_text(q, ":flow", flow);
    bind_text(q, ":value", value);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

enum mlc_rc state_ledger_get(struct state *s, const char *flow, const char *key,
                             struct ledger_row *out, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_GET);
    int rc;

    bind_text_lent(q, ":flow", flow);
    bind_text_lent(q, ":key", key);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        copy_col(q, 0, out->hash, sizeof(out->hash));
        copy_col(q, 1, out->target_key, sizeof(out->target_key));
        copy_col(q, 2, out->target_id, sizeof(out->target_id));
        copy_col(q, 3, out->audit_id, sizeof(out->audit_id));
        out->wb_at = sqlite3_column_int64(q, 4);
        out->updated_ms = sqlite3_column_int64(q, 6);
        sqlite3_reset(q);
        return MLC_OK;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_E_NOTFOUND;
}

enum mlc_rc state_ledger_put(struct state *s, const char *flow, const char *key,
                             const struct ledger_row *row, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_PUT);

    bind_text_lent(q, ":flow", flow);
    bind_text_lent(q, ":key", key);
    bind_text_lent(q, ":hash", row->hash);
    bind_text_lent(q, ":tkey", row->target_key);
    bind_text_lent(q, ":tid", row->target_id);
    bind_text_lent(q, ":aid", row->audit_id);
    bind_text_lent(q, ":lists", row->lists);
    bind_int(q, ":now", state_now_ms());
    return step_done(s, q, err);
}

enum mlc_rc state_ledger_lists(struct state *s, const char *flow, const char *key, char **out,
                               struct mlc_errbuf *err)
{
    /* its own statement: the hot-path ledger read leaves the lists out */
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_LISTS);
    int rc;

    *out = NULL;
    bind_text(q, ":flow", flow);
    bind_text(q, ":key", key);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) {
        *out = mlc_xstrdup((const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_OK;
}

int state_ledger_keys_before(struct state *s, const char *flow, long long before_ms, char **ids,
                             int max)
{
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_RECENT);
    int n = 0;

    bind_text(q, ":flow", flow);
    bind_int(q, ":before", before_ms);
    bind_int(q, ":max", max);
    while (n < max && sqlite3_step(q) == SQLITE_ROW) {
        ids[n++] = mlc_xstrdup((const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_reset(q);
    return n;
}

void outbox_row_release(struct outbox_row *r)
{
    if (r != NULL) {
        free(r->source_key);
        free(r->payload);
        r->source_key = r->payload = NULL;
    }
}

enum mlc_rc state_outbox_put(struct state *s, const char *flow, const char *key, const char *op,
                             const char *target_key, const char *payload, const char *hash,
                             const char *audit_id, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_PUT);

    bind_text(q, ":flow", flow);
    bind_text(q, ":key", key);
    bind_text(q, ":op", op);
    bind_text(q, ":tkey", target_key ? target_key : "");
    bind_text(q, ":payload", payload);
    bind_text(q, ":hash", hash);
    bind_text(q, ":aid", audit_id);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

enum mlc_rc state_outbox_put_fresh(struct state *s, const char *flow, const char *key,
                                   const char *op, const char *target_key, const char *payload,
                                   const char *hash, const char *audit_id, long long *id,
                                   struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_PUT_FRESH);
    enum mlc_rc rc;

    bind_text_lent(q, ":flow", flow);
    bind_text_lent(q, ":key", key);
    bind_text_lent(q, ":op", op);
    bind_text_lent(q, ":tkey", target_key ? target_key : "");
    bind_text_lent(q, ":payload", payload);
    bind_text_lent(q, ":hash", hash);
    bind_text_lent(q, ":aid", audit_id);
    bind_int(q, ":now", state_now());
    rc = step_done(s, q, err);
    *id = rc == MLC_OK ? sqlite3_last_insert_rowid(s->db) : 0;
    return rc;
}

enum mlc_rc state_outbox_stamp_sent(struct state *s, long long id, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_SENT_AT);

    bind_int(q, ":id", id);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

/* The sent mark lives in state_kv as "<id> <unix seconds>". */
static void sent_mark_key(const char *flow, char *out, size_t n)
{
    snprintf(out, n, "outbox.sent.%s", flow);
}

enum mlc_rc state_sent_mark(struct state *s, const char *flow, long long id, struct mlc_errbuf *err)
{
    char key[160], value[48];

    sent_mark_key(flow, key, sizeof(key));
    snprintf(value, sizeof(value), "%lld %lld", id, state_now());
    return state_kv_set(s, key, value, err);
}

void state_sent_get(struct state *s, const char *flow, long long *id, long long *at)
{
    char key[160], *v = NULL;
    struct mlc_errbuf ignore = { 0 };

    *id = *at = 0;
    sent_mark_key(flow, key, sizeof(key));
    if (state_kv_get(s, key, &v, &ignore) == MLC_OK && v != NULL &&
        sscanf(v, "%lld %lld", id, at) != 2) {
        *id = *at = 0;
    }
    free(v);
}

int state_outbox_next(struct state *s, const char *flow, const char *st, const char *op,
                      struct outbox_row *rows, int max, long long now)
{
    return state_outbox_next_after(s, flow, st, op, 0, rows, max, now);
}

int state_outbox_next_after(struct state *s, const char *flow, const char *st, const char *op,
                            long long after, struct outbox_row *rows, int max, long long now)
{
    sqlite3_stmt *q = stmt(s, op ? SQ_OUTBOX_NEXT_OP : SQ_OUTBOX_NEXT);
    int n = 0;

    bind_text(q, ":flow", flow);
    bind_text(q, ":state", st);
    if (op) {
        bind_text(q, ":op", op);
    }
    bind_int(q, ":now", now);
    bind_int(q, ":after", after);
    bind_int(q, ":max", max);
    while (n < max && sqlite3_step(q) == SQLITE_ROW) {
        struct outbox_row *r = &rows[n++];
        memset(r, 0, sizeof(*r));
        r->id = sqlite3_column_int64(q, 0);
        r->source_key = mlc_xstrdup((const char *)sqlite3_column_text(q, 1));
        r->payload = mlc_xstrdup((const char *)sqlite3_column_text(q, 2));
        copy_col(q, 3, r->hash, sizeof(r->hash));
        copy_col(q, 4, r->audit_id, sizeof(r->audit_id));
        copy_col(q, 5, r->op, sizeof(r->op));
        copy_col(q, 6, r->target_key, sizeof(r->target_key));
        copy_col(q, 7, r->state, sizeof(r->state));
        copy_col(q, 8, r->sent_hash, sizeof(r->sent_hash));
        r->attempts = sqlite3_column_int(q, 9);
        r->sent_at = sqlite3_column_int64(q, 10);
    }
    sqlite3_reset(q);
    return n;
}

enum mlc_rc state_outbox_mark_inflight(struct state *s, long long id, const char *sent_hash,
                                       struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_INFLIGHT);

    bind_int(q, ":id", id);
    bind_text(q, ":hash", sent_hash);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

enum mlc_rc state_outbox_resolve(struct state *s, long long id, const char *op,
                                 const char *target_key, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_RESOLVE);

    bind_int(q, ":id", id);
    bind_text(q, ":op", op);
    bind_text(q, ":tkey", target_key ? target_key : "");
    return step_done(s, q, err);
}

enum mlc_rc state_outbox_retry_later(struct state *s, long long id, long long next_at,
                                     const char *error, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_RETRY);

    bind_int(q, ":id", id);
    bind_int(q, ":next", next_at);
    bind_text(q, ":err", error);
    return step_done(s, q, err);
}

enum mlc_rc state_outbox_delete(struct state *s, long long id, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_DELETE);

    bind_int(q, ":id", id);
    return step_done(s, q, err);
}

long long state_outbox_due_now(struct state *s, const char *flow)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_DUE_NOW);

    bind_text(q, ":flow", flow);
    if (step_done(s, q, NULL) != MLC_OK) {
        return -1;
    }
    return sqlite3_changes(s->db);
}

static long long count_of(struct state *s, enum state_stmt which, const char *flow)
{
    sqlite3_stmt *q = stmt(s, which);
    long long n = -1;

    bind_text(q, ":flow", flow);
    if (sqlite3_step(q) == SQLITE_ROW) {
        n = sqlite3_column_int64(q, 0);
    }
    sqlite3_reset(q);
    return n;
}

long long state_outbox_count(struct state *s, const char *flow)
{
    return count_of(s, SQ_OUTBOX_COUNT, flow);
}

int state_outbox_hash(struct state *s, const char *flow, const char *key, char *hash)
{
    sqlite3_stmt *q = stmt(s, SQ_OUTBOX_HASH);
    int found = -1;

    bind_text_lent(q, ":flow", flow);
    bind_text_lent(q, ":key", key);
    if (sqlite3_step(q) == SQLITE_ROW) {
        copy_col(q, 0, hash, 65);
        found = 0;
    }
    sqlite3_reset(q);
    return found;
}

enum mlc_rc state_dead_put(struct state *s, const char *flow, const char *key, const char *payload,
                           const char *hash, const char *error, const char *audit_id, int attempts,
                           struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_DEAD_PUT);

    bind_text(q, ":flow", flow);
    bind_text(q, ":key", key);
    bind_text(q, ":payload", payload);
    bind_text(q, ":hash", hash);
    bind_text(q, ":err", error);
    bind_text(q, ":aid", audit_id);
    bind_int(q, ":attempts", attempts);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

int state_dead_has(struct state *s, const char *flow, const char *key, const char *hash)
{
    sqlite3_stmt *q = stmt(s, SQ_DEAD_HAS);
    int found;

    bind_text(q, ":flow", flow);
    bind_text(q, ":key", key);
    bind_text(q, ":hash", hash);
    found = sqlite3_step(q) == SQLITE_ROW ? 0 : -1;
    sqlite3_reset(q);
    return found;
}

long long state_dead_count(struct state *s, const char *flow)
{
    return count_of(s, SQ_DEAD_COUNT, flow);
}

static long long dead_replay(struct state *s, const char *flow, long long id, struct mlc_errbuf *err);

long long state_dead_replay(struct state *s, const char *flow, struct mlc_errbuf *err)
{
    return dead_replay(s, flow, -1, err);
}

long long state_dead_replay_id(struct state *s, long long id, struct mlc_errbuf *err)
{
    return dead_replay(s, NULL, id, err);
}

static long long dead_replay(struct state *s, const char *flow, long long id, struct mlc_errbuf *err)
{
    static const char *sql =
        "INSERT INTO state_outbox(flow, source_key, op, target_key, payload, hash, audit_id, created_at)"
        " SELECT d.flow, d.source_key, CASE WHEN l.target_key IS NULL THEN 'create' ELSE 'update' END,"
        "  COALESCE(l.target_key, ''), d.payload, d.hash, d.audit_id, :now FROM state_dead d"
        "  LEFT JOIN state_ledger l ON l.flow = d.flow AND l.source_key = d.source_key"
        "  WHERE (:flow IS NULL OR d.flow = :flow) AND (:id < 0 OR d.id = :id) AND d.source_key <> ''"
        " ON CONFLICT(flow, source_key) DO NOTHING";
    sqlite3_stmt *q = NULL;
    long long n;

    if (state_begin(s, err) != MLC_OK) {
        return -1;
    }
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
        goto fail;
    }
    bind_text(q, ":flow", flow);
    bind_int(q, ":id", id);
    bind_int(q, ":now", state_now());
    if (sqlite3_step(q) != SQLITE_DONE) {
        goto fail;
    }
    n = sqlite3_changes(s->db);
    sqlite3_finalize(q);
    q = NULL;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM state_dead WHERE (:flow IS NULL OR flow = :flow)"
                                  " AND (:id < 0 OR id = :id)", -1, &q, NULL) != SQLITE_OK) {
        goto fail;
    }
    bind_text(q, ":flow", flow);
    bind_int(q, ":id", id);
    if (sqlite3_step(q) != SQLITE_DONE) {
        goto fail;
    }
    sqlite3_finalize(q);
    if (state_commit(s, err) != MLC_OK) {
        state_rollback(s);
        return -1;
    }
    return n;
fail:
    mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(q);
    state_rollback(s);
    return -1;
}

enum mlc_rc state_audit(struct state *s, const char *flow, const char *key, const char *audit_id,
                        const char *action, const char *target_key, const char *detail)
{
    sqlite3_stmt *q = stmt(s, SQ_AUDIT);

    bind_int(q, ":now", state_now());
    bind_text_lent(q, ":flow", flow);
    bind_text_lent(q, ":key", key);
    bind_text_lent(q, ":aid", audit_id);
    bind_text_lent(q, ":action", action);
    bind_text_lent(q, ":tkey", target_key);
    bind_text_lent(q, ":detail", detail);
    return step_done(s, q, NULL);
}

long long state_run_start(struct state *s, const char *flow)
{
    sqlite3_stmt *q = stmt(s, SQ_RUN_START);

    bind_text(q, ":flow", flow);
    bind_int(q, ":now", state_now());
    if (step_done(s, q, NULL) != MLC_OK) {
        return -1;
    }
    return sqlite3_last_insert_rowid(s->db);
}

void state_run_finish(struct state *s, long long run_id, const struct run_stats *rs,
                      const char *status, const char *error)
{
    sqlite3_stmt *q = stmt(s, SQ_RUN_FINISH);

    bind_int(q, ":id", run_id);
    bind_int(q, ":now", state_now());
    bind_int(q, ":read", rs->read);
    bind_int(q, ":created", rs->created);
    bind_int(q, ":updated", rs->updated);
    bind_int(q, ":unchanged", rs->unchanged);
    bind_int(q, ":failed", rs->failed);
    bind_int(q, ":adopted", rs->adopted);
    bind_int(q, ":pending", rs->pending);
    bind_int(q, ":warnings", rs->warnings);
    bind_text(q, ":status", status);
    bind_text(q, ":err", error);
    step_done(s, q, NULL);
}

enum mlc_rc state_secret_get(struct state *s, const char *name, void **blob, int *len,
                             struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_SECRET_GET);
    int rc;

    bind_text(q, ":name", name);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *len = sqlite3_column_bytes(q, 0);
        *blob = mlc_xmalloc((size_t)*len + 1);
        memcpy(*blob, sqlite3_column_blob(q, 0), (size_t)*len);
        sqlite3_reset(q);
        return MLC_OK;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_E_NOTFOUND;
}

enum mlc_rc state_secret_put(struct state *s, const char *name, const void *blob, int len,
                             struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_SECRET_PUT);
    int i = sqlite3_bind_parameter_index(q, ":sealed");

    bind_text(q, ":name", name);
    sqlite3_bind_blob(q, i, blob, len, SQLITE_TRANSIENT);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

enum mlc_rc state_ledger_by_target(struct state *s, const char *flow, const char *target_key,
                                   char *key, size_t n, struct ledger_row *out,
                                   struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_BY_TARGET);
    int rc;

    bind_text(q, ":flow", flow);
    bind_text(q, ":tkey", target_key);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        copy_col(q, 0, out->hash, sizeof(out->hash));
        copy_col(q, 1, out->target_key, sizeof(out->target_key));
        copy_col(q, 2, out->target_id, sizeof(out->target_id));
        copy_col(q, 3, out->audit_id, sizeof(out->audit_id));
        out->wb_at = sqlite3_column_int64(q, 4);
        copy_col(q, 5, key, n);
        sqlite3_reset(q);
        return MLC_OK;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        return MLC_E_IO;
    }
    return MLC_E_NOTFOUND;
}

enum mlc_rc state_ledger_wb_mark(struct state *s, const char *flow, const char *key, long long at_ms,
                                 struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_LEDGER_WB_MARK);

    bind_text(q, ":flow", flow);
    bind_text(q, ":key", key);
    bind_int(q, ":at", at_ms);
    return step_done(s, q, err);
}

/* ---- inbox ---- */

void inbox_row_release(struct inbox_row *r)
{
    if (r != NULL) {
        free(r->ext_id);
        free(r->body);
        r->ext_id = r->body = NULL;
    }
}

enum mlc_rc state_inbox_put(struct state *s, long long seq, const char *kind, const char *ext_id,
                            const char *body, long long received_ms, int *fresh,
                            struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_PUT);
    /* The relay deletes a delivery once we ack it, so the row must survive
     * an OS crash too: this one commit waits for the WAL fsync (FULL). The
     * level cannot change inside a transaction; there the caller commits. */
    int own = sqlite3_get_autocommit(s->db);
    enum mlc_rc rc;

    *fresh = 0;
    if (own && (rc = exec(s, "PRAGMA synchronous=FULL", err)) != MLC_OK) {
        return rc;
    }
    bind_int(q, ":seq", seq);
    bind_text(q, ":kind", kind);
    bind_text(q, ":ext", ext_id);
    bind_text(q, ":body", body);
    bind_int(q, ":recv", received_ms);
    bind_int(q, ":now", state_now_ms());
    rc = step_done(s, q, err);
    if (rc == MLC_OK) {
        *fresh = sqlite3_changes(s->db) == 1;
    }
    if (own) {
        exec(s, "PRAGMA synchronous=NORMAL", NULL);
    }
    return rc;
}

enum mlc_rc state_inbox_put_many(struct state *s, struct inbox_new *rows, size_t n,
                                 struct mlc_errbuf *err)
{
    long long now = state_now_ms();
    enum mlc_rc rc;

    if (n == 0) {
        return MLC_OK;
    }
    rc = state_begin_durable(s, err);
    for (size_t i = 0; rc == MLC_OK && i < n; i++) {
        sqlite3_stmt *q = stmt(s, SQ_INBOX_PUT);
        struct inbox_new *r = &rows[i];

        bind_int(q, ":seq", r->seq);
        sqlite3_bind_text(q, sqlite3_bind_parameter_index(q, ":kind"), r->kind, (int)r->kind_len,
                          SQLITE_STATIC);
        sqlite3_bind_text(q, sqlite3_bind_parameter_index(q, ":ext"), r->ext_id, (int)r->ext_id_len,
                          SQLITE_STATIC);
        sqlite3_bind_text(q, sqlite3_bind_parameter_index(q, ":body"), r->body, (int)r->body_len,
                          SQLITE_STATIC);
        bind_int(q, ":recv", r->received_ms);
        bind_int(q, ":now", now);
        rc = step_done(s, q, err);
        r->fresh = rc == MLC_OK && sqlite3_changes(s->db) == 1;
    }
    if (rc == MLC_OK) {
        rc = state_commit(s, err);
    }
    if (rc != MLC_OK) {
        state_rollback(s);
        for (size_t i = 0; i < n; i++) {
            rows[i].fresh = 0;
        }
    }
    return rc;
}

int state_inbox_next(struct state *s, struct inbox_row *rows, int max, long long now_ms)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_NEXT);
    int n = 0;

    bind_int(q, ":now", now_ms);
    bind_int(q, ":max", max);
    while (n < max && sqlite3_step(q) == SQLITE_ROW) {
        struct inbox_row *r = &rows[n++];
        const unsigned char *ext = sqlite3_column_text(q, 2);
        memset(r, 0, sizeof(*r));
        r->seq = sqlite3_column_int64(q, 0);
        copy_col(q, 1, r->kind, sizeof(r->kind));
        r->ext_id = ext ? mlc_xstrdup((const char *)ext) : NULL;
        r->body = mlc_xstrdup((const char *)sqlite3_column_text(q, 3));
        r->received_ms = sqlite3_column_int64(q, 4);
        r->stored_ms = sqlite3_column_int64(q, 5);
        r->attempts = sqlite3_column_int(q, 6);
        copy_col(q, 7, r->state, sizeof(r->state));
        r->sent_ms = sqlite3_column_int64(q, 8);
    }
    sqlite3_reset(q);
    return n;
}

enum mlc_rc state_inbox_mark_inflight(struct state *s, long long seq, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_INFLIGHT);

    bind_int(q, ":seq", seq);
    bind_int(q, ":now", state_now_ms());
    return step_done(s, q, err);
}

enum mlc_rc state_inbox_done(struct state *s, long long seq, const char *outcome,
                             const char *detail, struct mlc_errbuf *err)
{
    sqlite3_stmt *q;

    if (strcmp(outcome, "applied") != 0 && strcmp(outcome, "ignored") != 0 &&
        strcmp(outcome, "echo") != 0 && strcmp(outcome, "dead") != 0) {
        MLC_BUG("inbox outcome '%s'", outcome);
    }
    q = stmt(s, SQ_INBOX_DONE);
    bind_int(q, ":seq", seq);
    bind_text(q, ":state", outcome);
    bind_text(q, ":detail", detail);
    bind_int(q, ":now", state_now_ms());
    return step_done(s, q, err);
}

enum mlc_rc state_inbox_retry_later(struct state *s, long long seq, long long next_ms,
                                    const char *error, struct mlc_errbuf *err)
{
    return state_inbox_retry(s, seq, next_ms, NULL, error, err);
}

enum mlc_rc state_inbox_retry(struct state *s, long long seq, long long next_ms, const char *st,
                              const char *error, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_RETRY);

    bind_text(q, ":state", st);
    bind_int(q, ":seq", seq);
    bind_int(q, ":next", next_ms);
    bind_text(q, ":err", error);
    return step_done(s, q, err);
}

long long state_inbox_count(struct state *s, const char *st)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_COUNT);
    long long n = -1;

    bind_text(q, ":state", st);
    if (sqlite3_step(q) == SQLITE_ROW) {
        n = sqlite3_column_int64(q, 0);
    }
    sqlite3_reset(q);
    return n;
}

long long state_inbox_pending(struct state *s)
{
    return state_inbox_count(s, "pending");
}

static long long changes_of(struct state *s, enum state_stmt which, const char *name, long long v)
{
    sqlite3_stmt *q = stmt(s, which);

    if (name != NULL) {
        bind_int(q, name, v);
    }
    if (step_done(s, q, NULL) != MLC_OK) {
        return -1;
    }
    return sqlite3_changes(s->db);
}

long long state_inbox_retry_now(struct state *s)
{
    return changes_of(s, SQ_INBOX_RETRY_NOW, NULL, 0);
}

long long state_inbox_prune(struct state *s, long long before_ms)
{
    return changes_of(s, SQ_INBOX_PRUNE, ":before", before_ms);
}

long long state_inbox_local_seq(struct state *s)
{
    sqlite3_stmt *q = stmt(s, SQ_INBOX_LOCAL_SEQ);
    long long seq = -1;

    if (sqlite3_step(q) == SQLITE_ROW) {
        seq = sqlite3_column_int64(q, 0);
    }
    sqlite3_reset(q);
    return seq;
}

/* ---- echo suppression ---- */

static void value_hash(const char *value, char out[65])
{
    uint8_t h[MLC_SHA256_LEN];

    mlc_sha256(value, strlen(value), h);
    mlc_hex(h, sizeof(h), out);
}

enum mlc_rc state_echo_put(struct state *s, const char *system, const char *record,
                           const char *field, const char *value, long long expires_ms,
                           struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_ECHO_PUT);
    char hash[65];
    enum mlc_rc rc;

    value_hash(value, hash);
    bind_text(q, ":sys", system);
    bind_text(q, ":rec", record);
    bind_text(q, ":field", field);
    bind_text(q, ":hash", hash);
    bind_int(q, ":exp", expires_ms);
    rc = step_done(s, q, err);
    if (rc == MLC_OK) {
        /* expired entries are dead weight; dropping them here keeps the table small */
        changes_of(s, SQ_ECHO_PRUNE, ":now", state_now_ms());
    }
    return rc;
}

int state_echo_has(struct state *s, const char *system, const char *record, const char *field,
                   const char *value, long long now_ms)
{
    sqlite3_stmt *q = stmt(s, SQ_ECHO_HAS);
    char hash[65];
    int found;

    value_hash(value, hash);
    bind_text(q, ":sys", system);
    bind_text(q, ":rec", record);
    bind_text(q, ":field", field);
    bind_text(q, ":hash", hash);
    bind_int(q, ":now", now_ms);
    found = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_reset(q);
    return found;
}

/* ---- key/value ---- */

enum mlc_rc state_kv_get(struct state *s, const char *key, char **out, struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_KV_GET);

    bind_text(q, ":key", key);
    return step_text(s, q, out, err);
}

enum mlc_rc state_kv_set(struct state *s, const char *key, const char *value,
                         struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_KV_SET);

    bind_text(q, ":key", key);
    bind_text(q, ":value", value);
    bind_int(q, ":now", state_now());
    return step_done(s, q, err);
}

/* ---- read-only views (the status page, /metrics, `mlc-agent status`) ---- */

/* The first column of a one-row statement bound to :flow (flow NULL: no
 * parameter), or fallback when there is no row or the value is NULL. */
static long long int_or(struct state *s, enum state_stmt which, const char *flow,
                        long long fallback)
{
    sqlite3_stmt *q = stmt(s, which);
    long long v = fallback;

    if (flow != NULL) {
        bind_text(q, ":flow", flow);
    }
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) {
        v = sqlite3_column_int64(q, 0);
    }
    sqlite3_reset(q);
    return v;
}

static const char *col_text(sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);

    return t ? (const char *)t : "";
}

void run_row_release(struct run_row *r)
{
    if (r == NULL) {
        return;
    }
    free(r->error);
    r->error = NULL;
}

enum mlc_rc state_run_latest(struct state *s, const char *flow, struct run_row *out,
                             struct mlc_errbuf *err)
{
    sqlite3_stmt *q = stmt(s, SQ_RUN_LATEST);
    int rc;

    memset(out, 0, sizeof(*out));
    bind_text(q, ":flow", flow);
    rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        if (rc != SQLITE_DONE) {
            mlc_errf(err, "state database '%s': %s", s->path, sqlite3_errmsg(s->db));
        }
        sqlite3_reset(q);
        return rc == SQLITE_DONE ? MLC_E_NOTFOUND : MLC_E_IO;
    }
    out->started_at = sqlite3_column_int64(q, 0);
    out->finished_at = sqlite3_column_type(q, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(q, 1);
    copy_col(q, 2, out->status, sizeof(out->status));
    out->created = sqlite3_column_int64(q, 3);
    out->updated = sqlite3_column_int64(q, 4);
    out->unchanged = sqlite3_column_int64(q, 5);
    out->failed = sqlite3_column_int64(q, 6);
    if (sqlite3_column_type(q, 7) != SQLITE_NULL && col_text(q, 7)[0] != '\0') {
        out->error = mlc_xstrdup(col_text(q, 7));
    }
    out->adopted = sqlite3_column_int64(q, 8);
    out->pending = sqlite3_column_int64(q, 9);
    out->warnings = sqlite3_column_int64(q, 10);
    sqlite3_reset(q);
    return MLC_OK;
}

long long state_run_last_ok_at(struct state *s, const char *flow)
{
    return int_or(s, SQ_RUN_LAST_OK, flow, -1);
}

void state_run_totals(struct state *s, const char *flow, struct run_sums *out)
{
    sqlite3_stmt *q = stmt(s, SQ_RUN_TOTALS);

    memset(out, 0, sizeof(*out));
    bind_text(q, ":flow", flow);
    if (sqlite3_step(q) == SQLITE_ROW) {
        out->created = sqlite3_column_int64(q, 0);
        out->updated = sqlite3_column_int64(q, 1);
        out->unchanged = sqlite3_column_int64(q, 2);
        out->failed = sqlite3_column_int64(q, 3);
        out->adopted = sqlite3_column_int64(q, 4);
        out->warnings = sqlite3_column_int64(q, 5);
    }
    sqlite3_reset(q);
}

void state_run_records_hourly(struct state *s, long long since, int hours, long long *records)
{
    sqlite3_stmt *q = stmt(s, SQ_RUN_HOURLY);

    memset(records, 0, (size_t)hours * sizeof(*records));
    bind_int(q, ":since", since);
    bind_int(q, ":until", since + (long long)hours * 3600);
    while (sqlite3_step(q) == SQLITE_ROW) {
        long long i = (sqlite3_column_int64(q, 0) - since) / 3600;
        if (i >= 0 && i < hours) {
            records[i] += sqlite3_column_int64(q, 1);
        }
    }
    sqlite3_reset(q);
}

long long state_ledger_count(struct state *s, const char *flow)
{
    return int_or(s, SQ_LEDGER_COUNT, flow, 0);
}

long long state_outbox_unanswered(struct state *s, const char *flow)
{
    return int_or(s, SQ_OUTBOX_UNANSWERED, flow, 0);
}

long long state_outbox_oldest_at(struct state *s, const char *flow)
{
    return int_or(s, SQ_OUTBOX_OLDEST, flow, -1);
}

long long state_inbox_oldest_pending_ms(struct state *s)
{
    return int_or(s, SQ_INBOX_OLDEST, NULL, -1);
}

int state_audit_recent(struct state *s, const char *q_text, int limit,
                       void (*fn)(void *ctx, const struct audit_entry *e), void *ctx)
{
    int find = q_text != NULL && q_text[0] != '\0';
    sqlite3_stmt *q = stmt(s, find ? SQ_AUDIT_FIND : SQ_AUDIT_RECENT);
    int n = 0;

    if (limit <= 0 || limit > 500) {
        limit = 50;
    }
    if (find) {
        /* a prefix search: LIKE's wildcards in the query are literal */
        char like[300];
        size_t o = 0;
        for (const char *p = q_text; *p && o < sizeof(like) - 3; p++) {
            if (*p == '%' || *p == '_' || *p == '\\') {
                like[o++] = '\\';
            }
            like[o++] = *p;
        }
        like[o++] = '%';
        like[o] = '\0';
        bind_text(q, ":q", q_text);
        bind_text(q, ":like", like);
    }
    bind_int(q, ":max", limit);
    while (sqlite3_step(q) == SQLITE_ROW) {
        struct audit_entry e = {
            .id = sqlite3_column_int64(q, 0),
            .at = sqlite3_column_int64(q, 1),
            .flow = col_text(q, 2),
            .source_key = col_text(q, 3),
            .target_key = col_text(q, 4),
            .audit_id = col_text(q, 5),
            .action = col_text(q, 6),
            .detail = col_text(q, 7),
        };
        fn(ctx, &e);
        n++;
    }
    sqlite3_reset(q);
    return n;
}

int state_dead_list(struct state *s, const char *flow, int limit,
                    void (*fn)(void *ctx, const struct dead_entry *e), void *ctx)
{
    sqlite3_stmt *q = stmt(s, SQ_DEAD_LIST);
    int n = 0;

    bind_text(q, ":flow", flow);
    bind_int(q, ":max", limit > 0 ? limit : 50);
    while (sqlite3_step(q) == SQLITE_ROW) {
        struct dead_entry e = {
            .id = sqlite3_column_int64(q, 0),
            .flow = col_text(q, 1),
            .source_key = col_text(q, 2),
            .error = col_text(q, 3),
            .attempts = sqlite3_column_int(q, 4),
            .at = sqlite3_column_int64(q, 5),
            .audit_id = col_text(q, 6),
        };
        fn(ctx, &e);
        n++;
    }
    sqlite3_reset(q);
    return n;
}

enum mlc_rc state_dead_flow(struct state *s, long long id, char *flow, size_t n)
{
    sqlite3_stmt *q = stmt(s, SQ_DEAD_FLOW);
    enum mlc_rc rc = MLC_E_NOTFOUND;

    bind_int(q, ":id", id);
    if (sqlite3_step(q) == SQLITE_ROW) {
        copy_col(q, 0, flow, n);
        rc = MLC_OK;
    }
    sqlite3_reset(q);
    return rc;
}
