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
    "<Property Name=\"LineNo\" Type=\"Edm.Int32\"/>"
    "<Property Name=\"Cf_LineFlag\" Type=\"Edm.String\"/></EntityType>\n"
    "<EntityType Name=\"PurchaseOrder\"><Key><PropertyRef Name=\"OrderNo\"/></Key>\n"
    "  <Property Name=\"OrderNo\" Type=\"Edm.String\" Nullable=\"false\"/>\n"
    "  <Property Name=\"Objstate\" Type=\"Edm.String\"/>\n"
    "  <Property Name=\"TotalAmount\" Nullable=\"true\" Type=\"Edm.Double\"/>\n"
    "  <Property Name=\"SeqNo\" Type=\"Edm.Int64\"/>\n"
    "  <Property Name=\"ChangedDate\" Type=\"Edm.DateTimeOffset\"/>\n"
    "  <Property Name=\"Cf_Jira_Status\" Type=\"Edm.String\" MaxLength=\"50\"/>\n"
    "  <Property Name=\"Cf_ProjectRef\" Type=\"Edm.String\"/>\n"
    "</EntityType>\n"
    "<Action Name=\"Release\" IsBound=\"true\"><Parameter Name=\"it\" "
    "Type=\"IfsApp.PurchaseOrderHandling.PurchaseOrder\"/></Action>\n"
    "<Action Name=\"PurchaseOrder_Cancel\" IsBound=\"true\"><Parameter Name=\"it\" "
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
    CHECK_INT(ifs_meta_action(metadata, n, &m, "Cancel", name, sizeof(name)), 0);
    CHECK_STR(name, "PurchaseOrder_Cancel");
    CHECK_INT(ifs_meta_action(metadata, n, &m, "PurchaseOrder_Cancel", name, sizeof(name)), 0);
    /* key types: numbers are written unquoted in key predicates */
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, "TotalAmount"), 1);
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, "SeqNo"), 1);
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, "OrderNo"), 0);
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, "ChangedDate"), 0);
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, "LineNo"), -1); /* the other type's */
    CHECK_INT(ifs_meta_numeric(metadata, n, &m, ""), -1);
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


/* ------------------------------------------------- the IFS stand-in (HTTP) */

#define N_ROWS 20
#define N_SEEN 64

struct row {
    char no[16];
    char changed[32];
    char status[32]; /* Cf_JiraStatus */
    char vendor[16];
    char state[16];  /* Objstate */
    int version;     /* the ETag is W/"v<version>" */
};

static struct {
    pthread_mutex_t mu;
    int fd, port;
    pthread_t th;
    struct row rows[N_ROWS];
    int token_n;          /* tokens issued */
    char token[32];       /* the one valid now */
    int expire_after;     /* > 0: after this many data calls the token stops working */
    int data_calls;
    int move_after_page;  /* > 0: after this page of a run, row 2 moves to the end */
    int pages;
    int behind_patch;     /* before the next PATCH: 1 another field changes, 2 a person sets
                           * the custom field to "Blocked", 3 a person sets it to "Done" */
    int patches;
    int locked;           /* writes answer 423 */
    int modified_once;    /* the next write answers 500 MI_MODIFIED_ERROR */
    char seen[N_SEEN][900]; /* "METHOD target | If-Match | Prefer" */
    int n_seen;
} hs = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void hs_fill(void)
{
    for (int i = 0; i < N_ROWS; i++) {
        struct row *r = &hs.rows[i];
        snprintf(r->no, sizeof(r->no), "P%04d", i + 1);
        /* two rows share each change time: the key breaks the tie */
        snprintf(r->changed, sizeof(r->changed), "2026-01-15T10:00:%02dZ", i / 2);
        snprintf(r->status, sizeof(r->status), "Open");
        snprintf(r->vendor, sizeof(r->vendor), "V%d", i % 3);
        snprintf(r->state, sizeof(r->state), "Planned");
        r->version = 1;
    }
    hs.token[0] = '\0';
    hs.token_n = hs.expire_after = hs.data_calls = hs.move_after_page = hs.pages = 0;
    hs.behind_patch = hs.patches = hs.n_seen = hs.locked = hs.modified_once = 0;
}

static void url_decode(const char *s, char *out, size_t n)
{
    size_t k = 0;

    for (; *s && k + 1 < n; s++) {
        unsigned v;
        if (*s == '%' && sscanf(s + 1, "%2x", &v) == 1) {
            out[k++] = (char)v;
            s += 2;
        } else {
            out[k++] = *s == '+' ? ' ' : *s;
        }
    }
    out[k] = '\0';
}

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = *(const struct row *const *)a, *y = *(const struct row *const *)b;
    int c = strcmp(x->changed, y->changed);

    return c != 0 ? c : strcmp(x->no, y->no);
}

