/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the JDE page parser and watermark, mappings, the state
 * database (migrations, ledger, outbox, dead letters) and sealed secrets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "agent/connectors/jde/jde.h"
#include "agent/mapping.h"
#include "agent/pipeline.h"
#include "agent/secrets.h"
#include "agent/state.h"
#include "shared/mlc_json.h"
#include "tinytest.h"

static const struct jde_table wo = { .table = "F4801", .key_col = "DOCO", .key_numeric = 1,
                                     .date_col = "UPMJ", .time_col = "TDAY" };

static void jde_page_parses_rows_and_link(void)
{
    const char *body =
        "{\"fs_DATABROWSE_F4801\":{\"data\":{\"gridData\":{\"rowset\":["
        "{\"F4801_DOCO\":100001,\"F4801_DL01\":\"Pump  \",\"F4801_UPMJ\":\"20240115\",\"F4801_TDAY\":93015},"
        "{\"F4801_DOCO\":\"GARBAGE\",\"F4801_UPMJ\":\"20240115\",\"F4801_TDAY\":93015},"
        "{\"F4801_DOCO\":100002,\"F4801_UPMJ\":\"2024-01-15\",\"F4801_TDAY\":1}],"
        "\"summary\":{\"records\":3,\"moreRecords\":true}}}},"
        "\"links\":[{\"rel\":\"next\",\"href\":\"http://h/jderest/v2/dataservice/next\"}]}";
    struct mlc_errbuf e = { 0 };
    struct page pg = { 0 };
    char *next = NULL;
    int more = 0;

    CHECK_INT(jde_parse_page(body, strlen(body), &wo, &pg, &more, &next, &e), MLC_OK);
    CHECK_INT(pg.n, 3);
    CHECK_INT(more, 1);
    CHECK_STR(next, "http://h/jderest/v2/dataservice/next");
    CHECK_STR(pg.recs[0].key, "100001");
    CHECK_STR(pg.recs[0].cursor, "20240115|093015|100001");
    CHECK_STR(mlc_json_str(pg.recs[0].data, "DL01"), "Pump  ");
    CHECK(pg.recs[0].error == NULL);
    CHECK(pg.recs[1].error != NULL && strstr(pg.recs[1].error, "DOCO") != NULL);
    CHECK(pg.recs[2].error != NULL && strstr(pg.recs[2].error, "UPMJ") != NULL);
    page_release(&pg);
    free(next);
}

static void jde_page_rejects_garbage(void)
{
    struct mlc_errbuf e = { 0 };
    struct page pg = { 0 };
    char *next = NULL;
    int more = 0;
    const char *trunc = "{\"fs_DATABROWSE_F4801\":{\"data\":";
    const char *exc = "{\"message\":\"boom\",\"exception\":\"JDERestServiceException\"}";

    CHECK_INT(jde_parse_page(trunc, strlen(trunc), &wo, &pg, &more, &next, &e), MLC_E_PROTO);
    CHECK(strstr(mlc_err_msg(&e), "invalid JSON") != NULL);
    mlc_err_reset(&e);
    CHECK_INT(jde_parse_page(exc, strlen(exc), &wo, &pg, &more, &next, &e), MLC_E_REJECTED);
    CHECK(strstr(mlc_err_msg(&e), "boom") != NULL);
    mlc_err_reset(&e);
    CHECK_INT(jde_parse_page("{}", 2, &wo, &pg, &more, &next, &e), MLC_E_PROTO);
    CHECK_INT(pg.n, 0);
    page_release(&pg);
}

static void jde_cursor_round_trip(void)
{
    struct jde_cursor c;
    char out[64];

    CHECK_INT(jde_cursor_parse("20240115|093015|100001", &c), 0);
    CHECK_STR(c.date, "20240115");
    CHECK_INT(c.time, 93015);
    CHECK_STR(c.key, "100001");
    jde_cursor_format(&c, out, sizeof(out));
    CHECK_STR(out, "20240115|093015|100001");
    CHECK_INT(jde_cursor_parse("20240230|1|x", &c), -1);
    CHECK_INT(jde_cursor_parse("20240115|250000|x", &c), -1);
    CHECK_INT(jde_cursor_parse("garbage", &c), -1);
}

/* Finance tables: a composite key joined with '|', parts trimmed (JD
 * Edwards pads codes), the change time in UPMT, a Julian change date taken */
