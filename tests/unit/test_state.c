/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the state database's read-only views, the named statements the
 * status page, /metrics and `mlc-agent status` read through (runs, counts,
 * oldest items, the audit search, dead letters).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "agent/state.h"
#include "tinytest.h"

static char dbpath[64];

static struct state *fresh(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;

    snprintf(dbpath, sizeof(dbpath), "/tmp/mlc-test-state-%d.db", (int)getpid());
    unlink(dbpath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    return st;
}

static void gone(struct state *st)
{
    char side[80];

    state_close(st);
    unlink(dbpath);
    snprintf(side, sizeof(side), "%s-wal", dbpath);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", dbpath);
    unlink(side);
}

/* Rows the agent's own writers cannot date freely (runs in past hours, an
 * audit row with NULL columns) go in by hand. */
static void sql(struct state *st, const char *text)
{
    char *msg = NULL;

    if (sqlite3_exec(st->db, text, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "  sql: %s: %s\n", text, msg ? msg : "?");
        CHECK(0);
    }
    sqlite3_free(msg);
}

static void views_of_an_empty_database(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = fresh();
    struct run_row run;
    struct run_sums tot;
    long long hours[3] = { 7, 7, 7 };
    char flow[32] = "x";

    if (st == NULL) {
        return;
    }
    CHECK_INT(state_run_latest(st, "wo", &run, &e), MLC_E_NOTFOUND);
    CHECK_INT(state_run_last_ok_at(st, "wo"), -1);
    state_run_totals(st, "wo", &tot);
    CHECK_INT(tot.created + tot.updated + tot.unchanged + tot.failed + tot.adopted + tot.warnings,
              0);
    state_run_records_hourly(st, 3600, 3, hours);
    CHECK_INT(hours[0] + hours[1] + hours[2], 0);
    CHECK_INT(state_ledger_count(st, "wo"), 0);
    CHECK_INT(state_outbox_unanswered(st, "wo"), 0);
    CHECK_INT(state_outbox_oldest_at(st, "wo"), -1);
    CHECK_INT(state_inbox_oldest_pending_ms(st), -1);
    CHECK_INT(state_dead_flow(st, 1, flow, sizeof(flow)), MLC_E_NOTFOUND);
    gone(st);
}

static void runs_latest_totals_and_hours(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = fresh();
    struct run_row run;
    struct run_sums tot;
    long long hours[3];

    if (st == NULL) {
        return;
    }
    /* hours from 36000 (10:00 on day one): 10:xx, 11:xx, 12:xx */
    sql(st,
        "INSERT INTO state_run(flow, started_at, finished_at, created, updated, unchanged, failed,"
        " status, error, adopted, pending, warnings) VALUES"
        " ('wo', 35000, 36100, 1, 2, 3, 0, 'ok', NULL, 1, 0, 1),"        /* hour 0 */
        " ('wo', 36200, 39700, 10, 20, 0, 1, 'ok', '', 0, 0, 2),"        /* hour 1 */
        " ('wo', 30000, 35999, 1000, 0, 0, 0, 'ok', NULL, 0, 0, 0),"     /* before */
        " ('wo', 46800, 46900, 5000, 0, 0, 0, 'ok', NULL, 0, 0, 0),"     /* after */
        " ('wo', 39800, 39900, 100, 0, 0, 0, 'error', 'boom', 0, 5, 0)," /* hour 1 */
        " ('other', 36000, 36001, 70000, 0, 0, 0, 'ok', NULL, 0, 0, 0)");
    sql(st, "INSERT INTO state_run(flow, started_at, status) VALUES ('wo', 43300, 'running')");
    CHECK_INT(state_run_latest(st, "wo", &run, &e), MLC_OK);
    CHECK_STR(run.status, "running");
    CHECK_INT(run.started_at, 43300);
    CHECK_INT(run.finished_at, -1);
    CHECK(run.error == NULL);
    run_row_release(&run);
    CHECK_INT(state_run_latest(st, "other", &run, &e), MLC_OK);
    CHECK_INT(run.created, 70000);
    run_row_release(&run);
    /* the newest successful run, not the newest run */
    CHECK_INT(state_run_last_ok_at(st, "wo"), 46900);
    sql(st, "DELETE FROM state_run WHERE started_at IN (46800, 43300)");
    CHECK_INT(state_run_last_ok_at(st, "wo"), 39700);
    CHECK_INT(state_run_latest(st, "wo", &run, &e), MLC_OK);
    CHECK_STR(run.status, "error");
    CHECK_STR(run.error, "boom");
    CHECK_INT(run.finished_at, 39900);
    CHECK_INT(run.created, 100);
    CHECK_INT(run.pending, 5);
    run_row_release(&run);
    sql(st, "INSERT INTO state_run(flow, started_at, status) VALUES ('wo', 43300, 'running')");
    state_run_totals(st, "wo", &tot);
    CHECK_INT(tot.created, 1111);
    CHECK_INT(tot.updated, 22);
    CHECK_INT(tot.unchanged, 3);
    CHECK_INT(tot.failed, 1);
    CHECK_INT(tot.adopted, 1);
    CHECK_INT(tot.warnings, 3);
    /* every flow; a running run counts in the hour it started */
    state_run_records_hourly(st, 36000, 3, hours);
    CHECK_INT(hours[0], 3 + 70000);
    CHECK_INT(hours[1], 30 + 100);
    CHECK_INT(hours[2], 0);
    state_run_records_hourly(st, 39600, 3, hours);
    CHECK_INT(hours[0], 130);
    CHECK_INT(hours[1], 0); /* the running run started at 43300: 12:01 */
    CHECK_INT(hours[2], 0);
    state_run_records_hourly(st, 43200, 1, hours);
    CHECK_INT(hours[0], 0); /* it has created nothing yet */
    gone(st);
}

static void counts_and_oldest_items(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = fresh();
    struct ledger_row lr = { 0 };
    struct outbox_row rows[4];
    int fresh_row = 0, n;

    if (st == NULL) {
        return;
    }
    snprintf(lr.hash, sizeof(lr.hash), "h");
    snprintf(lr.target_key, sizeof(lr.target_key), "MFG-1");
    CHECK_INT(state_ledger_put(st, "wo", "1", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_put(st, "wo", "2", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_put(st, "co", "1", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_count(st, "wo"), 2);
    CHECK_INT(state_ledger_count(st, "co"), 1);
    CHECK_INT(state_outbox_put(st, "wo", "3", "create", NULL, "{}", "h3", "a3", &e), MLC_OK);
    CHECK_INT(state_outbox_put(st, "wo", "4", "create", NULL, "{}", "h4", "a4", &e), MLC_OK);
    CHECK_INT(state_outbox_put(st, "wo", "5", "update", "MFG-5", "{}", "h5", "a5", &e), MLC_OK);
    sql(st, "UPDATE state_outbox SET created_at = 1000 + CAST(source_key AS INTEGER)");
    CHECK_INT(state_outbox_oldest_at(st, "wo"), 1003);
    CHECK_INT(state_outbox_oldest_at(st, "co"), -1);
    /* only creates in flight are unanswered; a pending create or an update is not */
    n = state_outbox_next(st, "wo", "pending", NULL, rows, 4, 1LL << 62);
    CHECK_INT(n, 3);
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].source_key, "4") != 0) {
            CHECK_INT(state_outbox_mark_inflight(st, rows[i].id, rows[i].hash, &e), MLC_OK);
        }
        outbox_row_release(&rows[i]);
    }
    CHECK_INT(state_outbox_unanswered(st, "wo"), 1);
    CHECK_INT(state_outbox_unanswered(st, "co"), 0);
    CHECK_INT(state_inbox_put(st, 1, "hook", "e1", "{}", 5, &fresh_row, &e), MLC_OK);
    CHECK_INT(state_inbox_put(st, 2, "hook", "e2", "{}", 6, &fresh_row, &e), MLC_OK);
    sql(st, "UPDATE state_inbox SET stored_ms = 500 + seq");
    CHECK_INT(state_inbox_oldest_pending_ms(st), 501);
    /* in flight or done, a row is no longer the oldest pending one */
    CHECK_INT(state_inbox_mark_inflight(st, 1, &e), MLC_OK);
    CHECK_INT(state_inbox_oldest_pending_ms(st), 502);
    CHECK_INT(state_inbox_done(st, 2, "applied", "", &e), MLC_OK);
    CHECK_INT(state_inbox_oldest_pending_ms(st), -1);
    gone(st);
}

