/* SPDX-License-Identifier: Apache-2.0
 * statusd: the local status page (see statusd.h).
 *
 *   GET  /, /app.js, /style.css      the page, embedded in the binary
 *   GET  /api/session                {"login_required","logged_in"}
 *   POST /login, /logout             session cookie (HttpOnly, SameSite=Strict)
 *   GET  /api/status                 the snapshot (also pushed on WebSocket /ws every 2 s)
 *   GET  /api/audit?q=&limit=        audit search by source key, target key or audit id
 *   POST /api/flows/{flow}/sync      queue a sync on the worker (202)
 *   POST /api/flows/{flow}/replay    dead letters of a flow back to the outbox, then sync
 *   POST /api/dead/{id}/replay       one dead letter
 *   POST /api/ping                   every system's address and credentials (the worker runs it)
 *   GET  /metrics                    Prometheus text
 *
 * Every POST needs "X-Requested-With: mlc" (a header no other site can make
 * a browser send) and, when a password is configured, the session cookie.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libwebsockets.h>
#include <cjson/cJSON.h>
#include "agent/agent.h"
#include "agent/mailbox.h"
#include "agent/statusd.h"
#include "agent/statusview.h"
#include "agent/tunnel.h"
#include "agent/web_assets.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "shared/mlc_lws.h"

#define MAX_BODY (64 * 1024)
#define MAX_SESSIONS 64
#define SESSION_MS (12LL * 3600 * 1000)
#define PUSH_MS 2000

struct session {
    char token[65];
    long long expires_ms;
};

struct answer {
    struct answer *next;
    long long id;
    char *json;
};

struct http_pss {
    struct lws *wsi;
    struct http_pss *next_waiting; /* waiting for a worker answer */
    char path[256];
    int post;
    struct mlc_buf body;
    int too_big;
    long long wait_id;             /* > 0: answer pending from the worker */
    int status;                    /* deferred answer */
    char *reply;
};

struct ws_pss {
    unsigned gen; /* snapshot generation already sent */
};

struct statusd {
    struct agent *a;
    struct mailbox *mb;
    struct tunnel_client *t;
    struct state *st;
    struct lws_context *ctx;
    pthread_t thr;
    int started;
    volatile int stop;
    int login_required;
    long long started_ms;
    struct session sessions[MAX_SESSIONS];
    struct http_pss *waiting;
    long long next_id;
    char *snap;     /* current snapshot JSON */
    size_t snap_len;
    unsigned gen;
    lws_sorted_usec_list_t sul_push;
    /* worker answers, under mu */
    pthread_mutex_t mu;
    struct answer *answers;
    int push_now;
};