static void jde_page_composite_keys(void)
{
    cJSON *src = cJSON_Parse("{\"table\":\"F0411\",\"key\":[\"KCO\",\"DOC\",\"DCT\",\"SFX\"],"
                             "\"changed\":{\"date\":\"UPMJ\",\"time\":\"UPMT\"}}");
    const char *body =
        "{\"fs_DATABROWSE_F0411\":{\"data\":{\"gridData\":{\"rowset\":["
        "{\"F0411_KCO\":\"00001\",\"F0411_DOC\":10004821,\"F0411_DCT\":\"PV\",\"F0411_SFX\":\"001\","
        "\"F0411_MCU\":\"        2500\",\"F0411_AG\":-123456,\"F0411_UPMJ\":\"20261004\",\"F0411_UPMT\":65812},"
        "{\"F0411_KCO\":\"00050 \",\"F0411_DOC\":7,\"F0411_DCT\":\"PD\",\"F0411_SFX\":\"  \","
        "\"F0411_UPMJ\":126277,\"F0411_UPMT\":0},"
        "{\"F0411_KCO\":\"00001\",\"F0411_DCT\":\"PV\",\"F0411_SFX\":\"001\",\"F0411_UPMJ\":\"20261004\","
        "\"F0411_UPMT\":1},"
        "{\"F0411_KCO\":\"\",\"F0411_DOC\":\" \",\"F0411_DCT\":\"\",\"F0411_SFX\":\"\","
        "\"F0411_UPMJ\":\"20261004\",\"F0411_UPMT\":1},"
        "{\"F0411_KCO\":\"0|1\",\"F0411_DOC\":1,\"F0411_DCT\":\"PV\",\"F0411_SFX\":\"001\","
        "\"F0411_UPMJ\":\"20261004\",\"F0411_UPMT\":1},"
        "{\"F0411_KCO\":\"00001\",\"F0411_DOC\":2,\"F0411_DCT\":\"PV\",\"F0411_SFX\":\"001\","
        "\"F0411_UPMJ\":\"20261004\",\"F0411_TDAY\":1},"
        "{\"F0411_KCO\":null,\"F0411_DOC\":2,\"F0411_DCT\":\"PV\",\"F0411_SFX\":\"001\","
        "\"F0411_UPMJ\":\"20261004\",\"F0411_UPMT\":1}],"
        "\"summary\":{\"records\":7,\"moreRecords\":false}}}}}";
    struct mlc_errbuf e = { 0 };
    struct jde_table t;
    struct jde_cursor c;
    struct page pg = { 0 };
    char *next = NULL;
    int more = 1;

    CHECK_INT(jde_table_from_source(src, &t, &e), 0);
    CHECK_INT(t.n_keys, 4);
    CHECK_STR(t.key_col, "KCO");
    CHECK_STR(t.time_col, "UPMT");
    CHECK_INT(t.key_numeric, 0);
    CHECK_INT(jde_parse_page(body, strlen(body), &t, &pg, &more, &next, &e), MLC_OK);
    CHECK_INT(pg.n, 7);
    CHECK_INT(more, 0);
    CHECK_STR(pg.recs[0].key, "00001|10004821|PV|001");
    CHECK_STR(pg.recs[0].cursor, "20261004|065812|00001|10004821|PV|001");
    /* the data keeps JD Edwards' padding: the mapping trims what it reads */
    CHECK_STR(mlc_json_str(pg.recs[0].data, "MCU"), "        2500");
    CHECK(pg.recs[0].error == NULL);
    /* a Julian date (126277 = 2026-10-04), a blank part, trailing blanks */
    CHECK(pg.recs[1].error == NULL);
    CHECK_STR(pg.recs[1].key, "00050|7|PD|");
    CHECK_STR(pg.recs[1].cursor, "20261004|000000|00050|7|PD|");
    CHECK(pg.recs[2].error != NULL && strstr(pg.recs[2].error, "F0411.DOC") != NULL);
    CHECK(pg.recs[3].error != NULL && strstr(pg.recs[3].error, "empty key") != NULL);
    CHECK(pg.recs[4].error != NULL && strstr(pg.recs[4].error, "'|'") != NULL);
    CHECK(pg.recs[5].error != NULL && strstr(pg.recs[5].error, "F0411.UPMT") != NULL);
    CHECK(pg.recs[6].error != NULL && strstr(pg.recs[6].error, "F0411.KCO") != NULL);
    /* every cursor parses back, the key with its bars */
    CHECK_INT(jde_cursor_parse(pg.recs[0].cursor, &c), 0);
    CHECK_STR(c.key, "00001|10004821|PV|001");
    CHECK_INT(c.time, 65812);
    page_release(&pg);
    cJSON_Delete(src);
    {
        /* one-column keys are trimmed too: F0006 by business unit */
        cJSON *s2 = cJSON_Parse("{\"table\":\"F0006\",\"key\":[\"MCU\"]}");
        const char *b2 = "{\"fs_DATABROWSE_F0006\":{\"data\":{\"gridData\":{\"rowset\":["
                         "{\"F0006_MCU\":\"         M30\",\"F0006_UPMJ\":\"20251129\",\"F0006_UPMT\":162639}]}}}}";
        CHECK_INT(jde_table_from_source(s2, &t, &e), 0);
        CHECK_INT(t.n_keys, 0);
        CHECK_INT(t.key_numeric, 0); /* an array key is never required to be a number */
        CHECK_INT(jde_parse_page(b2, strlen(b2), &t, &pg, &more, &next, &e), MLC_OK);
        CHECK_STR(pg.recs[0].key, "M30");
        CHECK_STR(pg.recs[0].cursor, "20251129|162639|M30");
        page_release(&pg);
        cJSON_Delete(s2);
    }
}

