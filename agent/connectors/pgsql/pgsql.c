/* SPDX-License-Identifier: Apache-2.0
 * pgsql: PostgreSQL staging tables as a target (libpq).
 *
 * Each flow into this system names a table, its key columns and their SQL
 * types. apply() upserts one batch in one transaction: INSERT ... ON
 * CONFLICT (key) DO UPDATE, only where a column differs, so sending a
 * batch again (after a crash or a lost answer) changes nothing: the target
 * is CONN_UPSERT. Values are checked against their column type first; a
 * value PostgreSQL still rejects sends the batch once more row by row, each
 * in a savepoint, so only that record fails. A lost connection is a
 * transient error (the rows wait in the outbox) and the next call connects
 * again. Each run has one row in load_log, which a BI tool's cache trigger
 * can read: inserted by the run's first batch and added to by the others,
 * each in its batch's own transaction, so it never counts a row that was
 * not committed nor misses one, whenever the agent dies. init_targets() creates (or completes) the schema,
 * the tables and the reader's grants for `warehouse init`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "agent/connectors/connector.h"
#include "agent/connectors/pgsql/pgsql.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

struct pg_conf {
    char *type;
    char *dsn;
    char *password;
    char *schema;
    char *reader_role;
    long connect_timeout_s;
    long statement_timeout_s;
};

static const struct conf_key pg_keys[] = {
    { "type", CONF_STR, offsetof(struct pg_conf, type), NULL, "\"pgsql\"", 0, 0, NULL },
    { "dsn", CONF_STR, offsetof(struct pg_conf, dsn), NULL,
      "libpq conninfo without the password, e.g. \"host=db port=5432 dbname=finance "
      "user=mlc_loader\"",
      0, 0, NULL },
    { "password", CONF_SECRET, offsetof(struct pg_conf, password), "",
      "secret:NAME or ${ENV} (empty: none, e.g. a .pgpass file or peer auth)", 0, 0, NULL },
    { "schema", CONF_STR, offsetof(struct pg_conf, schema), "mlc_staging",
      "schema of the staging tables and load_log", 0, 0, NULL },
    { "reader_role", CONF_STR, offsetof(struct pg_conf, reader_role), "",
      "role the BI tool reads as: warehouse init grants it USAGE and SELECT (empty: no grants)", 0,
      0, NULL },
    { "connect_timeout_s", CONF_INT, offsetof(struct pg_conf, connect_timeout_s), "10",
      "give up connecting after this", 2, 600, NULL },
    { "statement_timeout_s", CONF_INT, offsetof(struct pg_conf, statement_timeout_s), "120",
      "longest one statement may run", 1, 86400, NULL },
    { 0 },
};

/* One table's run since its last end_run() (its counts are in load_log). */
struct pg_load {
    char table[PG_IDENT_MAX + 1];
    char started[64]; /* the database's now() at the first write */
    long long log_id; /* this run's load_log row, 0 = none yet */
    int checked;      /* check_table() passed */
};

#define PG_MAX_LOADS 64

struct pg {
    struct pg_conf cf;
    char *password; /* resolved; NULL until the first connect */
    char *user;     /* the user named in dsn, or NULL */
    PGconn *db;
    struct pg_load loads[PG_MAX_LOADS];
    int n_loads;
};

/* ---------------------------------------------------------- connection */

static void pg_drop(struct pg *p)
{
    if (p->db != NULL) {
        PQfinish(p->db);
        p->db = NULL;
    }
}

/* libpq's messages end in a newline and may span lines: one line here. */
static void one_line(const char *in, char *out, size_t n)
{
    size_t k = 0;

    for (; in != NULL && *in && k + 1 < n; in++) {
        out[k++] = (*in == '\n' || *in == '\r' || *in == '\t') ? ' ' : *in;
    }
    while (k > 0 && out[k - 1] == ' ') {
        k--;
    }
    out[k] = '\0';
}

/* The server's notices ("already exists, skipping" from warehouse init)
 * go to the debug log, not to standard error. */
static void on_notice(void *arg, const char *message)
{
    char m[300];

    one_line(message, m, sizeof(m));
    conn_log((const struct conn *)arg, MLC_LOG_DEBUG, "PostgreSQL: %s", m);
}

static enum mlc_rc pg_connect(struct conn *c)
{
    struct pg *p = c->priv;
    char ct[24], opts[64], msg[400];
    const char *kw[6], *val[6];
    int k = 0;