static void row_json(struct mlc_buf *b, const struct row *r)
{
    mlc_buf_addf(b, "{\"@odata.etag\":\"W/\\\"v%d\\\"\",\"OrderNo\":\"%s\",\"VendorNo\":\"%s\","
                    "\"Objstate\":\"%s\",\"ChangedDate\":\"%s\",\"Cf_JiraStatus\":\"%s\"}",
                 r->version, r->no, r->vendor, r->state, r->changed, r->status);
}

static void bump(struct row *r)
{
    r->version++;
    snprintf(r->changed, sizeof(r->changed), "2026-01-16T09:00:%02dZ", r->version % 60);
}

static const char *const svc = "/main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/";

/* GET PurchaseOrderSet?...: the keyset filter the connector sends, $top,
 * Prefer: odata.maxpagesize, and an offset $skiptoken in the next link. */
static void hs_list(const char *target, const char *prefer, struct mlc_buf *b)
{
    char q[2048], after_d[40] = "", after_k[40] = "";
    const char *qs = strchr(target, '?'), *p;
    const struct row *sel[N_ROWS];
    long top = -1, skip = 0, page = -1;
    size_t k = 0, lim;

    url_decode(qs != NULL ? qs + 1 : "", q, sizeof(q));
    if ((p = strstr(q, "ChangedDate gt ")) != NULL) {
        sscanf(p + 15, "%39[^ )]", after_d);
    }
    if ((p = strstr(q, "OrderNo gt '")) != NULL) {
        sscanf(p + 12, "%39[^']", after_k);
    }
    if ((p = strstr(q, "$top=")) != NULL) {
        top = strtol(p + 5, NULL, 10);
    }
    if ((p = strstr(q, "$skiptoken=")) != NULL) {
        skip = strtol(p + 11, NULL, 10);
    } else if ((p = strstr(q, "$skip=")) != NULL) {
        skip = strtol(p + 6, NULL, 10);
    }
    if (prefer[0] && (p = strstr(prefer, "odata.maxpagesize=")) != NULL) {
        page = strtol(p + 18, NULL, 10);
    }
    for (int i = 0; i < N_ROWS; i++) {
        const struct row *r = &hs.rows[i];
        int c = after_d[0] ? strcmp(r->changed, after_d) : 1;
        if (c > 0 || (c == 0 && strcmp(r->no, after_k) > 0)) {
            sel[k++] = r;
        }
    }
    qsort(sel, k, sizeof(sel[0]), row_cmp);
    lim = k;
    if (top >= 0 && (size_t)(skip + top) < lim) {
        lim = (size_t)(skip + top);
    }
    if (page > 0 && (size_t)(skip + page) < lim) {
        lim = (size_t)(skip + page);
    }
    mlc_buf_adds(b, "{\"@odata.context\":\"x\",\"value\":[");
    for (size_t i = (size_t)skip; i < lim; i++) {
        if (i > (size_t)skip) {
            mlc_buf_adds(b, ",");
        }
        row_json(b, sel[i]);
    }
    mlc_buf_adds(b, "]");
    if (page > 0 && lim < k && (top < 0 || (long)lim < skip + top)) {
        char base[1500];
        const char *st = strstr(target, "&$skiptoken=");
        snprintf(base, sizeof(base), "%.*s", st != NULL ? (int)(st - target) : (int)strlen(target),
                 target);
        mlc_buf_addf(b, ",\"@odata.nextLink\":\"http://127.0.0.1:%d%s&$skiptoken=%zu\"", hs.port,
                     base, lim);
    }
    mlc_buf_adds(b, "}");
    if (top != 1) {
        hs.pages++;
        if (hs.move_after_page > 0 && hs.pages == hs.move_after_page) {
            bump(&hs.rows[2]); /* P0003 changes: it moves to the end */
        }
    }
}

static struct row *hs_row(const char *key_pred)
{
    char no[16] = "";

    if (sscanf(key_pred, "(OrderNo='%15[^']')", no) != 1) {
        return NULL;
    }
    for (int i = 0; i < N_ROWS; i++) {
        if (strcmp(hs.rows[i].no, no) == 0) {
            return &hs.rows[i];
        }
    }
    return NULL;
}

