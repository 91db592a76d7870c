/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: write-back config errors, and writeback_drain() against a
 * fake source connector (no network): placeholders, hold, echoes, unmapped
 * and unknown issues, stale events, retries and dead rows, audit rows; the
 * inbox/echo/kv state, a v1 database migrating, and an inbox put from a
 * second thread while the first holds the write lock.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agent/agent.h"
#include "agent/state.h"
#include "agent/state_sql.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "tinytest.h"

static char dbpath[64];

/* ---------------------------------------------------------------- config */

static const char *good_conf =
    "{\"orchestration\":\"MLC_UpdateWOStatus\","
    " \"inputs\":{\"WorkOrder\":\"{key}\",\"Status\":\"{code}\","
    "            \"Note\":\"{issue} is '{status}' ({audit_id}) {{literal}\"},"
    " \"status_map\":{\"To Do\":\"10\",\"In Progress\":\"40\",\"Done\":\"95\"},"
    " \"hold\":{\"statuses\":[\"Blocked\"],\"orchestration\":\"MLC_HoldWorkOrder\","
    "          \"inputs\":{\"WorkOrder\":\"{key}\",\"HoldCode\":\"H1\"}},"
    " \"echo_ttl\":\"10m\",\"agent_account\":\"acct-agent\"}";

/* Compile text; returns the error message ("" when it compiled). */
static const char *compile_msg(const char *text)
{
    static struct mlc_errbuf e;
    cJSON *c = cJSON_Parse(text);
    struct writeback *wb;

    mlc_err_reset(&e);
    if (c == NULL) {
        return "(bad test JSON)";
    }
    wb = writeback_compile(c, "flows.wo.writeback", &e);
    cJSON_Delete(c);
    if (wb != NULL) {
        writeback_free(wb);
        return "";
    }
    return e.set ? e.msg : "(no message)";
}

