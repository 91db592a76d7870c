/* SPDX-License-Identifier: Apache-2.0
 * agent: load and validate the configuration; open state, secrets, systems.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

static const struct conf_key agent_keys[] = {
    { "state_db", CONF_STR, offsetof(struct agent_conf, state_db), "/var/lib/ml-connector/state.db",
      "SQLite state database", 0, 0, NULL },
    { "key_file", CONF_STR, offsetof(struct agent_conf, key_file), "/var/lib/ml-connector/secret.key",
      "AES-256 key for secrets at rest (0600)", 0, 0, NULL },
    { "log_level", CONF_STR, offsetof(struct agent_conf, log_level), "info",
      "error, warn, info or debug", 0, 0, NULL },
    { "status_listen", CONF_STR, offsetof(struct agent_conf, status_listen), "127.0.0.1:8089",
      "status page address (HOST:PORT; \"off\" disables it)", 0, 0, NULL },
    { "status_password_hash", CONF_STR, offsetof(struct agent_conf, status_password_hash), "",
      "status page login (from 'mlc-agent password-hash'); required off loopback", 0, 0, NULL },
    { "lag_warn", CONF_DURATION, offsetof(struct agent_conf, lag_warn_s), "2h",
      "health: a flow's cursor this far behind now is amber", 1, 31536000, NULL },
    { "lag_crit", CONF_DURATION, offsetof(struct agent_conf, lag_crit_s), "12h",
      "health: ... and red", 1, 31536000, NULL },
    { "age_warn", CONF_DURATION, offsetof(struct agent_conf, age_warn_s), "15m",
      "health: oldest undelivered outbox/inbox item this old is amber", 1, 31536000, NULL },
    { "age_crit", CONF_DURATION, offsetof(struct agent_conf, age_crit_s), "1h",
      "health: ... and red", 1, 31536000, NULL },
    { "expiry_warn_days", CONF_INT, offsetof(struct agent_conf, expiry_warn_d), "14",
      "health: a credential or webhook expiring within this many days is amber", 0, 3650, NULL },
    { "expiry_crit_days", CONF_INT, offsetof(struct agent_conf, expiry_crit_d), "3",
      "health: ... and red", 0, 3650, NULL },
    { "tunnel_warn", CONF_DURATION, offsetof(struct agent_conf, tunnel_warn_s), "1m",
      "health: no message from the relay for this long is amber", 1, 31536000, NULL },
    { "tunnel_crit", CONF_DURATION, offsetof(struct agent_conf, tunnel_crit_s), "5m",
      "health: ... and red", 1, 31536000, NULL },
    { 0 },
};

static const struct conf_key relay_keys[] = {
    { "url", CONF_STR, offsetof(struct relay_conf, url), NULL,
      "tunnel endpoint, ws://host:port/tunnel (loopback only) or wss://host/tunnel", 0, 0, NULL },
    { "tenant", CONF_STR, offsetof(struct relay_conf, tenant), NULL,
      "tenant name given to 'mlc-relay tenant add'", 0, 0, NULL },
    { "key", CONF_SECRET, offsetof(struct relay_conf, key), NULL,
      "agent key printed by 'mlc-relay tenant add' (secret:NAME)", 0, 0, NULL },
    { "hook_url", CONF_STR, offsetof(struct relay_conf, hook_url), "",
      "public webhook base URL (default: derived from url)", 0, 0, NULL },
    { "hook_secret", CONF_SECRET, offsetof(struct relay_conf, hook_secret), "",
      "admin-webhook signing secret printed by 'mlc-relay tenant add'", 0, 0, NULL },
    { "ca_file", CONF_STR, offsetof(struct relay_conf, ca_file), "",
      "extra CA bundle for wss://", 0, 0, NULL },
    { "heartbeat", CONF_DURATION, offsetof(struct relay_conf, heartbeat_s), "20s",
      "PING interval; the link is dead after three missed", 1, 3600, NULL },
    { "watch_every", CONF_DURATION, offsetof(struct relay_conf, watch_every_s), "6h",
      "how often webhook registrations are checked and refreshed", 1, 86400 * 5, NULL },
    { "poll_every", CONF_DURATION, offsetof(struct relay_conf, poll_every_s), "1m",
      "how often a target is polled for changes when no webhook can be used", 1, 86400, NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct relay_conf, tls_insecure), "false",
      "skip certificate checks (testing only)", 0, 0, NULL },
    { 0 },
};

static const char *const top_keys[] = { "agent", "systems", "flows", "relay", NULL };
static const char *const flow_keys[] = { "source", "target", "mapping", "schedule", "enabled",
                                         "max_attempts", "batch_size", "writeback",
                                         "recreate_after", "settle_after", "after_load", NULL };

/* "a, b, c" from a NULL-terminated list, for messages. */
static const char *join_names(const char *const *names, char *out, size_t n)
{
    size_t o = 0;

    out[0] = '\0';
    for (const char *const *p = names; *p && o < n; p++) {
        o += (size_t)snprintf(out + o, n - o, "%s%s", o ? ", " : "", *p);
    }
    return out;
}

