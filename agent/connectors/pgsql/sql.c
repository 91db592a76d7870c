/* SPDX-License-Identifier: Apache-2.0
 * pgsql/sql: the connector's pure parts: identifiers, column types, the
 * flow's table spec, SQL text and value checks (no libpq here).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/connectors/pgsql/pgsql.h"
#include "shared/mlc_date.h"

/* the columns every staging row carries besides the flow's own */
static const char *const own_cols[] = { "_source_key", "_audit_id", "_loaded_at" };

int pg_ident_ok(const char *s)
{
    size_t n;

    if (s == NULL || !(islower((unsigned char)s[0]) || s[0] == '_')) {
        return -1;
    }
    n = strlen(s);
    if (n > PG_IDENT_MAX) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(islower(ch) || isdigit(ch) || ch == '_')) {
            return -1;
        }
    }
    return 0;
}

int pg_type_parse(const char *s, struct pg_col *out)
{
    static const struct {
        const char *name;
        enum pg_type type;
    } plain[] = {
        { "text", PG_TEXT }, { "bigint", PG_BIGINT },           { "integer", PG_INTEGER },
        { "date", PG_DATE }, { "timestamptz", PG_TIMESTAMPTZ }, { "boolean", PG_BOOLEAN }
    };
    int p, sc, used = 0;

    out->prec = out->scale = 0;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        if (strcmp(s, plain[i].name) == 0) {
            out->type = plain[i].type;
            return 0;
        }
    }
    if (sscanf(s, "numeric(%d,%d)%n", &p, &sc, &used) == 2 && s[used] == '\0' && p >= 1 &&
        p <= 1000 && sc >= 0 && sc <= p && strchr(s, ' ') == NULL) {
        out->type = PG_NUMERIC;
        out->prec = p;
        out->scale = sc;
        return 0;
    }
    return -1;
}

void pg_type_sql(const struct pg_col *c, char *out, size_t n)
{
    static const char *const names[] = { "",        "text", "bigint",      "integer",
                                         "numeric", "date", "timestamptz", "boolean" };

    if (c->type == PG_NUMERIC) {
        snprintf(out, n, "numeric(%d,%d)", c->prec, c->scale);
    } else {
        snprintf(out, n, "%s", names[c->type]);
    }
}