    if (p->db != NULL && PQstatus(p->db) == CONNECTION_OK) {
        return MLC_OK;
    }
    pg_drop(p);
    if (p->password == NULL) {
        if (p->cf.password[0] == '\0') {
            p->password = mlc_xstrdup("");
        } else if (conn_secret(c, p->cf.password, &p->password) != MLC_OK) {
            return MLC_E_AUTH;
        }
    }
    snprintf(ct, sizeof(ct), "%ld", p->cf.connect_timeout_s);
    snprintf(opts, sizeof(opts), "-c statement_timeout=%lds", p->cf.statement_timeout_s);
    kw[k] = "dbname", val[k++] = p->cf.dsn; /* expanded: the whole conninfo */
    if (p->password[0] != '\0') {
        kw[k] = "password", val[k++] = p->password;
    }
    kw[k] = "connect_timeout", val[k++] = ct;
    kw[k] = "options", val[k++] = opts;
    kw[k] = "application_name", val[k++] = "mlc-agent";
    kw[k] = NULL, val[k] = NULL;
    p->db = PQconnectdbParams(kw, val, 1);
    if (p->db == NULL || PQstatus(p->db) != CONNECTION_OK) {
        int auth;
        one_line(p->db ? PQerrorMessage(p->db) : "out of memory", msg, sizeof(msg));
        auth = strstr(msg, "authentication failed") != NULL || strstr(msg, "password") != NULL;
        mlc_errf(&c->err, "system %s: cannot connect to PostgreSQL (%s): %s; %s", c->name,
                 p->cf.dsn, msg,
                 auth ? "check the user in dsn and the password setting"
                      : "is the server up and reachable? the rows wait in the outbox and are sent "
                        "on the next run");
        pg_drop(p);
        return auth ? MLC_E_AUTH : MLC_E_NET;
    }
    PQsetClientEncoding(p->db, "UTF8");
    PQsetNoticeProcessor(p->db, on_notice, c);
    return MLC_OK;
}

/* The outcome of a failed statement as an rc, with its one-line message in
 * msg; the connection is dropped when it is gone. */
static enum mlc_rc pg_failure(struct pg *p, const PGresult *r, char *msg, size_t n)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *d = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char a[300], b[300];

    one_line(m ? m : PQerrorMessage(p->db), a, sizeof(a));
    one_line(d, b, sizeof(b));
    snprintf(msg, n, "%s%s%s%s%s", a, b[0] ? " (" : "", b, b[0] ? ")" : "",
             (PQstatus(p->db) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
              strncmp(state, "57", 2) == 0)
                 ? " (the connection is gone: the rows wait in the outbox, the next run connects "
                   "again)"
                 : "");
    if (PQstatus(p->db) != CONNECTION_OK || state == NULL) {
        pg_drop(p);
        return MLC_E_NET;
    }
    /* connection trouble, shutdown, resources, timeouts, serialization: try later */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strncmp(state, "58", 2) == 0) {
        if (strncmp(state, "57P", 3) == 0) {
            pg_drop(p);
        }
        return MLC_E_NET;
    }
    if (strcmp(state, "42501") == 0 || strncmp(state, "28", 2) == 0) {
        return MLC_E_AUTH;
    }
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
        strcmp(state, "21000") == 0) {
        return MLC_E_REJECTED; /* this data: one record at fault */
    }
    return MLC_E_INVAL; /* e.g. a missing table or column: warehouse init */
}

/* Run sql with no parameters and expect no rows; MLC_OK or the failure. */
static enum mlc_rc pg_exec(struct conn *c, const char *sql, const char *what)
{
    struct pg *p = c->priv;
    PGresult *r = PQexec(p->db, sql);
    enum mlc_rc rc = MLC_OK;

    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[700];
        rc = pg_failure(p, r, msg, sizeof(msg));
        mlc_errf(&c->err, "system %s: %s failed: %s", c->name, what, msg);
    }
    PQclear(r);
    return rc;
}

/* ---------------------------------------------------------- lifecycle */

static enum mlc_rc pg_open(struct conn *c)
{
    struct pg *p = mlc_xcalloc(1, sizeof(*p));
    char path[128];
    PQconninfoOption *opts;
    char *perr = NULL;
    enum mlc_rc rc;

