/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: PeopleSoft Query Access Services answers (ExecuteQuery JSON),
 * error bodies (IBResponse XML, JSON status errors) and cursors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/psft/psft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int kinds[] = { PSFT_PO, PSFT_VCHR, PSFT_REQ };
    static const char *const child[] = { NULL, NULL, "comments" };
    char msg[256], key[128], *s;
    long long eff;

    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        struct psft_shape sh = { kinds[k], "LAST_DTTM_UPDATE", 3, NULL, k == 1 ? "MLC_VCHR" : NULL,
                                 child[k] };
        struct psft_batch b = { 0 };
        struct mlc_errbuf err = { 0 };

        psft_parse_qas((const char *)data, size, &sh, &b, &err);
        for (size_t i = 0; i < b.n; i++) {
            struct psft_item *it = &b.v[i];
            if (it->data == NULL) {
                abort(); /* every row keeps a data object, errors too */
            }
            if (it->error == NULL) {
                char cur[512];
                if (it->key == NULL) {
                    abort();
                }
                psft_cursor_format(it->stamp, it->key, cur, sizeof(cur));
                if (psft_cursor_parse(cur, &eff, key, sizeof(key)) == 0 && eff != it->stamp) {
                    abort(); /* a cursor we write must read back the same */
                }
            }
        }
        psft_batch_sort(&b);
        psft_batch_dedupe(&b);
        psft_batch_release(&b);
    }
    psft_error_text((const char *)data, size, msg, sizeof(msg));
    psft_body_failed((const char *)data, size, msg, sizeof(msg));
    s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
        psft_cursor_parse(s, &eff, key, sizeof(key));
        psft_dttm_parse(s, &eff);
        free(s);
    }
    return 0;
}
