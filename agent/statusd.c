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
 *
 * Listening: agent.status_listen is resolved to one numeric address and the
 * socket is bound to exactly that (lws 4.1 binds an IPv4 literal given as
 * .iface on an IPv6 socket as "::", i.e. every interface, so IPv4 addresses
 * get an IPv4-only vhost). The address actually bound (getsockname) decides
 * whether the page may go without a login.
 *
 * Logins: PBKDF2 takes a noticeable fraction of a second, so passwords are
 * checked on a small thread of their own and the answer comes back through
 * lws_cancel_service(); the event loop never waits for it. Failures are
 * counted per client address: after LOGIN_FREE_FAILS each further failure
 * doubles the time that address must wait (429 meanwhile), and one address
 * has at most one password being checked at a time.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libwebsockets.h>
#include <cjson/cJSON.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
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
#define LOGIN_QUEUE_MAX 32          /* passwords waiting for the hashing thread */
#define LOGIN_SLOTS 256             /* client addresses remembered for throttling */
#define LOGIN_FREE_FAILS 3          /* failures from one address before any delay */
#define LOGIN_DELAY_MS 1000         /* first delay; doubles with every further failure */
#define LOGIN_DELAY_MAX_MS (15LL * 60 * 1000)
#define LOGIN_FORGET_MS (60LL * 60 * 1000) /* a quiet hour clears an address's count */

struct session {
    char token[65];
    long long expires_ms;
};

struct answer {
    struct answer *next;
    long long id;
    char *json;
};

/* one password to check, then its verdict (the hashing thread owns it meanwhile) */
struct login_job {
    struct login_job *next;
    long long id;
    char client[64];
    char *password; /* wiped and freed by the hashing thread */
    int ok;
};

/* failed logins of one client address */
struct login_slot {
    char client[64];
    int fails;
    int busy; /* a password from this address is being checked */
    long long last_ms, until_ms;
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
    char reply_header[160];        /* its extra header, e.g. Set-Cookie */
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
    /* the listening socket, as bound (getsockname) */
    struct sockaddr_storage bound;
    /* logins: the hashing thread and its queues, under login_mu */
    pthread_t login_thr;
    int login_started;
    pthread_mutex_t login_mu;
    pthread_cond_t login_cv;
    struct login_job *login_todo, *login_done;
    int login_queued, login_stop;
    /* loop thread only */
    struct login_slot slots[LOGIN_SLOTS];
    unsigned long long login_failures, login_throttled;
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

/* Refuse a WebSocket upgrade with a complete HTTP answer, then hang up
 * (returning -1 from LWS_CALLBACK_HTTP_CONFIRM_UPGRADE): no 101 is ever sent. */
static int refuse_upgrade(struct lws *wsi, unsigned status, const char *msg)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    unsigned char *b;

    mlc_info("status page: WebSocket upgrade refused (%u: %s)", status, msg);
    if (lws_add_http_common_headers(wsi, status, "application/json", (lws_filepos_t)n, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:", (const unsigned char *)"close",
                                    5, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        return -1;
    }
    b = mlc_xmalloc(LWS_PRE + (size_t)n + 1);
    memcpy(b + LWS_PRE, body, (size_t)n);
    lws_write(wsi, b + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_FINAL);
    free(b);
    return -1;
}

/* "mlc-status" among the comma-separated Sec-WebSocket-Protocol values */
static int asks_for_status_protocol(struct lws *wsi)
{
    char buf[256], *save = NULL;

    if (lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_PROTOCOL) <= 0) {
        return 0;
    }
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strcmp(tok, "mlc-status") == 0) {
            return 1;
        }
    }
    return 0;
}

static int confirm_upgrade(struct statusd *sd, struct lws *wsi, const char *upgrade)
{
    char uri[16];

    if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0) {
        return refuse_upgrade(wsi, 400, "only WebSocket upgrades, on /ws");
    }
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0) {
        return refuse_upgrade(wsi, 404, "WebSocket is served on /ws only");
    }
    if (!asks_for_status_protocol(wsi)) {
        return refuse_upgrade(wsi, 400, "ask for the mlc-status subprotocol");
    }
    if (!session_valid(sd, wsi)) {
        return refuse_upgrade(wsi, 401, "log in first (POST /login)");
    }
    return 0;
}