    c->priv = p;
    snprintf(path, sizeof(path), "systems.%s", c->name);
    rc = mlc_conf_load(c->conf, path, pg_keys, conn_common_allow, &p->cf, &c->err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(p->cf.type, "pgsql") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"pgsql\"", path);
        return MLC_E_INVAL;
    }
    opts = PQconninfoParse(p->cf.dsn, &perr);
    if (opts == NULL) {
        char m[300];
        one_line(perr ? perr : "out of memory", m, sizeof(m));
        mlc_errf(&c->err, "%s.dsn: not a libpq conninfo string: %s", path, m);
        PQfreemem(perr);
        return MLC_E_INVAL;
    }
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "user") == 0 && o->val != NULL && p->user == NULL) {
            p->user = mlc_xstrdup(o->val);
        }
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL) {
            PQconninfoFree(opts);
            mlc_errf(&c->err,
                     "%s.dsn: holds a password; put it in %s.password instead "
                     "(\"secret:NAME\" or \"${ENV}\") so it is never logged",
                     path, path);
            return MLC_E_INVAL;
        }
    }
    PQconninfoFree(opts);
    if (pg_ident_ok(p->cf.schema) != 0) {
        mlc_errf(&c->err, "%s.schema: '%s' is not a lower-case SQL name ([a-z_][a-z0-9_]*)", path,
                 p->cf.schema);
        return MLC_E_INVAL;
    }
    if (p->cf.reader_role[0] != '\0' && pg_ident_ok(p->cf.reader_role) != 0) {
        mlc_errf(&c->err, "%s.reader_role: '%s' is not a lower-case SQL name ([a-z_][a-z0-9_]*)",
                 path, p->cf.reader_role);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

static void pg_close(struct conn *c)
{
    struct pg *p = c->priv;

    if (p == NULL) {
        return;
    }
    pg_drop(p);
    if (p->password != NULL) {
        memset(p->password, 0, strlen(p->password));
        free(p->password);
    }
    mlc_conf_release(pg_keys, &p->cf);
    free(p->user);
    free(p);
    c->priv = NULL;
}

static enum mlc_rc pg_ping(struct conn *c)
{
    struct pg *p = c->priv;
    enum mlc_rc rc = pg_connect(c);

    if (rc == MLC_OK) {
        char q[200];
        snprintf(q, sizeof(q), "SELECT 1 FROM pg_namespace WHERE nspname = '%s'", p->cf.schema);
        rc = pg_exec(c, q, "a test query");
    }
    return rc;
}

/* ---------------------------------------------------------- target */

static enum mlc_rc spec_of(struct conn *c, const cJSON *target, struct pg_table *t)
{
    char path[160];

    snprintf(path, sizeof(path), "flow target of system %s", c->name);
    return pg_table_parse(target, path, t, &c->err);
}

static enum mlc_rc pg_bind(struct conn *c, const cJSON *target, const struct prep_info *pi)
{
    struct pg_table *t = mlc_xmalloc(sizeof(*t));
    enum mlc_rc rc = spec_of(c, target, t);
    const cJSON *f;

    if (rc == MLC_OK && pi != NULL && pi->fields != NULL) {
        cJSON_ArrayForEach(f, pi->fields)
        {
            if (pg_table_col(t, f->string) < 0) {
                mlc_errf(&c->err,
                         "the mapping sets '%s', which is not a column of table %s (add it to "
                         "target.columns, then run `mlc-agent warehouse init`)",
                         f->string, t->table);
                rc = MLC_E_INVAL;
                break;
            }
        }
    }
    free(t);
    return rc;
}

static struct pg_load *load_of(struct pg *p, const char *table);

/* The table exists with every column the flow names and the agent's own. */
static enum mlc_rc check_table(struct conn *c, const struct pg_table *t)
{
    struct pg *p = c->priv;
    const char *params[2];
    PGresult *r = NULL;
    int found[PG_MAX_COLS + 3] = { 0 };
    static const char *const own[] = { "_source_key", "_audit_id", "_loaded_at" };
    struct pg_load *ld = load_of(p, t->table);
    enum mlc_rc rc = MLC_OK;

    params[0] = p->cf.schema;
    params[1] = t->table;
    r = PQexecParams(p->db,
                     "SELECT column_name FROM information_schema.columns "
                     "WHERE table_schema = $1 AND table_name = $2",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[700];
        rc = pg_failure(p, r, msg, sizeof(msg));
        mlc_errf(&c->err, "system %s: reading the columns of %s.%s failed: %s", c->name,
                 p->cf.schema, t->table, msg);
        goto out;
    }
    if (PQntuples(r) == 0) {
        mlc_errf(
            &c->err,
            "system %s: table %s.%s does not exist (or the user in dsn cannot see it): run "
            "`mlc-agent warehouse init` (or have a DBA run what `warehouse init --print` shows)",
            c->name, p->cf.schema, t->table);
        rc = MLC_E_INVAL;
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        int k = pg_table_col(t, name);
        if (k >= 0) {
            found[k] = 1;
        }
        for (int j = 0; j < 3; j++) {
            if (strcmp(name, own[j]) == 0) {
                found[t->n_cols + j] = 1;
            }
        }
    }
    for (int i = 0; i < t->n_cols + 3; i++) {
        if (!found[i]) {
            mlc_errf(&c->err,
                     "system %s: table %s.%s has no column %s: run `mlc-agent warehouse init` "
                     "(it adds missing columns and drops none)",
                     c->name, p->cf.schema, t->table,
                     i < t->n_cols ? t->cols[i].name : own[i - t->n_cols]);
            rc = MLC_E_INVAL;
            break;
        }
    }
    if (rc == MLC_OK && ld != NULL) {
        ld->checked = 1;
    }
out:
    PQclear(r);
    return rc;
}

/* A server that cannot be reached now does not stop the run: the source is
 * read into the outbox, the rows wait there, and the table is checked at
 * the first write that reaches the server. */
static enum mlc_rc pg_prepare(struct conn *c, const cJSON *target, const struct prep_info *pi)
{
    struct pg_table *t = mlc_xmalloc(sizeof(*t));
    enum mlc_rc rc = pg_bind(c, target, pi);

    if (rc == MLC_OK) {
        rc = spec_of(c, target, t);
    }
    if (rc == MLC_OK) {
        rc = pg_connect(c);
        if (rc == MLC_E_NET) {
            conn_log(c, MLC_LOG_WARN, "%s (table %s is checked at the first write)",
                     mlc_err_msg(&c->err), t->table);
            mlc_err_reset(&c->err);
            rc = MLC_OK;
        } else if (rc == MLC_OK) {
            rc = check_table(c, t);
        }
    }
    free(t);
    return rc;
}

static struct pg_load *load_of(struct pg *p, const char *table)
{
    for (int i = 0; i < p->n_loads; i++) {
        if (strcmp(p->loads[i].table, table) == 0) {
            return &p->loads[i];
        }
    }
    if (p->n_loads == PG_MAX_LOADS) {
        return NULL;
    }
    memset(&p->loads[p->n_loads], 0, sizeof(p->loads[0]));
    snprintf(p->loads[p->n_loads].table, sizeof(p->loads[0].table), "%s", table);
    return &p->loads[p->n_loads++];
}

/* One item's parameters: the columns' text (NULL = SQL NULL), then
 * _source_key and _audit_id. Strings are lent from the item or held in
 * own[] (numbers and booleans converted). */
struct row {
    const char **vals;
    char **own;
    int ok;      /* 1 while it is to be sent */
    int written; /* 1 when RETURNING named it */
    int inserted;
};

static void row_fill(const struct pg_table *t, const struct tgt_item *it, struct row *rw,
                     struct result *res)
{
    int per = t->n_cols + 2;

    rw->ok = 1;
    for (int i = 0; i < t->n_cols; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it->fields, t->cols[i].name);
        const char *s = NULL;
        char why[300];
        if (cJSON_IsString(v)) {
            s = v->valuestring[0] ? v->valuestring : NULL;
        } else if (cJSON_IsNumber(v)) {
            rw->own[i] = mlc_xasprintf("%.17g", v->valuedouble);
            if (v->valuedouble == (double)(long long)v->valuedouble) {
                free(rw->own[i]);
                rw->own[i] = mlc_xasprintf("%lld", (long long)v->valuedouble);
            }
            s = rw->own[i];
        } else if (cJSON_IsBool(v)) {
            s = cJSON_IsTrue(v) ? "true" : "false";
        } else if (v != NULL && !cJSON_IsNull(v)) {
            snprintf(res->err, sizeof(res->err), "column %s: a list or object, not a value",
                     t->cols[i].name);
            res->rc = MLC_E_REJECTED;
            rw->ok = 0;
            return;
        }
        if (s == NULL && t->cols[i].is_key) {
            snprintf(res->err, sizeof(res->err),
                     "key column %s is empty: the record cannot be stored (check the mapping)",
                     t->cols[i].name);
            res->rc = MLC_E_REJECTED;
            rw->ok = 0;
            return;
        }
        if (pg_value_check(&t->cols[i], s, why, sizeof(why)) != 0) {
            snprintf(res->err, sizeof(res->err), "column %s: %s", t->cols[i].name, why);
            res->rc = MLC_E_REJECTED;
            rw->ok = 0;
            return;
        }
        rw->vals[i] = s;
    }
    rw->vals[per - 2] = it->source_key ? it->source_key : it->marker;
    rw->vals[per - 1] = it->audit_id;
}

