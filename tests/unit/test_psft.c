/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the PeopleSoft connector's pure parts (agent/connectors/psft/):
 * date-times, QAS and custom-service answers shaped as peoplesoft.md 5 and 9
 * show them, error bodies (section 8), the window reader driven by a fake
 * service that caps its answers, the vendor join, cursors, and the config
 * checks poll() makes before any network call; then the connector over HTTP
 * against a small PeopleSoft stand-in on 127.0.0.1 (a thread of this test):
 * the exact request shapes, a run read whole through capped answers, a
 * vendor rename, and each failure's one-line message.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cjson/cJSON.h>
#include "agent/connectors/psft/psft.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "tinytest.h"

static long long dt(const char *s)
{
    long long us = -1;

    if (psft_dttm_parse(s, &us) != 0) {
        fprintf(stderr, "  bad test date-time %s\n", s);
    }
    return us;
}

/* ------------------------------------------------------------ date-times */

static void test_dttm(void)
{
    long long us;
    char out[48];

    CHECK_INT(psft_dttm_parse("2024-01-16T10:12:03", &us), 0);
    psft_dttm_format(us, PSFT_DTTM_ISO, out, sizeof(out));
    CHECK_STR(out, "2024-01-16T10:12:03");
    psft_dttm_format(us, PSFT_DTTM_SPACE, out, sizeof(out));
    CHECK_STR(out, "2024-01-16 10:12:03");
    psft_dttm_format(us, PSFT_DTTM_PSFT, out, sizeof(out));
    CHECK_STR(out, "2024-01-16-10.12.03.000000");
    CHECK_INT(psft_dttm_parse("2024-01-16T10:12:03.000000", &us), 0);
    CHECK_INT(us, dt("2024-01-16 10:12:03"));
    CHECK_INT(psft_dttm_parse("2024-01-16-10.12.03.250000", &us), 0);
    psft_dttm_format_full(us, out, sizeof(out));
    CHECK_STR(out, "2024-01-16T10:12:03.250000");
    CHECK_INT(psft_dttm_parse("2024-01-16T10:12:03.5", &us), 0);
    CHECK_INT(us % 1000000, 500000);
    CHECK_INT(dt("1970-01-01T00:00:01"), 1000000);
    /* dates alone cannot drive a cursor: a distinct answer */
    CHECK_INT(psft_dttm_parse("2024-01-15", &us), -2);
    CHECK_INT(psft_dttm_parse("2024-02-30T00:00:00", &us), -1);
    CHECK_INT(psft_dttm_parse("2024-02-29T00:00:00", &us), 0);
    CHECK_INT(psft_dttm_parse("2023-02-29T00:00:00", &us), -1);
    CHECK_INT(psft_dttm_parse("2024-01-16T24:00:00", &us), -1);
    CHECK_INT(psft_dttm_parse("2024-01-16T10:12", &us), -1);
    CHECK_INT(psft_dttm_parse("2024-01-16T10:12:03.", &us), -1);
    CHECK_INT(psft_dttm_parse("2024-01-16T10:12:03x", &us), -1);
    CHECK_INT(psft_dttm_parse("", &us), -1);
    CHECK_INT(psft_dttm_parse(NULL, &us), -1);
    CHECK(psft_column_date_only("PO_DT"));
    CHECK(psft_column_date_only("INVOICE_DT"));
    CHECK(!psft_column_date_only("LAST_DTTM_UPDATE"));
    CHECK(!psft_column_date_only("LASTUPDDTTM"));
}

/* ------------------------------------------------------------ QAS */

static const char qas_doc[] =
    "{ \"status\": \"success\",\n"
    "  \"data\": { \"query\": { \"numrows\": 2, \"queryname\": \"X_WS_PO\",\n"
    "    \"rows\": [ { \"attr:rownumber\": 1, \"A.BUSINESS_UNIT\": \"US001\", \"A.PO_ID\": "
    "\"0000079262\",\n"
    "                \"A.PO_STATUS\": \"D\", \"A.PO_DT\": \"2024-01-15\", \"A.LAST_DTTM_UPDATE\": "
    "\"2024-01-16T10:12:03\" },\n"
    "              { \"attr:rownumber\": 2, \"A.BUSINESS_UNIT\": \"US001\", \"A.PO_ID\": "
    "\"0000079263\",\n"
    "                \"A.PO_STATUS\": \"A\", \"A.PO_DT\": \"2024-01-15\", \"A.LAST_DTTM_UPDATE\": "
    "\"2024-01-16T10:12:04\" } ] } } }";

