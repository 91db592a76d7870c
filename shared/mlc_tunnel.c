/* SPDX-License-Identifier: Apache-2.0
 * mlc_tunnel: encode and decode tunnel frames (see the header for the layout).
 */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "shared/mlc_tunnel.h"

static const char *const type_names[MLC_FRAME_TYPE_MAX + 1] = {
    [MLC_FRAME_HELLO] = "HELLO",     [MLC_FRAME_DELIVER] = "DELIVER", [MLC_FRAME_ACK] = "ACK",
    [MLC_FRAME_COMMAND] = "COMMAND", [MLC_FRAME_STATUS] = "STATUS",   [MLC_FRAME_PING] = "PING",
    [MLC_FRAME_PONG] = "PONG",
};

const char *mlc_frame_type_name(int type)
{
    if (type < 1 || type > MLC_FRAME_TYPE_MAX) {
        return "?";
    }
    return type_names[type];
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;

    for (int i = 0; i < bytes; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

enum mlc_rc mlc_frame_encode(int type, uint64_t seq, const char *json, size_t len, size_t front,
                             struct mlc_buf *out, struct mlc_errbuf *err)
{
    uint8_t hdr[MLC_FRAME_HEADER];
    const void *body = json;
    size_t body_len = json ? len : 0;
    void *packed = NULL;
    uint8_t flags = 0;
    enum mlc_rc rc;

    if (type < 1 || type > MLC_FRAME_TYPE_MAX) {
        mlc_errf(err, "tunnel frame: unknown type %d", type);
        return MLC_E_INVAL;
    }
    if (body_len > MLC_FRAME_MAX_JSON) {
        mlc_errf(err, "tunnel %s frame: body of %zu bytes is over the %u-byte limit",
                 mlc_frame_type_name(type), body_len, MLC_FRAME_MAX_JSON);
        return MLC_E_TOOBIG;
    }
    if (body_len >= MLC_FRAME_COMPRESS_MIN) {
        size_t bound = ZSTD_compressBound(body_len), n;
        packed = malloc(bound);
        if (packed == NULL) {
            return MLC_E_NOMEM;
        }
        /* level 1: this runs per delivery on the relay's hot path */
        n = ZSTD_compress(packed, bound, json, body_len, 1);
        if (ZSTD_isError(n)) {
            mlc_errf(err, "tunnel frame: zstd: %s", ZSTD_getErrorName(n));
            free(packed);
            return MLC_E_INVAL;
        }
        if (n < body_len) {
            body = packed;
            body_len = n;
            flags |= MLC_FRAME_ZSTD;
        }
    }
    if (body_len > MLC_FRAME_MAX_WIRE) {
        mlc_errf(err, "tunnel %s frame: %zu bytes on the wire is over the %u-byte limit",
                 mlc_frame_type_name(type), body_len, MLC_FRAME_MAX_WIRE);
        free(packed);
        return MLC_E_TOOBIG;
    }
    hdr[0] = MLC_TUNNEL_VERSION;
    hdr[1] = (uint8_t)type;
    hdr[2] = flags;
    hdr[3] = 0;
    put_be(hdr + 4, seq, 8);
    put_be(hdr + 12, body_len, 4);
    rc = MLC_OK;
    for (size_t i = 0; i < front && rc == MLC_OK; i++) {
        rc = mlc_buf_add(out, "", 1);
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_add(out, hdr, sizeof(hdr));
    }
    if (rc == MLC_OK && body_len > 0) {
        rc = mlc_buf_add(out, body, body_len);
    }
    free(packed);
    return rc;
}

enum mlc_rc mlc_frame_decode(const uint8_t *p, size_t n, struct mlc_frame *out,
                             struct mlc_errbuf *err)
{
    unsigned long long declared;
    uint64_t body_len;
    size_t got;

    memset(out, 0, sizeof(*out));
    if (n < MLC_FRAME_HEADER) {
        mlc_errf(err, "tunnel frame: %zu bytes is shorter than the %d-byte header", n,
                 MLC_FRAME_HEADER);
        return MLC_E_PROTO;
    }
    if (p[0] != MLC_TUNNEL_VERSION) {
        mlc_errf(err, "tunnel frame: version %u, this side speaks %d (upgrade the older side)",
                 p[0], MLC_TUNNEL_VERSION);
        return MLC_E_PROTO;
    }
    if (p[1] < 1 || p[1] > MLC_FRAME_TYPE_MAX || (p[2] & ~MLC_FRAME_ZSTD) != 0 || p[3] != 0) {
        mlc_errf(err, "tunnel frame: unknown type %u or flags 0x%02x", p[1], p[2]);
        return MLC_E_PROTO;
    }
    body_len = get_be(p + 12, 4);
    if (body_len > MLC_FRAME_MAX_WIRE) {
        mlc_errf(err, "tunnel frame: body of %llu bytes is over the limit",
                 (unsigned long long)body_len);
        return MLC_E_TOOBIG;
    }
    if (body_len != n - MLC_FRAME_HEADER) {
        mlc_errf(err, "tunnel frame: header says %llu body bytes, message has %zu",
                 (unsigned long long)body_len, n - MLC_FRAME_HEADER);
        return MLC_E_PROTO;
    }
    out->type = p[1];
    out->seq = get_be(p + 4, 8);
    p += MLC_FRAME_HEADER;
    if (!(p[-MLC_FRAME_HEADER + 2] & MLC_FRAME_ZSTD)) {
        out->json = malloc(body_len + 1);
        if (out->json == NULL) {
            return MLC_E_NOMEM;
        }
        if (body_len > 0) {
            memcpy(out->json, p, body_len);
        }
        out->json[body_len] = '\0';
        out->json_len = body_len;
        return MLC_OK;
    }
    /* the size must be declared, and within the cap, before any allocation */
    declared = ZSTD_getFrameContentSize(p, body_len);
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
        declared > MLC_FRAME_MAX_JSON) {
        mlc_errf(err, "tunnel %s frame %llu: compressed body has no valid size within %u bytes",
                 mlc_frame_type_name(out->type), (unsigned long long)out->seq, MLC_FRAME_MAX_JSON);
        return declared > MLC_FRAME_MAX_JSON && declared < ZSTD_CONTENTSIZE_ERROR ? MLC_E_TOOBIG
                                                                                  : MLC_E_PROTO;
    }
    out->json = malloc((size_t)declared + 1);
    if (out->json == NULL) {
        return MLC_E_NOMEM;
    }
    got = ZSTD_decompress(out->json, (size_t)declared, p, body_len);
    if (ZSTD_isError(got) || got != declared) {
        mlc_errf(err, "tunnel %s frame %llu: corrupt compressed body (%s)",
                 mlc_frame_type_name(out->type), (unsigned long long)out->seq,
                 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "size mismatch");
        free(out->json);
        out->json = NULL;
        return MLC_E_PROTO;
    }
    out->json[got] = '\0';
    out->json_len = got;
    return MLC_OK;
}

void mlc_frame_release(struct mlc_frame *f)
{
    if (f != NULL) {
        free(f->json);
        f->json = NULL;
    }
}
