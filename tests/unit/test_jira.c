/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the Jira connector's pure parts (plain text to ADF, bulk create
 * response mapping, search pages, error bodies, JQL, summary and label
 * cleaning, webhook expirationDate and timestamps, the changes() query and
 * its status bookkeeping) and its config validation in open().
 */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_log.h"
#include "tinytest.h"

/* ADF of text, printed compactly (static buffer, one at a time). */
static const char *adf(const char *text)
{
    static char out[4096];
    cJSON *doc = jira_adf_from_text(text);
    char *s;

    out[0] = '\0';
    if (doc == NULL) {
        return "(null)";
    }
    s = cJSON_PrintUnformatted(doc);
    snprintf(out, sizeof(out), "%s", s);
    free(s);
    cJSON_Delete(doc);
    return out;
}

#define DOC(x)  "{\"version\":1,\"type\":\"doc\",\"content\":[" x "]}"
#define PARA(x) "{\"type\":\"paragraph\",\"content\":[" x "]}"
#define TEXT(x) "{\"type\":\"text\",\"text\":\"" x "\"}"
#define HB      "{\"type\":\"hardBreak\"}"

static void adf_spec_example(void)
{
    CHECK_STR(adf("Line 1\nLine 2\n\nNew para"),
              DOC(PARA(TEXT("Line 1") "," HB "," TEXT("Line 2")) "," PARA(TEXT("New para"))));
}

static void adf_crlf_and_cr(void)
{
    const char *want =
        DOC(PARA(TEXT("Line 1") "," HB "," TEXT("Line 2")) "," PARA(TEXT("New para")));

    CHECK_STR(adf("Line 1\r\nLine 2\r\n\r\nNew para"), want);
    CHECK_STR(adf("Line 1\rLine 2\r\rNew para"), want);
    CHECK_STR(adf("Line 1\r\nLine 2\r\n\r\n\r\n\r\nNew para\r\n"), want);
}

static void adf_empty_input(void)
{
    const char *want = DOC(PARA(""));

    CHECK_STR(adf(""), want);
    CHECK_STR(adf(NULL), want);
    CHECK_STR(adf("\n\n\n"), want);
    CHECK_STR(adf(" \t \n  \r\n\t"), want);
    CHECK_STR(adf("\x01\x02\x1f"), want);
}

static void adf_drops_blank_paragraphs(void)
{
    CHECK_STR(adf("a\n\n   \t\n\nb"), DOC(PARA(TEXT("a")) "," PARA(TEXT("b"))));
    /* a line of spaces separates paragraphs like an empty one */
    CHECK_STR(adf("a\n  \nb"), DOC(PARA(TEXT("a")) "," PARA(TEXT("b"))));
    /* leading and trailing line breaks make no empty text or stray hardBreak */
    CHECK_STR(adf("\na\n"), DOC(PARA(TEXT("a"))));
    CHECK_STR(adf("\n\n\nx\n\n\n"), DOC(PARA(TEXT("x"))));
    /* spaces inside a line stay */
    CHECK_STR(adf("  indented\tline "), DOC(PARA(TEXT("  indented\\tline "))));
}

static void adf_strips_controls(void)
{
    CHECK_STR(adf("a\x01"
                  "b\x1b[0m\x7f"),
              DOC(PARA(TEXT("ab[0m\x7f"))));
    CHECK_STR(adf("x\x00y"), DOC(PARA(TEXT("x"))));
    CHECK_STR(adf("tab\there"), DOC(PARA(TEXT("tab\\there"))));
}

static void adf_repairs_utf8(void)
{
    /* valid multi-byte text passes untouched */
    CHECK_STR(adf("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
              DOC(PARA(TEXT("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"))));
    /* Latin-1 byte, overlong '/', surrogate, truncated sequence at the end */
    CHECK_STR(adf("Stra\xdf"
                  "e"),
              DOC(PARA(TEXT("Stra\xef\xbf\xbd"
                            "e"))));
    CHECK_STR(adf("\xc0\xaf"), DOC(PARA(TEXT("\xef\xbf\xbd\xef\xbf\xbd"))));
    CHECK_STR(adf("\xed\xa0\x80"), DOC(PARA(TEXT("\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"))));
    CHECK_STR(adf("a\xe2\x82"), DOC(PARA(TEXT("a\xef\xbf\xbd\xef\xbf\xbd"))));
    CHECK_STR(adf("\xf4\x90\x80\x80"),
              DOC(PARA(TEXT("\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"))));
}

static void sentinel(struct result *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].rc = (enum mlc_rc)99;
    }
}

static enum mlc_rc bulk(const char *body, size_t n, struct result *out)
{
    struct mlc_errbuf err = { 0 };

    return jira_parse_bulk_response(body, strlen(body), n, out, &err);
}

static void bulk_maps_gaps(void)
{
    static const char body[] =
        "{\"issues\":[{\"id\":\"10012\",\"key\":\"MFG-12\",\"self\":\"x\"},"
        "{\"id\":\"10013\",\"key\":\"MFG-13\"}],"
        "\"errors\":[{\"status\":400,\"failedElementNumber\":3,\"elementErrors\":"
        "{\"errorMessages\":[],\"errors\":{\"customfield_10050\":\"Field value is too long\"}}},"
        "{\"status\":400,\"failedElementNumber\":1,\"elementErrors\":"
        "{\"errorMessages\":[\"Field 'priority' is required\"],"
        "\"errors\":{\"summary\":\"You must specify a summary of the issue.\"}}},"
        "{\"status\":409,\"failedElementNumber\":0,\"elementErrors\":{}}]}";
    struct result out[5];

    sentinel(out, 5);
    CHECK_INT(bulk(body, 5, out), MLC_OK);
    CHECK_INT(out[0].rc, MLC_E_CONFLICT);
    CHECK_STR(out[0].err, "jira rejected the issue (HTTP 409)");
    CHECK_INT(out[1].rc, MLC_E_REJECTED);
    CHECK_STR(out[1].err,
              "Field 'priority' is required; summary: You must specify a summary of the issue.");
    CHECK_INT(out[2].rc, MLC_OK);
    CHECK_STR(out[2].target_key, "MFG-12");
    CHECK_STR(out[2].target_id, "10012");
    CHECK_STR(out[2].err, "");
    CHECK_INT(out[3].rc, MLC_E_REJECTED);
    CHECK_STR(out[3].err, "customfield_10050: Field value is too long");
    CHECK_INT(out[4].rc, MLC_OK);
    CHECK_STR(out[4].target_key, "MFG-13");
    CHECK_STR(out[4].target_id, "10013");
}