static void test_qas_rows(void)
{
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 100, NULL, "X_WS_PO", NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_qas(qas_doc, strlen(qas_doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 2);
    CHECK_INT(b.capped, 0);
    if (b.n == 2) {
        CHECK_STR(b.v[0].key, "US001-0000079262"); /* leading zeros kept */
        CHECK_STR(b.v[0].k2, "0000079262");
        CHECK_STR(mlc_json_str(b.v[0].data, "PO_ID"), "0000079262");
        CHECK_STR(mlc_json_str(b.v[0].data, "PO_STATUS"), "D");
        CHECK(cJSON_GetObjectItemCaseSensitive(b.v[0].data, "A.PO_ID") == NULL);
        CHECK(cJSON_GetObjectItemCaseSensitive(b.v[0].data, "attr:rownumber") == NULL);
        CHECK_INT(b.v[0].stamp, dt("2024-01-16T10:12:03"));
        CHECK(b.v[0].error == NULL);
    }
    psft_batch_release(&b);

    /* exactly maxrows rows: taken as cut */
    sh.maxrows = 2;
    CHECK_INT(psft_parse_qas(qas_doc, strlen(qas_doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.capped, 1);
    psft_batch_release(&b);

    /* an answer for another query is refused */
    sh.query = "MLC_PO";
    CHECK_INT(psft_parse_qas(qas_doc, strlen(qas_doc), &sh, &b, &err), MLC_E_PROTO);
    CHECK(strstr(err.msg, "X_WS_PO") != NULL);
    psft_batch_release(&b);
}

static void test_qas_spellings(void)
{
    /* "queryname=" (one client's spelling), a single row as an object, no
     * alias prefix on some columns, and numbers as keys */
    const char *doc = "{\"status\":\"success\",\"data\":{\"query\":{\"numrows\":1,"
                      "\"queryname=\":\"MLC_REQ\",\"rows\":{\"attr:rownumber\":1,"
                      "\"BUSINESS_UNIT\":\"US001\",\"B.REQ_ID\":\"0000000101\","
                      "\"B.REQ_STATUS\":\"A\",\"LAST_DTTM_UPDATE\":\"2024-03-01 08:00:00\"}}}}";
    const char *empty = "{\"status\":\"success\",\"data\":{\"query\":{\"numrows\":0,"
                        "\"queryname\":\"MLC_REQ\",\"rows\":[]}}}";
    struct psft_shape sh = { PSFT_REQ, "LAST_DTTM_UPDATE", 100, NULL, "mlc_req", NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_qas(doc, strlen(doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 1);
    if (b.n == 1) {
        CHECK_STR(b.v[0].key, "US001-0000000101");
        CHECK_STR(mlc_json_str(b.v[0].data, "REQ_STATUS"), "A");
    }
    psft_batch_release(&b);
    CHECK_INT(psft_parse_qas(empty, strlen(empty), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 0);
    psft_batch_release(&b);
}

static void test_qas_lines(void)
{
    /* a query joining PO_HDR (A) and PO_LINE (B): one row per line */
    const char *doc =
        "{\"status\":\"success\",\"data\":{\"query\":{\"numrows\":3,\"queryname\":\"MLC_PO\","
        "\"rows\":["
        "{\"attr:rownumber\":1,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000007\","
        "\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:00\",\"B.LINE_NBR\":1,"
        "\"B.DESCR254_MIXED\":\"Pump seal kit\",\"B.QTY_PO\":4,\"B.MERCHANDISE_AMT\":512},"
        "{\"attr:rownumber\":2,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000008\","
        "\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:01\",\"B.LINE_NBR\":1,"
        "\"B.DESCR254_MIXED\":\"Gasket\",\"B.QTY_PO\":1,\"B.MERCHANDISE_AMT\":3.5},"
        "{\"attr:rownumber\":3,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000007\","
        "\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:00\",\"B.LINE_NBR\":2,"
        "\"B.DESCR254_MIXED\":\"Bearing\",\"B.QTY_PO\":2,\"B.MERCHANDISE_AMT\":40}]}}}";
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 100, NULL, NULL, NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_qas(doc, strlen(doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 2);
    if (b.n == 2) {
        const cJSON *lines = mlc_json_arr(b.v[0].data, "lines");
        CHECK_STR(b.v[0].key, "US001-0000000007");
        CHECK_INT(cJSON_GetArraySize(lines), 2);
        CHECK_INT(mlc_json_num(b.v[0].data, "LINE_COUNT", 0), 2);
        CHECK_STR(mlc_json_str(b.v[0].data, "LINES_SUMMARY"),
                  "Line 1: Pump seal kit, qty 4, amount 512\nLine 2: Bearing, qty 2, amount 40");
        CHECK(cJSON_GetObjectItemCaseSensitive(b.v[0].data, "LINE_NBR") == NULL);
        CHECK_INT(mlc_json_num(b.v[1].data, "LINE_COUNT", 0), 1);
    }
    psft_batch_release(&b);
}

static void test_qas_child(void)
{
    /* a child query: the header's keys and stamp under A, the child under B */
    const char *doc =
        "{\"status\":\"success\",\"data\":{\"query\":{\"numrows\":3,\"queryname\":\"MLC_PO_CMNT_QRY\","
        "\"rows\":["
        "{\"attr:rownumber\":1,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000007\","
        "\"B.COMMENT_ID\":1,\"B.COMMENTS\":\"Please expedite\",\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:00\"},"
        "{\"attr:rownumber\":2,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000007\","
        "\"B.COMMENT_ID\":2,\"B.COMMENTS\":\"Vendor confirmed\",\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:00\"},"
        "{\"attr:rownumber\":3,\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"0000000009\","
        "\"B.COMMENT_ID\":1,\"B.COMMENTS\":\"Hold\",\"A.LAST_DTTM_UPDATE\":\"2024-01-16T10:00:02\"}]}}}";
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 100, NULL, "MLC_PO_CMNT_QRY", "comments" };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_qas(doc, strlen(doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 2);
    if (b.n == 2) {
        const cJSON *cm = mlc_json_arr(b.v[0].data, "comments");
        CHECK_INT(cJSON_GetArraySize(cm), 2);
        CHECK_STR(mlc_json_str(cJSON_GetArrayItem(cm, 1), "COMMENTS"), "Vendor confirmed");
        CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cm, 0), "PO_ID") == NULL);
        CHECK_INT(cJSON_GetArraySize(mlc_json_arr(b.v[1].data, "comments")), 1);
        CHECK(cJSON_GetObjectItemCaseSensitive(b.v[0].data, "LINES_SUMMARY") == NULL);
    }
    psft_batch_release(&b);
}

static void test_qas_failures(void)
{
    const char *st = "{\"status\":\"error\",\"message\":\"Query MLC_PO does not exist\"}";
    const char *dateonly = "{\"status\":\"success\",\"data\":{\"query\":{\"rows\":["
                           "{\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"1\",\"A.PO_DT\":"
                           "\"2024-01-15\"}]}}}";
    const char *nokey = "{\"status\":\"success\",\"data\":{\"query\":{\"rows\":["
                        "{\"A.PO_ID\":\"1\",\"A.LAST_DTTM_UPDATE\":\"2024-01-15T00:00:00\"},"
                        "{\"A.BUSINESS_UNIT\":\"US001\",\"A.PO_ID\":\"2\","
                        "\"A.LAST_DTTM_UPDATE\":\"yesterday\"}, 7]}}}";
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 100, NULL, NULL, NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_qas(st, strlen(st), &sh, &b, &err), MLC_E_REJECTED);
    CHECK(strstr(err.msg, "does not exist") != NULL);
    psft_batch_release(&b);
    mlc_err_reset(&err);
    sh.cursor_col = "PO_DT";
    CHECK_INT(psft_parse_qas(dateonly, strlen(dateonly), &sh, &b, &err), MLC_E_INVAL);
    CHECK(strstr(err.msg, "PO_DT holds dates without a time") != NULL);
    psft_batch_release(&b);
    mlc_err_reset(&err);
    sh.cursor_col = "LAST_DTTM_UPDATE";
    CHECK_INT(psft_parse_qas(nokey, strlen(nokey), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 3);
    if (b.n == 3) {
        CHECK(b.v[0].error != NULL && strstr(b.v[0].error, "BUSINESS_UNIT") != NULL);
        CHECK(b.v[1].error != NULL && strstr(b.v[1].error, "invalid LAST_DTTM_UPDATE") != NULL);
        CHECK_STR(b.v[1].key, "US001-2");
        CHECK(b.v[2].error != NULL);
    }
    psft_batch_release(&b);
    CHECK_INT(psft_parse_qas("not json", 8, &sh, &b, &err), MLC_E_PROTO);
    psft_batch_release(&b);
}

/* ------------------------------------------------------------ services */

static const char svc_po[] =
    "{ \"status\": \"success\", \"count\": 1, \"truncated\": false,\n"
    "  \"purchaseOrders\": [\n"
    "    { \"BUSINESS_UNIT\": \"US001\", \"PO_ID\": \"0000079262\", \"PO_STATUS\": \"D\", "
    "\"PO_TYPE\": \"GEN\",\n"
    "      \"PO_DT\": \"2024-01-15\", \"VENDOR_SETID\": \"SHARE\", \"VENDOR_ID\": \"0000000042\", "
    "\"BUYER_ID\": \"JSMITH\",\n"
    "      \"CURRENCY_CD\": \"USD\", \"LAST_DTTM_UPDATE\": \"2024-01-16T10:12:03.000000\",\n"
    "      \"lines\": [ { \"LINE_NBR\": 1, \"DESCR254_MIXED\": \"Pump seal kit\", \"QTY_PO\": 4, "
    "\"MERCHANDISE_AMT\": 512.00 } ] } ] }";

static void test_svc_po(void)
{
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 1000, NULL, NULL, NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };
    const char *trunc = "{\"status\":\"success\",\"count\":0,\"truncated\":true,"
                        "\"purchaseOrders\":[]}";

    CHECK_INT(psft_parse_svc(svc_po, strlen(svc_po), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 1);
    CHECK_INT(b.capped, 0);
    if (b.n == 1) {
        CHECK_STR(b.v[0].key, "US001-0000079262");
        CHECK_STR(mlc_json_str(b.v[0].data, "LINES_SUMMARY"),
                  "Line 1: Pump seal kit, qty 4, amount 512");
        CHECK_INT(b.v[0].stamp, dt("2024-01-16T10:12:03"));
    }
    psft_batch_release(&b);
    CHECK_INT(psft_parse_svc(trunc, strlen(trunc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.capped, 1);
    psft_batch_release(&b);
    /* another list member is not silently taken as "no rows" */
    sh.kind = PSFT_VCHR;
    CHECK_INT(psft_parse_svc(svc_po, strlen(svc_po), &sh, &b, &err), MLC_E_PROTO);
    CHECK(strstr(err.msg, "\"vouchers\"") != NULL);
    psft_batch_release(&b);
}

static void test_svc_vouchers(void)
{
    const char *doc =
        "{\"status\":\"success\",\"count\":3,\"truncated\":false,\"vouchers\":["
        "{\"BUSINESS_UNIT\":\"US001\",\"VOUCHER_ID\":\"00012345\",\"INVOICE_ID\":\"INV-1\","
        "\"VENDOR_SETID\":\"SHARE\",\"VENDOR_ID\":\"0000000042\",\"GROSS_AMT\":1200.5,"
        "\"APPR_STATUS\":\"P\",\"LAST_DTTM_UPDATE\":\"2024-02-01T09:00:00\"},"
        "{\"BUSINESS_UNIT\":\"US001\",\"VOUCHER_ID\":\"00012346\",\"VOUCHER_STYLE\":\"TMPL\","
        "\"LAST_DTTM_UPDATE\":\"2024-02-01T09:00:00\"},"
        "{\"BUSINESS_UNIT\":\"US001\",\"VOUCHER_ID\":\"00012347\",\"VOUCHER_STYLE\":\"REG\","
        "\"LAST_DTTM_UPDATE\":\"2024-02-01T09:00:01\"}]}";
    struct psft_shape sh = { PSFT_VCHR, "LAST_DTTM_UPDATE", 1000, NULL, NULL, NULL };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    CHECK_INT(psft_parse_svc(doc, strlen(doc), &sh, &b, &err), MLC_OK);
    CHECK_INT(b.n, 2); /* the template voucher is left out */
    CHECK_INT(b.excluded, 1);
    if (b.n == 2) {
        CHECK_STR(b.v[0].key, "US001-00012345");
        CHECK_STR(b.v[1].key, "US001-00012347");
    }
    psft_batch_release(&b);
}

static void test_error_bodies(void)
{
    const char *ib = "<?xml version=\"1.0\"?>\n<IBResponse type=\"error\">\n"
                     "  <DefaultTitle>Integration Broker Response</DefaultTitle>\n"
                     "  <StatusCode>20</StatusCode><MessageSet>158</MessageSet>"
                     "<MessageID>10001</MessageID>\n"
                     "  <DefaultMessage>Unknown node PSFT_XX.</DefaultMessage>"
                     "<MessageParameters/>\n</IBResponse>";
    const char *js = "{ \"status\": \"error\", \"code\": \"MLC-0001\", \"message\": \"bad "
                     "fromDttm\" }";
    const char *ok = "{\"status\":\"success\",\"vouchers\":[]}";
    char out[300];

    CHECK(psft_is_ibresponse(ib, strlen(ib)));
    CHECK(!psft_is_ibresponse(js, strlen(js)));
    psft_error_text(ib, strlen(ib), out, sizeof(out));
    CHECK_STR(out, "IBResponse error (status 20, message 158/10001): Unknown node PSFT_XX.");
    psft_error_text(js, strlen(js), out, sizeof(out));
    CHECK_STR(out, "MLC-0001: bad fromDttm");
    /* HTTP 200 carrying an error (HttpListeningConnector style) */
    CHECK(psft_body_failed(js, strlen(js), out, sizeof(out)));
    CHECK_STR(out, "MLC-0001: bad fromDttm");
    CHECK(psft_body_failed(ib, strlen(ib), out, sizeof(out)));
    CHECK(!psft_body_failed(ok, strlen(ok), out, sizeof(out)));
    psft_error_text("line one\nline two", 17, out, sizeof(out));
    CHECK_STR(out, "line one line two");
    psft_error_text("abcdef", 6, out, 4);
    CHECK_STR(out, "abc");
    {
        struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 100, NULL, NULL, NULL };
        struct psft_batch b = { 0 };
        struct mlc_errbuf err = { 0 };
        CHECK_INT(psft_parse_svc(js, strlen(js), &sh, &b, &err), MLC_E_REJECTED);
        CHECK(strstr(err.msg, "MLC-0001: bad fromDttm") != NULL);
        psft_batch_release(&b);
        mlc_err_reset(&err);
        CHECK_INT(psft_parse_qas(ib, strlen(ib), &sh, &b, &err), MLC_E_REJECTED);
        CHECK(strstr(err.msg, "Unknown node") != NULL);
        psft_batch_release(&b);
    }
}

/* ------------------------------------------------------------ window reader */

/* A fake list service: rows (BU, PO, stamp) answered as section 9 JSON, cut
 * at maxrows with truncated: true. Plain reads answer newest first (no
 * order is promised) unless sorted; after-key reads answer the rows after
 * (from, key) in (stamp, key) order. It includes rows at exactly `to`, as a
 * BETWEEN would. */
struct fake_row {
    char bu[8], po[24];
    long long stamp;
};
struct fake {
    struct fake_row *rows;
    size_t n;
    long maxrows;
    int key_order_ok; /* honours after-keys */
    int sorted;       /* sorts by stamp, then key, before the cut */
    unsigned long calls;
};

static int cmp_key(const void *a, const void *b)
{
    const struct fake_row *x = a, *y = b;
    int c = strcmp(x->bu, y->bu);
    return c ? c : strcmp(x->po, y->po);
}

static int cmp_stamp_key(const void *a, const void *b)
{
    const struct fake_row *x = a, *y = b;
    if (x->stamp != y->stamp) {
        return x->stamp < y->stamp ? -1 : 1;
    }
    return cmp_key(a, b);
}

static enum mlc_rc fake_fetch(void *ctx, long long from, long long to, const char *a1,
                              const char *a2, struct psft_batch *out, struct mlc_errbuf *err)
{
    struct fake *f = ctx;
    struct fake_row *sel = calloc(f->n + 1, sizeof(*sel));
    struct psft_shape sh = { PSFT_PO, "LAST_DTTM_UPDATE", 0, NULL, NULL, NULL };
    struct mlc_buf b = { 0 };
    size_t k = 0, lim;
    enum mlc_rc rc;

    f->calls++;
    for (size_t i = f->n; i-- > 0;) {
        const struct fake_row *r = &f->rows[i];
        if (r->stamp < from || r->stamp > to) {
            continue;
        }
        if (a1 != NULL && f->key_order_ok && r->stamp == from) {
            int c = strcmp(r->bu, a1);
            if (c < 0 || (c == 0 && strcmp(r->po, a2) <= 0)) {
                continue;
            }
        }
        sel[k++] = *r;
    }
    if ((a1 != NULL && f->key_order_ok) || f->sorted) {
        qsort(sel, k, sizeof(*sel), cmp_stamp_key);
    }
    lim = k > (size_t)f->maxrows ? (size_t)f->maxrows : k;
    mlc_buf_addf(&b, "{\"status\":\"success\",\"count\":%zu,\"truncated\":%s,\"purchaseOrders\":[",
                 lim, k > lim ? "true" : "false");
    for (size_t i = 0; i < lim; i++) {
        char when[40];
        psft_dttm_format_full(sel[i].stamp, when, sizeof(when));
        mlc_buf_addf(&b, "%s{\"BUSINESS_UNIT\":\"%s\",\"PO_ID\":\"%s\",\"LAST_DTTM_UPDATE\":\"%s\"}",
                     i ? "," : "", sel[i].bu, sel[i].po, when);
    }
    mlc_buf_adds(&b, "]}");
    rc = psft_parse_svc(mlc_buf_str(&b), b.len, &sh, out, err);
    mlc_buf_release(&b);
    free(sel);
    return rc;
}

/* n rows over a day, `same` of them sharing one stamp (with a fraction). */
static void fake_fill(struct fake *f, size_t n, size_t same)
{
    long long base = dt("2024-01-16T00:00:00");

    f->rows = calloc(n, sizeof(*f->rows));
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(f->rows[i].bu, sizeof(f->rows[i].bu), "US%03u", (unsigned)(i % 3));
        snprintf(f->rows[i].po, sizeof(f->rows[i].po), "%010zu", i);
        f->rows[i].stamp = i < same ? base + 3600LL * 1000000 + 250000
                                    : base + (long long)((i * 7919) % 86400) * 1000000;
    }
}

/* 1 when b holds each fake row exactly once. */
static int all_once(const struct fake *f, struct psft_batch *b)
{
    char *seen = calloc(f->n, 1);
    int ok = b->n == f->n;

    for (size_t i = 0; i < b->n; i++) {
        size_t idx = b->v[i].k2 ? (size_t)strtoul(b->v[i].k2, NULL, 10) : f->n;
        if (b->v[i].error != NULL || idx >= f->n || seen[idx]) {
            ok = 0;
            continue;
        }
        seen[idx] = 1;
    }
    free(seen);
    return ok;
}

static void test_window_split(void)
{
    struct fake f = { 0 };
    struct psft_window w = { 0 };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };

    /* 2,000 rows, 400 of them sharing one stamp, maxrows 100 */
    fake_fill(&f, 2000, 400);
    f.maxrows = 100;
    f.key_order_ok = 1;
    w.fetch = fake_fetch;
    w.ctx = &f;
    w.can_after = 1;
    w.res_us = 1000000;
    w.maxrows = 100;
    w.column = "LAST_DTTM_UPDATE";
    w.hint = "source.maxrows";
    CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b, &err),
              MLC_OK);
    CHECK(all_once(&f, &b));
    CHECK_INT(w.calls, f.calls);
    CHECK(f.calls < 400); /* splits, not one call per row */
    psft_batch_release(&b);

    /* without an after-key the shared instant cannot be read whole: a
     * message says what to raise, and nothing is half-delivered */
    f.calls = 0;
    w.calls = 0;
    w.can_after = 0;
    CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b, &err),
              MLC_E_REJECTED);
    CHECK(strstr(err.msg, "maxrows=100") != NULL);
    CHECK(strstr(err.msg, "2024-01-16T01:00:00") != NULL);
    CHECK(strstr(err.msg, "raise maxrows") != NULL);
    psft_batch_release(&b);
    mlc_err_reset(&err);

    /* a service that ignores the after-key: no endless loop */
    w.can_after = 1;
    f.key_order_ok = 0;
    CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b, &err),
              MLC_E_REJECTED);
    CHECK(strstr(err.msg, "is not sorted by (LAST_DTTM_UPDATE, key)") != NULL);
    psft_batch_release(&b);
    mlc_err_reset(&err);

    /* a sorted service: each capped answer is used up to its last second,
     * far fewer calls than halving */
    {
        unsigned long halving;
        f.calls = 0;
        w.calls = 0;
        f.key_order_ok = 1;
        CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b,
                                   &err), MLC_OK);
        CHECK(all_once(&f, &b));
        halving = f.calls;
        psft_batch_release(&b);
        f.calls = 0;
        f.sorted = 1;
        w.sorted = 1;
        CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b,
                                   &err), MLC_OK);
        CHECK(all_once(&f, &b));
        CHECK(f.calls < halving / 2);
        CHECK(f.calls <= 2000 / 100 + 8); /* about one call per maxrows rows */
        psft_batch_release(&b);
        /* the shared second cannot be read without the after-key */
        w.can_after = 0;
        CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b,
                                   &err), MLC_E_REJECTED);
        CHECK(strstr(err.msg, "raise maxrows") != NULL);
        psft_batch_release(&b);
        mlc_err_reset(&err);
        w.can_after = 1;
        w.sorted = 0;
        f.sorted = 0;
    }

    /* no capping at all: one call */
    f.calls = 0;
    w.calls = 0;
    f.maxrows = 5000;
    w.maxrows = 5000;
    CHECK_INT(psft_read_window(&w, dt("2000-01-01T00:00:00"), dt("2024-01-18T00:00:00"), &b, &err),
              MLC_OK);
    CHECK_INT(f.calls, 1);
    CHECK(all_once(&f, &b));
    psft_batch_release(&b);
    free(f.rows);
}

