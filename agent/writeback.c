/* SPDX-License-Identifier: Apache-2.0
 * writeback: Jira status changes (inbox deliveries) written back into the
 * source system through its write_back() operation (JD Edwards: an
 * orchestration), once each, with echo suppression and an audit entry.
 *
 * One delivery goes through: parse -> find the issue's flow and source key
 * (ledger reverse lookup, then the marker label) -> drop the agent's own
 * changes (author = writeback.agent_account) -> hold / status_map -> drop a
 * change older than the newest one written back -> drop a repeat of the
 * value the agent wrote lately (echo table) -> call -> commit the outcome,
 * the audit row and the echo entry in one transaction.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/agent.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

#define WB_MAX_ROWS 200
#define WB_KEEP_MS  (7LL * 86400 * 1000) /* finished inbox rows are kept a week */

struct wb_input {
    char *name;
    char *tmpl; /* value with {placeholders} */
};

struct wb_action {
    char *orchestration;
    struct wb_input *in;
    int n_in;
    /* source column -> expected value: how to tell, by reading the record
     * back, that the action already took effect (settles an in-flight row) */
    struct wb_input *verify;
    int n_verify;
};

struct wb_status {
    char *name; /* target status name, matched case-insensitively */
    char *code; /* source status code */
};

struct writeback {
    struct wb_action status;
    struct wb_action hold;
    int has_hold;
    struct wb_status *map;
    int n_map;
    char **hold_statuses;
    int n_hold;
    long echo_ttl_s;
    long settle_after_s;
    char *agent_account; /* "" = unknown */
    /* run-time: after a transient failure of the source system, rows wait
     * until this time (agent clock, ms) instead of each trying it again */
    long long hold_off_ms;
};

/* ------------------------------------------------------------------ config */

struct wb_conf {
    char *orchestration;
    const cJSON *inputs;
    const cJSON *verify;
    const cJSON *status_map;
    const cJSON *hold;
    long echo_ttl_s;
    long settle_after_s;
    char *agent_account;
};

struct wb_hold_conf {
    const cJSON *statuses;
    char *orchestration;
    const cJSON *inputs;
    const cJSON *verify;
};

static const struct conf_key wb_keys[] = {
    { "orchestration", CONF_STR, offsetof(struct wb_conf, orchestration), NULL,
      "orchestration that sets a status, e.g. MLC_UpdateWOStatus", 0, 0, NULL },
    { "inputs", CONF_JSON, offsetof(struct wb_conf, inputs), NULL,
      "its inputs: name -> value with {key} {code} {status} {issue} {audit_id}", 0, 0, NULL },
    { "verify", CONF_JSON, offsetof(struct wb_conf, verify), NULL,
      "source column -> value once the orchestration ran, e.g. {\"SRST\": \"{code}\"}: read "
      "back after a crash so a write is never repeated", 0, 0, NULL },
    { "status_map", CONF_JSON, offsetof(struct wb_conf, status_map), NULL,
      "target status name -> source status code", 0, 0, NULL },
    { "hold", CONF_JSON, offsetof(struct wb_conf, hold), NULL,
      "statuses that put the record on hold, with their orchestration and inputs", 0, 0, NULL },
    { "echo_ttl", CONF_DURATION, offsetof(struct wb_conf, echo_ttl_s), "10m",
      "how long a value the agent wrote counts as its own", 0, 7 * 86400, NULL },
    { "settle_after", CONF_DURATION, offsetof(struct wb_conf, settle_after_s), "2m",
      "how long after an unanswered call the record is read back (a request may still be "
      "running at the source until then)", 0, 86400, NULL },
    { "agent_account", CONF_STR, offsetof(struct wb_conf, agent_account), "",
      "the target account the agent writes as (Jira accountId): its changes are echoes", 0, 0,
      NULL },
    { 0 },
};

static const struct conf_key hold_keys[] = {
    { "statuses", CONF_JSON, offsetof(struct wb_hold_conf, statuses), NULL,
      "target status names that mean on hold", 0, 0, NULL },
    { "orchestration", CONF_STR, offsetof(struct wb_hold_conf, orchestration), NULL,
      "orchestration that puts the record on hold, e.g. MLC_HoldWorkOrder", 0, 0, NULL },
    { "inputs", CONF_JSON, offsetof(struct wb_hold_conf, inputs), NULL,
      "its inputs: name -> value with {key} {status} {issue} {audit_id}", 0, 0, NULL },
    { "verify", CONF_JSON, offsetof(struct wb_hold_conf, verify), NULL,
      "source column -> value once the hold took effect, e.g. {\"WR10\": \"H1\"}", 0, 0, NULL },
    { 0 },
};

