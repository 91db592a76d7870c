/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the pgsql target's pure parts (agent/connectors/pgsql/sql.c):
 * identifiers, column types, a flow's target object, the checks a value
 * passes before it is sent, the upsert and the DDL text; and the settings
 * open() refuses (no server needed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"
#include "agent/connectors/pgsql/pgsql.h"
#include "shared/mlc_buf.h"
#include "tinytest.h"

extern const struct connector connector_pgsql;

static void test_identifiers(void)
{
    char long_name[80];

    CHECK(pg_ident_ok("ap_invoices") == 0);
    CHECK(pg_ident_ok("_x1") == 0);
    CHECK(pg_ident_ok("Invoices") != 0); /* upper case: quoted and unquoted differ */
    CHECK(pg_ident_ok("1abc") != 0);
    CHECK(pg_ident_ok("a-b") != 0);
    CHECK(pg_ident_ok("a\"; DROP TABLE x; --") != 0);
    CHECK(pg_ident_ok("") != 0);
    CHECK(pg_ident_ok(NULL) != 0);
    memset(long_name, 'a', 63);
    long_name[63] = '\0';
    CHECK(pg_ident_ok(long_name) == 0);
    long_name[63] = 'a';
    long_name[64] = '\0';
    CHECK(pg_ident_ok(long_name) != 0);
}

static void test_types(void)
{
    struct pg_col c;
    char s[32];

    CHECK(pg_type_parse("text", &c) == 0 && c.type == PG_TEXT);
    CHECK(pg_type_parse("bigint", &c) == 0 && c.type == PG_BIGINT);
    CHECK(pg_type_parse("integer", &c) == 0 && c.type == PG_INTEGER);
    CHECK(pg_type_parse("date", &c) == 0 && c.type == PG_DATE);
    CHECK(pg_type_parse("timestamptz", &c) == 0 && c.type == PG_TIMESTAMPTZ);
    CHECK(pg_type_parse("boolean", &c) == 0 && c.type == PG_BOOLEAN);
    CHECK(pg_type_parse("numeric(15,2)", &c) == 0 && c.type == PG_NUMERIC);
    CHECK_INT(c.prec, 15);
    CHECK_INT(c.scale, 2);
    pg_type_sql(&c, s, sizeof(s));
    CHECK_STR(s, "numeric(15,2)");
    CHECK(pg_type_parse("numeric(2,3)", &c) != 0);
    CHECK(pg_type_parse("numeric(0,0)", &c) != 0);
    CHECK(pg_type_parse("numeric(15,2) ", &c) != 0);
    CHECK(pg_type_parse("numeric", &c) != 0);
    CHECK(pg_type_parse("varchar(10)", &c) != 0);
    CHECK(pg_type_parse("text; DROP", &c) != 0);
}

static struct pg_table *parse(const char *json, struct mlc_errbuf *err)
{
    static struct pg_table t;
    cJSON *o = cJSON_Parse(json);
    enum mlc_rc rc;

    mlc_err_reset(err);
    rc = pg_table_parse(o, "flows.f.target", &t, err);
    cJSON_Delete(o);
    return rc == MLC_OK ? &t : NULL;
}

static void test_table_spec(void)
{
    struct mlc_errbuf err = { 0 };
    struct pg_table *t;

    t = parse("{\"table\":\"ap_invoices\",\"key\":[\"company\",\"doc\"],"
              "\"columns\":{\"company\":\"text\",\"doc\":\"bigint\",\"amount\":\"numeric(15,2)\"}}",
              &err);
    CHECK(t != NULL);
    if (t != NULL) {
        CHECK_INT(t->n_cols, 3);
        CHECK_INT(t->n_keys, 2);
        CHECK(t->cols[0].is_key && t->cols[1].is_key && !t->cols[2].is_key);
    }
    CHECK(parse("{\"table\":\"Bad\",\"key\":[\"a\"],\"columns\":{\"a\":\"text\"}}", &err) == NULL);
    CHECK(strstr(mlc_err_msg(&err), "flows.f.target.table") != NULL);
    CHECK(parse("{\"table\":\"load_log\",\"key\":[\"a\"],\"columns\":{\"a\":\"text\"}}", &err) ==
          NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[\"b\"],\"columns\":{\"a\":\"text\"}}", &err) == NULL);
    CHECK(strstr(mlc_err_msg(&err), "'b' is not one of the table's columns") != NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[],\"columns\":{\"a\":\"text\"}}", &err) == NULL);
    CHECK(strstr(mlc_err_msg(&err), "flows.f.target.key") != NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[\"a\",\"a\"],\"columns\":{\"a\":\"text\"}}", &err) ==
          NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[\"a\"],\"columns\":{\"a\":\"money\"}}", &err) == NULL);
    CHECK(strstr(mlc_err_msg(&err), "flows.f.target.columns.a") != NULL);
    CHECK(
        parse(
            "{\"table\":\"t\",\"key\":[\"a\"],\"columns\":{\"a\":\"text\",\"_audit_id\":\"text\"}}",
            &err) == NULL);
    CHECK(strstr(mlc_err_msg(&err), "_audit_id") != NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[\"a\"],\"columns\":{\"a\":\"text\",\"x y\":\"text\"}}",
                &err) == NULL);
    CHECK(parse("{\"table\":\"t\",\"key\":[\"a\"]}", &err) == NULL);
}