static void bulk_all_ok_and_all_failed(void)
{
    struct result out[2];

    sentinel(out, 2);
    CHECK_INT(bulk("{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"},{\"id\":2,\"key\":\"A-2\"}],"
                   "\"errors\":[]}",
                   2, out),
              MLC_OK);
    CHECK(out[0].rc == MLC_OK && strcmp(out[0].target_key, "A-1") == 0);
    CHECK(out[1].rc == MLC_OK && strcmp(out[1].target_id, "2") == 0);
    /* 400: every entry failed; "issues" may be empty or missing */
    sentinel(out, 2);
    CHECK_INT(bulk("{\"errors\":[{\"failedElementNumber\":1,\"elementErrors\":{\"errorMessages\":"
                   "[\"x\"]}},{\"failedElementNumber\":0,\"status\":500}]}",
                   2, out),
              MLC_OK);
    CHECK_INT(out[0].rc, MLC_E_NET);
    CHECK_INT(out[1].rc, MLC_E_REJECTED);
    CHECK_STR(out[1].err, "x");
}

static void bulk_rejects_garbage(void)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{\"issues\":{}}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}]",                 /* truncated */
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}]}",                /* 1 of 2 */
        "{\"issues\":[{\"id\":\"1\"},{\"id\":\"2\",\"key\":\"A-2\"}]}", /* no key */
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}],\"errors\":[{\"failedElementNumber\":2}]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}],\"errors\":[{\"failedElementNumber\":-1}]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}],\"errors\":[{\"failedElementNumber\":0.5}]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}],\"errors\":[{\"failedElementNumber\":\"1\"}]"
        "}",
        "{\"errors\":[{\"failedElementNumber\":1},{\"failedElementNumber\":1}]}", /* repeated */
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"},{\"id\":\"2\",\"key\":\"A-2\"},"
        "{\"id\":\"3\",\"key\":\"A-3\"}]}", /* too many */
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\"}],\"errors\":[7]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":"
        "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "\"},{\"id\":\"2\",\"key\":\"A-2\"}]}", /* key too long for result */
        NULL,
    };
    struct result out[2];

    for (size_t i = 0; bad[i] != NULL; i++) {
        enum mlc_rc rc;

        sentinel(out, 2);
        rc = bulk(bad[i], 2, out);
        if (rc != MLC_E_PROTO) {
            fprintf(stderr, "  case %zu accepted: %s\n", i, bad[i]);
        }
        CHECK_INT(rc, MLC_E_PROTO);
        /* nothing written on a bad body */
        CHECK(out[0].rc == (enum mlc_rc)99 && out[1].rc == (enum mlc_rc)99);
    }
    CHECK_INT(bulk("{}", 0, out), MLC_OK);
    CHECK_INT(jira_parse_bulk_response(NULL, 0, 1, out, NULL), MLC_E_PROTO);
}

struct seen {
    char buf[512];
};

static void on_label(void *ctx, const char *label, const char *key, const char *id,
                     const char *hash)
{
    struct seen *s = ctx;
    size_t n = strlen(s->buf);

    snprintf(s->buf + n, sizeof(s->buf) - n, "%s=%s/%s%s%.8s;", label, key, id, hash ? "#" : "",
             hash ? hash : "");
}

static enum mlc_rc search(const char *body, struct seen *s, char **tok)
{
    struct mlc_errbuf err = { 0 };

    s->buf[0] = '\0';
    return jira_parse_search_page(body, strlen(body), on_label, s, tok, &err);
}

static void search_pages(void)
{
    struct seen s;
    char *tok = NULL;

    CHECK_INT(search("{\"issues\":[{\"id\":\"10012\",\"key\":\"MFG-12\",\"fields\":{\"labels\":"
                     "[\"mlc-a\",\"other\"]}},{\"id\":\"10013\",\"key\":\"MFG-13\",\"fields\":{}},"
                     "{\"id\":\"10014\",\"key\":\"MFG-14\"}],"
                     "\"nextPageToken\":\"CAEaAggD\",\"isLast\":false}",
                     &s, &tok),
              MLC_OK);
    CHECK_STR(s.buf, "mlc-a=MFG-12/10012;other=MFG-12/10012;");
    CHECK_STR(tok, "CAEaAggD");
    free(tok);
    tok = NULL;
    /* the agent's trace property: its content hash (64 hex) is reported, anything else is not */
    CHECK_INT(search("{\"issues\":[{\"id\":\"7\",\"key\":\"MFG-7\",\"fields\":{\"labels\":[\"m\"]},"
                     "\"properties\":{\"mlc.trace\":{\"hash\":\"0123456789abcdef0123456789abcdef"
                     "0123456789abcdef0123456789abcdef\"}}},{\"id\":\"8\",\"key\":\"MFG-8\","
                     "\"fields\":{\"labels\":[\"n\"]},\"properties\":{\"mlc.trace\":{\"hash\":\"short\"}}},"
                     "{\"id\":\"9\",\"key\":\"MFG-9\",\"fields\":{\"labels\":[\"o\"]},"
                     "\"properties\":{\"mlc.trace\":7}}],\"isLast\":true}",
                     &s, &tok),
              MLC_OK);
    CHECK_STR(s.buf, "m=MFG-7/7#01234567;n=MFG-8/8;o=MFG-9/9;");
    CHECK(tok == NULL);
    CHECK_INT(search("{\"issues\":[],\"isLast\":true}", &s, &tok), MLC_OK);
    CHECK(tok == NULL);
    /* a token on the last page is ignored; no isLast: the token decides */
    CHECK_INT(search("{\"issues\":[],\"isLast\":true,\"nextPageToken\":\"x\"}", &s, &tok), MLC_OK);
    CHECK(tok == NULL);
    CHECK_INT(search("{\"issues\":[],\"nextPageToken\":\"y\"}", &s, &tok), MLC_OK);
    CHECK_STR(tok, "y");
    free(tok);
    tok = NULL;
    CHECK_INT(search("{\"issues\":[]}", &s, &tok), MLC_OK);
    CHECK(tok == NULL);
}