static const char meta_doc[] =
    "<?xml version=\"1.0\"?><edmx:Edmx Version=\"4.0\"><edmx:DataServices>"
    "<Schema Namespace=\"IfsApp.PurchaseOrderHandling\">"
    "<EntityType Name=\"PurchaseOrder\"><Key><PropertyRef Name=\"OrderNo\"/></Key>"
    "<Property Name=\"OrderNo\" Type=\"Edm.String\"/><Property Name=\"ChangedDate\" "
    "Type=\"Edm.DateTimeOffset\"/><Property Name=\"Cf_JiraStatus\" Type=\"Edm.String\"/>"
    "</EntityType><Action Name=\"Release\" IsBound=\"true\"><Parameter Name=\"it\" "
    "Type=\"IfsApp.PurchaseOrderHandling.PurchaseOrder\"/></Action>"
    "<EntityContainer Name=\"Main\"><EntitySet Name=\"PurchaseOrderSet\" "
    "EntityType=\"IfsApp.PurchaseOrderHandling.PurchaseOrder\"/></EntityContainer>"
    "</Schema></edmx:DataServices></edmx:Edmx>";

static void hs_answer(const char *method, const char *target, const char *authz,
                      const char *ifmatch, const char *prefer, const char *body, int *status,
                      char *etag, struct mlc_buf *b)
{
    const char *rest;
    struct row *r;

    *status = 200;
    etag[0] = '\0';
    if (strcmp(target, "/auth/realms/ns1/protocol/openid-connect/token") == 0) {
        if (strcmp(method, "POST") != 0 || strstr(body, "grant_type=client_credentials") == NULL ||
            strstr(body, "client_id=mlc") == NULL ||
            strstr(body, "scope=openid%20microprofile-jwt") == NULL) {
            *status = 400;
            mlc_buf_adds(b, "{\"error\":\"invalid_request\",\"error_description\":\"bad form\"}");
        } else if (strstr(body, "client_secret=s3cret") == NULL) {
            *status = 401;
            mlc_buf_adds(b, "{\"error\":\"invalid_client\",\"error_description\":\"Invalid client "
                            "or Invalid client credentials\"}");
        } else {
            snprintf(hs.token, sizeof(hs.token), "tok%d", ++hs.token_n);
            hs.data_calls = 0;
            mlc_buf_addf(b, "{\"access_token\":\"%s\",\"expires_in\":180,\"refresh_expires_in\":"
                            "1800,\"token_type\":\"Bearer\",\"scope\":\"openid microprofile-jwt\"}",
                         hs.token);
        }
        return;
    }
    if (strncmp(authz, "Bearer ", 7) != 0 || hs.token[0] == '\0' ||
        strcmp(authz + 7, hs.token) != 0 ||
        (hs.expire_after > 0 && hs.data_calls >= hs.expire_after)) {
        *status = 401;
        mlc_buf_adds(b, "{\"error\":{\"code\":\"UNAUTHORIZED\",\"message\":\"token expired\"}}");
        return;
    }
    hs.data_calls++;
    if (strncmp(target, svc, strlen(svc)) != 0) {
        *status = 404;
        mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_RESOURCE_NOTFOUND\",\"message\":\"The resource "
                        "was not found.\"}}");
        return;
    }
    rest = target + strlen(svc);
    if (strcmp(rest, "$metadata") == 0) {
        mlc_buf_adds(b, meta_doc);
    } else if (strncmp(rest, "PurchaseOrderSet?", 17) == 0) {
        hs_list(target, prefer, b);
    } else if (strncmp(rest, "PurchaseOrderSet(", 17) == 0 && (r = hs_row(rest + 16)) != NULL) {
        char cur[32];
        snprintf(cur, sizeof(cur), "W/\"v%d\"", r->version);
        if (strcmp(method, "GET") != 0 && hs.locked) {
            *status = 423;
            mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_LOCKED\",\"message\":\"The record is "
                            "locked by another session.\"}}");
            return;
        }
        if (strcmp(method, "GET") != 0 && hs.modified_once) {
            hs.modified_once = 0;
            *status = 500;
            mlc_buf_adds(b, "{\"error\":{\"code\":\"MI_MODIFIED_ERROR\",\"message\":\"Metadata "
                            "was modified; retry.\"}}");
            return;
        }
        if (strcmp(method, "POST") == 0) {
            if (strstr(rest, ")/IfsApp.PurchaseOrderHandling.Release") == NULL) {
                *status = 404;
                mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_RESOURCE_NOTFOUND\",\"message\":"
                                "\"no such action\"}}");
                return;
            }
            if (ifmatch[0] == '\0') {
                *status = 428;
                mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_MISSING_PRECONDITION\",\"message\":"
                                "\"If-Match is required\"}}");
                return;
            }
            if (strcmp(ifmatch, cur) != 0 && strcmp(ifmatch, "*") != 0) {
                *status = 412;
                mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_PRECONDITION_FAILED\",\"message\":"
                                "\"changed\"}}");
                return;
            }
            hs.patches++;
            snprintf(r->state, sizeof(r->state), "Released");
            bump(r);
            *status = 204;
            return;
        }
        if (strcmp(method, "PATCH") == 0) {
            char val[32] = "";
            const char *v;
            hs.patches++;
            if (hs.behind_patch) {
                if (hs.behind_patch == 1) {
                    snprintf(r->vendor, sizeof(r->vendor), "V9");
                } else {
                    snprintf(r->status, sizeof(r->status), "%s",
                             hs.behind_patch == 2 ? "Blocked" : "Done");
                }
                bump(r);
                hs.behind_patch = 0;
                snprintf(cur, sizeof(cur), "W/\"v%d\"", r->version);
            }
            if (strcmp(ifmatch, cur) != 0 && strcmp(ifmatch, "*") != 0) {
                *status = 412;
                mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_PRECONDITION_FAILED\",\"message\":"
                                "\"The record was changed by another user.\"}}");
                return;
            }
            if ((v = strstr(body, "\"Cf_JiraStatus\":\"")) == NULL) {
                *status = 400;
                mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_DESERIALIZATION_ERROR\",\"message\":"
                                "\"Error while de-serializing contents.\"}}");
                return;
            }
            sscanf(v + 17, "%31[^\"]", val);
            snprintf(r->status, sizeof(r->status), "%s", val);
            bump(r);
            snprintf(etag, 64, "W/\"v%d\"", r->version);
            *status = 204;
            return;
        }
        snprintf(etag, 64, "%s", cur);
        mlc_buf_adds(b, "{\"@odata.context\":\"x\",");
        row_json(b, r);
        b->len--; /* merge the two objects: drop row_json's closing brace ... */
        mlc_buf_adds(b, "}");
        {
            /* ... and its opening one */
            char *s = (char *)mlc_buf_str(b), *o = strstr(s, ",{");
            memmove(o + 1, o + 2, strlen(o + 2) + 1);
            b->len--;
        }
    } else if (strncmp(rest, "PurchaseOrderSet(", 17) == 0) {
        *status = 404;
        mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_RESOURCE_NOTFOUND\",\"message\":\"no such "
                        "record\"}}");
    } else {
        *status = 404;
        mlc_buf_adds(b, "{\"error\":{\"code\":\"ODP_RESOURCE_NOTFOUND\",\"message\":\"The resource "
                        "was not found.\"}}");
    }
}

