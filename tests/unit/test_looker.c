/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the Looker connector's parsers (agent/connectors/looker/):
 * datagroup lists and objects as the Looker 4.0 spec shapes them
 * (looker.md 4.2), and error bodies, ValidationError included (3).
 */
#include <stdio.h>
#include <string.h>
#include "agent/connectors/looker/looker.h"
#include "tinytest.h"

static const char list[] =
    "[{\"can\":{\"update\":true},\"created_at\":1718000000,\"id\":\"7\",\"model_name\":\"mlc_finance\","
    "\"name\":\"nightly\",\"stale_before\":null,\"trigger_check_at\":1718000100,"
    "\"trigger_error\":null,\"trigger_value\":\"2026-12-01\",\"triggered_at\":null},"
    "{\"id\":\"12\",\"model_name\":\"mlc_finance\",\"name\":\"mlc_staging_load\","
    "\"triggered_at\":1718000200,\"stale_before\":1718000200},"
    "{\"id\":\"13\",\"model_name\":\"other\",\"name\":\"mlc_staging_load\"}]";

static void test_find(void)
{
    struct mlc_errbuf err = { 0 };
    char id[64];

    CHECK_INT(looker_datagroup_find(list, strlen(list), "mlc_finance", "mlc_staging_load", id,
                                    sizeof(id), &err),
              0);
    CHECK_STR(id, "12");
    CHECK_INT(looker_datagroup_find(list, strlen(list), "other", "mlc_staging_load", id, sizeof(id),
                                    &err),
              0);
    CHECK_STR(id, "13");
    /* the model must match too */
    mlc_err_reset(&err);
    CHECK_INT(looker_datagroup_find(list, strlen(list), "mlc_fin", "nightly", id, sizeof(id), &err),
              1);
    CHECK_STR(id, "");
    CHECK(strstr(mlc_err_msg(&err), "'nightly' in model 'mlc_fin'") != NULL);
    CHECK(strstr(mlc_err_msg(&err), "mlc_finance/nightly") != NULL); /* what it does see */
    /* a numeric id is taken as its text */
    {
        static const char num[] = "[{\"id\":42,\"model_name\":\"m\",\"name\":\"d\"}]";
        CHECK_INT(looker_datagroup_find(num, strlen(num), "m", "d", id, sizeof(id), &err), 0);
        CHECK_STR(id, "42");
    }
    /* the match without a usable id, an empty list, not a list */
    {
        static const char noid[] = "[{\"id\":null,\"model_name\":\"m\",\"name\":\"d\"}]";
        static const char empty[] = "[]";
        static const char obj[] = "{\"message\":\"Not found\"}";
        CHECK_INT(looker_datagroup_find(noid, strlen(noid), "m", "d", id, sizeof(id), &err), -1);
        mlc_err_reset(&err);
        CHECK_INT(looker_datagroup_find(empty, strlen(empty), "m", "d", id, sizeof(id), &err), 1);
        CHECK(strstr(mlc_err_msg(&err), "sees 0") != NULL);
        CHECK_INT(looker_datagroup_find(obj, strlen(obj), "m", "d", id, sizeof(id), &err), -1);
        CHECK_INT(looker_datagroup_find(NULL, 0, "m", "d", id, sizeof(id), &err), -1);
        CHECK_INT(looker_datagroup_find("[", 1, "m", "d", id, sizeof(id), &err), -1);
    }
    /* an id that cannot go into a URL path as it is */
    {
        static const char slash[] = "[{\"id\":\"1/../x\",\"model_name\":\"m\",\"name\":\"d\"}]";
        CHECK_INT(looker_datagroup_find(slash, strlen(slash), "m", "d", id, sizeof(id), &err), -1);
    }
    /* an id longer than the buffer is not cut */
    {
        static const char longid[] = "[{\"id\":\"123456789012345\",\"model_name\":\"m\",\"name\":\"d\"}]";
        char small[8];
        CHECK_INT(looker_datagroup_find(longid, strlen(longid), "m", "d", small, sizeof(small), &err),
                  -1);
    }
}

static void test_check(void)
{
    static const char one[] = "{\"id\":\"12\",\"model_name\":\"mlc_finance\",\"name\":\"mlc_staging_load\","
                              "\"triggered_at\":1718000200}";
    long long t = -1;

    CHECK_INT(looker_datagroup_check(one, strlen(one), "mlc_finance", "mlc_staging_load", &t), 0);
    CHECK_INT(t, 1718000200);
    CHECK_INT(looker_datagroup_check(one, strlen(one), "mlc_finance", "nightly", &t), 1);
    CHECK_INT(looker_datagroup_check(one, strlen(one), "x", "mlc_staging_load", NULL), 1);
    {
        static const char nul[] = "{\"model_name\":\"m\",\"name\":\"d\",\"triggered_at\":null}";
        static const char err[] = "{\"message\":\"Not found\",\"documentation_url\":\"u\"}";
        CHECK_INT(looker_datagroup_check(nul, strlen(nul), "m", "d", &t), 0);
        CHECK_INT(t, 0);
        CHECK_INT(looker_datagroup_check(err, strlen(err), "m", "d", &t), -1);
        CHECK_INT(looker_datagroup_check("[]", 2, "m", "d", &t), -1);
        CHECK_INT(looker_datagroup_check(NULL, 0, "m", "d", &t), -1);
    }
}

static void test_errors(void)
{
    static const char nf[] = "{\"message\":\"Not found\",\"documentation_url\":\"https://x\"}";
    static const char val[] =
        "{\"message\":\"Validation Failed\",\"errors\":[{\"field\":\"stale_before\",\"code\":"
        "\"invalid\",\"message\":\"may not be\\nin the future\",\"documentation_url\":\"u\"}],"
        "\"documentation_url\":\"u\"}";
    char out[200], tiny[6];

    looker_error_line(nf, strlen(nf), out, sizeof(out));
    CHECK_STR(out, "Not found");
    looker_error_line(val, strlen(val), out, sizeof(out));
    CHECK_STR(out, "Validation Failed (stale_before: may not be in the future)");
    looker_error_line("<html>\nbad gateway</html>", 25, out, sizeof(out));
    CHECK(strchr(out, '\n') == NULL && strstr(out, "bad gateway") != NULL);
    looker_error_line(val, strlen(val), tiny, sizeof(tiny));
    CHECK_INT(strlen(tiny), 5);
    looker_error_line(NULL, 0, out, sizeof(out));
    CHECK_STR(out, "");
}

int main(void)
{
    RUN(test_find);
    RUN(test_check);
    RUN(test_errors);
    return TT_DONE();
}
