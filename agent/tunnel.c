/* SPDX-License-Identifier: Apache-2.0
 * tunnel: the agent's side of the relay tunnel (see tunnel.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libwebsockets.h>
#include <cjson/cJSON.h>
#include "agent/state.h"
#include "agent/tunnel.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "shared/mlc_tunnel.h"
#include "shared/mlc_wsq.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS 60000

struct pend_dlv {
    uint64_t seq;
    char *kind, *id, *body;
    long long received_ms;
};

struct cmdq {
    struct cmdq *next;
    long long id;
    char *json;
};  /* answers waiting to be sent */

struct tunnel_client {
    struct tunnel_opts o;
    char *url_copy;
    char host[256], path[256];
    int port, tls;
    pthread_t thr;
    int started;
    volatile int stop;

    /* loop thread only */
    struct lws_context *ctx;
    struct lws *wsi;
    struct state *st;
    struct mlc_buf rx;
    struct mlc_wsq out;
    int attempt;
    long long last_rx_ms, max_seq;
    lws_sorted_usec_list_t sul_connect, sul_beat, sul_flush;
    struct pend_dlv *pend;  /* DELIVERs received, not yet stored */
    size_t npend, cappend;

    /* shared, under mu */
    pthread_mutex_t mu;
    struct cmdq *answers;
    struct tunnel_info info;
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct tunnel_client *of_ctx(struct lws_context *ctx)
{
    return lws_context_user(ctx);
}

static void set_state(struct tunnel_client *t, int connected, const char *error)
{
    pthread_mutex_lock(&t->mu);
    if (t->info.connected != connected) {
        t->info.since_ms = now_ms();
    }
    t->info.connected = connected;
    if (error) {
        snprintf(t->info.last_error, sizeof(t->info.last_error), "%s", error);
    }
    pthread_mutex_unlock(&t->mu);
    if (t->st) {
        /* for `mlc-agent status` and the status page (other processes) */
        char js[400];
        struct mlc_errbuf err = { 0 };
        snprintf(js, sizeof(js), "{\"connected\":%s,\"since_ms\":%lld,\"url\":\"%s\"}",
                 connected ? "true" : "false", now_ms(), t->o.url);
        state_kv_set(t->st, "tunnel", js, &err);
    }
}

static void wake_worker(struct tunnel_client *t)
{
    mailbox_poke(t->o.mb);
}

static void send_frame(struct tunnel_client *t, int type, uint64_t seq, const char *json, size_t len)
{
    struct mlc_errbuf err = { 0 };

    if (t->wsi != NULL && mlc_wsq_push(&t->out, t->wsi, type, seq, json, len, &err) != MLC_OK) {
        mlc_error("tunnel: cannot encode %s: %s", mlc_frame_type_name(type), mlc_err_msg(&err));
    }
}

static void connect_cb(lws_sorted_usec_list_t *sul);

static void schedule_reconnect(struct tunnel_client *t)
{
    long long cap = BACKOFF_BASE_MS << (t->attempt < 7 ? t->attempt : 7);
    uint32_t r = 0;
    long long delay;

    if (cap > BACKOFF_MAX_MS) {
        cap = BACKOFF_MAX_MS;
    }
    mlc_random(&r, sizeof(r));
    delay = 200 + (long long)(r % (uint32_t)cap); /* full jitter, never a busy loop */
    t->attempt++;
    pthread_mutex_lock(&t->mu);
    t->info.reconnects++;
    pthread_mutex_unlock(&t->mu);
    mlc_debug("tunnel: reconnecting in %lld ms (attempt %d)", delay, t->attempt);
    lws_sul_schedule(t->ctx, 0, &t->sul_connect, connect_cb, delay * LWS_US_PER_MS);
}

static void connect_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_connect);
    struct lws_client_connect_info ci;

    if (t->stop) {
        return;
    }
    memset(&ci, 0, sizeof(ci));
    ci.context = t->ctx;
    ci.address = t->host;
    ci.port = t->port;
    ci.path = t->path;
    ci.host = t->host;
    ci.origin = t->host;
    ci.protocol = "mlc-tunnel";
    ci.pwsi = &t->wsi;
    if (t->tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        if (t->o.tls_insecure) {
            ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                                 LCCSCF_ALLOW_INSECURE;
        }
    }
    if (lws_client_connect_via_info(&ci) == NULL) {
        t->wsi = NULL;
        set_state(t, 0, "cannot start a connection to the relay");
        schedule_reconnect(t);
    }
}

