/* SPDX-License-Identifier: Apache-2.0
 * pgsql: PostgreSQL staging tables as a target (libpq). The pure parts
 * (identifiers, column types, a flow's table spec, the SQL text, value
 * checks) live in sql.c so unit tests need no server.
 */
#ifndef MLC_PGSQL_H
#define MLC_PGSQL_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"

#define PG_MAX_COLS  128
#define PG_IDENT_MAX 63 /* PostgreSQL's NAMEDATALEN - 1 */

enum pg_type {
    PG_TEXT = 1,
    PG_BIGINT,
    PG_INTEGER,
    PG_NUMERIC,
    PG_DATE,
    PG_TIMESTAMPTZ,
    PG_BOOLEAN
};

struct pg_col {
    char name[PG_IDENT_MAX + 1];
    enum pg_type type;
    int prec, scale; /* numeric(p,s) */
    int is_key;
};

/* One flow's staging table: the "target" object's table, key and columns. */
struct pg_table {
    char table[PG_IDENT_MAX + 1];
    struct pg_col cols[PG_MAX_COLS];
    int n_cols;
    int keys[PG_MAX_COLS]; /* indexes into cols, in the order "key" lists them */
    int n_keys;
};

/* 0 when s is an identifier we accept: [a-z_][a-z0-9_]*, at most 63 bytes
 * (lower case, so the quoted and unquoted spellings name the same thing). */
int pg_ident_ok(const char *s);
/* Parse a column type ("text", "numeric(15,2)", ...); 0 on success. */
int pg_type_parse(const char *s, struct pg_col *out);
/* The type as SQL ("numeric(15,2)"). */
void pg_type_sql(const struct pg_col *c, char *out, size_t n);
/* Read a flow's target object (path names it in messages). */
enum mlc_rc pg_table_parse(const cJSON *target, const char *path, struct pg_table *t,
                           struct mlc_errbuf *err);
int pg_table_col(const struct pg_table *t, const char *name);

/* Check one value for its column before it is sent (NULL/"" is always
 * fine: it becomes SQL NULL). 0 when PostgreSQL will take it; otherwise a
 * reason in why. */
int pg_value_check(const struct pg_col *c, const char *v, char *why, size_t n);

/* The upsert of n rows: VALUES of (columns..., _source_key, _audit_id) as
 * parameters $1.., ON CONFLICT (key) DO UPDATE only where a column differs;
 * RETURNING _source_key and whether the row was inserted. */
void pg_sql_upsert(const char *schema, const struct pg_table *t, size_t n_rows, struct mlc_buf *b);
/* The faster way for a batch: COPY the rows into a temporary table tmp
 * (made once per session, emptied at each commit), then one INSERT ...
 * SELECT with the same ON CONFLICT clause and RETURNING as the upsert. */
void pg_sql_temp(const char *schema, const struct pg_table *t, const char *tmp, struct mlc_buf *b);
void pg_sql_copy(const struct pg_table *t, const char *tmp, struct mlc_buf *b);
void pg_sql_merge(const char *schema, const struct pg_table *t, const char *tmp, struct mlc_buf *b);
/* One row of COPY's text format: tab-separated, \N for NULL, backslash,
 * tab, newline and carriage return escaped. */
void pg_copy_row(const char *const *vals, int n, struct mlc_buf *b);
/* The statements that create (or complete) a staging table, idempotent. */
void pg_sql_table_ddl(const char *schema, const struct pg_table *t, struct mlc_buf *b);
/* Schema, load_log and (reader != "") the reader's grants. */
void pg_sql_schema_ddl(const char *schema, struct mlc_buf *b);
void pg_sql_load_log_ddl(const char *schema, struct mlc_buf *b);
void pg_sql_grants(const char *schema, const char *reader, struct mlc_buf *b);

#endif
