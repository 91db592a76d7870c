/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: tunnel frames as they arrive from the network; whatever
 * decodes must re-encode and decode to the same content.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    struct mlc_frame f, g;
    struct mlc_buf b = MLC_BUF_INIT;

    if (mlc_frame_decode(data, size, &f, &err) != MLC_OK) {
        return 0;
    }
    if (mlc_frame_encode(f.type, f.seq, f.json, f.json_len, 0, &b, &err) != MLC_OK ||
        mlc_frame_decode((const uint8_t *)b.ptr, b.len, &g, &err) != MLC_OK) {
        abort();
    }
    if (g.type != f.type || g.seq != f.seq || g.json_len != f.json_len ||
        memcmp(g.json, f.json, f.json_len) != 0) {
        abort();
    }
    mlc_frame_release(&g);
    mlc_frame_release(&f);
    mlc_buf_release(&b);
    return 0;
}
