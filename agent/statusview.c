/* SPDX-License-Identifier: Apache-2.0
 * statusview: the agent's health as JSON, Prometheus text and a terminal
 * summary (see statusview.h). Health is judged by progress: how far each
 * cursor lags, how old the oldest undelivered item is, how soon credentials
 * and webhooks expire, how long the relay tunnel has been silent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/statusview.h"
#include "agent/tunnel.h"
#include "shared/mlc_json.h"

static long long now_ms(void)
{
    return state_now_ms();
}

static cJSON *kv_json(struct state *st, const char *key)
{
    struct mlc_errbuf err = { 0 };
    char *v = NULL;
    cJSON *o = NULL;

    if (state_kv_get(st, key, &v, &err) == MLC_OK && v) {
        o = cJSON_Parse(v);
    }
    free(v);
    return o;
}

static char *kv_text(struct state *st, const char *key)
{
    struct mlc_errbuf err = { 0 };
    char *v = NULL;

    state_kv_get(st, key, &v, &err);
    return v;
}

static void add_num_or_null(cJSON *o, const char *k, int have, double v)
{
    if (have) {
        mlc_json_xadd_num(o, k, v);
    } else {
        cJSON_AddNullToObject(o, k);
    }
}

/* Up to when the flow has certainly read its source: the end of its last
 * successful run (a run reads to the end, so a quiet ERP does not "lag"),
 * else the cursor's own time. */
static long long read_up_to_ms(struct state *st, const struct flow *f, const char *cursor)
{
    long long ok = state_run_last_ok_at(st, f->name);

    return ok > 0 ? ok * 1000 : conn_cursor_time(f->src, cursor);
}

static long long parse_date_ms(const char *ymd)
{
    struct tm tm;
    int y, m, d;

    if (ymd == NULL || sscanf(ymd, "%4d-%2d-%2d", &y, &m, &d) != 3) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    return (long long)timegm(&tm) * 1000;
}

static const char *level_of(double v, double warn, double crit)
{
    return v >= crit ? "crit" : v >= warn ? "warn" : "ok";
}

static const char *level_expiry(double days, double warn, double crit)
{
    return days <= crit ? "crit" : days <= warn ? "warn" : "ok";
}

static void health_add(cJSON *arr, const char *what, const char *level, const char *value, const char *advice)
{
    cJSON *h = mlc_json_xobj();

    mlc_json_xadd_str(h, "what", what);
    mlc_json_xadd_str(h, "level", level);
    mlc_json_xadd_str(h, "value", value);
    mlc_json_xadd_str(h, "advice", strcmp(level, "ok") == 0 ? "" : advice);
    cJSON_AddItemToArray(arr, h);
}

static void fmt_age(char *out, size_t n, double s)
{
    if (s < 120) {
        snprintf(out, n, "%.0f s", s);
    } else if (s < 7200) {
        snprintf(out, n, "%.0f min", s / 60);
    } else if (s < 172800) {
        snprintf(out, n, "%.1f h", s / 3600);
    } else {
        snprintf(out, n, "%.1f days", s / 86400);
    }
}