static void jde_source_settings(void)
{
    static const struct {
        const char *src;
        const char *err; /* NULL: accepted */
    } cases[] = {
        { "{\"table\":\"F4801\"}", NULL },
        { "{\"table\":\"F4801\",\"key\":\"DOCO\",\"date_column\":\"UPMJ\",\"time_column\":\"TDAY\"}", NULL },
        { "{\"table\":\"F0411\",\"key\":[]}", "source.key" },
        { "{\"table\":\"F0411\",\"key\":[\"A\",\"B\",\"C\",\"D\",\"E\",\"F\",\"G\",\"H\",\"I\"]}", "source.key" },
        { "{\"table\":\"F0411\",\"key\":[\"DOC\",\"DOC\"]}", "listed twice" },
        { "{\"table\":\"F0411\",\"key\":[\"DOC\",3]}", "source.key" },
        { "{\"table\":\"F0411\",\"key\":[\"F0411.DOC\"]}", "source.key" },
        { "{\"table\":\"F0411\",\"key\":7}", "source.key" },
        { "{\"table\":\"F0411\",\"changed\":\"UPMJ\"}", "source.changed" },
        { "{\"table\":\"F0411\",\"changed\":{\"date\":\"UP MJ\"}}", "source.changed" },
        { "{\"table\":\"F0411\",\"key_type\":\"text\"}", "source.key_type" },
        { "{\"table\":\"F04 11\"}", "source.table" },
    };
    struct mlc_errbuf e = { 0 };
    struct jde_table t;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *src = cJSON_Parse(cases[i].src);
        int rc;
        mlc_err_reset(&e);
        rc = jde_table_from_source(src, &t, &e);
        if (cases[i].err == NULL) {
            CHECK_INT(rc, 0);
        } else {
            CHECK_INT(rc, -1);
            CHECK(strstr(mlc_err_msg(&e), cases[i].err) != NULL);
        }
        cJSON_Delete(src);
    }
    {
        /* F4801 keeps UPMJ + TDAY and a numeric DOCO; other tables default to UPMT */
        cJSON *a = cJSON_Parse("{\"table\":\"F4801\"}"), *b = cJSON_Parse("{\"table\":\"F0901\","
                                                                         "\"key\":\"AID\",\"key_type\":\"string\","
                                                                         "\"changed\":{\"time\":\"UPMT\"}}");
        CHECK_INT(jde_table_from_source(a, &t, &e), 0);
        CHECK_STR(t.key_col, "DOCO");
        CHECK_STR(t.date_col, "UPMJ");
        CHECK_STR(t.time_col, "TDAY");
        CHECK_INT(t.key_numeric, 1);
        CHECK_INT(jde_table_from_source(b, &t, &e), 0);
        CHECK_STR(t.key_col, "AID");
        CHECK_STR(t.date_col, "UPMJ");
        CHECK_STR(t.time_col, "UPMT");
        CHECK_INT(t.key_numeric, 0);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
}