static void search_rejects_garbage(void)
{
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"isLast\":true}",
        "{\"issues\":{}}",
        "{\"issues\":[],\"isLast\":false}",
        "{\"issues\":[],\"isLast\":\"no\"}",
        "{\"issues\":[],\"isLast\":false,\"nextPageToken\":5}",
        "{\"issues\":[{\"key\":\"A-1\"}],\"isLast\":true}",
        "{\"issues\":[1],\"isLast\":true}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\",\"fields\":{\"labels\":\"x\"}}]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\",\"fields\":{\"labels\":[1]}}]}",
        "{\"issues\":[{\"id\":\"1\",\"key\":\"A-1\",\"fields\":[]}]}",
        NULL,
    };
    struct seen s;

    for (size_t i = 0; bad[i] != NULL; i++) {
        char *tok = (char *)"sentinel";
        enum mlc_rc rc = search(bad[i], &s, &tok);

        if (rc != MLC_E_PROTO) {
            fprintf(stderr, "  case %zu accepted: %s\n", i, bad[i]);
        }
        CHECK_INT(rc, MLC_E_PROTO);
        CHECK(tok == NULL);
    }
}

static void error_text_one_line(void)
{
    static const char ec[] = "{\"errorMessages\":[\"Issue does not exist or you do not have "
                             "permission to see it.\"],\"errors\":{\"customfield_10050\":\"Field "
                             "value is too long\"}}";
    static const char oauth[] = "{\"error\":\"invalid_grant\",\"error_description\":\"Unknown or "
                                "invalid refresh token.\"}";
    char out[256], tiny[8];

    CHECK_INT(jira_error_text(ec, strlen(ec), out, sizeof(out)), MLC_OK);
    CHECK_STR(out, "Issue does not exist or you do not have permission to see it.; "
                   "customfield_10050: Field value is too long");
    CHECK_INT(jira_error_text(oauth, strlen(oauth), out, sizeof(out)), MLC_OK);
    CHECK_STR(out, "Unknown or invalid refresh token.");
    CHECK_INT(jira_error_text("<html>\n<b>Bad gateway</b>", 25, out, sizeof(out)), MLC_E_PROTO);
    CHECK_STR(out, "<html> <b>Bad gateway</b>");
    CHECK_INT(jira_error_text("{\"errorMessages\":[],\"errors\":{}}", 31, out, sizeof(out)),
              MLC_E_PROTO);
    CHECK_INT(jira_error_text(NULL, 0, out, sizeof(out)), MLC_E_PROTO);
    CHECK_STR(out, "");
    CHECK_INT(jira_error_text(ec, strlen(ec), tiny, sizeof(tiny)), MLC_OK);
    CHECK_STR(tiny, "Issue d");
}

static void jql_escapes(void)
{
    const char *m[] = { "mlc-ab12", "we\"ird\\" };
    struct mlc_buf b = MLC_BUF_INIT;

    CHECK_INT(jira_jql_markers(&b, "MFG", m, 2), MLC_OK);
    CHECK_STR(mlc_buf_str(&b), "project = \"MFG\" AND labels in (\"mlc-ab12\", \"we\\\"ird\\\\\")");
    mlc_buf_release(&b);
    CHECK_INT(jira_jql_markers(&b, "MFG", m, 0), MLC_E_INVAL);
    mlc_buf_release(&b);
    /* a target whose mapping picks the project searches all of them */
    CHECK_INT(jira_jql_markers(&b, "MFG,OPS", m, 1), MLC_OK);
    CHECK_STR(mlc_buf_str(&b), "project in (\"MFG\", \"OPS\") AND labels in (\"mlc-ab12\")");
    mlc_buf_release(&b);
}

static void summary_and_labels(void)
{
    char out[300], big[400], *lab;

    jira_summary_clean("Pump 7\r\nleaks\tbadly\n", out, sizeof(out));
    CHECK_STR(out, "Pump 7 leaks badly ");
    /* 254 ASCII bytes then a 2-byte character: cut before it, not inside */
    memset(big, 'a', 254);
    strcpy(big + 254, "\xc3\xa9zzz");
    jira_summary_clean(big, out, sizeof(out));
    CHECK_INT(strlen(out), 254);
    memset(big, 'b', 300);
    big[300] = '\0';
    jira_summary_clean(big, out, sizeof(out));
    CHECK_INT(strlen(out), JIRA_SUMMARY_MAX);
    jira_summary_clean("abcdef", out, 4);
    CHECK_STR(out, "abc");
    lab = jira_label_clean("plant 7 pumps");
    CHECK_STR(lab, "plant_7_pumps");
    free(lab);
    CHECK(jira_label_clean("") == NULL);
}

static void connector_shape(void)
{
    CHECK_STR(connector_jira.name, "jira");
    CHECK_INT(connector_jira.caps, CONN_TARGET);
    CHECK(connector_jira.open != NULL && connector_jira.close != NULL);
    CHECK(connector_jira.ping != NULL && connector_jira.prepare != NULL);
    CHECK(connector_jira.apply != NULL && connector_jira.find != NULL);
    CHECK(connector_jira.poll == NULL && connector_jira.write_back == NULL);
    CHECK(connector_jira.watch != NULL && connector_jira.changes != NULL);
    CHECK(connector_jira.keys != NULL);
}