static cJSON *flow_json(struct agent *a, struct state *st, struct flow *f, const char *running, cJSON *health)
{
    cJSON *o = mlc_json_xobj(), *lr, *wh;
    struct mlc_errbuf err = { 0 };
    struct run_row run;
    char *cursor = NULL, key[160], what[200], val[64], advice[512], *next;
    long long now = now_ms(), oldest_out, oldest_in = -1, ct, dead, unanswered;
    const char *sched = mlc_json_str(f->conf, "schedule");

    mlc_json_xadd_str(o, "name", f->name);
    mlc_json_xadd_str(o, "source", f->src->name);
    mlc_json_xadd_str(o, "target", f->dst->name);
    cJSON_AddBoolToObject(o, "enabled", f->enabled);
    mlc_json_xadd_str(o, "schedule", sched ? sched : "every 15m");
    if (f->sched == SCHED_DAILY || f->sched == SCHED_WEEKLY) {
        /* daily and weekly times are local wall-clock times: say whose */
        char zone[160];
        sched_zone(now / 1000, zone, sizeof(zone));
        mlc_json_xadd_str(o, "schedule_zone", zone);
    }
    cJSON_AddBoolToObject(o, "running", running && strcmp(running, f->name) == 0);
    if (state_run_latest(st, f->name, &run, &err) == MLC_OK) {
        lr = mlc_json_xobj();
        mlc_json_xadd_num(lr, "started_ms", (double)run.started_at * 1000);
        add_num_or_null(lr, "finished_ms", run.finished_at != -1, (double)run.finished_at * 1000);
        mlc_json_xadd_str(lr, "status", strcmp(run.status, "error") == 0 ? "failed" : run.status);
        mlc_json_xadd_num(lr, "created", (double)run.created);
        mlc_json_xadd_num(lr, "updated", (double)run.updated);
        mlc_json_xadd_num(lr, "unchanged", (double)run.unchanged);
        mlc_json_xadd_num(lr, "failed", (double)run.failed);
        mlc_json_xadd_num(lr, "adopted", (double)run.adopted);
        mlc_json_xadd_num(lr, "pending", (double)run.pending);
        mlc_json_xadd_num(lr, "warnings", (double)run.warnings);
        if (run.error != NULL) {
            mlc_json_xadd_str(lr, "error", run.error);
        } else {
            cJSON_AddNullToObject(lr, "error");
        }
        mlc_json_xadd(o, "last_run", lr);
        run_row_release(&run);
    } else {
        cJSON_AddNullToObject(o, "last_run");
    }
    snprintf(key, sizeof(key), "next.%s", f->name);
    next = kv_text(st, key);
    add_num_or_null(o, "next_run_ms", next && atoll(next) > 0, next ? (double)atoll(next) : 0);
    free(next);
    mlc_json_xadd_num(o, "synced", (double)state_ledger_count(st, f->name));
    mlc_json_xadd_num(o, "outbox", (double)state_outbox_count(st, f->name));
    dead = state_dead_count(st, f->name);
    mlc_json_xadd_num(o, "dead", (double)dead);
    /* creates sent without an answer, not found at the target yet: never sent
     * twice while the target's search could still be stale */
    unanswered = state_outbox_unanswered(st, f->name);
    mlc_json_xadd_num(o, "unanswered", (double)unanswered);
    mlc_json_xadd_num(o, "inbox", f->wb ? (double)state_inbox_count(st, "pending") : 0);
    state_cursor_get(st, f->name, &cursor, &err);
    if (cursor) {
        mlc_json_xadd_str(o, "cursor", cursor);
    } else {
        cJSON_AddNullToObject(o, "cursor");
    }
    ct = read_up_to_ms(st, f, cursor);
    add_num_or_null(o, "cursor_lag_s", ct > 0, ct > 0 ? (double)(now - ct) / 1000 : 0);
    oldest_out = state_outbox_oldest_at(st, f->name);
    add_num_or_null(o, "oldest_outbox_s", oldest_out > 0, (double)(now / 1000 - oldest_out));
    if (f->wb) {
        oldest_in = state_inbox_oldest_pending_ms(st);
    }
    add_num_or_null(o, "oldest_inbox_s", oldest_in > 0, (double)(now - oldest_in) / 1000);
    snprintf(key, sizeof(key), "watch.%s", f->name);
    wh = kv_json(st, key);
    if (cJSON_IsObject(wh) && mlc_json_str(wh, "mode")) {
        cJSON *w = mlc_json_xobj();
        double exp = mlc_json_num(wh, "expires_ms", 0);
        mlc_json_xadd_str(w, "mode", mlc_json_str(wh, "mode"));
        add_num_or_null(w, "expires_ms", exp > 0, exp);
        mlc_json_xadd(o, "webhook", w);
        if (exp > 0) {
            double days = (exp - (double)now) / 86400000.0;
            snprintf(what, sizeof(what), "flow %s: %s webhook expiry", f->name, f->dst->name);
            snprintf(val, sizeof(val), "%.1f days left", days);
            snprintf(advice, sizeof(advice),
                     "The agent renews it before it expires: check that it runs and that %s "
                     "accepts its credentials (mlc-agent ping).",
                     f->dst->name);
            health_add(health, what,
                       level_expiry(days, (double)a->cf.expiry_warn_d, (double)a->cf.expiry_crit_d),
                       val, advice);
        }
    } else {
        cJSON_AddNullToObject(o, "webhook");
    }
    cJSON_Delete(wh);
    if (f->n_after > 0) {
        /* systems told after a load; one still owed outside a run is a failed call */
        cJSON *al = mlc_json_xarr();
        int is_running = running && strcmp(running, f->name) == 0;
        for (int i = 0; i < f->n_after; i++) {
            cJSON *e = mlc_json_xobj();
            int owed = pipeline_after_owed(st, f, i);
            mlc_json_xadd_str(e, "system", f->after[i].c->name);
            cJSON_AddBoolToObject(e, "owed", owed);
            cJSON_AddItemToArray(al, e);
            if (owed && !is_running) {
                snprintf(what, sizeof(what), "flow %s: after_load call to %s", f->name,
                         f->after[i].c->name);
                snprintf(advice, sizeof(advice),
                         "The last load was not yet followed by the call to %s (see the audit "
                         "entry after_load_failed). The next run of the flow makes it, even "
                         "without new rows: check %s (Ping) and its settings.",
                         f->after[i].c->name, f->after[i].c->name);
                health_add(health, what, "warn", "owed", advice);
            }
        }
        mlc_json_xadd(o, "after_load", al);
    }
    /* health by progress */
    if (f->enabled && ct > 0) {
        double lag = (double)(now - ct) / 1000;
        snprintf(what, sizeof(what), "flow %s: source read up to", f->name);
        fmt_age(val, sizeof(val), lag);
        health_add(health, what, level_of(lag, (double)a->cf.lag_warn_s, (double)a->cf.lag_crit_s), val,
                   "The source has not been read to the end for a while: check the last run's error and "
                   "the source system (Ping), or press Sync now. A long schedule also lags; raise "
                   "agent.lag_warn then.");
    }
    if (oldest_out > 0) {
        double age = (double)(now / 1000 - oldest_out);
        snprintf(what, sizeof(what), "flow %s: oldest undelivered record", f->name);
        fmt_age(val, sizeof(val), age);
        health_add(health, what, level_of(age, (double)a->cf.age_warn_s, (double)a->cf.age_crit_s), val,
                   "Records wait in the outbox: the target is failing or throttling. See the last error; "
                   "records that keep failing become dead letters you can replay.");
    }
    if (oldest_in > 0) {
        double age = (double)(now - oldest_in) / 1000;
        snprintf(what, sizeof(what), "flow %s: oldest unapplied write-back", f->name);
        fmt_age(val, sizeof(val), age);
        snprintf(advice, sizeof(advice),
                 "Changes from %s are waiting to be written to %s: check %s (Ping) and "
                 "`mlc-agent inbox list`.",
                 f->dst->name, f->src->name, f->src->name);
        health_add(health, what, level_of(age, (double)a->cf.age_warn_s, (double)a->cf.age_crit_s),
                   val, advice);
    }
    if (unanswered > 0) {
        snprintf(what, sizeof(what), "flow %s: unanswered creates", f->name);
        snprintf(val, sizeof(val), "%lld", unanswered);
        health_add(health, what, "warn", val,
                   "Creates were sent but their answer was lost, and the target's search does not show "
                   "them yet. They are looked up again on each run and sent again only after the flow's "
                   "recreate_after (30 min by default), so no record is created twice.");
    }
    if (dead > 0) {
        snprintf(what, sizeof(what), "flow %s: dead letters", f->name);
        snprintf(val, sizeof(val), "%lld", dead);
        health_add(health, what, "warn", val,
                   "Some records were refused by the target. Read each error, fix the cause (mapping, "
                   "target data), then Replay.");
    }
    free(cursor);
    return o;
}