static void test_window_boundaries(void)
{
    /* rows exactly on a split point are read once (the fake includes `to`) */
    struct fake f = { 0 };
    struct psft_window w = { 0 };
    struct psft_batch b = { 0 };
    struct mlc_errbuf err = { 0 };
    long long base = dt("2024-01-16T00:00:00");

    f.n = 64;
    f.rows = calloc(f.n, sizeof(*f.rows));
    for (size_t i = 0; i < f.n; i++) {
        snprintf(f.rows[i].bu, sizeof(f.rows[i].bu), "US001");
        snprintf(f.rows[i].po, sizeof(f.rows[i].po), "%010zu", i);
        f.rows[i].stamp = base + (long long)(i / 2) * 1000000; /* pairs per second */
    }
    f.maxrows = 3;
    f.key_order_ok = 1;
    w.fetch = fake_fetch;
    w.ctx = &f;
    w.can_after = 1;
    w.res_us = 1000000;
    w.maxrows = 3;
    w.column = "LAST_DTTM_UPDATE";
    w.hint = "x";
    CHECK_INT(psft_read_window(&w, base, base + 32LL * 1000000, &b, &err), MLC_OK);
    CHECK(all_once(&f, &b));
    psft_batch_release(&b);
    /* [from, to): the last second belongs to the next window */
    CHECK_INT(psft_read_window(&w, base, base + 31LL * 1000000, &b, &err), MLC_OK);
    CHECK_INT(b.n, 62);
    psft_batch_release(&b);
    free(f.rows);
}