static long long tparse(const char *s)
{
    long long ms = -42;

    return jira_time_parse(s, &ms) == 0 ? ms : -1;
}

static void time_parse_forms(void)
{
    CHECK_INT(tparse("2019-06-01T12:42:30.000+0000"), 1559392950000LL);
    CHECK_INT(tparse("2019-06-01T12:42:30.000+00:00"), 1559392950000LL);
    CHECK_INT(tparse("2019-06-01T12:42:30Z"), 1559392950000LL);
    CHECK_INT(tparse("2019-06-01T12:42:30.5Z"), 1559392950500LL);
    CHECK_INT(tparse("2019-06-01T12:42:30.123456Z"), 1559392950123LL);
    CHECK_INT(tparse("2019-06-01T14:42:30.000+0200"), 1559392950000LL);
    CHECK_INT(tparse("2019-06-01T07:12:30.000-0530"), 1559392950000LL);
    CHECK_INT(tparse("1970-01-01T00:00:00.000+0000"), 0);
    CHECK_INT(tparse("2024-02-29T00:00:00Z"), 1709164800000LL);
    CHECK_INT(tparse("2019-06-01T12:42:30.000"), -1); /* no zone: ambiguous */
    CHECK_INT(tparse("2019-06-01T12:42:30.Z"), -1);
    CHECK_INT(tparse("2019-02-30T12:42:30Z"), -1);
    CHECK_INT(tparse("2019-13-01T12:42:30Z"), -1);
    CHECK_INT(tparse("2019-06-01T24:00:00Z"), -1);
    CHECK_INT(tparse("2019-06-01T12:42:30+0000x"), -1);
    CHECK_INT(tparse("2019-06-01"), -1);
    CHECK_INT(tparse(""), -1);
    CHECK_INT(tparse(NULL), -1);
}

static void time_format_round_trip(void)
{
    char out[40], small[11];

    jira_time_format(1559392950123LL, out, sizeof(out));
    CHECK_STR(out, "2019-06-01T12:42:30.123+0000");
    CHECK_INT(tparse(out), 1559392950123LL);
    jira_time_format(0, out, sizeof(out));
    CHECK_STR(out, "1970-01-01T00:00:00.000+0000");
    jira_time_format(-5, out, sizeof(out));
    CHECK_STR(out, "1970-01-01T00:00:00.000+0000");
    jira_time_format(1559392950123LL, small, sizeof(small));
    CHECK_STR(small, "2019-06-01");
}

static long long expparse(const char *json)
{
    cJSON *v = cJSON_Parse(json);
    long long ms = -42;
    int r = jira_expiration_parse(v, &ms);

    cJSON_Delete(v);
    return r == 0 ? ms : -1;
}

static void expiration_both_forms(void)
{
    /* the schema says int64 epoch ms; the published example is a string */
    CHECK_INT(expparse("1559392950000"), 1559392950000LL);
    CHECK_INT(expparse("\"2019-06-01T12:42:30.000+0000\""), 1559392950000LL);
    CHECK_INT(expparse("\"1559392950000\""), 1559392950000LL);
    CHECK_INT(expparse("1559392950000.0"), 1559392950000LL);
    CHECK_INT(expparse("-1"), -1);
    CHECK_INT(expparse("1e16"), -1);
    CHECK_INT(expparse("\"\""), -1);
    CHECK_INT(expparse("\"next week\""), -1);
    CHECK_INT(expparse("null"), -1);
    CHECK_INT(expparse("{\"ms\":1}"), -1);
    CHECK(jira_expiration_parse(NULL, &(long long){ 0 }) == -1);
}

static const char *jql_of(const char *project, long long since, long long now, int changes)
{
    static char out[256];
    struct mlc_buf b = MLC_BUF_INIT;
    enum mlc_rc rc =
        changes ? jira_jql_changes(&b, project, since, now) : jira_jql_project(&b, project);

    snprintf(out, sizeof(out), "%s", rc == MLC_OK ? mlc_buf_str(&b) : "(error)");
    mlc_buf_release(&b);
    return out;
}

static void jql_project_and_changes(void)
{
    long long now = 1700000000000LL;

    CHECK_STR(jql_of("MFG", 0, 0, 0), "project = MFG");
    CHECK_STR(jql_of("OPS_2", 0, 0, 0), "project = OPS_2");
    CHECK_STR(jql_of("MFG,OPS_2", 0, 0, 0), "project in (MFG, OPS_2)");
    CHECK_STR(jql_of("MFG,OPS", now - 60000, now, 1),
              "project in (MFG, OPS) AND updated >= \"-3m\" ORDER BY updated ASC");
    CHECK_STR(jql_of("My \"Proj\"", 0, 0, 0), "project = \"My \\\"Proj\\\"\"");
    CHECK_STR(jql_of("mfg", 0, 0, 0), "project = \"mfg\"");
    CHECK_STR(jql_of("", 0, 0, 0), "(error)");
    CHECK_STR(jql_of(NULL, 0, 0, 0), "(error)");
    /* whole minutes since the cursor, plus a minute of overlap and one for rounding */
    CHECK_STR(jql_of("MFG", now - 10 * 60000, now, 1),
              "project = MFG AND updated >= \"-12m\" ORDER BY updated ASC");
    CHECK_STR(jql_of("MFG", now - 10 * 60000 - 59999, now, 1),
              "project = MFG AND updated >= \"-12m\" ORDER BY updated ASC");
    CHECK_STR(jql_of("MFG", now, now, 1),
              "project = MFG AND updated >= \"-2m\" ORDER BY updated ASC");
    /* a cursor ahead of the server clock still looks back two minutes */
    CHECK_STR(jql_of("MFG", now + 3600000, now, 1),
              "project = MFG AND updated >= \"-2m\" ORDER BY updated ASC");
    CHECK_STR(jql_of("MFG", 0, now, 1),
              "project = MFG AND updated >= \"-5270402m\" ORDER BY updated ASC");
}