static int ok(enum pg_type type, int p, int s, const char *v)
{
    struct pg_col c = { .type = type, .prec = p, .scale = s };
    char why[200];

    return pg_value_check(&c, v, why, sizeof(why)) == 0;
}

static void test_values(void)
{
    struct pg_col c = { .type = PG_DATE };
    char why[200];

    CHECK(ok(PG_BIGINT, 0, 0, NULL) && ok(PG_BIGINT, 0, 0, "")); /* NULL */
    CHECK(ok(PG_BIGINT, 0, 0, "-9223372036854775808"));
    CHECK(!ok(PG_BIGINT, 0, 0, "9223372036854775808"));
    CHECK(!ok(PG_BIGINT, 0, 0, "12a"));
    CHECK(!ok(PG_BIGINT, 0, 0, " 12"));
    CHECK(ok(PG_INTEGER, 0, 0, "2147483647"));
    CHECK(!ok(PG_INTEGER, 0, 0, "2147483648"));
    CHECK(ok(PG_NUMERIC, 15, 2, "-1234.56"));
    CHECK(ok(PG_NUMERIC, 15, 2, "0.5"));
    CHECK(ok(PG_NUMERIC, 15, 2, "1234567890123.45"));
    CHECK(!ok(PG_NUMERIC, 15, 2, "12345678901234.5")); /* 14 digits before the point */
    CHECK(ok(PG_NUMERIC, 15, 2, "000000000000012.5")); /* leading zeros do not count */
    CHECK(ok(PG_NUMERIC, 15, 2, "1.239"));             /* PostgreSQL rounds the scale */
    CHECK(!ok(PG_NUMERIC, 15, 2, "1e5"));
    CHECK(!ok(PG_NUMERIC, 15, 2, "."));
    CHECK(!ok(PG_NUMERIC, 15, 2, "1,5"));
    CHECK(ok(PG_DATE, 0, 0, "2026-02-28"));
    CHECK(!ok(PG_DATE, 0, 0, "2026-02-29"));
    CHECK(!ok(PG_DATE, 0, 0, "20260228"));
    CHECK(!ok(PG_DATE, 0, 0, "2026-13-01"));
    CHECK(ok(PG_BOOLEAN, 0, 0, "TRUE") && ok(PG_BOOLEAN, 0, 0, "0"));
    CHECK(!ok(PG_BOOLEAN, 0, 0, "maybe"));
    CHECK(ok(PG_TEXT, 0, 0, "anything at all"));
    CHECK(pg_value_check(&c, "2026-02-30", why, sizeof(why)) != 0);
    CHECK(strstr(why, "2026-02-30") != NULL);
}