int pg_table_col(const struct pg_table *t, const char *name)
{
    for (int i = 0; i < t->n_cols; i++) {
        if (strcmp(t->cols[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

static int own_col(const char *name)
{
    for (size_t i = 0; i < sizeof(own_cols) / sizeof(own_cols[0]); i++) {
        if (strcmp(name, own_cols[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

enum mlc_rc pg_table_parse(const cJSON *target, const char *path, struct pg_table *t,
                           struct mlc_errbuf *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(target, "table");
    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(target, "columns");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(target, "key");
    const cJSON *c;

    memset(t, 0, sizeof(*t));
    if (!cJSON_IsString(it) || pg_ident_ok(it->valuestring) != 0 ||
        strcmp(it->valuestring, "load_log") == 0) {
        mlc_errf(err,
                 "%s.table: required, a lower-case SQL name ([a-z_][a-z0-9_]*, at most %d "
                 "characters, not \"load_log\")",
                 path, PG_IDENT_MAX);
        return MLC_E_INVAL;
    }
    snprintf(t->table, sizeof(t->table), "%s", it->valuestring);
    if (!cJSON_IsObject(cols) || cols->child == NULL) {
        mlc_errf(err,
                 "%s.columns: required object of column name -> SQL type (text, bigint, "
                 "integer, numeric(p,s), date, timestamptz, boolean)",
                 path);
        return MLC_E_INVAL;
    }
    cJSON_ArrayForEach(c, cols)
    {
        struct pg_col *pc;
        if (t->n_cols >= PG_MAX_COLS) {
            mlc_errf(err, "%s.columns: more than %d columns", path, PG_MAX_COLS);
            return MLC_E_INVAL;
        }
        if (pg_ident_ok(c->string) != 0 || own_col(c->string)) {
            mlc_errf(
                err,
                "%s.columns.%s: not a column name we accept (lower-case [a-z_][a-z0-9_]*, at "
                "most %d characters; _source_key, _audit_id and _loaded_at are the agent's own)",
                path, c->string, PG_IDENT_MAX);
            return MLC_E_INVAL;
        }
        if (pg_table_col(t, c->string) >= 0) {
            mlc_errf(err, "%s.columns.%s: listed twice", path, c->string);
            return MLC_E_INVAL;
        }
        pc = &t->cols[t->n_cols];
        if (!cJSON_IsString(c) || pg_type_parse(c->valuestring, pc) != 0) {
            mlc_errf(err,
                     "%s.columns.%s: type must be one of text, bigint, integer, numeric(p,s) "
                     "(1 <= p <= 1000, 0 <= s <= p), date, timestamptz, boolean",
                     path, c->string);
            return MLC_E_INVAL;
        }
        snprintf(pc->name, sizeof(pc->name), "%s", c->string);
        t->n_cols++;
    }
    if (!cJSON_IsArray(key) || cJSON_GetArraySize(key) == 0) {
        mlc_errf(err, "%s.key: required list of the columns that identify a row (the primary key)",
                 path);
        return MLC_E_INVAL;
    }
    cJSON_ArrayForEach(c, key)
    {
        int k = cJSON_IsString(c) ? pg_table_col(t, c->valuestring) : -1;
        if (k < 0) {
            mlc_errf(err, "%s.key: '%s' is not one of the table's columns", path,
                     cJSON_IsString(c) ? c->valuestring : "(not a string)");
            return MLC_E_INVAL;
        }
        if (t->cols[k].is_key) {
            mlc_errf(err, "%s.key: '%s' listed twice", path, c->valuestring);
            return MLC_E_INVAL;
        }
        t->cols[k].is_key = 1;
        t->keys[t->n_keys++] = k;
    }
    return MLC_OK;
}

/* ---------------------------------------------------------------- values */

static int digits(const char *s, size_t *n)
{
    size_t i = 0;
    while (isdigit((unsigned char)s[i])) {
        i++;
    }
    *n = i;
    return i > 0;
}

int pg_value_check(const struct pg_col *c, const char *v, char *why, size_t n)
{
    char *end;

    if (v == NULL || v[0] == '\0') {
        return 0;
    }
    switch (c->type) {
    case PG_TEXT:
    case PG_TIMESTAMPTZ: /* PostgreSQL's own parser decides (a row of its own on error) */
        return 0;
    case PG_BIGINT:
    case PG_INTEGER: {
        long long x;
        errno = 0;
        x = strtoll(v, &end, 10);
        if (end == v || *end != '\0' || isspace((unsigned char)v[0]) || errno == ERANGE ||
            (c->type == PG_INTEGER && (x < -2147483648LL || x > 2147483647LL))) {
            snprintf(why, n, "'%s' is not a whole number in the range of %s", v,
                     c->type == PG_INTEGER ? "integer" : "bigint");
            return -1;
        }
        return 0;
    }
    case PG_NUMERIC: {
        const char *p = v;
        size_t ni = 0, nf = 0;
        if (*p == '-' || *p == '+') {
            p++;
        }
        digits(p, &ni);
        p += ni;
        if (*p == '.') {
            p++;
            digits(p, &nf);
            p += nf;
        }
        if (*p != '\0' || ni + nf == 0) {
            snprintf(why, n, "'%s' is not a decimal number (digits, an optional sign and '.')", v);
            return -1;
        }
        /* leading zeros do not count against the precision */
        {
            const char *q = v + (v[0] == '-' || v[0] == '+');
            size_t lead = 0;
            while (lead + 1 < ni && q[lead] == '0') {
                lead++;
            }
            if ((long)(ni - lead) > (long)(c->prec - c->scale) &&
                !(ni - lead == 1 && q[lead] == '0')) {
                snprintf(why, n,
                         "'%s' has more than %d digits before the decimal point (numeric(%d,%d))",
                         v, c->prec - c->scale, c->prec, c->scale);
                return -1;
            }
        }
        return 0;
    }
    case PG_DATE: {
        struct mlc_ymd d;
        char compact[9];
        if (strlen(v) != 10 || v[4] != '-' || v[7] != '-') {
            snprintf(why, n, "'%s' is not a date in the form YYYY-MM-DD", v);
            return -1;
        }
        memcpy(compact, v, 4);
        memcpy(compact + 4, v + 5, 2);
        memcpy(compact + 6, v + 8, 2);
        compact[8] = '\0';
        if (mlc_yyyymmdd_parse(compact, &d) != 0) {
            snprintf(why, n, "'%s' is not a calendar date", v);
            return -1;
        }
        return 0;
    }
    case PG_BOOLEAN: {
        static const char *const ok[] = { "true", "false", "t",  "f",   "yes", "no",
                                          "y",    "n",     "on", "off", "1",   "0" };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
            if (strcasecmp(v, ok[i]) == 0) {
                return 0;
            }
        }
        snprintf(why, n, "'%s' is not a boolean (true/false, yes/no, 1/0)", v);
        return -1;
    }
    }
    return 0;
}

/* ------------------------------------------------------------------- SQL */

static void qid(struct mlc_buf *b, const char *id)
{
    /* every identifier passed pg_ident_ok(): quoting is for reserved words */
    mlc_buf_addf(b, "\"%s\"", id);
}

static void qtable(struct mlc_buf *b, const char *schema, const char *table)
{
    qid(b, schema);
    mlc_buf_adds(b, ".");
    qid(b, table);
}

/* ON CONFLICT (key) DO UPDATE ... only where a column differs, RETURNING. */
static void conflict_tail(const struct pg_table *t, struct mlc_buf *b)
{
    mlc_buf_adds(b, " ON CONFLICT (");
    for (int k = 0; k < t->n_keys; k++) {
        if (k) {
            mlc_buf_adds(b, ", ");
        }
        qid(b, t->cols[t->keys[k]].name);
    }
    mlc_buf_adds(b, ") DO UPDATE SET ");
    for (int i = 0; i < t->n_cols; i++) {
        if (!t->cols[i].is_key) {
            qid(b, t->cols[i].name);
            mlc_buf_adds(b, " = EXCLUDED.");
            qid(b, t->cols[i].name);
            mlc_buf_adds(b, ", ");
        }
    }
    mlc_buf_adds(b, "\"_source_key\" = EXCLUDED.\"_source_key\", \"_audit_id\" = "
                    "EXCLUDED.\"_audit_id\", \"_loaded_at\" = EXCLUDED.\"_loaded_at\"");
    /* a row whose content is already there is left alone (no write, no
     * new _loaded_at); the key columns are equal by the conflict itself */
    if (t->n_keys < t->n_cols) {
        int first = 1;
        mlc_buf_adds(b, " WHERE (");
        for (int i = 0; i < t->n_cols; i++) {
            if (!t->cols[i].is_key) {
                mlc_buf_adds(b, first ? "t." : ", t.");
                qid(b, t->cols[i].name);
                first = 0;
            }
        }
        mlc_buf_adds(b, ") IS DISTINCT FROM (");
        first = 1;
        for (int i = 0; i < t->n_cols; i++) {
            if (!t->cols[i].is_key) {
                mlc_buf_adds(b, first ? "EXCLUDED." : ", EXCLUDED.");
                qid(b, t->cols[i].name);
                first = 0;
            }
        }
        mlc_buf_adds(b, ")");
    } else {
        mlc_buf_adds(b, " WHERE false");
    }
    mlc_buf_adds(b, " RETURNING t.\"_source_key\", (t.xmax = 0) AS inserted");
}

static void insert_head(const char *schema, const struct pg_table *t, struct mlc_buf *b)
{
    mlc_buf_adds(b, "INSERT INTO ");
    qtable(b, schema, t->table);
    mlc_buf_adds(b, " AS t (");
    for (int i = 0; i < t->n_cols; i++) {
        qid(b, t->cols[i].name);
        mlc_buf_adds(b, ", ");
    }
    mlc_buf_adds(b, "\"_source_key\", \"_audit_id\", \"_loaded_at\")");
}

void pg_sql_upsert(const char *schema, const struct pg_table *t, size_t n_rows, struct mlc_buf *b)
{
    int per = t->n_cols + 2, p = 1;
    char ty[32];

    insert_head(schema, t, b);
    mlc_buf_adds(b, " VALUES ");
    for (size_t r = 0; r < n_rows; r++) {
        mlc_buf_adds(b, r ? ", (" : "(");
        for (int i = 0; i < per; i++) {
            pg_type_sql(i < t->n_cols ? &t->cols[i] : &(struct pg_col){ .type = PG_TEXT }, ty,
                        sizeof(ty));
            mlc_buf_addf(b, "$%d::%s, ", p++, ty);
        }
        mlc_buf_adds(b, "now())");
    }
    conflict_tail(t, b);
}

void pg_sql_temp(const char *schema, const struct pg_table *t, const char *tmp, struct mlc_buf *b)
{
    mlc_buf_adds(b, "CREATE TEMP TABLE IF NOT EXISTS ");
    qid(b, tmp);
    mlc_buf_adds(b, " ON COMMIT DELETE ROWS AS SELECT ");
    for (int i = 0; i < t->n_cols; i++) {
        qid(b, t->cols[i].name);
        mlc_buf_adds(b, ", ");
    }
    mlc_buf_adds(b, "\"_source_key\", \"_audit_id\" FROM ");
    qtable(b, schema, t->table);
    mlc_buf_adds(b, " WITH NO DATA");
}

void pg_sql_copy(const struct pg_table *t, const char *tmp, struct mlc_buf *b)
{
    mlc_buf_adds(b, "COPY ");
    qid(b, tmp);
    mlc_buf_adds(b, " (");
    for (int i = 0; i < t->n_cols; i++) {
        qid(b, t->cols[i].name);
        mlc_buf_adds(b, ", ");
    }
    mlc_buf_adds(b, "\"_source_key\", \"_audit_id\") FROM STDIN");
}

void pg_sql_merge(const char *schema, const struct pg_table *t, const char *tmp, struct mlc_buf *b)
{
    insert_head(schema, t, b);
    mlc_buf_adds(b, " SELECT ");
    for (int i = 0; i < t->n_cols; i++) {
        qid(b, t->cols[i].name);
        mlc_buf_adds(b, ", ");
    }
    mlc_buf_adds(b, "\"_source_key\", \"_audit_id\", now() FROM ");
    qid(b, tmp);
    conflict_tail(t, b);
}

void pg_copy_row(const char *const *vals, int n, struct mlc_buf *b)
{
    for (int i = 0; i < n; i++) {
        const char *v = vals[i];
        if (i) {
            mlc_buf_add(b, "\t", 1);
        }
        if (v == NULL) {
            mlc_buf_add(b, "\\N", 2);
            continue;
        }
        while (*v) {
            size_t plain = strcspn(v, "\\\t\n\r");
            char esc[2] = { '\\', 0 };
            mlc_buf_add(b, v, plain);
            v += plain;
            if (*v == '\0') {
                break;
            }
            esc[1] = *v == '\t' ? 't' : *v == '\n' ? 'n' : *v == '\r' ? 'r' : '\\';
            mlc_buf_add(b, esc, 2);
            v++;
        }
    }
    mlc_buf_add(b, "\n", 1);
}

void pg_sql_schema_ddl(const char *schema, struct mlc_buf *b)
{
    mlc_buf_adds(b, "CREATE SCHEMA IF NOT EXISTS ");
    qid(b, schema);
    mlc_buf_adds(b, ";\n");
}

void pg_sql_table_ddl(const char *schema, const struct pg_table *t, struct mlc_buf *b)
{
    char ty[32];

    mlc_buf_adds(b, "CREATE TABLE IF NOT EXISTS ");
    qtable(b, schema, t->table);
    mlc_buf_adds(b, " (\n");
    for (int i = 0; i < t->n_cols; i++) {
        pg_type_sql(&t->cols[i], ty, sizeof(ty));
        mlc_buf_adds(b, "    ");
        qid(b, t->cols[i].name);
        mlc_buf_addf(b, " %s%s,\n", ty, t->cols[i].is_key ? " NOT NULL" : "");
    }
    mlc_buf_adds(b, "    \"_source_key\" text NOT NULL,\n    \"_audit_id\" text,\n"
                    "    \"_loaded_at\" timestamptz NOT NULL DEFAULT now(),\n    PRIMARY KEY (");
    for (int k = 0; k < t->n_keys; k++) {
        if (k) {
            mlc_buf_adds(b, ", ");
        }
        qid(b, t->cols[t->keys[k]].name);
    }
    mlc_buf_adds(b, ")\n);\n");
    /* a table from an earlier configuration gets the columns added since
     * (never dropped, never retyped) */
    for (int i = 0; i < t->n_cols + 3; i++) {
        mlc_buf_adds(b, "ALTER TABLE ");
        qtable(b, schema, t->table);
        mlc_buf_adds(b, " ADD COLUMN IF NOT EXISTS ");
        if (i < t->n_cols) {
            pg_type_sql(&t->cols[i], ty, sizeof(ty));
            qid(b, t->cols[i].name);
            mlc_buf_addf(b, " %s;\n", ty);
        } else {
            qid(b, own_cols[i - t->n_cols]);
            mlc_buf_addf(b, " %s;\n",
                         i - t->n_cols == 2 ? "timestamptz NOT NULL DEFAULT now()" : "text");
        }
    }
    mlc_buf_addf(b, "CREATE INDEX IF NOT EXISTS \"%.40s__loaded_at\" ON ", t->table);
    qtable(b, schema, t->table);
    mlc_buf_adds(b, " (\"_loaded_at\");\n");
}

void pg_sql_load_log_ddl(const char *schema, struct mlc_buf *b)
{
    mlc_buf_adds(b, "CREATE TABLE IF NOT EXISTS ");
    qtable(b, schema, "load_log");
    mlc_buf_adds(b, " (\n"
                    "    \"id\" bigserial PRIMARY KEY,\n"
                    "    \"flow\" text NOT NULL,\n"
                    "    \"table_name\" text NOT NULL,\n"
                    "    \"rows_inserted\" bigint NOT NULL,\n"
                    "    \"rows_updated\" bigint NOT NULL,\n"
                    "    \"started_at\" timestamptz NOT NULL,\n"
                    "    \"finished_at\" timestamptz NOT NULL DEFAULT now(),\n"
                    "    \"first_audit_id\" text,\n"
                    "    \"last_audit_id\" text\n"
                    ");\n");
    mlc_buf_adds(b, "CREATE INDEX IF NOT EXISTS \"load_log__finished_at\" ON ");
    qtable(b, schema, "load_log");
    mlc_buf_adds(b, " (\"finished_at\");\n");
}

void pg_sql_grants(const char *schema, const char *reader, struct mlc_buf *b)
{
    mlc_buf_adds(b, "GRANT USAGE ON SCHEMA ");
    qid(b, schema);
    mlc_buf_adds(b, " TO ");
    qid(b, reader);
    mlc_buf_adds(b, ";\nGRANT SELECT ON ALL TABLES IN SCHEMA ");
    qid(b, schema);
    mlc_buf_adds(b, " TO ");
    qid(b, reader);
    /* tables the loader creates later are readable too */
    mlc_buf_adds(b, ";\nALTER DEFAULT PRIVILEGES IN SCHEMA ");
    qid(b, schema);
    mlc_buf_adds(b, " GRANT SELECT ON TABLES TO ");
    qid(b, reader);
    mlc_buf_adds(b, ";\n");
}
