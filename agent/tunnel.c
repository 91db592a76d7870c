/* SPDX-License-Identifier: Apache-2.0
 * tunnel: the agent's side of the relay tunnel (see tunnel.h).
 *
 * One connection attempt at a time, numbered (t->gen, also the wsi's opaque
 * user data). Whatever ends an attempt or a link -- a connection error, a
 * close, no answer within the attempt timeout (TCP connect, TLS, HTTP
 * upgrade or HELLO), or heartbeat silence on an established link -- goes
 * through link_down(), which forgets the wsi and schedules the next attempt
 * with capped full-jitter backoff. A wsi we gave up on is told to close, but
 * we never wait for lws to report it: on a blackholed path that report may
 * never come. Callbacks of an attempt that is over are ignored.
 *
 * With heartbeat H: a link silent for 3 H is dead, an attempt gets 3 H (at
 * most 30 s) to be answered, and the backoff cap is 3 H (at most 60 s), so
 * after a path heals the tunnel is up within one attempt timeout plus one
 * capped backoff step.
 */
#include <pthread.h>
#include <stdint.h>
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
#define BACKOFF_MIN_MS 100       /* full jitter, but never a busy loop */
#define ATTEMPT_MIN_MS 5000
#define ATTEMPT_MAX_MS 30000

/* A delivery received, not yet stored: its strings point into own (a
 * DELIVER's copy) or into a DELIVERS frame that some pend_dlv owns. */
struct pend_dlv {
    struct inbox_new in;
    char *own; /* freed with the pending list; may be NULL */
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
    uintptr_t gen;          /* number of the current attempt (its wsi's opaque user data) */
    uintptr_t over_gen;     /* attempts up to this number are over */
    int up;                 /* HELLO answered on wsi */
    int relay_batch;        /* the relay's HELLO said it takes ACKS frames */
    struct mlc_frame_codec *codec; /* zstd state of this thread */
    struct mlc_buf acks;    /* an ACKS body being built (reused) */
    int retry_pending;      /* sul_connect is scheduled */
    long long last_rx_ms, max_seq, ping_sent_ms;
    lws_sorted_usec_list_t sul_connect, sul_beat, sul_flush, sul_attempt;
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

/* The tunnel's state connection waits for the write lock (the write-back
 * worker commits a row at a time on its own connection) in steps of 0.2 ms,
 * not SQLite's default 1, 2, 5 ... 100 ms: a delivery waits for the lock,
 * not for a sleep that outlasts it. Gives up after about 10 s, as the
 * state's other connections do. */
#define BUSY_STEP_US 200
#define BUSY_TRIES (10 * 1000 * 1000 / BUSY_STEP_US)

static int busy_short(void *arg, int tries)
{
    struct timespec ts = { 0, BUSY_STEP_US * 1000L };

    (void)arg;
    if (tries >= BUSY_TRIES) {
        return 0;
    }
    nanosleep(&ts, NULL);
    return 1;
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
static void free_pending(struct tunnel_client *t);
static void flush_cb(lws_sorted_usec_list_t *sul);

/* the backoff cap: three heartbeats, within [BACKOFF_BASE_MS, BACKOFF_MAX_MS] */
static long long backoff_cap_ms(const struct tunnel_client *t)
{
    long long cap = 3 * t->o.heartbeat_s * 1000;

    return cap < BACKOFF_BASE_MS ? BACKOFF_BASE_MS : cap > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cap;
}

/* how long an attempt may take from connect() to the relay's HELLO */
static long long attempt_timeout_ms(const struct tunnel_client *t)
{
    long long ms = 3 * t->o.heartbeat_s * 1000;

    return ms < ATTEMPT_MIN_MS ? ATTEMPT_MIN_MS : ms > ATTEMPT_MAX_MS ? ATTEMPT_MAX_MS : ms;
}

static void schedule_reconnect(struct tunnel_client *t)
{
    long long cap = (long long)BACKOFF_BASE_MS << (t->attempt < 10 ? t->attempt : 10);
    uint32_t r = 0;
    long long delay;

    if (t->stop) {
        return;
    }
    if (cap > backoff_cap_ms(t)) {
        cap = backoff_cap_ms(t);
    }
    mlc_random(&r, sizeof(r));
    delay = (long long)(r % (uint32_t)(cap + 1)); /* full jitter */
    if (delay < BACKOFF_MIN_MS) {
        delay = BACKOFF_MIN_MS;
    }
    t->attempt++;
    pthread_mutex_lock(&t->mu);
    t->info.reconnects++;
    pthread_mutex_unlock(&t->mu);
    mlc_debug("tunnel: reconnecting in %lld ms (attempt %d)", delay, t->attempt);
    t->retry_pending = 1;
    lws_sul_schedule(t->ctx, 0, &t->sul_connect, connect_cb, delay * LWS_US_PER_MS);
}

/* The current attempt or link is over (gen says which; a stale one is
 * ignored): forget its wsi and what was queued for it, show the tunnel down,
 * try again after a backoff. If kill, the wsi is still open in lws and is
 * told to close; we do not wait for that. */
static void link_down(struct tunnel_client *t, uintptr_t gen, const char *why, int kill)
{
    struct lws *w = t->wsi;

    if (gen != t->gen || gen <= t->over_gen) {
        return;
    }
    t->over_gen = gen;
    t->wsi = NULL;
    t->up = 0;
    t->relay_batch = 0;
    if (kill && w != NULL) {
        lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    }
    free_pending(t); /* never acked: the relay re-sends them */
    mlc_wsq_clear(&t->out);
    mlc_buf_release(&t->rx);
    t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
    pthread_mutex_lock(&t->mu);
    t->info.rtt_ms = -1; /* no round trip while there is no link */
    pthread_mutex_unlock(&t->mu);
    set_state(t, 0, why);
    schedule_reconnect(t);
}

static void attempt_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_attempt);
    char msg[160];