#define ISSUE(key, sid, sname, hist)                                              \
    "{\"id\":\"10001\",\"key\":\"" key "\",\"fields\":{\"status\":{\"id\":\"" sid \
    "\",\"name\":\"" sname "\"},\"labels\":[\"jdewo-100001\"],"                   \
    "\"updated\":\"2023-11-14T22:13:00.000+0000\"},\"changelog\":{\"histories\":[" hist "]}}"
#define HIST(when, from, fromS, to, toS)                                                       \
    "{\"id\":\"1\",\"created\":\"" when "\",\"author\":{\"accountId\":\"u1\","                 \
    "\"displayName\":\"Maria\"},\"items\":[{\"field\":\"status\",\"fieldtype\":\"jira\","      \
    "\"from\":\"" from "\",\"fromString\":\"" fromS "\",\"to\":\"" to "\",\"toString\":\"" toS \
    "\"}]}"

/* status changes in a changelog, newest first as Jira lists them */
#define H_DONE    HIST("2023-11-14T22:15:00.000+0000", "3", "In Progress", "10001", "Done")
#define H_BACK    HIST("2023-11-14T22:15:00.000+0000", "3", "In Progress", "10000", "To Do")
#define H_STARTED HIST("2023-11-14T22:14:00.000+0000", "10000", "To Do", "3", "In Progress")
#define H_OLD     HIST("2023-11-14T20:00:00.000+0000", "3", "In Progress", "10000", "To Do")

/* Run jira_change_event on issue JSON; the event printed (static) or "-". */
static const char *change(const char *issue_json, cJSON *seen, long long window, int emit)
{
    static char out[2048];
    cJSON *issue = cJSON_Parse(issue_json);
    cJSON *ev = jira_change_event(issue, seen, window, emit);
    char *s = ev != NULL ? cJSON_PrintUnformatted(ev) : NULL;

    CHECK(issue != NULL);
    snprintf(out, sizeof(out), "%s", s != NULL ? s : "-");
    free(s);
    cJSON_Delete(ev);
    cJSON_Delete(issue);
    return out;
}

#define ISSUE_DP(key, due, prio)                                                          \
    "{\"id\":\"10001\",\"key\":\"" key "\",\"fields\":{\"status\":{\"id\":\"3\","           \
    "\"name\":\"In Progress\"},\"labels\":[\"jdewo-100001\"],\"duedate\":" due ","          \
    "\"priority\":" prio ",\"updated\":\"2023-11-14T22:13:00.000+0000\"},"                  \
    "\"changelog\":{\"histories\":[]}}"

