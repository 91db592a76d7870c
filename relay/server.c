/* SPDX-License-Identifier: Apache-2.0
 * server: mlc-relay's one event loop (libwebsockets).
 *
 *   POST /hooks/jira/{tenant}   Jira webhooks (X-Hub-Signature HMAC or JWT)
 *   POST /hooks/zoho/{tenant}   Zoho notifications (channel token)
 *   GET  /tunnel                WebSocket upgrade for agents (subprotocol mlc-tunnel)
 *   GET  /healthz, /metrics
 *
 * Webhooks are verified, queued, and committed to the store in groups at the
 * end of a loop pass (one transaction for every webhook that arrived
 * meanwhile); each gets its 2xx only once that commit is on the disk. With
 * SQLite the fsync runs on a sync thread (struct syncer) while the loop goes
 * on with the next group; otherwise the commit itself waits for it. Then the
 * tenant's tunnel, if this node holds it, is pumped: deliveries are claimed
 * (leased; never one whose commit is not yet synced) and sent as DELIVERS
 * frames (DELIVER, one each, to agents that did not say "batch"), at most
 * `window` unacked at a time.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <libwebsockets.h>
#include <cjson/cJSON.h>
#include "relay/hooks.h"
#include "relay/listen.h"
#include "relay/relay.h"
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "shared/mlc_lws.h"
#include "shared/mlc_tunnel.h"
#include "shared/mlc_wsq.h"

#define TUNNEL_BUCKETS 4096
#define CLAIM_MAX 64
#define HARD_BODY_CAP (64L << 20) /* beyond this the connection is dropped */
#define HELLO_TIMEOUT_S 10        /* an upgraded tunnel must say HELLO within this */
#define DELIVERS_BYTES (512u << 10) /* a DELIVERS body stops growing past this (the wire cap is 1 MiB) */

struct tunnel {
    struct lws *wsi;
    struct tunnel *hnext; /* bucket chain, authenticated tunnels only */
    char tenant[TENANT_NAME_MAX + 1];
    int authed;
    int batch; /* the agent takes DELIVERS frames and may send ACKS */
    unsigned long long pumped; /* R->pass of its last pump after a commit */
    int inflight;
    long long last_rx_ms, last_ack_ms, last_ping_ms, next_sweep_ms;
    struct mlc_buf rx;
    struct mlc_wsq out;
};

struct http_pss {
    struct lws *wsi;
    struct mlc_buf body;
    int kind; /* enum hook_kind; -1: not a hook */
    char tenant[TENANT_NAME_MAX + 1];
    int answered;    /* already answered (413) and closing: the rest of the body is dropped */
    int body_done;   /* the whole body arrived: the body deadline no longer applies */
    size_t received; /* body bytes so far, kept or dropped */
    int pend;        /* index in the commit queue, -1 when not queued */
    int status;      /* deferred answer, 0 = none yet */
    char answer[200];
};

struct pend {
    struct http_pss *pss; /* NULL when the client went away meanwhile */
    struct lws *wsi;      /* pss's connection when queued */
    struct delivery_in d;
    char tenant[TENANT_NAME_MAX + 1];
    char ext_id[96];
    int kind;
    char *body;
    unsigned long long gen; /* committed lazily: the sync it waits for; 0 = not committed */
};

/* The thread that fsyncs the store's WAL (lazy puts): the loop commits
 * without waiting for the disk, hands the commit's number here, and answers
 * the webhooks once their number is synced. Meanwhile it reads, verifies
 * and commits the next group. */
struct syncer {
    pthread_t thr;
    int on; /* 0: no thread, puts wait for the disk */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long long want, done; /* commits handed over, commits synced */
    unsigned long long failed;     /* commits up to this one had a failed sync */
    int err;                       /* its errno */
    int stop;
};

/* ACKs of one tenant received in this loop pass, as ranges (consecutive
 * seqs merged), recorded in one transaction */
struct ackq {
    char tenant[TENANT_NAME_MAX + 1];
    struct seq_range *r;
    size_t n, cap;
    long long count; /* seqs in the ranges */
};

struct metrics {
    unsigned long long hooks[2][7]; /* kind x {stored, duplicate, 400, 401, 404, 413, 408} */
    unsigned long long store_errors, commits, committed, sent, acked, resent_after_lease;
    unsigned long long deliver_frames; /* DELIVER and DELIVERS frames */
    unsigned long long tunnels_opened, tunnels_rejected, commands_sent, commands_answered;
    unsigned long long upgrades_refused, bad_requests;
    double commit_seconds;
};
enum { M_STORED, M_DUP, M_400, M_401, M_404, M_413, M_408 };

struct relay {
    const struct relay_cfg *cfg;
    struct store *store;
    struct lws_context *ctx;
    struct lws_vhost *vh;
    struct tunnel *buckets[TUNNEL_BUCKETS];
    long tunnels;
    struct pend *pend;        /* committed and waiting for their sync first, then queued */
    size_t npend, cappend;
    size_t ncommitted;        /* pend[0..ncommitted) wait for their sync */
    unsigned long long gen;   /* lazy commits so far */
    unsigned long long pass;  /* tunnel pumps after a commit: each tunnel once per pass */
    struct syncer sync;
    int commit_scheduled;
    lws_sorted_usec_list_t commit_sul, tick_sul, ack_sul;
    struct ackq *acks;
    size_t nacks, capacks;
    int ack_scheduled;
    struct metrics m;
    long long started_ms;
    int multi_node; /* a shared store: other nodes may leave leases behind */
    struct mlc_frame_codec *codec; /* zstd state of the loop thread */
    struct mlc_buf js;             /* frame bodies being built (reused) */
    struct mlc_buf ans;            /* JSON answers being built (reused) */
    volatile sig_atomic_t *stop;
};

static struct relay *R; /* the one relay of this process (lws callbacks are plain functions) */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned hash_name(const char *s)
{
    unsigned h = 2166136261u;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h % TUNNEL_BUCKETS;
}

static struct tunnel *tunnel_of(const char *tenant)
{
    for (struct tunnel *t = R->buckets[hash_name(tenant)]; t; t = t->hnext) {
        if (strcmp(t->tenant, tenant) == 0) {
            return t;
        }
    }
    return NULL;
}

static void tunnel_unlink(struct tunnel *t)
{
    struct tunnel **pp;

    if (!t->authed) {
        return;
    }
    for (pp = &R->buckets[hash_name(t->tenant)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == t) {
            *pp = t->hnext;
            R->tunnels--;
            break;
        }
    }
    t->authed = 0;
    t->hnext = NULL;
}

/* ---- tunnel output ---- */

static int tunnel_send(struct tunnel *t, int type, uint64_t seq, const char *json, size_t len)
{
    struct mlc_errbuf err = { 0 };

    if (mlc_wsq_push(&t->out, t->wsi, type, seq, json, len, &err) != MLC_OK) {
        mlc_error("relay: cannot encode a %s frame for tenant %s: %s", mlc_frame_type_name(type),
                  t->tenant, mlc_err_msg(&err));
        return -1;
    }
    return 0;
}