    if (t->wsi == NULL || t->up || t->gen <= t->over_gen) {
        return;
    }
    snprintf(msg, sizeof(msg), "no answer from the relay at %s within %lld s (connect, TLS, upgrade or HELLO)",
             t->o.url, attempt_timeout_ms(t) / 1000);
    if (t->attempt <= 1 || t->attempt % 10 == 0) {
        mlc_warn("tunnel: %s; retrying with backoff", msg);
    }
    link_down(t, t->gen, msg, 1);
}

static void connect_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_connect);
    struct lws_client_connect_info ci;

    t->retry_pending = 0;
    if (t->stop) {
        return;
    }
    t->gen++;
    t->up = 0;
    t->wsi = NULL;
    memset(&ci, 0, sizeof(ci));
    ci.context = t->ctx;
    ci.address = t->host;
    ci.port = t->port;
    ci.path = t->path;
    ci.host = t->host;
    ci.origin = t->host;
    ci.protocol = "mlc-tunnel";
    ci.opaque_user_data = (void *)t->gen;
    if (t->tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        if (t->o.tls_insecure) {
            ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                                 LCCSCF_ALLOW_INSECURE;
        }
    }
    lws_sul_schedule(t->ctx, 0, &t->sul_attempt, attempt_cb, attempt_timeout_ms(t) * LWS_US_PER_MS);
    {
        uintptr_t gen = t->gen;
        struct lws *w = lws_client_connect_via_info(&ci);
        if (gen <= t->over_gen) {
            return; /* it failed while we were in there (CONNECTION_ERROR) */
        }
        if (w == NULL) {
            link_down(t, gen, "cannot start a connection to the relay", 0);
            return;
        }
        t->wsi = w;
    }
}

static void send_ping(struct tunnel_client *t)
{
    /* the sequence number carries the send time: the PONG echoes it */
    t->ping_sent_ms = now_ms();
    send_frame(t, MLC_FRAME_PING, (uint64_t)t->ping_sent_ms, NULL, 0);
}

