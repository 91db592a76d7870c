/* SPDX-License-Identifier: Apache-2.0
 * daemon: `mlc-agent run`. The worker loop (this thread) runs flows on their
 * schedules, applies inbox deliveries (write-back), keeps the targets'
 * webhooks registered, polls targets that cannot send webhooks, and answers
 * relay commands. The tunnel lives on its own thread (tunnel.c) and talks to
 * this loop through the inbox table and the mailbox (mailbox.h).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/daemon.h"
#include "agent/mailbox.h"
#include "agent/statusd.h"
#include "agent/tunnel.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

/* quiet this long before freed heap is given back (malloc_trim) */
#define IDLE_TRIM_MS 5000

struct watcher {
    struct flow *f;
    cJSON *state;          /* connector-owned, persisted as kv "watch.<flow>" */
    long long next_watch_ms;
    long long next_poll_ms; /* only in mode "poll" */
    char *cursor;           /* changes() cursor, kv "poll.<flow>" */
};

static long long now_ms(void)
{
    return state_now_ms();
}

/* https://relay/hooks/<type>/t1 from wss://relay/tunnel, unless relay.hook_url says otherwise. */
static char *hook_url(const struct agent *a, const char *kind)
{
    const char *u = a->relay.url, *rest, *slash;

    if (a->relay.hook_url && a->relay.hook_url[0]) {
        size_t n = strlen(a->relay.hook_url);
        return mlc_xasprintf("%.*s/%s/%s", (int)(a->relay.hook_url[n - 1] == '/' ? n - 1 : n),
                             a->relay.hook_url, kind, a->relay.tenant);
    }
    rest = strstr(u, "://");
    rest = rest ? rest + 3 : u;
    slash = strchr(rest, '/');
    return mlc_xasprintf("%s://%.*s/hooks/%s/%s", strncmp(u, "wss:", 4) == 0 ? "https" : "http",
                         (int)(slash ? slash - rest : (long)strlen(rest)), rest, kind, a->relay.tenant);
}

static const char *mode_of(const struct watcher *w)
{
    const char *m = mlc_json_str(w->state, "mode");
    return m ? m : "";
}

static void watcher_save(struct agent *a, struct watcher *w)
{
    struct mlc_errbuf err = { 0 };
    char key[160], *js = mlc_json_print(w->state);

    snprintf(key, sizeof(key), "watch.%s", w->f->name);
    if (state_kv_set(a->st, key, js, &err) != MLC_OK) {
        mlc_warn("flow %s: saving the webhook registration failed: %s", w->f->name, mlc_err_msg(&err));
    }
    free(js);
    if (w->cursor) {
        snprintf(key, sizeof(key), "poll.%s", w->f->name);
        state_kv_set(a->st, key, w->cursor, &err);
    }
}

static void watcher_load(struct agent *a, struct watcher *w)
{
    struct mlc_errbuf err = { 0 };
    char key[160], *v = NULL;

    snprintf(key, sizeof(key), "watch.%s", w->f->name);
    if (state_kv_get(a->st, key, &v, &err) == MLC_OK && v) {
        w->state = cJSON_Parse(v);
    }
    free(v);
    if (!cJSON_IsObject(w->state)) {
        cJSON_Delete(w->state);
        w->state = mlc_json_xobj();
    }
    v = NULL;
    snprintf(key, sizeof(key), "poll.%s", w->f->name);
    if (state_kv_get(a->st, key, &v, &err) == MLC_OK && v) {
        w->cursor = v;
    }
}

static void watchers_free(struct watcher *ws, int nw)
{
    for (int i = 0; i < nw; i++) {
        cJSON_Delete(ws[i].state);
        free(ws[i].cursor);
    }
    free(ws);
}