static void target_key_of(const struct pg_table *t, const struct row *rw, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "%s", t->table);

    for (int k = 0; k < t->n_keys && o < n; k++) {
        const char *v = rw->vals[t->keys[k]];
        o += (size_t)snprintf(out + o, n - o, "%s%s", k ? "|" : "/", v ? v : "");
    }
}

/* RETURNING named the rows written (by _source_key): mark them. */
static void take_returning(PGresult *r, struct row *rows, const int *idx, int n, int per)
{
    for (int j = 0; j < PQntuples(r); j++) {
        const char *k = PQgetvalue(r, j, 0);
        for (int i = 0; i < n; i++) {
            /* batches are small (<= 256): a scan is cheap next to the round trip */
            if (!rows[idx[i]].written && strcmp(rows[idx[i]].vals[per - 2], k) == 0) {
                rows[idx[i]].written = 1;
                rows[idx[i]].inserted = PQgetvalue(r, j, 1)[0] == 't';
                break;
            }
        }
    }
}

/* Send rows idx[0..n) as one upsert; mark which of them were written. */
static enum mlc_rc upsert(struct conn *c, const struct pg_table *t, struct row *rows,
                          const int *idx, int n, char *msg, size_t msgn)
{
    struct pg *p = c->priv;
    int per = t->n_cols + 2;
    const char **params = mlc_xcalloc((size_t)(n * per) + 1, sizeof(char *));
    struct mlc_buf sql = MLC_BUF_INIT;
    PGresult *r;
    enum mlc_rc rc = MLC_OK;

    for (int i = 0; i < n; i++) {
        memcpy(&params[i * per], rows[idx[i]].vals, (size_t)per * sizeof(char *));
    }
    pg_sql_upsert(p->cf.schema, t, (size_t)n, &sql);
    r = PQexecParams(p->db, mlc_buf_str(&sql), n * per, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_failure(p, r, msg, msgn);
    } else {
        take_returning(r, rows, idx, n, per);
    }
    PQclear(r);
    mlc_buf_release(&sql);
    free(params);
    return rc;
}