static void beat_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_beat);
    long long hb = t->o.heartbeat_s * 1000;

    if (t->wsi != NULL && t->up) {
        if (now_ms() - t->last_rx_ms > 3 * hb) {
            char msg[120];
            snprintf(msg, sizeof(msg), "heartbeat lost: relay silent for %llds", (now_ms() - t->last_rx_ms) / 1000);
            mlc_warn("tunnel: %s; reconnecting", msg);
            link_down(t, t->gen, msg, 1);
        } else {
            send_ping(t);
        }
    } else if (t->wsi == NULL && !t->retry_pending && !t->stop) {
        /* nothing in flight and nothing scheduled: never stop trying */
        mlc_warn("tunnel: no connection attempt pending; trying again");
        schedule_reconnect(t);
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
    /* we take DELIVERS frames (and send ACKS when the relay says it takes them) */
    cJSON_AddBoolToObject(o, "batch", 1);
    s = mlc_json_print(o);
    cJSON_Delete(o);
    send_frame(t, MLC_FRAME_HELLO, 0, s, strlen(s));
    memset(s, 0, strlen(s));
    free(s);
}

static void free_pending(struct tunnel_client *t)
{
    for (size_t i = 0; i < t->npend; i++) {
        free(t->pend[i].own);
    }
    t->npend = 0;
}

static struct pend_dlv *pend_add(struct tunnel_client *t)
{
    struct pend_dlv *p;

    if (t->npend == t->cappend) {
        t->cappend = t->cappend ? 2 * t->cappend : 64;
        t->pend = mlc_xrealloc(t->pend, t->cappend * sizeof(*t->pend));
    }
    p = &t->pend[t->npend++];
    memset(p, 0, sizeof(*p));
    if (t->npend == 1) {
        lws_sul_schedule(t->ctx, 0, &t->sul_flush, flush_cb, 1);
    }
    return p;
}

/* ACK what was stored: one ACKS frame of ranges of consecutive seqs when the
 * relay takes them, else an ACK per delivery. seqs is sorted. */
static void send_acks(struct tunnel_client *t, const uint64_t *seqs, size_t n)
{
    size_t i = 0, ranges = 0;
    uint64_t first = 0;

    if (!t->relay_batch) {
        for (i = 0; i < n; i++) {
            send_frame(t, MLC_FRAME_ACK, seqs[i], NULL, 0);
        }
        return;
    }
    mlc_buf_reset(&t->acks);
    while (i < n) {
        size_t j = i;
        while (j + 1 < n && seqs[j + 1] == seqs[j] + 1) {
            j++;
        }
        if (ranges == 0) {
            first = seqs[i]; /* the frame's seq: its first range's first */
        }
        mlc_acks_add(&t->acks, seqs[i], seqs[j]);
        ranges++;
        if (ranges == MLC_ACKS_MAX || j + 1 == n) {
            send_frame(t, MLC_FRAME_ACKS, first, t->acks.ptr, t->acks.len);
            mlc_buf_reset(&t->acks);
            ranges = 0;
        }
        i = j + 1;
    }
}

