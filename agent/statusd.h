/* SPDX-License-Identifier: Apache-2.0
 * statusd: the agent's local status page (HTTP + WebSocket on its own
 * thread and libwebsockets context). Actions go to the worker through the
 * mailbox; everything it shows comes from the state database.
 */
#ifndef MLC_AGENT_STATUSD_H
#define MLC_AGENT_STATUSD_H

#include "shared/mlc_err.h"

struct agent;
struct mailbox;
struct tunnel_client;
struct statusd;

/* Starts listening on agent.status_listen ("off": *out = NULL, MLC_OK). */
enum mlc_rc statusd_start(struct statusd **out, struct agent *a, struct mailbox *mb,
                          struct tunnel_client *t, struct mlc_errbuf *err);
void statusd_stop(struct statusd *sd);

#endif