static const char *const placeholders[] = { "key", "code", "status", "issue", "audit_id", NULL };

/* Check a template: every '{' opens a known placeholder ("{{" is a literal
 * '{'). On error, a message for path in err. */
static int tmpl_check(const char *t, int allow_code, const char *path, struct mlc_errbuf *err)
{
    for (const char *p = t; *p; p++) {
        const char *end;
        size_t n;
        int known = 0;

        if (*p != '{') {
            continue;
        }
        if (p[1] == '{') {
            p++;
            continue;
        }
        end = strchr(p, '}');
        if (end == NULL) {
            mlc_errf(err, "%s: '{' without '}' in \"%s\" (write {{ for a literal brace)", path, t);
            return -1;
        }
        n = (size_t)(end - p - 1);
        for (const char *const *k = placeholders; *k && !known; k++) {
            known = strlen(*k) == n && strncmp(*k, p + 1, n) == 0;
        }
        if (!known) {
            mlc_errf(err,
                     "%s: unknown placeholder {%.*s} (known: {key}, {code}, {status}, {issue}, "
                     "{audit_id})",
                     path, (int)(n > 40 ? 40 : n), p + 1);
            return -1;
        }
        if (!allow_code && n == 4 && strncmp(p + 1, "code", 4) == 0) {
            mlc_errf(err, "%s: {code} has no value for a hold (a hold maps to no status code)",
                     path);
            return -1;
        }
        p = end;
    }
    return 0;
}

struct wb_vars {
    const char *key, *code, *status, *issue, *audit_id;
};

/* The template with its placeholders filled (heap). */
static char *tmpl_expand(const char *t, const struct wb_vars *v)
{
    struct mlc_buf b = MLC_BUF_INIT;

    for (const char *p = t; *p; p++) {
        const char *end, *val = NULL;
        size_t n;

        if (*p != '{') {
            mlc_buf_add(&b, p, 1);
            continue;
        }
        if (p[1] == '{') {
            mlc_buf_add(&b, "{", 1);
            p++;
            continue;
        }
        end = strchr(p, '}');
        if (end == NULL) {
            mlc_buf_adds(&b, p); /* compile rejects this; keep it visible if it ever happens */
            break;
        }
        n = (size_t)(end - p - 1);
        if (n == 3 && strncmp(p + 1, "key", 3) == 0) {
            val = v->key;
        } else if (n == 4 && strncmp(p + 1, "code", 4) == 0) {
            val = v->code;
        } else if (n == 6 && strncmp(p + 1, "status", 6) == 0) {
            val = v->status;
        } else if (n == 5 && strncmp(p + 1, "issue", 5) == 0) {
            val = v->issue;
        } else if (n == 8 && strncmp(p + 1, "audit_id", 8) == 0) {
            val = v->audit_id;
        }
        mlc_buf_adds(&b, val ? val : "");
        p = end;
    }
    return mlc_buf_detach(&b);
}

static void action_release(struct wb_action *ac)
{
    free(ac->orchestration);
    for (int i = 0; i < ac->n_in; i++) {
        free(ac->in[i].name);
        free(ac->in[i].tmpl);
    }
    free(ac->in);
    for (int i = 0; i < ac->n_verify; i++) {
        free(ac->verify[i].name);
        free(ac->verify[i].tmpl);
    }
    free(ac->verify);
    memset(ac, 0, sizeof(*ac));
}

/* Orchestration names go into a URL path: letters, digits, _ - . only. */
static int name_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 128) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            return 0;
        }
    }
    return 1;
}

/* name -> template pairs of one object (inputs or verify) into *out. */
static int compile_pairs(struct wb_input **out, int *n_out, const cJSON *obj, const char *what,
                         int allow_code, const char *path, struct mlc_errbuf *err)
{
    char sub[320];
    const cJSON *it;

    *out = mlc_xcalloc((size_t)cJSON_GetArraySize(obj) + 1, sizeof(**out));
    cJSON_ArrayForEach(it, obj)
    {
        snprintf(sub, sizeof(sub), "%s.%s.%s", path, what, it->string);
        if (it->string[0] == '\0') {
            mlc_errf(err, "%s.%s: a name is empty", path, what);
            return -1;
        }
        if (!cJSON_IsString(it)) {
            mlc_errf(err,
                     "%s: expected a string (text with {key}, {code}, {status}, {issue}, "
                     "{audit_id})",
                     sub);
            return -1;
        }
        if (tmpl_check(it->valuestring, allow_code, sub, err) != 0) {
            return -1;
        }
        (*out)[*n_out].name = mlc_xstrdup(it->string);
        (*out)[*n_out].tmpl = mlc_xstrdup(it->valuestring);
        (*n_out)++;
    }
    return 0;
}