/* ---- logins: the hashing thread, throttling per client address ---- */

static void *login_main(void *arg)
{
    struct statusd *sd = arg;

    pthread_mutex_lock(&sd->login_mu);
    for (;;) {
        struct login_job *j;
        while (sd->login_todo == NULL && !sd->login_stop) {
            pthread_cond_wait(&sd->login_cv, &sd->login_mu);
        }
        if (sd->login_stop) {
            break;
        }
        j = sd->login_todo;
        sd->login_todo = j->next;
        pthread_mutex_unlock(&sd->login_mu);
        j->ok = mlc_password_verify(sd->a->cf.status_password_hash, j->password);
        memset(j->password, 0, strlen(j->password));
        free(j->password);
        j->password = NULL;
        pthread_mutex_lock(&sd->login_mu);
        j->next = sd->login_done;
        sd->login_done = j;
        pthread_mutex_unlock(&sd->login_mu);
        lws_cancel_service(sd->ctx);
        pthread_mutex_lock(&sd->login_mu);
    }
    pthread_mutex_unlock(&sd->login_mu);
    return NULL;
}

static void free_jobs(struct login_job *j)
{
    while (j) {
        struct login_job *n = j->next;
        if (j->password) {
            memset(j->password, 0, strlen(j->password));
            free(j->password);
        }
        free(j);
        j = n;
    }
}

/* The slot of a client address (a new or the least recently used one if make). */
static struct login_slot *login_slot(struct statusd *sd, const char *client, int make)
{
    struct login_slot *old = &sd->slots[0];
    long long now = now_ms();

    for (int i = 0; i < LOGIN_SLOTS; i++) {
        struct login_slot *s = &sd->slots[i];
        if (s->client[0] && strcmp(s->client, client) == 0) {
            if (!s->busy && now - s->last_ms > LOGIN_FORGET_MS) {
                s->fails = 0;
                s->until_ms = 0;
            }
            return s;
        }
        if (!s->busy && s->last_ms < old->last_ms) {
            old = s;
        }
    }
    if (!make || old->busy) {
        return NULL;
    }
    memset(old, 0, sizeof(*old));
    snprintf(old->client, sizeof(old->client), "%s", client);
    old->last_ms = now;
    return old;
}

static void login_failed(struct statusd *sd, const char *client)
{
    struct login_slot *s = login_slot(sd, client, 1);
    long long now = now_ms(), delay = 0;

    sd->login_failures++;
    if (s == NULL) {
        mlc_warn("status page: failed login from %s", client);
        return;
    }
    s->busy = 0;
    s->fails++;
    s->last_ms = now;
    if (s->fails > LOGIN_FREE_FAILS) {
        int shift = s->fails - LOGIN_FREE_FAILS - 1;
        delay = LOGIN_DELAY_MS << (shift < 20 ? shift : 20);
        if (delay > LOGIN_DELAY_MAX_MS) {
            delay = LOGIN_DELAY_MAX_MS;
        }
        s->until_ms = now + delay;
    }
    if (delay > 0) {
        mlc_warn("status page: failed login from %s (%d in a row); next attempt from there allowed in %lld s",
                 client, s->fails, (delay + 999) / 1000);
    } else {
        mlc_warn("status page: failed login from %s (%d in a row)", client, s->fails);
    }
}

static void login_succeeded(struct statusd *sd, const char *client)
{
    struct login_slot *s = login_slot(sd, client, 0);

    if (s != NULL) {
        memset(s, 0, sizeof(*s));
    }
    mlc_info("status page: login from %s", client);
}

static void client_of(struct lws *wsi, char *out, size_t n)
{
    if (lws_get_peer_simple(wsi, out, n) == NULL) {
        snprintf(out, n, "unknown");
    }
}