/* Send rows idx[0..n) through COPY into the session's temporary table tmp
 * and one merge into the staging table (inside the caller's transaction);
 * measured about twice as fast as the multi-row upsert for 50,000 rows. */
static enum mlc_rc copy_merge(struct conn *c, const struct pg_table *t, const char *tmp,
                              struct row *rows, const int *idx, int n, char *msg, size_t msgn)
{
    struct pg *p = c->priv;
    int per = t->n_cols + 2;
    struct mlc_buf sql = MLC_BUF_INIT, data = MLC_BUF_INIT;
    PGresult *r;
    enum mlc_rc rc = MLC_OK;

    pg_sql_temp(p->cf.schema, t, tmp, &sql);
    r = PQexec(p->db, mlc_buf_str(&sql));
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_failure(p, r, msg, msgn);
        goto out;
    }
    PQclear(r);
    mlc_buf_reset(&sql);
    pg_sql_copy(t, tmp, &sql);
    r = PQexec(p->db, mlc_buf_str(&sql));
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        rc = pg_failure(p, r, msg, msgn);
        goto out;
    }
    PQclear(r);
    for (int i = 0; i < n; i++) {
        pg_copy_row(rows[idx[i]].vals, per, &data);
    }
    if (PQputCopyData(p->db, data.ptr, (int)data.len) != 1 || PQputCopyEnd(p->db, NULL) != 1) {
        r = NULL;
        rc = pg_failure(p, r, msg, msgn);
        goto out;
    }
    r = PQgetResult(p->db);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_failure(p, r, msg, msgn);
        goto out;
    }
    PQclear(r);
    while ((r = PQgetResult(p->db)) != NULL) {
        PQclear(r);
    }
    mlc_buf_reset(&sql);
    pg_sql_merge(p->cf.schema, t, tmp, &sql);
    r = PQexec(p->db, mlc_buf_str(&sql));
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_failure(p, r, msg, msgn);
    } else {
        take_returning(r, rows, idx, n, per);
    }
out:
    PQclear(r);
    if (rc != MLC_OK && p->db != NULL) {
        while ((r = PQgetResult(p->db)) != NULL) {
            PQclear(r);
        }
    }
    mlc_buf_release(&sql);
    mlc_buf_release(&data);
    return rc;
}

/* Of the rows idx[0..n) that were not written (their content was already
 * there), which carry their own audit id: a write of an earlier try of this
 * same batch (a crash or a lost answer), to be reported as written. */
static enum mlc_rc mark_own(struct conn *c, const struct pg_table *t, struct row *rows,
                            const int *idx, int n)
{
    struct pg *p = c->priv;
    int per = t->n_cols + 2, m = 0;
    const char **params = mlc_xcalloc((size_t)n + 1, sizeof(char *));
    int *which = mlc_xcalloc((size_t)n + 1, sizeof(int));
    struct mlc_buf sql = MLC_BUF_INIT;
    PGresult *r = NULL;
    enum mlc_rc rc = MLC_OK;

    for (int i = 0; i < n; i++) {
        if (rows[idx[i]].ok && !rows[idx[i]].written && rows[idx[i]].vals[per - 1] != NULL) {
            which[m] = idx[i];
            params[m++] = rows[idx[i]].vals[per - 1];
        }
    }
    if (m > 0) {
        mlc_buf_adds(&sql, "SELECT \"_audit_id\" FROM ");
        mlc_buf_addf(&sql, "\"%s\".\"%s\" WHERE \"_audit_id\" IN (", p->cf.schema, t->table);
        for (int i = 0; i < m; i++) {
            mlc_buf_addf(&sql, "%s$%d", i ? ", " : "", i + 1);
        }
        mlc_buf_adds(&sql, ")");
        r = PQexecParams(p->db, mlc_buf_str(&sql), m, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            char msg[700];
            rc = pg_failure(p, r, msg, sizeof(msg));
            mlc_errf(&c->err, "system %s: reading back %s.%s failed: %s", c->name, p->cf.schema,
                     t->table, msg);
        } else {
            for (int j = 0; j < PQntuples(r); j++) {
                for (int i = 0; i < m; i++) {
                    if (!rows[which[i]].written && strcmp(PQgetvalue(r, j, 0), params[i]) == 0) {
                        rows[which[i]].written = 2; /* ours, from an earlier try */
                    }
                }
            }
        }
    }
    PQclear(r);
    mlc_buf_release(&sql);
    free(params);
    free(which);
    return rc;
}

