/* SPDX-License-Identifier: Apache-2.0
 * statusview: what the agent knows about its own health, as one JSON
 * snapshot (the status page, its WebSocket, `mlc-agent status`) and as
 * Prometheus text (/metrics). Built from the state database and read-only
 * views of the agent; safe on any thread with its own state handle.
 */
#ifndef MLC_AGENT_STATUSVIEW_H
#define MLC_AGENT_STATUSVIEW_H

#include <stdio.h>
#include <cjson/cJSON.h>
#include "shared/mlc_buf.h"

struct agent;
struct state;
struct tunnel_client;

/* The snapshot documented in agent/web (flows, systems, health, tunnel,
 * throughput, audit, dead letters). t may be NULL (no relay configured or
 * another process). */
cJSON *statusview_snapshot(struct agent *a, struct state *st, struct tunnel_client *t,
                           long long started_ms);
/* Audit entries matching q (source key, target key or audit id); q NULL or
 * "" = latest. */
cJSON *statusview_audit(struct state *st, const char *q, int limit);
/* Dead letters, oldest first (flow NULL = all). */
cJSON *statusview_dead(struct state *st, const char *flow, int limit);
/* Prometheus text exposition. */
void statusview_metrics(struct agent *a, struct state *st, struct tunnel_client *t, struct mlc_buf *out);
/* The terminal summary of `mlc-agent status`. */
void statusview_print(const cJSON *snap, FILE *f);

#endif