static cJSON *systems_json(struct agent *a, struct state *st, cJSON *health)
{
    cJSON *arr = mlc_json_xarr();

    for (int i = 0; i < a->n_conns; i++) {
        struct conn *c = &a->conns[i];
        cJSON *o = mlc_json_xobj(), *p;
        char key[160], what[200], val[64];
        const char *exp = conn_setting(c, "credential_expires");
        long long exp_ms = parse_date_ms(exp);

        snprintf(key, sizeof(key), "ping.%s", c->name);
        p = kv_json(st, key);
        mlc_json_xadd_str(o, "name", c->name);
        mlc_json_xadd_str(o, "type", conn_type(c));
        if (cJSON_IsObject(p)) {
            cJSON_AddItemToObject(o, "reachable", cJSON_Duplicate(cJSON_GetObjectItem(p, "reachable"), 1));
            mlc_json_xadd_str(o, "auth", mlc_json_str(p, "auth") ? mlc_json_str(p, "auth") : "unknown");
            mlc_json_xadd_str(o, "detail", mlc_json_str(p, "detail") ? mlc_json_str(p, "detail") : "");
            mlc_json_xadd_num(o, "checked_ms", mlc_json_num(p, "checked_ms", 0));
        } else {
            cJSON_AddNullToObject(o, "reachable");
            mlc_json_xadd_str(o, "auth", "unknown");
            mlc_json_xadd_str(o, "detail", "not checked yet (press Ping)");
            cJSON_AddNullToObject(o, "checked_ms");
        }
        cJSON_Delete(p);
        if (exp_ms > 0) {
            double days = (double)(exp_ms - now_ms()) / 86400000.0;
            mlc_json_xadd_num(o, "expires_ms", (double)exp_ms);
            mlc_json_xadd_str(o, "expires_what", "credential (systems.*.credential_expires)");
            snprintf(what, sizeof(what), "system %s: credential expiry", c->name);
            snprintf(val, sizeof(val), "%.1f days left (%s)", days, exp);
            health_add(health, what, level_expiry(days, (double)a->cf.expiry_warn_d, (double)a->cf.expiry_crit_d),
                       val, "Issue a new API token or renew the consent, store it with `mlc-agent secret set`, "
                            "and update credential_expires.");
        } else {
            cJSON_AddNullToObject(o, "expires_ms");
            cJSON_AddNullToObject(o, "expires_what");
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/* The configured names of the flows' targets, "a, b" (each once), for
 * messages about changes that come from them. */
static void target_names(const struct agent *a, char *out, size_t n)
{
    size_t used = 0;

    snprintf(out, n, "the target systems");
    for (int i = 0; i < a->n_flows; i++) {
        const char *name = a->flows[i].dst->name;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) {
            seen = strcmp(a->flows[j].dst->name, name) == 0;
        }
        if (!seen && used < n) {
            used += (size_t)snprintf(out + used, n - used, "%s%s", used ? ", " : "", name);
        }
    }
}

static cJSON *tunnel_json(struct agent *a, struct state *st, struct tunnel_client *t, cJSON *health)
{
    cJSON *o = mlc_json_xobj();
    struct tunnel_info ti;
    char val[96], targets[256], advice[512];

    cJSON_AddBoolToObject(o, "configured", a->has_relay);
    if (!a->has_relay) {
        cJSON_AddBoolToObject(o, "connected", 0);
        cJSON_AddNullToObject(o, "since_ms");
        cJSON_AddNullToObject(o, "last_rx_ms");
        cJSON_AddNullToObject(o, "rtt_ms");
        cJSON_AddNullToObject(o, "url");
        mlc_json_xadd_str(o, "last_error", "");
        return o;
    }
    mlc_json_xadd_str(o, "url", a->relay.url);
    if (t != NULL) {
        double silent;
        tunnel_info(t, &ti);
        cJSON_AddBoolToObject(o, "connected", ti.connected);
        add_num_or_null(o, "since_ms", ti.since_ms > 0, (double)ti.since_ms);
        add_num_or_null(o, "last_rx_ms", ti.last_rx_ms > 0, (double)ti.last_rx_ms);
        add_num_or_null(o, "rtt_ms", ti.rtt_ms >= 0, (double)ti.rtt_ms);
        mlc_json_xadd_str(o, "last_error", ti.last_error);
        silent = ti.last_rx_ms > 0 ? (double)(now_ms() - ti.last_rx_ms) / 1000 : 1e9;
        if (!ti.connected) {
            snprintf(val, sizeof(val), "disconnected");
        } else if (ti.rtt_ms >= 0) {
            snprintf(val, sizeof(val), "last message %.0f s ago, round trip %lld ms", silent, ti.rtt_ms);
        } else {
            snprintf(val, sizeof(val), "last message %.0f s ago", silent);
        }
        target_names(a, targets, sizeof(targets));
        snprintf(advice, sizeof(advice),
                 "Changes from %s cannot reach this agent: check outbound HTTPS to the relay, "
                 "the relay's health, and relay.tenant / relay_key (the last error says which).",
                 targets);
        health_add(health, "relay tunnel heartbeat",
                   ti.connected
                       ? level_of(silent, (double)a->cf.tunnel_warn_s, (double)a->cf.tunnel_crit_s)
                       : "crit",
                   val, advice);
    } else {
        /* another process (mlc-agent status): what the daemon last recorded */
        cJSON *k = kv_json(st, "tunnel");
        cJSON_AddBoolToObject(o, "connected", cJSON_IsTrue(cJSON_GetObjectItem(k, "connected")));
        add_num_or_null(o, "since_ms", k != NULL, mlc_json_num(k, "since_ms", 0));
        cJSON_AddNullToObject(o, "last_rx_ms");
        cJSON_AddNullToObject(o, "rtt_ms");
        mlc_json_xadd_str(o, "last_error", "");
        cJSON_Delete(k);
    }
    return o;
}

static cJSON *throughput_json(struct state *st)
{
    cJSON *o = mlc_json_xobj(), *pts = mlc_json_xarr();
    long long now = now_ms() / 1000, start = (now / 3600 - 23) * 3600;
    long long buckets[24];

    state_run_records_hourly(st, start, 24, buckets);
    for (int i = 0; i < 24; i++) {
        cJSON *p = mlc_json_xobj();
        mlc_json_xadd_num(p, "t", (double)(start + i * 3600));
        mlc_json_xadd_num(p, "records", (double)buckets[i]);
        cJSON_AddItemToArray(pts, p);
    }
    mlc_json_xadd_num(o, "bucket_s", 3600);
    mlc_json_xadd(o, "points", pts);
    return o;
}

static void add_audit(void *ctx, const struct audit_entry *e)
{
    cJSON *o = mlc_json_xobj();

    mlc_json_xadd_num(o, "id", (double)e->id);
    mlc_json_xadd_num(o, "at_ms", (double)e->at * 1000);
    mlc_json_xadd_str(o, "flow", e->flow);
    mlc_json_xadd_str(o, "source_key", e->source_key);
    mlc_json_xadd_str(o, "target_key", e->target_key);
    mlc_json_xadd_str(o, "audit_id", e->audit_id);
    mlc_json_xadd_str(o, "action", e->action);
    mlc_json_xadd_str(o, "detail", e->detail);
    cJSON_AddItemToArray(ctx, o);
}

cJSON *statusview_audit(struct state *st, const char *q_text, int limit)
{
    cJSON *arr = mlc_json_xarr();

    state_audit_recent(st, q_text, limit, add_audit, arr);
    return arr;
}

static void add_dead(void *ctx, const struct dead_entry *e)
{
    cJSON *o = mlc_json_xobj();

    mlc_json_xadd_num(o, "id", (double)e->id);
    mlc_json_xadd_str(o, "flow", e->flow);
    mlc_json_xadd_str(o, "source_key", e->source_key);
    mlc_json_xadd_str(o, "error", e->error);
    mlc_json_xadd_num(o, "attempts", (double)e->attempts);
    mlc_json_xadd_num(o, "at_ms", (double)e->at * 1000);
    mlc_json_xadd_str(o, "audit_id", e->audit_id);
    cJSON_AddItemToArray(ctx, o);
}

cJSON *statusview_dead(struct state *st, const char *flow, int limit)
{
    cJSON *arr = mlc_json_xarr();

    state_dead_list(st, flow, limit, add_dead, arr);
    return arr;
}

cJSON *statusview_snapshot(struct agent *a, struct state *st, struct tunnel_client *t, long long started_ms)
{
    cJSON *root = mlc_json_xobj(), *ag = mlc_json_xobj(), *health = mlc_json_xarr(), *flows = mlc_json_xarr(), *h;
    char *running = kv_text(st, "running");
    const char *worst = "ok";

    mlc_json_xadd_str(ag, "version", MLC_VERSION);
    mlc_json_xadd_num(ag, "now_ms", (double)now_ms());
    mlc_json_xadd_num(ag, "started_ms", (double)started_ms);
    mlc_json_xadd(root, "agent", ag);
    mlc_json_xadd(root, "systems", systems_json(a, st, health));
    for (int i = 0; i < a->n_flows; i++) {
        cJSON_AddItemToArray(flows, flow_json(a, st, &a->flows[i], running, health));
    }
    mlc_json_xadd(root, "flows", flows);
    mlc_json_xadd(root, "tunnel", tunnel_json(a, st, t, health));
    mlc_json_xadd(root, "throughput", throughput_json(st));
    mlc_json_xadd(root, "audit", statusview_audit(st, NULL, 20));
    mlc_json_xadd(root, "dead", statusview_dead(st, NULL, 50));
    cJSON_ArrayForEach(h, health)
    {
        const char *l = mlc_json_str(h, "level");
        if (strcmp(l, "crit") == 0 || (strcmp(l, "warn") == 0 && strcmp(worst, "ok") == 0)) {
            worst = l;
        }
    }
    mlc_json_xadd_str(ag, "health", worst);
    mlc_json_xadd(root, "health", health);
    free(running);
    return root;
}

/* ---- Prometheus ---- */

static void esc_label(struct mlc_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') {
            mlc_buf_addf(b, "\\%c", *v);
        } else if (*v == '\n') {
            mlc_buf_adds(b, "\\n");
        } else {
            mlc_buf_add(b, v, 1);
        }
    }
}