/* One DELIVER frame per delivery (agents that did not say "batch"). */
static void send_one_by_one(struct tunnel *t, const struct delivery_out *d, int n)
{
    struct mlc_buf *js = &R->js;

    for (int i = 0; i < n; i++) {
        mlc_buf_reset(js);
        mlc_buf_addf(js, "{\"kind\":\"%s\",\"id\":", d[i].kind);
        mlc_buf_add_json_str(js, d[i].ext_id);
        mlc_buf_addf(js, ",\"received_ms\":%lld,\"body\":", d[i].received_ms);
        mlc_buf_add(js, d[i].body, d[i].body_len);
        mlc_buf_adds(js, "}");
        if (tunnel_send(t, MLC_FRAME_DELIVER, (uint64_t)d[i].seq, js->ptr, js->len) == 0) {
            R->m.deliver_frames++;
            t->inflight++;
            R->m.sent++;
        }
    }
}

static void send_delivers(struct tunnel *t, uint64_t first, int nrec)
{
    if (tunnel_send(t, MLC_FRAME_DELIVERS, first, R->js.ptr, R->js.len) == 0) {
        R->m.deliver_frames++;
        t->inflight += nrec;
        R->m.sent += (unsigned long long)nrec;
    }
    mlc_buf_reset(&R->js);
}

/* The deliveries in DELIVERS frames of up to DELIVERS_BYTES each (a
 * delivery bigger than that travels alone, as a DELIVER would). One that
 * cannot be framed, or sent, stays leased: it goes again when the lease
 * lapses. */
static void send_batched(struct tunnel *t, const struct delivery_out *d, int n)
{
    struct mlc_errbuf err = { 0 };
    uint64_t first = 0;
    int nrec = 0;

    mlc_buf_reset(&R->js);
    for (int i = 0; i < n; i++) {
        struct mlc_delivery r = { (uint64_t)d[i].seq, d[i].received_ms, d[i].kind, d[i].ext_id,
                                  d[i].body, strlen(d[i].kind), strlen(d[i].ext_id), d[i].body_len };
        size_t size = MLC_DELIVERY_HEAD + r.kind_len + r.id_len + r.body_len;
        if (nrec > 0 && (R->js.len + size > DELIVERS_BYTES || nrec == MLC_DELIVERS_MAX)) {
            send_delivers(t, first, nrec);
            nrec = 0;
        }
        if (mlc_delivers_add(&R->js, &r, &err) != MLC_OK) {
            mlc_error("relay: delivery %lld of tenant %s cannot be framed: %s", d[i].seq, t->tenant,
                      mlc_err_msg(&err));
            mlc_err_reset(&err);
            continue;
        }
        if (nrec++ == 0) {
            first = r.seq;
        }
    }
    if (nrec > 0) {
        send_delivers(t, first, nrec);
    }
}

/* Send what the store holds for this tenant, up to the window. */
static void tunnel_pump(struct tunnel *t)
{
    struct delivery_out d[CLAIM_MAX];
    struct mlc_errbuf err = { 0 };

    while (t->authed && t->inflight < R->cfg->window) {
        int want = (int)(R->cfg->window - t->inflight), n;
        if (want > CLAIM_MAX) {
            want = CLAIM_MAX;
        }
        n = R->store->ops->deliveries_claim(R->store, t->tenant, want, now_ms(),
                                            R->cfg->lease_s * 1000, d, &err);
        if (n < 0) {
            mlc_error("relay: claiming deliveries for tenant %s failed: %s (will retry)", t->tenant,
                      mlc_err_msg(&err));
            break;
        }
        if (t->batch) {
            send_batched(t, d, n);
        } else {
            send_one_by_one(t, d, n);
        }
        delivery_out_release(d, (size_t)n);
        if (n < want) {
            break;
        }
    }
}

static void tunnel_commands(struct tunnel *t)
{
    struct command_rec c[8];
    struct mlc_errbuf err = { 0 };
    int n = R->store->ops->command_claim(R->store, t->tenant, 8, now_ms(), c, &err);

    for (int i = 0; i < n; i++) {
        tunnel_send(t, MLC_FRAME_COMMAND, (uint64_t)c[i].id, c[i].body, strlen(c[i].body));
        R->m.commands_sent++;
        command_rec_release(&c[i]);
    }
}

/* ---- tunnel input ---- */

static void close_with(struct tunnel *t, enum lws_close_status code, const char *why)
{
    lws_close_reason(t->wsi, code, (unsigned char *)why, strlen(why));
}

static int on_hello(struct tunnel *t, const struct mlc_frame *f)
{
    struct mlc_errbuf err = { 0 };
    struct tenant_rec tr;
    cJSON *o = cJSON_ParseWithLength(f->json, f->json_len);
    const char *tenant = mlc_json_str(o, "tenant"), *key = mlc_json_str(o, "key");
    char hex[65], peer[64] = "";
    uint8_t h[MLC_SHA256_LEN];
    struct tunnel *old;
    struct mlc_buf js = MLC_BUF_INIT;
    enum mlc_rc rc;

    lws_get_peer_simple(t->wsi, peer, sizeof(peer));
    if (!tenant_name_ok(tenant) || key == NULL) {
        cJSON_Delete(o);
        R->m.tunnels_rejected++;
        mlc_warn("relay: tunnel from %s: HELLO without a valid tenant and key; closing", peer);
        close_with(t, LWS_CLOSE_STATUS_POLICY_VIOLATION, "HELLO needs tenant and key");
        return -1;
    }
    rc = R->store->ops->tenant_get(R->store, tenant, &tr, &err);
    mlc_sha256(key, strlen(key), h);
    mlc_hex(h, sizeof(h), hex);
    if (rc != MLC_OK || !mlc_ct_equal(hex, tr.key_hash, 64)) {
        R->m.tunnels_rejected++;
        mlc_warn("relay: tunnel from %s: tenant '%s' %s; closing", peer, tenant,
                 rc == MLC_E_NOTFOUND ? "does not exist"
                 : rc == MLC_OK       ? "presented a wrong key (rotated? run 'mlc-relay tenant rotate' and update the agent)"
                                      : mlc_err_msg(&err));
        cJSON_Delete(o);
        close_with(t, 4401, rc == MLC_OK || rc == MLC_E_NOTFOUND ? "unknown tenant or wrong key"
                                                                 : "store unavailable");
        return -1;
    }
    /* newest tunnel of a tenant wins on this node */
    old = tunnel_of(tenant);
    if (old != NULL && old != t) {
        tunnel_unlink(old);
        close_with(old, LWS_CLOSE_STATUS_GOINGAWAY, "replaced by a newer tunnel");
        lws_set_timeout(old->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    }
    snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
    lws_set_timeout(t->wsi, NO_PENDING_TIMEOUT, 0);
    t->authed = 1;
    t->batch = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "batch"));
    t->inflight = 0;
    t->hnext = R->buckets[hash_name(tenant)];
    R->buckets[hash_name(tenant)] = t;
    R->tunnels++;
    R->m.tunnels_opened++;
    mlc_info("relay: tunnel up: tenant %s, agent %s %s, from %s, last acked %.0f", tenant,
             mlc_json_str(o, "agent_id") ? mlc_json_str(o, "agent_id") : "?",
             mlc_json_str(o, "version") ? mlc_json_str(o, "version") : "?", peer,
             mlc_json_num(o, "last_acked", 0));
    cJSON_Delete(o);
    /* what was sent before and never acked goes again, at once */
    R->store->ops->deliveries_release(R->store, t->tenant, &err);
    mlc_buf_addf(&js, "{\"relay\":");
    mlc_buf_add_json_str(&js, R->cfg->node);
    /* "batch": this relay takes ACKS frames (and sends DELIVERS to an agent that said so) */
    mlc_buf_addf(&js, ",\"tenant\":\"%s\",\"heartbeat_s\":%ld,\"window\":%ld,\"batch\":true}",
                 t->tenant, R->cfg->heartbeat_s, R->cfg->window);
    tunnel_send(t, MLC_FRAME_HELLO, 0, js.ptr, js.len);
    mlc_buf_release(&js);
    t->last_ack_ms = now_ms();
    tunnel_pump(t);
    tunnel_commands(t);
    return 0;
}