static void change_events(void)
{
    long long window = 1700000000000LL; /* 2023-11-14T22:13:20Z */
    cJSON *seen = cJSON_CreateObject();
    const char *ev;
    char *s;

    /* first sight, no status change in the window: recorded, nothing emitted */
    CHECK_STR(change(ISSUE("MFG-1", "10000", "To Do", ""), seen, window, 1), "-");
    s = cJSON_PrintUnformatted(seen);
    CHECK_STR(s, "{\"MFG-1\":[\"10000\",\"To Do\",\"\",\"\"]}");
    free(s);
    /* a change since: emitted once as a generic change, the last known
     * status name as from, fields.updated as its time, labels as markers */
    CHECK_STR(change(ISSUE("MFG-1", "3", "In Progress", ""), seen, window, 1),
              "{\"event\":\"poll\",\"record\":\"MFG-1\",\"author\":\"\",\"at_ms\":1699999980000,"
              "\"markers\":[\"jdewo-100001\"],"
              "\"items\":[{\"field\":\"status\",\"from\":\"To Do\",\"to\":\"In Progress\"}]}");
    CHECK_STR(change(ISSUE("MFG-1", "3", "In Progress", ""), seen, window, 1), "-");
    /* first sight with a status change in the changelog: from its start, by
     * the newest change's author and at its time */
    CHECK_STR(change(ISSUE("MFG-2", "10001", "Done", H_DONE "," H_STARTED "," H_OLD), seen,
                     window, 1),
              "{\"event\":\"poll\",\"record\":\"MFG-2\",\"author\":\"u1\",\"at_ms\":1700000100000,"
              "\"markers\":[\"jdewo-100001\"],"
              "\"items\":[{\"field\":\"status\",\"from\":\"To Do\",\"to\":\"Done\"}]}");
    /* the generic JSON reads back as the change it describes */
    {
        struct change ch;
        struct mlc_errbuf e = { 0 };
        ev = change(ISSUE("MFG-4", "10001", "Done", H_DONE "," H_STARTED), seen, window, 1);
        CHECK_INT(change_from_json(ev, strlen(ev), &ch, &e), MLC_OK);
        CHECK_STR(ch.record, "MFG-4");
        CHECK_STR(ch.author, "u1");
        CHECK_INT(ch.at_ms, 1700000100000LL);
        CHECK_INT(ch.n_items, 1);
        CHECK(change_item_find(&ch, "status") != NULL &&
              strcmp(change_item_find(&ch, "status")->to, "Done") == 0);
        CHECK_INT(cJSON_GetArraySize(ch.markers), 1);
        change_release(&ch);
        cJSON_DeleteItemFromObjectCaseSensitive(seen, "MFG-4");
    }
    /* first sight, changed and changed back inside the window: no net change */
    CHECK_STR(change(ISSUE("MFG-3", "10000", "To Do", H_BACK "," H_STARTED), seen, window, 1), "-");
    /* emit 0 (the first call) only records */
    CHECK_STR(change(ISSUE("MFG-1", "10001", "Done", ""), seen, window, 0), "-");
    CHECK_STR(change(ISSUE("MFG-1", "10001", "Done", ""), seen, window, 1), "-");
    /* no key or status: ignored */
    CHECK_STR(change("{\"key\":\"MFG-9\",\"fields\":{}}", seen, window, 1), "-");
    ev = change("{\"fields\":{\"status\":{\"id\":\"3\",\"name\":\"x\"}}}", seen, window, 1);
    CHECK_STR(ev, "-");
    CHECK_INT(cJSON_GetArraySize(seen), 3);
    /* MFG-1 was seen last: trimming keeps it */
    jira_seen_trim(seen, 1);
    s = cJSON_PrintUnformatted(seen);
    CHECK_STR(s, "{\"MFG-1\":[\"10001\",\"Done\",\"\",\"\"]}");
    free(s);
    jira_seen_trim(seen, 0);
    CHECK_INT(cJSON_GetArraySize(seen), 0);

    /* due date and priority: reported only against a value seen before */
    CHECK_STR(change(ISSUE_DP("MFG-5", "\"2026-12-01\"", "{\"name\":\"High\"}"), seen, window, 1),
              "-");
    s = cJSON_PrintUnformatted(seen);
    CHECK_STR(s, "{\"MFG-5\":[\"3\",\"In Progress\",\"2026-12-01\",\"High\"]}");
    free(s);
    CHECK_STR(change(ISSUE_DP("MFG-5", "\"2026-12-10\"", "{\"name\":\"High\"}"), seen, window, 1),
              "{\"event\":\"poll\",\"record\":\"MFG-5\",\"author\":\"\",\"at_ms\":1699999980000,"
              "\"markers\":[\"jdewo-100001\"],"
              "\"items\":[{\"field\":\"duedate\",\"from\":\"2026-12-01\",\"to\":\"2026-12-10\"}]}");
    /* both at once; a cleared due date is "" */
    CHECK_STR(change(ISSUE_DP("MFG-5", "null", "{\"name\":\"Low\"}"), seen, window, 1),
              "{\"event\":\"poll\",\"record\":\"MFG-5\",\"author\":\"\",\"at_ms\":1699999980000,"
              "\"markers\":[\"jdewo-100001\"],"
              "\"items\":[{\"field\":\"duedate\",\"from\":\"2026-12-10\",\"to\":\"\"},"
              "{\"field\":\"priority\",\"from\":\"High\",\"to\":\"Low\"}]}");
    CHECK_STR(change(ISSUE_DP("MFG-5", "null", "{\"name\":\"Low\"}"), seen, window, 1), "-");
    /* an entry of an older agent (two values) reports no due date change */
    cJSON_DeleteItemFromObjectCaseSensitive(seen, "MFG-5");
    cJSON_AddItemToObject(seen, "MFG-5", cJSON_Parse("[\"3\",\"In Progress\"]"));
    CHECK_STR(change(ISSUE_DP("MFG-5", "\"2027-01-01\"", "{\"name\":\"Low\"}"), seen, window, 1),
              "-");
    cJSON_Delete(seen);
}

/* A webhook body as event_parse() reads it: status by its names, the due
 * date by its raw ISO value, author, time, labels; the last item per field. */
static void webhook_event_parse(void)
{
    struct change ch;
    struct mlc_errbuf e = { 0 };
    const char *body =
        "{\"timestamp\":1700000000123,\"webhookEvent\":\"jira:issue_updated\","
        "\"user\":{\"accountId\":\"acct-maria\"},"
        "\"issue\":{\"id\":\"1\",\"key\":\"MFG-1\",\"fields\":{\"labels\":[\"jdewo-100001\"]}},"
        "\"changelog\":{\"items\":[{\"field\":\"status\",\"fromString\":\"To Do\","
        "\"toString\":\"Open\"},"
        "{\"field\":\"duedate\",\"from\":\"2026-12-01\",\"fromString\":\"1/Dec/26\","
        "\"to\":\"2026-12-10\",\"toString\":\"10/Dec/26\"},"
        "{\"field\":\"Status\",\"fieldId\":\"status\",\"fromString\":\"Open\","
        "\"toString\":\"Done\"}]}}";

    CHECK_INT(jira_event_parse(body, strlen(body), &ch, &e), MLC_OK);
    CHECK_STR(ch.event, "jira:issue_updated");
    CHECK_STR(ch.record, "MFG-1");
    CHECK_STR(ch.author, "acct-maria");
    CHECK_INT(ch.at_ms, 1700000000123LL);
    CHECK_INT(cJSON_GetArraySize(ch.markers), 1);
    CHECK_INT(ch.n_items, 2);
    CHECK(change_item_find(&ch, "status") != NULL);
    if (change_item_find(&ch, "status") != NULL) {
        CHECK_STR(change_item_find(&ch, "status")->from, "Open");
        CHECK_STR(change_item_find(&ch, "status")->to, "Done");
    }
    CHECK(change_item_find(&ch, "duedate") != NULL);
    if (change_item_find(&ch, "duedate") != NULL) {
        CHECK_STR(change_item_find(&ch, "duedate")->to, "2026-12-10");
    }
    change_release(&ch);
    /* no issue: not a record event; not an object or not JSON: a protocol error */
    CHECK_INT(jira_event_parse("{\"webhookEvent\":\"x\"}", 20, &ch, &e), MLC_OK);
    CHECK(ch.record == NULL);
    change_release(&ch);
    CHECK_INT(jira_event_parse("[1]", 3, &ch, &e), MLC_E_PROTO);
    change_release(&ch);
    CHECK_INT(jira_event_parse("{\"webhookEvent\":", 16, &ch, &e), MLC_E_PROTO);
    change_release(&ch);
}

/* open() with conf text; returns rc, message in *msg (static). */
static enum mlc_rc open_with(const char *conf, const char **msg)
{
    static char keep[768];
    struct conn c;
    cJSON *j = cJSON_Parse(conf);
    enum mlc_rc rc;