/* This batch's rows into the run's load_log row, inside the batch's
 * transaction: the first batch of a run inserts the row (*log_id gets its
 * id), later ones add to it and move finished_at. */
static enum mlc_rc log_batch(struct conn *c, const struct pg_table *t, const struct pg_load *ld,
                             const char *flow, const char *started, long ins, long upd, const char *first,
                             const char *last, long long *log_id)
{
    struct pg *p = c->priv;
    char a[24], b[24], id[24], sql[400], msg[700];
    const char *params[7];
    PGresult *r;
    enum mlc_rc rc = MLC_OK;

    snprintf(a, sizeof(a), "%ld", ins);
    snprintf(b, sizeof(b), "%ld", upd);
    if (*log_id == 0) {
        params[0] = flow != NULL ? flow : t->table;
        params[1] = t->table;
        params[2] = a;
        params[3] = b;
        params[4] = ld->started[0] ? ld->started : started[0] ? started : NULL;
        params[5] = first;
        params[6] = last;
        snprintf(sql, sizeof(sql),
                 "INSERT INTO \"%s\".\"load_log\" (\"flow\", \"table_name\", \"rows_inserted\", "
                 "\"rows_updated\", \"started_at\", \"first_audit_id\", \"last_audit_id\") "
                 "VALUES ($1, $2, $3, $4, coalesce($5::timestamptz, now()), $6, $7) RETURNING \"id\"",
                 p->cf.schema);
        r = PQexecParams(p->db, sql, 7, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            *log_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        } else {
            rc = pg_failure(p, r, msg, sizeof(msg));
        }
    } else {
        snprintf(id, sizeof(id), "%lld", *log_id);
        params[0] = a;
        params[1] = b;
        params[2] = last;
        params[3] = id;
        snprintf(sql, sizeof(sql),
                 "UPDATE \"%s\".\"load_log\" SET \"rows_inserted\" = \"rows_inserted\" + $1, "
                 "\"rows_updated\" = \"rows_updated\" + $2, \"finished_at\" = now(), "
                 "\"last_audit_id\" = coalesce($3, \"last_audit_id\") WHERE \"id\" = $4",
                 p->cf.schema);
        r = PQexecParams(p->db, sql, 4, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = pg_failure(p, r, msg, sizeof(msg));
        }
    }
    if (rc != MLC_OK) {
        if (rc == MLC_E_REJECTED) {
            rc = MLC_E_INVAL; /* no load_log table or columns: not the rows' fault */
        }
        mlc_errf(&c->err, "system %s: writing the run's row into %s.load_log failed: %s%s", c->name,
                 p->cf.schema, msg, rc == MLC_E_INVAL ? " (run `mlc-agent warehouse init`)" : "");
    }
    PQclear(r);
    return rc;
}

static enum mlc_rc pg_apply(struct conn *c, const struct batch *in, struct result *out)
{
    struct pg *p = c->priv;
    struct pg_table *t = mlc_xmalloc(sizeof(*t));
    struct row *rows = NULL;
    int *idx = NULL, n = 0, per;
    enum mlc_rc rc;
    char msg[700], started[64] = "";
    struct pg_load *ld;