#define CHECK_MSG(text, want)                                                                   \
    do {                                                                                        \
        const char *tt_m = compile_msg(text);                                                   \
        if (strstr(tt_m, (want)) == NULL) {                                                     \
            fprintf(stderr, "  %s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, tt_m, \
                    (want));                                                                    \
            CHECK(0);                                                                           \
        }                                                                                       \
    } while (0)

static void config_compiles(void)
{
    CHECK_STR(compile_msg(good_conf), "");
    /* the smallest config: no hold, no echo_ttl, no agent_account */
    CHECK_STR(compile_msg("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},"
                          "\"status_map\":{\"Done\":\"95\"}}"),
              "");
    /* a hold alone is enough */
    CHECK_STR(
        compile_msg("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{},"
                    "\"hold\":{\"statuses\":[\"Blocked\"],\"orchestration\":\"H\","
                    "\"inputs\":{\"WO\":\"{key}\"}}}"),
        "");
}

static void config_errors_name_the_path(void)
{
    CHECK_MSG("[]", "flows.wo.writeback: expected an object");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{},\"bogus\":1}",
        "flows.wo.writeback.bogus: unknown setting (known: orchestration, inputs, verify, "
        "status_map, hold, echo_ttl, settle_after, agent_account)");
    CHECK_MSG("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"verify\":[],"
              "\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.verify: expected an object of source column -> value");
    CHECK_MSG("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"verify\":{\"SRST\":\"{cod}\"},"
              "\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.verify.SRST: unknown placeholder {cod}");
    CHECK_MSG("{\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.orchestration: required setting is missing");
    CHECK_MSG("{\"orchestration\":\"a/b\","
              "\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.orchestration: 'a/b' is not an orchestration name");
    CHECK_MSG("{\"orchestration\":\"X\",\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.inputs: required object of input name -> value");
    CHECK_MSG("{\"orchestration\":\"X\",\"inputs\":{\"WO\":7},\"status_map\":{\"Done\":\"95\"}}",
              "flows.wo.writeback.inputs.WO: expected a string");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{wo}\"},\"status_map\":{\"Done\":\"95\"}}",
        "flows.wo.writeback.inputs.WO: unknown placeholder {wo} (known: {key}, {code}");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key\"},\"status_map\":{\"Done\":\"95\"}}",
        "flows.wo.writeback.inputs.WO: '{' without '}'");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"}}",
        "flows.wo.writeback.status_map: required object of target status -> source status code");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":95}}",
        "flows.wo.writeback.status_map.Done: expected a non-empty status code string");
    CHECK_MSG("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},"
              "\"status_map\":{\"Done\":\"95\",\"DONE\":\"90\"}}",
              "flows.wo.writeback.status_map.DONE: listed twice");
    CHECK_MSG("{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{}}",
              "flows.wo.writeback.status_map: empty and no \"hold\"");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"echo_ttl\":\"soon\"}",
        "flows.wo.writeback.echo_ttl: 'soon' is not a duration");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"agent_account\":5}",
        "flows.wo.writeback.agent_account: expected a");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[\"Blocked\"],\"orchestration\":\"H\",\"inputs\":{\"WO\":\"{key}\"}"
        ","
        "\"x\":1}}",
        "flows.wo.writeback.hold.x: unknown setting (known: statuses, orchestration, inputs, verify)");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[],\"orchestration\":\"H\",\"inputs\":{\"WO\":\"{key}\"}}}",
        "flows.wo.writeback.hold.statuses: required list of target status names");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[\"Blocked\",3],\"orchestration\":\"H\",\"inputs\":{\"WO\":\"{key}"
        "\"}}}",
        "flows.wo.writeback.hold.statuses[1]: expected a status name string");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[\"done\"],\"orchestration\":\"H\",\"inputs\":{\"WO\":\"{key}\"}}}",
        "flows.wo.writeback.hold.statuses[0]: 'done' is also in status_map");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[\"Blocked\"],\"inputs\":{\"WO\":\"{key}\"}}}",
        "flows.wo.writeback.hold.orchestration: required setting is missing");
    CHECK_MSG(
        "{\"orchestration\":\"X\",\"inputs\":{\"WO\":\"{key}\"},\"status_map\":{\"Done\":\"95\"},"
        "\"hold\":{\"statuses\":[\"Blocked\"],\"orchestration\":\"H\",\"inputs\":{\"C\":\"{code}\"}"
        "}}",
        "flows.wo.writeback.hold.inputs.C: {code} has no value for a hold");
}

/* ----------------------------------------------------- a fake JDE source */

static struct {
    enum mlc_rc rc[8]; /* answers, in order; MLC_OK after the list */
    int n_rc;
    int calls;
    char name[64];
    char inputs[512];
    char audit_id[40];
} fake;

static enum mlc_rc fake_write_back(struct conn *c, const struct wb_command *cmd)
{
    enum mlc_rc rc = fake.calls < fake.n_rc ? fake.rc[fake.calls] : MLC_OK;
    char *js = mlc_json_print(cmd->inputs);

    fake.calls++;
    snprintf(fake.name, sizeof(fake.name), "%s", cmd->name);
    snprintf(fake.inputs, sizeof(fake.inputs), "%s", js);
    snprintf(fake.audit_id, sizeof(fake.audit_id), "%s", cmd->audit_id ? cmd->audit_id : "");
    free(js);
    if (rc != MLC_OK) {
        mlc_errf(&c->err, "fake orchestration %s failed (%s)", cmd->name, mlc_strerror(rc));
    }
    return rc;
}

static const struct connector fake_jde = {
    .name = "jde",
    .caps = CONN_SOURCE | CONN_WRITEBACK,
    .write_back = fake_write_back,
};

static const struct connector fake_jira = {
    .name = "jira",
    .caps = CONN_TARGET,
};

struct rig {
    struct agent a;
    struct conn conns[2];
    struct flow flow;
    struct state *st;
    long long ext;
};

