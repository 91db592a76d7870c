/* SPDX-License-Identifier: Apache-2.0
 * writeback: changes made at a flow's target (inbox deliveries) written back
 * into its source through the source connector's write_back(), once each,
 * with echo suppression, a per-field conflict rule and an audit entry.
 *
 * One delivery goes through: parse (the target connector's event_parse, or
 * the generic JSON of a polled change) -> find the record's flow and source
 * key (ledger reverse lookup, then its marker) -> drop the agent's own
 * changes (author = writeback.agent_account) -> for each written-back field
 * that changed: its rule -> drop a change older than the newest one written
 * back -> drop a repeat of the value the agent wrote lately (echo table) ->
 * [fields: read the record; the source holds the value already: an echo;
 * the source changed it too: a conflict, decided by the field's rule] ->
 * mark in flight (durable) -> call -> commit the outcome, the audit row and
 * the echo entry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/agent.h"
#include "agent/pipeline.h"
#include "agent/writeback.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

#define WB_MAX_ROWS 200
#define WB_KEEP_MS  (7LL * 86400 * 1000) /* finished inbox rows are kept a week */
#define WB_MAX_FIELDS 8

struct wb_pair {
    char *name;
    char *tmpl; /* value with {placeholders} */
};

/* One way of writing: the source connector's compiled plan, plus how to
 * tell by reading the record back that it took effect. */
struct wb_action {
    const struct connector *ops; /* the source connector (owns plan) */
    void *plan;
    char what[160];              /* wb_describe(): the plan in a few words */
    struct wb_pair *verify;      /* source column -> expected value */
    int n_verify;
};

enum wb_rule_kind { WB_CONFLICT_SOURCE, WB_CONFLICT_TARGET, WB_CONFLICT_NEWEST };

/* A target field other than the status, written back as it is. */
struct wb_field {
    char *field;      /* the target's field name, e.g. "duedate" */
    char *column;     /* the source column the mapping reads it from */
    enum wb_rule_kind conflict;
    struct wb_action act;
};

struct wb_status {
    char *name; /* target status name, matched case-insensitively */
    char *code; /* source status code */
};

struct writeback {
    const struct mapping *map; /* the flow's (reversed for fields) */
    int has_status;
    struct wb_action status;
    struct wb_action hold;
    int has_hold;
    struct wb_status *smap;
    int n_smap;
    char **hold_statuses;
    int n_hold;
    struct wb_field fields[WB_MAX_FIELDS];
    int n_fields;
    long echo_ttl_s;
    long settle_after_s;
    enum wb_rule_kind conflict; /* the status and hold: a person's change during the write */
    char *agent_account; /* "" = unknown */
    /* run-time: after a transient failure of the source system, rows wait
     * until this time (agent clock, ms) instead of each trying it again */
    long long hold_off_ms;
};

/* ------------------------------------------------------------------ config */

struct wb_conf {
    const cJSON *verify;
    const cJSON *status_map;
    const cJSON *hold;
    const cJSON *fields;
    long echo_ttl_s;
    long settle_after_s;
    char *agent_account;
    char *conflict;
};

struct wb_hold_conf {
    const cJSON *statuses;
    const cJSON *verify;
};

struct wb_field_conf {
    const cJSON *verify;
    char *conflict;
};

static const struct conf_key wb_keys[] = {
    { "verify", CONF_JSON, offsetof(struct wb_conf, verify), NULL,
      "source column -> value once the status write took effect, e.g. {\"SRST\": \"{code}\"}: "
      "read back after a crash so a write is never repeated", 0, 0, NULL },
    { "status_map", CONF_JSON, offsetof(struct wb_conf, status_map), NULL,
      "target status name -> source status code", 0, 0, NULL },
    { "hold", CONF_JSON, offsetof(struct wb_conf, hold), NULL,
      "statuses that put the record on hold, with how to write that", 0, 0, NULL },
    { "fields", CONF_JSON, offsetof(struct wb_conf, fields), NULL,
      "other target fields written back: name -> {how to write it, \"conflict\"}", 0, 0, NULL },
    { "echo_ttl", CONF_DURATION, offsetof(struct wb_conf, echo_ttl_s), "10m",
      "how long a value the agent wrote counts as its own", 0, 7 * 86400, NULL },
    { "settle_after", CONF_DURATION, offsetof(struct wb_conf, settle_after_s), "2m",
      "how long after an unanswered call the record is read back (a request may still be "
      "running at the source until then)", 0, 86400, NULL },
    { "conflict", CONF_STR, offsetof(struct wb_conf, conflict), "target_wins",
      "when the source says a person changed the status while the agent was writing it (e.g. a "
      "412): target_wins (written over it), source_wins (the person's value stays), "
      "newest_wins (the later change)", 0, 0, NULL },
    { "agent_account", CONF_STR, offsetof(struct wb_conf, agent_account), "",
      "the target account the agent writes as: its changes are echoes", 0, 0, NULL },
    { 0 },
};

static const struct conf_key hold_keys[] = {
    { "statuses", CONF_JSON, offsetof(struct wb_hold_conf, statuses), NULL,
      "target status names that mean on hold", 0, 0, NULL },
    { "verify", CONF_JSON, offsetof(struct wb_hold_conf, verify), NULL,
      "source column -> value once the hold took effect, e.g. {\"WR10\": \"H1\"}", 0, 0, NULL },
    { 0 },
};

static const struct conf_key field_keys[] = {
    { "verify", CONF_JSON, offsetof(struct wb_field_conf, verify), NULL,
      "source column -> value once the write took effect (the field's own column is always "
      "compared)", 0, 0, NULL },
    { "conflict", CONF_STR, offsetof(struct wb_field_conf, conflict), "source_wins",
      "both sides changed the field since the last sync: source_wins, target_wins or "
      "newest_wins", 0, 0, NULL },
    { 0 },
};