static struct conn *find_conn(struct agent *a, const char *name)
{
    for (int i = 0; i < a->n_conns; i++) {
        if (strcmp(a->conns[i].name, name) == 0) {
            return &a->conns[i];
        }
    }
    return NULL;
}

struct flow *agent_flow(struct agent *a, const char *name)
{
    for (int i = 0; i < a->n_flows; i++) {
        if (strcmp(a->flows[i].name, name) == 0) {
            return &a->flows[i];
        }
    }
    return NULL;
}

/* One "after_load" entry at path: a system whose connector can be told of a
 * load, and only the members that connector reads. */
static enum mlc_rc load_after(struct agent *a, struct after_load *al, const cJSON *e,
                              const char *path, struct mlc_errbuf *err)
{
    const char *sys = mlc_json_str(e, "system");
    const char *unknown;
    const cJSON *it;
    char known[256];
    size_t o;

    if (!cJSON_IsObject(e)) {
        mlc_errf(err, "%s: expected an object with \"system\"", path);
        return MLC_E_INVAL;
    }
    al->c = sys ? find_conn(a, sys) : NULL;
    if (al->c == NULL) {
        mlc_errf(err, "%s.system: '%s' is not a system defined under \"systems\"", path,
                 sys ? sys : "(missing)");
        return MLC_E_INVAL;
    }
    if (al->c->ops->end_run == NULL || al->c->ops->after_keys == NULL) {
        mlc_errf(err, "%s.system: '%s' (type %s) cannot be told of a load", path, sys,
                 al->c->ops->name);
        return MLC_E_INVAL;
    }
    al->conf = e;
    cJSON_ArrayForEach(it, e)
    {
        int ok = strcmp(it->string, "system") == 0;
        for (const char *const *k = al->c->ops->after_keys; !ok && *k; k++) {
            ok = strcmp(it->string, *k) == 0;
        }
        if (!ok) {
            unknown = it->string;
            o = (size_t)snprintf(known, sizeof(known), "system");
            for (const char *const *k = al->c->ops->after_keys; *k && o < sizeof(known); k++) {
                o += (size_t)snprintf(known + o, sizeof(known) - o, ", %s", *k);
            }
            mlc_errf(err, "%s.%s: unknown setting for a %s system (known: %s)", path, unknown,
                     al->c->ops->name, known);
            return MLC_E_INVAL;
        }
    }
    if (al->c->ops->after_check != NULL) {
        return al->c->ops->after_check(e, path, err);
    }
    return MLC_OK;
}

static enum mlc_rc load_flow(struct agent *a, struct flow *f, const cJSON *fc, struct mlc_errbuf *err)
{
    char path[192], sub[256];
    const char *sys, *sched, *prefix, *unknown;
    const cJSON *it, *mapping;
    double v;