static long long now_ms(void)
{
    return state_now_ms();
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
static int cb_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

static const struct lws_protocols protocols[] = {
    { "http", cb_http, sizeof(struct http_pss), 0, 0, NULL, 0 },
    { "mlc-status", cb_ws, sizeof(struct ws_pss), 1024, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};


static struct statusd *of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* ---- sessions ---- */

static int session_valid(struct statusd *sd, struct lws *wsi)
{
    char cookie[1024], *p;
    long long now = now_ms();

    if (!sd->login_required) {
        return 1;
    }
    if (lws_hdr_copy(wsi, cookie, sizeof(cookie), WSI_TOKEN_HTTP_COOKIE) <= 0) {
        return 0;
    }
    for (p = strstr(cookie, "mlc_session="); p; p = strstr(p + 1, "mlc_session=")) {
        char tok[65];
        size_t n = 0;
        if (p != cookie && p[-1] != ' ' && p[-1] != ';') {
            continue;
        }
        p += 12;
        while (n < 64 && p[n] && p[n] != ';') {
            tok[n] = p[n];
            n++;
        }
        tok[n] = '\0';
        if (n != 64) {
            continue;
        }
        for (int i = 0; i < MAX_SESSIONS; i++) {
            if (sd->sessions[i].expires_ms > now && mlc_ct_equal(sd->sessions[i].token, tok, 64)) {
                return 1;
            }
        }
    }
    return 0;
}

static const char *session_new(struct statusd *sd)
{
    uint8_t raw[32];
    int slot = 0;
    long long now = now_ms();

    for (int i = 0; i < MAX_SESSIONS; i++) {
        if (sd->sessions[i].expires_ms < sd->sessions[slot].expires_ms) {
            slot = i; /* an expired or the oldest session makes room */
        }
    }
    if (mlc_random(raw, sizeof(raw)) != MLC_OK) {
        return NULL;
    }
    mlc_hex(raw, sizeof(raw), sd->sessions[slot].token);
    sd->sessions[slot].expires_ms = now + SESSION_MS;
    return sd->sessions[slot].token;
}

static void session_end(struct statusd *sd, struct lws *wsi)
{
    char cookie[1024], *p;

    if (lws_hdr_copy(wsi, cookie, sizeof(cookie), WSI_TOKEN_HTTP_COOKIE) > 0 &&
        (p = strstr(cookie, "mlc_session=")) != NULL && strlen(p + 12) >= 64) {
        for (int i = 0; i < MAX_SESSIONS; i++) {
            if (mlc_ct_equal(sd->sessions[i].token, p + 12, 64)) {
                sd->sessions[i].expires_ms = 0;
            }
        }
    }
}

/* ---- responses ---- */

/* Every answer of the page: not cached, not sniffed, no foreign scripts or framing. */
static int respond(struct lws *wsi, unsigned status, const char *type, const void *body, size_t len,
                   const char *extra_header)
{
    const char *headers[] = { "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                              "Content-Security-Policy: default-src 'self'; connect-src 'self'; "
                              "frame-ancestors 'none'",
                              extra_header, NULL };

    return mlc_lws_reply(wsi, status, type, body, len, headers);
}

static int respond_json(struct lws *wsi, unsigned status, const cJSON *o, const char *extra_header)
{
    char *s = mlc_json_print(o);
    int rv = respond(wsi, status, "application/json", s, strlen(s), extra_header);

    free(s);
    return rv;
}

static int respond_error(struct lws *wsi, unsigned status, const char *msg)
{
    cJSON *o = mlc_json_xobj();
    int rv;

    mlc_json_xadd_str(o, "error", msg);
    rv = respond_json(wsi, status, o, NULL);
    cJSON_Delete(o);
    return rv;
}

/* ---- snapshot and push ---- */

static void refresh_snapshot(struct statusd *sd)
{
    cJSON *s = statusview_snapshot(sd->a, sd->st, sd->t, sd->started_ms);
    char *js = mlc_json_print(s);

    cJSON_Delete(s);
    free(sd->snap);
    sd->snap = js;
    sd->snap_len = strlen(js);
    sd->gen++;
    lws_callback_on_writable_all_protocol(sd->ctx, &protocols[1]);
}

static void push_cb(lws_sorted_usec_list_t *sul)
{
    struct statusd *sd = lws_container_of(sul, struct statusd, sul_push);

    refresh_snapshot(sd);
    lws_sul_schedule(sd->ctx, 0, &sd->sul_push, push_cb, PUSH_MS * LWS_US_PER_MS);
}

/* worker thread -> this loop */
static void on_worker_answer(void *ctx, long long id, const char *json)
{
    struct statusd *sd = ctx;
    struct answer *a = mlc_xcalloc(1, sizeof(*a));

    a->id = id;
    a->json = mlc_xstrdup(json);
    pthread_mutex_lock(&sd->mu);
    a->next = sd->answers;
    sd->answers = a;
    sd->push_now = 1;
    pthread_mutex_unlock(&sd->mu);
    lws_cancel_service(sd->ctx);
}

static void take_answers(struct statusd *sd)
{
    struct answer *a;
    int push;

    pthread_mutex_lock(&sd->mu);
    a = sd->answers;
    sd->answers = NULL;
    push = sd->push_now;
    sd->push_now = 0;
    pthread_mutex_unlock(&sd->mu);
    while (a) {
        struct answer *n = a->next;
        for (struct http_pss *w = sd->waiting; w; w = w->next_waiting) {
            if (w->wait_id == a->id) {
                w->status = 200;
                w->reply = a->json;
                a->json = NULL;
                w->wait_id = 0;
                lws_callback_on_writable(w->wsi);
                break;
            }
        }
        free(a->json);
        free(a);
        a = n;
    }
    if (push) {
        refresh_snapshot(sd);
    }
}

static void unwait(struct statusd *sd, struct http_pss *pss)
{
    for (struct http_pss **pp = &sd->waiting; *pp; pp = &(*pp)->next_waiting) {
        if (*pp == pss) {
            *pp = pss->next_waiting;
            break;
        }
    }
    pss->next_waiting = NULL;
}

/* ---- routes ---- */

static const struct web_asset *asset(const char *path)
{
    for (const struct web_asset *w = web_assets; w->path; w++) {
        if (strcmp(w->path, path) == 0) {
            return w;
        }
    }
    return NULL;
}

static int route_get(struct statusd *sd, struct lws *wsi, const char *path)
{
    const struct web_asset *w = asset(strcmp(path, "/index.html") == 0 ? "/" : path);
    cJSON *o;
    int rv;

    if (w != NULL) {
        /* the page itself loads without a session: it shows the login form */
        return respond(wsi, 200, w->type, w->data, w->len, NULL);
    }
    if (strcmp(path, "/api/session") == 0) {
        o = mlc_json_xobj();
        cJSON_AddBoolToObject(o, "login_required", sd->login_required);
        cJSON_AddBoolToObject(o, "logged_in", session_valid(sd, wsi));
        rv = respond_json(wsi, 200, o, NULL);
        cJSON_Delete(o);
        return rv;
    }
    if (strcmp(path, "/metrics") != 0 && strncmp(path, "/api/", 5) != 0) {
        return respond_error(wsi, 404, "not found");
    }
    if (!session_valid(sd, wsi)) {
        return respond_error(wsi, 401, "log in first (POST /login)");
    }
    if (strcmp(path, "/metrics") == 0) {
        struct mlc_buf b = MLC_BUF_INIT;
        statusview_metrics(sd->a, sd->st, sd->t, &b);
        rv = respond(wsi, 200, "text/plain; version=0.0.4", b.ptr ? b.ptr : "", b.len, NULL);
        mlc_buf_release(&b);
        return rv;
    }
    if (strcmp(path, "/api/status") == 0) {
        refresh_snapshot(sd);
        return respond(wsi, 200, "application/json", sd->snap, sd->snap_len, NULL);
    }
    if (strcmp(path, "/api/audit") == 0) {
        char qb[200] = "", lb[16] = "";
        /* lws hands back a pointer just past "name=" inside the buffer */
        const char *q = lws_get_urlarg_by_name(wsi, "q=", qb, sizeof(qb));
        const char *lim = lws_get_urlarg_by_name(wsi, "limit=", lb, sizeof(lb));
        o = mlc_json_xobj();
        mlc_json_xadd(o, "entries", statusview_audit(sd->st, q ? q : "", lim ? atoi(lim) : 0));
        rv = respond_json(wsi, 200, o, NULL);
        cJSON_Delete(o);
        return rv;
    }
    if (strcmp(path, "/api/dead") == 0) {
        o = mlc_json_xobj();
        mlc_json_xadd(o, "dead", statusview_dead(sd->st, NULL, 500));
        rv = respond_json(wsi, 200, o, NULL);
        cJSON_Delete(o);
        return rv;
    }
    return respond_error(wsi, 404, "not found");
}

static struct flow *flow_of(struct statusd *sd, const char *name, size_t n)
{
    for (int i = 0; i < sd->a->n_flows; i++) {
        if (strlen(sd->a->flows[i].name) == n && strncmp(sd->a->flows[i].name, name, n) == 0) {
            return &sd->a->flows[i];
        }
    }
    return NULL;
}

static void queue_sync(struct statusd *sd, const char *flow)
{
    cJSON *c = mlc_json_xobj();
    char *js;

    mlc_json_xadd_str(c, "command", "sync-now");
    mlc_json_xadd_str(c, "flow", flow);
    js = mlc_json_print(c);
    mailbox_post(sd->mb, ++sd->next_id, js, on_worker_answer, sd);
    free(js);
    cJSON_Delete(c);
}

static int route_post(struct statusd *sd, struct lws *wsi, struct http_pss *pss, const char *body, size_t blen)
{
    const char *path = pss->path;
    char xrw[16];
    struct mlc_errbuf err = { 0 };
    cJSON *o;
    int rv;

    if (pss->too_big) {
        return respond_error(wsi, 413, "request body over 64 KiB");
    }
    if (lws_hdr_custom_copy(wsi, xrw, sizeof(xrw), "x-requested-with:", 17) <= 0 || strcmp(xrw, "mlc") != 0) {
        return respond_error(wsi, 403, "missing X-Requested-With: mlc (requests from other sites are refused)");
    }
    if (strcmp(path, "/login") == 0) {
        cJSON *in = cJSON_ParseWithLength(body ? body : "", blen);
        const char *pw = mlc_json_str(in, "password");
        const char *tok;
        char cookie[160];
        if (!sd->login_required) {
            cJSON_Delete(in);
            o = mlc_json_xobj();
            cJSON_AddBoolToObject(o, "ok", 1);
            rv = respond_json(wsi, 200, o, NULL);
            cJSON_Delete(o);
            return rv;
        }
        if (pw == NULL || !mlc_password_verify(sd->a->cf.status_password_hash, pw)) {
            cJSON_Delete(in);
            mlc_warn("status page: failed login");
            return respond_error(wsi, 401, "wrong password");
        }
        cJSON_Delete(in);
        tok = session_new(sd);
        if (tok == NULL) {
            return respond_error(wsi, 500, "no randomness for a session token");
        }
        snprintf(cookie, sizeof(cookie), "Set-Cookie: mlc_session=%s; HttpOnly; SameSite=Strict; Path=/", tok);
        o = mlc_json_xobj();
        cJSON_AddBoolToObject(o, "ok", 1);
        rv = respond_json(wsi, 200, o, cookie);
        cJSON_Delete(o);
        return rv;
    }
    if (strcmp(path, "/logout") == 0) {
        session_end(sd, wsi);
        o = mlc_json_xobj();
        cJSON_AddBoolToObject(o, "ok", 1);
        rv = respond_json(wsi, 200, o, "Set-Cookie: mlc_session=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/");
        cJSON_Delete(o);
        return rv;
    }
    if (!session_valid(sd, wsi)) {
        return respond_error(wsi, 401, "log in first (POST /login)");
    }
    if (strncmp(path, "/api/flows/", 11) == 0) {
        const char *name = path + 11, *slash = strchr(name, '/');
        struct flow *f = slash ? flow_of(sd, name, (size_t)(slash - name)) : NULL;
        if (f == NULL) {
            return respond_error(wsi, 404, "no such flow");
        }
        if (strcmp(slash, "/sync") == 0) {
            queue_sync(sd, f->name);
            o = mlc_json_xobj();
            cJSON_AddBoolToObject(o, "queued", 1);
            rv = respond_json(wsi, 202, o, NULL);
            cJSON_Delete(o);
            return rv;
        }
        if (strcmp(slash, "/replay") == 0) {
            long long n = state_dead_replay(sd->st, f->name, &err);
            if (n < 0) {
                return respond_error(wsi, 500, mlc_err_msg(&err));
            }
            mlc_info("status page: %lld dead letters of flow %s replayed", n, f->name);
            queue_sync(sd, f->name);
            o = mlc_json_xobj();
            mlc_json_xadd_num(o, "replayed", (double)n);
            rv = respond_json(wsi, 200, o, NULL);
            cJSON_Delete(o);
            return rv;
        }
        return respond_error(wsi, 404, "unknown flow action (sync, replay)");
    }
    if (strncmp(path, "/api/dead/", 10) == 0) {
        char *end = NULL, flow[128] = "";
        long long id = strtoll(path + 10, &end, 10), n;
        sqlite3_stmt *q = NULL;
        if (end == path + 10 || strcmp(end, "/replay") != 0 || id <= 0) {
            return respond_error(wsi, 400, "expected /api/dead/{numeric id}/replay");
        }
        if (sqlite3_prepare_v2(sd->st->db, "SELECT flow FROM state_dead WHERE id = ?1", -1, &q, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, id);
            if (sqlite3_step(q) == SQLITE_ROW) {
                snprintf(flow, sizeof(flow), "%s", (const char *)sqlite3_column_text(q, 0));
            }
        }
        sqlite3_finalize(q);
        if (flow[0] == '\0') {
            return respond_error(wsi, 404, "no such dead letter");
        }
        n = state_dead_replay_id(sd->st, id, &err);
        if (n < 0) {
            return respond_error(wsi, 500, mlc_err_msg(&err));
        }
        mlc_info("status page: dead letter %lld of flow %s replayed", id, flow);
        queue_sync(sd, flow);
        o = mlc_json_xobj();
        mlc_json_xadd_num(o, "replayed", 1);
        rv = respond_json(wsi, 200, o, NULL);
        cJSON_Delete(o);
        return rv;
    }
    if (strcmp(path, "/api/ping") == 0) {
        pss->wait_id = ++sd->next_id;
        pss->next_waiting = sd->waiting;
        sd->waiting = pss;
        mailbox_post(sd->mb, pss->wait_id, "{\"command\":\"ping-systems\"}", on_worker_answer, sd);
        return 0; /* answered when the worker is done */
    }
    return respond_error(wsi, 404, "not found");
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct http_pss *pss = user;
    struct statusd *sd = of(wsi);

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        /* a keep-alive connection reuses pss: drop the last request's leftovers */
        mlc_buf_release(&pss->body);
        free(pss->reply);
        memset(pss, 0, sizeof(*pss));
        pss->wsi = wsi;
        snprintf(pss->path, sizeof(pss->path), "%s", (const char *)in);
        pss->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
        if (!pss->post) {
            return route_get(sd, wsi, pss->path);
        }
        {
            char cl[24];
            if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 && atoll(cl) > MAX_BODY) {
                pss->too_big = 1;
            }
        }
        pss->body.max = MAX_BODY;
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
            return route_post(sd, wsi, pss, NULL, 0); /* no body follows */
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY:
        if (!pss->too_big && mlc_buf_add(&pss->body, in, len) != MLC_OK) {
            pss->too_big = 1;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
        /* the response may end the transaction and free pss: the body is ours now */
        size_t blen = pss->body.len;
        char *body = mlc_buf_detach(&pss->body);
        int rv = route_post(sd, wsi, pss, body, blen);
        free(body);
        return rv;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss->status && pss->reply) {
            /* respond() may end the transaction and free pss: take what it needs first */
            char *reply = pss->reply;
            unsigned st = (unsigned)pss->status;
            int rv;
            unwait(sd, pss);
            pss->reply = NULL;
            pss->status = 0;
            rv = respond(wsi, st, "application/json", reply, strlen(reply), NULL);
            free(reply);
            return rv;
        }
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss != NULL) {
            unwait(sd, pss);
            free(pss->reply);
            pss->reply = NULL;
            mlc_buf_release(&pss->body);
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        take_answers(sd);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static int cb_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct ws_pss *pss = user;
    struct statusd *sd = of(wsi);

    (void)in;
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[16];
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0) {
            return 1;
        }
        return session_valid(sd, wsi) ? 0 : 1;
    }
    case LWS_CALLBACK_ESTABLISHED:
        pss->gen = 0;
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (sd->snap == NULL) {
            refresh_snapshot(sd);
        }
        if (pss->gen != sd->gen) {
            unsigned char *b = mlc_xmalloc(LWS_PRE + sd->snap_len);
            int n;
            memcpy(b + LWS_PRE, sd->snap, sd->snap_len);
            n = lws_write(wsi, b + LWS_PRE, sd->snap_len, LWS_WRITE_TEXT);
            free(b);
            if (n < (int)sd->snap_len) {
                return -1;
            }
            pss->gen = sd->gen;
        }
        return 0;
    case LWS_CALLBACK_RECEIVE:
        return 0; /* the page only listens */
    default:
        return 0;
    }
}

