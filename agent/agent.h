/* SPDX-License-Identifier: Apache-2.0
 * agent: the loaded configuration, open systems and flows of one mlc-agent.
 */
#ifndef MLC_AGENT_H
#define MLC_AGENT_H

#include <signal.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"
#include "agent/mapping.h"
#include "agent/sched.h"
#include "agent/secrets.h"
#include "agent/state.h"

struct agent_conf {
    char *state_db;
    char *key_file;
    char *log_level;
    char *status_listen;
    char *status_password_hash; /* "" = no login (loopback only) */
    /* health thresholds (amber, red) */
    long lag_warn_s, lag_crit_s;        /* cursor behind now */
    long age_warn_s, age_crit_s;        /* oldest undelivered outbox/inbox item */
    long expiry_warn_d, expiry_crit_d;  /* days before a credential or webhook expires */
    long tunnel_warn_s, tunnel_crit_s;  /* silence on the relay tunnel */
};

/* "relay": the outbound tunnel to mlc-relay (optional: without it the agent
 * only syncs ERP -> target). */
struct relay_conf {
    char *url;         /* ws://127.0.0.1:8443/tunnel or wss://relay.example/tunnel */
    char *tenant;
    char *key;         /* agent key (a "secret:NAME" reference or ${ENV}) */
    char *hook_url;    /* public webhook base, default derived from url: https://host/hooks */
    char *hook_secret; /* admin-webhook signing secret, optional (secret:NAME) */
    char *ca_file;     /* extra CA bundle for wss, optional */
    long heartbeat_s;
    long watch_every_s;    /* how often webhook registrations are checked */
    long poll_every_s;     /* target change poll interval when no webhook can be used */
    int tls_insecure;
};

struct writeback; /* agent/writeback.h */

#define FLOW_MAX_AFTER 8 /* "after_load" entries a flow may have */

/* One entry of a flow's "after_load": a system told after each run that
 * wrote rows (its connector's end_run), e.g. to refresh a cache. */
struct after_load {
    struct conn *c;
    const cJSON *conf; /* the entry (lent from the config) */
};


struct flow {
    char *name;
    const cJSON *conf;
    const cJSON *source;   /* lent from the config */
    cJSON *target;         /* the flow's "target" object (a copy) */
    cJSON *mapped;         /* target field -> the values the mapping can produce (prep_info) */
    struct conn *src, *dst;
    struct mapping *map;
    enum sched_kind sched;
    long every_s;
    int daily_min;         /* daily: minutes after local midnight; weekly: after Sunday 00:00 */
    long long next_due;
    char *marker_prefix;
    int max_attempts;
    int batch;
    long recreate_after_s; /* an unanswered create not found yet is sent again only after this */
    long settle_after_s;   /* a write unanswered at a crash is read back no sooner than this */
    long long apply_end_ms; /* when this process's last call to the target returned (0: none) */
    int prepared;
    int enabled;           /* "enabled": false keeps the flow configured but idle */
    struct writeback *wb;  /* "writeback": target changes -> source (NULL = none) */
    struct after_load *after; /* "after_load" entries (n_after of them) */
    int n_after;
};

struct agent {
    char *config_path;
    cJSON *root;
    struct agent_conf cf;
    struct relay_conf relay;
    int has_relay;
    struct state *st;
    struct secret_store *secrets;
    struct vault vault;   /* the secret store as connectors see it */
    struct conn *conns;
    int n_conns;
    struct flow *flows;
    int n_flows;
    volatile sig_atomic_t stop;
    int progress; /* print progress to stderr (a terminal) */
    int quiet;
    /* after_load calls of several runs told once per system and entry
     * (pipeline_after_flush()): set while a pass over the flows runs */
    int after_defer;
    struct after_due *after_q;
    int n_after_q;
};

/* Parse and validate the whole config (no network, no database). */
enum mlc_rc agent_load(struct agent *a, const char *path, struct mlc_errbuf *err);
/* Open the state database, the secret store, and every connector. */
enum mlc_rc agent_open(struct agent *a, struct mlc_errbuf *err);
void agent_release(struct agent *a);
struct flow *agent_flow(struct agent *a, const char *name);

#endif