static cJSON *row(void)
{
    return cJSON_Parse("{\"DOCO\":100001,\"DL01\":\"Replace pump seal   \",\"PRTS\":\"2\","
                       "\"DRQJ\":\"20240301\",\"STRJ\":\"124015\",\"DCTO\":\"WO\","
                       "\"MCU\":\"         M30\",\"ANP\":6001,\"NOPE\":\"\"}");
}

static void mapping_applies_rules(void)
{
    cJSON *spec = cJSON_Parse(
        "{\"summary\":\"WO {DOCO}: {DL01}\","
        "\"priority\":{\"from\":\"PRTS\",\"map\":{\"1\":\"Highest\",\"2\":\"High\"},\"default\":\"Medium\"},"
        "\"duedate\":{\"from\":\"DRQJ\",\"date\":\"yyyymmdd\"},"
        "\"start\":{\"from\":\"STRJ\",\"date\":\"julian\"},"
        "\"labels\":{\"list\":[\"jde\",\"wo-{DCTO}\",\"{NOPE}\"]},"
        "\"customfield_10051\":{\"from\":\"MCU\"},"
        "\"assignee\":{\"from\":\"ANP\",\"map\":{\"6001\":\"maria.lopez@example.com\"}},"
        "\"empty\":{\"from\":\"NOPE\"}}");
    struct mlc_errbuf e = { 0 };
    struct mapping *m = mapping_compile(spec, "flows.wo.mapping", &e);
    cJSON *r = row(), *out;
    char *s;

    CHECK(m != NULL);
    out = mapping_apply(m, r, &e);
    CHECK(out != NULL);
    s = cJSON_PrintUnformatted(out);
    CHECK_STR(s, "{\"summary\":\"WO 100001: Replace pump seal\",\"priority\":\"High\","
                 "\"duedate\":\"2024-03-01\",\"start\":\"2024-01-15\",\"labels\":[\"jde\",\"wo-WO\"],"
                 "\"customfield_10051\":\"M30\",\"assignee\":\"maria.lopez@example.com\"}");
    free(s);
    cJSON_Delete(out);
    {
        cJSON *vals = mapping_values(m, "priority");
        CHECK_INT(cJSON_GetArraySize(vals), 3);
        cJSON_Delete(vals);
    }
    mapping_free(m);
    cJSON_Delete(spec);
    cJSON_Delete(r);
}

static void mapping_items_rule(void)
{
    cJSON *spec = cJSON_Parse(
        "{\"comments\":{\"items\":[{\"id\":\"a-{DOCO}\",\"text\":\"Note {DL01}\"},"
        "{\"id\":\"b-{NOPE}\",\"text\":\"Blank {NOPE}\"}]},"
        "\"lines\":{\"items\":{\"id\":\"{SEQ}\",\"text\":\"{TEXT}\"},\"each\":\"NOTES\"},"
        "\"one\":{\"items\":{\"n\":\"{DOCO}\"}}}");
    struct mlc_errbuf e = { 0 };
    struct mapping *m = mapping_compile(spec, "flows.po.mapping", &e);
    cJSON *r = row(), *out;
    char *s;

    CHECK(m != NULL);
    cJSON_AddItemToObject(r, "NOTES", cJSON_Parse("[{\"SEQ\":1,\"TEXT\":\" first \"},{\"SEQ\":\"\","
                                                  "\"TEXT\":\"\"},\"junk\",{\"SEQ\":\"0003\","
                                                  "\"TEXT\":\"third\"}]"));
    out = mapping_apply(m, r, &e);
    CHECK(out != NULL);
    s = cJSON_PrintUnformatted(out);
    /* an object none of whose columns has a value is no item; literal text alone is not one */
    CHECK_STR(s, "{\"comments\":[{\"id\":\"a-100001\",\"text\":\"Note Replace pump seal\"}],"
                 "\"lines\":[{\"id\":\"1\",\"text\":\"first\"},{\"id\":\"0003\",\"text\":\"third\"}],"
                 "\"one\":[{\"n\":\"100001\"}]}");
    free(s);
    cJSON_Delete(out);
    mapping_free(m);
    cJSON_Delete(spec);
    cJSON_Delete(r);
    /* bad shapes name the path */
    spec = cJSON_Parse("{\"comments\":{\"items\":[\"x\"]}}");
    CHECK(mapping_compile(spec, "flows.po.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.po.mapping.comments.items") != NULL);
    cJSON_Delete(spec);
    mlc_err_reset(&e);
    spec = cJSON_Parse("{\"comments\":{\"from\":\"DL01\",\"each\":\"NOTES\"}}");
    CHECK(mapping_compile(spec, "flows.po.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.po.mapping.comments.each") != NULL);
    cJSON_Delete(spec);
    mlc_err_reset(&e);
    spec = cJSON_Parse("{\"comments\":{\"items\":{\"id\":\"{A B}\"}}}");
    CHECK(mapping_compile(spec, "flows.po.mapping", &e) == NULL);
    cJSON_Delete(spec);
}