static void header_value(const char *buf, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);

    out[0] = '\0';
    for (const char *line = strstr(buf, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, name, nl) == 0 && line[2 + nl] == ':') {
            const char *v = line + 3 + nl;
            size_t k = 0;
            while (*v == ' ') {
                v++;
            }
            while (v[k] && v[k] != '\r' && k + 1 < n) {
                k++;
            }
            memcpy(out, v, k);
            out[k] = '\0';
            return;
        }
    }
}

static void hs_serve(int fd)
{
    char buf[16384], method[16] = "", target[2048] = "", authz[256], ifm[128], pref[128],
                     clen[32], etag[64];
    struct timeval tv = { 5, 0 };
    struct mlc_buf b = MLC_BUF_INIT, out = MLC_BUF_INIT;
    size_t got = 0, hdr_len = 0, want;
    char *end;
    int status;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (;;) {
        ssize_t r;
        if (hdr_len == 0 && (end = strstr(buf, "\r\n\r\n")) != NULL && got > 0) {
            hdr_len = (size_t)(end - buf) + 4;
        }
        if (hdr_len > 0) {
            header_value(buf, "Content-Length", clen, sizeof(clen));
            want = hdr_len + (size_t)strtoul(clen, NULL, 10);
            if (got >= want || want >= sizeof(buf)) {
                break;
            }
        }
        if (got + 1 >= sizeof(buf)) {
            return;
        }
        r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0) {
            return;
        }
        got += (size_t)r;
        buf[got] = '\0';
    }
    sscanf(buf, "%15s %2047s", method, target);
    header_value(buf, "Authorization", authz, sizeof(authz));
    header_value(buf, "If-Match", ifm, sizeof(ifm));
    header_value(buf, "Prefer", pref, sizeof(pref));
    pthread_mutex_lock(&hs.mu);
    if (hs.n_seen < N_SEEN) {
        snprintf(hs.seen[hs.n_seen++], sizeof(hs.seen[0]), "%s %.600s | %.100s | %.100s", method, target,
                 ifm, pref);
    }
    hs_answer(method, target, authz, ifm, pref, buf + hdr_len, &status, etag, &b);
    pthread_mutex_unlock(&hs.mu);
    mlc_buf_addf(&out, "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s"
                       "Connection: close\r\n\r\n",
                 status, b.len && mlc_buf_str(&b)[0] == '<' ? "application/xml" : "application/json",
                 b.len, etag[0] ? "ETag: " : "", etag, etag[0] ? "\r\n" : "");
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

