/* SPDX-License-Identifier: Apache-2.0
 * tunnel: the agent's outbound WebSocket to mlc-relay, on its own thread.
 *
 * The thread connects (backing off with full jitter between attempts), says
 * HELLO with the tenant key, stores every DELIVER in the inbox (its own state
 * handle) before it sends the ACK, answers PINGs, and hands COMMANDs to the
 * worker's mailbox; the worker answers through tunnel_answer().
 * Nothing here touches the worker's state handle or flows.
 */
#ifndef MLC_AGENT_TUNNEL_H
#define MLC_AGENT_TUNNEL_H

#include "agent/mailbox.h"
#include "shared/mlc_err.h"

struct tunnel_opts {
    const char *url;       /* ws://127.0.0.1:8443/tunnel or wss://host/tunnel */
    const char *tenant;
    const char *key;       /* resolved agent key (not a reference) */
    const char *agent_id;  /* e.g. hostname */
    const char *state_db;  /* the tunnel thread opens its own handle */
    const char *ca_file;   /* "" = system CAs */
    int tls_insecure;
    long heartbeat_s;
    struct mailbox *mb;    /* where COMMANDs go and deliveries wake the worker */
};

struct tunnel_client;

enum mlc_rc tunnel_start(struct tunnel_client **out, const struct tunnel_opts *o, struct mlc_errbuf *err);
void tunnel_stop(struct tunnel_client *t);

/* COMMANDs reach the worker through o->mb with this as their reply: it
 * queues a STATUS answer for command id (json is copied). Any thread. */
void tunnel_answer(void *tunnel_client, long long id, const char *json);

struct tunnel_info {
    int connected;          /* HELLO answered */
    long long since_ms;     /* of the current state */
    long long deliveries;   /* stored this process */
    long long duplicates;   /* re-sent deliveries the inbox already had */
    long long reconnects;
    long long last_rx_ms;   /* any frame from the relay */
    long long rtt_ms;       /* PING -> PONG, -1 before the first */
    char last_error[200];
};
void tunnel_info(struct tunnel_client *t, struct tunnel_info *out);

#endif
