/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: write-back and the pipeline through a connector the core has
 * never heard of (memconn.h, registered at run time): a real agent loaded
 * from a config file, synced with pipeline_sync() and written back with
 * writeback_drain(). Config errors; status, hold and field write-back; echoes
 * (agent account, echo table, the source holding the value); conflicts under
 * each rule; stale, unknown and unmapped changes; retries, dead rows and
 * settling a lost answer; polled changes; batching, lost creates found by
 * find(), and an upsert target. Then the inbox/echo/kv state, a v1 database
 * migrating, and an inbox put from a second thread while the first holds
 * the write lock.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/state.h"
#include "agent/state_sql.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "memconn.h"
#include "tinytest.h"

static char dbpath[64], keypath[64], confpath[64];

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

/* ---------------------------------------------------------------- config */

#define MAPPING                                                                       \
    "{\"summary\":\"{NAME}\",\"duedate\":{\"from\":\"DUE\",\"date\":\"yyyymmdd\"},"   \
    "\"priority\":{\"from\":\"PRI\",\"map\":{\"1\":\"High\",\"2\":\"Low\",\"3\":\"Medium\"}}}"

/* status with verify (read back after a lost answer), a hold, two fields */
#define WB_DEFAULT                                                                          \
    "{\"action\":\"status {key}={code} note {issue} is '{status}' ({audit_id}) {{literal}\","  \
    " \"verify\":{\"ST\":\"{code}\"},"                                                      \
    " \"status_map\":{\"To Do\":\"10\",\"In Progress\":\"40\",\"Done\":\"95\"},"            \
    " \"hold\":{\"statuses\":[\"Blocked\"],\"action\":\"hold {key}\",\"verify\":{\"HOLD\":\"H1\"}}," \
    " \"fields\":{\"duedate\":{\"action\":\"due {key}={value}\",\"conflict\":\"target_wins\"}," \
    "            \"priority\":{\"action\":\"prio {key}={value} ({issue})\"}},"              \
    " \"settle_after\":\"0s\",\"agent_account\":\"acct-agent\"}"

/* Compile a writeback object for memtest and the flow's mapping; the error
 * message ("" when it compiled). */
