/* SPDX-License-Identifier: Apache-2.0
 * relay: configuration and the server of mlc-relay.
 */
#ifndef MLC_RELAY_H
#define MLC_RELAY_H

#include <signal.h>
#include "relay/store.h"
#include "shared/mlc_err.h"

struct relay_cfg {
    char *listen;      /* "127.0.0.1:8443" or "0.0.0.0:443" */
    char *store;       /* "sqlite:/var/lib/ml-connector/relay.db" or a PostgreSQL conninfo */
    char *node;        /* this node's id (leases, logs); default: hostname:port */
    char *tls_cert;    /* PEM; required unless listening on loopback */
    char *tls_key;
    char *log_level;
    long max_body;     /* bytes; larger webhooks get 413 */
    long lease_s;      /* an unacked delivery is sent again after this */
    long heartbeat_s;  /* PING interval; a tunnel silent for 3x is closed */
    long window;       /* deliveries in flight per tunnel */
    long max_conns;    /* file descriptors the server may use */
    long body_timeout_s; /* a webhook body must arrive in full within this (else 408) */
    char *key_file;    /* 32-byte key sealing tenant secrets; created 0600 on first use */
};

/* Load from a JSON file (NULL path = defaults only); then apply overrides. */
enum mlc_rc relay_cfg_load(struct relay_cfg *c, const char *path, struct mlc_errbuf *err);
void relay_cfg_release(struct relay_cfg *c);

/* Run the server until *stop becomes nonzero. */
int relay_run(const struct relay_cfg *cfg, volatile sig_atomic_t *stop);

#endif