static const char *const vars_status[] = { "key", "code", "status", "issue", "audit_id", NULL };
static const char *const vars_hold[] = { "key", "status", "issue", "audit_id", NULL };
static const char *const vars_field[] = { "key", "value", "issue", "audit_id", NULL };

static const char *const rule_names[] = { "source_wins", "target_wins", "newest_wins" };

/* A conflict rule by name (path.conflict for the message): 0, or -1 with err set. */
static int rule_parse(const char *name, const char *path, enum wb_rule_kind *out,
                      struct mlc_errbuf *err)
{
    for (int k = 0; k < 3; k++) {
        if (strcmp(name, rule_names[k]) == 0) {
            *out = (enum wb_rule_kind)k;
            return 0;
        }
    }
    mlc_errf(err, "%s.conflict: '%s' is not a rule (source_wins, target_wins, newest_wins)", path,
             name);
    return -1;
}

static void action_release(struct wb_action *ac)
{
    if (ac->ops != NULL && ac->ops->wb_plan_free != NULL) {
        ac->ops->wb_plan_free(ac->plan);
    }
    for (int i = 0; i < ac->n_verify; i++) {
        free(ac->verify[i].name);
        free(ac->verify[i].tmpl);
    }
    free(ac->verify);
    memset(ac, 0, sizeof(*ac));
}

/* The connector's plan for one action object, and its verify pairs. */
static int compile_action(struct wb_action *ac, const struct connector *src, const cJSON *obj,
                          const cJSON *verify, const char *const *vars, const char *path,
                          struct mlc_errbuf *err)
{
    const cJSON *it;
    char sub[320];

    ac->ops = src;
    ac->plan = src->wb_plan(obj, path, vars, err);
    if (ac->plan == NULL) {
        return -1;
    }
    if (src->wb_describe != NULL) {
        src->wb_describe(ac->plan, ac->what, sizeof(ac->what));
    } else {
        snprintf(ac->what, sizeof(ac->what), "%s write-back", src->name);
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
    ac->verify = mlc_xcalloc((size_t)cJSON_GetArraySize(verify), sizeof(*ac->verify));
    cJSON_ArrayForEach(it, verify)
    {
        snprintf(sub, sizeof(sub), "%s.verify.%s", path, it->string);
        if (it->string[0] == '\0') {
            mlc_errf(err, "%s.verify: a column name is empty", path);
            return -1;
        }
        if (!cJSON_IsString(it)) {
            mlc_errf(err, "%s: expected a string (a value or a template such as \"{code}\")", sub);
            return -1;
        }
        if (conn_tmpl_check(it->valuestring, vars, sub, err) != 0) {
            return -1;
        }
        ac->verify[ac->n_verify].name = mlc_xstrdup(it->string);
        ac->verify[ac->n_verify].tmpl = mlc_xstrdup(it->valuestring);
        ac->n_verify++;
    }
    return 0;
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
                 "%s.status_map: expected an object of target status -> source status code, "
                 "e.g. {\"In Progress\": \"40\"}",
                 path);
        return -1;
    }
    wb->smap = mlc_xcalloc((size_t)cJSON_GetArraySize(map) + 1, sizeof(*wb->smap));
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
        for (int i = 0; i < wb->n_smap; i++) {
            if (strcasecmp(wb->smap[i].name, it->string) == 0) {
                mlc_errf(err, "%s.status_map.%s: listed twice (status names ignore case)", path,
                         it->string);
                return -1;
            }
        }
        wb->smap[wb->n_smap].name = mlc_xstrdup(it->string);
        wb->smap[wb->n_smap].code = mlc_xstrdup(it->valuestring);
        wb->n_smap++;
    }
    return 0;
}