/* ------------------------------------------------------------ vendors, order */

static void test_vendor_join(void)
{
    const char *vend = "{\"status\":\"success\",\"vendors\":["
                       "{\"SETID\":\"SHARE\",\"VENDOR_ID\":\"0000000042\",\"NAME1\":\"Acme Pumps\","
                       "\"PYMNT_TERMS_CD\":\"N30\",\"LASTUPDDTTM\":\"2024-01-20T00:00:00\"},"
                       "{\"SETID\":\"SHARE\",\"VENDOR_ID\":\"0000000042\",\"NAME1\":\"Acme\","
                       "\"LASTUPDDTTM\":\"2024-01-01T00:00:00\"},"
                       "{\"SETID\":\"SHARE\",\"VENDOR_ID\":\"0000000007\",\"NAME1\":\"Bolt Co\","
                       "\"LASTUPDDTTM\":\"2023-05-01T00:00:00\"}]}";
    struct psft_shape vs = { PSFT_VNDR, "LASTUPDDTTM", 1000, NULL, NULL, NULL };
    struct psft_shape ps = { PSFT_PO, "LAST_DTTM_UPDATE", 1000, NULL, NULL, NULL };
    struct psft_batch vb = { 0 }, pb = { 0 };
    struct psft_vendors vc = { 0 };
    struct mlc_errbuf err = { 0 };
    const struct psft_vendor *v;

    CHECK_INT(psft_parse_svc(vend, strlen(vend), &vs, &vb, &err), MLC_OK);
    psft_vendors_build(&vc, &vb, "PYMNT_TERMS_CD");
    CHECK_INT(vc.n, 2); /* the vendor read twice keeps its later state */
    v = psft_vendors_find(&vc, "SHARE-0000000042");
    CHECK(v != NULL && strcmp(v->name, "Acme Pumps") == 0 && strcmp(v->terms, "N30") == 0);
    CHECK(psft_vendors_find(&vc, "SHARE-42") == NULL);
    CHECK_INT(psft_parse_svc(svc_po, strlen(svc_po), &ps, &pb, &err), MLC_OK);
    if (pb.n == 1) {
        CHECK(psft_join_vendor(&pb.v[0], &vc) == v);
        CHECK_STR(mlc_json_str(pb.v[0].data, "VENDOR_NAME"), "Acme Pumps");
        CHECK_STR(mlc_json_str(pb.v[0].data, "VENDOR_TERMS"), "N30");
        /* the PO last changed on the 16th; its vendor's rename on the 20th
         * is what the record shows last */
        CHECK_INT(pb.v[0].stamp, dt("2024-01-16T10:12:03"));
        CHECK_INT(pb.v[0].eff, dt("2024-01-20T00:00:00"));
    }
    psft_batch_release(&pb);
    psft_batch_release(&vb);
    psft_vendors_release(&vc);
}