static void test_upsert_sql(void)
{
    struct mlc_errbuf err = { 0 };
    struct pg_table *t =
        parse("{\"table\":\"gl\",\"key\":[\"co\",\"acct\"],\"columns\":{\"co\":\"text\","
              "\"acct\":\"text\",\"amount\":\"numeric(15,2)\",\"on\":\"date\"}}",
              &err);
    struct mlc_buf b = MLC_BUF_INIT;

    CHECK(t != NULL);
    if (t == NULL) {
        return;
    }
    pg_sql_upsert("stg", t, 2, &b);
    CHECK_STR(
        mlc_buf_str(&b),
        "INSERT INTO \"stg\".\"gl\" AS t (\"co\", \"acct\", \"amount\", \"on\", \"_source_key\", "
        "\"_audit_id\", \"_loaded_at\") VALUES "
        "($1::text, $2::text, $3::numeric(15,2), $4::date, $5::text, $6::text, now()), "
        "($7::text, $8::text, $9::numeric(15,2), $10::date, $11::text, $12::text, now()) "
        "ON CONFLICT (\"co\", \"acct\") DO UPDATE SET \"amount\" = EXCLUDED.\"amount\", "
        "\"on\" = EXCLUDED.\"on\", \"_source_key\" = EXCLUDED.\"_source_key\", "
        "\"_audit_id\" = EXCLUDED.\"_audit_id\", \"_loaded_at\" = EXCLUDED.\"_loaded_at\" "
        "WHERE (t.\"amount\", t.\"on\") IS DISTINCT FROM (EXCLUDED.\"amount\", EXCLUDED.\"on\") "
        "RETURNING t.\"_source_key\", (t.xmax = 0) AS inserted");
    mlc_buf_release(&b);
    /* every column a key: an existing row is never rewritten */
    t = parse("{\"table\":\"k\",\"key\":[\"a\"],\"columns\":{\"a\":\"text\"}}", &err);
    CHECK(t != NULL);
    if (t != NULL) {
        pg_sql_upsert("stg", t, 1, &b);
        CHECK(strstr(mlc_buf_str(&b), " WHERE false RETURNING") != NULL);
        mlc_buf_release(&b);
    }
}

static void test_copy_merge_sql(void)
{
    struct mlc_errbuf err = { 0 };
    struct pg_table *t = parse("{\"table\":\"gl\",\"key\":[\"co\"],\"columns\":{\"co\":\"text\","
                               "\"amount\":\"numeric(15,2)\"}}",
                               &err);
    struct mlc_buf b = MLC_BUF_INIT;
    const char *row1[] = { "a\tb\\c\nd\re", NULL, "k1", "aud" };
    const char *row2[] = { "", "12.50", "k2", NULL };

    CHECK(t != NULL);
    if (t == NULL) {
        return;
    }
    pg_copy_row(row1, 4, &b);
    pg_copy_row(row2, 4, &b);
    CHECK_STR(mlc_buf_str(&b), "a\\tb\\\\c\\nd\\re\t\\N\tk1\taud\n\t12.50\tk2\t\\N\n");
    mlc_buf_reset(&b);
    pg_sql_temp("stg", t, "mlc_in_0", &b);
    CHECK_STR(mlc_buf_str(&b),
              "CREATE TEMP TABLE IF NOT EXISTS \"mlc_in_0\" ON COMMIT DELETE ROWS AS "
              "SELECT \"co\", \"amount\", \"_source_key\", \"_audit_id\" FROM "
              "\"stg\".\"gl\" WITH NO DATA");
    mlc_buf_reset(&b);
    pg_sql_copy(t, "mlc_in_0", &b);
    CHECK_STR(mlc_buf_str(&b), "COPY \"mlc_in_0\" (\"co\", \"amount\", \"_source_key\", "
                               "\"_audit_id\") FROM STDIN");
    mlc_buf_reset(&b);
    pg_sql_merge("stg", t, "mlc_in_0", &b);
    CHECK_STR(
        mlc_buf_str(&b),
        "INSERT INTO \"stg\".\"gl\" AS t (\"co\", \"amount\", \"_source_key\", \"_audit_id\", "
        "\"_loaded_at\") SELECT \"co\", \"amount\", \"_source_key\", \"_audit_id\", now() FROM "
        "\"mlc_in_0\" ON CONFLICT (\"co\") DO UPDATE SET \"amount\" = EXCLUDED.\"amount\", "
        "\"_source_key\" = EXCLUDED.\"_source_key\", \"_audit_id\" = EXCLUDED.\"_audit_id\", "
        "\"_loaded_at\" = EXCLUDED.\"_loaded_at\" WHERE (t.\"amount\") IS DISTINCT FROM "
        "(EXCLUDED.\"amount\") RETURNING t.\"_source_key\", (t.xmax = 0) AS inserted");
    mlc_buf_release(&b);
}