static int compile_hold(struct writeback *wb, const struct connector *src, const cJSON *hold,
                        const char *path, struct mlc_errbuf *err)
{
    struct wb_hold_conf hc = { 0 };
    char sub[300];
    const cJSON *it;
    int i = 0, rc = -1;

    snprintf(sub, sizeof(sub), "%s.hold", path);
    if (mlc_conf_load(hold, sub, hold_keys, src->wb_keys, &hc, err) != MLC_OK) {
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
        for (int k = 0; k < wb->n_smap; k++) {
            if (strcasecmp(wb->smap[k].name, it->valuestring) == 0) {
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
    if (compile_action(&wb->hold, src, hold, hc.verify, vars_hold, sub, err) != 0) {
        goto out;
    }
    wb->has_hold = 1;
    rc = 0;
out:
    mlc_conf_release(hold_keys, &hc);
    return rc;
}

static int compile_fields(struct writeback *wb, const struct connector *src, const cJSON *fields,
                          const char *path, struct mlc_errbuf *err)
{
    const cJSON *it;
    char sub[300];

    if (!cJSON_IsObject(fields)) {
        mlc_errf(err, "%s.fields: expected an object of target field -> how to write it back",
                 path);
        return -1;
    }
    cJSON_ArrayForEach(it, fields)
    {
        struct wb_field_conf fc = { 0 };
        struct wb_field *wf;
        const char *col;

        snprintf(sub, sizeof(sub), "%s.fields.%s", path, it->string);
        if (strcmp(it->string, "status") == 0) {
            mlc_errf(err, "%s: the status is written back with status_map and hold, not fields",
                     sub);
            return -1;
        }
        if (wb->n_fields == WB_MAX_FIELDS) {
            mlc_errf(err, "%s: at most %d fields are written back", sub, WB_MAX_FIELDS);
            return -1;
        }
        col = mapping_source_column(wb->map, it->string);
        if (col == NULL) {
            mlc_errf(err,
                     "%s: the flow's mapping has no rule for '%s' that can be reversed (it must "
                     "read one source column: {\"from\": COLUMN} with an optional value map or "
                     "date, no template, case or max)",
                     sub, it->string);
            return -1;
        }
        if (mlc_conf_load(it, sub, field_keys, src->wb_keys, &fc, err) != MLC_OK) {
            mlc_conf_release(field_keys, &fc);
            return -1;
        }
        wf = &wb->fields[wb->n_fields++];
        wf->field = mlc_xstrdup(it->string);
        wf->column = mlc_xstrdup(col);
        if (rule_parse(fc.conflict, sub, &wf->conflict, err) != 0) {
            mlc_conf_release(field_keys, &fc);
            return -1;
        }
        if (compile_action(&wf->act, src, it, fc.verify, vars_field, sub, err) != 0) {
            mlc_conf_release(field_keys, &fc);
            return -1;
        }
        mlc_conf_release(field_keys, &fc);
    }
    return 0;
}

struct writeback *writeback_compile(const cJSON *conf, const char *path,
                                    const struct connector *src, const struct mapping *map,
                                    struct mlc_errbuf *err)
{
    struct writeback *wb = mlc_xcalloc(1, sizeof(*wb));
    struct wb_conf wc = { 0 };
    int ok = 0;

    wb->map = map;
    if (src->wb_plan == NULL || src->write_back == NULL) {
        mlc_errf(err, "%s: a %s system takes no write-back", path, src->name);
        goto out;
    }
    if (mlc_conf_load(conf, path, wb_keys, src->wb_keys, &wc, err) != MLC_OK) {
        goto out;
    }
    if (wc.status_map != NULL) {
        if (compile_map(wb, wc.status_map, path, err) != 0 ||
            compile_action(&wb->status, src, conf, wc.verify, vars_status, path, err) != 0) {
            goto out;
        }
        wb->has_status = 1;
    }
    if (wc.hold != NULL && compile_hold(wb, src, wc.hold, path, err) != 0) {
        goto out;
    }
    if (wc.fields != NULL && compile_fields(wb, src, wc.fields, path, err) != 0) {
        goto out;
    }
    if (wb->n_smap == 0 && !wb->has_hold && wb->n_fields == 0) {
        mlc_errf(err,
                 "%s: no status_map, hold or fields: nothing would ever be written back", path);
        goto out;
    }
    wb->echo_ttl_s = wc.echo_ttl_s;
    wb->settle_after_s = wc.settle_after_s;
    if (rule_parse(wc.conflict, path, &wb->conflict, err) != 0) {
        goto out;
    }
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
    for (int i = 0; i < wb->n_smap; i++) {
        free(wb->smap[i].name);
        free(wb->smap[i].code);
    }
    free(wb->smap);
    for (int i = 0; i < wb->n_hold; i++) {
        free(wb->hold_statuses[i]);
    }
    free(wb->hold_statuses);
    for (int i = 0; i < wb->n_fields; i++) {
        free(wb->fields[i].field);
        free(wb->fields[i].column);
        action_release(&wb->fields[i].act);
    }
    free(wb->agent_account);
    free(wb);
}

/* ------------------------------------------------------------------- drain */

enum mlc_rc writeback_change_parse(const char *kind, const char *body, struct change *ch,
                                   struct mlc_errbuf *err)
{
    char typebuf[32];
    const char *type = conn_kind_type(kind, typebuf, sizeof(typebuf));
    const struct connector *ops;

    if (strcmp(type, kind) != 0) { /* "TYPE-poll": the agent's own change JSON */
        return change_from_json(body, strlen(body), ch, err);
    }
    ops = connector_find(type);
    if (ops == NULL || ops->event_parse == NULL) {
        memset(ch, 0, sizeof(*ch));
        mlc_errf(err, "no connector reads '%s' change notifications", kind);
        return MLC_E_INVAL;
    }
    return ops->event_parse(body, strlen(body), ch, err);
}

static int flow_takes(const struct flow *f, const char *type)
{
    return f->wb != NULL && f->dst != NULL && strcmp(f->dst->ops->name, type) == 0 &&
           f->src != NULL && f->src->ops->write_back != NULL;
}

/* The flow and source key of the target record: the ledger first, then the
 * record's marker. MLC_E_NOTFOUND when neither knows it. */
static enum mlc_rc find_record(struct agent *a, const char *type, const struct change *ch,
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
        rc = state_ledger_by_target(a->st, f->name, ch->record, key, n, lr, err);
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
        cJSON_ArrayForEach(lab, ch->markers)
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

/* What one row has to write: the status rule, or a field rule. */
struct wb_job {
    const struct wb_action *ac;
    const struct wb_field *fld; /* NULL: the status */
    const char *code;           /* status: the mapped code; NULL for a hold */
    const char *echo_field;     /* echo table field */
    const char *echo_value;
    const char *from, *to;      /* the target's change (to = the status name) */
    char value[256];            /* fields: the value in the source's format */
    struct wb_var vars[6];
    size_t n_vars;
    struct wb_var set[8];
    size_t n_set;
    char *set_vals[8];
};

struct wb_ctx {
    struct agent *a;
    struct wb_stats *ws;
    int stopped;
};

/* The outcome of one row, built up by its jobs. */
struct wb_row {
    const struct inbox_row *r;
    struct change ch;
    struct flow *f;
    struct ledger_row lr;
    char key[128];
    const char *state; /* strongest outcome so far */
    int marked;        /* this attempt marked the row in flight */
    char detail[1024];
};

static int state_rank(const char *s)
{
    static const char *const order[] = { "ignored", "echo", "applied", "dead", NULL };

    for (int i = 0; order[i]; i++) {
        if (s != NULL && strcmp(s, order[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static void row_note(struct wb_row *w, const char *state, const char *detail)
{
    size_t len = strlen(w->detail);

    if (state_rank(state) > state_rank(w->state)) {
        w->state = state;
    }
    snprintf(w->detail + len, sizeof(w->detail) - len, "%s%s", len ? "; " : "", detail);
}

/* Next try after a transient failure (the pipeline's retry policy). */
static long long retry_at_ms(int attempts)
{
    return state_now_ms() + pipeline_retry_delay_ms(attempts);
}

/* One finished job: an optional audit row and, when applied, the echo
 * entry, the ledger's write-back time and (fields) its refreshed hash, in
 * one commit. */
struct wb_commit {
    const char *action; /* audit action, NULL = none */
    const char *detail;
    const char *echo_field; /* applied: set */
    const char *echo_value;
    long long at_ms;
    const char *new_hash; /* fields: the ledger's content hash after the write, or NULL */
};

/* An audit row about the row's record (no key or audit id until the record
 * is known); a failure names the state database in err. */
static enum mlc_rc row_audit(struct agent *a, const struct wb_row *w, const char *flow,
                             const char *action, const char *detail, struct mlc_errbuf *err)
{
    const char *aid = w->lr.audit_id[0] ? w->lr.audit_id : NULL;
    enum mlc_rc rc = state_audit(a->st, flow, w->key[0] ? w->key : NULL, aid, action,
                                 w->ch.record, detail);

    if (rc != MLC_OK) {
        mlc_errf(err, "state database '%s': cannot write the %s audit row of delivery %lld: %s",
                 a->st->path, action, w->r->seq, sqlite3_errmsg(a->st->db));
    }
    return rc;
}

/* The job took effect (written now, or found done after a restart): what
 * its commit records, and the counts. */
static void took_effect(struct wb_commit *o, struct wb_row *w, const struct wb_job *j,
                        struct wb_stats *ws, const char *action, const char *detail)
{
    o->action = action;
    o->echo_field = j->echo_field;
    o->echo_value = j->echo_value;
    o->at_ms = w->ch.at_ms;
    ws->applied++;
    ws->settled += strcmp(action, "writeback_settled") == 0;
    row_note(w, "applied", detail);
}

static enum mlc_rc commit_job(struct agent *a, struct wb_row *w, const struct wb_commit *o,
                              struct mlc_errbuf *err)
{
    struct flow *f = w->f;
    enum mlc_rc rc = state_begin(a->st, err);

    if (rc != MLC_OK) {
        return rc;
    }
    if (o->action != NULL) {
        rc = row_audit(a, w, f->name, o->action, o->detail, err);
    }
    if (rc == MLC_OK && o->echo_field != NULL) {
        rc = state_echo_put(a->st, f->src->name, w->key, o->echo_field, o->echo_value,
                            state_now_ms() + (long long)f->wb->echo_ttl_s * 1000, err);
        if (rc == MLC_OK && o->at_ms > 0) {
            rc = state_ledger_wb_mark(a->st, f->name, w->key, o->at_ms, err);
        }
    }
    if (rc == MLC_OK && o->new_hash != NULL && w->lr.target_key[0] != '\0') {
        struct ledger_row lr = w->lr;
        snprintf(lr.hash, sizeof(lr.hash), "%s", o->new_hash);
        lr.lists = NULL;
        rc = state_ledger_put(a->st, f->name, w->key, &lr, err);
    }
    if (rc == MLC_OK) {
        rc = state_commit(a->st, err);
    }
    if (rc != MLC_OK) {
        state_rollback(a->st);
    }
    return rc;
}

/* Read the record from the source. MLC_OK with rec->data NULL: it is gone. */
static enum mlc_rc read_record(struct flow *f, const char *key, struct record *rec, char *detail,
                               size_t n, const char *why)
{
    enum mlc_rc rc;

    memset(rec, 0, sizeof(*rec));
    mlc_err_reset(&f->src->err);
    rc = f->src->ops->fetch(f->src, f->source, key, rec);
    if (rc != MLC_OK) {
        snprintf(detail, n, "reading %s %s back %s failed: %s", f->src->name, key, why,
                 f->src->err.set ? mlc_err_msg(&f->src->err) : mlc_strerror(rc));
    }
    return rc;
}

/* Whether rec holds every verify value of ac. */
static int verify_holds(const struct wb_action *ac, const struct wb_job *j, const cJSON *data)
{
    for (int i = 0; i < ac->n_verify; i++) {
        char got[256], want_t[256];
        char *want = conn_tmpl_expand(ac->verify[i].tmpl, j->vars, j->n_vars);
        snprintf(want_t, sizeof(want_t), "%s", want);
        free(want);
        mlc_strip(want_t);
        trimmed(cJSON_GetObjectItemCaseSensitive(data, ac->verify[i].name), got, sizeof(got));
        if (strcmp(got, want_t) != 0) {
            return 0;
        }
    }
    return 1;
}

/* A status action whose outcome is unknown: read the record and set *have
 * when it already holds every "verify" value. */
static enum mlc_rc read_back(struct flow *f, const struct wb_job *j, const char *key, int *have,
                             char *detail, size_t n)
{
    struct record rec;
    enum mlc_rc rc;

    *have = 0;
    if (j->ac->n_verify == 0 || f->src->ops->fetch == NULL) {
        snprintf(detail, n,
                 "%s for %s may or may not have run before the agent stopped, and the flow's "
                 "writeback has no \"verify\" to read it back: not called again (check %s %s, "
                 "then add writeback.verify: source column -> the value it gets)",
                 j->ac->what, key, f->src->name, key);
        return MLC_E_INVAL;
    }
    rc = read_record(f, key, &rec, detail, n, "to settle an unanswered write");
    if (rc != MLC_OK) {
        return rc;
    }
    if (rec.data == NULL) {
        snprintf(detail, n, "%s %s no longer exists: %s not called again", f->src->name, key,
                 j->ac->what);
        return MLC_E_NOTFOUND;
    }
    *have = verify_holds(j->ac, j, rec.data);
    record_release(&rec);
    return MLC_OK;
}

/* The field's value at the source, as the mapping gives it to the target
 * (into out), and the content hash of the whole record: as it is, and as it
 * will be once the column holds value (either hash "" when it cannot map). */
static void field_now(const struct flow *f, const struct wb_job *j, const cJSON *data, char *out,
                      size_t n, char hash_now[65], char hash_after[65])
{
    struct mlc_errbuf e = { 0 };
    cJSON *mapped = mapping_apply(f->map, data, &e), *row;

    out[0] = hash_now[0] = hash_after[0] = '\0';
    if (mapped != NULL) {
        trimmed(cJSON_GetObjectItemCaseSensitive(mapped, j->fld->field), out, n);
        pipeline_hash(mapped, hash_now);
        cJSON_Delete(mapped);
    }
    row = cJSON_Duplicate(data, 1);
    if (row == NULL) {
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(row, j->fld->column);
    mlc_json_xadd_str(row, j->fld->column, j->value);
    mapped = mapping_apply(f->map, row, &e);
    if (mapped != NULL) {
        pipeline_hash(mapped, hash_after);
        cJSON_Delete(mapped);
    }
    cJSON_Delete(row);
}

/* Outcome of one job: MLC_OK with *done set when it finished (committed),
 * MLC_OK with *done = 0 when the row must wait (left as it is, or retried
 * later: already recorded), or a state database error. */
static enum mlc_rc run_job(struct wb_ctx *cx, struct wb_row *w, struct wb_job *j, int *done,
                           struct mlc_errbuf *err)
{
    struct agent *a = cx->a;
    struct wb_stats *ws = cx->ws;
    struct flow *f = w->f;
    const struct inbox_row *r = w->r;
    const char *key = w->key;
    const char *tname = f->dst->name;
    struct wb_commit o = { 0 };
    struct record rec = { 0 };
    char detail[1024], hash_after[65] = "";
    /* in flight from an earlier attempt (marked by this one: not unanswered) */
    int inflight = strcmp(r->state, "inflight") == 0 && !w->marked;
    const char *verdict = NULL; /* conflict: what the rule decided */
    enum mlc_rc rc;

    *done = 0;
    o.detail = detail;
    if (f->wb->echo_ttl_s > 0 &&
        state_echo_has(a->st, f->src->name, key, j->echo_field, j->echo_value, state_now_ms())) {
        snprintf(detail, sizeof(detail), "%s: %s %s already has %s '%s' from the agent: echo",
                 w->ch.record, f->src->name, key, j->fld ? j->fld->field : j->code ? "status" : "the hold for",
                 j->fld ? j->to : j->code ? j->code : j->to);
        o.action = "writeback_echo";
        ws->echoes++;
        row_note(w, "echo", detail);
        goto commit;
    }
    if (state_now_ms() < f->wb->hold_off_ms) {
        return MLC_OK; /* its system failed a moment ago: the row waits with the one that failed */
    }
    if (inflight && (j->fld != NULL || j->ac->n_verify > 0) &&
        state_now_ms() < r->sent_ms + (long long)f->wb->settle_after_s * 1000) {
        /* the call that died with the agent may still be running at the
         * source: reading back now could miss it and call a second time */
        snprintf(detail, sizeof(detail), "%s for %s is unanswered: read back after settle_after (%lds)",
                 j->ac->what, key, f->wb->settle_after_s);
        ws->waiting++;
        return state_inbox_retry_later(a->st, r->seq,
                                       r->sent_ms + (long long)f->wb->settle_after_s * 1000,
                                       detail, err);
    }
    if (j->fld != NULL) {
        /* a field: read the record first. It holds the value already (our
         * own write coming back, or settled after a crash): nothing to do.
         * It differs from both the old and the new value: both sides changed
         * it since the last sync, and the field's rule decides. */
        char now[256], hash_now[65];

        if (f->src->ops->fetch == NULL) {
            snprintf(detail, sizeof(detail), "%s cannot read records back: %s not written back",
                     f->src->name, j->fld->field);
            rc = MLC_E_INVAL;
            goto failed;
        }
        rc = read_record(f, key, &rec, detail, sizeof(detail), "before writing");
        if (rc != MLC_OK) {
            goto failed;
        }
        if (rec.data == NULL) {
            snprintf(detail, sizeof(detail), "%s %s no longer exists: %s '%s' not written back",
                     f->src->name, key, j->fld->field, j->to);
            rc = MLC_E_NOTFOUND;
            goto failed;
        }
        field_now(f, j, rec.data, now, sizeof(now), hash_now, hash_after);
        if (strcmp(now, j->to) == 0 && verify_holds(j->ac, j, rec.data)) {
            snprintf(detail, sizeof(detail), "%s: %s %s already has %s '%s'%s", w->ch.record,
                     f->src->name, key, j->fld->field, j->to,
                     inflight ? " (read back after a restart): not written again" : ": echo");
            if (inflight) {
                took_effect(&o, w, j, ws, "writeback_settled", detail);
            } else {
                o.action = "writeback_echo";
                ws->echoes++;
                row_note(w, "echo", detail);
            }
            goto commit;
        }
        if (strcmp(now, j->from) != 0) {
            long long src_ms = -1;
            int write = j->fld->conflict == WB_CONFLICT_TARGET;

            if (j->fld->conflict == WB_CONFLICT_NEWEST && rec.cursor != NULL &&
                f->src->ops->cursor_time != NULL) {
                src_ms = f->src->ops->cursor_time(f->src, rec.cursor);
            }
            if (j->fld->conflict == WB_CONFLICT_NEWEST) {
                /* unknown times: the source keeps its value */
                write = w->ch.at_ms > 0 && src_ms > 0 && w->ch.at_ms > src_ms;
            }
            verdict = write ? "written back" : "not written back (the next sync carries the source's value)";
            snprintf(detail, sizeof(detail),
                     "%s of %s %s changed on both sides since the last sync: %s has '%s', %s %s "
                     "changed '%s' -> '%s'%s; rule %s: %s",
                     j->fld->field, f->src->name, key, f->src->name, now, tname, w->ch.record,
                     j->from, j->to,
                     j->fld->conflict == WB_CONFLICT_NEWEST
                         ? (src_ms > 0 && w->ch.at_ms > 0
                                ? (write ? " (the target's change is newer)"
                                         : " (the source's change is newer)")
                                : " (a change time is unknown: the source's value stays)")
                         : "",
                     rule_names[j->fld->conflict], verdict);
            rc = row_audit(a, w, f->name, "writeback_conflict", detail, err);
            if (rc != MLC_OK) {
                goto out;
            }
            ws->conflicts++;
            mlc_info("flow %s: %s", f->name, detail);
            if (!write) {
                /* the conflict row is the job's whole outcome: nothing to commit */
                row_note(w, "ignored", detail);
                ws->ignored++;
                *done = 1;
                goto out;
            }
            hash_after[0] = '\0'; /* the source changed more than this field: sync it fully */
        } else if (strcmp(hash_now, w->lr.hash) != 0) {
            hash_after[0] = '\0'; /* other changes wait for the next sync */
        }
        record_release(&rec);
    } else if (inflight) {
        /* called before, outcome unknown (a crash or a lost answer): read
         * the record back and call again only if it still differs */
        int have = 0;

        rc = read_back(f, j, key, &have, detail, sizeof(detail));
        if (rc != MLC_OK) {
            goto failed;
        }
        if (have) {
            snprintf(detail, sizeof(detail),
                     "%s for %s (%s %s '%s') had already taken effect (read back after a "
                     "restart): not called again, delivery %lld",
                     j->ac->what, key, tname, w->ch.record, j->to, r->seq);
            took_effect(&o, w, j, ws, "writeback_settled", detail);
            mlc_info("flow %s: %s", f->name, detail);
            goto commit;
        }
    }
    /* durable before the call: a crash from here on leaves the row in
     * flight, and the next attempt reads the record back first. A row in
     * flight already is marked again: its sent time is this call's, so a
     * crash during this call, too, is read back only after settle_after */
    if (!w->marked) {
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
    }
    w->marked = 1;
    {
        struct wb_write wr = { 0 };
        wr.plan = j->ac->plan;
        wr.source_key = key;
        wr.set = j->set;
        wr.n_set = j->n_set;
        wr.vars = j->vars;
        wr.n_vars = j->n_vars;
        wr.audit_id = w->lr.audit_id[0] ? w->lr.audit_id : NULL;
        wr.source = f->source;
        mlc_err_reset(&f->src->err);
        rc = f->src->ops->write_back(f->src, &wr);
    }
    if (rc == MLC_OK) {
        struct mlc_buf b = MLC_BUF_INIT;
        for (size_t i = 0; i < j->n_vars; i++) {
            if (strcmp(j->vars[i].name, "audit_id") != 0) {
                mlc_buf_addf(&b, "%s%s=%s", i ? " " : "", j->vars[i].name, j->vars[i].value);
            }
        }
        snprintf(detail, sizeof(detail), "%s, %s%s%s (%s %s '%s'), %s, delivery %lld",
                 j->ac->what, j->fld ? j->fld->field : j->code ? "code " : "hold",
                 j->fld ? " " : "", j->fld ? j->value : j->code ? j->code : "", tname,
                 w->ch.record, j->to, mlc_buf_str(&b), r->seq);
        mlc_buf_release(&b);
        took_effect(&o, w, j, ws, "writeback", detail);
        o.new_hash = hash_after[0] ? hash_after : NULL;
        mlc_info("flow %s: %s %s (audit %s): %s", f->name, f->src->name, key,
                 w->lr.audit_id[0] ? w->lr.audit_id : "-", detail);
        goto commit;
    }
    snprintf(detail, sizeof(detail), "%s", f->src->err.set ? mlc_err_msg(&f->src->err) : mlc_strerror(rc));
    if (rc == MLC_E_CONFLICT && j->fld == NULL && f->wb->conflict != WB_CONFLICT_TARGET) {
        /* the source says a person changed the record's status while the
         * agent was writing it: the flow's rule decides whether it stands */
        long long src_ms = -1;
        int write = 0;
        char why[400];

        snprintf(why, sizeof(why), "%.399s", detail);
        if (f->wb->conflict == WB_CONFLICT_NEWEST && f->src->ops->fetch != NULL &&
            f->src->ops->cursor_time != NULL &&
            read_record(f, key, &rec, detail, sizeof(detail), "after a conflict") == MLC_OK &&
            rec.cursor != NULL) {
            src_ms = f->src->ops->cursor_time(f->src, rec.cursor);
        }
        if (f->wb->conflict == WB_CONFLICT_NEWEST) {
            write = w->ch.at_ms > 0 && src_ms > 0 && w->ch.at_ms > src_ms;
        }
        if (!write) {
            snprintf(detail, sizeof(detail),
                     "%.120s for %.80s (%.40s %.40s '%.80s') not written back: the record changed in "
                     "%.40s meanwhile (%.399s); rule %s",
                     j->ac->what, key, tname, w->ch.record, j->to, f->src->name, why,
                     rule_names[f->wb->conflict]);
            record_release(&rec);
            rc = row_audit(a, w, f->name, "writeback_conflict", detail, err);
            if (rc != MLC_OK) {
                goto out;
            }
            ws->conflicts++;
            ws->ignored++;
            row_note(w, "ignored", detail);
            mlc_info("flow %s: %s", f->name, detail);
            *done = 1;
            goto out;
        }
        record_release(&rec);
        snprintf(detail, sizeof(detail), "%.399s (rule newest_wins: the %.40s change is newer, "
                 "written again)", why, tname);
    }
failed:
    record_release(&rec);
    if (rc == MLC_E_STOPPED) {
        cx->stopped = 1;
        return MLC_OK;
    }
    if (wb_transient(rc) && r->attempts + 1 < f->max_attempts) {
        char msg[1100];
        snprintf(msg, sizeof(msg), "attempt %d of %d: %s", r->attempts + 1, f->max_attempts,
                 detail);
        f->wb->hold_off_ms = retry_at_ms(r->attempts + 1);
        /* after a call, with a way to read it back, the row stays in flight
         * and is read back before the next call; a row that never reached
         * the call, or cannot be read back, is simply made again */
        rc = state_inbox_retry(a->st, r->seq, f->wb->hold_off_ms,
                               (j->fld != NULL || j->ac->n_verify) ? NULL : "pending", msg, err);
        ws->retry++;
        mlc_warn("flow %s: write-back of %s for %s failed, retrying later: %s", f->name, key,
                 w->ch.record, msg);
        return rc;
    }
    {
        char msg[sizeof(detail)];
        snprintf(msg, sizeof(msg), "%.160s for %.100s (%.60s %.60s '%.100s') failed%s: %.500s",
                 j->ac->what, key, tname, w->ch.record, j->to,
                 wb_transient(rc) ? " on every attempt" : "", detail);
        memcpy(detail, msg, sizeof(detail));
    }
    o.action = "writeback_failed";
    ws->failed++;
    row_note(w, "dead", detail);
    mlc_warn("flow %s: delivery %lld dead: %s", f->name, r->seq, detail);
commit:
    record_release(&rec);
    rc = commit_job(a, w, &o, err);
    *done = rc == MLC_OK;
out:
    record_release(&rec);
    return rc;
}

/* Placeholders and the source values a job sets. */
static void job_vars(struct wb_job *j, const char *key, const char *issue, const char *audit_id)
{
    size_t n = 0;

    j->vars[n++] = (struct wb_var){ "key", key };
    if (j->fld != NULL) {
        j->vars[n++] = (struct wb_var){ "value", j->value };
    } else {
        j->vars[n++] = (struct wb_var){ "code", j->code ? j->code : "" };
        j->vars[n++] = (struct wb_var){ "status", j->to };
    }
    j->vars[n++] = (struct wb_var){ "issue", issue };
    j->vars[n++] = (struct wb_var){ "audit_id", audit_id };
    j->n_vars = n;
    j->n_set = 0;
    if (j->fld != NULL) {
        j->set[j->n_set++] = (struct wb_var){ j->fld->column, j->value };
    }
    for (int i = 0; i < j->ac->n_verify && j->n_set < 8; i++) {
        j->set_vals[j->n_set] = conn_tmpl_expand(j->ac->verify[i].tmpl, j->vars, j->n_vars);
        j->set[j->n_set] = (struct wb_var){ j->ac->verify[i].name, j->set_vals[j->n_set] };
        j->n_set++;
    }
}

static void job_release(struct wb_job *j)
{
    for (size_t i = 0; i < 8; i++) {
        free(j->set_vals[i]);
        j->set_vals[i] = NULL;
    }
}

static enum mlc_rc handle(struct wb_ctx *cx, const struct inbox_row *r, struct mlc_errbuf *err)
{
    struct agent *a = cx->a;
    struct wb_stats *ws = cx->ws;
    struct wb_row w = { 0 };
    struct mlc_errbuf perr = { 0 };
    struct wb_job jobs[WB_MAX_FIELDS + 1];
    int n_jobs = 0, finished = 1;
    char typebuf[sizeof(r->kind)];
    const char *type = conn_kind_type(r->kind, typebuf, sizeof(typebuf));
    const char *flow_name = any_flow(a, type);
    const struct change_item *st_item;
    struct flow *f = NULL;
    enum mlc_rc rc = MLC_OK;

    memset(jobs, 0, sizeof(jobs));
    w.r = r;
    if (writeback_change_parse(r->kind, r->body, &w.ch, &perr) != MLC_OK) {
        snprintf(w.detail, sizeof(w.detail), "delivery %lld (%s): %s", r->seq, r->kind,
                 mlc_err_msg(&perr));
        w.state = "dead";
        ws->failed++;
        mlc_warn("write-back: %s", w.detail);
        rc = row_audit(a, &w, flow_name, "writeback_failed", w.detail, err);
        goto done;
    }
    if (strcmp(flow_name, "-") == 0) {
        snprintf(w.detail, sizeof(w.detail), "no flow writes %s changes back", r->kind);
        w.state = "ignored";
        ws->ignored++;
        goto done;
    }
    if (w.ch.record == NULL) {
        snprintf(w.detail, sizeof(w.detail), "not a record event (%s)",
                 w.ch.event ? w.ch.event : "no event name");
        w.state = "ignored";
        ws->ignored++;
        goto done;
    }
    rc = find_record(a, type, &w.ch, &f, w.key, sizeof(w.key), &w.lr, err);
    if (rc == MLC_E_NOTFOUND) {
        snprintf(w.detail, sizeof(w.detail),
                 "unknown record %s: no write-back flow delivered it and it carries no marker "
                 "(not written back)",
                 w.ch.record);
        w.state = "ignored";
        ws->ignored++;
        rc = row_audit(a, &w, flow_name, "writeback_ignored", w.detail, err);
        goto done;
    }
    if (rc != MLC_OK) {
        goto out;
    }
    w.f = f;
    /* the jobs: the status, then each written-back field that changed */
    st_item = change_item_find(&w.ch, "status");
    if (st_item != NULL && st_item->to[0] != '\0' && (f->wb->has_status || f->wb->has_hold)) {
        struct wb_job *j = &jobs[n_jobs];
        j->from = st_item->from;
        j->to = st_item->to;
        j->echo_field = "status";
        if (f->wb->has_hold && status_listed(f->wb->hold_statuses, f->wb->n_hold, j->to)) {
            j->ac = &f->wb->hold;
            j->echo_value = "hold";
        } else {
            for (int i = 0; i < f->wb->n_smap && j->code == NULL; i++) {
                if (strcasecmp(f->wb->smap[i].name, j->to) == 0) {
                    j->code = f->wb->smap[i].code;
                }
            }
            if (j->code != NULL && f->wb->has_status) {
                j->ac = &f->wb->status;
                j->echo_value = j->code;
            }
        }
        if (j->ac != NULL) {
            n_jobs++;
        } else {
            char msg[300];
            snprintf(msg, sizeof(msg), "%s: status '%s' is not in %s's writeback.status_map: not written back",
                     w.ch.record, j->to, f->name);
            row_note(&w, "ignored", msg);
            ws->ignored++;
            rc = row_audit(a, &w, f->name, "writeback_ignored", msg, err);
            if (rc != MLC_OK) {
                goto out;
            }
        }
    }
    for (int i = 0; i < f->wb->n_fields; i++) {
        const struct wb_field *wf = &f->wb->fields[i];
        const struct change_item *it = change_item_find(&w.ch, wf->field);
        struct wb_job *j = &jobs[n_jobs];
        struct mlc_errbuf merr = { 0 };

        if (it == NULL) {
            continue;
        }
        j->fld = wf;
        j->ac = &wf->act;
        j->from = it->from;
        j->to = it->to;
        j->echo_field = wf->field;
        j->echo_value = it->to;
        if (mapping_reverse(f->map, wf->field, it->to, j->value, sizeof(j->value), &merr) != 0) {
            char msg[600];
            snprintf(msg, sizeof(msg), "%s: %s '%s' cannot be written back: %s", w.ch.record,
                     wf->field, it->to, mlc_err_msg(&merr));
            row_note(&w, "ignored", msg);
            ws->ignored++;
            rc = row_audit(a, &w, f->name, "writeback_ignored", msg, err);
            if (rc != MLC_OK) {
                goto out;
            }
            memset(j, 0, sizeof(*j));
            continue;
        }
        n_jobs++;
    }
    if (n_jobs == 0) {
        if (w.state == NULL) {
            snprintf(w.detail, sizeof(w.detail), "%s: no written-back field changed (%s)",
                     w.ch.record, w.ch.event ? w.ch.event : "no event name");
            w.state = "ignored";
            ws->ignored++;
        }
        goto done;
    }
    if (!f->enabled) {
        snprintf(w.detail, sizeof(w.detail), "%s: flow %s is disabled (not written back)",
                 w.ch.record, f->name);
        w.state = "ignored";
        ws->ignored++;
        rc = row_audit(a, &w, f->name, "writeback_ignored", w.detail, err);
        goto done;
    }
    if (f->wb->agent_account[0] != '\0' && strcmp(w.ch.author, f->wb->agent_account) == 0) {
        snprintf(w.detail, sizeof(w.detail), "%s: changed by the agent's own account: echo",
                 w.ch.record);
        w.state = "echo";
        ws->echoes++;
        rc = row_audit(a, &w, f->name, "writeback_echo", w.detail, err);
        goto done;
    }
    if (w.ch.at_ms > 0 && w.ch.at_ms < w.lr.wb_at) {
        snprintf(w.detail, sizeof(w.detail),
                 "%s: the change of %lld is older than the change written back last (%lld): stale",
                 w.ch.record, w.ch.at_ms, w.lr.wb_at);
        w.state = "ignored";
        ws->ignored++;
        rc = row_audit(a, &w, f->name, "writeback_ignored", w.detail, err);
        goto done;
    }
    for (int i = 0; i < n_jobs && rc == MLC_OK; i++) {
        int done_one = 0;
        job_vars(&jobs[i], w.key, w.ch.record, w.lr.audit_id);
        rc = run_job(cx, &w, &jobs[i], &done_one, err);
        if (!done_one) {
            finished = 0;
            break; /* waits (retry, settle, stop): the whole row is taken again later */
        }
    }
    if (rc != MLC_OK || !finished) {
        goto out;
    }
done:
    if (rc == MLC_OK) {
        rc = state_inbox_done(a->st, r->seq, w.state ? w.state : "ignored", w.detail, err);
    }
out:
    for (int i = 0; i < n_jobs; i++) {
        job_release(&jobs[i]);
    }
    change_release(&w.ch);
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