static enum mlc_rc lit_resolve(void *ctx, const char *ref, char **out, struct mlc_errbuf *err)
{
    (void)ctx;
    (void)err;
    *out = strdup(ref);
    return MLC_OK;
}

static const struct vault lit_vault = { NULL, lit_resolve, NULL, NULL };

/* A conn on the stand-in; extra: more system settings. */
static void hconn(struct conn *c, const char *secret, const char *extra)
{
    char json[1024];

    snprintf(json, sizeof(json),
             "{\"type\":\"ifs\",\"base_url\":\"http://127.0.0.1:%d\",\"namespace\":\"ns1\","
             "\"client_id\":\"mlc\",\"client_secret\":\"%s\"%s}",
             hs.port, secret, extra);
    memset(c, 0, sizeof(*c));
    c->ops = &connector_ifs;
    c->name = "ifs1";
    c->conf = cJSON_Parse(json);
    c->vault = &lit_vault;
    c->http = mlc_http_new(NULL);
    if (connector_ifs.open(c) != MLC_OK) {
        fprintf(stderr, "  open: %s\n", c->err.msg);
    }
}

static void hclose(struct conn *c)
{
    connector_ifs.close(c);
    mlc_http_free(c->http);
    cJSON_Delete((cJSON *)c->conf);
}

static const char po_source[] =
    "{\"system\":\"ifs1\",\"projection\":\"PurchaseOrderHandling\",\"entity_set\":"
    "\"PurchaseOrderSet\",\"key\":\"OrderNo\",\"changed\":\"ChangedDate\","
    "\"select\":[\"VendorNo\",\"Objstate\",\"Cf_JiraStatus\"]}";

/* One run from cursor: every page; counts how often each row key came. */
static enum mlc_rc run_all(struct conn *c, const char *cursor, int counts[N_ROWS], char *last,
                           size_t n)
{
    cJSON *src = cJSON_Parse(po_source);
    struct poll_req rq = { src, cursor, 1 };
    enum mlc_rc rc;
    int guard = 0;

    memset(counts, 0, sizeof(int) * N_ROWS);
    do {
        struct page pg = { 0 };
        rc = connector_ifs.poll(c, &rq, &pg);
        for (size_t i = 0; rc == MLC_OK && i < pg.n; i++) {
            int k = atoi(pg.recs[i].key + 1) - 1;
            CHECK(pg.recs[i].error == NULL);
            if (k >= 0 && k < N_ROWS) {
                counts[k]++;
            }
            snprintf(last, n, "%s", pg.recs[i].cursor);
        }
        rq.first = 0;
        rq.cursor = NULL;
        if (rc != MLC_OK || !pg.more) {
            page_release(&pg);
            break;
        }
        page_release(&pg);
    } while (++guard < 100);
    cJSON_Delete(src);
    return rc;
}