static void do_watch(struct agent *a, struct watcher *w, const char *hook_secret)
{
    struct conn *c = w->f->dst;
    struct watch_req req = { 0 };
    long long next = 0;
    char *url = hook_url(a, conn_type(c));
    const char *before = mode_of(w);
    char was[16];
    enum mlc_rc rc;

    snprintf(was, sizeof(was), "%s", before);
    req.url = url;
    req.hook_secret = hook_secret && hook_secret[0] ? hook_secret : NULL;
    req.now_ms = now_ms();
    mlc_err_reset(&c->err);
    rc = c->ops->watch(c, w->f->target, &req, w->state, &next);
    if (rc != MLC_OK) {
        mlc_warn("flow %s: keeping the %s webhook registered failed: %s (retrying in 5 minutes)",
                 w->f->name, c->name, mlc_err_msg(&c->err));
        w->next_watch_ms = now_ms() + 5 * 60 * 1000;
    } else {
        long long cap = now_ms() + a->relay.watch_every_s * 1000;
        w->next_watch_ms = next > 0 && next < cap ? next : cap;
        if (strcmp(was, mode_of(w)) != 0) {
            mlc_info("flow %s: %s changes arrive by %s%s", w->f->name, c->name,
                     strcmp(mode_of(w), "poll") == 0 ? "polling (no webhook could be used)"
                     : strcmp(mode_of(w), "admin") == 0 ? "admin webhook to "
                                                          : "dynamic webhook to ",
                     strcmp(mode_of(w), "poll") == 0 ? "" : url);
        }
    }
    watcher_save(a, w);
    free(url);
}

/* Polling fallback: a target's changes become local inbox deliveries
 * (negative seqs) of kind "<type>-poll". */
static void do_poll(struct agent *a, struct watcher *w)
{
    struct conn *c = w->f->dst;
    struct mlc_errbuf err = { 0 };
    cJSON *events = mlc_json_xarr(), *ev;
    enum mlc_rc rc;
    int stored = 0;

    mlc_err_reset(&c->err);
    rc = c->ops->changes(c, w->f->target, &w->cursor, w->state, events);
    if (rc != MLC_OK) {
        mlc_warn("flow %s: polling %s for changes failed: %s", w->f->name, c->name, mlc_err_msg(&c->err));
    }
    cJSON_ArrayForEach(ev, events)
    {
        char *body = cJSON_PrintUnformatted(ev), id[200], kind[16];
        const cJSON *item;
        size_t len;
        int fresh = 0;
        /* the same change seen twice is stored once: record, time and fields */
        len = (size_t)snprintf(id, sizeof(id), "poll:%s:%.0f:",
                               mlc_json_str(ev, "record") ? mlc_json_str(ev, "record") : "?",
                               mlc_json_num(ev, "at_ms", 0));
        cJSON_ArrayForEach(item, mlc_json_arr(ev, "items"))
        {
            if (len < sizeof(id)) {
                len += (size_t)snprintf(id + len, sizeof(id) - len, "%s,",
                                        mlc_json_str(item, "field") ? mlc_json_str(item, "field") : "");
            }
        }
        snprintf(kind, sizeof(kind), "%.10s-poll", conn_type(c));
        if (state_inbox_put(a->st, state_inbox_local_seq(a->st), kind, id, body, now_ms(), &fresh,
                            &err) != MLC_OK) {
            mlc_error("flow %s: storing a polled change failed: %s", w->f->name, mlc_err_msg(&err));
        }
        stored += fresh;
        free(body);
    }
    cJSON_Delete(events);
    if (stored) {
        mlc_info("flow %s: %d change(s) found by polling %s", w->f->name, stored, c->name);
    }
    watcher_save(a, w);
    w->next_poll_ms = now_ms() + a->relay.poll_every_s * 1000;
}

/* What the worker is doing, for the status page and `mlc-agent status`
 * (other threads and processes read it from the state database). */
static void live_set(struct agent *a, const char *key, const char *value)
{
    struct mlc_errbuf err = { 0 };

    state_kv_set(a->st, key, value, &err);
}

static void live_next(struct agent *a, const struct flow *f)
{
    char key[160], v[32];

    snprintf(key, sizeof(key), "next.%s", f->name);
    snprintf(v, sizeof(v), "%lld", f->next_due >= 0 ? f->next_due * 1000 : -1);
    live_set(a, key, v);
}

