/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the IFS Cloud connector's pure parts (agent/connectors/ifs/):
 * OData collection pages, error bodies and $metadata shaped as ifs-cloud.md
 * shows them, cursors, literals, key predicates and the keyset filter; then
 * the connector over HTTP against a small IFS stand-in on 127.0.0.1 (a
 * thread of this test): the exact request shapes, paging through next links
 * with a token that expires mid-run, rows that move while paging, and a
 * write-back whose ETag goes stale (412) before it lands.
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
#include "agent/connectors/ifs/ifs.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "tinytest.h"

static const struct ifs_shape po_shape = { { "OrderNo" }, 1, "ChangedDate" };
static const struct ifs_shape wo_shape = { { "WoNo" }, 1, "RegDate" };

/* ------------------------------------------------------------------ pages */

static const char po_page[] =
    "{\"@odata.context\":\"https://x/main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
    "$metadata#PurchaseOrderSet\",\"value\":["
    "{\"@odata.etag\":\"W/\\\"Vy8iQUFDSU1HQUFGQUFCcElIQUFBOjIwMTkxMDMxMTMyNDAwIg==\\\"\","
    "\"luname\":\"PurchaseOrder\",\"keyref\":\"ORDER_NO=P1001^\",\"OrderNo\":\"P1001\","
    "\"VendorNo\":\"V10\",\"Objstate\":\"Released\",\"ChangedDate\":\"2026-01-15T10:00:00Z\"},"
    "{\"OrderNo\":\"P1002\",\"ChangedDate\":\"2026-01-15T10:00:00Z\"},"
    "{\"OrderNo\":\"P1003\",\"ChangedDate\":null},"
    "{\"VendorNo\":\"V11\",\"ChangedDate\":\"2026-01-15T10:00:00Z\"},"
    "17],"
    "\"@odata.nextLink\":\"https://x/main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
    "PurchaseOrderSet?$skiptoken='abc'\"}";

static void test_page(void)
{
    struct page pg = { 0 };
    struct mlc_errbuf err = { 0 };
    char *next = NULL;
    size_t n = 0;

    CHECK_INT(ifs_parse_page(po_page, strlen(po_page), &po_shape, &pg, &next, &n, &err), MLC_OK);
    CHECK_INT(n, 5);
    CHECK_INT(pg.n, 5);
    CHECK_STR(next, "https://x/main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
                    "PurchaseOrderSet?$skiptoken='abc'");
    CHECK_STR(pg.recs[0].key, "P1001");
    CHECK_STR(pg.recs[0].cursor, "[\"2026-01-15T10:00:00Z\",\"P1001\"]");
    CHECK_STR(mlc_json_str(pg.recs[0].data, "@odata.etag"),
              "W/\"Vy8iQUFDSU1HQUFGQUFCcElIQUFBOjIwMTkxMDMxMTMyNDAwIg==\"");
    CHECK_STR(mlc_json_str(pg.recs[0].data, "Objstate"), "Released");
    CHECK(pg.recs[0].error == NULL);
    CHECK_STR(pg.recs[1].cursor, "[\"2026-01-15T10:00:00Z\",\"P1002\"]");
    CHECK(pg.recs[2].error != NULL && strstr(pg.recs[2].error, "ChangedDate") != NULL);
    CHECK(pg.recs[3].error != NULL && strstr(pg.recs[3].error, "OrderNo") != NULL);
    CHECK(pg.recs[4].error != NULL && pg.recs[4].data != NULL);
    page_release(&pg);
    free(next);

    /* the last page: no next link; numeric keys stay numbers in the cursor */
    {
        const char *b = "{\"value\":[{\"WoNo\":1234,\"RegDate\":\"2026-01-15\","
                        "\"ErrDescr\":\"Replace pump seal\"}]}";
        CHECK_INT(ifs_parse_page(b, strlen(b), &wo_shape, &pg, &next, &n, &err), MLC_OK);
        CHECK(next == NULL);
        CHECK_STR(pg.recs[0].key, "1234");
        CHECK_STR(pg.recs[0].cursor, "[\"2026-01-15\",1234]");
        page_release(&pg);
    }
    /* not a collection */
    {
        const char *b = "{\"OrderNo\":\"P1\"}";
        CHECK_INT(ifs_parse_page(b, strlen(b), &po_shape, &pg, &next, &n, &err), MLC_E_PROTO);
        CHECK(strstr(err.msg, "value") != NULL);
        page_release(&pg);
        CHECK_INT(ifs_parse_page("[", 1, &po_shape, &pg, &next, &n, &err), MLC_E_PROTO);
        page_release(&pg);
        b = "{\"value\":[],\"@odata.nextLink\":5}";
        CHECK_INT(ifs_parse_page(b, strlen(b), &po_shape, &pg, &next, &n, &err), MLC_E_PROTO);
        page_release(&pg);
    }
    /* a composite key joins its parts with '|' */
    {
        static const struct ifs_shape line = { { "OrderNo", "LineNo", "ReleaseNo" }, 3,
                                               "ChangedDate" };
        const char *b = "{\"value\":[{\"OrderNo\":\"P1\",\"LineNo\":\"2\",\"ReleaseNo\":\"1\","
                        "\"ChangedDate\":\"2026-02-01T08:00:00+01:00\"}]}";
        CHECK_INT(ifs_parse_page(b, strlen(b), &line, &pg, &next, &n, &err), MLC_OK);
        CHECK_STR(pg.recs[0].key, "P1|2|1");
        page_release(&pg);
    }
}