static void test_http_paging(void)
{
    struct conn c;
    int counts[N_ROWS];
    char last[128] = "";

    pthread_mutex_lock(&hs.mu);
    hs_fill();
    hs.expire_after = 3; /* the token dies after 3 data calls: in the middle of the pages */
    pthread_mutex_unlock(&hs.mu);
    hconn(&c, "s3cret", ",\"page_size\":7");
    CHECK_INT(run_all(&c, NULL, counts, last, sizeof(last)), MLC_OK);
    for (int i = 0; i < N_ROWS; i++) {
        CHECK_INT(counts[i], 1);
    }
    CHECK_STR(last, "[\"2026-01-15T10:00:09Z\",\"P0020\"]");
    pthread_mutex_lock(&hs.mu);
    /* the exact first request */
    CHECK_STR(hs.seen[1],
              "GET /main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/PurchaseOrderSet"
              "?$select=ChangedDate,OrderNo,VendorNo,Objstate,Cf_JiraStatus&$orderby=ChangedDate%20asc"
              "%2COrderNo%20asc |  | odata.maxpagesize=7");
    CHECK(strncmp(hs.seen[0], "POST /auth/realms/ns1/protocol/openid-connect/token", 51) == 0);
    CHECK(hs.token_n >= 2); /* renewed once mid-run */
    {
        /* after the 401 the same next link was asked again */
        int resumed = 0;
        for (int i = 1; i + 2 < hs.n_seen; i++) {
            if (strstr(hs.seen[i], "$skiptoken=") != NULL && strncmp(hs.seen[i + 1], "POST", 4) == 0 &&
                strcmp(hs.seen[i], hs.seen[i + 2]) == 0) {
                resumed = 1;
            }
        }
        CHECK(resumed);
    }
    hs.expire_after = 0;
    pthread_mutex_unlock(&hs.mu);

    /* a date-only cursor reads its whole day again */
    pthread_mutex_lock(&hs.mu);
    hs.n_seen = 0;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(run_all(&c, "[\"2026-01-15\",\"P0007\"]", counts, last, sizeof(last)), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK(strstr(hs.seen[0], "$filter=ChangedDate%20ge%202026-01-15&") != NULL);
    pthread_mutex_unlock(&hs.mu);
    /* from the cursor: nothing new, one call */
    CHECK_INT(run_all(&c, last, counts, last, sizeof(last)), MLC_OK);
    for (int i = 0; i < N_ROWS; i++) {
        CHECK_INT(counts[i], 0);
    }
    /* a row changes while the pages are read: the offset next link would
     * skip the row behind it; every row still comes, the changed one twice
     * (its old and its new version) */
    pthread_mutex_lock(&hs.mu);
    hs_fill();
    hs.move_after_page = 1;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(run_all(&c, NULL, counts, last, sizeof(last)), MLC_OK);
    for (int i = 0; i < N_ROWS; i++) {
        CHECK_INT(counts[i], i == 2 ? 2 : 1);
    }
    hclose(&c);

    /* without the check (a server whose next links seek), fewer calls */
    pthread_mutex_lock(&hs.mu);
    hs_fill();
    pthread_mutex_unlock(&hs.mu);
    hconn(&c, "s3cret", ",\"page_size\":7,\"page_check\":false");
    CHECK_INT(run_all(&c, NULL, counts, last, sizeof(last)), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_INT(hs.n_seen, 4); /* token + 3 pages */
    pthread_mutex_unlock(&hs.mu);
    hclose(&c);

    /* $top/$skip paging */
    pthread_mutex_lock(&hs.mu);
    hs_fill();
    pthread_mutex_unlock(&hs.mu);
    hconn(&c, "s3cret", ",\"page_size\":6,\"paging\":\"top_skip\"");
    CHECK_INT(run_all(&c, NULL, counts, last, sizeof(last)), MLC_OK);
    for (int i = 0; i < N_ROWS; i++) {
        CHECK_INT(counts[i], 1);
    }
    pthread_mutex_lock(&hs.mu);
    CHECK(strstr(hs.seen[1], "&$top=6 |  | ") != NULL);
    CHECK(strstr(hs.seen[2], "&$top=6&$skip=6 |") != NULL);
    pthread_mutex_unlock(&hs.mu);
    hclose(&c);
}

static void test_http_errors(void)
{
    struct conn c;
    int counts[N_ROWS];
    char last[128] = "";
    cJSON *src;
    struct page pg = { 0 };

    pthread_mutex_lock(&hs.mu);
    hs_fill();
    pthread_mutex_unlock(&hs.mu);
    hconn(&c, "wrong", "");
    CHECK_INT(run_all(&c, NULL, counts, last, sizeof(last)), MLC_E_AUTH);
    CHECK(strstr(c.err.msg, "systems.ifs1.client_secret") != NULL);
    CHECK(strstr(c.err.msg, "wrong") == NULL);
    mlc_err_reset(&c.err);
    CHECK_INT(connector_ifs.ping(&c), MLC_E_AUTH);
    CHECK(strstr(c.err.msg, "client_secret") != NULL);
    hclose(&c);

    hconn(&c, "s3cret", "");
    CHECK_INT(connector_ifs.ping(&c), MLC_OK);
    src = cJSON_Parse("{\"projection\":\"PurchaseOrderHandlin\",\"entity_set\":\"PurchaseOrderSet\","
                      "\"key\":\"OrderNo\",\"changed\":\"ChangedDate\"}");
    {
        struct poll_req rq = { src, NULL, 1 };
        CHECK_INT(connector_ifs.poll(&c, &rq, &pg), MLC_E_INVAL);
        CHECK(strstr(c.err.msg, "source.projection ('PurchaseOrderHandlin')") != NULL);
        page_release(&pg);
    }
    cJSON_Delete(src);
    src = cJSON_Parse("{\"projection\":\"PurchaseOrderHandling\",\"entity_set\":\"PurchaseOrderSet\","
                      "\"key\":\"OrderNo\"}");
    {
        struct poll_req rq = { src, NULL, 1 };
        mlc_err_reset(&c.err);
        CHECK_INT(connector_ifs.poll(&c, &rq, &pg), MLC_E_INVAL);
        CHECK(strstr(c.err.msg, "source.changed: required") != NULL);
        page_release(&pg);
    }
    cJSON_Delete(src);
    hclose(&c);
}

/* The core's write-back: fetch() the record, decide, write_back(). */
static enum mlc_rc wb_once(struct conn *c, void *plan, const char *key, const char *value)
{
    cJSON *src = cJSON_Parse(po_source);
    struct record rec;
    struct wb_var vars[] = { { "key", key }, { "value", value } };
    struct wb_write w = { 0 };
    enum mlc_rc rc = connector_ifs.fetch(c, src, key, &rec);

    if (rc == MLC_OK) {
        CHECK(rec.data != NULL);
        w.plan = plan;
        w.source_key = key;
        w.vars = vars;
        w.n_vars = 2;
        w.audit_id = "a-1";
        w.source = src;
        mlc_err_reset(&c->err);
        rc = connector_ifs.write_back(c, &w);
    }
    record_release(&rec);
    cJSON_Delete(src);
    return rc;
}

static void test_http_writeback(void)
{
    static const char *const vars[] = { "key", "value", NULL };
    struct mlc_errbuf err = { 0 };
    struct conn c;
    cJSON *act = cJSON_Parse("{\"custom_field\":\"JiraStatus\"}");
    void *plan = connector_ifs.wb_plan(act, "flows.po.writeback.fields.status", vars, &err);
    int before;

    CHECK(plan != NULL);
    pthread_mutex_lock(&hs.mu);
    hs_fill();
    pthread_mutex_unlock(&hs.mu);
    hconn(&c, "s3cret", "");

    /* plain: $metadata once (the key's type, the custom field), GET by key,
     * PATCH with the ETag the GET gave */
    CHECK_INT(wb_once(&c, plan, "P0001", "In Progress"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_STR(hs.rows[0].status, "In Progress");
    CHECK_INT(hs.patches, 1);
    CHECK(strstr(hs.seen[1], "GET /main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
                             "$metadata") == hs.seen[1]);
    CHECK(strncmp(hs.seen[2], "GET /main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
                              "PurchaseOrderSet(OrderNo='P0001')?$select=ChangedDate,OrderNo,", 126) == 0);
    CHECK_STR(hs.seen[3], "PATCH /main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
                          "PurchaseOrderSet(OrderNo='P0001') | W/\"v1\" | ");
    /* another field changes between the read and the PATCH: 412, read
     * again, the custom field is as it was: written with the new ETag */
    hs.behind_patch = 1;
    hs.patches = 0;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0002", "Done"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_STR(hs.rows[1].status, "Done");
    CHECK_STR(hs.rows[1].vendor, "V9");
    CHECK_INT(hs.patches, 2);
    /* a person sets the same value meanwhile: 412, read again: already
     * right, no second PATCH */
    hs.behind_patch = 3;
    hs.patches = 0;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0003", "Done"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_INT(hs.patches, 1);
    CHECK_STR(hs.rows[2].status, "Done");
    /* a person sets another value: left to the core's conflict rule */
    hs.behind_patch = 2;
    hs.patches = 0;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0004", "Done"), MLC_E_CONFLICT);
    CHECK(strstr(c.err.msg, "Blocked") != NULL && strstr(c.err.msg, "conflict rule") != NULL);
    pthread_mutex_lock(&hs.mu);
    CHECK_INT(hs.patches, 1);
    CHECK_STR(hs.rows[3].status, "Blocked");
    before = hs.patches;
    pthread_mutex_unlock(&hs.mu);
    /* the value is already there: no call at all */
    CHECK_INT(wb_once(&c, plan, "P0001", "In Progress"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_INT(hs.patches, before);
    pthread_mutex_unlock(&hs.mu);
    connector_ifs.wb_plan_free(plan);
    cJSON_Delete(act);

    /* an unknown custom field names the setting and what $metadata has */
    act = cJSON_Parse("{\"custom_field\":\"JiraState\"}");
    plan = connector_ifs.wb_plan(act, "flows.po.writeback.fields.status", vars, &err);
    CHECK_INT(wb_once(&c, plan, "P0005", "Done"), MLC_E_INVAL);
    CHECK_STR(c.err.msg, "flows.po.writeback.fields.status.custom_field: 'JiraState' is not a "
                         "property of PurchaseOrder in PurchaseOrderHandling.svc/$metadata (custom "
                         "fields there: Cf_JiraStatus): check the name and that the custom field "
                         "is published");
    connector_ifs.wb_plan_free(plan);
    cJSON_Delete(act);
    /* a bound state action with If-Match; done_when says it took effect */
    act = cJSON_Parse("{\"action\":\"release\",\"done_when\":{\"Objstate\":\"Released\"}}");
    {
        static const char *const svars[] = { "key", "code", "status", "issue", "audit_id", NULL };
        mlc_err_reset(&err);
        plan = connector_ifs.wb_plan(act, "flows.po.writeback", svars, &err);
    }
    CHECK(plan != NULL);
    pthread_mutex_lock(&hs.mu);
    hs.patches = hs.n_seen = 0;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0006", "x"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_STR(hs.rows[5].state, "Released");
    CHECK_INT(hs.patches, 1);
    CHECK_STR(hs.seen[1], "POST /main/ifsapplications/projection/v1/PurchaseOrderHandling.svc/"
                          "PurchaseOrderSet(OrderNo='P0006')/IfsApp.PurchaseOrderHandling.Release | "
                          "W/\"v1\" | ");
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0006", "x"), MLC_OK); /* already released: no call */
    pthread_mutex_lock(&hs.mu);
    CHECK_INT(hs.patches, 1);
    /* MI_MODIFIED_ERROR once: the same request again */
    hs.modified_once = 1;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0007", "x"), MLC_OK);
    pthread_mutex_lock(&hs.mu);
    CHECK_STR(hs.rows[6].state, "Released");
    /* 423: reported as a lock, left for a later attempt */
    hs.locked = 1;
    pthread_mutex_unlock(&hs.mu);
    CHECK_INT(wb_once(&c, plan, "P0008", "x"), MLC_E_NET);
    CHECK(strstr(c.err.msg, "locked in IFS (HTTP 423)") != NULL);
    pthread_mutex_lock(&hs.mu);
    hs.locked = 0;
    pthread_mutex_unlock(&hs.mu);
    connector_ifs.wb_plan_free(plan);
    cJSON_Delete(act);
    act = cJSON_Parse("{\"action\":\"Finish\"}");
    plan = connector_ifs.wb_plan(act, "flows.po.writeback", vars, &err);
    CHECK_INT(wb_once(&c, plan, "P0008", "x"), MLC_E_INVAL);
    CHECK(strstr(c.err.msg, "flows.po.writeback.action: 'Finish' is not a bound action") != NULL);
    connector_ifs.wb_plan_free(plan);
    cJSON_Delete(act);
    /* a status write takes the status_map code by default */
    act = cJSON_Parse("{\"custom_field\":\"JiraStatus\"}");
    {
        static const char *const svars[] = { "key", "code", "status", "issue", "audit_id", NULL };
        mlc_err_reset(&err);
        plan = connector_ifs.wb_plan(act, "flows.po.writeback", svars, &err);
        CHECK(plan != NULL);
        connector_ifs.wb_plan_free(plan);
    }
    cJSON_Delete(act);
    /* neither or both of custom_field and action */
    act = cJSON_Parse("{\"value\":\"{value}\"}");
    mlc_err_reset(&err);
    CHECK(connector_ifs.wb_plan(act, "flows.po.writeback", vars, &err) == NULL);
    CHECK(strstr(err.msg, "custom_field") != NULL);
    cJSON_Delete(act);
    hclose(&c);
}

int main(void)
{
    RUN(test_page);
    RUN(test_errors);
    RUN(test_metadata);
    RUN(test_literals);
    mlc_http_global_init();
    hs_start();
    RUN(test_http_paging);
    RUN(test_http_errors);
    RUN(test_http_writeback);
    return TT_DONE();
}
