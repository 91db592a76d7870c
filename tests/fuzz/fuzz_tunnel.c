/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: tunnel frames as they arrive from the network; whatever
 * decodes must re-encode and decode to the same content. DELIVERS and ACKS
 * bodies that parse must rebuild, record for record, to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_tunnel.h"

static void delivers_rebuild(const struct mlc_frame *f)
{
    static struct mlc_delivery d[MLC_DELIVERS_MAX];
    struct mlc_errbuf err = { 0 };
    struct mlc_buf b = MLC_BUF_INIT;
    size_t n;

    if (mlc_delivers_parse(f->json, f->json_len, d, MLC_DELIVERS_MAX, &n, &err) != MLC_OK) {
        return;
    }
    if (n < 1 || n > MLC_DELIVERS_MAX) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (mlc_delivers_add(&b, &d[i], &err) != MLC_OK) {
            abort();
        }
    }
    if (b.len != f->json_len || memcmp(b.ptr, f->json, b.len) != 0) {
        abort();
    }
    mlc_buf_release(&b);
}

static void acks_rebuild(const struct mlc_frame *f)
{
    static struct mlc_seq_range r[MLC_ACKS_MAX];
    struct mlc_errbuf err = { 0 };
    struct mlc_buf b = MLC_BUF_INIT;
    size_t n;

    if (mlc_acks_parse(f->json, f->json_len, r, MLC_ACKS_MAX, &n, &err) != MLC_OK) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (r[i].first < 1 || r[i].first > r[i].last || r[i].last > INT64_MAX) {
            abort();
        }
        mlc_acks_add(&b, r[i].first, r[i].last);
    }
    if (b.len != f->json_len || memcmp(b.ptr, f->json, b.len) != 0) {
        abort();
    }
    mlc_buf_release(&b);
}

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
    if (f.type == MLC_FRAME_DELIVERS) {
        delivers_rebuild(&f);
    } else if (f.type == MLC_FRAME_ACKS) {
        acks_rebuild(&f);
    }
    mlc_frame_release(&g);
    mlc_frame_release(&f);
    mlc_buf_release(&b);
    return 0;
}