static void ack_cb(lws_sorted_usec_list_t *sul)
{
    struct mlc_errbuf err = { 0 };

    (void)sul;
    R->ack_scheduled = 0;
    for (size_t i = 0; i < R->nacks; i++) {
        struct ackq *q = &R->acks[i];
        struct tunnel *t;
        long long acked = 0;
        if (q->n == 0) {
            continue;
        }
        if (R->store->ops->deliveries_ack_ranges(R->store, q->tenant, q->r, q->n, now_ms(), &acked,
                                                 &err) != MLC_OK) {
            mlc_error("relay: recording %lld ACKs of tenant %s failed: %s (they will be re-sent)",
                      q->count, q->tenant, mlc_err_msg(&err));
            mlc_err_reset(&err);
        }
        R->m.acked += (unsigned long long)acked;
        t = tunnel_of(q->tenant);
        if (t != NULL) {
            t->inflight = t->inflight > q->count ? t->inflight - (int)q->count : 0;
            t->last_ack_ms = now_ms();
            if (t->inflight < R->cfg->window / 2) {
                tunnel_pump(t);
            }
        }
        q->n = 0;
        q->count = 0;
    }
}

static void queue_ack(struct tunnel *t, long long first, long long last)
{
    struct ackq *q = NULL;

    for (size_t i = 0; i < R->nacks; i++) {
        if (strcmp(R->acks[i].tenant, t->tenant) == 0) {
            q = &R->acks[i];
            break;
        }
    }
    if (q == NULL) {
        /* reuse an empty slot before growing */
        for (size_t i = 0; i < R->nacks; i++) {
            if (R->acks[i].n == 0) {
                q = &R->acks[i];
                break;
            }
        }
        if (q == NULL) {
            if (R->nacks == R->capacks) {
                R->capacks = R->capacks ? 2 * R->capacks : 8;
                R->acks = mlc_xrealloc(R->acks, R->capacks * sizeof(*R->acks));
            }
            q = &R->acks[R->nacks++];
            memset(q, 0, sizeof(*q));
        }
        snprintf(q->tenant, sizeof(q->tenant), "%s", t->tenant);
    }
    /* first >= 1 and last <= INT64_MAX (the callers check): no overflow */
    q->count = q->count > LLONG_MAX - (last - first + 1) ? LLONG_MAX : q->count + (last - first + 1);
    if (q->n > 0 && q->r[q->n - 1].last == first - 1) {
        q->r[q->n - 1].last = last; /* the next seq of the last range: one range */
    } else {
        if (q->n == q->cap) {
            q->cap = q->cap ? 2 * q->cap : 64;
            q->r = mlc_xrealloc(q->r, q->cap * sizeof(*q->r));
        }
        q->r[q->n].first = first;
        q->r[q->n].last = last;
        q->n++;
    }
    if (!R->ack_scheduled) {
        R->ack_scheduled = 1;
        lws_sul_schedule(R->ctx, 0, &R->ack_sul, ack_cb, 1);
    }
}

static int on_frame(struct tunnel *t, const uint8_t *p, size_t n)
{
    struct mlc_frame f;
    struct mlc_errbuf err = { 0 };
    int rv = 0;

    if (mlc_frame_decode_with(R->codec, p, n, &f, &err) != MLC_OK) {
        mlc_warn("relay: tunnel %s: bad frame (%s); closing", t->authed ? t->tenant : "(no HELLO yet)",
                 mlc_err_msg(&err));
        close_with(t, LWS_CLOSE_STATUS_PROTOCOL_ERR, "bad frame");
        return -1;
    }
    t->last_rx_ms = now_ms();
    if (!t->authed && f.type != MLC_FRAME_HELLO) {
        close_with(t, LWS_CLOSE_STATUS_POLICY_VIOLATION, "HELLO first");
        mlc_frame_release(&f);
        return -1;
    }
    switch (f.type) {
    case MLC_FRAME_HELLO:
        rv = t->authed ? 0 : on_hello(t, &f);
        break;
    case MLC_FRAME_ACK:
        if (f.seq >= 1 && f.seq <= INT64_MAX) {
            queue_ack(t, (long long)f.seq, (long long)f.seq);
        }
        break;
    case MLC_FRAME_ACKS: {
        static struct mlc_seq_range rg[MLC_ACKS_MAX]; /* the loop's one thread only */
        size_t nr;
        if (mlc_acks_parse(f.json, f.json_len, rg, MLC_ACKS_MAX, &nr, &err) != MLC_OK) {
            mlc_warn("relay: tunnel %s: bad ACKS frame (%s); closing", t->tenant, mlc_err_msg(&err));
            close_with(t, LWS_CLOSE_STATUS_PROTOCOL_ERR, "bad ACKS frame");
            rv = -1;
            break;
        }
        for (size_t i = 0; i < nr; i++) {
            queue_ack(t, (long long)rg[i].first, (long long)rg[i].last);
        }
        break;
    }
    case MLC_FRAME_STATUS:
        if (f.seq != 0) {
            struct command_rec c = { 0 };
            /* an agent answers only its own tenant's commands */
            if (R->store->ops->command_get(R->store, (long long)f.seq, &c, &err) == MLC_OK &&
                strcmp(c.tenant, t->tenant) == 0) {
                R->store->ops->command_answer(R->store, (long long)f.seq, f.json, now_ms(), &err);
                R->m.commands_answered++;
            } else {
                mlc_warn("relay: tenant %s answered command %llu, which is not its own; ignored", t->tenant,
                         (unsigned long long)f.seq);
            }
            command_rec_release(&c);
        }
        break;
    case MLC_FRAME_PING:
        tunnel_send(t, MLC_FRAME_PONG, f.seq, NULL, 0);
        break;
    case MLC_FRAME_PONG:
        break;
    default:
        mlc_warn("relay: tunnel %s: unexpected %s frame ignored", t->tenant, mlc_frame_type_name(f.type));
        break;
    }
    mlc_frame_release(&f);
    return rv;
}

