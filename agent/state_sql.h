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
    /* 2: the write-back direction. state_inbox holds relay deliveries (and
     * local ones with negative seqs) until each has an outcome; id keeps the
     * arrival order, seq and (kind, ext_id) make re-sent deliveries no-ops.
     * state_echo keeps the last value the agent wrote per record field.
     * wb_at is the target's event time of the newest change written back,
     * so an older event that arrives late cannot undo a newer one. */
    "CREATE TABLE state_inbox(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, kind TEXT NOT NULL,"
    "  ext_id TEXT, body TEXT NOT NULL, received_ms INTEGER NOT NULL, stored_ms INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_ms INTEGER NOT NULL DEFAULT 0, detail TEXT, done_ms INTEGER, UNIQUE(kind, ext_id));"
    "CREATE INDEX state_inbox_state ON state_inbox(state, next_ms);"
    "CREATE TABLE state_echo(system TEXT NOT NULL, record TEXT NOT NULL, field TEXT NOT NULL,"
    "  value_hash TEXT NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY(system, record, field))"
    "  WITHOUT ROWID;"
    "CREATE TABLE state_kv(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX state_ledger_target ON state_ledger(flow, target_key);"
    "ALTER TABLE state_ledger ADD COLUMN wb_at INTEGER NOT NULL DEFAULT 0;",
    /* 3: exactly once in every corner. sent_at: when an in-flight write was
     * sent (an unanswered create is not re-sent while the target's search
     * could still be stale). lists: the list values (labels, ...) the agent
     * set last, so it removes only its own. Runs count adopted records,
     * records still undelivered and warnings. Inbox rows gain the in-flight
     * state: marked before the source is called, settled after a crash by
     * reading the record back. */
    "ALTER TABLE state_outbox ADD COLUMN sent_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE state_ledger ADD COLUMN lists TEXT;"
    "ALTER TABLE state_run ADD COLUMN adopted INTEGER;"
    "ALTER TABLE state_run ADD COLUMN pending INTEGER;"
    "ALTER TABLE state_run ADD COLUMN warnings INTEGER;"
    "ALTER TABLE state_inbox ADD COLUMN sent_ms INTEGER NOT NULL DEFAULT 0;"
    "DROP INDEX state_inbox_state;"
    "CREATE INDEX state_inbox_state ON state_inbox(state, next_ms);",
    /* 4: outbox ids never come back (AUTOINCREMENT). A flow's sent mark is
     * the highest outbox id that may have left; a row queued later must
     * sort above it even when the outbox was empty in between. */
    "CREATE TABLE state_outbox_new(id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL,"
    "  source_key TEXT NOT NULL, op TEXT NOT NULL, target_key TEXT NOT NULL DEFAULT '',"
    "  payload TEXT NOT NULL, hash TEXT NOT NULL, audit_id TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending', sent_hash TEXT NOT NULL DEFAULT '',"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
    "  created_at INTEGER NOT NULL, sent_at INTEGER NOT NULL DEFAULT 0, UNIQUE(flow, source_key));"
    "INSERT INTO state_outbox_new(id, flow, source_key, op, target_key, payload, hash, audit_id, state,"
    "  sent_hash, attempts, next_at, last_error, created_at, sent_at)"
    "  SELECT id, flow, source_key, op, target_key, payload, hash, audit_id, state, sent_hash, attempts,"
    "  next_at, last_error, created_at, sent_at FROM state_outbox;"
    "DROP TABLE state_outbox;"
    "ALTER TABLE state_outbox_new RENAME TO state_outbox;"
    "CREATE INDEX state_outbox_due ON state_outbox(flow, next_at);",
};