static void *statusd_main(void *arg)
{
    struct statusd *sd = arg;

    lws_sul_schedule(sd->ctx, 0, &sd->sul_push, push_cb, PUSH_MS * LWS_US_PER_MS);
    while (!sd->stop) {
        if (lws_service(sd->ctx, 0) < 0) {
            break;
        }
    }
    return NULL;
}

enum mlc_rc statusd_start(struct statusd **out, struct agent *a, struct mailbox *mb, struct tunnel_client *t,
                          struct mlc_errbuf *err)
{
    struct statusd *sd;
    struct lws_context_creation_info info;
    const char *listen = a->cf.status_listen, *colon;
    char host[128];
    enum mlc_rc rc;

    *out = NULL;
    if (strcmp(listen, "off") == 0) {
        return MLC_OK;
    }
    colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host)) {
        mlc_errf(err, "agent.status_listen: '%s' is not HOST:PORT", listen);
        return MLC_E_INVAL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    sd = mlc_xcalloc(1, sizeof(*sd));
    sd->a = a;
    sd->mb = mb;
    sd->t = t;
    sd->login_required = a->cf.status_password_hash[0] != '\0';
    sd->started_ms = now_ms();
    pthread_mutex_init(&sd->mu, NULL);
    rc = state_open(&sd->st, a->cf.state_db, err);
    if (rc != MLC_OK) {
        pthread_mutex_destroy(&sd->mu);
        free(sd);
        return rc;
    }
    lws_set_log_level(LLL_ERR, NULL); /* its notices are not ours to print */
    memset(&info, 0, sizeof(info));
    info.port = atoi(colon + 1);
    info.iface = host[0] && strcmp(host, "0.0.0.0") != 0 && strcmp(host, "*") != 0 ? host : NULL;
    info.protocols = protocols;
    info.user = sd;
    info.fd_limit_per_thread = 256;
    info.vhost_name = "mlc-status";
    sd->ctx = lws_create_context(&info);
    if (sd->ctx == NULL) {
        mlc_errf(err, "status page: cannot listen on %s (port in use? change agent.status_listen or set it "
                      "to \"off\")", listen);
        state_close(sd->st);
        pthread_mutex_destroy(&sd->mu);
        free(sd);
        return MLC_E_INVAL;
    }
    if (pthread_create(&sd->thr, NULL, statusd_main, sd) != 0) {
        mlc_errf(err, "status page: cannot start its thread");
        statusd_stop(sd);
        return MLC_E_NOMEM;
    }
    sd->started = 1;
    mlc_info("status page on http://%s/%s", listen, sd->login_required ? " (login required)" : "");
    *out = sd;
    return MLC_OK;
}

void statusd_stop(struct statusd *sd)
{
    if (sd == NULL) {
        return;
    }
    sd->stop = 1;
    if (sd->ctx) {
        lws_cancel_service(sd->ctx);
    }
    if (sd->started) {
        pthread_join(sd->thr, NULL);
    }
    if (sd->ctx) {
        lws_context_destroy(sd->ctx);
    }
    while (sd->answers) {
        struct answer *n = sd->answers->next;
        free(sd->answers->json);
        free(sd->answers);
        sd->answers = n;
    }
    free(sd->snap);
    state_close(sd->st);
    pthread_mutex_destroy(&sd->mu);
    free(sd);
}