static int rig_open(struct rig *r)
{
    struct mlc_errbuf e = { 0 };
    struct ledger_row lr = { 0 };
    cJSON *c = cJSON_Parse(good_conf);

    memset(r, 0, sizeof(*r));
    memset(&fake, 0, sizeof(fake));
    unlink(dbpath);
    if (state_open(&r->st, dbpath, &e) != MLC_OK) {
        fprintf(stderr, "  %s\n", mlc_err_msg(&e));
        cJSON_Delete(c);
        return -1;
    }
    r->conns[0].ops = &fake_jde;
    r->conns[0].name = "jde";
    r->conns[1].ops = &fake_jira;
    r->conns[1].name = "jira";
    r->flow.name = "wo";
    r->flow.src = &r->conns[0];
    r->flow.dst = &r->conns[1];
    r->flow.marker_prefix = "jdewo-";
    r->flow.max_attempts = 3;
    r->flow.enabled = 1;
    r->flow.wb = writeback_compile(c, "flows.wo.writeback", &e);
    cJSON_Delete(c);
    r->a.st = r->st;
    r->a.flows = &r->flow;
    r->a.n_flows = 1;
    r->a.conns = r->conns;
    r->a.n_conns = 2;
    snprintf(lr.hash, sizeof(lr.hash), "h1");
    snprintf(lr.target_key, sizeof(lr.target_key), "MFG-1");
    snprintf(lr.target_id, sizeof(lr.target_id), "10001");
    snprintf(lr.audit_id, sizeof(lr.audit_id), "aid-100001");
    state_ledger_put(r->st, "wo", "100001", &lr, &e);
    snprintf(lr.target_key, sizeof(lr.target_key), "MFG-2");
    snprintf(lr.audit_id, sizeof(lr.audit_id), "aid-100002");
    state_ledger_put(r->st, "wo", "100002", &lr, &e);
    return r->flow.wb ? 0 : -1;
}

static void rig_close(struct rig *r)
{
    writeback_free(r->flow.wb);
    state_close(r->st);
    unlink(dbpath);
}

/* A Jira webhook body: issue key, status change from -> to, author, labels, timestamp. */
static char *event(const char *issue, const char *from, const char *to, const char *author,
                   const char *label, long long ts)
{
    return mlc_xasprintf(
        "{\"timestamp\":%lld,\"webhookEvent\":\"jira:issue_updated\","
        "\"issue_event_type_name\":\"issue_generic\",\"user\":{\"accountId\":\"%s\"},"
        "\"issue\":{\"id\":\"1\",\"key\":\"%s\",\"fields\":{\"labels\":[\"jde\"%s%s%s]}},"
        "\"changelog\":{\"id\":\"9\",\"items\":[{\"field\":\"assignee\",\"toString\":\"x\"},"
        "{\"field\":\"status\",\"fieldtype\":\"jira\",\"fromString\":\"%s\",\"toString\":\"%s\"}]}"
        "}",
        ts, author, issue, label ? ",\"" : "", label ? label : "", label ? "\"" : "", from, to);
}

static void put(struct rig *r, char *body)
{
    struct mlc_errbuf e = { 0 };
    char ext[32];
    int fresh = 0;

    snprintf(ext, sizeof(ext), "d%lld", ++r->ext);
    CHECK_INT(state_inbox_put(r->st, 1000 + r->ext, "jira", ext, body, state_now_ms(), &fresh, &e),
              MLC_OK);
    CHECK_INT(fresh, 1);
    free(body);
}

static struct wb_stats drain(struct rig *r)
{
    struct mlc_errbuf e = { 0 };
    struct wb_stats ws;

    CHECK_INT(writeback_drain(&r->a, 50, &ws, &e), MLC_OK);
    return ws;
}

static long long q_int(struct state *st, const char *sql)
{
    sqlite3_stmt *q = NULL;
    long long v = -1;

    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        v = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    return v;
}

static const char *q_text(struct state *st, const char *sql)
{
    static char out[1024];
    sqlite3_stmt *q = NULL;

    out[0] = '\0';
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        snprintf(out, sizeof(out), "%s",
                 sqlite3_column_text(q, 0) ? (const char *)sqlite3_column_text(q, 0) : "");
    }
    sqlite3_finalize(q);
    return out;
}

