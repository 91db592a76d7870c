/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: the Jira connector's parsers of outside input (bulk create
 * responses, search pages, error bodies, comment pages, transition lists,
 * number field text) and plain text to ADF. The ADF must
 * never hold an empty or control-bearing text node, whatever the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "shared/mlc_buf.h"
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"

static void on_label(void *ctx, const char *label, const char *key, const char *id,
                     const char *hash)
{
    (void)hash;
    size_t *count = ctx;

    if (label == NULL || key == NULL || id == NULL || key[0] == '\0' || id[0] == '\0') {
        abort();
    }
    (*count)++;
}

/* Walk an ADF tree: text nodes are non-empty and free of C0 controls but TAB. */
static void check_adf(const cJSON *node)
{
    const cJSON *it;
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, "type"));

    if (type == NULL) {
        abort();
    }
    if (strcmp(type, "text") == 0) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, "text"));

        if (t == NULL || t[0] == '\0') {
            abort();
        }
        for (; *t != '\0'; t++) {
            if ((unsigned char)*t < 0x20 && *t != '\t') {
                abort();
            }
        }
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "content"))
    {
        check_adf(it);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result out[JIRA_BULK_MAX];
    struct mlc_errbuf err = { 0 };
    size_t n_items = size > 0 ? data[0] % (JIRA_BULK_MAX + 1) : 0;
    size_t labels = 0;
    char *text, *next = NULL, msg[256], sum[JIRA_SUMMARY_MAX + 1], *lab;
    cJSON *doc;

    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    size_t sent = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "issues")) +
                  (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "errors"));

    cJSON_Delete(root);
    /* the count that can make the body add up, and one taken from the input */
    if (sent <= JIRA_BULK_MAX &&
        jira_parse_bulk_response((const char *)data, size, sent, out, &err) == MLC_OK) {
        for (size_t i = 0; i < sent; i++) {
            if (out[i].rc == MLC_OK && out[i].target_key[0] == '\0') {
                abort();
            }
            if (out[i].rc != MLC_OK && out[i].err[0] == '\0') {
                abort();
            }
        }
    }
    mlc_err_reset(&err);
    jira_parse_bulk_response((const char *)data, size, n_items, out, &err);
    mlc_err_reset(&err);
    jira_parse_search_page((const char *)data, size, on_label, &labels, &next, &err);
    free(next);
    jira_error_text((const char *)data, size, msg, sizeof(msg));
    {
        /* comment pages: every marker id found is one the agent could have written */
        cJSON *ids = cJSON_CreateArray(), *it;
        long next_start = 0;
        struct mlc_buf reach = MLC_BUF_INIT;
        char tid[32];
        int pick;

        mlc_err_reset(&err);
        if (jira_parse_comment_page((const char *)data, size, ids, &next_start, &err) == MLC_OK &&
            next_start < -1) {
            abort();
        }
        cJSON_ArrayForEach(it, ids)
        {
            if (!cJSON_IsString(it) || !jira_comment_id_ok(it->valuestring)) {
                abort();
            }
        }
        cJSON_Delete(ids);
        pick = jira_transition_pick((const char *)data, size, "Approved", tid, sizeof(tid), &reach);
        if (pick < -1 || pick > 1 || (pick == 1 && tid[0] == '\0') || (pick != 1 && tid[0] != '\0')) {
            abort();
        }
        mlc_buf_release(&reach);
    }

    text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    doc = jira_adf_from_text(text);
    if (doc == NULL) {
        abort();
    }
    check_adf(doc);
    cJSON_Delete(doc);
    jira_summary_clean(text, sum, sizeof(sum));
    if (strlen(sum) > JIRA_SUMMARY_MAX) {
        abort();
    }
    lab = jira_label_clean(text);
    free(lab);
    {
        double d;
        if (jira_number_text(text, &d) == 0 && !(d == d)) {
            abort(); /* never NaN */
        }
        /* a comment body always ends in its marker, and reads back as that id */
        if (jira_comment_id_ok(text)) {
            cJSON *body = jira_comment_body(text, text), *page = cJSON_CreateObject(),
                  *arr = cJSON_CreateArray(), *c = cJSON_CreateObject(), *ids = cJSON_CreateArray();
            char *json;
            long next_start;
            check_adf(body);
            cJSON_AddItemToObject(c, "body", body);
            cJSON_AddItemToArray(arr, c);
            cJSON_AddItemToObject(page, "comments", arr);
            json = cJSON_PrintUnformatted(page);
            if (json == NULL ||
                jira_parse_comment_page(json, strlen(json), ids, &next_start, &err) != MLC_OK ||
                cJSON_GetArraySize(ids) < 1 ||
                strcmp(cJSON_GetArrayItem(ids, cJSON_GetArraySize(ids) - 1)->valuestring, text) != 0) {
                abort();
            }
            free(json);
            cJSON_Delete(ids);
            cJSON_Delete(page);
        }
    }
    free(text);
    return 0;
}