static int cb_tunnel(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct tunnel *t = user;
    char uri[32];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/tunnel") != 0) {
            return 1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        memset(t, 0, sizeof(*t));
        t->wsi = wsi;
        t->out.codec = R->codec;
        t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
        t->last_rx_ms = now_ms();
        /* HELLO within HELLO_TIMEOUT_S, or the socket goes (on_hello lifts this) */
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, HELLO_TIMEOUT_S);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!lws_frame_is_binary(wsi)) {
            close_with(t, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, "binary frames only");
            return -1;
        }
        if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi)) {
            return on_frame(t, in, len);
        }
        if (mlc_buf_add(&t->rx, in, len) != MLC_OK) {
            close_with(t, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "frame too large");
            return -1;
        }
        if (lws_is_final_fragment(wsi)) {
            int rv = on_frame(t, (const uint8_t *)t->rx.ptr, t->rx.len);
            mlc_buf_release(&t->rx);
            t->rx.max = MLC_FRAME_MAX_WIRE + MLC_FRAME_HEADER;
            return rv;
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return mlc_wsq_write(&t->out, wsi);
    case LWS_CALLBACK_CLOSED:
        if (t == NULL) {
            return 0;
        }
        if (t->authed) {
            struct mlc_errbuf err = { 0 };
            mlc_info("relay: tunnel down: tenant %s", t->tenant);
            tunnel_unlink(t);
            R->store->ops->deliveries_release(R->store, t->tenant, &err);
        }
        mlc_wsq_clear(&t->out);
        mlc_buf_release(&t->rx);
        return 0;
    default:
        return 0;
    }
}

/* ---- HTTP ---- */

static int respond(struct lws *wsi, unsigned status, const char *ctype, const char *body, size_t len)
{
    return mlc_lws_reply(wsi, status, ctype, body, len, NULL);
}

/* A JSON answer on a connection that stays open: headers and body in one
 * write (one send, one segment), from the stack. */