/* ----------------------------------------------------------------- errors */

static void test_errors(void)
{
    char code[64], msg[256];
    const char *b = "{ \"error\": { \"code\": \"ODP_DESERIALIZATION_ERROR\", \"message\": \"Error "
                    "while de-serializing contents.\" } }";

    CHECK_INT(ifs_error_parse(b, strlen(b), code, sizeof(code), msg, sizeof(msg)), 0);
    CHECK_STR(code, "ODP_DESERIALIZATION_ERROR");
    CHECK_STR(msg, "Error while de-serializing contents.");
    b = "{\"error\":{\"code\":\"MI_MODIFIED_ERROR\",\"message\":\"Metadata changed\","
        "\"details\":[{\"code\":\"X\",\"message\":\"reload\\nplease\",\"target\":\"Y\"}]}}";
    CHECK_INT(ifs_error_parse(b, strlen(b), code, sizeof(code), msg, sizeof(msg)), 0);
    CHECK_STR(code, "MI_MODIFIED_ERROR");
    CHECK_STR(msg, "Metadata changed (reload please)");
    b = "{\"error\":\"invalid_client\",\"error_description\":\"Invalid client credentials\"}";
    CHECK_INT(ifs_error_parse(b, strlen(b), code, sizeof(code), msg, sizeof(msg)), 0);
    CHECK_STR(code, "invalid_client");
    CHECK_STR(msg, "Invalid client credentials");
    b = "<html>\r\nBad gateway</html>";
    CHECK_INT(ifs_error_parse(b, strlen(b), code, sizeof(code), msg, sizeof(msg)), -1);
    CHECK_STR(code, "");
    CHECK_STR(msg, "<html>  Bad gateway</html>");
    CHECK_INT(ifs_error_parse(NULL, 0, code, sizeof(code), msg, sizeof(msg)), -1);
    CHECK_STR(msg, "");
}

/* --------------------------------------------------------------- metadata */