static void beat_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_beat);
    long long hb = t->o.heartbeat_s * 1000;

    if (t->wsi != NULL && t->info.connected) {
        if (now_ms() - t->last_rx_ms > 3 * hb) {
            mlc_warn("tunnel: relay silent for %llds; reconnecting", (now_ms() - t->last_rx_ms) / 1000);
            set_state(t, 0, "heartbeat lost");
            lws_set_timeout(t->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        } else {
            send_frame(t, MLC_FRAME_PING, (uint64_t)now_ms(), NULL, 0);
        }
    }
    lws_sul_schedule(t->ctx, 0, &t->sul_beat, beat_cb, hb * LWS_US_PER_MS);
}

static void send_hello(struct tunnel_client *t)
{
    cJSON *o = mlc_json_xobj();
    char *s;

    mlc_json_xadd_str(o, "tenant", t->o.tenant);
    mlc_json_xadd_str(o, "key", t->o.key);
    mlc_json_xadd_str(o, "agent_id", t->o.agent_id);
    mlc_json_xadd_str(o, "version", MLC_VERSION);
    mlc_json_xadd_num(o, "last_acked", (double)t->max_seq);
    s = mlc_json_print(o);
    cJSON_Delete(o);
    send_frame(t, MLC_FRAME_HELLO, 0, s, strlen(s));
    memset(s, 0, strlen(s));
    free(s);
}

static void free_pending(struct tunnel_client *t)
{
    for (size_t i = 0; i < t->npend; i++) {
        free(t->pend[i].kind);
        free(t->pend[i].id);
        free(t->pend[i].body);
    }
    t->npend = 0;
}

/* Store every DELIVER that arrived in this loop pass in one transaction (one
 * fsync), then ACK them. A failure ACKs nothing: the relay re-sends. */
static void flush_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_flush);
    struct mlc_errbuf err = { 0 };
    enum mlc_rc rc;
    long fresh_n = 0, dup_n = 0;

    if (t->npend == 0) {
        return;
    }
    rc = state_begin(t->st, &err);
    for (size_t i = 0; rc == MLC_OK && i < t->npend; i++) {
        int fresh = 0;
        rc = state_inbox_put(t->st, (long long)t->pend[i].seq, t->pend[i].kind, t->pend[i].id,
                             t->pend[i].body, t->pend[i].received_ms, &fresh, &err);
        fresh ? fresh_n++ : dup_n++;
    }
    if (rc == MLC_OK) {
        rc = state_commit(t->st, &err);
    } else {
        state_rollback(t->st);
    }
    if (rc != MLC_OK) {
        mlc_error("tunnel: storing %zu deliveries in the inbox failed: %s (not acknowledged; the relay "
                  "will re-send them)", t->npend, mlc_err_msg(&err));
        free_pending(t);
        return;
    }
    for (size_t i = 0; i < t->npend; i++) {
        if ((long long)t->pend[i].seq > t->max_seq) {
            t->max_seq = (long long)t->pend[i].seq;
        }
        send_frame(t, MLC_FRAME_ACK, t->pend[i].seq, NULL, 0);
    }
    free_pending(t);
    pthread_mutex_lock(&t->mu);
    t->info.deliveries += fresh_n;
    t->info.duplicates += dup_n;
    pthread_mutex_unlock(&t->mu);
    if (fresh_n) {
        wake_worker(t);
    }
}

static void on_deliver(struct tunnel_client *t, const struct mlc_frame *f)
{
    cJSON *o = cJSON_ParseWithLength(f->json, f->json_len);
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");
    const char *kind = mlc_json_str(o, "kind"), *id = mlc_json_str(o, "id");
    struct pend_dlv *p;
    char *text;

    if (!cJSON_IsObject(body) || kind == NULL || id == NULL ||
        (text = cJSON_PrintUnformatted(body)) == NULL) {
        /* not storable; ACK it anyway or it would come back forever */
        mlc_error("tunnel: DELIVER %llu is malformed (no kind, id or body object); acknowledged and dropped",
                  (unsigned long long)f->seq);
        cJSON_Delete(o);
        send_frame(t, MLC_FRAME_ACK, f->seq, NULL, 0);
        return;
    }
    if (t->npend == t->cappend) {
        t->cappend = t->cappend ? 2 * t->cappend : 64;
        t->pend = mlc_xrealloc(t->pend, t->cappend * sizeof(*t->pend));
    }
    p = &t->pend[t->npend++];
    p->seq = f->seq;
    p->kind = mlc_xstrdup(kind);
    p->id = mlc_xstrdup(id);
    p->body = text;
    p->received_ms = (long long)mlc_json_num(o, "received_ms", 0);
    cJSON_Delete(o);
    if (t->npend == 1) {
        lws_sul_schedule(t->ctx, 0, &t->sul_flush, flush_cb, 1);
    }
}

