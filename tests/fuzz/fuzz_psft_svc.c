/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: PeopleSoft custom list-service answers (peoplesoft.md 9) for
 * every record kind, with the vendor join and the cursor order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/psft/psft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct psft_shape vs = { PSFT_VNDR, "LASTUPDDTTM", 4, NULL, NULL, NULL };
    struct psft_batch vb = { 0 };
    struct psft_vendors vc = { 0 };
    struct mlc_errbuf err = { 0 };
    char msg[256];

    psft_parse_svc((const char *)data, size, &vs, &vb, &err);
    psft_vendors_build(&vc, &vb, "PYMNT_TERMS_CD");
    for (size_t i = 1; i < vc.n; i++) {
        if (strcmp(vc.v[i - 1].key, vc.v[i].key) >= 0) {
            abort(); /* sorted, one entry per vendor */
        }
    }
    psft_batch_release(&vb);
    for (int k = PSFT_PO; k <= PSFT_VCHR; k++) {
        struct psft_shape sh = { k, "LAST_DTTM_UPDATE", 4, NULL, NULL, NULL };
        struct psft_batch b = { 0 };

        mlc_err_reset(&err);
        psft_parse_svc((const char *)data, size, &sh, &b, &err);
        for (size_t i = 0; i < b.n; i++) {
            if (b.v[i].error == NULL) {
                psft_join_vendor(&b.v[i], &vc);
                if (b.v[i].eff < b.v[i].stamp) {
                    abort(); /* a vendor can only make a record newer */
                }
            }
        }
        psft_batch_dedupe(&b);
        psft_batch_sort(&b);
        for (size_t i = 1; i < b.n; i++) {
            const struct psft_item *x = &b.v[i - 1], *y = &b.v[i];
            if (x->error == NULL && y->error == NULL &&
                psft_cursor_cmp(x->eff, x->key, y->eff, y->key) >= 0) {
                abort(); /* strictly increasing cursors, one record per key */
            }
            if (x->error == NULL && y->error != NULL) {
                abort(); /* error rows come first */
            }
        }
        psft_batch_release(&b);
    }
    psft_vendors_release(&vc);
    psft_error_text((const char *)data, size, msg, sizeof(msg));
    return 0;
}