/* POST /login when a password is configured: 429 while the address waits,
 * else the password goes to the hashing thread and the answer comes later. */
static int login_start(struct statusd *sd, struct lws *wsi, struct http_pss *pss, const char *pw)
{
    struct login_slot *s;
    struct login_job *j;
    char client[64], retry[48];
    long long now = now_ms();
    int queued;

    client_of(wsi, client, sizeof(client));
    s = login_slot(sd, client, 1);
    if (s != NULL && (s->busy || now < s->until_ms)) {
        long long wait_s = s->busy ? 1 : (s->until_ms - now + 999) / 1000;
        char msg[120];
        sd->login_throttled++;
        mlc_debug("status page: login from %s refused for %lld s (throttled)", client, wait_s);
        snprintf(retry, sizeof(retry), "Retry-After: %lld", wait_s);
        snprintf(msg, sizeof(msg), "too many failed logins from your address; try again in %lld s", wait_s);
        {
            cJSON *o = mlc_json_xobj();
            int rv;
            mlc_json_xadd_str(o, "error", msg);
            mlc_json_xadd_num(o, "retry_after_s", (double)wait_s);
            rv = respond_json(wsi, 429, o, retry);
            cJSON_Delete(o);
            return rv;
        }
    }
    pthread_mutex_lock(&sd->login_mu);
    queued = sd->login_queued;
    pthread_mutex_unlock(&sd->login_mu);
    if (queued >= LOGIN_QUEUE_MAX) {
        sd->login_throttled++;
        static const char busy[] = "{\"error\":\"too many logins being checked; try again in a second\"}";
        return respond(wsi, 503, "application/json", busy, sizeof(busy) - 1, "Retry-After: 1");
    }
    if (s != NULL) {
        s->busy = 1;
        s->last_ms = now;
    }
    j = mlc_xcalloc(1, sizeof(*j));
    j->id = ++sd->next_id;
    snprintf(j->client, sizeof(j->client), "%s", client);
    j->password = mlc_xstrdup(pw);
    pss->wait_id = j->id;
    pss->next_waiting = sd->waiting;
    sd->waiting = pss;
    pthread_mutex_lock(&sd->login_mu);
    /* FIFO: append */
    {
        struct login_job **pp = &sd->login_todo;
        while (*pp) {
            pp = &(*pp)->next;
        }
        *pp = j;
    }
    sd->login_queued++;
    pthread_cond_signal(&sd->login_cv);
    pthread_mutex_unlock(&sd->login_mu);
    return 0; /* answered when the hashing thread is done */
}