    snprintf(path, sizeof(path), "flows.%s", f->name);
    if (!cJSON_IsObject(fc)) {
        mlc_errf(err, "%s: expected an object", path);
        return MLC_E_INVAL;
    }
    unknown = mlc_conf_unknown_member(fc, NULL, flow_keys);
    if (unknown != NULL) {
        char known[256];
        mlc_errf(err, "%s.%s: unknown setting (known: %s)", path, unknown,
                 join_names(flow_keys, known, sizeof(known)));
        return MLC_E_INVAL;
    }
    f->conf = fc;
    f->source = mlc_json_obj(fc, "source");
    if (f->source == NULL) {
        mlc_errf(err, "%s.source: required object (with \"system\")", path);
        return MLC_E_INVAL;
    }
    sys = mlc_json_str(f->source, "system");
    f->src = sys ? find_conn(a, sys) : NULL;
    if (f->src == NULL) {
        mlc_errf(err, "%s.source.system: '%s' is not a system defined under \"systems\"", path,
                 sys ? sys : "(missing)");
        return MLC_E_INVAL;
    }
    if (!(f->src->ops->caps & CONN_SOURCE)) {
        mlc_errf(err, "%s.source.system: '%s' (type %s) cannot be a source", path, sys,
                 f->src->ops->name);
        return MLC_E_INVAL;
    }
    it = mlc_json_obj(fc, "target");
    if (it == NULL) {
        mlc_errf(err, "%s.target: required object (with \"system\")", path);
        return MLC_E_INVAL;
    }
    sys = mlc_json_str(it, "system");
    f->dst = sys ? find_conn(a, sys) : NULL;
    if (f->dst == NULL) {
        mlc_errf(err, "%s.target.system: '%s' is not a system defined under \"systems\"", path,
                 sys ? sys : "(missing)");
        return MLC_E_INVAL;
    }
    if (!(f->dst->ops->caps & CONN_TARGET)) {
        mlc_errf(err, "%s.target.system: '%s' (type %s) cannot be a target", path, sys,
                 f->dst->ops->name);
        return MLC_E_INVAL;
    }
    f->target = cJSON_Duplicate(it, 1);
    mapping = cJSON_GetObjectItemCaseSensitive(fc, "mapping");
    snprintf(sub, sizeof(sub), "%s.mapping", path);
    f->map = mapping_compile(mapping, sub, err);
    if (f->map == NULL) {
        return MLC_E_INVAL;
    }
    {
        /* what prepare() is told: each mapped field and the values it can take */
        int n;
        const char *const *names = mapping_fields(f->map, &n);
        f->mapped = mlc_json_xobj();
        for (int i = 0; i < n; i++) {
            cJSON *vals = mapping_values(f->map, names[i]);
            if (cJSON_GetArraySize(vals) == 0) {
                cJSON_Delete(vals);
                vals = cJSON_CreateNull();
            }
            cJSON_DeleteItemFromObjectCaseSensitive(f->mapped, names[i]);
            mlc_json_xadd(f->mapped, names[i], vals);
        }
        if (f->dst->ops->bind != NULL) {
            struct prep_info pi = { f->mapped };
            mlc_err_reset(&f->dst->err);
            if (f->dst->ops->bind(f->dst, f->target, &pi) != MLC_OK) {
                mlc_errf(err, "%s: %s", path, mlc_err_msg(&f->dst->err));
                return MLC_E_INVAL;
            }
        }
    }
    sched = mlc_json_str(fc, "schedule");
    if (cJSON_GetObjectItem(fc, "schedule") && sched == NULL) {
        mlc_errf(err, "%s.schedule: expected a string like \"every 15m\", \"daily 02:00\" or \"weekly mon 06:00\"", path);
        return MLC_E_INVAL;
    }
    {
        char why[256];
        if (sched_parse(sched ? sched : "every 15m", &f->sched, &f->every_s, &f->daily_min, why,
                        sizeof(why)) != 0) {
            mlc_errf(err, "%s.schedule: %s", path, why);
            return MLC_E_INVAL;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(fc, "enabled");
    if (it != NULL && !cJSON_IsBool(it)) {
        mlc_errf(err, "%s.enabled: expected true or false", path);
        return MLC_E_INVAL;
    }
    f->enabled = it == NULL || cJSON_IsTrue(it);
    v = mlc_json_num(fc, "max_attempts", 5);
    if (v < 1 || v > 100) {
        mlc_errf(err, "%s.max_attempts: must be between 1 and 100", path);
        return MLC_E_INVAL;
    }
    f->max_attempts = (int)v;
    {
        long most = f->dst->ops->max_batch > 0 ? (long)f->dst->ops->max_batch : 1;
        if (most > PIPELINE_MAX_BATCH) {
            most = PIPELINE_MAX_BATCH;
        }
        v = mlc_json_num(fc, "batch_size", (double)most);
        if (v < 1 || v > most) {
            mlc_errf(err, "%s.batch_size: must be between 1 and %ld (what %s '%s' takes at once)",
                     path, most, f->dst->ops->name, f->dst->name);
            return MLC_E_INVAL;
        }
    }
    f->batch = (int)v;
    it = cJSON_GetObjectItemCaseSensitive(fc, "recreate_after");
    f->recreate_after_s = 1800; /* see pipeline.c: unanswered creates */
    if (it != NULL) {
        long d = cJSON_IsString(it) ? mlc_conf_parse_duration(it->valuestring) : -1;
        if (d < 0 || d > 7L * 86400) {
            mlc_errf(err, "%s.recreate_after: expected a duration such as \"30m\" (0 to 7d)", path);
            return MLC_E_INVAL;
        }
        f->recreate_after_s = d;
    }
    it = cJSON_GetObjectItemCaseSensitive(fc, "settle_after");
    f->settle_after_s = 30; /* see pipeline.c: recover() */
    if (it != NULL) {
        long d = cJSON_IsString(it) ? mlc_conf_parse_duration(it->valuestring) : -1;
        if (d < 0 || d > 3600) {
            mlc_errf(err, "%s.settle_after: expected a duration such as \"30s\" (0 to 1h)", path);
            return MLC_E_INVAL;
        }
        f->settle_after_s = d;
    }
    prefix = mlc_json_str(f->target, "marker_prefix");
    if (prefix != NULL) {
        for (const char *p = prefix; *p; p++) {
            if (isspace((unsigned char)*p) || *p == '"') {
                mlc_errf(err, "%s.target.marker_prefix: must not contain spaces or quotes", path);
                return MLC_E_INVAL;
            }
        }
        f->marker_prefix = mlc_xstrdup(prefix);
    } else {
        f->marker_prefix = mlc_xasprintf("mlc-%s-", f->name);
    }
    it = cJSON_GetObjectItemCaseSensitive(fc, "writeback");
    if (it != NULL) {
        snprintf(sub, sizeof(sub), "%s.writeback", path);
        if (!(f->src->ops->caps & CONN_WRITEBACK)) {
            mlc_errf(err, "%s: the source system '%s' (type %s) takes no write-back", sub,
                     f->src->name, f->src->ops->name);
            return MLC_E_INVAL;
        }
        f->wb = writeback_compile(it, sub, f->src->ops, f->map, err);
        if (f->wb == NULL) {
            return MLC_E_INVAL;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(fc, "after_load");
    if (it != NULL) {
        int n = cJSON_IsArray(it) ? cJSON_GetArraySize(it) : 1;
        if (n < 1 || n > FLOW_MAX_AFTER) {
            mlc_errf(err, "%s.after_load: expected an object {\"system\": ...} or a list of 1 to %d",
                     path, FLOW_MAX_AFTER);
            return MLC_E_INVAL;
        }
        f->after = mlc_xcalloc((size_t)n, sizeof(*f->after));
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, i) : it;
            if (cJSON_IsArray(it)) {
                snprintf(sub, sizeof(sub), "%s.after_load[%d]", path, i);
            } else {
                snprintf(sub, sizeof(sub), "%s.after_load", path);
            }
            if (load_after(a, &f->after[i], e, sub, err) != MLC_OK) {
                return MLC_E_INVAL;
            }
            f->n_after = i + 1;
        }
    }
    return MLC_OK;
}

enum mlc_rc agent_load(struct agent *a, const char *path, struct mlc_errbuf *err)
{
    const cJSON *it, *systems, *flows;
    size_t len = 0;
    char *text;
    int i, lvl;

    a->config_path = mlc_xstrdup(path);
    text = mlc_read_file(path, 4u << 20, &len, err);
    if (text == NULL) {
        return MLC_E_INVAL;
    }
    a->root = mlc_json_parse(text, len, path, err);
    free(text);
    if (a->root == NULL) {
        return MLC_E_INVAL;
    }
    if (!cJSON_IsObject(a->root)) {
        mlc_errf(err, "%s: the top level must be an object with agent, systems and flows", path);
        return MLC_E_INVAL;
    }
    {
        const char *unknown = mlc_conf_unknown_member(a->root, NULL, top_keys);
        char known[64];
        if (unknown != NULL) {
            mlc_errf(err, "%s: unknown top-level section '%s' (known: %s)", path, unknown,
                     join_names(top_keys, known, sizeof(known)));
            return MLC_E_INVAL;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(a->root, "agent");
    {
        cJSON *empty = it ? NULL : mlc_json_xobj();
        enum mlc_rc rc = mlc_conf_load(it ? it : empty, "agent", agent_keys, NULL, &a->cf, err);
        cJSON_Delete(empty);
        if (rc != MLC_OK) {
            return MLC_E_INVAL;
        }
    }
    if (strcmp(a->cf.status_listen, "off") != 0) {
        const char *colon = strrchr(a->cf.status_listen, ':');
        if (colon == NULL || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
            mlc_errf(err, "agent.status_listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:8089) or \"off\"",
                     a->cf.status_listen);
            return MLC_E_INVAL;
        }
        if (!mlc_addr_is_loopback(a->cf.status_listen) && a->cf.status_password_hash[0] == '\0') {
            mlc_errf(err, "agent.status_listen: '%s' is reachable from the network, so the page needs a "
                          "login: set agent.status_password_hash (from 'mlc-agent password-hash')",
                     a->cf.status_listen);
            return MLC_E_INVAL;
        }
        if (a->cf.status_password_hash[0] != '\0' &&
            strncmp(a->cf.status_password_hash, "pbkdf2-sha256$", 14) != 0) {
            mlc_errf(err, "agent.status_password_hash: not a hash from 'mlc-agent password-hash' "
                          "(expected pbkdf2-sha256$...)");
            return MLC_E_INVAL;
        }
    }
    lvl = mlc_log_parse_level(a->cf.log_level);
    if (lvl < 0) {
        mlc_errf(err, "agent.log_level: '%s' is not one of error, warn, info, debug", a->cf.log_level);
        return MLC_E_INVAL;
    }
    if (getenv("MLC_LOG_LEVEL") == NULL) {
        mlc_log_level = lvl;
    }
    systems = mlc_json_obj(a->root, "systems");
    if (systems == NULL || cJSON_GetArraySize(systems) == 0) {
        mlc_errf(err, "systems: required object with at least one system");
        return MLC_E_INVAL;
    }
    a->n_conns = cJSON_GetArraySize(systems);
    a->conns = mlc_xcalloc((size_t)a->n_conns, sizeof(*a->conns));
    i = 0;
    cJSON_ArrayForEach(it, systems)
    {
        struct conn *c = &a->conns[i++];
        const char *type = mlc_json_str(it, "type");
        enum mlc_rc rc;
        c->name = mlc_xstrdup(it->string);
        c->conf = it;
        c->stop = (const volatile int *)&a->stop;
        c->ops = type != NULL ? connector_find(type) : NULL;
        if (c->ops == NULL) {
            size_t nk;
            const struct connector *const *all = connector_all(&nk);
            struct mlc_buf known = MLC_BUF_INIT;
            for (size_t k = 0; k < nk; k++) {
                mlc_buf_addf(&known, "%s%s", k ? ", " : "", all[k]->name);
            }
            if (type == NULL) {
                mlc_errf(err, "systems.%s.type: required (one of %s)", c->name, mlc_buf_str(&known));
            } else {
                mlc_errf(err, "systems.%s.type: unknown system type '%s' (known: %s)", c->name, type,
                         mlc_buf_str(&known));
            }
            mlc_buf_release(&known);
            return MLC_E_INVAL;
        }
        rc = c->ops->open(c);
        if (rc != MLC_OK) {
            mlc_errf(err, "%s", mlc_err_msg(&c->err));
            return rc;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(a->root, "relay");
    if (it != NULL) {
        if (mlc_conf_load(it, "relay", relay_keys, NULL, &a->relay, err) != MLC_OK) {
            return MLC_E_INVAL;
        }
        if (a->relay.url == NULL || a->relay.tenant == NULL || a->relay.key == NULL) {
            mlc_errf(err, "relay: url, tenant and key are required (from 'mlc-relay tenant add')");
            return MLC_E_INVAL;
        }
        if (strncmp(a->relay.url, "wss://", 6) != 0 && strncmp(a->relay.url, "ws://", 5) != 0) {
            mlc_errf(err, "relay.url: '%s' must start with wss:// (or ws:// on loopback)", a->relay.url);
            return MLC_E_INVAL;
        }
        a->has_relay = 1;
    }
    flows = mlc_json_obj(a->root, "flows");
    if (flows == NULL) {
        mlc_errf(err, "flows: required object (one entry per flow)");
        return MLC_E_INVAL;
    }
    a->n_flows = cJSON_GetArraySize(flows);
    a->flows = mlc_xcalloc((size_t)(a->n_flows ? a->n_flows : 1), sizeof(*a->flows));
    i = 0;
    cJSON_ArrayForEach(it, flows)
    {
        struct flow *f = &a->flows[i++];
        f->name = mlc_xstrdup(it->string);
        if (load_flow(a, f, it, err) != MLC_OK) {
            return MLC_E_INVAL;
        }
    }
    return MLC_OK;
}

enum mlc_rc agent_open(struct agent *a, struct mlc_errbuf *err)
{
    enum mlc_rc rc = state_open(&a->st, a->cf.state_db, err);

    if (rc != MLC_OK) {
        return rc;
    }
    rc = secrets_open(&a->secrets, a->st, a->cf.key_file, 1, err);
    if (rc != MLC_OK) {
        return rc;
    }
    secrets_vault(a->secrets, &a->vault);
    for (int i = 0; i < a->n_conns; i++) {
        struct conn *c = &a->conns[i];
        struct mlc_http_opts ho = { 0 };
        ho.timeout_ms = (long)(mlc_json_num(c->conf, "timeout_s", 60) * 1000);
        ho.tls_insecure = mlc_json_bool(c->conf, "tls_insecure", 0);
        c->vault = &a->vault;
        c->http = mlc_http_new(&ho);
        if (c->http == NULL) {
            mlc_errf(err, "cannot create an HTTP handle for system '%s'", c->name);
            return MLC_E_NOMEM;
        }
        if (ho.tls_insecure) {
            mlc_warn("systems.%s.tls_insecure is true: TLS certificates are NOT verified", c->name);
        }
    }
    return MLC_OK;
}

void agent_release(struct agent *a)
{
    for (int i = 0; i < a->n_flows; i++) {
        free(a->flows[i].name);
        free(a->flows[i].marker_prefix);
        cJSON_Delete(a->flows[i].target);
        cJSON_Delete(a->flows[i].mapped);
        mapping_free(a->flows[i].map);
        writeback_free(a->flows[i].wb);
        free(a->flows[i].after);
    }
    free(a->flows);
    for (int i = 0; i < a->n_conns; i++) {
        struct conn *c = &a->conns[i];
        if (c->ops && c->ops->close) {
            c->ops->close(c);
        }
        mlc_http_free(c->http);
        free(c->name);
    }
    free(a->conns);
    secrets_close(a->secrets);
    state_close(a->st);
    mlc_conf_release(agent_keys, &a->cf);
    mlc_conf_release(relay_keys, &a->relay);
    cJSON_Delete(a->root);
    free(a->config_path);
    memset(a, 0, sizeof(*a));
}