static void drain_applies_a_mapped_status(void)
{
    struct rig r;
    struct wb_stats ws;

    if (rig_open(&r) != 0) {
        CHECK(0);
        return;
    }
    put(&r, event("MFG-1", "To Do", "In Progress", "acct-maria", NULL, 1000));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(fake.calls, 1);
    CHECK_STR(fake.name, "MLC_UpdateWOStatus");
    CHECK_STR(fake.inputs, "{\"WorkOrder\":\"100001\",\"Status\":\"40\","
                           "\"Note\":\"MFG-1 is 'In Progress' (aid-100001) {literal}\"}");
    CHECK_STR(fake.audit_id, "aid-100001");
    CHECK_INT(state_inbox_pending(r.st), 0);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1001"), "applied");
    CHECK_INT(
        q_int(r.st,
              "SELECT count(*) FROM state_audit WHERE action = 'writeback' AND flow = 'wo'"
              " AND source_key = '100001' AND audit_id = 'aid-100001' AND target_key = 'MFG-1'"
              " AND detail LIKE 'orchestration MLC_UpdateWOStatus, code 40 %'"),
        1);
    CHECK_INT(state_echo_has(r.st, "jde", "100001", "status", "40", state_now_ms()), 1);
    CHECK_INT(q_int(r.st, "SELECT wb_at FROM state_ledger WHERE source_key = '100001'"), 1000);
    /* nothing left: a second drain calls nothing */
    ws = drain(&r);
    CHECK_INT(ws.applied + ws.ignored + ws.echoes + ws.failed + ws.retry, 0);
    CHECK_INT(fake.calls, 1);
    /* the same change delivered again under another id: the echo table drops it */
    put(&r, event("MFG-1", "To Do", "in progress", "acct-maria", NULL, 1000));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(fake.calls, 1);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1002"), "echo");
    /* a newer, different status is applied and replaces the echo entry */
    put(&r, event("MFG-1", "In Progress", "Done", "acct-maria", NULL, 2000));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK(strstr(fake.inputs, "\"Status\":\"95\"") != NULL);
    CHECK_INT(state_echo_has(r.st, "jde", "100001", "status", "40", state_now_ms()), 0);
    /* ... so moving back to In Progress is a real change again */
    put(&r, event("MFG-1", "Done", "In Progress", "acct-maria", NULL, 3000));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(fake.calls, 3);
    /* an older event arriving late cannot undo the newer one */
    put(&r, event("MFG-1", "To Do", "Done", "acct-maria", NULL, 1500));
    ws = drain(&r);
    CHECK_INT(ws.ignored, 1);
    CHECK_INT(fake.calls, 3);
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1005"), "stale") != NULL);
    rig_close(&r);
}