    memset(&c, 0, sizeof(c));
    c.ops = &connector_jira;
    c.name = (char *)"jira";
    c.conf = j;
    rc = connector_jira.open(&c);
    snprintf(keep, sizeof(keep), "%s", mlc_err_msg(&c.err));
    *msg = keep;
    connector_jira.close(&c);
    CHECK(c.priv == NULL);
    cJSON_Delete(j);
    return rc;
}

static void open_validates_config(void)
{
    const char *msg;

    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://127.0.0.1:1\","
                        "\"email\":\"a@b.c\",\"api_token\":\"${JIRA_TOKEN}\"}",
                        &msg),
              MLC_OK);
    CHECK_INT(
        open_with("{\"type\":\"jira\",\"base_url\":\"http://127.0.0.1:1\",\"api_token\":\"x\"}",
                  &msg),
        MLC_E_INVAL);
    CHECK_STR(msg, "systems.jira.email: required when auth is basic");
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"email\":\"a@b.c\"}", &msg),
              MLC_E_INVAL);
    CHECK_STR(msg, "systems.jira.api_token: required when auth is basic");
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"email\":\"a@b.c\","
                        "\"api_token\":\"t\",\"page_size\":5}",
                        &msg),
              MLC_E_INVAL);
    CHECK(strstr(msg, "systems.jira.page_size: unknown setting") != NULL);
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"auth\":\"oauth\","
                        "\"client_id\":\"id\",\"client_secret\":\"s\",\"refresh_token\":\"r\"}",
                        &msg),
              MLC_E_INVAL);
    CHECK_STR(msg, "systems.jira.cloud_id: required when auth is oauth");
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"auth\":\"oauth\","
                        "\"client_id\":\"id\",\"client_secret\":\"s\",\"cloud_id\":\"a/b\"}",
                        &msg),
              MLC_E_INVAL);
    CHECK(strstr(msg, "systems.jira.cloud_id: 'a/b' is not a cloud id") != NULL);
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"auth\":\"oauth\","
                        "\"client_id\":\"id\",\"client_secret\":\"s\",\"cloud_id\":\"1a-2b\"}",
                        &msg),
              MLC_OK);
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"auth\":\"saml\"}", &msg),
              MLC_E_INVAL);
    CHECK_INT(open_with("{\"type\":\"jde\",\"base_url\":\"http://x\",\"email\":\"a\","
                        "\"api_token\":\"t\"}",
                        &msg),
              MLC_E_INVAL);
    CHECK_INT(open_with("{\"type\":\"jira\",\"base_url\":\"http://x\",\"email\":\"a\","
                        "\"api_token\":\"t\",\"timeout_s\":0}",
                        &msg),
              MLC_E_INVAL);
    CHECK_INT(open_with("{\"type\":\"jira\",\"email\":\"a\",\"api_token\":\"t\"}", &msg),
              MLC_E_INVAL);
}

static void number_fields(void)
{
    double d = 0;

    CHECK_INT(jira_number_text("1234.50", &d), 0);
    CHECK(d == 1234.5);
    CHECK_INT(jira_number_text(" -7 ", &d), 0);
    CHECK(d == -7);
    CHECK_INT(jira_number_text("1e3", &d), 0);
    CHECK(d == 1000);
    CHECK_INT(jira_number_text(".5", &d), 0);
    CHECK(d == 0.5);
    CHECK_INT(jira_number_text("0001", NULL), 0); /* leading zeros: still the number 1 */
    CHECK_INT(jira_number_text("", NULL), -1);
    CHECK_INT(jira_number_text("1,234.50", NULL), -1);
    CHECK_INT(jira_number_text("12 EUR", NULL), -1);
    CHECK_INT(jira_number_text("0x1A", NULL), -1);
    CHECK_INT(jira_number_text("inf", NULL), -1);
    CHECK_INT(jira_number_text("nan", NULL), -1);
    CHECK_INT(jira_number_text("1e999", NULL), -1);
    CHECK_INT(jira_number_text("1e", NULL), -1);
    CHECK_INT(jira_number_text("-", NULL), -1);
    CHECK_INT(jira_number_text(".", NULL), -1);
}

#define TRANSITIONS                                                                          \
    "{\"transitions\":[{\"id\":\"121\",\"name\":\"Approve\",\"to\":{\"id\":\"10102\","         \
    "\"name\":\"Approved\"}},{\"id\":131,\"name\":\"Reject\",\"to\":{\"id\":\"10103\","        \
    "\"name\":\"Rejected\"}},{\"id\":\"9\",\"name\":\"Hidden\",\"isAvailable\":false,"         \
    "\"to\":{\"id\":\"1\",\"name\":\"Closed\"}}]}"

static void transition_pick(void)
{
    struct mlc_buf reach = MLC_BUF_INIT;
    char id[32];

    CHECK_INT(jira_transition_pick(TRANSITIONS, strlen(TRANSITIONS), "Approved", id, sizeof(id), &reach), 1);
    CHECK_STR(id, "121");
    CHECK_STR(mlc_buf_str(&reach), "'Approved', 'Rejected'");
    mlc_buf_release(&reach);
    /* names regardless of case, numeric transition ids, status ids */
    CHECK_INT(jira_transition_pick(TRANSITIONS, strlen(TRANSITIONS), "rejected", id, sizeof(id), NULL), 1);
    CHECK_STR(id, "131");
    CHECK_INT(jira_transition_pick(TRANSITIONS, strlen(TRANSITIONS), "10102", id, sizeof(id), NULL), 1);
    CHECK_STR(id, "121");
    /* an unavailable transition does not count */
    CHECK_INT(jira_transition_pick(TRANSITIONS, strlen(TRANSITIONS), "Closed", id, sizeof(id), NULL), 0);
    CHECK_STR(id, "");
    CHECK_INT(jira_transition_pick("{\"transitions\":[]}", 18, "Open", id, sizeof(id), NULL), 0);
    CHECK_INT(jira_transition_pick("[]", 2, "Open", id, sizeof(id), NULL), -1);
    CHECK_INT(jira_transition_pick("{\"transitions\":", 15, "Open", id, sizeof(id), NULL), -1);
}

