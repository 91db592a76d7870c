/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: IFS Cloud OData collection pages (value array, next link,
 * etags) for a single, a numeric and a composite key, the cursors they give
 * (each must read back and make a keyset filter), and $metadata discovery
 * over the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/ifs/ifs.h"
#include "shared/mlc_buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct ifs_shape shapes[] = {
        { { "OrderNo" }, 1, "ChangedDate" },
        { { "WoNo" }, 1, "RegDate" },
        { { "OrderNo", "LineNo", "ReleaseNo" }, 3, "ChangedDate" },
    };
    struct ifs_meta m;
    char name[128];

    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        struct page pg = { 0 };
        struct mlc_errbuf err = { 0 };
        char *next = NULL;
        size_t n = 0;

        ifs_parse_page((const char *)data, size, &shapes[k], &pg, &next, &n, &err);
        if (pg.n != n) {
            abort(); /* one record per row, error rows too */
        }
        for (size_t i = 0; i < pg.n; i++) {
            struct record *r = &pg.recs[i];
            if (r->data == NULL) {
                abort();
            }
            if (r->error == NULL) {
                struct mlc_buf b = MLC_BUF_INIT;
                cJSON *cur;
                if (r->key == NULL || r->cursor == NULL) {
                    abort();
                }
                cur = ifs_cursor_parse(r->cursor, &shapes[k]);
                if (cur == NULL || ifs_after_filter(&b, &shapes[k], cur) != 0) {
                    abort(); /* a cursor we write must read back and filter */
                }
                cJSON_Delete(cur);
                mlc_buf_reset(&b);
                ifs_key_predicate(&b, &shapes[k], NULL, r->key);
                mlc_buf_release(&b);
            }
        }
        page_release(&pg);
        free(next);
    }
    if (ifs_meta_entity((const char *)data, size, "PurchaseOrderSet", &m) == 0) {
        ifs_meta_property((const char *)data, size, &m, "JiraStatus", name, sizeof(name));
        ifs_meta_action((const char *)data, size, &m, "Release", name, sizeof(name));
    }
    return 0;
}
