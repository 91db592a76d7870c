/* SPDX-License-Identifier: Apache-2.0
 * tunnelswarm: many idle agent tunnels from one process, for `make bench`.
 *
 *   tunnelswarm --store SPEC --key-file F --port P --count N [--tls CA_FILE]
 *
 * Creates tenants swarm-0..N-1 in the relay's store (known keys), opens N
 * WebSocket tunnels to the relay on 127.0.0.1:P (wss:// with --tls, the
 * relay's certificate checked against CA_FILE for the name localhost), says HELLO on each, prints
 * "ready N" once every tunnel got the relay's HELLO, answers PINGs, and
 * stays until SIGTERM/SIGINT or its stdin closes.
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <libwebsockets.h>
#include "relay/store.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_tunnel.h"

struct swarm_conn {
    int idx;
    int hello_done;
    struct mlc_buf out; /* one pending frame (HELLO or PONG) */
};

static int count, port, ready, failed, connecting, tls;
static volatile sig_atomic_t stopping;
static struct lws_context *ctx;

static void on_sig(int s)
{
    (void)s;
    stopping = 1;
}

static int cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct swarm_conn *c = user;
    struct mlc_errbuf err = { 0 };

    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        char js[200];
        int n;
        c->idx = (int)(intptr_t)lws_get_opaque_user_data(wsi);
        n = snprintf(js, sizeof(js), "{\"tenant\":\"swarm-%d\",\"key\":\"swarm-key-%d\",\"agent_id\":\"swarm\","
                     "\"version\":\"bench\",\"last_acked\":0}", c->idx, c->idx);
        memset(&c->out, 0, sizeof(c->out));
        mlc_frame_encode(MLC_FRAME_HELLO, 0, js, (size_t)n, LWS_PRE, &c->out, &err);
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (c->out.len > LWS_PRE) {
            lws_write(wsi, (unsigned char *)c->out.ptr + LWS_PRE, c->out.len - LWS_PRE, LWS_WRITE_BINARY);
            mlc_buf_release(&c->out);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        struct mlc_frame f;
        if (mlc_frame_decode(in, len, &f, &err) != MLC_OK) {
            return 0;
        }
        if (f.type == MLC_FRAME_HELLO && !c->hello_done) {
            c->hello_done = 1;
            ready++;
            connecting--;
        } else if (f.type == MLC_FRAME_PING) {
            mlc_buf_release(&c->out);
            mlc_frame_encode(MLC_FRAME_PONG, f.seq, NULL, 0, LWS_PRE, &c->out, &err);
            lws_callback_on_writable(wsi);
        }
        mlc_frame_release(&f);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        failed++;
        connecting--;
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c && c->hello_done) {
            ready--;
        }
        if (c) {
            mlc_buf_release(&c->out);
        }
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protos[] = {
    { "mlc-tunnel", cb, sizeof(struct swarm_conn), 4096, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

static void dial(int i)
{
    struct lws_client_connect_info ci;

    memset(&ci, 0, sizeof(ci));
    ci.context = ctx;
    ci.address = "127.0.0.1";
    ci.port = port;
    ci.path = "/tunnel";
    ci.host = tls ? "localhost" : "127.0.0.1";
    ci.origin = ci.host;
    ci.ssl_connection = tls ? LCCSCF_USE_SSL : 0;
    ci.protocol = "mlc-tunnel";
    ci.opaque_user_data = (void *)(intptr_t)i;
    connecting++;
    if (lws_client_connect_via_info(&ci) == NULL) {
        connecting--;
        failed++;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, 's' }, { "port", required_argument, NULL, 'p' },
        { "count", required_argument, NULL, 'n' }, { "key-file", required_argument, NULL, 'k' },
        { "tls", required_argument, NULL, 't' }, { NULL, 0, NULL, 0 },
    };
    const char *spec = NULL, *key_file = NULL, *ca_file = NULL;
    struct store_key skey;
    struct lws_context_creation_info info;
    struct mlc_errbuf err = { 0 };
    struct store *st;
    struct rlimit rl;
    int o, next = 0, announced = 0;
    static const char usage[] = "usage: tunnelswarm --store SPEC --key-file F --port P --count N [--tls CA_FILE]\n";

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's': spec = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': count = atoi(optarg); break;
        case 'k': key_file = optarg; break;
        case 't': ca_file = optarg; break;
        default: fprintf(stderr, "%s", usage); return 2;
        }
    }
    if (spec == NULL || key_file == NULL || port <= 0 || count <= 0) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    if (store_key_load(&skey, key_file, &err) != MLC_OK ||
        store_open(&st, spec, "swarm", &skey, &err) != MLC_OK) {
        fprintf(stderr, "tunnelswarm: %s\n", mlc_err_msg(&err));
        return 1;
    }
    for (int i = 0; i < count; i++) {
        struct tenant_rec t;
        char key[64];
        uint8_t h[MLC_SHA256_LEN];
        memset(&t, 0, sizeof(t));
        snprintf(t.name, sizeof(t.name), "swarm-%d", i);
        snprintf(key, sizeof(key), "swarm-key-%d", i);
        mlc_sha256(key, strlen(key), h);
        mlc_hex(h, sizeof(h), t.key_hash);
        snprintf(t.hook_secret, sizeof(t.hook_secret), "s%d", i);
        snprintf(t.zoho_token, sizeof(t.zoho_token), "z%d", i);
        if (st->ops->tenant_get(st, t.name, &t, &err) == MLC_OK) {
            continue;
        }
        mlc_err_reset(&err);
        if (st->ops->tenant_add(st, &t, &err) != MLC_OK) {
            fprintf(stderr, "tunnelswarm: adding %s: %s\n", t.name, mlc_err_msg(&err));
            return 1;
        }
    }
    st->ops->close(st);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protos;
    info.fd_limit_per_thread = (unsigned)count + 64;
    if (ca_file) {
        tls = 1;
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = ca_file;
    }
    ctx = lws_create_context(&info);
    if (ctx == NULL) {
        fprintf(stderr, "tunnelswarm: cannot create the client context\n");
        return 1;
    }
    while (!stopping) {
        struct pollfd p = { 0, POLLIN, 0 };
        /* keep at most 200 handshakes in flight */
        while (next < count && connecting < 200) {
            dial(next++);
        }
        lws_service(ctx, 0);
        if (!announced && ready + failed >= count) {
            printf("ready %d failed %d\n", ready, failed);
            fflush(stdout);
            announced = 1;
        }
        if (announced && poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP))) {
            char b[64];
            if (read(0, b, sizeof(b)) <= 0) {
                break;
            }
        }
    }
    lws_context_destroy(ctx);
    return 0;
}