static void run_flow(struct agent *a, struct flow *f, cJSON *report)
{
    struct mlc_errbuf err = { 0 };
    struct sync_stats ss = { 0 };
    enum mlc_rc rc;
    long long now;

    live_set(a, "running", f->name);
    rc = pipeline_sync(a, f, 0, &ss, &err);
    live_set(a, "running", "");
    now = (long long)time(NULL);

    if (rc == MLC_OK) {
        mlc_info("flow %s: created %ld, updated %ld, unchanged %ld, adopted %ld, failed %ld, "
                 "pending %ld, seen %ld, warnings %ld",
                 f->name, ss.created, ss.updated, ss.unchanged, ss.adopted, ss.failed, ss.pending,
                 ss.seen, ss.warnings);
    } else if (rc != MLC_E_STOPPED) {
        mlc_error("%s", mlc_err_msg(&err));
    }
    if (report) {
        cJSON *o = mlc_json_xobj();
        cJSON_AddBoolToObject(o, "ok", rc == MLC_OK);
        mlc_json_xadd_num(o, "created", (double)ss.created);
        mlc_json_xadd_num(o, "updated", (double)ss.updated);
        mlc_json_xadd_num(o, "unchanged", (double)ss.unchanged);
        mlc_json_xadd_num(o, "failed", (double)ss.failed);
        mlc_json_xadd_num(o, "adopted", (double)ss.adopted);
        mlc_json_xadd_num(o, "pending", (double)ss.pending);
        mlc_json_xadd_num(o, "seen", (double)ss.seen);
        mlc_json_xadd_num(o, "warnings", (double)ss.warnings);
        if (rc != MLC_OK) {
            mlc_json_xadd_str(o, "error", mlc_err_msg(&err));
        }
        mlc_json_xadd(report, f->name, o);
    }
    if (f->next_due >= 0 || report == NULL) {
        f->next_due = sched_next(f->sched, f->every_s, f->daily_min, now);
        if (rc != MLC_OK && f->next_due - now > 60) {
            f->next_due = now + 60; /* a failed run retries sooner than a long schedule would */
        }
        if (f->sched == SCHED_MANUAL || !f->enabled) {
            f->next_due = -1;
        }
    }
    live_next(a, f);
}

/* `ping` for the status page and the relay: every system, results kept in
 * the state database ("ping.<system>") for the page's systems table. */
static cJSON *ping_all(struct agent *a)
{
    cJSON *arr = mlc_json_xarr();

    for (int i = 0; i < a->n_conns && !a->stop; i++) {
        struct conn *c = &a->conns[i];
        cJSON *o = mlc_json_xobj();
        enum mlc_rc rc;
        char key[160], *js;
        mlc_err_reset(&c->err);
        rc = conn_ping(c);
        mlc_json_xadd_str(o, "name", c->name);
        mlc_json_xadd_str(o, "type", conn_type(c));
        cJSON_AddBoolToObject(o, "ok", rc == MLC_OK);
        cJSON_AddBoolToObject(o, "reachable", rc == MLC_OK || rc == MLC_E_AUTH || rc == MLC_E_REJECTED);
        mlc_json_xadd_str(o, "auth", rc == MLC_OK ? "ok" : rc == MLC_E_AUTH ? "failed" : "unknown");
        mlc_json_xadd_str(o, "detail", rc == MLC_OK ? "ok" : mlc_err_msg(&c->err));
        mlc_json_xadd_num(o, "checked_ms", (double)now_ms());
        js = mlc_json_print(o);
        snprintf(key, sizeof(key), "ping.%s", c->name);
        live_set(a, key, js);
        free(js);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static void handle_command(struct agent *a, const struct mb_msg *cmd)
{
    cJSON *in = cJSON_Parse(cmd->json), *out = mlc_json_xobj();
    const char *what = mlc_json_str(in, "command"), *flow = mlc_json_str(in, "flow");
    char *js;

    mlc_info("command %lld: %s%s%s", cmd->id, what ? what : "?", flow ? " " : "", flow ? flow : "");
    if (what && strcmp(what, "ping-systems") == 0) {
        cJSON_AddBoolToObject(out, "ok", 1);
        mlc_json_xadd(out, "systems", ping_all(a));
    } else if (what && strcmp(what, "ping") == 0) {
        cJSON *names = mlc_json_xarr();
        cJSON_AddBoolToObject(out, "ok", 1);
        mlc_json_xadd_str(out, "agent", "mlc-agent");
        mlc_json_xadd_str(out, "version", MLC_VERSION);
        mlc_json_xadd_num(out, "time_ms", (double)now_ms());
        mlc_json_xadd_num(out, "inbox_pending", (double)state_inbox_pending(a->st));
        for (int i = 0; i < a->n_flows; i++) {
            cJSON_AddItemToArray(names, cJSON_CreateString(a->flows[i].name));
        }
        mlc_json_xadd(out, "flows", names);
    } else if (what && strcmp(what, "sync-now") == 0) {
        cJSON *report = mlc_json_xobj();
        int ran = 0, ok = 1;
        a->after_defer = 1;
        for (int i = 0; i < a->n_flows && !a->stop; i++) {
            struct flow *f = &a->flows[i];
            if ((flow && strcmp(flow, f->name) != 0) || (!flow && !f->enabled)) {
                continue;
            }
            run_flow(a, f, report);
            ran++;
            ok &= cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(report, f->name), "ok"));
        }
        pipeline_after_flush(a);
        if (ran == 0) {
            cJSON_AddBoolToObject(out, "ok", 0);
            mlc_json_xadd_str(out, "error", flow ? "no such flow" : "no enabled flow");
            cJSON_Delete(report);
        } else {
            cJSON_AddBoolToObject(out, "ok", ok);
            mlc_json_xadd(out, "flows", report);
        }
    } else {
        cJSON_AddBoolToObject(out, "ok", 0);
        mlc_json_xadd_str(out, "error", "unknown command (known: ping, sync-now)");
    }
    js = mlc_json_print(out);
    if (cmd->reply) {
        cmd->reply(cmd->ctx, cmd->id, js);
    }
    free(js);
    cJSON_Delete(out);
    cJSON_Delete(in);
}