static void mapping_from_list_takes_the_first_value(void)
{
    cJSON *spec = cJSON_Parse("{\"assignee\":{\"from\":[\"MAIL\",\"USER\"],"
                              "\"map\":{\"TNOWAK\":\"tomasz@example.com\"}}}");
    struct mlc_errbuf e = { 0 };
    struct mapping *m = mapping_compile(spec, "flows.po.mapping", &e);
    cJSON *r = cJSON_Parse("{\"MAIL\":\" ann@example.com \",\"USER\":\"ANN\"}"), *out;

    CHECK(m != NULL);
    out = mapping_apply(m, r, &e);
    CHECK_STR(mlc_json_str(out, "assignee"), "ann@example.com");
    cJSON_Delete(out);
    cJSON_Delete(r);
    /* a null or blank first column: the next one, then through the map */
    r = cJSON_Parse("{\"MAIL\":null,\"USER\":\"TNOWAK\"}");
    out = mapping_apply(m, r, &e);
    CHECK_STR(mlc_json_str(out, "assignee"), "tomasz@example.com");
    cJSON_Delete(out);
    cJSON_Delete(r);
    r = cJSON_Parse("{\"MAIL\":\"  \"}");
    out = mapping_apply(m, r, &e);
    CHECK(out != NULL && cJSON_GetObjectItem(out, "assignee") == NULL);
    cJSON_Delete(out);
    cJSON_Delete(r);
    /* not one column: no reverse mapping through it */
    CHECK(mapping_source_column(m, "assignee") == NULL);
    mapping_free(m);
    cJSON_Delete(spec);
    spec = cJSON_Parse("{\"assignee\":{\"from\":[]}}");
    CHECK(mapping_compile(spec, "flows.po.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.po.mapping.assignee.from") != NULL);
    cJSON_Delete(spec);
    mlc_err_reset(&e);
    spec = cJSON_Parse("{\"assignee\":{\"from\":[\"A\",3]}}");
    CHECK(mapping_compile(spec, "flows.po.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.po.mapping.assignee.from") != NULL);
    cJSON_Delete(spec);
}

static void mapping_errors_name_the_path(void)
{
    struct mlc_errbuf e = { 0 };
    cJSON *spec = cJSON_Parse("{\"summary\":{\"from\":\"DL01\",\"date\":\"weird\"}}");

    CHECK(mapping_compile(spec, "flows.wo.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.wo.mapping.summary.date") != NULL);
    cJSON_Delete(spec);
    mlc_err_reset(&e);
    spec = cJSON_Parse("{\"summary\":\"WO {DO CO}\"}");
    CHECK(mapping_compile(spec, "flows.wo.mapping", &e) == NULL);
    CHECK(strstr(mlc_err_msg(&e), "flows.wo.mapping.summary") != NULL);
    cJSON_Delete(spec);
    mlc_err_reset(&e);
    spec = cJSON_Parse("{\"summary\":{\"from\":\"NOPE\",\"required\":true},"
                       "\"due\":{\"from\":\"DL01\",\"date\":\"yyyymmdd\"}}");
    {
        struct mapping *m = mapping_compile(spec, "m", &e);
        cJSON *r = row();
        CHECK(m != NULL);
        CHECK(mapping_apply(m, r, &e) == NULL);
        CHECK(strstr(mlc_err_msg(&e), "'summary' is required") != NULL);
        mapping_free(m);
        cJSON_Delete(r);
    }
    cJSON_Delete(spec);
}