static void test_order_and_cursor(void)
{
    struct psft_batch b = { 0 };
    const char *keys[] = { "US001-0000000002", "US001-0000000001", "US002-0000000001",
                           "US001-0000000002" };
    long long st[] = { 20, 20, 10, 30 };
    char cur[128], key[64];
    long long eff;

    for (int i = 0; i < 4; i++) {
        struct psft_item *it = psft_batch_push(&b);
        it->key = strdup(keys[i]);
        it->k1 = strndup(keys[i], 5);
        it->k2 = strdup(keys[i] + 6);
        it->stamp = it->eff = st[i] * 1000000;
        it->data = cJSON_CreateObject();
    }
    psft_batch_push(&b)->error = strdup("broken row");
    psft_batch_dedupe(&b);
    CHECK_INT(b.n, 4); /* US001-0000000002 kept once, at its later stamp */
    psft_batch_sort(&b);
    CHECK(b.v[0].error != NULL);
    CHECK_STR(b.v[1].key, "US002-0000000001");
    CHECK_STR(b.v[2].key, "US001-0000000001");
    CHECK_STR(b.v[3].key, "US001-0000000002");
    CHECK_INT(b.v[3].stamp, 30 * 1000000LL);
    psft_batch_release(&b);

    psft_cursor_format(dt("2024-01-16T10:12:03.5"), "US001-0000079262", cur, sizeof(cur));
    CHECK_STR(cur, "2024-01-16T10:12:03.500000|US001-0000079262");
    CHECK_INT(psft_cursor_parse(cur, &eff, key, sizeof(key)), 0);
    CHECK_INT(eff, dt("2024-01-16T10:12:03.5"));
    CHECK_STR(key, "US001-0000079262");
    CHECK_INT(psft_cursor_parse("20240116|1|x", &eff, key, sizeof(key)), -1);
    CHECK_INT(psft_cursor_parse("2024-01-16T10:12:03", &eff, key, sizeof(key)), -1);
    CHECK(psft_cursor_cmp(1, "b", 2, "a") < 0);
    CHECK(psft_cursor_cmp(2, "a", 2, "b") < 0);
    CHECK(psft_cursor_cmp(2, "b", 2, "b") == 0);
}

/* ------------------------------------------------------------ config */

static enum mlc_rc open_with(const char *json, struct conn *c)
{
    cJSON *conf = cJSON_Parse(json);
    enum mlc_rc rc;

    memset(c, 0, sizeof(*c));
    c->ops = &connector_psft;
    c->name = "erp";
    c->conf = conf;
    rc = connector_psft.open(c);
    return rc;
}

static void close_conn(struct conn *c)
{
    connector_psft.close(c);
    cJSON_Delete((cJSON *)c->conf);
}

static enum mlc_rc poll_with(struct conn *c, const char *source)
{
    cJSON *src = cJSON_Parse(source);
    struct poll_req rq = { src, NULL, 1 };
    struct page pg = { 0 };
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    rc = connector_psft.poll(c, &rq, &pg);
    page_release(&pg);
    cJSON_Delete(src);
    return rc;
}

static void test_config(void)
{
    struct conn c;
    const char *good = "{\"type\":\"psft\",\"base_url\":\"http://127.0.0.1:1\",\"node\":\"PSFT_EP\","
                       "\"user\":\"VP1\",\"password\":\"${PSFT_TEST_PW}\"}";

    CHECK_INT(open_with("{\"type\":\"psft\",\"base_url\":\"http://h:1\",\"node\":\"PSFT EP\","
                        "\"user\":\"VP1\",\"password\":\"x\"}", &c), MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "systems.erp.node") != NULL);
    close_conn(&c);
    CHECK_INT(open_with("{\"type\":\"psft\",\"base_url\":\"http://h:1/PSIGW/RESTListeningConnector\","
                        "\"node\":\"PSFT_EP\",\"user\":\"VP1\",\"password\":\"x\"}", &c),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "systems.erp.base_url") != NULL);
    close_conn(&c);
    CHECK_INT(open_with("{\"type\":\"psft\",\"base_url\":\"http://h:1\",\"node\":\"PSFT_EP\"}", &c),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "systems.erp.user") != NULL);
    close_conn(&c);
    CHECK_INT(open_with("{\"type\":\"psft\",\"base_url\":\"http://h:1\",\"node\":\"PSFT_EP\","
                        "\"auth\":\"oauth\",\"client_id\":\"a\",\"client_secret\":\"b\"}", &c),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "systems.erp.token_url") != NULL);
    close_conn(&c);

    CHECK_INT(open_with(good, &c), MLC_OK);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"invoice\"}"), MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.kind") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\"}"), MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.read") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"service\","
                            "\"operation\":\"MLC_PO_LIST\",\"path\":\"purchaseorders\"}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.operation") != NULL && strstr(c.err.msg, ".v1") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"voucher\",\"read\":\"service\","
                            "\"operation\":\"MLC_VCHR_LIST.v1\",\"cursor_column\":\"INVOICE_DT\"}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.cursor_column") != NULL &&
          strstr(c.err.msg, "INVOICE_DT is a date column") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"qas\"}"), MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.query") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"qas\",\"query\":\"Q\","
                            "\"prompts\":{\"BU\":\"US001,US002\"}}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.prompts.BU") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"qas\",\"query\":\"Q\","
                            "\"maxrows\":1}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.maxrows") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"vendor\",\"read\":\"qas\","
                            "\"query\":\"Q\",\"vendors\":{\"read\":\"qas\",\"query\":\"V\"}}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.vendors") != NULL);
    CHECK_INT(poll_with(&c, "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"qas\",\"query\":\"Q\","
                            "\"vendors\":{\"read\":\"service\",\"operation\":\"V.v1\","
                            "\"cursor_column\":\"EFFDT\",\"bogus\":1}}"),
              MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "source.vendors.bogus") != NULL);
    close_conn(&c);
}

/* ------------------------------------------------------------ over HTTP */

/* The stand-in: a list service of POs (cut at srv.maxrows, "truncated",
 * after-keys in key order), a vendor list, one QAS query, an operation that
 * answers HTTP 200 with an error, an unknown node (HTTP 500 IBResponse), and
 * an OAuth token endpoint. Basic auth wants VP1:pw; bearer wants srv.good. */
#define N_PO 300
#define N_SEEN 64