struct seen {
    int n;
    char keys[8][32];
    long long ids[8];
};

static void note_audit(void *ctx, const struct audit_entry *ae)
{
    struct seen *s = ctx;

    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", ae->source_key);
        s->ids[s->n] = ae->id;
    }
    s->n++;
}

static int audit(struct state *st, const char *q, int limit, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    return state_audit_recent(st, q, limit, note_audit, s);
}

static void audit_search_is_literal_prefix(void)
{
    struct state *st = fresh();
    struct seen s;

    if (st == NULL) {
        return;
    }
    CHECK_INT(state_audit(st, "wo", "A%1", "aid-1", "create", "MFG-10", NULL), MLC_OK);
    CHECK_INT(state_audit(st, "wo", "AB", "aid-2", "create", "MFG-11", NULL), MLC_OK);
    CHECK_INT(state_audit(st, "wo", "A_2", "aid-3", "update", "MFG-12", "d"), MLC_OK);
    CHECK_INT(state_audit(st, "wo", "x\\y", "aid-4", "create", "MFG-100", NULL), MLC_OK);
    sql(st, "INSERT INTO state_audit(at, flow, action) VALUES (7, 'wo', 'note')");
    /* no query: the newest first, NULL columns read as "" */
    CHECK_INT(audit(st, NULL, 0, &s), 5);
    CHECK_STR(s.keys[0], "");
    CHECK_STR(s.keys[4], "A%1");
    CHECK(s.ids[0] > s.ids[1]);
    CHECK_INT(audit(st, "", 2, &s), 2);
    CHECK_INT(audit(st, "", 501, &s), 5); /* out of range: the default, 50 */
    /* a prefix; LIKE's wildcards and escape in the query are literal */
    CHECK_INT(audit(st, "A", 0, &s), 3);
    CHECK_INT(audit(st, "A%", 0, &s), 1);
    CHECK_STR(s.keys[0], "A%1");
    CHECK_INT(audit(st, "A_", 0, &s), 1);
    CHECK_STR(s.keys[0], "A_2");
    CHECK_INT(audit(st, "x\\", 0, &s), 1);
    CHECK_INT(audit(st, "Q", 0, &s), 0);
    /* a target key (exact or prefix) or an exact audit ID */
    CHECK_INT(audit(st, "MFG-10", 0, &s), 2);
    CHECK_INT(audit(st, "aid-3", 0, &s), 1);
    CHECK_STR(s.keys[0], "A_2");
    CHECK_INT(audit(st, "aid-", 0, &s), 0);
    gone(st);
}