/* "decimals": JD Edwards amounts are integers with implied decimals */
static void mapping_implied_decimals(void)
{
    static const struct {
        const char *in;
        int places;
        const char *out; /* NULL: an error naming the field */
    } cases[] = {
        { "123456", 2, "1234.56" },   { "-123456", 2, "-1234.56" }, { "5", 2, "0.05" },
        { "-5", 2, "-0.05" },         { "0", 2, "0.00" },           { "-000", 2, "0.00" },
        { "+0042", 2, "0.42" },       { "7", 0, "7" },              { "100", 3, "0.100" },
        { "123456789012345", 2, "1234567890123.45" },
        { "1", 18, "0.000000000000000001" },
        { "12.5", 2, NULL },          { "1e3", 2, NULL },           { "-", 2, NULL },
        { "12 34", 2, NULL },         { "abc", 2, NULL },           { "--1", 2, NULL },
    };
    struct mlc_errbuf e = { 0 };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char spec_text[160];
        cJSON *spec, *r, *out;
        struct mapping *m;

        snprintf(spec_text, sizeof(spec_text),
                 "{\"gross_amount\":{\"from\":\"AG\",\"decimals\":%d},\"doc\":\"{DOC}\"}",
                 cases[i].places);
        spec = cJSON_Parse(spec_text);
        m = mapping_compile(spec, "flows.ap.mapping", &e);
        CHECK(m != NULL);
        r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "AG", cases[i].in);
        cJSON_AddNumberToObject(r, "DOC", 4711);
        mlc_err_reset(&e);
        out = mapping_apply(m, r, &e);
        if (cases[i].out != NULL) {
            CHECK(out != NULL);
            CHECK_STR(mlc_json_str(out, "gross_amount"), cases[i].out);
            CHECK_STR(mlc_json_str(out, "doc"), "4711"); /* other fields untouched */
        } else {
            CHECK(out == NULL);
            CHECK(strstr(mlc_err_msg(&e), "field 'gross_amount'") != NULL);
            CHECK(strstr(mlc_err_msg(&e), cases[i].in) != NULL);
        }
        cJSON_Delete(out);
        cJSON_Delete(r);
        mapping_free(m);
        cJSON_Delete(spec);
    }
    {
        /* a JSON number (how AIS sends numeric columns), a blank and a missing column */
        cJSON *spec = cJSON_Parse("{\"a\":{\"from\":\"AG\",\"decimals\":2},"
                                  "\"b\":{\"from\":\"AAP\",\"decimals\":2},"
                                  "\"c\":{\"from\":\"NOPE\",\"decimals\":2},"
                                  "\"d\":\"{DOC}\"}");
        cJSON *r = cJSON_Parse("{\"AG\":-250075,\"AAP\":\"   \",\"DOC\":\"12.5\"}"), *out;
        struct mapping *m = mapping_compile(spec, "flows.ap.mapping", &e);
        CHECK(m != NULL);
        out = mapping_apply(m, r, &e);
        CHECK(out != NULL);
        CHECK_STR(mlc_json_str(out, "a"), "-2500.75");
        CHECK(cJSON_GetObjectItem(out, "b") == NULL); /* "" stays "" (a NULL column) */
        CHECK(cJSON_GetObjectItem(out, "c") == NULL);
        CHECK_STR(mlc_json_str(out, "d"), "12.5"); /* a template without decimals: as it is */
        CHECK(mapping_source_column(m, "a") == NULL); /* no reverse mapping through decimals */
        cJSON_Delete(out);
        cJSON_Delete(r);
        mapping_free(m);
        cJSON_Delete(spec);
    }
    {
        static const char *const bad[] = {
            "{\"x\":{\"from\":\"AG\",\"decimals\":19}}",
            "{\"x\":{\"from\":\"AG\",\"decimals\":-1}}",
            "{\"x\":{\"from\":\"AG\",\"decimals\":1.5}}",
            "{\"x\":{\"from\":\"AG\",\"decimals\":\"2\"}}",
            "{\"x\":{\"from\":\"AG\",\"decimals\":2,\"date\":\"julian\"}}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            cJSON *spec = cJSON_Parse(bad[i]);
            mlc_err_reset(&e);
            CHECK(mapping_compile(spec, "flows.ap.mapping", &e) == NULL);
            CHECK(strstr(mlc_err_msg(&e), "flows.ap.mapping.x.decimals") != NULL);
            cJSON_Delete(spec);
        }
    }
}

static char dbpath[64], keypath[64];