static struct {
    int fd, port;
    pthread_t th;
    pthread_mutex_t mu;
    struct fake_row po[N_PO];
    char po_vendor[N_PO][16];
    char vname[2][32];
    long long vstamp[2];
    long maxrows;
    char good[64];     /* the bearer token the resource accepts */
    int token_calls;
    char first[N_SEEN][1024]; /* request targets seen, in turn */
    size_t n_seen;
} hs = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* Query parameter name of target, URL-decoded into out; 0 when present. */
static int qparam(const char *target, const char *name, char *out, size_t n)
{
    const char *q = strchr(target, '?');
    size_t len = strlen(name);

    while (q != NULL) {
        q++;
        if (strncmp(q, name, len) == 0 && q[len] == '=') {
            const char *v = q + len + 1;
            size_t k = 0;
            while (*v && *v != '&' && k + 1 < n) {
                if (*v == '%' && v[1] && v[2]) {
                    char hex[3] = { v[1], v[2], 0 };
                    out[k++] = (char)strtol(hex, NULL, 16);
                    v += 3;
                } else {
                    out[k++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[k] = '\0';
            return 0;
        }
        q = strchr(q, '&');
    }
    out[0] = '\0';
    return -1;
}

static void po_list(const char *target, struct mlc_buf *b)
{
    char from[40], to[40], after[64], *bar;
    long long f = 0, t = 0;
    struct fake_row sel[N_PO];
    size_t k = 0, lim;
    int have_after = qparam(target, "afterKey", after, sizeof(after)) == 0;
    size_t idx[N_PO];
    char mr[16];

    if (qparam(target, "maxRows", mr, sizeof(mr)) == 0 && atol(mr) > 0 && atol(mr) < hs.maxrows) {
        hs.maxrows = atol(mr); /* (restored by hs_fill) */
    }

    qparam(target, "fromDttm", from, sizeof(from));
    qparam(target, "toDttm", to, sizeof(to));
    psft_dttm_parse(from, &f);
    psft_dttm_parse(to, &t);
    bar = strchr(after, ',');
    if (bar != NULL) {
        *bar++ = '\0';
    }
    for (size_t i = N_PO; i-- > 0;) {
        const struct fake_row *r = &hs.po[i];
        if (r->stamp < f || r->stamp > t) {
            continue;
        }
        if (have_after && r->stamp == f) {
            int c = strcmp(r->bu, after);
            if (c < 0 || (c == 0 && strcmp(r->po, bar ? bar : "") <= 0)) {
                continue;
            }
        }
        sel[k] = *r;
        k++;
    }
    /* the stand-in always sorts, as the contract asks of keyset reads */
    qsort(sel, k, sizeof(sel[0]), cmp_stamp_key);
    for (size_t i = 0; i < k; i++) {
        idx[i] = (size_t)strtoul(sel[i].po, NULL, 10);
    }
    lim = k > (size_t)hs.maxrows ? (size_t)hs.maxrows : k;
    mlc_buf_addf(b, "{\"status\":\"success\",\"count\":%zu,\"truncated\":%s,\"purchaseOrders\":[",
                 lim, k > lim ? "true" : "false");
    for (size_t i = 0; i < lim; i++) {
        char when[40];
        psft_dttm_format_full(sel[i].stamp, when, sizeof(when));
        mlc_buf_addf(b,
                     "%s{\"BUSINESS_UNIT\":\"%s\",\"PO_ID\":\"%s\",\"PO_STATUS\":\"A\","
                     "\"VENDOR_SETID\":\"SHARE\",\"VENDOR_ID\":\"%s\",\"LAST_DTTM_UPDATE\":\"%s\","
                     "\"lines\":[{\"LINE_NBR\":1,\"DESCR254_MIXED\":\"Item\",\"QTY_PO\":1}]}",
                     i ? "," : "", sel[i].bu, sel[i].po, hs.po_vendor[idx[i]], when);
    }
    mlc_buf_adds(b, "]}");
}

static void hs_answer(const char *target, const char *authz, int *status, struct mlc_buf *b)
{
    const char *base = "/PSIGW/RESTListeningConnector/";
    const char *rest = strncmp(target, base, strlen(base)) == 0 ? target + strlen(base) : "";

    *status = 200;
    if (strcmp(target, "/token") == 0) {
        hs.token_calls++;
        mlc_buf_addf(b, "{\"access_token\":\"t%d\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
                     hs.token_calls);
        return;
    }
    if (strncmp(rest, "PSFT_EP/", 8) != 0) {
        *status = 500;
        mlc_buf_adds(b, "<?xml version=\"1.0\"?><IBResponse type=\"error\"><DefaultTitle>Integration "
                        "Broker Response</DefaultTitle><StatusCode>20</StatusCode><MessageSet>158"
                        "</MessageSet><MessageID>10001</MessageID><DefaultMessage>Unknown node."
                        "</DefaultMessage><MessageParameters/></IBResponse>");
        return;
    }
    rest += 8;
    if (!(strcmp(authz, "Basic VlAxOnB3") == 0 ||
          (hs.good[0] && strncmp(authz, "Bearer ", 7) == 0 && strcmp(authz + 7, hs.good) == 0))) {
        *status = 401;
        mlc_buf_adds(b, "{\"status\":\"error\",\"message\":\"not authorised\"}");
        return;
    }
    if (strncmp(rest, "MLC_PO_LIST.v1/purchaseorders?", 30) == 0) {
        po_list(target, b);
    } else if (strncmp(rest, "MLC_VNDR_LIST.v1/vendors?", 25) == 0) {
        char a[40], z[40];
        mlc_buf_adds(b, "{\"status\":\"success\",\"truncated\":false,\"vendors\":[");
        for (int i = 0; i < 2; i++) {
            psft_dttm_format_full(hs.vstamp[i], a, sizeof(a));
            snprintf(z, sizeof(z), "%010d", 40 + i);
            mlc_buf_addf(b, "%s{\"SETID\":\"SHARE\",\"VENDOR_ID\":\"%s\",\"NAME1\":\"%s\","
                            "\"PYMNT_TERMS_CD\":\"N30\",\"LASTUPDDTTM\":\"%s\"}",
                         i ? "," : "", z, hs.vname[i], a);
        }
        mlc_buf_adds(b, "]}");
    } else if (strncmp(rest, "ExecuteQuery.v1/PUBLIC/X_WS_PO/JSON/NONFILE?", 44) == 0) {
        mlc_buf_adds(b, qas_doc);
    } else if (strncmp(rest, "MLC_ERR.v1/", 11) == 0) {
        mlc_buf_adds(b, "{\"status\":\"error\",\"code\":\"MLC-0001\",\"message\":\"fromDttm is "
                        "not a date-time\"}");
    } else {
        *status = 500;
        mlc_buf_adds(b, "<IBResponse type=\"error\"><StatusCode>20</StatusCode><MessageSet>158"
                        "</MessageSet><MessageID>10002</MessageID><DefaultMessage>No service operation "
                        "found for this URL.</DefaultMessage></IBResponse>");
    }
}

static void hs_serve(int fd)
{
    char buf[8192], target[1024] = "", authz[256] = "", *line, *end;
    struct timeval tv = { 5, 0 };
    struct mlc_buf b = { 0 }, out = { 0 };
    size_t got = 0;
    int status;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (got + 1 < sizeof(buf)) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0) {
            return;
        }
        got += (size_t)r;
        buf[got] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            break;
        }
    }
    sscanf(buf, "%*s %1023s", target);
    for (line = strstr(buf, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Authorization: ", 15) == 0) {
            sscanf(line + 17, "%255[^\r]", authz);
        }
    }
    pthread_mutex_lock(&hs.mu);
    if (hs.n_seen < N_SEEN) {
        snprintf(hs.first[hs.n_seen++], sizeof(hs.first[0]), "%s", target);
    }
    hs_answer(target, authz, &status, &b);
    pthread_mutex_unlock(&hs.mu);
    mlc_buf_addf(&out, "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, mlc_buf_str(&b)[0] == '<' ? "text/xml" : "application/json", b.len);
    mlc_buf_add(&out, mlc_buf_str(&b), b.len);
    if (send(fd, mlc_buf_str(&out), out.len, MSG_NOSIGNAL) < 0) {
        perror("test server send");
    }
    mlc_buf_release(&b);
    mlc_buf_release(&out);
}

static void *hs_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(hs.fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        hs_serve(fd);
        close(fd);
    }
    return NULL;
}