static void comment_marker_round_trip(void)
{
    cJSON *body = jira_comment_body("Vendor confirmed\n\nship on Monday", "0042"), *page, *ids;
    char *printed, *json;
    long next = 0;
    struct mlc_errbuf err = { 0 };

    printed = cJSON_PrintUnformatted(body);
    CHECK_STR(printed, DOC(PARA(TEXT("Vendor confirmed")) "," PARA(TEXT("ship on Monday")) ","
                           PARA(TEXT("mlc-comment:0042"))));
    free(printed);
    /* an empty text gives the marker alone */
    {
        cJSON *b2 = jira_comment_body("", "7");
        printed = cJSON_PrintUnformatted(b2);
        CHECK_STR(printed, DOC(PARA(TEXT("mlc-comment:7"))));
        free(printed);
        cJSON_Delete(b2);
    }
    /* a text Jira would refuse is cut, on a character boundary */
    {
        size_t n = JIRA_COMMENT_TEXT_MAX + 10;
        char *big = malloc(n + 1);
        cJSON *b3;
        const char *first;
        memset(big, 'a', n);
        memcpy(big + JIRA_COMMENT_TEXT_MAX - 1, "\xc3\xa9", 2); /* e-acute across the cut */
        big[n] = '\0';
        b3 = jira_comment_body(big, "9");
        first = cJSON_GetStringValue(cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(b3, "content"), 0),
                                                   "content"), 0), "text"));
        CHECK(first != NULL);
        if (first == NULL) {
            first = "";
        }
        CHECK_INT(strlen(first), JIRA_COMMENT_TEXT_MAX - 1 + strlen(" [...]"));
        CHECK(strcmp(first + strlen(first) - 6, " [...]") == 0);
        cJSON_Delete(b3);
        free(big);
    }
    /* read back among other people's comments, paged */
    page = cJSON_CreateObject();
    cJSON_AddNumberToObject(page, "startAt", 0);
    cJSON_AddNumberToObject(page, "maxResults", 2);
    cJSON_AddNumberToObject(page, "total", 5);
    {
        cJSON *arr = cJSON_AddArrayToObject(page, "comments"), *c = cJSON_CreateObject();
        cJSON_AddItemToObject(c, "body", jira_adf_from_text("a person's comment mlc-comment:99"));
        cJSON_AddItemToArray(arr, c);
        c = cJSON_CreateObject();
        cJSON_AddItemToObject(c, "body", body);
        cJSON_AddItemToArray(arr, c);
    }
    json = cJSON_PrintUnformatted(page);
    ids = cJSON_CreateArray();
    CHECK_INT(jira_parse_comment_page(json, strlen(json), ids, &next, &err), MLC_OK);
    CHECK_INT(next, 2);
    CHECK_INT(cJSON_GetArraySize(ids), 1);
    CHECK_STR(cJSON_GetArrayItem(ids, 0)->valuestring, "0042");
    free(json);
    /* the last page */
    cJSON_ReplaceItemInObject(page, "startAt", cJSON_CreateNumber(3));
    json = cJSON_PrintUnformatted(page);
    CHECK_INT(jira_parse_comment_page(json, strlen(json), ids, &next, &err), MLC_OK);
    CHECK_INT(next, -1);
    free(json);
    /* without total: a full page asks for another */
    CHECK_INT(jira_parse_comment_page("{\"startAt\":0,\"comments\":[]}", 27, ids, &next, &err), MLC_OK);
    CHECK_INT(next, -1);
    CHECK_INT(jira_parse_comment_page("{\"comments\":{}}", 15, ids, &next, &err), MLC_E_PROTO);
    CHECK_INT(jira_parse_comment_page("nope", 4, ids, &next, &err), MLC_E_PROTO);
    cJSON_Delete(ids);
    cJSON_Delete(page);
    CHECK(jira_comment_id_ok("PO-0001/3"));
    CHECK(!jira_comment_id_ok(""));
    CHECK(!jira_comment_id_ok(NULL));
    CHECK(!jira_comment_id_ok("two words"));
    CHECK(!jira_comment_id_ok("line\nbreak"));
    {
        char longid[JIRA_COMMENT_ID_MAX + 2];
        memset(longid, 'x', sizeof(longid) - 1);
        longid[sizeof(longid) - 1] = '\0';
        CHECK(!jira_comment_id_ok(longid));
        longid[JIRA_COMMENT_ID_MAX] = '\0';
        CHECK(jira_comment_id_ok(longid));
    }
}

int main(void)
{
    mlc_log_level = -1; /* keep test output clean */
    RUN(adf_spec_example);
    RUN(adf_crlf_and_cr);
    RUN(adf_empty_input);
    RUN(adf_drops_blank_paragraphs);
    RUN(adf_strips_controls);
    RUN(adf_repairs_utf8);
    RUN(bulk_maps_gaps);
    RUN(bulk_all_ok_and_all_failed);
    RUN(bulk_rejects_garbage);
    RUN(search_pages);
    RUN(search_rejects_garbage);
    RUN(error_text_one_line);
    RUN(jql_escapes);
    RUN(summary_and_labels);
    RUN(time_parse_forms);
    RUN(time_format_round_trip);
    RUN(expiration_both_forms);
    RUN(jql_project_and_changes);
    RUN(change_events);
    RUN(webhook_event_parse);
    RUN(connector_shape);
    RUN(open_validates_config);
    RUN(number_fields);
    RUN(transition_pick);
    RUN(comment_marker_round_trip);
    return TT_DONE();
}