static int compile_action(struct wb_action *ac, const char *orch, const cJSON *inputs,
                          const cJSON *verify, int allow_code, const char *path,
                          struct mlc_errbuf *err)
{
    if (!name_ok(orch)) {
        mlc_errf(err,
                 "%s.orchestration: '%s' is not an orchestration name (letters, digits, _ - .)",
                 path, orch ? orch : "");
        return -1;
    }
    if (!cJSON_IsObject(inputs) || cJSON_GetArraySize(inputs) == 0) {
        mlc_errf(err,
                 "%s.inputs: required object of input name -> value, e.g. {\"WorkOrder\": "
                 "\"{key}\"}",
                 path);
        return -1;
    }
    ac->orchestration = mlc_xstrdup(orch);
    if (compile_pairs(&ac->in, &ac->n_in, inputs, "inputs", allow_code, path, err) != 0) {
        return -1;
    }
    if (verify == NULL) {
        return 0;
    }
    if (!cJSON_IsObject(verify) || cJSON_GetArraySize(verify) == 0) {
        mlc_errf(err,
                 "%s.verify: expected an object of source column -> value, e.g. {\"SRST\": "
                 "\"{code}\"}",
                 path);
        return -1;
    }
    return compile_pairs(&ac->verify, &ac->n_verify, verify, "verify", allow_code, path, err);
}

static int status_listed(char **names, int n, const char *s)
{
    for (int i = 0; i < n; i++) {
        if (strcasecmp(names[i], s) == 0) {
            return 1;
        }
    }
    return 0;
}

static int compile_map(struct writeback *wb, const cJSON *map, const char *path,
                       struct mlc_errbuf *err)
{
    const cJSON *it;

    if (!cJSON_IsObject(map)) {
        mlc_errf(err,
                 "%s.status_map: required object of target status -> source status code, "
                 "e.g. {\"In Progress\": \"40\"}",
                 path);
        return -1;
    }
    wb->map = mlc_xcalloc((size_t)cJSON_GetArraySize(map) + 1, sizeof(*wb->map));
    cJSON_ArrayForEach(it, map)
    {
        if (it->string[0] == '\0') {
            mlc_errf(err, "%s.status_map: a status name is empty", path);
            return -1;
        }
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            mlc_errf(err, "%s.status_map.%s: expected a non-empty status code string, e.g. \"40\"",
                     path, it->string);
            return -1;
        }
        for (int i = 0; i < wb->n_map; i++) {
            if (strcasecmp(wb->map[i].name, it->string) == 0) {
                mlc_errf(err, "%s.status_map.%s: listed twice (status names ignore case)", path,
                         it->string);
                return -1;
            }
        }
        wb->map[wb->n_map].name = mlc_xstrdup(it->string);
        wb->map[wb->n_map].code = mlc_xstrdup(it->valuestring);
        wb->n_map++;
    }
    return 0;
}

static int compile_hold(struct writeback *wb, const cJSON *hold, const char *path,
                        struct mlc_errbuf *err)
{
    struct wb_hold_conf hc = { 0 };
    char sub[300];
    const cJSON *it;
    int i = 0, rc = -1;

    snprintf(sub, sizeof(sub), "%s.hold", path);
    if (mlc_conf_load(hold, sub, hold_keys, NULL, &hc, err) != MLC_OK) {
        goto out;
    }
    if (!cJSON_IsArray(hc.statuses) || cJSON_GetArraySize(hc.statuses) == 0) {
        mlc_errf(err, "%s.statuses: required list of target status names, e.g. [\"Blocked\"]", sub);
        goto out;
    }
    wb->hold_statuses = mlc_xcalloc((size_t)cJSON_GetArraySize(hc.statuses), sizeof(char *));
    cJSON_ArrayForEach(it, hc.statuses)
    {
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            mlc_errf(err, "%s.statuses[%d]: expected a status name string", sub, i);
            goto out;
        }
        for (int k = 0; k < wb->n_map; k++) {
            if (strcasecmp(wb->map[k].name, it->valuestring) == 0) {
                mlc_errf(err,
                         "%s.statuses[%d]: '%s' is also in status_map (a status either holds or "
                         "maps to a code)",
                         sub, i, it->valuestring);
                goto out;
            }
        }
        if (status_listed(wb->hold_statuses, wb->n_hold, it->valuestring)) {
            mlc_errf(err, "%s.statuses[%d]: '%s' is listed twice", sub, i, it->valuestring);
            goto out;
        }
        wb->hold_statuses[wb->n_hold++] = mlc_xstrdup(it->valuestring);
        i++;
    }
    if (compile_action(&wb->hold, hc.orchestration, hc.inputs, hc.verify, 0, sub, err) != 0) {
        goto out;
    }
    wb->has_hold = 1;
    rc = 0;