int agent_daemon(struct agent *a)
{
    struct mlc_errbuf err = { 0 };
    struct tunnel_client *t = NULL;
    struct statusd *sd = NULL;
    struct mailbox mb;
    struct watcher *ws = mlc_xcalloc((size_t)(a->n_flows ? a->n_flows : 1), sizeof(*ws));
    char *key = NULL, *hook_secret = NULL, agent_id[128] = "agent";
    int nw = 0, any_wb = 0;
    long long now = (long long)time(NULL);

    for (int i = 0; i < a->n_flows; i++) {
        struct flow *f = &a->flows[i];
        /* the first cycle runs at start-up; then the schedule takes over */
        f->next_due = f->sched == SCHED_MANUAL || !f->enabled ? -1 : now;
        live_next(a, f);
        if (f->wb != NULL) {
            any_wb = 1;
            if (a->has_relay && f->dst->ops->watch != NULL && f->enabled) {
                ws[nw].f = f;
                watcher_load(a, &ws[nw]);
                nw++;
            }
        }
    }
    mailbox_init(&mb);
    live_set(a, "running", "");
    if (a->has_relay) {
        struct tunnel_opts o = { 0 };
        if (secrets_resolve(a->secrets, a->relay.key, &key, &err) != MLC_OK) {
            mlc_error("relay.key: %s", mlc_err_msg(&err));
            watchers_free(ws, nw);
            return 2;
        }
        if (a->relay.hook_secret && a->relay.hook_secret[0] &&
            secrets_resolve(a->secrets, a->relay.hook_secret, &hook_secret, &err) != MLC_OK) {
            mlc_error("relay.hook_secret: %s", mlc_err_msg(&err));
            free(key);
            watchers_free(ws, nw);
            return 2;
        }
        gethostname(agent_id, sizeof(agent_id) - 1);
        o.url = a->relay.url;
        o.tenant = a->relay.tenant;
        o.key = key;
        o.agent_id = agent_id;
        o.state_db = a->cf.state_db;
        o.ca_file = a->relay.ca_file;
        o.tls_insecure = a->relay.tls_insecure;
        o.heartbeat_s = a->relay.heartbeat_s;
        o.mb = &mb;
        if (tunnel_start(&t, &o, &err) != MLC_OK) {
            mlc_error("%s", mlc_err_msg(&err));
            free(key);
            free(hook_secret);
            watchers_free(ws, nw);
            mailbox_destroy(&mb);
            return 2;
        }
    }
    if (statusd_start(&sd, a, &mb, t, &err) != MLC_OK) {
        mlc_error("%s", mlc_err_msg(&err));
        tunnel_stop(t);
        free(key);
        free(hook_secret);
        watchers_free(ws, nw);
        mailbox_destroy(&mb);
        return 2;
    }
    mlc_info("mlc-agent %s running %d flows (state %s)%s", MLC_VERSION, a->n_flows, a->cf.state_db,
             t ? ", relay tunnel on" : "");
    long long next_ping_ms = 0; /* systems' reachability for the status page: at start, then every 10 min */
    long long busy_ms = now_ms(); /* when the worker last did something */
    int trim = 1;                 /* work since memory was last given back (start-up counts) */
    while (!a->stop) {
        long long soonest_ms = now_ms() + 1000;
        struct mb_msg *cmd;
        long wait;

        now = (long long)time(NULL);
        for (int i = 0; i < a->n_flows; i++) {
            if (a->flows[i].next_due >= 0 && a->flows[i].next_due * 1000 < soonest_ms) {
                soonest_ms = a->flows[i].next_due * 1000;
            }
        }
        for (int i = 0; i < nw; i++) {
            if (ws[i].next_watch_ms < soonest_ms) {
                soonest_ms = ws[i].next_watch_ms;
            }
            if (strcmp(mode_of(&ws[i]), "poll") == 0 && ws[i].next_poll_ms < soonest_ms) {
                soonest_ms = ws[i].next_poll_ms;
            }
        }
        wait = (long)(soonest_ms - now_ms());
        /* short waits so a stop request is seen quickly */
        if ((cmd = mailbox_wait(&mb, wait > 0 ? (wait > 500 ? 500 : wait) : 0)) != NULL) {
            handle_command(a, cmd);
            mailbox_msg_free(cmd);
            busy_ms = now_ms();
        }
        if (a->stop) {
            break;
        }
        if (any_wb) {
            struct wb_stats st = { 0 };
            if (writeback_drain(a, 200, &st, &err) != MLC_OK) {
                mlc_error("write-back: %s", mlc_err_msg(&err));
                mlc_err_reset(&err);
            } else if (st.applied || st.failed || st.echoes) {
                mlc_info("write-back: applied %ld, ignored %ld, echoes %ld, failed %ld, retrying %ld",
                         st.applied, st.ignored, st.echoes, st.failed, st.retry);
                busy_ms = now_ms();
            }
        }
        if (now_ms() >= next_ping_ms && !a->stop) {
            cJSON_Delete(ping_all(a));
            next_ping_ms = now_ms() + 10 * 60 * 1000;
            busy_ms = now_ms();
        }
        now = (long long)time(NULL);
        a->after_defer = 1; /* flows due together: one after_load call per system */
        for (int i = 0; i < a->n_flows && !a->stop; i++) {
            struct flow *f = &a->flows[i];
            if (f->next_due >= 0 && f->next_due <= now) {
                run_flow(a, f, NULL);
                busy_ms = now_ms();
            }
        }
        pipeline_after_flush(a);
        for (int i = 0; i < nw && !a->stop; i++) {
            if (ws[i].next_watch_ms <= now_ms()) {
                do_watch(a, &ws[i], hook_secret);
                busy_ms = now_ms();
            }
            if (strcmp(mode_of(&ws[i]), "poll") == 0 && ws[i].f->dst->ops->changes != NULL &&
                ws[i].next_poll_ms <= now_ms()) {
                do_poll(a, &ws[i]);
                busy_ms = now_ms();
            }
        }
        /* Quiet for a while after start-up or work: give the heap it freed
         * back to the kernel. (Most of an idle agent's resident set is the
         * pages of the ~40 libraries libcurl brings in: shared, clean and
         * reclaimable, so they are left alone.) */
        if (busy_ms > now_ms() - IDLE_TRIM_MS) {
            trim = 1;
        } else if (trim && !a->stop) {
            malloc_trim(0);
            mlc_debug("idle: free heap returned to the kernel");
            trim = 0;
        }
    }
    mlc_info("mlc-agent stopping");
    statusd_stop(sd);
    tunnel_stop(t);
    mailbox_destroy(&mb);
    watchers_free(ws, nw);
    if (key) {
        memset(key, 0, strlen(key));
    }
    free(key);
    free(hook_secret);
    return 0;
}