    if ((rc = spec_of(c, in->target, t)) != MLC_OK) {
        free(t);
        return rc;
    }
    per = t->n_cols + 2;
    rows = mlc_xcalloc(in->n + 1, sizeof(*rows));
    idx = mlc_xcalloc(in->n + 1, sizeof(int));
    for (size_t i = 0; i < in->n; i++) {
        rows[i].vals = mlc_xcalloc((size_t)per, sizeof(char *));
        rows[i].own = mlc_xcalloc((size_t)per, sizeof(char *));
        out[i].rc = MLC_OK;
        row_fill(t, &in->items[i], &rows[i], &out[i]);
        if (rows[i].ok) {
            target_key_of(t, &rows[i], out[i].target_key, sizeof(out[i].target_key));
            idx[n++] = (int)i;
        }
    }
    if (in->dry_run || n == 0) {
        rc = MLC_OK;
        goto out;
    }
    if ((rc = pg_connect(c)) != MLC_OK) {
        goto out;
    }
    ld = load_of(p, t->table);
    if (ld != NULL && !ld->checked && (rc = check_table(c, t)) != MLC_OK) {
        goto out;
    }
    if ((rc = pg_exec(c, "BEGIN", "starting a transaction")) != MLC_OK) {
        goto out;
    }
    if (ld != NULL && ld->started[0] == '\0') {
        PGresult *r = PQexec(p->db, "SELECT now()");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            snprintf(started, sizeof(started), "%s", PQgetvalue(r, 0, 0));
        }
        PQclear(r);
    }
    {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "mlc_in_%d", ld != NULL ? (int)(ld - p->loads) : PG_MAX_LOADS);
        rc = copy_merge(c, t, tmp, rows, idx, n, msg, sizeof(msg));
    }
    if (rc == MLC_E_REJECTED) {
        /* some value PostgreSQL refuses: each row on its own, in a savepoint */
        if (PQstatus(p->db) == CONNECTION_OK) {
            PQclear(PQexec(p->db, "ROLLBACK"));
        }
        if ((rc = pg_exec(c, "BEGIN", "starting a transaction")) != MLC_OK) {
            goto out;
        }
        for (int i = 0; i < n && rc == MLC_OK; i++) {
            enum mlc_rc one;
            if ((rc = pg_exec(c, "SAVEPOINT mlc_row", "a savepoint")) != MLC_OK) {
                break;
            }
            one = upsert(c, t, rows, &idx[i], 1, msg, sizeof(msg));
            if (one == MLC_E_REJECTED) {
                rows[idx[i]].ok = 0;
                out[idx[i]].rc = MLC_E_REJECTED;
                snprintf(out[idx[i]].err, sizeof(out[idx[i]].err),
                         "PostgreSQL refused the row for %s: %.400s", t->table, msg);
                rc = pg_exec(c, "ROLLBACK TO SAVEPOINT mlc_row", "rolling back a savepoint");
            } else if (one != MLC_OK) {
                rc = one;
                mlc_errf(&c->err, "system %s: writing to %s.%s failed: %s", c->name, p->cf.schema,
                         t->table, msg);
            } else {
                rc = pg_exec(c, "RELEASE SAVEPOINT mlc_row", "releasing a savepoint");
            }
        }
    } else if (rc != MLC_OK) {
        mlc_errf(&c->err, "system %s: writing %d rows to %s.%s failed: %s%s", c->name, n,
                 p->cf.schema, t->table, msg,
                 rc == MLC_E_INVAL ? " (run `mlc-agent warehouse init`?)" : "");
    }
    if (rc == MLC_OK) {
        rc = mark_own(c, t, rows, idx, n);
    }
    /* per item: written (inserted or updated), or unchanged at the target;
     * the run's load_log row moves in the same transaction, so it holds
     * exactly what is committed, also when the agent dies before the run ends */
    {
        long ins = 0, upd = 0;
        const char *first = NULL, *last = NULL;
        long long log_id = ld != NULL ? ld->log_id : 0;

        for (int i = 0; rc == MLC_OK && i < n; i++) {
            struct row *rw = &rows[idx[i]];
            const char *aid = rw->vals[per - 1];
            if (!rw->ok) {
                continue;
            }
            out[idx[i]].unchanged = rw->written == 0;
            if (rw->written == 1) {
                /* changed by this transaction (2: by an earlier try whose
                 * answer was lost, already in load_log with that try) */
                if (rw->inserted) {
                    ins++;
                } else {
                    upd++;
                }
                first = first != NULL ? first : aid;
                last = aid != NULL ? aid : last;
            }
        }
        if (rc == MLC_OK && ld != NULL && ins + upd > 0) {
            rc = log_batch(c, t, ld, in->flow, started, ins, upd, first, last, &log_id);
        }
        if (rc == MLC_OK) {
            rc = pg_exec(c, "COMMIT", "committing the batch");
        } else if (p->db != NULL && PQstatus(p->db) == CONNECTION_OK) {
            PQclear(PQexec(p->db, "ROLLBACK"));
        }
        if (rc != MLC_OK) {
            goto out;
        }
        if (ld != NULL && ins + upd > 0) {
            ld->log_id = log_id;
        }
    }
    if (ld != NULL && ld->started[0] == '\0' && started[0] != '\0') {
        snprintf(ld->started, sizeof(ld->started), "%s", started);
    }
out:
    for (size_t i = 0; i < in->n; i++) {
        for (int k = 0; rows[i].own != NULL && k < per; k++) {
            free(rows[i].own[k]);
        }
        free(rows[i].own);
        free(rows[i].vals);
    }
    free(rows);
    free(idx);
    free(t);
    return rc;
}

/* The run is over: its load_log row (written batch by batch, see
 * log_batch()) is complete; the next write starts a new one. */