static const char metadata[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
    "<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\n"
    "<edmx:DataServices><Schema Namespace=\"IfsApp.PurchaseOrderHandling\" "
    "xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">\n"
    "<EntityType Name=\"PurchaseOrderLine\"><Key><PropertyRef Name=\"OrderNo\"/></Key>"
    "<Property Name=\"Cf_LineFlag\" Type=\"Edm.String\"/></EntityType>\n"
    "<EntityType Name=\"PurchaseOrder\"><Key><PropertyRef Name=\"OrderNo\"/></Key>\n"
    "  <Property Name=\"OrderNo\" Type=\"Edm.String\" Nullable=\"false\"/>\n"
    "  <Property Name=\"Objstate\" Type=\"Edm.String\"/>\n"
    "  <Property Name=\"ChangedDate\" Type=\"Edm.DateTimeOffset\"/>\n"
    "  <Property Name=\"Cf_Jira_Status\" Type=\"Edm.String\" MaxLength=\"50\"/>\n"
    "  <Property Name=\"Cf_ProjectRef\" Type=\"Edm.String\"/>\n"
    "</EntityType>\n"
    "<Action Name=\"Release\" IsBound=\"true\"><Parameter Name=\"it\" "
    "Type=\"IfsApp.PurchaseOrderHandling.PurchaseOrder\"/></Action>\n"
    "<Action Name=\"Close\" IsBound=\"true\"><Parameter Name=\"it\" "
    "Type=\"IfsApp.PurchaseOrderHandling.PurchaseOrderLine\"/></Action>\n"
    "<EntityContainer Name=\"Main\">\n"
    "  <EntitySet Name=\"PurchaseOrderLineSet\" "
    "EntityType=\"IfsApp.PurchaseOrderHandling.PurchaseOrderLine\"/>\n"
    "  <EntitySet Name=\"PurchaseOrderSet\" EntityType=\"IfsApp.PurchaseOrderHandling.PurchaseOrder\"/>\n"
    "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>\n";

static void test_metadata(void)
{
    struct ifs_meta m;
    char name[64];
    size_t n = strlen(metadata);

    CHECK_INT(ifs_meta_entity(metadata, n, "PurchaseOrderSet", &m), 0);
    CHECK_STR(m.ns, "IfsApp.PurchaseOrderHandling");
    CHECK_STR(m.type, "PurchaseOrder");
    CHECK_INT(m.n_cf, 2);
    CHECK_STR(m.cf_names[0], "Cf_Jira_Status");
    CHECK_STR(m.cf_names[1], "Cf_ProjectRef");
    /* a custom field by its full name, or without the Cf_ prefix, any case */
    CHECK_INT(ifs_meta_property(metadata, n, &m, "Cf_Jira_Status", name, sizeof(name)), 0);
    CHECK_STR(name, "Cf_Jira_Status");
    CHECK_INT(ifs_meta_property(metadata, n, &m, "jira_status", name, sizeof(name)), 0);
    CHECK_STR(name, "Cf_Jira_Status");
    CHECK_INT(ifs_meta_property(metadata, n, &m, "JiraStatus", name, sizeof(name)), -1);
    /* the other entity type's field is not this one's */
    CHECK_INT(ifs_meta_property(metadata, n, &m, "LineFlag", name, sizeof(name)), -1);
    CHECK_INT(ifs_meta_action(metadata, n, &m, "release", name, sizeof(name)), 0);
    CHECK_STR(name, "Release");
    CHECK_INT(ifs_meta_action(metadata, n, &m, "Close", name, sizeof(name)), -1);
    CHECK_INT(ifs_meta_entity(metadata, n, "NoSuchSet", &m), -1);
    CHECK_INT(ifs_meta_entity(metadata, n - 200, "PurchaseOrderSet", &m), -1); /* cut short */
    CHECK_INT(ifs_meta_entity("", 0, "PurchaseOrderSet", &m), -1);
}

/* ------------------------------------------------- cursors and literals */

static void test_literals(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    cJSON *v = cJSON_CreateString("O'Brien");
    int num[1] = { 1 };
    static const struct ifs_shape line = { { "OrderNo", "LineNo" }, 2, "ChangedDate" };
    int lnum[2] = { 0, 1 };

    CHECK_INT(ifs_literal(&b, v, 0), 0);
    CHECK_STR(mlc_buf_str(&b), "'O''Brien'");
    CHECK_INT(ifs_literal(&b, v, 1), -1); /* not a date */
    cJSON_Delete(v);
    mlc_buf_reset(&b);
    v = cJSON_CreateString("2024-01-15T00:00:00Z");
    CHECK_INT(ifs_literal(&b, v, 1), 0);
    CHECK_STR(mlc_buf_str(&b), "2024-01-15T00:00:00Z");
    cJSON_Delete(v);
    v = cJSON_CreateString("2024-01-15T00:00:00Z) or (1 eq 1");
    CHECK_INT(ifs_literal(&b, v, 1), -1); /* no way to smuggle in a condition */
    cJSON_Delete(v);

    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &po_shape, NULL, "P1001"), 0);
    CHECK_STR(mlc_buf_str(&b), "(OrderNo='P1001')");
    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &wo_shape, num, "1234"), 0);
    CHECK_STR(mlc_buf_str(&b), "(WoNo=1234)");
    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &wo_shape, num, "12x"), -1);
    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &line, lnum, "P'1|2"), 0);
    CHECK_STR(mlc_buf_str(&b), "(OrderNo='P''1',LineNo=2)");
    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &line, lnum, "P1"), -1);
    mlc_buf_reset(&b);
    CHECK_INT(ifs_key_predicate(&b, &line, lnum, "P1|2|3"), -1);

    /* rows after a cursor, in (changed, key) order */
    {
        cJSON *cur = ifs_cursor_parse("[\"2026-01-15T10:00:00Z\",\"P1002\"]", &po_shape);
        CHECK(cur != NULL);
        mlc_buf_reset(&b);
        CHECK_INT(ifs_after_filter(&b, &po_shape, cur), 0);
        CHECK_STR(mlc_buf_str(&b), "(ChangedDate gt 2026-01-15T10:00:00Z or (ChangedDate eq "
                                   "2026-01-15T10:00:00Z and (OrderNo gt 'P1002')))");
        cJSON_Delete(cur);
        cur = ifs_cursor_parse("[\"2026-01-15\",\"P1\",2]", &line);
        mlc_buf_reset(&b);
        CHECK_INT(ifs_after_filter(&b, &line, cur), 0);
        CHECK_STR(mlc_buf_str(&b), "(ChangedDate gt 2026-01-15 or (ChangedDate eq 2026-01-15 and "
                                   "(OrderNo gt 'P1' or (OrderNo eq 'P1' and (LineNo gt 2)))))");
        cJSON_Delete(cur);
    }
    CHECK(ifs_cursor_parse("[\"2026-01-15\"]", &po_shape) == NULL);      /* a part short */
    CHECK(ifs_cursor_parse("[\"yesterday\",\"P1\"]", &po_shape) == NULL); /* not a date */
    CHECK(ifs_cursor_parse("20260115|P1", &po_shape) == NULL);
    CHECK(ifs_cursor_parse(NULL, &po_shape) == NULL);
    mlc_buf_release(&b);

    CHECK_INT(ifs_time_ms("1970-01-01T00:00:01Z"), 1000);
    CHECK_INT(ifs_time_ms("1970-01-01T01:00:01+01:00"), 1000);
    CHECK_INT(ifs_time_ms("1970-01-01T00:00:01.25Z"), 1250);
    CHECK_INT(ifs_time_ms("1970-01-02"), 86400000);
    CHECK_INT(ifs_time_ms("1970-01-02T00:00"), 86400000);
    CHECK_INT(ifs_time_ms("1970-13-02"), -1);
    CHECK_INT(ifs_time_ms("1970-01-02T"), -1);
    CHECK_INT(ifs_time_ms("1970-01-02Z "), -1);
}

int main(void)
{
    RUN(test_page);
    RUN(test_errors);
    RUN(test_metadata);
    RUN(test_literals);
    return TT_DONE();
}