out:
    mlc_conf_release(hold_keys, &hc);
    return rc;
}

struct writeback *writeback_compile(const cJSON *conf, const char *path, struct mlc_errbuf *err)
{
    struct writeback *wb = mlc_xcalloc(1, sizeof(*wb));
    struct wb_conf wc = { 0 };
    int ok = 0;

    if (mlc_conf_load(conf, path, wb_keys, NULL, &wc, err) != MLC_OK) {
        goto out;
    }
    if (compile_action(&wb->status, wc.orchestration, wc.inputs, wc.verify, 1, path, err) != 0 ||
        compile_map(wb, wc.status_map, path, err) != 0) {
        goto out;
    }
    if (wc.hold != NULL && compile_hold(wb, wc.hold, path, err) != 0) {
        goto out;
    }
    if (wb->n_map == 0 && !wb->has_hold) {
        mlc_errf(err, "%s.status_map: empty and no \"hold\": nothing would ever be written back",
                 path);
        goto out;
    }
    wb->echo_ttl_s = wc.echo_ttl_s;
    wb->settle_after_s = wc.settle_after_s;
    wb->agent_account = mlc_xstrdup(wc.agent_account ? wc.agent_account : "");
    ok = 1;
out:
    mlc_conf_release(wb_keys, &wc);
    if (!ok) {
        writeback_free(wb);
        return NULL;
    }
    return wb;
}

void writeback_free(struct writeback *wb)
{
    if (wb == NULL) {
        return;
    }
    action_release(&wb->status);
    action_release(&wb->hold);
    for (int i = 0; i < wb->n_map; i++) {
        free(wb->map[i].name);
        free(wb->map[i].code);
    }
    free(wb->map);
    for (int i = 0; i < wb->n_hold; i++) {
        free(wb->hold_statuses[i]);
    }
    free(wb->hold_statuses);
    free(wb->agent_account);
    free(wb);
}

/* ------------------------------------------------------------------- drain */

/* Parse a delivery body; MLC_E_PROTO with a message when it is not JSON. */
enum mlc_rc writeback_event_parse(const char *body, struct wb_event *ev, struct mlc_errbuf *err)
{
    const cJSON *issue, *items, *it, *ts;

    memset(ev, 0, sizeof(*ev));
    ev->root = mlc_json_parse(body, strlen(body), "webhook body", err);
    if (ev->root == NULL) {
        return MLC_E_PROTO;
    }
    if (!cJSON_IsObject(ev->root)) {
        mlc_errf(err, "webhook body: not a JSON object");
        return MLC_E_PROTO;
    }
    ev->event = mlc_json_str(ev->root, "webhookEvent");
    issue = mlc_json_obj(ev->root, "issue");
    ev->issue_key = mlc_json_str(issue, "key");
    ev->labels = mlc_json_arr(mlc_json_obj(issue, "fields"), "labels");
    ev->author = mlc_json_str(mlc_json_obj(ev->root, "user"), "accountId");
    ts = cJSON_GetObjectItemCaseSensitive(ev->root, "timestamp");
    if (cJSON_IsNumber(ts) && ts->valuedouble > 0 && ts->valuedouble < 1e15) {
        ev->at_ms = (long long)ts->valuedouble;
    }
    items = mlc_json_arr(mlc_json_obj(ev->root, "changelog"), "items");
    cJSON_ArrayForEach(it, items)
    {
        const char *field = mlc_json_str(it, "field");
        const char *to = mlc_json_str(it, "toString");
        if (field != NULL && strcmp(field, "status") == 0 && to != NULL && to[0] != '\0') {
            ev->status = to; /* the last status item wins */
            ev->from = mlc_json_str(it, "fromString");
        }
    }
    return MLC_OK;
}

static int flow_takes(const struct flow *f, const char *type)
{
    return f->wb != NULL && f->dst != NULL && strcmp(f->dst->ops->name, type) == 0 &&
           f->src != NULL && f->src->ops->write_back != NULL;
}

/* The flow and source key of the target record: the ledger first, then the
 * marker label on the issue. MLC_E_NOTFOUND when neither knows it. */
static enum mlc_rc find_record(struct agent *a, const char *type, const struct wb_event *ev,
                               struct flow **fo, char *key, size_t n, struct ledger_row *lr,
                               struct mlc_errbuf *err)
{
    enum mlc_rc rc;