static void family(struct mlc_buf *b, const char *name, const char *type, const char *help)
{
    mlc_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void statusview_metrics(struct agent *a, struct state *st, struct tunnel_client *t, struct mlc_buf *b)
{
    static const char *const outcomes[] = { "created", "updated", "unchanged", "failed", "adopted" };
    static const char *const classes[] = { "error", "1xx", "2xx", "3xx", "4xx", "5xx" };
    long long now = now_ms();

    struct run_sums *tot = mlc_xcalloc(a->n_flows > 0 ? (size_t)a->n_flows : 1, sizeof(*tot));

    for (int i = 0; i < a->n_flows; i++) {
        state_run_totals(st, a->flows[i].name, &tot[i]);
    }
    family(b, "mlc_agent_records_total", "counter", "Records handled by sync runs, by flow and outcome.");
    for (int i = 0; i < a->n_flows; i++) {
        const long long by_outcome[] = { tot[i].created, tot[i].updated, tot[i].unchanged,
                                         tot[i].failed, tot[i].adopted };
        for (int k = 0; k < 5; k++) {
            mlc_buf_adds(b, "mlc_agent_records_total{flow=\"");
            esc_label(b, a->flows[i].name);
            mlc_buf_addf(b, "\",outcome=\"%s\"} %lld\n", outcomes[k], by_outcome[k]);
        }
    }
    family(b, "mlc_agent_warnings_total", "counter",
           "Values left out of records by sync runs (e.g. an assignee the target does not know), by flow.");
    for (int i = 0; i < a->n_flows; i++) {
        mlc_buf_adds(b, "mlc_agent_warnings_total{flow=\"");
        esc_label(b, a->flows[i].name);
        mlc_buf_addf(b, "\"} %lld\n", tot[i].warnings);
    }
    free(tot);
    family(b, "mlc_agent_unanswered_creates", "gauge",
           "Creates sent without an answer and not yet found at the target, by flow.");
    for (int i = 0; i < a->n_flows; i++) {
        mlc_buf_adds(b, "mlc_agent_unanswered_creates{flow=\"");
        esc_label(b, a->flows[i].name);
        mlc_buf_addf(b, "\"} %lld\n", state_outbox_unanswered(st, a->flows[i].name));
    }
    family(b, "mlc_agent_api_calls_total", "counter",
           "HTTP requests to each system since start, by status class (error = no answer).");
    for (int i = 0; i < a->n_conns; i++) {
        const struct mlc_http_stats *hs = a->conns[i].http ? mlc_http_stats(a->conns[i].http) : NULL;
        for (int k = 0; k < 6 && hs; k++) {
            mlc_buf_adds(b, "mlc_agent_api_calls_total{system=\"");
            esc_label(b, a->conns[i].name);
            mlc_buf_addf(b, "\",status=\"%s\"} %lu\n", classes[k], __atomic_load_n(&hs->by_class[k], __ATOMIC_RELAXED));
        }
    }
    family(b, "mlc_agent_token_refreshes_total", "counter", "New sessions or access tokens obtained since start.");
    for (int i = 0; i < a->n_conns; i++) {
        mlc_buf_adds(b, "mlc_agent_token_refreshes_total{system=\"");
        esc_label(b, a->conns[i].name);
        mlc_buf_addf(b, "\"} %lu\n", __atomic_load_n(&a->conns[i].token_refreshes, __ATOMIC_RELAXED));
    }
    family(b, "mlc_agent_outbox_depth", "gauge", "Records waiting to be delivered.");
    for (int i = 0; i < a->n_flows; i++) {
        mlc_buf_adds(b, "mlc_agent_outbox_depth{flow=\"");
        esc_label(b, a->flows[i].name);
        mlc_buf_addf(b, "\"} %lld\n", state_outbox_count(st, a->flows[i].name));
    }
    family(b, "mlc_agent_dead_letters", "gauge", "Records that gave up, waiting for a replay.");
    for (int i = 0; i < a->n_flows; i++) {
        mlc_buf_adds(b, "mlc_agent_dead_letters{flow=\"");
        esc_label(b, a->flows[i].name);
        mlc_buf_addf(b, "\"} %lld\n", state_dead_count(st, a->flows[i].name));
    }
    family(b, "mlc_agent_inbox_depth", "gauge", "Relay deliveries not yet applied.");
    mlc_buf_addf(b, "mlc_agent_inbox_depth %lld\n", state_inbox_count(st, "pending"));
    family(b, "mlc_agent_cursor_lag_seconds", "gauge",
           "How far behind now each flow has certainly read its source (last successful run, else its cursor).");
    for (int i = 0; i < a->n_flows; i++) {
        char *cur = NULL;
        struct mlc_errbuf err = { 0 };
        long long ct;
        state_cursor_get(st, a->flows[i].name, &cur, &err);
        ct = read_up_to_ms(st, &a->flows[i], cur);
        free(cur);
        if (ct > 0) {
            mlc_buf_adds(b, "mlc_agent_cursor_lag_seconds{flow=\"");
            esc_label(b, a->flows[i].name);
            mlc_buf_addf(b, "\"} %.0f\n", (double)(now - ct) / 1000);
        }
    }
    family(b, "mlc_agent_oldest_item_age_seconds", "gauge", "Age of the oldest undelivered outbox item per flow.");
    for (int i = 0; i < a->n_flows; i++) {
        long long o = state_outbox_oldest_at(st, a->flows[i].name);
        mlc_buf_adds(b, "mlc_agent_oldest_item_age_seconds{flow=\"");
        esc_label(b, a->flows[i].name);
        mlc_buf_addf(b, "\"} %lld\n", o > 0 ? now / 1000 - o : 0);
    }
    family(b, "mlc_agent_expiry_days", "gauge",
           "Days before a credential or a target's webhook expires.");
    for (int i = 0; i < a->n_conns; i++) {
        long long e = parse_date_ms(conn_setting(&a->conns[i], "credential_expires"));
        if (e > 0) {
            mlc_buf_adds(b, "mlc_agent_expiry_days{what=\"credential\",name=\"");
            esc_label(b, a->conns[i].name);
            mlc_buf_addf(b, "\"} %.2f\n", (double)(e - now) / 86400000.0);
        }
    }
    for (int i = 0; i < a->n_flows; i++) {
        char key[160];
        cJSON *w;
        snprintf(key, sizeof(key), "watch.%s", a->flows[i].name);
        w = kv_json(st, key);
        if (mlc_json_num(w, "expires_ms", 0) > 0) {
            mlc_buf_adds(b, "mlc_agent_expiry_days{what=\"webhook\",name=\"");
            esc_label(b, a->flows[i].name);
            mlc_buf_addf(b, "\"} %.2f\n", (mlc_json_num(w, "expires_ms", 0) - (double)now) / 86400000.0);
        }
        cJSON_Delete(w);
    }
    family(b, "mlc_agent_tunnel_up", "gauge", "1 while the relay tunnel is connected (0 also when none is configured).");
    if (t != NULL) {
        struct tunnel_info ti;
        tunnel_info(t, &ti);
        mlc_buf_addf(b, "mlc_agent_tunnel_up %d\n", ti.connected);
        family(b, "mlc_agent_tunnel_rtt_ms", "gauge", "Last PING round trip to the relay.");
        mlc_buf_addf(b, "mlc_agent_tunnel_rtt_ms %lld\n", ti.rtt_ms < 0 ? 0 : ti.rtt_ms);
        family(b, "mlc_agent_tunnel_reconnects_total", "counter", "Tunnel connection attempts after the first.");
        mlc_buf_addf(b, "mlc_agent_tunnel_reconnects_total %lld\n", ti.reconnects);
    } else {
        mlc_buf_adds(b, "mlc_agent_tunnel_up 0\n");
    }
}

/* ---- terminal ---- */

static void when(char *out, size_t n, double ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    strftime(out, n, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
}

void statusview_print(const cJSON *snap, FILE *f)
{
    const cJSON *it, *tun = cJSON_GetObjectItem(snap, "tunnel");
    long long inbox = 0;

    cJSON_ArrayForEach(it, cJSON_GetObjectItem(snap, "systems"))
    {
        const cJSON *r = cJSON_GetObjectItem(it, "reachable");
        fprintf(f, "system %s (%s): %s, auth %s%s%s\n", mlc_json_str(it, "name"), mlc_json_str(it, "type"),
                cJSON_IsTrue(r) ? "reachable" : cJSON_IsFalse(r) ? "UNREACHABLE" : "not checked",
                mlc_json_str(it, "auth"), cJSON_IsTrue(r) || cJSON_IsFalse(r) ? " — " : "",
                cJSON_IsTrue(r) || cJSON_IsFalse(r) ? mlc_json_str(it, "detail") : "");
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(snap, "flows"))
    {
        const cJSON *lr = cJSON_GetObjectItem(it, "last_run");
        char t1[32];
        fprintf(f, "flow %s: %.0f records synced, outbox %.0f, dead letters %.0f, cursor %s\n",
                mlc_json_str(it, "name"), mlc_json_num(it, "synced", 0), mlc_json_num(it, "outbox", 0),
                mlc_json_num(it, "dead", 0), mlc_json_str(it, "cursor") ? mlc_json_str(it, "cursor") : "(none)");
        if (cJSON_IsObject(lr)) {
            when(t1, sizeof(t1), mlc_json_num(lr, "started_ms", 0));
            fprintf(f,
                    "  last run %s UTC: %s, created %.0f, updated %.0f, unchanged %.0f, adopted %.0f, "
                    "failed %.0f, pending %.0f, warnings %.0f %s\n",
                    t1, mlc_json_str(lr, "status"), mlc_json_num(lr, "created", 0),
                    mlc_json_num(lr, "updated", 0), mlc_json_num(lr, "unchanged", 0),
                    mlc_json_num(lr, "adopted", 0), mlc_json_num(lr, "failed", 0),
                    mlc_json_num(lr, "pending", 0), mlc_json_num(lr, "warnings", 0),
                    mlc_json_str(lr, "error") ? mlc_json_str(lr, "error") : "");
        }
        if (mlc_json_num(it, "unanswered", 0) > 0) {
            fprintf(f, "  %.0f unanswered creates: looked up again each run, never sent twice\n",
                    mlc_json_num(it, "unanswered", 0));
        }
        if (mlc_json_num(it, "next_run_ms", 0) > 0) {
            when(t1, sizeof(t1), mlc_json_num(it, "next_run_ms", 0));
            fprintf(f, "  next run %s UTC\n", t1);
        }
        if (mlc_json_str(it, "schedule_zone") != NULL) {
            fprintf(f, "  schedule %s, local time %s\n", mlc_json_str(it, "schedule"),
                    mlc_json_str(it, "schedule_zone"));
        }
        inbox = (long long)mlc_json_num(it, "inbox", 0) > inbox ? (long long)mlc_json_num(it, "inbox", 0) : inbox;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItem(tun, "configured"))) {
        char t1[32];
        when(t1, sizeof(t1), mlc_json_num(tun, "since_ms", 0));
        fprintf(f, "relay tunnel %s: %s since %s UTC\n", mlc_json_str(tun, "url"),
                cJSON_IsTrue(cJSON_GetObjectItem(tun, "connected")) ? "connected" : "not connected", t1);
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(snap, "health"))
    {
        const char *l = mlc_json_str(it, "level");
        fprintf(f, "health %-4s %s: %s%s%s\n", strcmp(l, "ok") == 0 ? "ok" : strcmp(l, "warn") == 0 ? "WARN" : "CRIT",
                mlc_json_str(it, "what"), mlc_json_str(it, "value"), strcmp(l, "ok") ? " — " : "",
                strcmp(l, "ok") ? mlc_json_str(it, "advice") : "");
    }
    (void)inbox;
}