static void drain_holds_echoes_and_ignores(void)
{
    struct rig r;
    struct wb_stats ws;

    if (rig_open(&r) != 0) {
        CHECK(0);
        return;
    }
    /* hold */
    put(&r, event("MFG-2", "In Progress", "Blocked", "acct-maria", NULL, 1000));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_STR(fake.name, "MLC_HoldWorkOrder");
    CHECK_STR(fake.inputs, "{\"WorkOrder\":\"100002\",\"HoldCode\":\"H1\"}");
    CHECK_INT(q_int(r.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback'"
                          " AND audit_id = 'aid-100002' AND detail LIKE 'orchestration "
                          "MLC_HoldWorkOrder, hold %'"),
              1);
    /* the agent's own account */
    put(&r, event("MFG-1", "To Do", "Done", "acct-agent", NULL, 1000));
    /* unmapped status */
    put(&r, event("MFG-1", "To Do", "In Review", "acct-maria", NULL, 1000));
    /* unknown issue, no marker */
    put(&r, event("MFG-99", "To Do", "Done", "acct-maria", "other-label", 1000));
    /* unknown to the ledger, but its marker label names the work order */
    put(&r, event("MFG-77", "To Do", "Done", "acct-maria", "jdewo-100077", 1000));
    /* no status change at all, and something that is not JSON */
    put(&r, mlc_xstrdup("{\"webhookEvent\":\"jira:issue_updated\",\"issue\":{\"key\":\"MFG-1\"},"
                        "\"changelog\":{\"items\":[{\"field\":\"summary\",\"toString\":\"x\"}]}}"));
    put(&r, mlc_xstrdup("{\"webhookEvent\":"));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(ws.ignored, 3);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(ws.failed, 1);
    CHECK_INT(fake.calls, 2);
    CHECK_STR(
        fake.inputs,
        "{\"WorkOrder\":\"100077\",\"Status\":\"95\",\"Note\":\"MFG-77 is 'Done' () {literal}\"}");
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1002"), "echo");
    CHECK_INT(q_int(r.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_echo'"
                          " AND target_key = 'MFG-1' AND detail LIKE '%own account%'"),
              1);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1003"), "ignored");
    CHECK_INT(q_int(r.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_ignored'"
                          " AND source_key = '100001' AND detail LIKE '%''In Review'' is not in%'"),
              1);
    CHECK_INT(q_int(r.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_ignored'"
                          " AND target_key = 'MFG-99' AND detail LIKE 'unknown issue MFG-99%'"),
              1);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1005"), "applied");
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1006"),
                 "no status change") != NULL);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1007"), "dead");
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1007"), "invalid JSON") !=
          NULL);
    CHECK_INT(state_inbox_count(r.st, "dead"), 1);
    rig_close(&r);
}

static void drain_retries_then_gives_up(void)
{
    struct rig r;
    struct wb_stats ws;
    long long now = state_now_ms();

    if (rig_open(&r) != 0) {
        CHECK(0);
        return;
    }
    /* a network failure: retried later, and the other row of that system waits with it */
    fake.rc[0] = MLC_E_NET;
    fake.n_rc = 1;
    put(&r, event("MFG-1", "To Do", "Done", "acct-maria", NULL, 1000));
    put(&r, event("MFG-2", "To Do", "Done", "acct-maria", NULL, 1000));
    ws = drain(&r);
    CHECK_INT(ws.retry, 1);
    CHECK_INT(fake.calls, 1);
    CHECK_INT(state_inbox_pending(r.st), 2);
    CHECK_INT(q_int(r.st, "SELECT attempts FROM state_inbox WHERE seq = 1001"), 1);
    CHECK(q_int(r.st, "SELECT next_ms FROM state_inbox WHERE seq = 1001") >= now + 2500);
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1001"),
                 "attempt 1 of 3") != NULL);
    ws = drain(&r);
    CHECK_INT(fake.calls, 1); /* the system is left alone until the retry is due */
    writeback_free(r.flow.wb);
    {
        /* a fresh process (as `inbox apply` is) retries at once */
        struct mlc_errbuf e = { 0 };
        cJSON *c = cJSON_Parse(good_conf);
        r.flow.wb = writeback_compile(c, "flows.wo.writeback", &e);
        cJSON_Delete(c);
    }
    CHECK_INT(state_inbox_retry_now(r.st), 1);
    ws = drain(&r);
    CHECK_INT(ws.applied, 2);
    CHECK_INT(fake.calls, 3);
    CHECK_INT(state_inbox_pending(r.st), 0);
    /* a rejection is final at once; a transient failure on the last attempt too */
    memset(&fake, 0, sizeof(fake));
    fake.rc[0] = MLC_E_REJECTED;
    fake.n_rc = 1;
    put(&r, event("MFG-1", "Done", "To Do", "acct-maria", NULL, 5000));
    ws = drain(&r);
    CHECK_INT(ws.failed, 1);
    CHECK_STR(q_text(r.st, "SELECT state FROM state_inbox WHERE seq = 1003"), "dead");
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1003"),
                 "fake orchestration MLC_UpdateWOStatus failed") != NULL);
    CHECK_INT(q_int(r.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_failed'"
                          " AND source_key = '100001' AND audit_id = 'aid-100001'"),
              1);
    r.flow.max_attempts = 1;
    memset(&fake, 0, sizeof(fake));
    fake.rc[0] = MLC_E_AUTH;
    fake.n_rc = 1;
    put(&r, event("MFG-2", "Done", "To Do", "acct-maria", NULL, 5000));
    ws = drain(&r);
    CHECK_INT(ws.failed, 1);
    CHECK(strstr(q_text(r.st, "SELECT detail FROM state_inbox WHERE seq = 1004"),
                 "failed on every attempt") != NULL);
    CHECK_INT(state_inbox_count(r.st, "dead"), 2);
    rig_close(&r);
}

