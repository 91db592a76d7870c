/* SPDX-License-Identifier: Apache-2.0
 * SQL of the state database: the migrations, then every statement, named.
 * Migrations are numbered by PRAGMA user_version; each runs in one transaction.
 */
#ifndef MLC_STATE_SQL_H
#define MLC_STATE_SQL_H

static const char *const state_migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE state_cursor(flow TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE state_ledger(flow TEXT NOT NULL, source_key TEXT NOT NULL, hash TEXT NOT NULL,"
    "  target_key TEXT NOT NULL, target_id TEXT NOT NULL DEFAULT '', audit_id TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY(flow, source_key));"
    "CREATE TABLE state_outbox(id INTEGER PRIMARY KEY, flow TEXT NOT NULL, source_key TEXT NOT NULL,"
    "  op TEXT NOT NULL, target_key TEXT NOT NULL DEFAULT '', payload TEXT NOT NULL, hash TEXT NOT NULL,"
    "  audit_id TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', sent_hash TEXT NOT NULL DEFAULT '',"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
    "  created_at INTEGER NOT NULL, UNIQUE(flow, source_key));"
    "CREATE INDEX state_outbox_due ON state_outbox(flow, next_at);"
    "CREATE TABLE state_dead(id INTEGER PRIMARY KEY, flow TEXT NOT NULL, source_key TEXT NOT NULL,"
    "  payload TEXT NOT NULL, hash TEXT NOT NULL, error TEXT NOT NULL, audit_id TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL, at INTEGER NOT NULL, UNIQUE(flow, source_key));"
    "CREATE TABLE state_audit(id INTEGER PRIMARY KEY, at INTEGER NOT NULL, flow TEXT NOT NULL,"
    "  source_key TEXT, audit_id TEXT, action TEXT NOT NULL, target_key TEXT, detail TEXT);"
    "CREATE INDEX state_audit_key ON state_audit(source_key);"
    "CREATE INDEX state_audit_aid ON state_audit(audit_id);"
    "CREATE TABLE state_run(id INTEGER PRIMARY KEY, flow TEXT NOT NULL, started_at INTEGER NOT NULL,"
    "  finished_at INTEGER, read INTEGER, created INTEGER, updated INTEGER, unchanged INTEGER,"
    "  failed INTEGER, status TEXT, error TEXT);"
    "CREATE TABLE state_secret(name TEXT PRIMARY KEY, sealed BLOB NOT NULL, updated_at INTEGER NOT NULL);",
};

enum state_stmt {
    SQ_CURSOR_GET,
    SQ_CURSOR_SET,
    SQ_LEDGER_GET,
    SQ_LEDGER_PUT,
    SQ_LEDGER_RECENT,
    SQ_OUTBOX_PUT,
    SQ_OUTBOX_NEXT,
    SQ_OUTBOX_NEXT_OP,
    SQ_OUTBOX_INFLIGHT,
    SQ_OUTBOX_RESOLVE,
    SQ_OUTBOX_RETRY,
    SQ_OUTBOX_DELETE,
    SQ_OUTBOX_COUNT,
    SQ_OUTBOX_HASH,
    SQ_DEAD_PUT,
    SQ_DEAD_HAS,
    SQ_DEAD_COUNT,
    SQ_AUDIT,
    SQ_RUN_START,
    SQ_RUN_FINISH,
    SQ_SECRET_GET,
    SQ_SECRET_PUT,
    SQ__COUNT
};

static const char *const state_sql[SQ__COUNT] = {
    [SQ_CURSOR_GET] = "SELECT value FROM state_cursor WHERE flow = :flow",
    [SQ_CURSOR_SET] = "INSERT INTO state_cursor(flow, value, updated_at) VALUES(:flow, :value, :now)"
                      " ON CONFLICT(flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    [SQ_LEDGER_GET] = "SELECT hash, target_key, target_id, audit_id FROM state_ledger"
                      " WHERE flow = :flow AND source_key = :key",
    [SQ_LEDGER_PUT] = "INSERT INTO state_ledger(flow, source_key, hash, target_key, target_id, audit_id,"
                      " created_at, updated_at) VALUES(:flow, :key, :hash, :tkey, :tid, :aid, :now, :now)"
                      " ON CONFLICT(flow, source_key) DO UPDATE SET hash = excluded.hash,"
                      " target_key = excluded.target_key,"
                      " target_id = CASE WHEN excluded.target_id <> '' THEN excluded.target_id ELSE target_id END,"
                      " audit_id = excluded.audit_id, updated_at = excluded.updated_at",
    [SQ_LEDGER_RECENT] = "SELECT target_id FROM state_ledger WHERE flow = :flow AND target_id <> ''"
                         " ORDER BY rowid DESC LIMIT :max",
    [SQ_OUTBOX_PUT] = "INSERT INTO state_outbox(flow, source_key, op, target_key, payload, hash, audit_id,"
                      " created_at) VALUES(:flow, :key, :op, :tkey, :payload, :hash, :aid, :now)"
                      " ON CONFLICT(flow, source_key) DO UPDATE SET payload = excluded.payload,"
                      " hash = excluded.hash, audit_id = excluded.audit_id,"
                      /* an in-flight create keeps its op: recovery decides it */
                      " op = CASE WHEN state = 'inflight' THEN op ELSE excluded.op END,"
                      " target_key = CASE WHEN state = 'inflight' THEN target_key ELSE excluded.target_key END,"
                      " attempts = 0, next_at = 0",
    [SQ_OUTBOX_NEXT] = "SELECT id, source_key, payload, hash, audit_id, op, target_key, state, sent_hash,"
                       " attempts FROM state_outbox WHERE flow = :flow AND state = :state AND next_at <= :now"
                       " ORDER BY id LIMIT :max",
    [SQ_OUTBOX_NEXT_OP] = "SELECT id, source_key, payload, hash, audit_id, op, target_key, state, sent_hash,"
                          " attempts FROM state_outbox WHERE flow = :flow AND state = :state AND op = :op"
                          " AND next_at <= :now ORDER BY id LIMIT :max",
    [SQ_OUTBOX_INFLIGHT] = "UPDATE state_outbox SET state = 'inflight', sent_hash = :hash,"
                           " attempts = attempts + 1 WHERE id = :id",
    [SQ_OUTBOX_RESOLVE] = "UPDATE state_outbox SET state = 'pending', op = :op, target_key = :tkey,"
                          " next_at = 0 WHERE id = :id",
    [SQ_OUTBOX_RETRY] = "UPDATE state_outbox SET state = 'pending', next_at = :next, last_error = :err"
                        " WHERE id = :id",
    [SQ_OUTBOX_DELETE] = "DELETE FROM state_outbox WHERE id = :id",
    [SQ_OUTBOX_COUNT] = "SELECT count(*) FROM state_outbox WHERE (:flow IS NULL OR flow = :flow)",
    [SQ_OUTBOX_HASH] = "SELECT hash FROM state_outbox WHERE flow = :flow AND source_key = :key",
    [SQ_DEAD_PUT] = "INSERT INTO state_dead(flow, source_key, payload, hash, error, audit_id, attempts, at)"
                    " VALUES(:flow, :key, :payload, :hash, :err, :aid, :attempts, :now)"
                    " ON CONFLICT(flow, source_key) DO UPDATE SET payload = excluded.payload,"
                    " hash = excluded.hash, error = excluded.error, audit_id = excluded.audit_id,"
                    " attempts = excluded.attempts, at = excluded.at",
    [SQ_DEAD_HAS] = "SELECT 1 FROM state_dead WHERE flow = :flow AND source_key = :key AND hash = :hash",
    [SQ_DEAD_COUNT] = "SELECT count(*) FROM state_dead WHERE (:flow IS NULL OR flow = :flow)",
    [SQ_AUDIT] = "INSERT INTO state_audit(at, flow, source_key, audit_id, action, target_key, detail)"
                 " VALUES(:now, :flow, :key, :aid, :action, :tkey, :detail)",
    [SQ_RUN_START] = "INSERT INTO state_run(flow, started_at, status) VALUES(:flow, :now, 'running')",
    [SQ_RUN_FINISH] = "UPDATE state_run SET finished_at = :now, read = :read, created = :created,"
                      " updated = :updated, unchanged = :unchanged, failed = :failed, status = :status,"
                      " error = :err WHERE id = :id",
    [SQ_SECRET_GET] = "SELECT sealed FROM state_secret WHERE name = :name",
    [SQ_SECRET_PUT] = "INSERT INTO state_secret(name, sealed, updated_at) VALUES(:name, :sealed, :now)"
                      " ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
};

#endif