static void test_ddl(void)
{
    struct mlc_errbuf err = { 0 };
    struct pg_table *t = parse("{\"table\":\"ap_invoices\",\"key\":[\"doc\"],\"columns\":{"
                               "\"doc\":\"bigint\",\"amount\":\"numeric(15,2)\"}}",
                               &err);
    struct mlc_buf b = MLC_BUF_INIT;
    const char *s;

    CHECK(t != NULL);
    if (t == NULL) {
        return;
    }
    pg_sql_schema_ddl("mlc_staging", &b);
    pg_sql_load_log_ddl("mlc_staging", &b);
    pg_sql_table_ddl("mlc_staging", t, &b);
    pg_sql_grants("mlc_staging", "looker_reader", &b);
    s = mlc_buf_str(&b);
    CHECK(strstr(s, "CREATE SCHEMA IF NOT EXISTS \"mlc_staging\";") != NULL);
    CHECK(strstr(s, "CREATE TABLE IF NOT EXISTS \"mlc_staging\".\"load_log\"") != NULL);
    CHECK(strstr(s, "\"finished_at\" timestamptz NOT NULL DEFAULT now()") != NULL);
    CHECK(strstr(s, "    \"doc\" bigint NOT NULL,\n    \"amount\" numeric(15,2),\n") != NULL);
    CHECK(strstr(s, "PRIMARY KEY (\"doc\")") != NULL);
    CHECK(strstr(s,
                 "ALTER TABLE \"mlc_staging\".\"ap_invoices\" ADD COLUMN IF NOT EXISTS \"amount\" "
                 "numeric(15,2);") != NULL);
    CHECK(
        strstr(s, "ADD COLUMN IF NOT EXISTS \"_loaded_at\" timestamptz NOT NULL DEFAULT now();") !=
        NULL);
    CHECK(strstr(s, "CREATE INDEX IF NOT EXISTS \"ap_invoices__loaded_at\" ON "
                    "\"mlc_staging\".\"ap_invoices\" (\"_loaded_at\");") != NULL);
    CHECK(strstr(s, "GRANT SELECT ON ALL TABLES IN SCHEMA \"mlc_staging\" TO \"looker_reader\";") !=
          NULL);
    CHECK(strstr(s, "ALTER DEFAULT PRIVILEGES IN SCHEMA \"mlc_staging\" GRANT SELECT ON TABLES TO "
                    "\"looker_reader\";") != NULL);
    CHECK(strstr(s, "DROP") == NULL);
    mlc_buf_release(&b);
}

static enum mlc_rc open_with(const char *json, struct conn *c)
{
    cJSON *conf = cJSON_Parse(json);
    enum mlc_rc rc;

    memset(c, 0, sizeof(*c));
    c->ops = &connector_pgsql;
    c->name = "wh";
    c->conf = conf;
    rc = connector_pgsql.open(c);
    connector_pgsql.close(c);
    cJSON_Delete(conf);
    return rc;
}

static void test_open(void)
{
    struct conn c;

    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host=127.0.0.1 dbname=f user=u\","
                    "\"password\":\"${X}\",\"reader_role\":\"looker_reader\"}",
                    &c) == MLC_OK);
    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host=127.0.0.1 password=hunter2\"}", &c) ==
          MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&c.err), "systems.wh.dsn") != NULL);
    CHECK(strstr(mlc_err_msg(&c.err), "hunter2") == NULL);
    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host='unterminated\"}", &c) == MLC_E_INVAL);
    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host=h\",\"schema\":\"Staging\"}", &c) ==
          MLC_E_INVAL);
    CHECK(strstr(mlc_err_msg(&c.err), "systems.wh.schema") != NULL);
    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host=h\",\"reader_role\":\"x;y\"}", &c) ==
          MLC_E_INVAL);
    CHECK(open_with("{\"type\":\"pgsql\",\"dsn\":\"host=h\",\"bogus\":1}", &c) == MLC_E_INVAL);
}

int main(void)
{
    RUN(test_identifiers);
    RUN(test_types);
    RUN(test_table_spec);
    RUN(test_values);
    RUN(test_upsert_sql);
    RUN(test_copy_merge_sql);
    RUN(test_ddl);
    RUN(test_open);
    return TT_DONE();
}