/* Verdicts from the hashing thread: settle throttling, answer who still waits. */
static void take_logins(struct statusd *sd)
{
    struct login_job *done;

    pthread_mutex_lock(&sd->login_mu);
    done = sd->login_done;
    sd->login_done = NULL;
    for (struct login_job *j = done; j; j = j->next) {
        sd->login_queued--;
    }
    pthread_mutex_unlock(&sd->login_mu);
    for (struct login_job *j = done; j; j = j->next) {
        struct http_pss *w;
        if (j->ok) {
            login_succeeded(sd, j->client);
        } else {
            login_failed(sd, j->client);
        }
        for (w = sd->waiting; w; w = w->next_waiting) {
            if (w->wait_id == j->id) {
                break;
            }
        }
        if (w == NULL) {
            continue; /* the client hung up meanwhile */
        }
        w->wait_id = 0;
        if (j->ok) {
            const char *tok = session_new(sd);
            if (tok == NULL) {
                w->status = 500;
                w->reply = mlc_xstrdup("{\"error\":\"no randomness for a session token\"}");
            } else {
                w->status = 200;
                w->reply = mlc_xstrdup("{\"ok\":true}");
                snprintf(w->reply_header, sizeof(w->reply_header),
                         "Set-Cookie: mlc_session=%s; HttpOnly; SameSite=Strict; Path=/", tok);
            }
        } else {
            w->status = 401;
            w->reply = mlc_xstrdup("{\"error\":\"wrong password\"}");
        }
        lws_callback_on_writable(w->wsi);
    }
    free_jobs(done);
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
        mlc_buf_addf(&b,
                     "# HELP mlc_agent_status_login_failures_total Wrong passwords given to the status page.\n"
                     "# TYPE mlc_agent_status_login_failures_total counter\n"
                     "mlc_agent_status_login_failures_total %llu\n"
                     "# HELP mlc_agent_status_logins_throttled_total Status page logins refused without a "
                     "password check (too many failures from the address, 429).\n"
                     "# TYPE mlc_agent_status_logins_throttled_total counter\n"
                     "mlc_agent_status_logins_throttled_total %llu\n",
                     sd->login_failures, sd->login_throttled);
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
        if (!sd->login_required) {
            cJSON_Delete(in);
            o = mlc_json_xobj();
            cJSON_AddBoolToObject(o, "ok", 1);
            rv = respond_json(wsi, 200, o, NULL);
            cJSON_Delete(o);
            return rv;
        }
        if (pw == NULL) {
            cJSON_Delete(in);
            return respond_error(wsi, 400, "expected {\"password\": \"...\"}");
        }
        rv = login_start(sd, wsi, pss, pw);
        cJSON_Delete(in);
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
        if (end == path + 10 || strcmp(end, "/replay") != 0 || id <= 0) {
            return respond_error(wsi, 400, "expected /api/dead/{numeric id}/replay");
        }
        if (state_dead_flow(sd->st, id, flow, sizeof(flow)) != MLC_OK || flow[0] == '\0') {
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
        unwait(sd, pss);
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
        if (body != NULL) {
            memset(body, 0, blen); /* it may hold a password */
        }
        free(body);
        return rv;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss->status && pss->reply) {
            /* respond() may end the transaction and free pss: take what it needs first */
            char *reply = pss->reply;
            unsigned st = (unsigned)pss->status;
            char hdr[sizeof(pss->reply_header)];
            int rv;
            unwait(sd, pss);
            snprintf(hdr, sizeof(hdr), "%s", pss->reply_header);
            pss->reply = NULL;
            pss->status = 0;
            pss->reply_header[0] = '\0';
            rv = respond(wsi, st, "application/json", reply, strlen(reply), hdr[0] ? hdr : NULL);
            memset(hdr, 0, sizeof(hdr));
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
        take_logins(sd);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(sd, wsi, in);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return 1; /* no WebSocket on the plain HTTP protocol (only mlc-status, on /ws) */
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

/* ---- the listening address ---- */

struct listen_addr {
    int family;                     /* AF_INET or AF_INET6 */
    char numeric[INET6_ADDRSTRLEN]; /* what the socket is bound to */
    int port;
    int wildcard;                   /* 0.0.0.0 or :: (written so) */
};

/* "HOST:PORT", "[V6]:PORT": one numeric address (a host name resolves to
 * its first address). "*" or an empty host are refused: every interface is
 * written 0.0.0.0 or [::]. */
static enum mlc_rc listen_parse(const char *listen, struct listen_addr *la, struct mlc_errbuf *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':'), *h = listen;
    size_t n;
    struct addrinfo hints, *res = NULL;
    int g;

    memset(la, 0, sizeof(*la));
    if (colon == NULL) {
        mlc_errf(err, "agent.status_listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:8089)", listen);
        return MLC_E_INVAL;
    }
    n = (size_t)(colon - listen);
    if (listen[0] == '[') {
        if (n < 2 || listen[n - 1] != ']') {
            mlc_errf(err, "agent.status_listen: '%s': write an IPv6 address as [ADDRESS]:PORT", listen);
            return MLC_E_INVAL;
        }
        h = listen + 1;
        n -= 2;
    } else if (memchr(listen, ':', n) != NULL) {
        mlc_errf(err, "agent.status_listen: '%s': write an IPv6 address in brackets, e.g. [::1]:8089", listen);
        return MLC_E_INVAL;
    }
    if (n == 0 || n >= sizeof(host) || (n == 1 && h[0] == '*')) {
        mlc_errf(err, "agent.status_listen: '%s' names no address; write 127.0.0.1:PORT, or 0.0.0.0:PORT / "
                      "[::]:PORT to listen on every interface", listen);
        return MLC_E_INVAL;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    la->port = atoi(colon + 1);
    if (la->port <= 0 || la->port > 65535) {
        mlc_errf(err, "agent.status_listen: '%s': port must be 1 to 65535", listen);
        return MLC_E_INVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = listen[0] == '[' ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g = getaddrinfo(host, NULL, &hints, &res);
    if (g != 0 || res == NULL) {
        mlc_errf(err, "agent.status_listen: cannot resolve '%s': %s", host, gai_strerror(g));
        if (res) {
            freeaddrinfo(res);
        }
        return MLC_E_INVAL;
    }
    la->family = res->ai_family;
    if (la->family == AF_INET) {
        const struct in_addr *a4 = &((const struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(AF_INET, a4, la->numeric, sizeof(la->numeric));
        la->wildcard = a4->s_addr == htonl(INADDR_ANY);
    } else {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
        inet_ntop(AF_INET6, a6, la->numeric, sizeof(la->numeric));
        la->wildcard = IN6_IS_ADDR_UNSPECIFIED(a6);
    }
    freeaddrinfo(res);
    return MLC_OK;
}

/* "1.2.3.4:P" / "[::1]:P" of a socket address; loopback is set when it
 * can only be reached from this machine. */
static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t n, int *loopback)
{
    char a[INET6_ADDRSTRLEN] = "?";

    *loopback = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
        *loopback = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
        snprintf(out, n, "%s:%u", a, ntohs(s4->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
        *loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
                    (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127);
        snprintf(out, n, "[%s]:%u", a, ntohs(s6->sin6_port));
    } else {
        snprintf(out, n, "(family %d)", ss->ss_family);
    }
}

/* Is the socket bound where we asked? */
static int bound_as_asked(const struct sockaddr_storage *ss, const struct listen_addr *la)
{
    if (ss->ss_family != la->family) {
        return 0;
    }
    if (la->family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        struct in_addr want;
        return inet_pton(AF_INET, la->numeric, &want) == 1 && want.s_addr == s4->sin_addr.s_addr &&
               ntohs(s4->sin_port) == la->port;
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        struct in6_addr want;
        return inet_pton(AF_INET6, la->numeric, &want) == 1 &&
               memcmp(&want, &s6->sin6_addr, sizeof(want)) == 0 && ntohs(s6->sin6_port) == la->port;
    }
}

/* lws keeps its listening socket to itself: find the TCP sockets of this
 * process that listen on port, and how the (one) of them is bound.
 * Returns how many there are. */
static int find_listeners(int port, struct sockaddr_storage *out)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int found = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name), acc = 0, type = 0;
        socklen_t l = sizeof(acc), tl = sizeof(type), sl;
        struct sockaddr_storage ss;

        if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(d)) {
            continue;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) {
            continue;
        }
        sl = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
            continue;
        }
        if ((ss.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&ss)->sin_port) == port) ||
            (ss.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == port)) {
            if (found++ == 0) {
                *out = ss;
            }
        }
    }
    closedir(d);
    return found;
}