    for (int i = 0; i < a->n_flows; i++) {
        struct flow *f = &a->flows[i];
        if (!flow_takes(f, type)) {
            continue;
        }
        memset(lr, 0, sizeof(*lr));
        rc = state_ledger_by_target(a->st, f->name, ev->issue_key, key, n, lr, err);
        if (rc != MLC_E_NOTFOUND) {
            *fo = f;
            return rc;
        }
    }
    for (int i = 0; i < a->n_flows; i++) {
        struct flow *f = &a->flows[i];
        size_t plen = f->marker_prefix ? strlen(f->marker_prefix) : 0;
        const cJSON *lab;
        if (!flow_takes(f, type) || plen == 0) {
            continue;
        }
        cJSON_ArrayForEach(lab, ev->labels)
        {
            if (!cJSON_IsString(lab) || strncmp(lab->valuestring, f->marker_prefix, plen) != 0 ||
                lab->valuestring[plen] == '\0') {
                continue;
            }
            snprintf(key, n, "%s", lab->valuestring + plen);
            memset(lr, 0, sizeof(*lr));
            rc = state_ledger_get(a->st, f->name, key, lr, err);
            if (rc == MLC_E_NOTFOUND) {
                memset(lr, 0, sizeof(*lr)); /* delivered before the ledger knew it: no audit id */
                rc = MLC_OK;
            }
            *fo = f;
            return rc;
        }
    }
    return MLC_E_NOTFOUND;
}

/* First flow of this type (for audit rows of records no flow knows). */
static const char *any_flow(struct agent *a, const char *type)
{
    for (int i = 0; i < a->n_flows; i++) {
        if (flow_takes(&a->flows[i], type)) {
            return a->flows[i].name;
        }
    }
    return "-";
}

/* Next try after a transient failure: about 5 s, 10 s, 20 s ... 1 h, with
 * half of it random so a fleet of agents does not retry in step. */
static long long retry_at_ms(int attempts)
{
    long long d = 5000;

    for (int i = 1; i < attempts && d < 3600000; i++) {
        d *= 2;
    }
    if (d > 3600000) {
        d = 3600000;
    }
    return state_now_ms() + d / 2 + mlc_backoff_ms(0, (long)(d / 2), (long)(d / 2));
}

/* One finished row: its outcome, an optional audit row and, for an applied
 * write, the echo entry and the ledger's write-back time, in one commit. */
struct wb_outcome {
    const char *state;  /* inbox outcome */
    const char *action; /* audit action, NULL = no audit row */
    const char *flow;
    const char *key;
    const char *audit_id;
    const char *issue;
    const char *detail;
    const struct flow *applied; /* set when applied: echo + wb_at */
    const char *echo_value;
    long long at_ms;
};

static enum mlc_rc finish(struct agent *a, const struct inbox_row *r, const struct wb_outcome *o,
                          struct mlc_errbuf *err)
{
    enum mlc_rc rc = state_begin(a->st, err);

    if (rc != MLC_OK) {
        return rc;
    }
    if (o->action != NULL &&
        state_audit(a->st, o->flow, o->key, o->audit_id && o->audit_id[0] ? o->audit_id : NULL,
                    o->action, o->issue, o->detail) != MLC_OK) {
        mlc_errf(err, "state database '%s': cannot write the audit row of delivery %lld: %s",
                 a->st->path, r->seq, sqlite3_errmsg(a->st->db));
        rc = MLC_E_IO;
    }
    if (rc == MLC_OK && o->applied != NULL) {
        const struct flow *f = o->applied;
        rc = state_echo_put(a->st, f->src->name, o->key, "status", o->echo_value,
                            state_now_ms() + (long long)f->wb->echo_ttl_s * 1000, err);
        if (rc == MLC_OK && o->at_ms > 0) {
            rc = state_ledger_wb_mark(a->st, f->name, o->key, o->at_ms, err);
        }
    }
    if (rc == MLC_OK) {
        rc = state_inbox_done(a->st, r->seq, o->state, o->detail, err);
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, err);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
    }
    return rc;
}

/* Transient at the source: worth another try later (auth renewal included:
 * the connector already re-logged in once). */
static int wb_transient(enum mlc_rc rc)
{
    return mlc_rc_transient(rc) || rc == MLC_E_AUTH;
}

/* Text of a source value, without the blanks some systems pad with. */
static void trimmed(const cJSON *v, char *out, size_t n)
{
    if (v == NULL || cJSON_IsNull(v) || mlc_json_scalar_text(v, out, n) != 0) {
        out[0] = '\0';
        return;
    }
    mlc_strip(out);
}

/* An action whose outcome is unknown: read the record from the source and
 * set *have when it already holds every "verify" value. MLC_OK with *have = 0:
 * call it (again). Otherwise the reason is in detail: transient rcs may be
 * retried, others cannot be settled without a person. */