static void note_dead(void *ctx, const struct dead_entry *de)
{
    struct seen *s = ctx;

    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s/%s/%s/%d", de->flow, de->source_key,
                 de->error, de->attempts);
        s->ids[s->n] = de->id;
    }
    s->n++;
}

static void dead_letters_list_and_flow(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = fresh();
    struct seen s = { 0 };
    char flow[8];

    if (st == NULL) {
        return;
    }
    CHECK_INT(state_dead_put(st, "wo", "1", "{}", "h", "refused", "a1", 3, &e), MLC_OK);
    CHECK_INT(state_dead_put(st, "co", "2", "{}", "h", "bad date", "a2", 4, &e), MLC_OK);
    CHECK_INT(state_dead_put(st, "wo", "3", "{}", "h", "too long", "a3", 5, &e), MLC_OK);
    CHECK_INT(state_dead_list(st, NULL, 0, note_dead, &s), 3);
    CHECK_STR(s.keys[0], "wo/1/refused/3"); /* oldest first */
    CHECK_STR(s.keys[1], "co/2/bad date/4");
    memset(&s, 0, sizeof(s));
    CHECK_INT(state_dead_list(st, "wo", 0, note_dead, &s), 2);
    CHECK_STR(s.keys[1], "wo/3/too long/5");
    memset(&s, 0, sizeof(s));
    CHECK_INT(state_dead_list(st, NULL, 1, note_dead, &s), 1);
    CHECK_INT(state_dead_flow(st, s.ids[0], flow, sizeof(flow)), MLC_OK);
    CHECK_STR(flow, "wo");
    CHECK_INT(state_dead_flow(st, s.ids[0] + 100, flow, sizeof(flow)), MLC_E_NOTFOUND);
    gone(st);
}

/* The ledger keeps what a target connector reported of the list values it
 * set (lists), through later puts that bring none, and the sent mark and
 * fresh rows work as the pipeline relies on them. */
static void ledger_lists_and_sent_mark(void)
{
    struct state *st = fresh();
    struct mlc_errbuf e = { 0 };
    struct ledger_row lr = { "h1", "MFG-1", "10001", "aid", 0, "{\"labels\":[\"WO\"]}", 0 };
    char *lists = NULL;
    long long id1 = 0, id2 = 0, mid = 0, mat = 0;

    CHECK_INT(state_ledger_put(st, "f", "k1", &lr, &e), MLC_OK);
    lr.lists = NULL;
    snprintf(lr.hash, sizeof(lr.hash), "h2");
    CHECK_INT(state_ledger_put(st, "f", "k1", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_lists(st, "f", "k1", &lists, &e), MLC_OK);
    CHECK_STR(lists ? lists : "(null)", "{\"labels\":[\"WO\"]}");
    free(lists);
    CHECK_INT(state_ledger_get(st, "f", "k1", &lr, &e), MLC_OK);
    CHECK_STR(lr.hash, "h2");
    state_sent_get(st, "f", &mid, &mat);
    CHECK(mid == 0 && mat == 0);
    CHECK_INT(state_outbox_put_fresh(st, "f", "k2", "create", NULL, "{}", "h", "a", &id1, &e), MLC_OK);
    CHECK_INT(state_sent_mark(st, "f", id1, &e), MLC_OK);
    state_sent_get(st, "f", &mid, &mat);
    CHECK(mid == id1 && mat > 0);
    /* the outbox emptied, a later row still sorts above the mark */
    CHECK_INT(state_outbox_delete(st, id1, &e), MLC_OK);
    CHECK_INT(state_outbox_put_fresh(st, "f", "k3", "create", NULL, "{}", "h", "a", &id2, &e), MLC_OK);
    CHECK(id2 > id1);
    gone(st);
}

int main(void)
{
    RUN(views_of_an_empty_database);
    RUN(runs_latest_totals_and_hours);
    RUN(counts_and_oldest_items);
    RUN(audit_search_is_literal_prefix);
    RUN(dead_letters_list_and_flow);
    RUN(ledger_lists_and_sent_mark);
    return TT_DONE();
}