static void hs_start(void)
{
    struct sockaddr_in a = { 0 };
    socklen_t len = sizeof(a);

    hs.fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (hs.fd < 0 || bind(hs.fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(hs.fd, (struct sockaddr *)&a, &len) != 0 || listen(hs.fd, 16) != 0 ||
        pthread_create(&hs.th, NULL, hs_main, NULL) != 0) {
        perror("test server");
        exit(2);
    }
    hs.port = ntohs(a.sin_port);
}

static void hs_reset_seen(void)
{
    pthread_mutex_lock(&hs.mu);
    hs.n_seen = 0;
    pthread_mutex_unlock(&hs.mu);
}

static enum mlc_rc lit_resolve(void *ctx, const char *ref, char **out, struct mlc_errbuf *err)
{
    (void)ctx;
    (void)err;
    *out = strdup(ref);
    return MLC_OK;
}

static const struct vault lit_vault = { NULL, lit_resolve, NULL, NULL };

/* A conn on the stand-in; extra: more system settings (",\"auth\":..."). */
static void hconn(struct conn *c, const char *node, const char *extra)
{
    char json[1024];
    cJSON *conf;

    snprintf(json, sizeof(json),
             "{\"type\":\"psft\",\"base_url\":\"http://127.0.0.1:%d\",\"node\":\"%s\"%s}", hs.port,
             node, extra);
    conf = cJSON_Parse(json);
    memset(c, 0, sizeof(*c));
    c->ops = &connector_psft;
    c->name = "erp";
    c->conf = conf;
    c->vault = &lit_vault;
    c->http = mlc_http_new(NULL);
    if (connector_psft.open(c) != MLC_OK) {
        fprintf(stderr, "  open: %s\n", c->err.msg);
    }
}

static void hclose(struct conn *c)
{
    mlc_http_free(c->http);
    close_conn(c);
}

static const char po_source[] =
    "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"service\",\"operation\":\"MLC_PO_LIST.v1\","
    "\"path\":\"purchaseorders\",\"params\":{\"bu\":\"US001\"},\"maxrows\":50,\"page_size\":100,"
    "\"since\":\"2024-01-01T00:00:00\",\"vendors\":{\"read\":\"service\",\"operation\":"
    "\"MLC_VNDR_LIST.v1\",\"path\":\"vendors\",\"params\":{\"setid\":\"SHARE\"}}}";

static char last_vendor[64]; /* VENDOR_NAME of the last record run_all() saw */

/* One run: every page from cursor; keys and last cursor collected. */
static enum mlc_rc run_all(struct conn *c, const char *source, const char *cursor, char ***keys,
                           size_t *n, char *last, size_t last_n, int *ordered)
{
    cJSON *src = cJSON_Parse(source);
    struct poll_req rq = { src, cursor, 1 };
    enum mlc_rc rc;
    char prev[512] = "";

    *n = 0;
    *keys = NULL;
    *ordered = 1;
    for (;;) {
        struct page pg = { 0 };
        mlc_err_reset(&c->err);
        rc = connector_psft.poll(c, &rq, &pg);
        for (size_t i = 0; rc == MLC_OK && i < pg.n; i++) {
            long long e1, e2;
            char k1[256], k2[256];
            *keys = realloc(*keys, (*n + 1) * sizeof(char *));
            (*keys)[(*n)++] = strdup(pg.recs[i].key ? pg.recs[i].key : "?");
            if (pg.recs[i].cursor == NULL) {
                *ordered = 0;
                continue;
            }
            if (prev[0] && (psft_cursor_parse(prev, &e1, k1, sizeof(k1)) != 0 ||
                            psft_cursor_parse(pg.recs[i].cursor, &e2, k2, sizeof(k2)) != 0 ||
                            psft_cursor_cmp(e1, k1, e2, k2) >= 0)) {
                *ordered = 0;
            }
            snprintf(prev, sizeof(prev), "%s", pg.recs[i].cursor);
            if (last != NULL) {
                snprintf(last, last_n, "%s", pg.recs[i].cursor);
            }
            snprintf(last_vendor, sizeof(last_vendor), "%s",
                     mlc_json_str(pg.recs[i].data, "VENDOR_NAME") ? mlc_json_str(pg.recs[i].data, "VENDOR_NAME") : "");
        }
        rq.first = 0;
        if (rc != MLC_OK || !pg.more) {
            page_release(&pg);
            break;
        }
        page_release(&pg);
    }
    cJSON_Delete(src);
    return rc;
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
    }
    free(keys);
}

static void hs_fill(void)
{
    long long base = dt("2024-01-16T00:00:00");

    pthread_mutex_lock(&hs.mu);
    for (size_t i = 0; i < N_PO; i++) {
        snprintf(hs.po[i].bu, sizeof(hs.po[i].bu), "US001");
        snprintf(hs.po[i].po, sizeof(hs.po[i].po), "%010zu", i);
        /* 120 POs share one stamp; the rest spread over the day */
        hs.po[i].stamp = i < 120 ? base + 7200LL * 1000000 : base + (long long)((i * 577) % 86400) * 1000000;
        snprintf(hs.po_vendor[i], sizeof(hs.po_vendor[i]), "%010d", 40 + (int)(i % 2));
    }
    snprintf(hs.vname[0], sizeof(hs.vname[0]), "Acme Pumps");
    snprintf(hs.vname[1], sizeof(hs.vname[1]), "Bolt Co");
    hs.vstamp[0] = dt("2023-06-01T00:00:00");
    hs.vstamp[1] = dt("2023-06-01T00:00:00");
    hs.maxrows = 50;
    pthread_mutex_unlock(&hs.mu);
}

static void test_http_run(void)
{
    struct conn c;
    char **keys = NULL, last[512] = "", want[1024], again[512] = "";
    size_t n = 0;
    int ordered = 0, distinct = 1;

    hs_fill();
    hconn(&c, "PSFT_EP", ",\"user\":\"VP1\",\"password\":\"pw\"");
    hs_reset_seen();
    CHECK_INT(run_all(&c, po_source, NULL, &keys, &n, last, sizeof(last), &ordered), MLC_OK);
    if (c.err.set) {
        fprintf(stderr, "  %s\n", c.err.msg);
    }
    CHECK_INT(n, N_PO);
    CHECK(ordered);
    CHECK(strcmp(last_vendor, "Acme Pumps") == 0 || strcmp(last_vendor, "Bolt Co") == 0);
    for (size_t i = 1; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            distinct &= strcmp(keys[i], keys[j]) != 0;
        }
    }
    CHECK(distinct);
    free_keys(keys, n);
    /* the exact first requests: the vendor master, then the PO window */
    snprintf(want, sizeof(want), "/PSIGW/RESTListeningConnector/PSFT_EP/MLC_VNDR_LIST.v1/vendors"
                                 "?setid=SHARE&fromDttm=1900-01-01T00%%3A00%%3A00&toDttm=");
    CHECK(hs.n_seen > 2 && strncmp(hs.first[0], want, strlen(want)) == 0);
    snprintf(want, sizeof(want), "/PSIGW/RESTListeningConnector/PSFT_EP/MLC_PO_LIST.v1/purchaseorders"
                                 "?bu=US001&fromDttm=2024-01-01T00%%3A00%%3A00&toDttm=");
    CHECK(hs.n_seen > 2 && strncmp(hs.first[1], want, strlen(want)) == 0);
    {
        /* the 120 POs of one second were read on by key */
        int after = 0;
        for (size_t i = 0; i < hs.n_seen; i++) {
            after |= strstr(hs.first[i], "&afterKey=") != NULL;
        }
        CHECK(after || hs.n_seen == N_SEEN);
    }

    /* nothing changed: nothing read after the cursor */
    CHECK_INT(run_all(&c, po_source, last, &keys, &n, again, sizeof(again), &ordered), MLC_OK);
    CHECK_INT(n, 0);
    free_keys(keys, n);

    /* a vendor rename: the POs that show it come again, with the new name,
     * and their cursors pass the old one */
    pthread_mutex_lock(&hs.mu);
    snprintf(hs.vname[1], sizeof(hs.vname[1]), "Bolt & Nut Co");
    hs.vstamp[1] = dt("2024-01-17T09:00:00");
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(run_all(&c, po_source, last, &keys, &n, again, sizeof(again), &ordered), MLC_OK);
    CHECK_INT(n, N_PO / 2);
    CHECK(ordered);
    CHECK_STR(last_vendor, "Bolt & Nut Co");
    CHECK(strncmp(again, "2024-01-17T09:00:00.000000|", 27) == 0);
    free_keys(keys, n);
    /* that rename was carried to the end of a run: the next run does not
     * read the older POs again */
    hs_reset_seen();
    snprintf(last, sizeof(last), "%s", again);
    CHECK_INT(run_all(&c, po_source, last, &keys, &n, again, sizeof(again), &ordered), MLC_OK);
    CHECK_INT(n, 0);
    CHECK_INT(hs.n_seen, 2); /* the vendor master and the window after the cursor */
    free_keys(keys, n);

    /* one record by key, where the service takes key parameters */
    {
        cJSON *src = cJSON_Parse("{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"service\","
                                 "\"operation\":\"MLC_PO_LIST.v1\",\"path\":\"purchaseorders\","
                                 "\"maxrows\":1000,\"key_params\":[\"keyBu\",\"keyPo\"]}");
        struct record r = { 0 };
        hs_reset_seen();
        /* the stand-in ignores the key parameters: the connector picks the key */
        pthread_mutex_lock(&hs.mu);
        hs.maxrows = 1000;
        pthread_mutex_unlock(&hs.mu);
        CHECK_INT(connector_psft.fetch(&c, src, "US001-0000000205", &r), MLC_OK);
        CHECK_STR(r.key, "US001-0000000205");
        CHECK(r.data != NULL && strcmp(mlc_json_str(r.data, "PO_ID"), "0000000205") == 0);
        CHECK(hs.n_seen == 1 && strstr(hs.first[0], "&keyBu=US001&keyPo=0000000205") != NULL);
        record_release(&r);
        CHECK_INT(connector_psft.fetch(&c, src, "nodash", &r), MLC_E_INVAL);
        cJSON_Delete(src);
        src = cJSON_Parse(po_source);
        mlc_err_reset(&c.err);
        CHECK_INT(connector_psft.fetch(&c, src, "US001-0000000205", &r), MLC_E_INVAL);
        CHECK(strstr(c.err.msg, "source.key_params") != NULL);
        cJSON_Delete(src);
    }
    hclose(&c);
}