/* ------------------------------------------------------------------ state */

static void inbox_echo_kv_state(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct inbox_row rows[4];
    char *v = NULL;
    int fresh = -1, n;
    long long now = state_now_ms();

    unlink(dbpath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    CHECK_INT(state_inbox_local_seq(st), -1);
    CHECK_INT(state_inbox_put(st, 7, "jira", "w-1", "{\"a\":1}", 123, &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 1);
    /* the relay re-sends seq 7; Jira re-sends w-1 under another seq */
    CHECK_INT(state_inbox_put(st, 7, "jira", "w-other", "{}", 124, &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 0);
    CHECK_INT(state_inbox_put(st, 8, "jira", "w-1", "{}", 125, &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 0);
    /* the same id from another kind is another delivery; a NULL id never collides */
    CHECK_INT(state_inbox_put(st, 9, "zoho", "w-1", "{\"z\":1}", 126, &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 1);
    CHECK_INT(
        state_inbox_put(st, state_inbox_local_seq(st), "jira-poll", NULL, "{}", 127, &fresh, &e),
        MLC_OK);
    CHECK_INT(fresh, 1);
    CHECK_INT(state_inbox_local_seq(st), -2);
    CHECK_INT(state_inbox_pending(st), 3);
    n = state_inbox_next(st, rows, 4, now + 1000);
    CHECK_INT(n, 3);
    CHECK_INT(rows[0].seq, 7);
    CHECK_STR(rows[0].kind, "jira");
    CHECK_STR(rows[0].ext_id, "w-1");
    CHECK_STR(rows[0].body, "{\"a\":1}");
    CHECK_INT(rows[0].received_ms, 123);
    CHECK(rows[0].stored_ms >= now);
    CHECK_INT(rows[2].seq, -1);
    CHECK(rows[2].ext_id == NULL);
    for (int i = 0; i < n; i++) {
        inbox_row_release(&rows[i]);
    }
    CHECK_INT(state_inbox_retry_later(st, 7, now + 60000, "boom", &e), MLC_OK);
    n = state_inbox_next(st, rows, 4, now + 1000);
    CHECK_INT(n, 2);
    CHECK_INT(rows[0].seq, 9);
    for (int i = 0; i < n; i++) {
        inbox_row_release(&rows[i]);
    }
    n = state_inbox_next(st, rows, 4, now + 61000);
    CHECK_INT(n, 3);
    CHECK_INT(rows[0].attempts, 1);
    for (int i = 0; i < n; i++) {
        inbox_row_release(&rows[i]);
    }
    CHECK_INT(state_inbox_done(st, 9, "ignored", "no zoho write-back", &e), MLC_OK);
    CHECK_INT(state_inbox_done(st, -1, "dead", "broken", &e), MLC_OK);
    CHECK_INT(state_inbox_pending(st), 1);
    CHECK_INT(state_inbox_count(st, "dead"), 1);
    CHECK_INT(state_inbox_retry_now(st), 1);
    CHECK_INT(state_inbox_prune(st, state_now_ms() + 1000), 1); /* the ignored row; dead stays */
    CHECK_INT(state_inbox_count(st, "dead"), 1);
    CHECK_INT(state_inbox_count(st, "ignored"), 0);

    CHECK_INT(state_echo_put(st, "jde", "100001", "status", "40", now + 60000, &e), MLC_OK);
    CHECK_INT(state_echo_has(st, "jde", "100001", "status", "40", now), 1);
    CHECK_INT(state_echo_has(st, "jde", "100001", "status", "40", now + 60000), 0); /* expired */
    CHECK_INT(state_echo_has(st, "jde", "100001", "status", "95", now), 0);
    CHECK_INT(state_echo_has(st, "jde", "100002", "status", "40", now), 0);
    CHECK_INT(state_echo_put(st, "jde", "100001", "status", "95", now + 60000, &e), MLC_OK);
    CHECK_INT(state_echo_has(st, "jde", "100001", "status", "40", now), 0); /* replaced */
    CHECK_INT(state_echo_has(st, "jde", "100001", "status", "95", now), 1);

    CHECK_INT(state_kv_get(st, "watch.wo", &v, &e), MLC_OK);
    CHECK(v == NULL);
    CHECK_INT(state_kv_set(st, "watch.wo", "{\"mode\":\"admin\"}", &e), MLC_OK);
    CHECK_INT(state_kv_set(st, "watch.wo", "{\"mode\":\"poll\"}", &e), MLC_OK);
    CHECK_INT(state_kv_get(st, "watch.wo", &v, &e), MLC_OK);
    CHECK_STR(v, "{\"mode\":\"poll\"}");
    free(v);
    state_close(st);
    unlink(dbpath);
}

static void ledger_reverse_lookup(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct ledger_row lr = { 0 }, got;
    char key[64];

    unlink(dbpath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    snprintf(lr.hash, sizeof(lr.hash), "h");
    snprintf(lr.target_key, sizeof(lr.target_key), "MFG-5");
    snprintf(lr.audit_id, sizeof(lr.audit_id), "aid5");
    CHECK_INT(state_ledger_put(st, "wo", "100005", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_by_target(st, "wo", "MFG-5", key, sizeof(key), &got, &e), MLC_OK);
    CHECK_STR(key, "100005");
    CHECK_STR(got.audit_id, "aid5");
    CHECK_INT(got.wb_at, 0);
    CHECK_INT(state_ledger_by_target(st, "other", "MFG-5", key, sizeof(key), &got, &e),
              MLC_E_NOTFOUND);
    CHECK_INT(state_ledger_by_target(st, "wo", "MFG-6", key, sizeof(key), &got, &e),
              MLC_E_NOTFOUND);
    CHECK_INT(state_ledger_wb_mark(st, "wo", "100005", 2000, &e), MLC_OK);
    CHECK_INT(state_ledger_wb_mark(st, "wo", "100005", 1000, &e), MLC_OK); /* never goes back */
    CHECK_INT(state_ledger_get(st, "wo", "100005", &got, &e), MLC_OK);
    CHECK_INT(got.wb_at, 2000);
    /* a later sync of the record keeps it */
    CHECK_INT(state_ledger_put(st, "wo", "100005", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_get(st, "wo", "100005", &got, &e), MLC_OK);
    CHECK_INT(got.wb_at, 2000);
    /* the lookup uses the index */
    {
        sqlite3_stmt *q = NULL;
        int uses = 0;
        sqlite3_prepare_v2(st->db,
                           "EXPLAIN QUERY PLAN SELECT source_key FROM state_ledger"
                           " WHERE flow = 'wo' AND target_key = 'MFG-5'",
                           -1, &q, NULL);
        while (q && sqlite3_step(q) == SQLITE_ROW) {
            uses |= strstr((const char *)sqlite3_column_text(q, 3), "state_ledger_target") != NULL;
        }
        sqlite3_finalize(q);
        CHECK(uses);
    }
    state_close(st);
    unlink(dbpath);
}

static void v1_database_migrates(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct ledger_row got;
    sqlite3 *db = NULL;
    char key[64];
    int fresh = 0;

    unlink(dbpath);
    /* a database exactly as a version-1 agent left it */
    CHECK(sqlite3_open(dbpath, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, state_migrations[0], NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(
              db,
              "INSERT INTO state_ledger(flow, source_key, hash, target_key, target_id, audit_id,"
              " created_at, updated_at) VALUES('wo', '100001', 'h', 'MFG-1', '1', 'aid1', 1, 1);"
              "PRAGMA user_version = 1;",
              NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    CHECK_INT(q_int(st, "PRAGMA user_version"), STATE_SCHEMA_VERSION);
    CHECK_INT(STATE_SCHEMA_VERSION, 3);
    /* version 3's columns: in-flight times, managed lists, run counts */
    CHECK_INT(q_int(st, "SELECT count(*) FROM pragma_table_info('state_outbox') WHERE name = 'sent_at'"), 1);
    CHECK_INT(q_int(st, "SELECT count(*) FROM pragma_table_info('state_ledger') WHERE name = 'lists'"), 1);
    CHECK_INT(q_int(st, "SELECT count(*) FROM pragma_table_info('state_inbox') WHERE name = 'sent_ms'"), 1);
    CHECK_INT(q_int(st, "SELECT count(*) FROM pragma_table_info('state_run') WHERE name IN "
                        "('adopted', 'pending', 'warnings')"), 3);
    CHECK_INT(state_ledger_by_target(st, "wo", "MFG-1", key, sizeof(key), &got, &e), MLC_OK);
    CHECK_STR(key, "100001");
    CHECK_STR(got.audit_id, "aid1");
    CHECK_INT(got.wb_at, 0);
    CHECK_INT(state_inbox_put(st, 1, "jira", "x", "{}", 0, &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 1);
    state_close(st);
    st = NULL;
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK); /* nothing runs twice */
    CHECK_INT(state_inbox_pending(st), 1);
    state_close(st);
    (void)state_sql;
    unlink(dbpath);
}

/* A second handle (the tunnel thread's) stores a delivery while the first
 * holds the write lock: it waits (busy_timeout) instead of failing. */
struct putter {
    enum mlc_rc rc;
    int fresh;
    char msg[256];
};

static void *put_thread(void *arg)
{
    struct putter *p = arg;
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;

    p->rc = state_open(&st, dbpath, &e);
    if (p->rc == MLC_OK) {
        p->rc = state_inbox_put(st, 42, "jira", "from-thread", "{}", 0, &p->fresh, &e);
        state_close(st);
    }
    snprintf(p->msg, sizeof(p->msg), "%s", mlc_err_msg(&e));
    return NULL;
}

static void inbox_put_waits_for_the_writer(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct putter p = { 0 };
    struct timespec ts = { 0, 300 * 1000000L };
    pthread_t th;

    unlink(dbpath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    CHECK_INT(state_begin(st, &e), MLC_OK);
    CHECK_INT(state_kv_set(st, "k", "v", &e), MLC_OK);
    CHECK(pthread_create(&th, NULL, put_thread, &p) == 0);
    nanosleep(&ts, NULL);
    CHECK_INT(state_commit(st, &e), MLC_OK);
    pthread_join(th, NULL);
    if (p.rc != MLC_OK) {
        fprintf(stderr, "  thread: %s\n", p.msg);
    }
    CHECK_INT(p.rc, MLC_OK);
    CHECK_INT(p.fresh, 1);
    CHECK_INT(state_inbox_pending(st), 1);
    /* a put waits for the WAL fsync (FULL = 2), then the handle is back to NORMAL (1) */
    CHECK_INT(state_inbox_put(st, 43, "jira", "here", "{}", 0, &p.fresh, &e), MLC_OK);
    CHECK_INT(q_int(st, "PRAGMA synchronous"), 1);
    state_close(st);
    unlink(dbpath);
}

int main(void)
{
    mlc_log_level = MLC_LOG_ERROR;
    snprintf(dbpath, sizeof(dbpath), "/tmp/mlc-test-wb-%d.db", (int)getpid());
    RUN(config_compiles);
    RUN(config_errors_name_the_path);
    RUN(drain_applies_a_mapped_status);
    RUN(drain_holds_echoes_and_ignores);
    RUN(drain_retries_then_gives_up);
    RUN(inbox_echo_kv_state);
    RUN(ledger_reverse_lookup);
    RUN(v1_database_migrates);
    RUN(inbox_put_waits_for_the_writer);
    return TT_DONE();
}
