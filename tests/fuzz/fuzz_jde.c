/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: JD Edwards AIS data-service pages, error bodies and watermarks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/jde/jde.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jde_table t = { .table = "F4801", .key_col = "DOCO", .key_numeric = 1,
                           .date_col = "UPMJ", .time_col = "TDAY" };
    struct page pg = { 0 };
    struct mlc_errbuf err = { 0 };
    struct jde_cursor cur;
    char msg[256], *next = NULL, *s;
    int more = 0;

    /* the same bytes as an F4801 page (one numeric key) and as an F0411
     * page (a composite key of four columns, UPMT) */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            t = (struct jde_table){ .table = "F0411", .key_col = "KCO", .date_col = "UPMJ",
                                    .time_col = "UPMT", .key_cols = { "KCO", "DOC", "DCT", "SFX" },
                                    .n_keys = 4 };
        }
        mlc_err_reset(&err);
        jde_parse_page((const char *)data, size, &t, &pg, &more, &next, &err);
        for (size_t i = 0; i < pg.n; i++) {
            if (pg.recs[i].cursor != NULL && jde_cursor_parse(pg.recs[i].cursor, &cur) != 0) {
                abort(); /* every cursor we produce must parse back */
            }
            if (pg.recs[i].cursor != NULL && strcmp(cur.key, pg.recs[i].key) != 0) {
                abort(); /* ... with the record's key in it, bars and all */
            }
        }
        page_release(&pg);
        free(next);
        next = NULL;
    }
    jde_error_text((const char *)data, size, msg, sizeof(msg));
    s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
        if (jde_cursor_parse(s, &cur) == 0) {
            char back[128];
            jde_cursor_format(&cur, back, sizeof(back));
        }
        free(s);
    }
    return 0;
}