static int respond_json(struct lws *wsi, unsigned status, const char *msg)
{
    unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;
    struct mlc_buf *b = &R->ans;
    char cl[24];
    int n;

    mlc_buf_reset(b);
    mlc_buf_addf(b, "{\"status\":%u,\"message\":", status);
    mlc_buf_add_json_str(b, msg);
    mlc_buf_adds(b, "}\n");
    n = snprintf(cl, sizeof(cl), "%zu", b->len);
    if (lws_add_http_header_status(wsi, status, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const unsigned char *)"application/json", 16, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, (const unsigned char *)cl, n,
                                     &p, end) ||
        lws_finalize_http_header(wsi, &p, end) || b->len > (size_t)(end - p)) {
        /* a long message: the general path */
        return respond(wsi, status, "application/json", b->ptr, b->len);
    }
    memcpy(p, b->ptr, b->len);
    p += b->len;
    if (lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS) < (int)(p - start)) {
        return -1;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Answer and end the connection: "Connection: close", and no keep-alive
 * transaction. The caller returns -1 (lws flushes what is queued, then
 * closes) or, while a body still arrives, drops the rest and closes later. */
static int respond_close(struct lws *wsi, unsigned status, const char *msg)
{
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    struct mlc_buf b = MLC_BUF_INIT;
    unsigned char *w;
    int n;

    mlc_buf_addf(&b, "{\"status\":%u,\"message\":", status);
    mlc_buf_add_json_str(&b, msg);
    mlc_buf_adds(&b, "}\n");
    if (lws_add_http_header_status(wsi, status, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const unsigned char *)"application/json", 16, &p, end) ||
        lws_add_http_header_content_length(wsi, (lws_filepos_t)b.len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        mlc_buf_release(&b);
        return -1;
    }
    w = mlc_xmalloc(LWS_PRE + b.len);
    memcpy(w + LWS_PRE, b.ptr, b.len);
    n = lws_write(wsi, w + LWS_PRE, b.len, LWS_WRITE_HTTP_FINAL);
    free(w);
    mlc_buf_release(&b);
    return n < 0 ? -1 : 0;
}

static void metrics_text(struct mlc_buf *b)
{
    static const char *const kinds[2] = { "jira", "zoho" };
    static const char *const results[7] = { "stored", "duplicate", "bad_request", "unauthorized",
                                            "unknown_tenant", "too_large", "timeout" };
    struct store_stats ss = { 0 };
    struct mlc_errbuf err = { 0 };
    int ok = R->store->ops->stats(R->store, &ss, &err) == MLC_OK;

    mlc_buf_adds(b, "# HELP mlc_relay_webhooks_total Webhooks received, by source and outcome.\n"
                    "# TYPE mlc_relay_webhooks_total counter\n");
    for (int k = 0; k < 2; k++) {
        for (int r = 0; r < 7; r++) {
            mlc_buf_addf(b, "mlc_relay_webhooks_total{source=\"%s\",result=\"%s\"} %llu\n", kinds[k],
                         results[r], R->m.hooks[k][r]);
        }
    }
    mlc_buf_addf(b,
                 "# HELP mlc_relay_store_errors_total Store failures answered with 503.\n"
                 "# TYPE mlc_relay_store_errors_total counter\nmlc_relay_store_errors_total %llu\n"
                 "# HELP mlc_relay_commits_total Group commits of webhooks.\n"
                 "# TYPE mlc_relay_commits_total counter\nmlc_relay_commits_total %llu\n"
                 "# HELP mlc_relay_commit_seconds_total Time spent in group commits.\n"
                 "# TYPE mlc_relay_commit_seconds_total counter\nmlc_relay_commit_seconds_total %.6f\n"
                 "# HELP mlc_relay_deliveries_sent_total DELIVER frames sent to agents.\n"
                 "# TYPE mlc_relay_deliveries_sent_total counter\nmlc_relay_deliveries_sent_total %llu\n"
                 "# HELP mlc_relay_deliver_frames_total DELIVER and DELIVERS frames sent (a DELIVERS frame "
                 "carries several deliveries).\n"
                 "# TYPE mlc_relay_deliver_frames_total counter\nmlc_relay_deliver_frames_total %llu\n"
                 "# HELP mlc_relay_deliveries_acked_total Deliveries marked acknowledged by agents.\n"
                 "# TYPE mlc_relay_deliveries_acked_total counter\nmlc_relay_deliveries_acked_total %llu\n"
                 "# HELP mlc_relay_tunnels Connected, authenticated agent tunnels on this node.\n"
                 "# TYPE mlc_relay_tunnels gauge\nmlc_relay_tunnels %ld\n"
                 "# HELP mlc_relay_tunnels_rejected_total Tunnels closed for a bad HELLO or key.\n"
                 "# TYPE mlc_relay_tunnels_rejected_total counter\nmlc_relay_tunnels_rejected_total %llu\n"
                 "# HELP mlc_relay_refused_total Connections refused before any handler: malformed "
                 "requests (bad_request) and WebSocket upgrades without /tunnel and mlc-tunnel "
                 "(upgrade).\n"
                 "# TYPE mlc_relay_refused_total counter\n"
                 "mlc_relay_refused_total{reason=\"bad_request\"} %llu\n"
                 "mlc_relay_refused_total{reason=\"upgrade\"} %llu\n"
                 "# HELP mlc_relay_commands_total Operator commands sent and answered.\n"
                 "# TYPE mlc_relay_commands_total counter\n"
                 "mlc_relay_commands_total{state=\"sent\"} %llu\nmlc_relay_commands_total{state=\"answered\"} %llu\n",
                 R->m.store_errors, R->m.commits, R->m.commit_seconds, R->m.sent, R->m.deliver_frames,
                 R->m.acked,
                 R->tunnels, R->m.tunnels_rejected, R->m.bad_requests, R->m.upgrades_refused,
                 R->m.commands_sent, R->m.commands_answered);
    if (ok) {
        mlc_buf_addf(b,
                     "# HELP mlc_relay_deliveries_pending Stored deliveries not yet acked by an agent.\n"
                     "# TYPE mlc_relay_deliveries_pending gauge\nmlc_relay_deliveries_pending %lld\n"
                     "# HELP mlc_relay_tenants Tenants in the store.\n"
                     "# TYPE mlc_relay_tenants gauge\nmlc_relay_tenants %lld\n",
                     ss.pending, ss.tenants);
    }
    mlc_buf_addf(b, "# HELP mlc_relay_up 1 while the store answers.\n# TYPE mlc_relay_up gauge\n"
                    "mlc_relay_up %d\n", ok);
}

static void commit_cb(lws_sorted_usec_list_t *sul);

static void queue_hook(struct http_pss *pss, const char *ext_id)
{
    struct pend *p;

    if (R->npend == R->cappend) {
        R->cappend = R->cappend ? R->cappend * 2 : 256;
        R->pend = mlc_xrealloc(R->pend, R->cappend * sizeof(*R->pend));
    }
    p = &R->pend[R->npend];
    memset(p, 0, sizeof(*p));
    p->pss = pss;
    p->wsi = pss->wsi;
    snprintf(p->tenant, sizeof(p->tenant), "%s", pss->tenant);
    snprintf(p->ext_id, sizeof(p->ext_id), "%s", ext_id);
    p->kind = pss->kind;
    p->d.received_ms = now_ms();
    p->d.body_len = pss->body.len;
    p->body = mlc_buf_detach(&pss->body);
    pss->pend = (int)R->npend++;
    if (!R->commit_scheduled) {
        R->commit_scheduled = 1;
        lws_sul_schedule(R->ctx, 0, &R->commit_sul, commit_cb, 1);
    }
}

/* Answer pend[0..k) (stored, or 503 when !ok), pump the tunnels of their
 * tenants on this node once each, and drop them from the array. */
static void answer_first(size_t k, int ok)
{
    R->pass++;
    for (size_t i = 0; i < k; i++) {
        struct pend *p = &R->pend[i];
        struct http_pss *pss = p->pss;
        if (ok) {
            R->m.hooks[p->kind][p->d.duplicate ? M_DUP : M_STORED]++;
        }
        if (pss != NULL && pss->wsi == p->wsi) {
            pss->pend = -1;
            pss->status = ok ? 200 : 503;
            if (ok) {
                snprintf(pss->answer, sizeof(pss->answer), "%s as delivery %lld",
                         p->d.duplicate ? "already stored" : "stored", p->d.seq);
            } else {
                snprintf(pss->answer, sizeof(pss->answer), "store unavailable; retry later");
            }
            lws_callback_on_writable(pss->wsi);
        }
        free(p->body);
        p->body = NULL;
    }
    if (ok) {
        for (size_t i = 0; i < k; i++) {
            struct tunnel *t;
            if (R->pend[i].d.duplicate) {
                continue;
            }
            t = tunnel_of(R->pend[i].tenant);
            if (t != NULL && t->pumped != R->pass && t->inflight < R->cfg->window) {
                t->pumped = R->pass;
                tunnel_pump(t);
            }
        }
    }
    if (k > 0) {
        memmove(R->pend, R->pend + k, (R->npend - k) * sizeof(*R->pend));
        R->npend -= k;
        R->ncommitted = R->ncommitted > k ? R->ncommitted - k : 0;
        for (size_t i = 0; i < R->npend; i++) {
            if (R->pend[i].pss != NULL) {
                R->pend[i].pss->pend = (int)i;
            }
        }
    }
}

/* Claims stop below the first fresh seq still waiting for its sync (from
 * pend[from] on: the ones before are synced). */
static void set_claim_below(size_t from)
{
    long long below = 0;

    for (size_t i = from; i < R->ncommitted; i++) {
        if (!R->pend[i].d.duplicate && (below == 0 || R->pend[i].d.seq < below)) {
            below = R->pend[i].d.seq;
        }
    }
    R->store->claim_below = below;
}

static void *sync_main(void *arg)
{
    struct syncer *y = arg;

    pthread_mutex_lock(&y->mu);
    while (!y->stop) {
        unsigned long long g;
        int rc;
        if (y->want == y->done) {
            pthread_cond_wait(&y->cv, &y->mu);
            continue;
        }
        g = y->want;
        pthread_mutex_unlock(&y->mu);
        rc = R->store->ops->sync(R->store);
        pthread_mutex_lock(&y->mu);
        if (rc != 0) {
            y->failed = g;
            y->err = rc;
        }
        y->done = g;
        pthread_mutex_unlock(&y->mu);
        lws_cancel_service(R->ctx); /* the loop answers in sync_done() */
        pthread_mutex_lock(&y->mu);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

/* On the loop: answer what the sync thread has made durable. */
static void sync_done(void)
{
    unsigned long long done, failed;
    size_t k = 0;
    int err;

    if (!R->sync.on || R->ncommitted == 0) {
        return;
    }
    pthread_mutex_lock(&R->sync.mu);
    done = R->sync.done;
    failed = R->sync.failed;
    err = R->sync.err;
    pthread_mutex_unlock(&R->sync.mu);
    while (k < R->ncommitted && R->pend[k].gen <= done) {
        k++;
    }
    if (k == 0) {
        return;
    }
    set_claim_below(k); /* before the answers pump the tunnels */
    if (R->pend[k - 1].gen <= failed) {
        /* the commits are in the store but maybe not on the disk: the senders
         * retry, and a stored one is answered as a duplicate */
        size_t bad = 0;
        while (bad < k && R->pend[bad].gen <= failed) {
            bad++;
        }
        R->m.store_errors += bad;
        mlc_error("relay: syncing the store failed: %s; answering 503 to %zu webhook(s) so the senders "
                  "retry", strerror(err), bad);
        answer_first(bad, 0);
        k -= bad;
    }
    answer_first(k, 1);
}

static void commit_cb(lws_sorted_usec_list_t *sul)
{
    struct mlc_errbuf err = { 0 };
    struct timespec t0, t1;
    size_t first = R->ncommitted, n = R->npend - first;
    int lazy = R->sync.on;
    struct delivery_in *items;
    enum mlc_rc rc;

    (void)sul;
    R->commit_scheduled = 0;
    if (n == 0) {
        return;
    }
    items = mlc_xmalloc(n * sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        struct pend *p = &R->pend[first + i];
        p->d.tenant = p->tenant;
        p->d.kind = p->kind == HOOK_ZOHO ? "zoho" : "jira";
        p->d.ext_id = p->ext_id;
        p->d.body = p->body;
        items[i] = p->d;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = lazy ? R->store->ops->deliveries_put_lazy(R->store, items, n, &err)
              : R->store->ops->deliveries_put(R->store, items, n, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (size_t i = 0; i < n; i++) {
        struct pend *p = &R->pend[first + i];
        p->d.seq = items[i].seq;
        p->d.duplicate = items[i].duplicate;
        free(p->body); /* the store has its copy */
        p->body = NULL;
    }
    free(items);
    R->m.commits++;
    R->m.commit_seconds += (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc != MLC_OK) {
        R->m.store_errors += n;
        mlc_error("relay: storing %zu webhook(s) failed: %s; answering 503 so the senders retry", n,
                  mlc_err_msg(&err));
        /* they are the last ones: answer them now, the committed ones keep waiting */
        if (first == 0) {
            answer_first(n, 0);
        } else {
            for (size_t i = first; i < R->npend; i++) {
                struct http_pss *pss = R->pend[i].pss;
                if (pss != NULL && pss->wsi == R->pend[i].wsi) {
                    pss->pend = -1;
                    pss->status = 503;
                    snprintf(pss->answer, sizeof(pss->answer), "store unavailable; retry later");
                    lws_callback_on_writable(pss->wsi);
                }
            }
            R->npend = first;
        }
        return;
    }
    R->m.committed += n;
    if (!lazy) {
        answer_first(n, 1);
        return;
    }
    R->gen++;
    for (size_t i = first; i < R->npend; i++) {
        R->pend[i].gen = R->gen;
    }
    R->ncommitted = R->npend;
    set_claim_below(0);
    pthread_mutex_lock(&R->sync.mu);
    R->sync.want = R->gen;
    pthread_cond_signal(&R->sync.cv);
    pthread_mutex_unlock(&R->sync.mu);
}

static int hook_complete(struct lws *wsi, struct http_pss *pss)
{
    struct tenant_rec tr;
    struct mlc_errbuf err = { 0 };
    struct hook_req r = { 0 };
    struct hook_verdict v;
    char sig[128], auth[4096], did[128];
    enum mlc_rc rc;

    rc = R->store->ops->tenant_get(R->store, pss->tenant, &tr, &err);
    if (rc == MLC_E_NOTFOUND) {
        R->m.hooks[pss->kind][M_404]++;
        mlc_buf_release(&pss->body);
        return respond_json(wsi, 404, "no such tenant");
    }
    if (rc != MLC_OK) {
        mlc_buf_release(&pss->body);
        R->m.store_errors++;
        mlc_error("relay: looking up tenant %s failed: %s", pss->tenant, mlc_err_msg(&err));
        return respond_json(wsi, 503, "store unavailable; retry later");
    }
    r.kind = (enum hook_kind)pss->kind;
    if (lws_hdr_custom_copy(wsi, sig, sizeof(sig), "x-hub-signature:", 16) > 0) {
        r.hub_signature = sig;
    }
    if (lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
        r.authorization = auth;
    }
    if (lws_hdr_custom_copy(wsi, did, sizeof(did), "x-atlassian-webhook-identifier:", 31) > 0) {
        r.delivery_id = did;
    }
    r.body = pss->body.ptr ? pss->body.ptr : "";
    r.len = pss->body.len;
    r.now_s = now_ms() / 1000;
    hook_check(&tr, &r, &v);
    memset(&tr, 0, sizeof(tr));
    if (v.status != 0) {
        R->m.hooks[pss->kind][v.status == 401 ? M_401 : M_400]++;
        mlc_warn("relay: %s webhook for tenant %s refused (%d): %s", pss->kind ? "zoho" : "jira",
                 pss->tenant, v.status, v.why);
        mlc_buf_release(&pss->body);
        return respond_json(wsi, (unsigned)v.status, v.why);
    }
    queue_hook(pss, v.ext_id);
    return 0;
}

/* Content-Length as lws saw it: -1 when absent, -2 when malformed or when
 * several Content-Length headers disagree (a request smuggling classic). */
static long long content_length(struct lws *wsi)
{
    char v[32], first[32] = "";
    long long cl = -1;

    for (int i = 0; i < 16; i++) {
        int n = lws_hdr_copy_fragment(wsi, v, sizeof(v), WSI_TOKEN_HTTP_CONTENT_LENGTH, i);
        char *e;
        if (n < 0) {
            break;
        }
        /* lws may also hand a repeated header over as one "7,70" value */
        if (n == 0 || strspn(v, "0123456789") != (size_t)n || n > 18) {
            return -2;
        }
        if (i > 0 && strcmp(v, first) != 0) {
            return -2;
        }
        snprintf(first, sizeof(first), "%s", v);
        cl = strtoll(v, &e, 10);
    }
    if (cl == -1 && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
        /* one header whose value is not a plain number (e.g. "7, 70") */
        if (lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
            strspn(v, "0123456789") != strlen(v)) {
            return -2;
        }
        cl = atoll(v);
    }
    return cl;
}

/* A WebSocket upgrade is for agents only: GET /tunnel with exactly the
 * subprotocol mlc-tunnel. Anything else (no subprotocol: lws would bind the
 * first protocol, "http", and hold the socket open for good) is refused
 * before the 101. */
static int upgrade_ok(struct lws *wsi)
{
    char uri[32], proto[64];
    char *b, *e;

    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/tunnel") != 0) {
        return 0;
    }
    if (lws_hdr_copy(wsi, proto, sizeof(proto), WSI_TOKEN_PROTOCOL) <= 0) {
        return 0;
    }
    for (b = proto; *b == ' ' || *b == '\t'; b++) {
    }
    for (e = b + strlen(b); e > b && (e[-1] == ' ' || e[-1] == '\t'); e--) {
    }
    *e = '\0';
    return strcmp(b, "mlc-tunnel") == 0;
}

/* Answer a body that will not be stored before it ends. What still arrives
 * is read and dropped, so a client that is still sending reads our answer
 * rather than a reset; the connection closes when the body ends, after
 * HARD_BODY_CAP bytes, or a second after the answer, whichever is first. */
static int body_refuse(struct lws *wsi, struct http_pss *pss, unsigned status, const char *msg)
{
    mlc_buf_release(&pss->body);
    pss->answered = 1;
    /* lws may stop reading once the answer is out: close a second later,
     * when the client has had time to read it */
    lws_set_timer_usecs(wsi, LWS_US_PER_SEC);
    return respond_close(wsi, status, msg);
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    struct http_pss *pss = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        if (!upgrade_ok(wsi)) {
            char peer[64] = "";
            lws_get_peer_simple(wsi, peer, sizeof(peer));
            R->m.upgrades_refused++;
            mlc_debug("relay: WebSocket upgrade from %s refused (only GET /tunnel with subprotocol "
                      "mlc-tunnel)", peer);
            respond_close(wsi, 400, "WebSocket upgrades are for agents: GET /tunnel with "
                                    "Sec-WebSocket-Protocol: mlc-tunnel");
            return -1;
        }
        return 0;
    case LWS_CALLBACK_HTTP: {
        const char *path = in;
        int is_post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
        enum hook_kind kind;
        long long cl;

        /* a keep-alive connection reuses pss: drop the last request's leftovers */
        mlc_buf_release(&pss->body);
        memset(pss, 0, sizeof(*pss));
        pss->wsi = wsi;
        pss->pend = -1;
        pss->kind = -1;
        cl = content_length(wsi);
        if (cl == -2 || (cl >= 0 && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)) {
            R->m.bad_requests++;
            respond_close(wsi, 400, "conflicting or malformed Content-Length (or Content-Length "
                                    "with Transfer-Encoding)");
            return -1;
        }
        if (hook_route(path, &kind, pss->tenant, sizeof(pss->tenant)) == 0) {
            if (!is_post) {
                return respond_json(wsi, 405, "webhooks are POSTed");
            }
            pss->kind = (int)kind;
            pss->body.max = (size_t)R->cfg->max_body;
            if (cl > HARD_BODY_CAP) {
                R->m.hooks[kind][M_413]++;
                respond_close(wsi, 413, "body over the relay's size limit");
                return -1;
            }
            /* the whole body within body_timeout, or 408 */
            lws_set_timer_usecs(wsi, (lws_usec_t)R->cfg->body_timeout_s * LWS_US_PER_SEC);
            if (cl > R->cfg->max_body) {
                R->m.hooks[kind][M_413]++;
                return body_refuse(wsi, pss, 413, "body over the relay's size limit");
            }
            return 0; /* the body follows */
        }
        if (strncmp(path, "/hooks/", 7) == 0) {
            return respond_json(wsi, 404, "unknown webhook path or bad tenant name "
                                          "(expected /hooks/jira/{tenant} or /hooks/zoho/{tenant})");
        }
        if (strcmp(path, "/healthz") == 0) {
            struct store_stats ss;
            struct mlc_errbuf err = { 0 };
            char b[256];
            int ok = R->store->ops->stats(R->store, &ss, &err) == MLC_OK;
            int n = snprintf(b, sizeof(b), "{\"ok\":%s,\"node\":\"%s\",\"store\":\"%s\",\"tunnels\":%ld}\n",
                             ok ? "true" : "false", R->cfg->node, R->store->ops->name, R->tunnels);
            return respond(wsi, ok ? 200 : 503, "application/json", b, (size_t)n);
        }
        if (strcmp(path, "/metrics") == 0) {
            struct mlc_buf b = MLC_BUF_INIT;
            int rv;
            metrics_text(&b);
            rv = respond(wsi, 200, "text/plain; version=0.0.4", b.ptr, b.len);
            mlc_buf_release(&b);
            return rv;
        }
        if (strcmp(path, "/tunnel") == 0) {
            return respond_json(wsi, 426, "WebSocket upgrade with subprotocol mlc-tunnel required");
        }
        return respond_json(wsi, 404, "not found");
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (pss->kind < 0) {
            return 0;
        }
        pss->received += len;
        if (pss->answered) {
            return pss->received > (size_t)HARD_BODY_CAP ? -1 : 0;
        }
        if (mlc_buf_add(&pss->body, in, len) != MLC_OK) {
            /* a chunked (or lying) body passed max_body: answer now, not at its end */
            R->m.hooks[pss->kind][M_413]++;
            return body_refuse(wsi, pss, 413, "body over the relay's size limit");
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->kind < 0) {
            return respond_json(wsi, 404, "not found");
        }
        /* lws 4.1's lws_set_timer_usecs() has no cancel (-1 fires at once): flag it */
        pss->body_done = 1;
        if (pss->answered) {
            return -1; /* answered already, with Connection: close */
        }
        return hook_complete(wsi, pss);
    case LWS_CALLBACK_TIMER:
        /* the body deadline passed, or the grace after an early 413 */
        if (pss == NULL || pss->kind < 0 || pss->body_done) {
            return 0;
        }
        if (!pss->answered) {
            char peer[64] = "";
            lws_get_peer_simple(wsi, peer, sizeof(peer));
            R->m.hooks[pss->kind][M_408]++;
            mlc_warn("relay: %s webhook for tenant %s from %s: body incomplete after %lds "
                     "(%zu bytes); answering 408 and closing", pss->kind ? "zoho" : "jira",
                     pss->tenant, peer, R->cfg->body_timeout_s, pss->received);
            respond_close(wsi, 408, "request body not received in time");
        }
        return -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss->status != 0) {
            unsigned st = (unsigned)pss->status;
            pss->status = 0;
            return respond_json(wsi, st, pss->answer);
        }
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss == NULL) {
            return 0; /* closed before any request (e.g. a failed TLS handshake) */
        }
        /* lws may hand this callback a pss whose memory a newer request
         * (another connection) uses by now: forget the queued item only
         * when it is this connection's */
        if (pss->pend >= 0 && (size_t)pss->pend < R->npend && R->pend[pss->pend].pss == pss &&
            R->pend[pss->pend].wsi == wsi) {
            R->pend[pss->pend].pss = NULL;
        }
        pss->pend = -1;
        mlc_buf_release(&pss->body);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- cross-node wake-ups and the periodic tick ---- */

static void on_wake(void *arg, const char *tenant, const char *what)
{
    struct tunnel *t = tunnel_of(tenant);

    (void)arg;
    if (t == NULL) {
        return;
    }
    if (strcmp(what, "command") == 0) {
        tunnel_commands(t);
    } else {
        tunnel_pump(t);
    }
}

static int cb_wake(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    (void)wsi;
    (void)user;
    (void)in;
    (void)len;
    if (reason == LWS_CALLBACK_RAW_RX_FILE) {
        R->store->ops->wake_drain(R->store, on_wake, NULL);
    } else if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        sync_done();
    }
    return 0;
}

static void tick_cb(lws_sorted_usec_list_t *sul)
{
    long long now = now_ms();
    long hb = R->cfg->heartbeat_s * 1000;

    (void)sul;
    /* PostgreSQL notifications also arrive through the adopted socket; this
     * catches those after a reconnect replaced it. */
    R->store->ops->wake_drain(R->store, on_wake, NULL);
    {
        char names[16][TENANT_NAME_MAX + 1];
        struct mlc_errbuf err = { 0 };
        int n = R->store->ops->command_tenants ? R->store->ops->command_tenants(R->store, names, 16, &err) : 0;
        for (int i = 0; i < n; i++) {
            struct tunnel *t = tunnel_of(names[i]);
            if (t != NULL) {
                tunnel_commands(t);
            }
        }
    }
    for (int b = 0; b < TUNNEL_BUCKETS; b++) {
        for (struct tunnel *t = R->buckets[b], *next; t; t = next) {
            next = t->hnext;
            if (now - t->last_rx_ms > 3 * hb) {
                mlc_warn("relay: tunnel of tenant %s silent for %llds; closing", t->tenant,
                         (now - t->last_rx_ms) / 1000);
                tunnel_unlink(t);
                lws_set_timeout(t->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
                continue;
            }
            if (now - t->last_ping_ms >= hb) {
                t->last_ping_ms = now;
                tunnel_send(t, MLC_FRAME_PING, (uint64_t)now, NULL, 0);
            }
            if (t->inflight > 0 && now - t->last_ack_ms > R->cfg->lease_s * 1000) {
                /* leases lapsed: whatever was not acked is claimable again */
                R->m.resent_after_lease += (unsigned long long)t->inflight;
                t->inflight = 0;
                t->next_sweep_ms = 0;
            }
            if (R->multi_node && now >= t->next_sweep_ms) {
                /* leases another node left behind (it died) lapse too: look
                 * again every few seconds, staggered over the tunnels */
                t->next_sweep_ms = now + 5000 + (long long)(hash_name(t->tenant) % 1000);
                tunnel_pump(t);
            }
        }
    }
    lws_sul_schedule(R->ctx, 0, &R->tick_sul, tick_cb, 250 * LWS_US_PER_MS);
}

/* ---- the loop ---- */

/* An idle tunnel keeps lws's receive buffer (rx_buffer_size) for as long as
 * it is open, so it is small: an agent sends ACKs, PONGs and answers, and
 * a longer frame arrives in pieces that cb_tunnel joins. Sends stay at up
 * to 4 KB per write (tx_packet_size). */
#define TUNNEL_RX_BUF 1024
#define TUNNEL_TX_PACKET 4096

static const struct lws_protocols protocols[] = {
    { "http", cb_http, sizeof(struct http_pss), 0, 0, NULL, 0 },
    { "mlc-tunnel", cb_tunnel, sizeof(struct tunnel), TUNNEL_RX_BUF, 0, NULL, TUNNEL_TX_PACKET },
    { "mlc-wake", cb_wake, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void lws_to_mlc_log(int level, const char *line)
{
    char buf[512];
    size_t n;

    snprintf(buf, sizeof(buf), "%s", line);
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        buf[--n] = '\0';
    }
    if (level & LLL_ERR) {
        mlc_warn("lws: %s", buf);
    } else {
        mlc_debug("lws: %s", buf);
    }
}

int relay_run(const struct relay_cfg *cfg, volatile sig_atomic_t *stop)
{
    struct lws_context_creation_info info;
    struct mlc_errbuf err = { 0 };
    static struct relay r;
    struct listen_addr want, got;
    struct store_key key;
    int tls = cfg->tls_cert && cfg->tls_cert[0];
    int rc = 0, rc2, found;
    struct rlimit rl;

    memset(&r, 0, sizeof(r));
    r.cfg = cfg;
    r.stop = stop;
    R = &r;
    if (listen_resolve(cfg->listen, &want, &err) != MLC_OK) {
        mlc_error("relay: %s", mlc_err_msg(&err));
        return 2;
    }
    if (!tls && !want.loopback) {
        mlc_error("relay: listening on %s (%s) without TLS is refused; set tls_cert and tls_key "
                  "(plain HTTP is for loopback only)", cfg->listen, want.host);
        return 2;
    }
    /* many idle tunnels need many descriptors */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (store_key_load(&key, cfg->key_file, &err) != MLC_OK ||
        store_open(&r.store, cfg->store, cfg->node, &key, &err) != MLC_OK) {
        store_key_wipe(&key);
        mlc_error("relay: %s", mlc_err_msg(&err));
        return 1;
    }
    store_key_wipe(&key);
    lws_set_log_level(LLL_ERR | LLL_WARN | (mlc_log_level >= MLC_LOG_DEBUG ? LLL_NOTICE : 0),
                      lws_to_mlc_log);
    memset(&info, 0, sizeof(info));
    info.port = want.port;
    /* the numeric address, and the family by option (see relay/listen.h) */
    info.iface = want.wildcard ? NULL : want.host;
    info.protocols = protocols;
    info.vhost_name = "mlc-relay";
    info.alpn = "http/1.1";
    info.fd_limit_per_thread = (unsigned)cfg->max_conns;
    info.timeout_secs = 20;
    info.options = want.family == AF_INET ? LWS_SERVER_OPTION_DISABLE_IPV6 : 0;
    if (tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
    }
    r.ctx = lws_create_context(&info);
    if (r.ctx == NULL) {
        mlc_error("relay: cannot listen on %s (port in use? bad TLS certificate or key?)", cfg->listen);
        r.store->ops->close(r.store);
        return 1;
    }
    /* serve nothing before the socket is known to be exactly where configured */
    found = listen_bound(want.port, &got) == MLC_OK;
    if (!found || !listen_same(&want, &got) || (!tls && !got.loopback)) {
        if (!found) {
            mlc_error("relay: listen %s: no socket is listening on %s port %d (is %s an address of "
                      "this machine?); stopping", cfg->listen, want.host, want.port, want.host);
        } else {
            mlc_error("relay: listen %s: the socket is bound to %s port %d, not %s; stopping "
                      "rather than serve elsewhere", cfg->listen, got.host, got.port, want.host);
        }
        lws_context_destroy(r.ctx);
        r.store->ops->close(r.store);
        return 1;
    }
    r.vh = lws_get_vhost_by_name(r.ctx, "mlc-relay");
    if (r.store->ops->wake_fd(r.store) >= 0 && r.vh) {
        lws_sock_file_fd_type fd;
        fd.filefd = r.store->ops->wake_fd(r.store);
        /* lws must not close the store's socket: hand it a duplicate */
        fd.filefd = dup(fd.filefd);
        if (lws_adopt_descriptor_vhost(r.vh, LWS_ADOPT_RAW_FILE_DESC, fd, "mlc-wake", NULL) == NULL) {
            mlc_warn("relay: cannot watch the store's notification socket; polling instead");
        }
    }
    r.started_ms = now_ms();
    r.codec = mlc_frame_codec_new(); /* NULL works too: a zstd context per frame */
    r.multi_node = strcmp(r.store->ops->name, "sqlite") != 0;
    if (r.store->ops->deliveries_put_lazy != NULL) {
        if (r.store->ops->sync_start(r.store, &err) != MLC_OK) {
            mlc_warn("relay: %s; webhook commits wait for the disk", mlc_err_msg(&err));
        } else {
            pthread_mutex_init(&r.sync.mu, NULL);
            pthread_cond_init(&r.sync.cv, NULL);
            r.sync.on = pthread_create(&r.sync.thr, NULL, sync_main, &r.sync) == 0;
            if (!r.sync.on) {
                mlc_warn("relay: cannot start the store's sync thread; webhook commits wait for the disk");
                pthread_cond_destroy(&r.sync.cv);
                pthread_mutex_destroy(&r.sync.mu);
            }
        }
    }
    lws_sul_schedule(r.ctx, 0, &r.tick_sul, tick_cb, 250 * LWS_US_PER_MS);
    mlc_info("relay: node %s listening on %s (bound %s%s%s:%d)%s, store %s", cfg->node, cfg->listen,
             got.family == AF_INET6 ? "[" : "", got.host, got.family == AF_INET6 ? "]" : "", got.port,
             tls ? " (TLS)" : " (plain HTTP, loopback)", r.store->ops->name);
    while (!*stop) {
        if (lws_service(r.ctx, 0) < 0) {
            rc = 1;
            break;
        }
    }
    ack_cb(NULL); /* what the agents acknowledged is not sent again */
    if (r.sync.on) {
        pthread_mutex_lock(&r.sync.mu);
        r.sync.stop = 1;
        pthread_cond_signal(&r.sync.cv);
        pthread_mutex_unlock(&r.sync.mu);
        pthread_join(r.sync.thr, NULL);
        pthread_cond_destroy(&r.sync.cv);
        pthread_mutex_destroy(&r.sync.mu);
        /* commits not yet answered reach the disk too (their senders will
         * retry anyway, and find them stored) */
        if (r.ncommitted > 0 && (rc2 = r.store->ops->sync(r.store)) != 0) {
            mlc_warn("relay: syncing the store at exit failed: %s", strerror(rc2));
        }
    }
    mlc_info("relay: stopping (%llu webhooks stored, %llu delivered)", r.m.committed, r.m.acked);
    lws_context_destroy(r.ctx);
    for (size_t i = 0; i < r.npend; i++) {
        free(r.pend[i].body);
    }
    for (size_t i = 0; i < r.nacks; i++) {
        free(r.acks[i].r);
    }
    mlc_frame_codec_free(r.codec);
    mlc_buf_release(&r.js);
    mlc_buf_release(&r.ans);
    free(r.acks);
    free(r.pend);
    r.store->ops->close(r.store);
    R = NULL;
    return rc;
}

/* For signal handlers: make lws_service return now. */
void relay_wake(void);
void relay_wake(void)
{
    if (R && R->ctx) {
        lws_cancel_service(R->ctx);
    }
}