static enum mlc_rc read_back(struct flow *f, const struct wb_action *ac, const struct wb_vars *v,
                             const char *key, int *have, char *detail, size_t n)
{
    cJSON *rec = NULL;
    enum mlc_rc rc;

    *have = 0;
    if (ac->n_verify == 0 || f->src->ops->fetch == NULL) {
        snprintf(detail, n,
                 "orchestration %s for %s may or may not have run before the agent stopped, and "
                 "the flow's writeback has no \"verify\" to read it back: not called again "
                 "(check %s %s, then add writeback.verify, e.g. {\"SRST\": \"{code}\"})",
                 ac->orchestration, key, f->src->name, key);
        return MLC_E_INVAL;
    }
    mlc_err_reset(&f->src->err);
    rc = f->src->ops->fetch(f->src, f->source, key, &rec);
    if (rc != MLC_OK) {
        snprintf(detail, n, "reading %s %s back to settle orchestration %s failed: %s",
                 f->src->name, key, ac->orchestration,
                 f->src->err.set ? mlc_err_msg(&f->src->err) : mlc_strerror(rc));
        return rc;
    }
    if (rec == NULL) {
        snprintf(detail, n, "%s %s no longer exists: orchestration %s not called again",
                 f->src->name, key, ac->orchestration);
        return MLC_E_NOTFOUND;
    }
    *have = 1;
    for (int i = 0; i < ac->n_verify && *have; i++) {
        char got[256], want_t[256];
        char *want = tmpl_expand(ac->verify[i].tmpl, v);
        snprintf(want_t, sizeof(want_t), "%s", want);
        mlc_strip(want_t);
        trimmed(cJSON_GetObjectItemCaseSensitive(rec, ac->verify[i].name), got, sizeof(got));
        *have = strcmp(got, want_t) == 0;
        free(want);
    }
    cJSON_Delete(rec);
    return MLC_OK;
}

struct wb_ctx {
    struct agent *a;
    struct wb_stats *ws;
    int stopped;
};

static enum mlc_rc handle(struct wb_ctx *cx, const struct inbox_row *r, struct mlc_errbuf *err)
{
    struct agent *a = cx->a;
    struct wb_stats *ws = cx->ws;
    struct wb_outcome o = { 0 };
    struct wb_event ev;
    struct mlc_errbuf perr = { 0 };
    struct ledger_row lr = { 0 };
    struct flow *f = NULL;
    const struct wb_action *ac = NULL;
    char typebuf[sizeof(r->kind)];
    const char *type = conn_kind_type(r->kind, typebuf, sizeof(typebuf)), *code = NULL;
    const char *echo_value;
    char key[128] = "", detail[1024];
    char *inputs_text = NULL;
    cJSON *inputs = NULL;
    enum mlc_rc rc;