static void statusd_free(struct statusd *sd)
{
    if (sd->ctx) {
        lws_context_destroy(sd->ctx);
    }
    while (sd->answers) {
        struct answer *n = sd->answers->next;
        free(sd->answers->json);
        free(sd->answers);
        sd->answers = n;
    }
    free_jobs(sd->login_todo);
    free_jobs(sd->login_done);
    free(sd->snap);
    state_close(sd->st);
    pthread_cond_destroy(&sd->login_cv);
    pthread_mutex_destroy(&sd->login_mu);
    pthread_mutex_destroy(&sd->mu);
    free(sd);
}

enum mlc_rc statusd_start(struct statusd **out, struct agent *a, struct mailbox *mb, struct tunnel_client *t,
                          struct mlc_errbuf *err)
{
    struct statusd *sd;
    struct lws_context_creation_info info;
    const char *listen = a->cf.status_listen;
    struct listen_addr la;
    char bound[INET6_ADDRSTRLEN + 16];
    int loopback, n_listen = 0;
    enum mlc_rc rc;

    *out = NULL;
    if (strcmp(listen, "off") == 0) {
        return MLC_OK;
    }
    rc = listen_parse(listen, &la, err);
    if (rc != MLC_OK) {
        return rc;
    }
    sd = mlc_xcalloc(1, sizeof(*sd));
    sd->a = a;
    sd->mb = mb;
    sd->t = t;
    sd->login_required = a->cf.status_password_hash[0] != '\0';
    sd->started_ms = now_ms();
    pthread_mutex_init(&sd->mu, NULL);
    pthread_mutex_init(&sd->login_mu, NULL);
    pthread_cond_init(&sd->login_cv, NULL);
    rc = state_open(&sd->st, a->cf.state_db, err);
    if (rc != MLC_OK) {
        statusd_free(sd);
        return rc;
    }
    lws_set_log_level(LLL_ERR, NULL); /* its notices are not ours to print */
    memset(&info, 0, sizeof(info));
    info.port = la.port;
    info.iface = la.wildcard ? NULL : la.numeric;
    if (la.family == AF_INET) {
        /* lws would put an IPv4 address on an IPv6 socket as "::" (every
         * interface): an IPv4 address gets an IPv4 socket */
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    }
    info.protocols = protocols;
    info.user = sd;
    info.fd_limit_per_thread = 256;
    info.vhost_name = "mlc-status";
    sd->ctx = lws_create_context(&info);
    if (sd->ctx == NULL || (n_listen = find_listeners(la.port, &sd->bound)) == 0) {
        mlc_errf(err, "status page: cannot listen on %s (%s; port in use or address not on this machine? change "
                      "agent.status_listen or set it to \"off\")", listen, la.numeric);
        statusd_free(sd);
        return MLC_E_INVAL;
    }
    if (n_listen != 1) {
        mlc_errf(err, "status page: cannot tell how %s is bound (%d listening sockets on port %d); refusing to "
                      "serve", listen, n_listen, la.port);
        statusd_free(sd);
        return MLC_E_INVAL;
    }
    sockaddr_text(&sd->bound, bound, sizeof(bound), &loopback);
    if (!bound_as_asked(&sd->bound, &la)) {
        mlc_errf(err, "status page: asked to listen on %s (%s) but the socket is bound to %s; refusing to serve "
                      "there", listen, la.numeric, bound);
        statusd_free(sd);
        return MLC_E_INVAL;
    }
    if (!loopback && !sd->login_required) {
        mlc_errf(err, "status page: %s (%s) is reachable from the network, so the page needs a login: set "
                      "agent.status_password_hash (from 'mlc-agent password-hash')", listen, bound);
        statusd_free(sd);
        return MLC_E_INVAL;
    }
    if (sd->login_required) {
        if (pthread_create(&sd->login_thr, NULL, login_main, sd) != 0) {
            mlc_errf(err, "status page: cannot start its login thread");
            statusd_free(sd);
            return MLC_E_NOMEM;
        }
        sd->login_started = 1;
    }
    if (pthread_create(&sd->thr, NULL, statusd_main, sd) != 0) {
        mlc_errf(err, "status page: cannot start its thread");
        statusd_stop(sd);
        return MLC_E_NOMEM;
    }
    sd->started = 1;
    mlc_info("status page on http://%s/ (bound to %s%s)", listen, bound,
             sd->login_required ? ", login required" : ", loopback only, no login");
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
    if (sd->login_started) {
        pthread_mutex_lock(&sd->login_mu);
        sd->login_stop = 1;
        pthread_cond_signal(&sd->login_cv);
        pthread_mutex_unlock(&sd->login_mu);
        pthread_join(sd->login_thr, NULL);
    }
    statusd_free(sd);
}