static int by_seq(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Store every delivery that arrived in this loop pass in one transaction
 * (one fsync), then ACK them. A failure ACKs nothing: the relay re-sends. */
static void flush_cb(lws_sorted_usec_list_t *sul)
{
    struct tunnel_client *t = lws_container_of(sul, struct tunnel_client, sul_flush);
    struct mlc_errbuf err = { 0 };
    struct inbox_new *rows;
    uint64_t *seqs;
    enum mlc_rc rc;
    long fresh_n = 0, dup_n = 0;

    if (t->npend == 0) {
        return;
    }
    rows = mlc_xmalloc(t->npend * sizeof(*rows));
    seqs = mlc_xmalloc(t->npend * sizeof(*seqs));
    for (size_t i = 0; i < t->npend; i++) {
        rows[i] = t->pend[i].in;
    }
    rc = state_inbox_put_many(t->st, rows, t->npend, &err);
    if (rc != MLC_OK) {
        mlc_error("tunnel: storing %zu deliveries in the inbox failed: %s (not acknowledged; the relay "
                  "will re-send them)", t->npend, mlc_err_msg(&err));
        free(rows);
        free(seqs);
        free_pending(t);
        return;
    }
    for (size_t i = 0; i < t->npend; i++) {
        rows[i].fresh ? fresh_n++ : dup_n++;
        if (rows[i].seq > t->max_seq) {
            t->max_seq = rows[i].seq;
        }
        seqs[i] = (uint64_t)rows[i].seq;
    }
    qsort(seqs, t->npend, sizeof(*seqs), by_seq);
    {
        /* a seq the relay sent twice in one pass is acked once */
        size_t k = 0;
        for (size_t i = 0; i < t->npend; i++) {
            if (k == 0 || seqs[i] != seqs[k - 1]) {
                seqs[k++] = seqs[i];
            }
        }
        send_acks(t, seqs, k);
    }
    free(rows);
    free(seqs);
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
    size_t kl, il, bl;

    if (!cJSON_IsObject(body) || kind == NULL || id == NULL ||
        (text = cJSON_PrintUnformatted(body)) == NULL) {
        /* not storable; ACK it anyway or it would come back forever */
        mlc_error("tunnel: DELIVER %llu is malformed (no kind, id or body object); acknowledged and dropped",
                  (unsigned long long)f->seq);
        cJSON_Delete(o);
        send_frame(t, MLC_FRAME_ACK, f->seq, NULL, 0);
        return;
    }
    /* one block: kind, id and body, each NUL-terminated */
    kl = strlen(kind);
    il = strlen(id);
    bl = strlen(text);
    p = pend_add(t);
    p->own = mlc_xmalloc(kl + il + bl + 3);
    memcpy(p->own, kind, kl + 1);
    memcpy(p->own + kl + 1, id, il + 1);
    memcpy(p->own + kl + il + 2, text, bl + 1);
    p->in.seq = (long long)f->seq;
    p->in.kind = p->own;
    p->in.kind_len = kl;
    p->in.ext_id = p->own + kl + 1;
    p->in.ext_id_len = il;
    p->in.body = p->own + kl + il + 2;
    p->in.body_len = bl;
    p->in.received_ms = (long long)mlc_json_num(o, "received_ms", 0);
    free(text);
    cJSON_Delete(o);
}

/* A webhook body as the inbox keeps it: a JSON object, no NUL inside. */
static int body_ok(const char *b, size_t n)
{
    cJSON *o;
    int ok;

    if (memchr(b, '\0', n) != NULL) {
        return 0;
    }
    o = cJSON_ParseWithLength(b, n);
    ok = cJSON_IsObject(o);
    cJSON_Delete(o);
    return ok;
}

/* A DELIVERS frame: every record goes to the pending list, pointing into
 * the frame's body, which the list then owns (f->json is taken). */
static void on_delivers(struct tunnel_client *t, struct mlc_frame *f)
{
    static struct mlc_delivery d[MLC_DELIVERS_MAX]; /* this thread only */
    struct mlc_errbuf err = { 0 };
    struct pend_dlv *p = NULL;
    size_t n;

    if (mlc_delivers_parse(f->json, f->json_len, d, MLC_DELIVERS_MAX, &n, &err) != MLC_OK) {
        /* nothing in it can be trusted, not even its seqs: nothing is acked */
        mlc_error("tunnel: DELIVERS frame from the relay is malformed (%s); ignored", mlc_err_msg(&err));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!body_ok(d[i].body, d[i].body_len)) {
            mlc_error("tunnel: delivery %llu is malformed (its body is not a JSON object); "
                      "acknowledged and dropped", (unsigned long long)d[i].seq);
            send_acks(t, &d[i].seq, 1);
            continue;
        }
        p = pend_add(t);
        p->in.seq = (long long)d[i].seq;
        p->in.kind = d[i].kind;
        p->in.kind_len = d[i].kind_len;
        p->in.ext_id = d[i].id;
        p->in.ext_id_len = d[i].id_len;
        p->in.body = d[i].body;
        p->in.body_len = d[i].body_len;
        p->in.received_ms = d[i].received_ms;
    }
    if (p != NULL) {
        p->own = f->json; /* the last record's entry frees the frame */
        f->json = NULL;
    }
}