static const char *compile_msg(const char *text)
{
    static struct mlc_errbuf e;
    cJSON *c = cJSON_Parse(text), *m = cJSON_Parse(MAPPING);
    struct mapping *map = mapping_compile(m, "flows.wo.mapping", &e);
    struct writeback *wb;

    mlc_err_reset(&e);
    if (c == NULL || map == NULL) {
        cJSON_Delete(c);
        cJSON_Delete(m);
        mapping_free(map);
        return "(bad test JSON)";
    }
    wb = writeback_compile(c, "flows.wo.writeback", &memconn, map, &e);
    cJSON_Delete(c);
    cJSON_Delete(m);
    mapping_free(map);
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

#define ST "\"status_map\":{\"Done\":\"95\"}"
#define ACT "\"action\":\"s {key}\""
#define HOLD(extra) ",\"hold\":{\"statuses\":[\"Blocked\"],\"action\":\"h {key}\"" extra "}"

static void config_compiles(void)
{
    CHECK_STR(compile_msg(WB_DEFAULT), "");
    /* the smallest: a status map alone; a hold alone; a field alone */
    CHECK_STR(compile_msg("{" ACT "," ST "}"), "");
    CHECK_STR(compile_msg("{" ACT ",\"status_map\":{}" HOLD("") "}"), "");
    CHECK_STR(compile_msg("{\"fields\":{\"duedate\":{" ACT ",\"conflict\":\"newest_wins\"}}}"), "");
}

static void config_errors_name_the_path(void)
{
    CHECK_MSG("[]", "flows.wo.writeback: expected an object");
    CHECK_MSG("{" ACT "," ST ",\"bogus\":1}",
              "flows.wo.writeback.bogus: unknown setting (known: verify, status_map, hold, fields, "
              "echo_ttl, settle_after, conflict, agent_account, action)");
    CHECK_MSG("{" ACT ",\"verify\":[]," ST "}",
              "flows.wo.writeback.verify: expected an object of source column -> value");
    CHECK_MSG("{" ACT ",\"verify\":{\"ST\":\"{cod}\"}," ST "}",
              "flows.wo.writeback.verify.ST: unknown placeholder {cod}");
    /* the connector's own members, checked by its wb_plan */
    CHECK_MSG("{" ST "}", "flows.wo.writeback.action: required");
    CHECK_MSG("{\"action\":\"s {wo}\"," ST "}",
              "flows.wo.writeback.action: unknown placeholder {wo} (known here: {key}, {code}");
    CHECK_MSG("{\"action\":\"s {key\"," ST "}", "flows.wo.writeback.action: '{' without '}'");
    CHECK_MSG("{" ACT "}", "flows.wo.writeback: no status_map, hold or fields");
    CHECK_MSG("{" ACT ",\"status_map\":{\"Done\":95}}",
              "flows.wo.writeback.status_map.Done: expected a non-empty status code string");
    CHECK_MSG("{" ACT ",\"status_map\":{\"Done\":\"95\",\"DONE\":\"90\"}}",
              "flows.wo.writeback.status_map.DONE: listed twice");
    CHECK_MSG("{" ACT "," ST ",\"echo_ttl\":\"soon\"}",
              "flows.wo.writeback.echo_ttl: 'soon' is not a duration");
    CHECK_MSG("{" ACT "," ST ",\"agent_account\":5}", "flows.wo.writeback.agent_account: expected a");
    CHECK_MSG("{" ACT "," ST HOLD(",\"x\":1") "}",
              "flows.wo.writeback.hold.x: unknown setting (known: statuses, verify, action)");
    CHECK_MSG("{" ACT "," ST ",\"hold\":{\"statuses\":[],\"action\":\"h\"}}",
              "flows.wo.writeback.hold.statuses: required list of target status names");
    CHECK_MSG("{" ACT "," ST ",\"hold\":{\"statuses\":[\"Blocked\",3],\"action\":\"h\"}}",
              "flows.wo.writeback.hold.statuses[1]: expected a status name string");
    CHECK_MSG("{" ACT "," ST ",\"hold\":{\"statuses\":[\"done\"],\"action\":\"h\"}}",
              "flows.wo.writeback.hold.statuses[0]: 'done' is also in status_map");
    CHECK_MSG("{" ACT "," ST ",\"hold\":{\"statuses\":[\"Blocked\"]}}",
              "flows.wo.writeback.hold.action: required");
    CHECK_MSG("{" ACT "," ST ",\"hold\":{\"statuses\":[\"Blocked\"],\"action\":\"h {code}\"}}",
              "flows.wo.writeback.hold.action: unknown placeholder {code}");
    /* fields */
    CHECK_MSG("{\"fields\":[]}", "flows.wo.writeback.fields: expected an object");
    CHECK_MSG("{\"fields\":{\"status\":{" ACT "}}}",
              "flows.wo.writeback.fields.status: the status is written back with status_map");
    CHECK_MSG("{\"fields\":{\"summary\":{" ACT "}}}",
              "flows.wo.writeback.fields.summary: the flow's mapping has no rule for 'summary' "
              "that can be reversed");
    CHECK_MSG("{\"fields\":{\"duedate\":{" ACT ",\"conflict\":\"mine\"}}}",
              "flows.wo.writeback.fields.duedate.conflict: 'mine' is not a rule (source_wins, "
              "target_wins, newest_wins)");
    CHECK_MSG("{\"fields\":{\"duedate\":{\"action\":\"d {code}\"}}}",
              "flows.wo.writeback.fields.duedate.action: unknown placeholder {code}");
    CHECK_MSG("{\"fields\":{\"duedate\":{" ACT ",\"y\":2}}}",
              "flows.wo.writeback.fields.duedate.y: unknown setting");
}

/* ------------------------------------------------------------------- rig */

struct rig {
    struct agent a;
    long long seq;
    char wb[2048];
    char dst_type[16];
};

static int rig_load(struct rig *r)
{
    struct mlc_errbuf e = { 0 };

    memset(&r->a, 0, sizeof(r->a));
    if (agent_load(&r->a, confpath, &e) != MLC_OK || agent_open(&r->a, &e) != MLC_OK) {
        fprintf(stderr, "  rig: %s\n", mlc_err_msg(&e));
        return -1;
    }
    return 0;
}

/* A config of one flow "wo" from src to dst (both memtest, or dst_type),
 * with wb as its writeback (NULL: the default; "" none). Source records
 * 100001..100003 are there; the ledger is empty until a sync. */
static int rig_open(struct rig *r, const char *wb, const char *dst_type)
{
    FILE *fp;

    memset(r, 0, sizeof(*r));
    mem_reset();
    unlink(dbpath);
    unlink(keypath);
    r->seq = 1000;
    snprintf(r->wb, sizeof(r->wb), "%s", wb ? wb : WB_DEFAULT);
    snprintf(r->dst_type, sizeof(r->dst_type), "%s", dst_type ? dst_type : "memtest");
    fp = fopen(confpath, "w");
    if (fp == NULL) {
        return -1;
    }
    fprintf(fp,
            "{\"agent\":{\"state_db\":\"%s\",\"key_file\":\"%s\",\"status_listen\":\"off\","
            "\"log_level\":\"error\"},"
            " \"systems\":{\"src\":{\"type\":\"memtest\"},\"dst\":{\"type\":\"%s\"}},"
            " \"flows\":{\"wo\":{\"source\":{\"system\":\"src\",\"table\":\"WO\"},"
            "  \"target\":{\"system\":\"dst\",\"marker_prefix\":\"memwo-\"},"
            "  \"schedule\":\"manual\",\"max_attempts\":3,\"settle_after\":\"0s\","
            "  \"mapping\":" MAPPING "%s%s}}}",
            dbpath, keypath, r->dst_type, r->wb[0] ? ",\"writeback\":" : "", r->wb);
    fclose(fp);
    mem_src_put("100001", "{\"NAME\":\"Pump\",\"DUE\":\"20261201\",\"PRI\":\"1\",\"ST\":\"10\"}", 1000);
    mem_src_put("100002", "{\"NAME\":\"Valve\",\"DUE\":\"20261202\",\"PRI\":\"2\",\"ST\":\"10\"}", 1000);
    mem_src_put("100003", "{\"NAME\":\"Gear\",\"DUE\":\"\",\"PRI\":\"1\",\"ST\":\"10\"}", 1000);
    return rig_load(r);
}

/* A fresh process on the same state (as `inbox apply` or a restart is). */
static int rig_reopen(struct rig *r)
{
    agent_release(&r->a);
    return rig_load(r);
}

static void rig_close(struct rig *r)
{
    agent_release(&r->a);
    unlink(dbpath);
    unlink(keypath);
    unlink(confpath);
    mem_reset();
}

static struct sync_stats sync_flow(struct rig *r, enum mlc_rc want)
{
    struct mlc_errbuf e = { 0 };
    struct sync_stats ss;
    enum mlc_rc rc = pipeline_sync(&r->a, &r->a.flows[0], 0, &ss, &e);

    if (rc != want) {
        fprintf(stderr, "  sync: %s (%s)\n", mlc_strerror(rc), mlc_err_msg(&e));
    }
    CHECK_INT(rc, want);
    return ss;
}

/* A memtest change event: one field of record rec changed from -> to. */
static char *ev(const char *rec, const char *author, long long at, const char *label,
                const char *field, const char *from, const char *to)
{
    return mlc_xasprintf("{\"rec\":\"%s\",\"author\":\"%s\",\"at\":%lld,\"labels\":[\"x\"%s%s%s],"
                         "\"changes\":[{\"f\":\"summary\",\"from\":\"a\",\"to\":\"b\"},"
                         "{\"f\":\"%s\",\"from\":\"%s\",\"to\":\"%s\"}]}",
                         rec, author, at, label ? ",\"" : "", label ? label : "",
                         label ? "\"" : "", field, from, to);
}

/* Store a delivery of kind (body is freed); returns its seq. */
static long long put_kind(struct rig *r, const char *kind, char *body)
{
    struct mlc_errbuf e = { 0 };
    char ext[32];
    int fresh = 0;

    r->seq++;
    snprintf(ext, sizeof(ext), "d%lld", r->seq);
    CHECK_INT(state_inbox_put(r->a.st, r->seq, kind, ext, body, state_now_ms(), &fresh, &e), MLC_OK);
    CHECK_INT(fresh, 1);
    free(body);
    return r->seq;
}

static long long put(struct rig *r, char *body)
{
    return put_kind(r, "memtest", body);
}

static struct wb_stats drain(struct rig *r)
{
    struct mlc_errbuf e = { 0 };
    struct wb_stats ws;

    CHECK_INT(writeback_drain(&r->a, 50, &ws, &e), MLC_OK);
    return ws;
}

static const char *row_state(struct rig *r, long long seq)
{
    static char out[64];
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT state FROM state_inbox WHERE seq = %lld", seq);
    snprintf(out, sizeof(out), "%s", q_text(r->a.st, sql));
    return out;
}

static const char *row_detail(struct rig *r, long long seq)
{
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT detail FROM state_inbox WHERE seq = %lld", seq);
    return q_text(r->a.st, sql);
}

/* Audit rows of action whose detail is LIKE pattern (quotes are escaped). */
static long long audits(struct rig *r, const char *action, const char *like)
{
    struct mlc_buf b = MLC_BUF_INIT;
    long long n;

    mlc_buf_addf(&b, "SELECT count(*) FROM state_audit WHERE action = '%s' AND detail LIKE '",
                 action);
    for (const char *p = like; *p; p++) {
        mlc_buf_addf(&b, "%s%c", *p == '\'' ? "'" : "", *p);
    }
    mlc_buf_addf(&b, "'");
    n = q_int(r->a.st, mlc_buf_str(&b));
    mlc_buf_release(&b);
    return n;
}

/* Open a rig and sync it: 100001 -> T-1, 100002 -> T-2, 100003 -> T-3. */
static int rig_synced(struct rig *r, const char *wb, const char *dst_type)
{
    struct sync_stats ss;

    if (rig_open(r, wb, dst_type) != 0) {
        return -1;
    }
    ss = sync_flow(r, MLC_OK);
    CHECK_INT(ss.created, 3);
    CHECK_STR(mem_tgt_field("T-1", "duedate"), "2026-12-01");
    CHECK_STR(mem_tgt_field("T-1", "priority"), "High");
    return ss.created == 3 ? 0 : -1;
}

/* ----------------------------------------------------------- write-back */

static void status_and_hold(void)
{
    struct rig r;
    struct wb_stats ws;
    long long s;
    char aid[40];

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    snprintf(aid, sizeof(aid), "%s",
             q_text(r.a.st, "SELECT audit_id FROM state_ledger WHERE source_key = '100001'"));
    s = put(&r, ev("T-1", "acct-maria", 1000, NULL, "status", "To Do", "In Progress"));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(mem.wb_calls, 1);
    {
        char want[256];
        snprintf(want, sizeof(want), "status 100001=40 note T-1 is 'In Progress' (%s) {literal}",
                 aid);
        CHECK_STR(mem.wb[0].action, want);
    }
    CHECK_STR(mem.wb[0].key, "100001");
    CHECK_STR(mem.wb[0].set, "{\"ST\":\"40\"}"); /* the verify column, set */
    CHECK_STR(mem.wb[0].audit_id, aid);
    CHECK_STR(mem_src_col("100001", "ST"), "40");
    CHECK_STR(row_state(&r, s), "applied");
    CHECK_INT(state_inbox_pending(r.a.st), 0);
    CHECK_INT(audits(&r, "writeback", "memtest action status {key}={code}%code 40 %"), 1);
    CHECK_INT(state_echo_has(r.a.st, "src", "100001", "status", "40", state_now_ms()), 1);
    CHECK_INT(q_int(r.a.st, "SELECT wb_at FROM state_ledger WHERE source_key = '100001'"), 1000);
    /* nothing left: a second drain calls nothing */
    ws = drain(&r);
    CHECK_INT(ws.applied + ws.ignored + ws.echoes + ws.failed + ws.retry, 0);
    CHECK_INT(mem.wb_calls, 1);
    /* the same change delivered again under another id: the echo table drops it */
    s = put(&r, ev("T-1", "acct-maria", 1000, NULL, "status", "To Do", "in progress"));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(row_state(&r, s), "echo");
    /* a newer, different status is applied and replaces the echo entry */
    put(&r, ev("T-1", "acct-maria", 2000, NULL, "status", "In Progress", "Done"));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_STR(mem.wb[1].set, "{\"ST\":\"95\"}");
    CHECK_INT(state_echo_has(r.a.st, "src", "100001", "status", "40", state_now_ms()), 0);
    /* a hold: its own action and verify value; the status code stays */
    s = put(&r, ev("T-2", "acct-maria", 2000, NULL, "status", "To Do", "Blocked"));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_STR(mem.wb[2].action, "hold 100002");
    CHECK_STR(mem.wb[2].set, "{\"HOLD\":\"H1\"}");
    CHECK_STR(mem_src_col("100002", "ST"), "10");
    CHECK_INT(audits(&r, "writeback", "memtest action hold {key}, hold %"), 1);
    /* an older change than the one written back last: stale */
    s = put(&r, ev("T-1", "acct-maria", 1500, NULL, "status", "To Do", "To Do"));
    ws = drain(&r);
    CHECK_INT(ws.ignored, 1);
    CHECK_INT(mem.wb_calls, 3);
    CHECK(strstr(row_detail(&r, s), "stale") != NULL);
    /* a polled change (generic JSON, kind memtest-poll) */
    {
        struct change_item it = { "status", "Blocked", "Done" };
        cJSON *o = change_to_json("T-2", "acct-maria", 3000, NULL, &it, 1);
        s = put_kind(&r, "memtest-poll", mlc_json_print(o));
        cJSON_Delete(o);
    }
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(mem.wb_calls, 4);
    CHECK_STR(mem.wb[3].set, "{\"ST\":\"95\"}");
    CHECK_STR(row_state(&r, s), "applied");
    rig_close(&r);
}

static void echoes_and_ignores(void)
{
    struct rig r;
    struct wb_stats ws;
    long long s[8];

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    mem_src_put("100077", "{\"NAME\":\"Belt\",\"DUE\":\"\",\"PRI\":\"1\",\"ST\":\"10\"}", 1000);
    /* by the agent's own account */
    s[0] = put(&r, ev("T-1", "acct-agent", 1000, NULL, "status", "To Do", "Done"));
    /* unmapped status */
    s[1] = put(&r, ev("T-1", "acct-maria", 1000, NULL, "status", "To Do", "In Review"));
    /* unknown record, no marker */
    s[2] = put(&r, ev("T-99", "acct-maria", 1000, "other-label", "status", "To Do", "Done"));
    /* unknown to the ledger, but its marker names the source record */
    s[3] = put(&r, ev("T-77", "acct-maria", 1000, "memwo-100077", "status", "To Do", "Done"));
    /* no written-back field changed; not JSON; not a record event */
    s[4] = put(&r, mlc_xstrdup("{\"rec\":\"T-1\",\"changes\":[{\"f\":\"summary\",\"to\":\"x\"}]}"));
    s[5] = put(&r, mlc_xstrdup("{\"rec\":"));
    s[6] = put(&r, mlc_xstrdup("{\"changes\":[]}"));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(ws.ignored, 4);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(ws.failed, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(mem.wb[0].key, "100077");
    CHECK_STR(mem.wb[0].action, "status 100077=95 note T-77 is 'Done' () {literal}");
    CHECK_STR(row_state(&r, s[0]), "echo");
    CHECK_INT(audits(&r, "writeback_echo", "%own account%"), 1);
    CHECK_STR(row_state(&r, s[1]), "ignored");
    CHECK_INT(audits(&r, "writeback_ignored", "%'In Review' is not in%"), 1);
    CHECK_STR(row_state(&r, s[2]), "ignored");
    CHECK_INT(audits(&r, "writeback_ignored", "unknown record T-99%"), 1);
    CHECK_STR(row_state(&r, s[3]), "applied");
    CHECK(strstr(row_detail(&r, s[4]), "no written-back field changed") != NULL);
    CHECK_STR(row_state(&r, s[5]), "dead");
    CHECK(strstr(row_detail(&r, s[5]), "memtest event") != NULL);
    CHECK(strstr(row_detail(&r, s[6]), "not a record event") != NULL);
    CHECK_INT(state_inbox_count(r.a.st, "dead"), 1);
    /* a disabled flow writes nothing back */
    r.a.flows[0].enabled = 0;
    s[7] = put(&r, ev("T-2", "acct-maria", 1000, NULL, "status", "To Do", "Done"));
    ws = drain(&r);
    CHECK_INT(ws.ignored, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK(strstr(row_detail(&r, s[7]), "flow wo is disabled") != NULL);
    rig_close(&r);
}

static void retries_then_gives_up(void)
{
    struct rig r;
    struct wb_stats ws;
    long long now = state_now_ms(), s1, s2, s, next;

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    /* a network failure: retried later, and the other row of that system waits with it */
    mem.wb_fault[0] = (struct mem_fault){ 1, MLC_E_NET, 0 };
    s1 = put(&r, ev("T-1", "acct-maria", 1000, NULL, "status", "To Do", "Done"));
    s2 = put(&r, ev("T-2", "acct-maria", 1000, NULL, "status", "To Do", "Done"));
    ws = drain(&r);
    CHECK_INT(ws.retry, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_INT(state_inbox_pending(r.a.st), 2);
    CHECK_INT(q_int(r.a.st, "SELECT attempts FROM state_inbox WHERE seq = 1001"), 1);
    /* full jitter: due within the first backoff step (5 s) */
    next = q_int(r.a.st, "SELECT next_ms FROM state_inbox WHERE seq = 1001");
    CHECK(next >= now && next <= state_now_ms() + 5000);
    CHECK(strstr(row_detail(&r, s1), "attempt 1 of 3") != NULL);
    if (next > state_now_ms() + 200) { /* (a jitter near 0 makes it due at once) */
        ws = drain(&r);
        CHECK_INT(mem.wb_calls, 1); /* the system is left alone until the retry is due */
    }
    /* a fresh process retries at once; the unanswered row is read back first
     * (it did not take effect) and called again */
    CHECK_INT(rig_reopen(&r), 0);
    CHECK_INT(state_inbox_retry_now(r.a.st), 1);
    ws = drain(&r);
    CHECK_INT(ws.applied, 2);
    CHECK_INT(ws.settled, 0);
    CHECK_INT(mem.wb_calls, 3);
    CHECK_STR(row_state(&r, s1), "applied");
    CHECK_STR(row_state(&r, s2), "applied");
    CHECK_INT(state_inbox_pending(r.a.st), 0);
    /* a rejection is final at once; a transient failure on the last attempt too */
    mem.wb_fault[1] = (struct mem_fault){ 4, MLC_E_REJECTED, 0 };
    s = put(&r, ev("T-1", "acct-maria", 5000, NULL, "status", "Done", "To Do"));
    ws = drain(&r);
    CHECK_INT(ws.failed, 1);
    CHECK_STR(row_state(&r, s), "dead");
    CHECK(strstr(row_detail(&r, s), "memtest write of 100001 failed") != NULL);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_failed'"
                            " AND source_key = '100001'"),
              1);
    r.a.flows[0].max_attempts = 1;
    mem.wb_fault[2] = (struct mem_fault){ 5, MLC_E_AUTH, 0 };
    s = put(&r, ev("T-2", "acct-maria", 5000, NULL, "status", "Done", "To Do"));
    ws = drain(&r);
    CHECK_INT(ws.failed, 1);
    CHECK(strstr(row_detail(&r, s), "failed on every attempt") != NULL);
    CHECK_INT(state_inbox_count(r.a.st, "dead"), 2);
    rig_close(&r);
}

/* The write took effect but its answer was lost: the row stays in flight,
 * and the next attempt reads the record back and does not call again. */
static void lost_answer_settles(void)
{
    struct rig r;
    struct wb_stats ws;
    long long s1, s2;

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    mem.wb_fault[0] = (struct mem_fault){ 1, MLC_E_NET, 1 };
    mem.wb_fault[1] = (struct mem_fault){ 2, MLC_E_NET, 1 };
    s1 = put(&r, ev("T-1", "acct-maria", 1000, NULL, "status", "To Do", "Done"));
    ws = drain(&r);
    CHECK_INT(ws.retry, 1);
    CHECK_STR(mem_src_col("100001", "ST"), "95"); /* it happened */
    CHECK_STR(row_state(&r, s1), "inflight");
    CHECK_INT(rig_reopen(&r), 0);
    CHECK_INT(state_inbox_retry_now(r.a.st), 1);
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(ws.settled, 1);
    CHECK_INT(mem.wb_calls, 1); /* not called twice */
    CHECK_STR(row_state(&r, s1), "applied");
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_audit WHERE action = 'writeback_settled'"),
              1);
    /* a field the same way: the value read back is the one written */
    s2 = put(&r, ev("T-2", "acct-maria", 1000, NULL, "duedate", "2026-12-02", "2026-12-24"));
    ws = drain(&r);
    CHECK_INT(ws.retry, 1);
    CHECK_INT(mem.wb_calls, 2);
    CHECK_STR(mem_src_col("100002", "DUE"), "20261224");
    CHECK_INT(rig_reopen(&r), 0);
    CHECK_INT(state_inbox_retry_now(r.a.st), 1);
    ws = drain(&r);
    CHECK_INT(ws.settled, 1);
    CHECK_INT(mem.wb_calls, 2);
    CHECK_STR(row_state(&r, s2), "applied");
    rig_close(&r);
}

/* A due date changed at the target is written once into the source, in the
 * source's format, and does not come back as an update. */
static void field_written_once(void)
{
    struct rig r;
    struct wb_stats ws;
    struct sync_stats ss;
    long long s;
    char before[65];

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    snprintf(before, sizeof(before), "%s",
             q_text(r.a.st, "SELECT hash FROM state_ledger WHERE source_key = '100001'"));
    /* someone moves T-1's due date at the target */
    cJSON_ReplaceItemInObjectCaseSensitive(mem_tgt_find("T-1")->fields, "duedate",
                                           cJSON_CreateString("2026-12-10"));
    s = put(&r, ev("T-1", "acct-maria", 7000, NULL, "duedate", "2026-12-01", "2026-12-10"));
    ws = drain(&r);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(ws.conflicts, 0);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(mem.wb[0].action, "due 100001=20261210");
    CHECK_STR(mem.wb[0].set, "{\"DUE\":\"20261210\"}");
    CHECK_STR(mem_src_col("100001", "DUE"), "20261210");
    CHECK_STR(row_state(&r, s), "applied");
    CHECK_INT(mem.fetches, 1); /* read before the write */
    /* the ledger holds the content the source has now */
    CHECK(strcmp(before, q_text(r.a.st, "SELECT hash FROM state_ledger WHERE source_key = "
                                        "'100001'")) != 0);
    {
        struct timespec ts = { 0, 5 * 1000000L }; /* the sync starts after the ledger write */
        nanosleep(&ts, NULL);
    }
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(ss.read, 1); /* the record changed at the source (the write) */
    CHECK_INT(ss.updated, 0);
    CHECK_INT(ss.queued, 0);
    CHECK_INT(ss.unchanged, 1);
    CHECK_INT(mem.applies, 1); /* the first sync's creates, then nothing */
    /* the same change again: the echo table; no read, no call */
    s = put(&r, ev("T-1", "acct-maria", 7000, NULL, "duedate", "2026-12-01", "2026-12-10"));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_INT(mem.fetches, 1);
    CHECK_STR(row_state(&r, s), "echo");
    /* the agent's own value coming back from the target (the next sync
     * carried a source change there): the source holds it, an echo */
    mem_src_set("100001", "DUE", "20261215", 8000);
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(ss.updated, 1);
    CHECK_STR(mem_tgt_field("T-1", "duedate"), "2026-12-15");
    s = put(&r, ev("T-1", "", 9000, NULL, "duedate", "2026-12-10", "2026-12-15"));
    ws = drain(&r);
    CHECK_INT(ws.echoes, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(row_state(&r, s), "echo");
    CHECK(strstr(row_detail(&r, s), "already has duedate '2026-12-15'") != NULL);
    /* a priority through the value map read backwards; a cleared due date */
    put(&r, ev("T-1", "acct-maria", 9500, NULL, "priority", "High", "Low"));
    put(&r, ev("T-2", "acct-maria", 9500, NULL, "duedate", "2026-12-02", ""));
    ws = drain(&r);
    CHECK_INT(ws.applied, 2);
    CHECK_STR(mem.wb[1].action, "prio 100001=2 (T-1)");
    CHECK_STR(mem_src_col("100001", "PRI"), "2");
    CHECK_STR(mem_src_col("100002", "DUE"), "");
    /* a value no source value maps to is not written back */
    s = put(&r, ev("T-1", "acct-maria", 9600, NULL, "priority", "Low", "Blocker"));
    ws = drain(&r);
    CHECK_INT(ws.ignored, 1);
    CHECK_INT(mem.wb_calls, 3);
    CHECK(strstr(row_detail(&r, s), "priority 'Blocker' cannot be written back") != NULL);
    rig_close(&r);
}

/* Both sides changed a field since the last sync: the field's rule. */
static void conflicts_follow_the_rule(void)
{
    struct rig r;
    struct wb_stats ws;
    long long s;

    if (rig_synced(&r, NULL, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    /* source_wins (priority): not written; the next sync carries the source's value */
    mem_src_set("100001", "PRI", "3", 5000);
    s = put(&r, ev("T-1", "acct-maria", 6000, NULL, "priority", "High", "Low"));
    ws = drain(&r);
    CHECK_INT(ws.conflicts, 1);
    CHECK_INT(ws.applied, 0);
    CHECK_INT(mem.wb_calls, 0);
    CHECK_STR(row_state(&r, s), "ignored");
    CHECK_INT(audits(&r, "writeback_conflict",
                     "priority of src 100001 changed on both sides%'Medium'%'High' -> 'Low'%"
                     "rule source_wins: not written back%"),
              1);
    CHECK_STR(mem_src_col("100001", "PRI"), "3");
    /* target_wins (duedate): written */
    mem_src_set("100002", "DUE", "20261220", 5000);
    s = put(&r, ev("T-2", "acct-maria", 6000, NULL, "duedate", "2026-12-02", "2026-12-18"));
    ws = drain(&r);
    CHECK_INT(ws.conflicts, 1);
    CHECK_INT(ws.applied, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(mem_src_col("100002", "DUE"), "20261218");
    CHECK_STR(row_state(&r, s), "applied");
    CHECK_INT(audits(&r, "writeback_conflict", "duedate of src 100002%rule target_wins: written back"),
              1);
    rig_close(&r);

    /* newest_wins: the change times decide, both orders */
    if (rig_synced(&r,
                   "{\"fields\":{\"duedate\":{\"action\":\"due {key}={value}\","
                   "\"conflict\":\"newest_wins\"}}}",
                   NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    mem_src_set("100001", "DUE", "20261220", 5000);
    s = put(&r, ev("T-1", "acct-maria", 4000, NULL, "duedate", "2026-12-01", "2026-12-18"));
    ws = drain(&r);
    CHECK_INT(ws.conflicts, 1);
    CHECK_INT(mem.wb_calls, 0);
    CHECK_STR(row_state(&r, s), "ignored");
    CHECK_INT(audits(&r, "writeback_conflict", "%(the source's change is newer)%"), 1);
    mem_src_set("100002", "DUE", "20261220", 5000);
    s = put(&r, ev("T-2", "acct-maria", 9000, NULL, "duedate", "2026-12-02", "2026-12-18"));
    ws = drain(&r);
    CHECK_INT(ws.conflicts, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(mem_src_col("100002", "DUE"), "20261218");
    CHECK_STR(row_state(&r, s), "applied");
    CHECK_INT(audits(&r, "writeback_conflict", "%(the target's change is newer)%"), 1);
    /* a change without a time: the source keeps its value */
    mem_src_set("100003", "DUE", "20261220", 5000);
    s = put(&r, ev("T-3", "acct-maria", 0, NULL, "duedate", "", "2026-12-18"));
    ws = drain(&r);
    CHECK_INT(ws.conflicts, 1);
    CHECK_INT(mem.wb_calls, 1);
    CHECK_STR(mem_src_col("100003", "DUE"), "20261220");
    rig_close(&r);
}

/* --------------------------------------------------------------- pipeline */

static void pipeline_batches(void)
{
    struct rig r;
    struct sync_stats ss;
    char key[16], row[128];

    if (rig_open(&r, "", NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    CHECK_INT(r.a.flows[0].batch, 3); /* memtest's max_batch */
    mem.page_size = 10;
    for (int i = 4; i <= 7; i++) {
        snprintf(key, sizeof(key), "10000%d", i);
        snprintf(row, sizeof(row), "{\"NAME\":\"N%d\",\"DUE\":\"\",\"PRI\":\"1\"}", i);
        mem_src_put(key, row, 1000);
    }
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(ss.read, 7);
    CHECK_INT(ss.created, 7);
    CHECK_INT(mem.applies, 3);
    CHECK_INT(mem.apply_sizes[0], 3);
    CHECK_INT(mem.apply_sizes[1], 3);
    CHECK_INT(mem.apply_sizes[2], 1);
    CHECK_INT(mem.n_tgt, 7);
    CHECK_STR(mem_tgt_field("T-7", "summary"), "N7");
    /* paging: two pages of 4 and 3 read the same */
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(ss.read, 0);
    rig_close(&r);
}

/* Seven records; the answer to the first apply() is lost after it created
 * three. */
static int lost_create_rig(struct rig *r, const char *dst_type)
{
    struct sync_stats ss;
    char key[16], row[128];

    if (rig_open(r, "", dst_type) != 0) {
        return -1;
    }
    mem.page_size = 10;
    for (int i = 4; i <= 7; i++) {
        snprintf(key, sizeof(key), "10000%d", i);
        snprintf(row, sizeof(row), "{\"NAME\":\"N%d\",\"DUE\":\"\",\"PRI\":\"1\"}", i);
        mem_src_put(key, row, 1000);
    }
    mem.apply_fault[0] = (struct mem_fault){ 1, MLC_E_NET, 1 };
    ss = sync_flow(r, MLC_E_NET);
    CHECK_INT(ss.created, 0);
    CHECK_INT(ss.pending, 7);
    CHECK_INT(mem.n_tgt, 3);
    return 0;
}

static void pipeline_lost_create_is_found(void)
{
    struct rig r;
    struct sync_stats ss;
    int finds;

    if (lost_create_rig(&r, NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    finds = mem.finds;
    ss = sync_flow(&r, MLC_OK);
    CHECK(mem.finds > finds); /* the in-flight creates were looked up */
    CHECK_INT(ss.created, 7);
    CHECK_INT(ss.pending, 0);
    CHECK_INT(mem.n_tgt, 7); /* adopted, not doubled */
    CHECK_INT(mem.applies, 1 + 2);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_audit WHERE action = 'recovered'"), 3);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_ledger"), 7);
    rig_close(&r);
}

static void pipeline_upsert_resends(void)
{
    struct rig r;
    struct sync_stats ss;

    connector_register(&memupsert);
    if (lost_create_rig(&r, "memupsert") != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(ss.created, 7);
    CHECK_INT(ss.pending, 0);
    CHECK_INT(mem.finds, 0);       /* never asked */
    CHECK_INT(mem.applies, 1 + 3); /* the three sent again with the rest */
    CHECK_INT(mem.n_tgt, 7);       /* the target keys them by marker */
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_ledger"), 7);
    rig_close(&r);
}

/* Creates that landed but whose follow-up failed (a target's status or
 * comments after its write): recorded with their keys, finished as updates,
 * never created twice. */
static void pipeline_partial_create_becomes_update(void)
{
    struct rig r;
    struct sync_stats ss;
    char key[16], row[128];

    if (rig_open(&r, "", NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    mem.page_size = 10;
    for (int i = 4; i <= 5; i++) {
        snprintf(key, sizeof(key), "10000%d", i);
        snprintf(row, sizeof(row), "{\"NAME\":\"N%d\",\"DUE\":\"\",\"PRI\":\"1\"}", i);
        mem_src_put(key, row, 1000);
    }
    mem.apply_partial = 1;
    mem.partial_rc = MLC_E_NET;
    ss = sync_flow(&r, MLC_E_NET); /* undelivered: the rest waits */
    CHECK_INT(mem.n_tgt, 5);
    CHECK_INT(ss.created, 2); /* the second batch of two went through */
    CHECK_INT(ss.pending, 3);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_ledger WHERE hash = ''"), 3);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_outbox WHERE op = 'update' AND target_key <> ''"), 3);
    q_int(r.a.st, "UPDATE state_outbox SET next_at = 0");
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(mem.n_tgt, 5); /* finished as updates, not created again */
    CHECK_INT(ss.updated, 3);
    CHECK_INT(ss.created, 0);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_ledger WHERE hash = ''"), 0);
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_outbox"), 0);
    rig_close(&r);
}

/* A create in flight whose target shows another hash (its write was not
 * complete when the answer was lost) is finished as an update. */
static void pipeline_inflight_create_with_other_hash_is_updated(void)
{
    struct rig r;
    struct sync_stats ss;

    char key[16], row[128];

    if (rig_open(&r, "", NULL) != 0) {
        CHECK(0);
        rig_close(&r);
        return;
    }
    mem.page_size = 10;
    for (int i = 4; i <= 7; i++) {
        snprintf(key, sizeof(key), "10000%d", i);
        snprintf(row, sizeof(row), "{\"NAME\":\"N%d\",\"DUE\":\"\",\"PRI\":\"1\"}", i);
        mem_src_put(key, row, 1000);
    }
    mem.store_pending = 1; /* the three that land are not complete */
    mem.apply_fault[0] = (struct mem_fault){ 1, MLC_E_NET, 1 };
    ss = sync_flow(&r, MLC_E_NET);
    CHECK_INT(mem.n_tgt, 3);
    mem.store_pending = 0;
    ss = sync_flow(&r, MLC_OK);
    CHECK_INT(mem.n_tgt, 7);
    CHECK_INT(ss.created, 4); /* the four never sent */
    CHECK_INT(ss.updated, 3); /* the three that landed incomplete */
    CHECK_INT(q_int(r.a.st, "SELECT count(*) FROM state_audit WHERE action = 'recovered'"), 3);
    for (int i = 0; i < mem.n_tgt; i++) {
        CHECK(strcmp(mem.tgt[i].hash, "pending") != 0);
    }
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
              "INSERT INTO state_outbox(id, flow, source_key, op, payload, hash, audit_id, created_at)"
              " VALUES(7, 'wo', '100002', 'create', '{}', 'h2', 'aid2', 1);"
              "PRAGMA user_version = 1;",
              NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    CHECK_INT(q_int(st, "PRAGMA user_version"), STATE_SCHEMA_VERSION);
    CHECK_INT(STATE_SCHEMA_VERSION, 4);
    /* version 4: the outbox kept its row, and ids are never handed out twice */
    CHECK_INT(q_int(st, "SELECT count(*) FROM state_outbox WHERE id = 7 AND source_key = '100002'"), 1);
    CHECK(sqlite3_exec(st->db, "DELETE FROM state_outbox; INSERT INTO state_outbox(flow, source_key,"
                       " op, payload, hash, audit_id, created_at) VALUES('wo', 'x', 'create', '{}', 'h',"
                       " 'a', 1)", NULL, NULL, NULL) == SQLITE_OK);
    CHECK_INT(q_int(st, "SELECT id FROM state_outbox WHERE source_key = 'x'"), 8);
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
    snprintf(keypath, sizeof(keypath), "/tmp/mlc-test-wb-%d.key", (int)getpid());
    snprintf(confpath, sizeof(confpath), "/tmp/mlc-test-wb-%d.json", (int)getpid());
    connector_register(&memconn);
    RUN(config_compiles);
    RUN(config_errors_name_the_path);
    RUN(status_and_hold);
    RUN(echoes_and_ignores);
    RUN(retries_then_gives_up);
    RUN(lost_answer_settles);
    RUN(field_written_once);
    RUN(conflicts_follow_the_rule);
    RUN(pipeline_batches);
    RUN(pipeline_lost_create_is_found);
    RUN(pipeline_upsert_resends);
    RUN(pipeline_partial_create_becomes_update);
    RUN(pipeline_inflight_create_with_other_hash_is_updated);
    RUN(inbox_echo_kv_state);
    RUN(ledger_reverse_lookup);
    RUN(v1_database_migrates);
    RUN(inbox_put_waits_for_the_writer);
    return TT_DONE();
}