static void state_tables_work(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct ledger_row lr = { 0 }, got;
    struct outbox_row rows[4];
    char *cur = NULL, hash[65];
    int n;

    snprintf(dbpath, sizeof(dbpath), "/tmp/mlc-test-%d.db", (int)getpid());
    unlink(dbpath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    if (st == NULL) {
        return;
    }
    CHECK_INT(state_cursor_get(st, "wo", &cur, &e), MLC_OK);
    CHECK(cur == NULL);
    CHECK_INT(state_begin(st, &e), MLC_OK);
    CHECK_INT(state_outbox_put(st, "wo", "1", "create", NULL, "{\"a\":1}", "h1", "aid1", &e), MLC_OK);
    CHECK_INT(state_outbox_put(st, "wo", "1", "create", NULL, "{\"a\":2}", "h2", "aid2", &e), MLC_OK);
    CHECK_INT(state_cursor_set(st, "wo", "20240115|093015|1", &e), MLC_OK);
    CHECK_INT(state_commit(st, &e), MLC_OK);
    CHECK_INT(state_outbox_count(st, "wo"), 1);
    CHECK_INT(state_outbox_hash(st, "wo", "1", hash), 0);
    CHECK_STR(hash, "h2");
    n = state_outbox_next(st, "wo", "pending", "create", rows, 4, state_now());
    CHECK_INT(n, 1);
    CHECK_STR(rows[0].payload, "{\"a\":2}");
    CHECK_INT(state_outbox_mark_inflight(st, rows[0].id, "h2", &e), MLC_OK);
    /* a newer version arriving while in flight keeps the create op for recovery */
    CHECK_INT(state_outbox_put(st, "wo", "1", "update", "MFG-1", "{\"a\":3}", "h3", "aid3", &e), MLC_OK);
    outbox_row_release(&rows[0]);
    n = state_outbox_next(st, "wo", "inflight", NULL, rows, 4, 1LL << 62);
    CHECK_INT(n, 1);
    CHECK_STR(rows[0].op, "create");
    CHECK_STR(rows[0].sent_hash, "h2");
    CHECK_STR(rows[0].hash, "h3");
    CHECK_INT(state_outbox_delete(st, rows[0].id, &e), MLC_OK);
    outbox_row_release(&rows[0]);
    snprintf(lr.hash, sizeof(lr.hash), "h3");
    snprintf(lr.target_key, sizeof(lr.target_key), "MFG-1");
    snprintf(lr.target_id, sizeof(lr.target_id), "10000");
    snprintf(lr.audit_id, sizeof(lr.audit_id), "aid3");
    CHECK_INT(state_ledger_put(st, "wo", "1", &lr, &e), MLC_OK);
    CHECK_INT(state_ledger_get(st, "wo", "1", &got, &e), MLC_OK);
    CHECK_STR(got.target_key, "MFG-1");
    CHECK_INT(state_ledger_get(st, "wo", "2", &got, &e), MLC_E_NOTFOUND);
    /* the list values set last time come back for the next update's removals */
    {
        char *lists = NULL;
        lr.lists = "{\"labels\":[\"jde\"],\"comments\":[\"c1\"]}";
        CHECK_INT(state_ledger_put(st, "wo", "1", &lr, &e), MLC_OK);
        CHECK_INT(state_ledger_lists(st, "wo", "1", &lists, &e), MLC_OK);
        CHECK_STR(lists, "{\"labels\":[\"jde\"],\"comments\":[\"c1\"]}");
        free(lists);
        lr.lists = NULL; /* a write without lists keeps the last ones */
        CHECK_INT(state_ledger_put(st, "wo", "1", &lr, &e), MLC_OK);
        CHECK_INT(state_ledger_lists(st, "wo", "1", &lists, &e), MLC_OK);
        CHECK(lists != NULL);
        free(lists);
        CHECK_INT(state_ledger_lists(st, "wo", "2", &lists, &e), MLC_OK);
        CHECK(lists == NULL);
    }
    CHECK_INT(state_dead_put(st, "wo", "2", "{}", "hx", "bad", "aid4", 1, &e), MLC_OK);
    CHECK_INT(state_dead_has(st, "wo", "2", "hx"), 0);
    CHECK_INT(state_dead_has(st, "wo", "2", "hy"), -1);
    CHECK_INT(state_dead_replay(st, "wo", &e), 1);
    CHECK_INT(state_dead_count(st, "wo"), 0);
    CHECK_INT(state_outbox_count(st, "wo"), 1);
    CHECK_INT(state_cursor_get(st, "wo", &cur, &e), MLC_OK);
    CHECK_STR(cur, "20240115|093015|1");
    free(cur);
    state_close(st);
    /* reopening runs no migration twice */
    st = NULL;
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    state_close(st);
}

static void secrets_round_trip(void)
{
    struct mlc_errbuf e = { 0 };
    struct state *st = NULL;
    struct secret_store *ss = NULL, *ss2 = NULL;
    char *v = NULL;
    FILE *f;

    snprintf(keypath, sizeof(keypath), "/tmp/mlc-test-%d.key", (int)getpid());
    unlink(keypath);
    CHECK_INT(state_open(&st, dbpath, &e), MLC_OK);
    CHECK_INT(secrets_open(&ss, st, keypath, 0, &e), MLC_E_NOTFOUND);
    mlc_err_reset(&e);
    CHECK_INT(secrets_open(&ss, st, keypath, 1, &e), MLC_OK);
    CHECK(access(keypath, R_OK) == 0);
    CHECK_INT(secrets_put(ss, "jde_password", "s3cret-value", &e), MLC_OK);
    CHECK_INT(secrets_get(ss, "jde_password", &v, &e), MLC_OK);
    CHECK_STR(v, "s3cret-value");
    free(v);
    v = NULL;
    CHECK_INT(secrets_get(ss, "missing", &v, &e), MLC_E_NOTFOUND);
    CHECK(strstr(mlc_err_msg(&e), "mlc-agent secret set missing") != NULL);
    /* the database never holds the plain value */
    {
        sqlite3_stmt *q;
        sqlite3_prepare_v2(st->db, "SELECT count(*) FROM state_secret WHERE instr(sealed, 's3cret') > 0",
                           -1, &q, NULL);
        CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 0);
        sqlite3_finalize(q);
    }
    /* another key cannot open it */
    secrets_close(ss);
    f = fopen(keypath, "wb");
    fwrite("0123456789abcdef0123456789abcdef", 1, 32, f);
    fclose(f);
    mlc_err_reset(&e);
    CHECK_INT(secrets_open(&ss2, st, keypath, 0, &e), MLC_OK);
    CHECK(secrets_get(ss2, "jde_password", &v, &e) != MLC_OK);
    CHECK(strstr(mlc_err_msg(&e), "cannot be decrypted") != NULL);
    secrets_close(ss2);
    state_close(st);
    unlink(keypath);
    unlink(dbpath);
    {
        char wal[80];
        snprintf(wal, sizeof(wal), "%s-wal", dbpath);
        unlink(wal);
        snprintf(wal, sizeof(wal), "%s-shm", dbpath);
        unlink(wal);
    }
}