static void on_frame(struct tunnel_client *t, const uint8_t *p, size_t n)
{
    struct mlc_frame f;
    struct mlc_errbuf err = { 0 };

    if (mlc_frame_decode_with(t->codec, p, n, &f, &err) != MLC_OK) {
        mlc_warn("tunnel: bad frame from the relay (%s); ignored", mlc_err_msg(&err));
        return;
    }
    t->last_rx_ms = now_ms();
    pthread_mutex_lock(&t->mu);
    t->info.last_rx_ms = t->last_rx_ms;
    pthread_mutex_unlock(&t->mu);
    switch (f.type) {
    case MLC_FRAME_HELLO: {
        cJSON *o = cJSON_ParseWithLength(f.json, f.json_len);
        t->relay_batch = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "batch"));
        cJSON_Delete(o);
        t->attempt = 0;
        t->up = 1;
        set_state(t, 1, "");
        send_ping(t); /* a round trip for the page now, not a heartbeat later */
        mlc_info("tunnel: connected to %s as tenant %s", t->o.url, t->o.tenant);
        break;
    }
    case MLC_FRAME_DELIVER:
        on_deliver(t, &f);
        break;
    case MLC_FRAME_DELIVERS:
        on_delivers(t, &f);
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
    uintptr_t gen = (uintptr_t)lws_get_opaque_user_data(wsi);
    int stale = gen != t->gen || gen <= t->over_gen;

    (void)user;
    switch (reason) {
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi == t->wsi) {
            /* lws is done with it. lws 4.1 destroys a client connection whose
             * handshake timed out (e.g. on a blackholed path) with this
             * callback alone, no CONNECTION_ERROR or CLOSED: without this
             * case the attempts stopped there for good. */
            t->wsi = NULL;
            if (!stale) {
                link_down(t, gen, "connection closed", 0);
            }
        }
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (stale) {
            return -1;
        }
        t->wsi = wsi;
        t->last_rx_ms = now_ms();
        send_hello(t);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char msg[160];
        if (stale) {
            return 0;
        }
        snprintf(msg, sizeof(msg), "cannot reach the relay at %s: %.100s", t->o.url,
                 in ? (const char *)in : "connection failed");
        if (t->attempt <= 1 || t->attempt % 10 == 0) {
            mlc_warn("tunnel: %s (retrying with backoff)", msg);
        }
        link_down(t, gen, msg, 0);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (stale) {
            return -1; /* an attempt we gave up on */
        }
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
        if (stale) {
            return -1;
        }
        return mlc_wsq_write(&t->out, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!stale && len >= 2) {
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
        if (stale) {
            return 0;
        }
        if (t->up && !t->stop) {
            mlc_warn("tunnel: connection to the relay closed; reconnecting");
        }
        {
            char msg[200];
            pthread_mutex_lock(&t->mu);
            snprintf(msg, sizeof(msg), "%s", t->info.last_error[0] ? t->info.last_error : "connection closed");
            pthread_mutex_unlock(&t->mu);
            link_down(t, gen, msg, 0);
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

    t->retry_pending = 1;
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
    sqlite3_busy_handler(t->st->db, busy_short, NULL);
    /* the relay forgets what we ACK: inbox commits wait for the disk */
    sqlite3_exec(t->st->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    pthread_mutex_init(&t->mu, NULL);
    t->codec = mlc_frame_codec_new(); /* NULL works too: a zstd context per frame */
    t->out.codec = t->codec;
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
    mlc_buf_release(&t->acks);
    mlc_frame_codec_free(t->codec);
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