static void test_http_qas_shape(void)
{
    struct conn c;
    cJSON *src = cJSON_Parse("{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"qas\",\"query\":"
                             "\"X_WS_PO\",\"prompts\":{\"BU\":\"US001\"},\"maxrows\":100,"
                             "\"since\":\"2024-01-01T00:00:00\"}");
    struct poll_req rq = { src, "2024-01-16T10:12:03.000000|US001-0000079262", 1 };
    struct page pg = { 0 };
    const char *want = "/PSIGW/RESTListeningConnector/PSFT_EP/ExecuteQuery.v1/PUBLIC/X_WS_PO/JSON/"
                       "NONFILE?isconnectedquery=n&maxrows=100&prompt_uniquepromptname=BU,FROM_DTTM,"
                       "TO_DTTM&prompt_fieldvalue=US001,2024-01-16T10%3A12%3A03,";

    hconn(&c, "PSFT_EP", ",\"user\":\"VP1\",\"password\":\"pw\"");
    hs_reset_seen();
    CHECK_INT(connector_psft.poll(&c, &rq, &pg), MLC_OK);
    CHECK(hs.n_seen == 1 && strncmp(hs.first[0], want, strlen(want)) == 0);
    CHECK(hs.n_seen == 1 && strstr(hs.first[0], "&json_resp=true") != NULL);
    /* the row at the cursor itself was delivered before; the next one comes */
    CHECK_INT(pg.n, 1);
    if (pg.n == 1) {
        CHECK_STR(pg.recs[0].key, "US001-0000079263");
        CHECK_STR(pg.recs[0].cursor, "2024-01-16T10:12:04.000000|US001-0000079263");
        CHECK_STR(mlc_json_str(pg.recs[0].data, "PO_ID"), "0000079263");
    }
    CHECK_INT(pg.more, 0);
    page_release(&pg);
    cJSON_Delete(src);
    hclose(&c);
}

static enum mlc_rc poll_once(struct conn *c, const char *source)
{
    cJSON *src = cJSON_Parse(source);
    struct poll_req rq = { src, NULL, 1 };
    struct page pg = { 0 };
    enum mlc_rc rc;

    mlc_err_reset(&c->err);
    rc = connector_psft.poll(c, &rq, &pg);
    page_release(&pg);
    cJSON_Delete(src);
    return rc;
}

static void test_http_errors(void)
{
    struct conn c;
    const char *err_src = "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"service\","
                          "\"operation\":\"MLC_ERR.v1\",\"path\":\"x\"}";
    const char *bad_op = "{\"system\":\"erp\",\"kind\":\"po\",\"read\":\"service\","
                         "\"operation\":\"MLC_PO_LIST.v9\",\"path\":\"purchaseorders\"}";

    hs_fill();
    /* wrong password: one line naming the OPRID and the settings to fix */
    hconn(&c, "PSFT_EP", ",\"user\":\"VP1\",\"password\":\"wrong\"");
    CHECK_INT(poll_once(&c, po_source), MLC_E_AUTH);
    CHECK(strstr(c.err.msg, "OPRID 'VP1' or its password was refused") != NULL);
    CHECK(strstr(c.err.msg, "systems.erp.password") != NULL);
    CHECK(strstr(c.err.msg, "wrong") == NULL);
    CHECK(strchr(c.err.msg, '\n') == NULL);
    hclose(&c);

    /* HTTP 200 carrying an error payload */
    hconn(&c, "PSFT_EP", ",\"user\":\"VP1\",\"password\":\"pw\"");
    CHECK_INT(poll_once(&c, err_src), MLC_E_REJECTED);
    CHECK(strstr(c.err.msg, "MLC-0001: fromDttm is not a date-time") != NULL);
    CHECK(strstr(c.err.msg, "operation MLC_ERR.v1/x") != NULL);
    /* wrong operation (an IBResponse 500, retried, then explained) */
    CHECK_INT(poll_once(&c, bad_op), MLC_E_REJECTED);
    CHECK(strstr(c.err.msg, "No service operation found") != NULL);
    CHECK(strstr(c.err.msg, "operation/query") != NULL);
    hclose(&c);

    /* wrong node */
    hconn(&c, "PSFT_XX", ",\"user\":\"VP1\",\"password\":\"pw\"");
    CHECK_INT(poll_once(&c, po_source), MLC_E_REJECTED);
    CHECK(strstr(c.err.msg, "systems.erp.node ('PSFT_XX')") != NULL);
    CHECK(strstr(c.err.msg, "Unknown node") != NULL);
    CHECK(strchr(c.err.msg, '\n') == NULL);
    hclose(&c);

    /* an expired bearer from the IdP: renewed once, then read */
    pthread_mutex_lock(&hs.mu);
    hs.token_calls = 0;
    snprintf(hs.good, sizeof(hs.good), "t2"); /* t1 comes back refused */
    pthread_mutex_unlock(&hs.mu);
    {
        char extra[300];
        snprintf(extra, sizeof(extra),
                 ",\"auth\":\"oauth\",\"token_url\":\"http://127.0.0.1:%d/token\",\"client_id\":"
                 "\"mlc\",\"client_secret\":\"s\"",
                 hs.port);
        hconn(&c, "PSFT_EP", extra);
    }
    CHECK_INT(poll_once(&c, po_source), MLC_OK);
    CHECK_INT(hs.token_calls, 2);
    /* a token the server never takes: a message saying what to check */
    pthread_mutex_lock(&hs.mu);
    snprintf(hs.good, sizeof(hs.good), "never");
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(poll_once(&c, po_source), MLC_E_AUTH);
    CHECK(strstr(c.err.msg, "fresh access token") != NULL);
    hclose(&c);
    pthread_mutex_lock(&hs.mu);
    hs.good[0] = '\0';
    pthread_mutex_unlock(&hs.mu);
}

int main(void)
{
    RUN(test_dttm);
    RUN(test_qas_rows);
    RUN(test_qas_spellings);
    RUN(test_qas_lines);
    RUN(test_qas_child);
    RUN(test_qas_failures);
    RUN(test_svc_po);
    RUN(test_svc_vouchers);
    RUN(test_error_bodies);
    RUN(test_window_split);
    RUN(test_window_boundaries);
    RUN(test_vendor_join);
    RUN(test_order_and_cursor);
    RUN(test_config);
    mlc_http_global_init();
    hs_start();
    RUN(test_http_qas_shape);
    RUN(test_http_run);
    RUN(test_http_errors);
    return TT_DONE();
}