static enum mlc_rc pg_end_run(struct conn *c, const cJSON *target, const struct run_totals *tot)
{
    struct pg *p = c->priv;
    struct pg_table *t = mlc_xmalloc(sizeof(*t));
    struct pg_load *ld;
    enum mlc_rc rc = spec_of(c, target, t);

    (void)tot;
    if (rc == MLC_OK && (ld = load_of(p, t->table)) != NULL) {
        ld->log_id = 0;
        ld->started[0] = '\0';
    }
    free(t);
    return rc;
}

/* ---------------------------------------------------------- warehouse init */

static enum mlc_rc pg_init_targets(struct conn *c, const cJSON *const *targets, size_t n,
                                   int print_only, struct mlc_buf *out)
{
    struct pg *p = c->priv;
    struct pg_table *t = mlc_xmalloc(sizeof(*t));
    struct mlc_buf sql = MLC_BUF_INIT;
    enum mlc_rc rc = MLC_OK;

    pg_sql_schema_ddl(p->cf.schema, &sql);
    pg_sql_load_log_ddl(p->cf.schema, &sql);
    for (size_t i = 0; i < n && rc == MLC_OK; i++) {
        rc = spec_of(c, targets[i], t);
        if (rc == MLC_OK) {
            pg_sql_table_ddl(p->cf.schema, t, &sql);
        }
    }
    if (rc == MLC_OK && p->cf.reader_role[0] != '\0') {
        pg_sql_grants(p->cf.schema, p->cf.reader_role, &sql);
    }
    free(t);
    if (rc != MLC_OK) {
        mlc_buf_release(&sql);
        return rc;
    }
    mlc_buf_addf(
        out,
        "-- system %s: staging schema %s, %zu table%s and load_log (mlc-agent warehouse init)\n"
        "-- Run as the loading user (the user in dsn) so that it owns the tables; safe to\n"
        "-- run again: it creates what is missing and adds missing columns, drops nothing.\n",
        c->name, p->cf.schema, n, n == 1 ? "" : "s");
    if (p->user != NULL && pg_ident_ok(p->user) == 0) {
        mlc_buf_addf(out,
                     "-- A DBA running it as another role (a superuser) first makes the loader\n"
                     "-- the owner of what it creates:\n"
                     "--   SET ROLE %s;   -- the loader needs CREATE on the database\n",
                     p->user);
    }
    if (p->cf.reader_role[0] != '\0') {
        mlc_buf_addf(out,
                     "-- The reader role must exist first; a DBA creates it once, e.g.\n"
                     "--   CREATE ROLE %s LOGIN PASSWORD '...';\n"
                     "--   GRANT CONNECT ON DATABASE <database> TO %s;\n",
                     p->cf.reader_role, p->cf.reader_role);
    }
    mlc_buf_adds(out, "BEGIN;\n");
    mlc_buf_adds(out, mlc_buf_str(&sql));
    mlc_buf_adds(out, "COMMIT;\n");
    if (print_only) {
        mlc_buf_release(&sql);
        return MLC_OK;
    }
    if ((rc = pg_connect(c)) != MLC_OK) {
        mlc_buf_release(&sql);
        return rc;
    }
    if (p->cf.reader_role[0] != '\0') {
        const char *params[1] = { p->cf.reader_role };
        PGresult *r = PQexecParams(p->db, "SELECT 1 FROM pg_roles WHERE rolname = $1", 1, NULL,
                                   params, NULL, NULL, 0);
        int have = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            char msg[700];
            rc = pg_failure(p, r, msg, sizeof(msg));
            mlc_errf(&c->err, "system %s: looking up role %s failed: %s", c->name,
                     p->cf.reader_role, msg);
        } else if (!have) {
            mlc_errf(&c->err,
                     "system %s: reader_role '%s' does not exist: the agent does not create roles "
                     "(its user should not have CREATEROLE); have a DBA run CREATE ROLE %s LOGIN "
                     "PASSWORD '...' (the user Looker connects as), then run warehouse init again",
                     c->name, p->cf.reader_role, p->cf.reader_role);
            rc = MLC_E_INVAL;
        }
        PQclear(r);
    }
    if (rc == MLC_OK) {
        /* one PQexec of several statements is one transaction: all or nothing */
        rc = pg_exec(c, mlc_buf_str(&sql), "creating the staging schema and tables");
    }
    mlc_buf_release(&sql);
    return rc;
}

const struct connector connector_pgsql = {
    .name = "pgsql",
    .caps = CONN_TARGET | CONN_UPSERT,
    .max_batch = 256,
    .keys = pg_keys,
    .allow = NULL,
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .bind = pg_bind,
    .prepare = pg_prepare,
    .apply = pg_apply,
    .end_run = pg_end_run,
    .init_targets = pg_init_targets,
};