/* A durable retry is never due at once, grows with the attempt and stops
 * growing at an hour. */
static void retry_delay_is_bounded_and_grows(void)
{
    long long lo[4] = { 1LL << 62, 1LL << 62, 1LL << 62, 1LL << 62 }, hi[4] = { 0 };
    const int att[4] = { 1, 2, 3, 40 };

    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 2000; i++) {
            long long d = pipeline_retry_delay_ms(att[k]);
            lo[k] = d < lo[k] ? d : lo[k];
            hi[k] = d > hi[k] ? d : hi[k];
        }
    }
    CHECK(lo[0] >= 2500 && hi[0] <= 5000 && hi[0] > lo[0]);
    CHECK(lo[1] >= 5000 && hi[1] <= 10000);
    CHECK(lo[2] >= 10000 && hi[2] <= 20000);
    CHECK(lo[3] >= 1800000 && hi[3] <= 3600000);
    CHECK(pipeline_retry_delay_ms(0) >= 2500 && pipeline_retry_delay_ms(0) <= 5000);
}

int main(void)
{
    RUN(jde_page_parses_rows_and_link);
    RUN(jde_page_rejects_garbage);
    RUN(jde_cursor_round_trip);
    RUN(jde_page_composite_keys);
    RUN(jde_source_settings);
    RUN(mapping_applies_rules);
    RUN(mapping_items_rule);
    RUN(mapping_from_list_takes_the_first_value);
    RUN(mapping_errors_name_the_path);
    RUN(mapping_implied_decimals);
    RUN(state_tables_work);
    RUN(secrets_round_trip);
    RUN(retry_delay_is_bounded_and_grows);
    return TT_DONE();
}