enum state_stmt {
    SQ_CURSOR_GET,
    SQ_CURSOR_SET,
    SQ_LEDGER_GET,
    SQ_LEDGER_LISTS,
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
    SQ_LEDGER_BY_TARGET,
    SQ_LEDGER_WB_MARK,
    SQ_INBOX_PUT,
    SQ_INBOX_NEXT,
    SQ_INBOX_DONE,
    SQ_INBOX_RETRY,
    SQ_INBOX_RETRY_NOW,
    SQ_INBOX_COUNT,
    SQ_INBOX_LOCAL_SEQ,
    SQ_INBOX_PRUNE,
    SQ_ECHO_PUT,
    SQ_ECHO_HAS,
    SQ_ECHO_PRUNE,
    SQ_KV_GET,
    SQ_KV_SET,
    SQ_INBOX_INFLIGHT,
    SQ_OUTBOX_DUE_NOW,
    SQ_OUTBOX_PUT_FRESH,
    SQ_OUTBOX_SENT_AT,
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_SYNC_FULL,
    SQ_SYNC_NORMAL,
    /* read-only views for the status page and `mlc-agent status` */
    SQ_RUN_LATEST,
    SQ_RUN_LAST_OK,
    SQ_RUN_TOTALS,
    SQ_RUN_HOURLY,
    SQ_LEDGER_COUNT,
    SQ_OUTBOX_UNANSWERED,
    SQ_OUTBOX_OLDEST,
    SQ_INBOX_OLDEST,
    SQ_AUDIT_RECENT,
    SQ_AUDIT_FIND,
    SQ_DEAD_LIST,
    SQ_DEAD_FLOW,
    SQ__COUNT
};