static void on_frame(struct tunnel_client *t, const uint8_t *p, size_t n)
{
    struct mlc_frame f;
    struct mlc_errbuf err = { 0 };

    if (mlc_frame_decode(p, n, &f, &err) != MLC_OK) {
        mlc_warn("tunnel: bad frame from the relay (%s); ignored", mlc_err_msg(&err));
        return;
    }
    t->last_rx_ms = now_ms();
    pthread_mutex_lock(&t->mu);
    t->info.last_rx_ms = t->last_rx_ms;
    pthread_mutex_unlock(&t->mu);
    switch (f.type) {
    case MLC_FRAME_HELLO:
        t->attempt = 0;
        set_state(t, 1, "");
        mlc_info("tunnel: connected to %s as tenant %s", t->o.url, t->o.tenant);
        break;
    case MLC_FRAME_DELIVER:
        on_deliver(t, &f);
        break;
    case MLC_FRAME_COMMAND:
        mailbox_post(t->o.mb, (long long)f.seq, f.json, tunnel_answer, t);
        break;
    case MLC_FRAME_PING:
        send_frame(t, MLC_FRAME_PONG, f.seq, NULL, 0);
        break;
    case MLC_FRAME_PONG:
        /* our PINGs carry the send time as their sequence number */
        if (f.seq > 0 && (long long)f.seq <= t->last_rx_ms) {
            pthread_mutex_lock(&t->mu);
            t->info.rtt_ms = t->last_rx_ms - (long long)f.seq;
            pthread_mutex_unlock(&t->mu);
        }
        break;
    default:
        break;
    }
    mlc_frame_release(&f);
}

static int cb_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct tunnel_client *t = of_ctx(lws_get_context(wsi));

    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        t->last_rx_ms = now_ms();
        send_hello(t);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot reach the relay at %s: %.100s", t->o.url,
                 in ? (const char *)in : "connection failed");
        if (t->attempt == 0 || t->attempt % 10 == 0) {
            mlc_warn("tunnel: %s (retrying with backoff)", msg);
        }
        t->wsi = NULL;
        mlc_wsq_clear(&t->out);
        set_state(t, 0, msg);
        if (!t->stop) {
            schedule_reconnect(t);
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi)) {
            on_frame(t, in, len);
            return 0;
        }
        if (mlc_buf_add(&t->rx, in, len) != MLC_OK) {
            mlc_error("tunnel: frame from the relay over %u bytes; reconnecting", MLC_FRAME_MAX_WIRE);
            return -1;
        }
        if (lws_is_final_fragment(wsi)) {
            on_frame(t, (const uint8_t *)t->rx.ptr, t->rx.len);
            mlc_buf_release(&t->rx);
            t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return mlc_wsq_write(&t->out, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *b = in;
            unsigned code = (unsigned)b[0] << 8 | b[1];
            char msg[200];
            snprintf(msg, sizeof(msg), "relay closed the tunnel (%u: %.*s)", code, (int)(len - 2), (const char *)in + 2);
            if (code == 4401) {
                mlc_error("tunnel: %s; check relay.tenant and the relay_key secret "
                          "('mlc-relay tenant rotate' prints a new key)", msg);
            } else {
                mlc_warn("tunnel: %s", msg);
            }
            set_state(t, 0, msg);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        free_pending(t); /* never acked: the relay re-sends them */
        t->wsi = NULL;
        mlc_wsq_clear(&t->out);
        mlc_buf_release(&t->rx);
        t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
        if (t->info.connected && !t->stop) {
            mlc_warn("tunnel: connection to the relay closed; reconnecting");
        }
        set_state(t, 0, NULL);
        if (!t->stop) {
            schedule_reconnect(t);
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
        struct cmdq *a;
        pthread_mutex_lock(&t->mu);
        a = t->answers;
        t->answers = NULL;
        pthread_mutex_unlock(&t->mu);
        /* oldest first: the list was pushed at the front */
        {
            struct cmdq *rev = NULL;
            while (a) {
                struct cmdq *n = a->next;
                a->next = rev;
                rev = a;
                a = n;
            }
            a = rev;
        }
        while (a) {
            struct cmdq *n = a->next;
            send_frame(t, MLC_FRAME_STATUS, (uint64_t)a->id, a->json, strlen(a->json));
            free(a->json);
            free(a);
            a = n;
        }
        return 0;
    }
    default:
        return 0;
    }
}

