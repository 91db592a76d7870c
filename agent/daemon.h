/* SPDX-License-Identifier: Apache-2.0
 * daemon: the `mlc-agent run` loop (flows, write-back, webhooks, tunnel).
 */
#ifndef MLC_AGENT_DAEMON_H
#define MLC_AGENT_DAEMON_H

struct agent;

/* Runs until a->stop; returns the process exit status. */
int agent_daemon(struct agent *a);

#endif
