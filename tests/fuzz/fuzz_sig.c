/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: X-Hub-Signature headers and JWTs as attackers send them.
 * The first byte splits the input into a header value and a body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    size_t cut = size ? data[0] % (size) : 0;
    char *hdr = malloc(cut + 1);
    cJSON *claims = NULL;
    size_t n = 0;
    unsigned char *raw;

    if (hdr == NULL) {
        return 0;
    }
    if (cut > 0) {
        memcpy(hdr, data + 1, cut - 1 < size - 1 ? cut - 1 : size - 1);
        hdr[cut - 1] = '\0';
    }
    hdr[cut] = '\0';
    mlc_sig_hub_verify("secret", 6, data + cut, size - cut, hdr, &err);
    mlc_err_reset(&err);
    if (mlc_sig_jwt_hs256_verify(hdr, "secret", 6, 1700000000LL, 60, &claims, &err) == MLC_OK) {
        cJSON_Delete(claims);
    }
    raw = mlc_b64url_decode(hdr, strlen(hdr), &n);
    free(raw);
    free(hdr);
    return 0;
}