static const char *const state_sql[SQ__COUNT] = {
    [SQ_CURSOR_GET] = "SELECT value FROM state_cursor WHERE flow = :flow",
    [SQ_CURSOR_SET] = "INSERT INTO state_cursor(flow, value, updated_at) VALUES(:flow, :value, :now)"
                      " ON CONFLICT(flow) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    [SQ_LEDGER_GET] = "SELECT hash, target_key, target_id, audit_id, wb_at, NULL, updated_at FROM state_ledger"
                      " WHERE flow = :flow AND source_key = :key",
    [SQ_LEDGER_LISTS] = "SELECT lists FROM state_ledger WHERE flow = :flow AND source_key = :key",
    [SQ_LEDGER_PUT] = "INSERT INTO state_ledger(flow, source_key, hash, target_key, target_id, audit_id,"
                      " created_at, updated_at, lists) VALUES(:flow, :key, :hash, :tkey, :tid, :aid, :now, :now, :lists)"
                      " ON CONFLICT(flow, source_key) DO UPDATE SET hash = excluded.hash,"
                      " lists = COALESCE(excluded.lists, lists),"
                      " target_key = excluded.target_key,"
                      " target_id = CASE WHEN excluded.target_id <> '' THEN excluded.target_id ELSE target_id END,"
                      " audit_id = excluded.audit_id, updated_at = excluded.updated_at",
    [SQ_LEDGER_RECENT] = "SELECT target_key FROM state_ledger WHERE flow = :flow AND target_key <> ''"
                         " AND created_at < :before ORDER BY created_at DESC LIMIT :max",
    [SQ_OUTBOX_PUT] = "INSERT INTO state_outbox(flow, source_key, op, target_key, payload, hash, audit_id,"
                      " created_at) VALUES(:flow, :key, :op, :tkey, :payload, :hash, :aid, :now)"
                      " ON CONFLICT(flow, source_key) DO UPDATE SET payload = excluded.payload,"
                      " hash = excluded.hash, audit_id = excluded.audit_id,"
                      /* an in-flight create keeps its op: recovery decides it */
                      " op = CASE WHEN state = 'inflight' THEN op ELSE excluded.op END,"
                      " target_key = CASE WHEN state = 'inflight' THEN target_key ELSE excluded.target_key END,"
                      " attempts = 0, next_at = 0",
    [SQ_OUTBOX_NEXT] = "SELECT id, source_key, payload, hash, audit_id, op, target_key, state, sent_hash,"
                       " attempts, sent_at FROM state_outbox WHERE flow = :flow AND state = :state AND next_at <= :now"
                       " AND id > :after ORDER BY id LIMIT :max",
    [SQ_OUTBOX_NEXT_OP] = "SELECT id, source_key, payload, hash, audit_id, op, target_key, state, sent_hash,"
                          " attempts, sent_at FROM state_outbox WHERE flow = :flow AND state = :state AND op = :op"
                          " AND next_at <= :now AND id > :after ORDER BY id LIMIT :max",
    [SQ_OUTBOX_INFLIGHT] = "UPDATE state_outbox SET state = 'inflight', sent_hash = :hash,"
                           " attempts = attempts + 1, sent_at = :now WHERE id = :id",
    [SQ_OUTBOX_RESOLVE] = "UPDATE state_outbox SET state = 'pending', op = :op, target_key = :tkey,"
                          " next_at = 0 WHERE id = :id",
    [SQ_OUTBOX_RETRY] = "UPDATE state_outbox SET state = 'pending', next_at = :next, last_error = :err"
                        " WHERE id = :id",
    /* a record seen for the first time in this run, queued in flight at once:
     * it goes out in this run's batches; sent_at stays 0 and the flow's sent
     * mark (state_sent_mark) says whether it may have left */
    [SQ_OUTBOX_PUT_FRESH] = "INSERT INTO state_outbox(flow, source_key, op, target_key, payload, hash, audit_id,"
                            " state, sent_hash, attempts, created_at)"
                            " VALUES(:flow, :key, :op, :tkey, :payload, :hash, :aid, 'inflight', :hash, 1, :now)",
    [SQ_OUTBOX_SENT_AT] = "UPDATE state_outbox SET sent_at = :now WHERE id = :id AND sent_at = 0",
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_SYNC_FULL] = "PRAGMA synchronous=FULL",
    [SQ_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
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
                      " updated = :updated, unchanged = :unchanged, failed = :failed, adopted = :adopted,"
                      " pending = :pending, warnings = :warnings, status = :status,"
                      " error = :err WHERE id = :id",
    [SQ_SECRET_GET] = "SELECT sealed FROM state_secret WHERE name = :name",
    [SQ_SECRET_PUT] = "INSERT INTO state_secret(name, sealed, updated_at) VALUES(:name, :sealed, :now)"
                      " ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    [SQ_LEDGER_BY_TARGET] = "SELECT hash, target_key, target_id, audit_id, wb_at, source_key FROM state_ledger"
                            " WHERE flow = :flow AND target_key = :tkey ORDER BY updated_at DESC LIMIT 1",
    [SQ_LEDGER_WB_MARK] = "UPDATE state_ledger SET wb_at = max(wb_at, :at) WHERE flow = :flow AND source_key = :key",
    [SQ_INBOX_PUT] = "INSERT INTO state_inbox(seq, kind, ext_id, body, received_ms, stored_ms)"
                     " VALUES(:seq, :kind, :ext, :body, :recv, :now) ON CONFLICT DO NOTHING",
    [SQ_INBOX_NEXT] = "SELECT seq, kind, ext_id, body, received_ms, stored_ms, attempts, state, sent_ms"
                      " FROM state_inbox WHERE state IN ('pending', 'inflight') AND next_ms <= :now"
                      " ORDER BY id LIMIT :max",
    [SQ_INBOX_DONE] = "UPDATE state_inbox SET state = :state, detail = :detail, done_ms = :now"
                      " WHERE seq = :seq AND state IN ('pending', 'inflight')",
    [SQ_INBOX_RETRY] = "UPDATE state_inbox SET state = COALESCE(:state, state), attempts = attempts + 1,"
                       " next_ms = :next, detail = :err WHERE seq = :seq AND state IN ('pending', 'inflight')",
    [SQ_INBOX_RETRY_NOW] = "UPDATE state_inbox SET next_ms = 0 WHERE state IN ('pending', 'inflight')"
                           " AND next_ms > 0",
    [SQ_INBOX_COUNT] = "SELECT count(*) FROM state_inbox WHERE state = :state"
                       " OR (:state = 'pending' AND state = 'inflight')",
    [SQ_INBOX_LOCAL_SEQ] = "SELECT min(0, COALESCE(min(seq), 0)) - 1 FROM state_inbox",
    [SQ_INBOX_PRUNE] = "DELETE FROM state_inbox WHERE state IN ('applied', 'ignored', 'echo')"
                       " AND done_ms < :before",
    [SQ_ECHO_PUT] = "INSERT INTO state_echo(system, record, field, value_hash, expires_ms)"
                    " VALUES(:sys, :rec, :field, :hash, :exp) ON CONFLICT(system, record, field)"
                    " DO UPDATE SET value_hash = excluded.value_hash, expires_ms = excluded.expires_ms",
    [SQ_ECHO_HAS] = "SELECT 1 FROM state_echo WHERE system = :sys AND record = :rec AND field = :field"
                    " AND value_hash = :hash AND expires_ms > :now",
    [SQ_ECHO_PRUNE] = "DELETE FROM state_echo WHERE expires_ms <= :now",
    [SQ_KV_GET] = "SELECT value FROM state_kv WHERE key = :key",
    [SQ_KV_SET] = "INSERT INTO state_kv(key, value, updated_at) VALUES(:key, :value, :now)"
                  " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    [SQ_INBOX_INFLIGHT] = "UPDATE state_inbox SET state = 'inflight', sent_ms = :now"
                          " WHERE seq = :seq AND state IN ('pending', 'inflight')",
    /* a new run tries every queued retry again (within a run, backoff holds) */
    [SQ_OUTBOX_DUE_NOW] = "UPDATE state_outbox SET next_at = 0 WHERE flow = :flow AND next_at > 0",
    [SQ_RUN_LATEST] = "SELECT started_at, finished_at, COALESCE(status, 'running'), created, updated,"
                      " unchanged, failed, error, COALESCE(adopted, 0), COALESCE(pending, 0),"
                      " COALESCE(warnings, 0) FROM state_run WHERE flow = :flow ORDER BY id DESC LIMIT 1",
    [SQ_RUN_LAST_OK] = "SELECT max(finished_at) FROM state_run WHERE flow = :flow AND status = 'ok'",
    [SQ_RUN_TOTALS] = "SELECT COALESCE(sum(created), 0), COALESCE(sum(updated), 0),"
                      " COALESCE(sum(unchanged), 0), COALESCE(sum(failed), 0), COALESCE(sum(adopted), 0),"
                      " COALESCE(sum(warnings), 0) FROM state_run WHERE flow = :flow",
    /* a run counts in the hour it ended, or started while it still runs */
    [SQ_RUN_HOURLY] = "SELECT (COALESCE(finished_at, started_at) / 3600) * 3600,"
                      " sum(COALESCE(created, 0) + COALESCE(updated, 0)) FROM state_run"
                      " WHERE COALESCE(finished_at, started_at) >= :since"
                      " AND COALESCE(finished_at, started_at) < :until GROUP BY 1",
    [SQ_LEDGER_COUNT] = "SELECT count(*) FROM state_ledger WHERE flow = :flow",
    /* creates sent whose answer was lost and that the target has not shown yet */
    [SQ_OUTBOX_UNANSWERED] = "SELECT count(*) FROM state_outbox WHERE flow = :flow AND state = 'inflight'"
                             " AND op = 'create'",
    [SQ_OUTBOX_OLDEST] = "SELECT min(created_at) FROM state_outbox WHERE flow = :flow",
    [SQ_INBOX_OLDEST] = "SELECT min(stored_ms) FROM state_inbox WHERE state = 'pending'",
    [SQ_AUDIT_RECENT] = "SELECT id, at, flow, source_key, target_key, audit_id, action, detail FROM state_audit"
                        " ORDER BY id DESC LIMIT :max",
    /* an exact key or audit ID, or a key prefix (:like is the escaped prefix and '%') */
    [SQ_AUDIT_FIND] = "SELECT id, at, flow, source_key, target_key, audit_id, action, detail FROM state_audit"
                      " WHERE source_key = :q OR target_key = :q OR audit_id = :q"
                      " OR source_key LIKE :like ESCAPE '\\' OR target_key LIKE :like ESCAPE '\\'"
                      " ORDER BY id DESC LIMIT :max",
    [SQ_DEAD_LIST] = "SELECT id, flow, source_key, error, attempts, at, audit_id FROM state_dead"
                     " WHERE :flow IS NULL OR flow = :flow ORDER BY id LIMIT :max",
    [SQ_DEAD_FLOW] = "SELECT flow FROM state_dead WHERE id = :id",
};

#endif