    o.flow = any_flow(a, type);
    o.detail = detail;
    if (writeback_event_parse(r->body, &ev, &perr) != MLC_OK) {
        snprintf(detail, sizeof(detail), "delivery %lld (%s): %s", r->seq, r->kind,
                 mlc_err_msg(&perr));
        o.state = "dead";
        o.action = "writeback_failed";
        ws->failed++;
        mlc_warn("write-back: %s", detail);
        goto done;
    }
    if (strcmp(o.flow, "-") == 0) {
        snprintf(detail, sizeof(detail), "no flow writes %s changes back", r->kind);
        o.state = "ignored";
        ws->ignored++;
        goto done;
    }
    if (ev.issue_key == NULL) {
        snprintf(detail, sizeof(detail), "not an issue event (%s)",
                 ev.event ? ev.event : "no webhookEvent");
        o.state = "ignored";
        ws->ignored++;
        goto done;
    }
    o.issue = ev.issue_key;
    if (ev.status == NULL) {
        snprintf(detail, sizeof(detail), "%s: no status change (%s)", ev.issue_key,
                 ev.event ? ev.event : "no webhookEvent");
        o.state = "ignored";
        ws->ignored++;
        goto done;
    }
    rc = find_record(a, type, &ev, &f, key, sizeof(key), &lr, err);
    if (rc == MLC_E_NOTFOUND) {
        snprintf(detail, sizeof(detail),
                 "unknown issue %s: no write-back flow delivered it and it has no marker label "
                 "(status '%s' not written back)",
                 ev.issue_key, ev.status);
        o.state = "ignored";
        o.action = "writeback_ignored";
        ws->ignored++;
        goto done;
    }
    if (rc != MLC_OK) {
        goto out;
    }
    o.flow = f->name;
    o.key = key;
    o.audit_id = lr.audit_id;
    if (!f->enabled) {
        snprintf(detail, sizeof(detail), "%s: flow %s is disabled (status '%s' not written back)",
                 ev.issue_key, f->name, ev.status);
        o.state = "ignored";
        o.action = "writeback_ignored";
        ws->ignored++;
        goto done;
    }
    if (f->wb->agent_account[0] != '\0' && ev.author != NULL &&
        strcmp(ev.author, f->wb->agent_account) == 0) {
        snprintf(detail, sizeof(detail), "%s: status '%s' set by the agent's own account: echo",
                 ev.issue_key, ev.status);
        o.state = "echo";
        o.action = "writeback_echo";
        ws->echoes++;
        goto done;
    }
    if (f->wb->has_hold && status_listed(f->wb->hold_statuses, f->wb->n_hold, ev.status)) {
        ac = &f->wb->hold;
        echo_value = "hold";
    } else {
        for (int i = 0; i < f->wb->n_map && code == NULL; i++) {
            if (strcasecmp(f->wb->map[i].name, ev.status) == 0) {
                code = f->wb->map[i].code;
            }
        }
        if (code == NULL) {
            snprintf(detail, sizeof(detail),
                     "%s: status '%s' is not in %s's writeback.status_map: not written back",
                     ev.issue_key, ev.status, f->name);
            o.state = "ignored";
            o.action = "writeback_ignored";
            ws->ignored++;
            goto done;
        }
        ac = &f->wb->status;
        echo_value = code;
    }
    if (ev.at_ms > 0 && ev.at_ms < lr.wb_at) {
        snprintf(detail, sizeof(detail),
                 "%s: status '%s' of %lld is older than the change written back last (%lld): stale",
                 ev.issue_key, ev.status, ev.at_ms, lr.wb_at);
        o.state = "ignored";
        o.action = "writeback_ignored";
        ws->ignored++;
        goto done;
    }
    if (f->wb->echo_ttl_s > 0 &&
        state_echo_has(a->st, f->src->name, key, "status", echo_value, state_now_ms())) {
        snprintf(detail, sizeof(detail), "%s: %s %s already has %s '%s' from the agent: echo",
                 ev.issue_key, f->src->name, key, code ? "status" : "the hold for",
                 code ? code : ev.status);
        o.state = "echo";
        o.action = "writeback_echo";
        ws->echoes++;
        goto done;
    }
    if (state_now_ms() < f->wb->hold_off_ms) {
        rc = MLC_OK; /* its system failed a moment ago: the row waits with the one that failed */
        goto out;
    }
    {
        struct wb_vars v = { key, code ? code : "", ev.status, ev.issue_key, lr.audit_id };
        struct wb_command cmd = { 0 };
        int have = 0;

        if (strcmp(r->state, "inflight") == 0 && ac->n_verify > 0 &&
            state_now_ms() < r->sent_ms + (long long)f->wb->settle_after_s * 1000) {
            /* the call that died with the agent may still be running at the
             * source: reading back now could miss it and call a second time */
            snprintf(detail, sizeof(detail),
                     "orchestration %s for %s is unanswered: read back after settle_after (%lds)",
                     ac->orchestration, key, f->wb->settle_after_s);
            rc = state_inbox_retry_later(a->st, r->seq,
                                         r->sent_ms + (long long)f->wb->settle_after_s * 1000,
                                         detail, err);
            ws->waiting++;
            goto out;
        }
        if (strcmp(r->state, "inflight") == 0) {
            /* called before, outcome unknown (a crash or a lost answer):
             * read the record back and call again only if it still differs */
            rc = read_back(f, ac, &v, key, &have, detail, sizeof(detail));
            if (rc == MLC_E_STOPPED) {
                cx->stopped = 1;
                rc = MLC_OK;
                goto out;
            }
            if (rc != MLC_OK && wb_transient(rc) && r->attempts + 1 < f->max_attempts) {
                f->wb->hold_off_ms = retry_at_ms(r->attempts + 1);
                rc = state_inbox_retry_later(a->st, r->seq, f->wb->hold_off_ms, detail, err);
                ws->retry++;
                mlc_warn("flow %s: %s", f->name, detail);
                goto out;
            }
            if (rc != MLC_OK) {
                o.state = "dead";
                o.action = "writeback_failed";
                ws->failed++;
                mlc_warn("flow %s: delivery %lld dead: %s", f->name, r->seq, detail);
                goto done;
            }
            if (have) {
                snprintf(detail, sizeof(detail),
                         "orchestration %s for %s (Jira %s '%s') had already taken effect "
                         "(read back after a restart): not called again, delivery %lld",
                         ac->orchestration, key, ev.issue_key, ev.status, r->seq);
                o.state = "applied";
                o.action = "writeback_settled";
                o.applied = f;
                o.echo_value = echo_value;
                o.at_ms = ev.at_ms;
                ws->applied++;
                ws->settled++;
                mlc_info("flow %s: %s", f->name, detail);
                goto done;
            }
        }
        /* durable before the call: a crash from here on leaves the row in
         * flight, and the next attempt reads the record back first */
        rc = state_begin_durable(a->st, err);
        if (rc == MLC_OK) {
            rc = state_inbox_mark_inflight(a->st, r->seq, err);
        }
        if (rc == MLC_OK) {
            rc = state_commit(a->st, err);
        }
        if (rc != MLC_OK) {
            state_rollback(a->st);
            goto out;
        }
        inputs = mlc_json_xobj();
        for (int i = 0; i < ac->n_in; i++) {
            char *val = tmpl_expand(ac->in[i].tmpl, &v);
            mlc_json_xadd_str(inputs, ac->in[i].name, val);
            free(val);
        }
        inputs_text = mlc_json_print(inputs);
        cmd.action = "orchestrate";
        cmd.source_key = key;
        cmd.name = ac->orchestration;
        cmd.inputs = inputs;
        cmd.audit_id = lr.audit_id[0] ? lr.audit_id : NULL;
        mlc_err_reset(&f->src->err);
        rc = f->src->ops->write_back(f->src, &cmd);
    }
    if (rc == MLC_OK) {
        snprintf(detail, sizeof(detail),
                 "orchestration %s, %s%s (Jira %s '%s'), inputs %s, delivery %lld",
                 ac->orchestration, code ? "code " : "hold", code ? code : "", ev.issue_key,
                 ev.status, inputs_text, r->seq);
        o.state = "applied";
        o.action = "writeback";
        o.applied = f;
        o.echo_value = echo_value;
        o.at_ms = ev.at_ms;
        ws->applied++;
        mlc_info("flow %s: %s %s (audit %s): %s", f->name, f->src->name, key,
                 lr.audit_id[0] ? lr.audit_id : "-", detail);
        goto done;
    }
    if (rc == MLC_E_STOPPED) {
        cx->stopped = 1;
        rc = MLC_OK;
        goto out;
    }
    if (wb_transient(rc) && r->attempts + 1 < f->max_attempts) {
        snprintf(detail, sizeof(detail), "attempt %d of %d: %s", r->attempts + 1, f->max_attempts,
                 mlc_err_msg(&f->src->err));
        f->wb->hold_off_ms = retry_at_ms(r->attempts + 1);
        /* with "verify" the row stays in flight and is read back before the
         * next call; without it the call is simply made again */
        rc = state_inbox_retry(a->st, r->seq, f->wb->hold_off_ms, ac->n_verify ? NULL : "pending",
                               detail, err);
        ws->retry++;
        mlc_warn("flow %s: write-back of %s for %s failed, retrying later: %s", f->name, key,
                 ev.issue_key, detail);
        goto out;
    }
    snprintf(detail, sizeof(detail), "orchestration %s for %s (Jira %s '%s') failed%s: %s",
             ac->orchestration, key, ev.issue_key, ev.status,
             wb_transient(rc) ? " on every attempt" : "",
             f->src->err.set ? mlc_err_msg(&f->src->err) : mlc_strerror(rc));
    o.state = "dead";
    o.action = "writeback_failed";
    ws->failed++;
    mlc_warn("flow %s: delivery %lld dead: %s", f->name, r->seq, detail);
done:
    rc = finish(a, r, &o, err);
out:
    free(inputs_text);
    cJSON_Delete(inputs);
    cJSON_Delete(ev.root);
    return rc;
}

enum mlc_rc writeback_drain(struct agent *a, int max, struct wb_stats *ws, struct mlc_errbuf *err)
{
    /* finished rows are pruned now and then, not on every drain */
    static long long last_prune_ms;
    struct wb_ctx cx = { 0 };
    struct inbox_row *rows;
    enum mlc_rc rc = MLC_OK;
    long long now = state_now_ms();
    int n;

    memset(ws, 0, sizeof(*ws));
    cx.a = a;
    cx.ws = ws;
    if (max <= 0) {
        return MLC_OK;
    }
    if (max > WB_MAX_ROWS) {
        max = WB_MAX_ROWS;
    }
    if (now - last_prune_ms > 3600 * 1000) {
        last_prune_ms = now;
        state_inbox_prune(a->st, now - WB_KEEP_MS);
    }
    rows = mlc_xcalloc((size_t)max, sizeof(*rows));
    n = state_inbox_next(a->st, rows, max, now);
    for (int i = 0; i < n && rc == MLC_OK && !cx.stopped && !a->stop; i++) {
        rc = handle(&cx, &rows[i], err);
    }
    for (int i = 0; i < n; i++) {
        inbox_row_release(&rows[i]);
    }
    free(rows);
    return rc;
}