static const struct lws_protocols client_protocols[] = {
    { "mlc-tunnel", cb_client, 0, 4096, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

static void lws_log_to_mlc(int level, const char *line)
{
    if (level & LLL_ERR) {
        char buf[400];
        size_t n;
        snprintf(buf, sizeof(buf), "%s", line);
        n = strlen(buf);
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
            buf[--n] = '\0';
        }
        mlc_debug("lws: %s", buf);
    }
}

static void *tunnel_main(void *arg)
{
    struct tunnel_client *t = arg;

    lws_sul_schedule(t->ctx, 0, &t->sul_connect, connect_cb, 1);
    lws_sul_schedule(t->ctx, 0, &t->sul_beat, beat_cb, t->o.heartbeat_s * 1000 * LWS_US_PER_MS);
    while (!t->stop) {
        if (lws_service(t->ctx, 0) < 0) {
            break;
        }
    }
    return NULL;
}

enum mlc_rc tunnel_start(struct tunnel_client **out, const struct tunnel_opts *o, struct mlc_errbuf *err)
{
    struct tunnel_client *t = mlc_xcalloc(1, sizeof(*t));
    struct lws_context_creation_info info;
    const char *prot, *ads, *path;
    enum mlc_rc rc;

    *out = NULL;
    t->o = *o;
    t->url_copy = mlc_xstrdup(o->url);
    if (lws_parse_uri(t->url_copy, &prot, &ads, &t->port, &path) != 0 ||
        (strcmp(prot, "ws") != 0 && strcmp(prot, "wss") != 0) || ads[0] == '\0') {
        mlc_errf(err, "relay.url '%s' is not ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH", o->url);
        free(t->url_copy);
        free(t);
        return MLC_E_INVAL;
    }
    t->tls = strcmp(prot, "wss") == 0;
    snprintf(t->host, sizeof(t->host), "%s", ads);
    snprintf(t->path, sizeof(t->path), "/%s", path);
    if (!t->tls && strcmp(t->host, "127.0.0.1") != 0 && strcmp(t->host, "localhost") != 0 &&
        strcmp(t->host, "::1") != 0) {
        mlc_errf(err, "relay.url '%s': plain ws:// is allowed on loopback only; use wss://", o->url);
        free(t->url_copy);
        free(t);
        return MLC_E_INVAL;
    }
    rc = state_open(&t->st, o->state_db, err);
    if (rc != MLC_OK) {
        free(t->url_copy);
        free(t);
        return rc;
    }
    /* the relay forgets what we ACK: inbox commits wait for the disk */
    sqlite3_exec(t->st->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    pthread_mutex_init(&t->mu, NULL);
    t->info.rtt_ms = -1;
    t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
    lws_set_log_level(LLL_ERR, lws_log_to_mlc);
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = client_protocols;
    info.user = t;
    info.fd_limit_per_thread = 16;
    if (t->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        if (o->ca_file && o->ca_file[0]) {
            info.client_ssl_ca_filepath = o->ca_file;
        }
    }
    t->ctx = lws_create_context(&info);
    if (t->ctx == NULL) {
        mlc_errf(err, "tunnel: cannot create the WebSocket client (TLS setup failed? relay.ca_file '%s')",
                 o->ca_file ? o->ca_file : "");
        tunnel_stop(t);
        return MLC_E_INVAL;
    }
    set_state(t, 0, NULL);
    if (pthread_create(&t->thr, NULL, tunnel_main, t) != 0) {
        mlc_errf(err, "tunnel: cannot start its thread");
        tunnel_stop(t);
        return MLC_E_NOMEM;
    }
    t->started = 1;
    *out = t;
    return MLC_OK;
}

void tunnel_stop(struct tunnel_client *t)
{
    if (t == NULL) {
        return;
    }
    t->stop = 1;
    if (t->ctx) {
        lws_cancel_service(t->ctx);
    }
    if (t->started) {
        pthread_join(t->thr, NULL);
    }
    if (t->ctx) {
        lws_context_destroy(t->ctx);
    }
    mlc_wsq_clear(&t->out);
    free_pending(t);
    free(t->pend);
    mlc_buf_release(&t->rx);
    while (t->answers) {
        struct cmdq *n = t->answers->next;
        free(t->answers->json);
        free(t->answers);
        t->answers = n;
    }
    state_close(t->st);
    pthread_mutex_destroy(&t->mu);
    free(t->url_copy);
    free(t);
}

void tunnel_answer(void *tunnel_client, long long id, const char *json)
{
    struct tunnel_client *t = tunnel_client;
    struct cmdq *a = mlc_xcalloc(1, sizeof(*a));

    a->id = id;
    a->json = mlc_xstrdup(json);
    pthread_mutex_lock(&t->mu);
    a->next = t->answers;
    t->answers = a;
    pthread_mutex_unlock(&t->mu);
    lws_cancel_service(t->ctx);
}

void tunnel_info(struct tunnel_client *t, struct tunnel_info *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->info;
    pthread_mutex_unlock(&t->mu);
}
