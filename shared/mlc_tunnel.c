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
    [MLC_FRAME_PONG] = "PONG",       [MLC_FRAME_DELIVERS] = "DELIVERS", [MLC_FRAME_ACKS] = "ACKS",
};

struct mlc_frame_codec {
    ZSTD_CCtx *cc;
    ZSTD_DCtx *dc;
};

struct mlc_frame_codec *mlc_frame_codec_new(void)
{
    struct mlc_frame_codec *c = mlc_xcalloc(1, sizeof(*c));

    c->cc = ZSTD_createCCtx();
    c->dc = ZSTD_createDCtx();
    if (c->cc == NULL || c->dc == NULL) {
        mlc_frame_codec_free(c);
        return NULL;
    }
    return c;
}

void mlc_frame_codec_free(struct mlc_frame_codec *c)
{
    if (c != NULL) {
        ZSTD_freeCCtx(c->cc);
        ZSTD_freeDCtx(c->dc);
        free(c);
    }
}

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
    return mlc_frame_encode_with(NULL, type, seq, json, len, front, out, err);
}

enum mlc_rc mlc_frame_encode_with(struct mlc_frame_codec *c, int type, uint64_t seq, const char *json,
                                  size_t len, size_t front, struct mlc_buf *out,
                                  struct mlc_errbuf *err)
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
        n = c ? ZSTD_compressCCtx(c->cc, packed, bound, json, body_len, 1)
              : ZSTD_compress(packed, bound, json, body_len, 1);
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
    while (front > 0 && rc == MLC_OK) {
        static const char zeros[64];
        size_t k = front < sizeof(zeros) ? front : sizeof(zeros);
        rc = mlc_buf_add(out, zeros, k);
        front -= k;
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
    return mlc_frame_decode_with(NULL, p, n, out, err);
}

enum mlc_rc mlc_frame_decode_with(struct mlc_frame_codec *c, const uint8_t *p, size_t n,
                                  struct mlc_frame *out, struct mlc_errbuf *err)
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
    got = c ? ZSTD_decompressDCtx(c->dc, out->json, (size_t)declared, p, body_len)
            : ZSTD_decompress(out->json, (size_t)declared, p, body_len);
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

/* ---- DELIVERS and ACKS bodies ---- */


enum mlc_rc mlc_delivers_add(struct mlc_buf *b, const struct mlc_delivery *d, struct mlc_errbuf *err)
{
    uint8_t h[MLC_DELIVERY_HEAD];
    enum mlc_rc rc;

    if (d->kind_len < 1 || d->kind_len > MLC_KIND_MAX || d->id_len < 1 || d->id_len > 255 ||
        d->body_len < 1 || d->body_len > MLC_FRAME_MAX_JSON || d->seq < 1 || d->seq > INT64_MAX ||
        d->received_ms < 0) {
        mlc_errf(err, "delivery %llu: kind, id or body length out of bounds",
                 (unsigned long long)d->seq);
        return MLC_E_INVAL;
    }
    put_be(h, d->seq, 8);
    put_be(h + 8, (uint64_t)d->received_ms, 8);
    h[16] = (uint8_t)d->kind_len;
    h[17] = (uint8_t)d->id_len;
    put_be(h + 18, d->body_len, 4);
    if ((rc = mlc_buf_add(b, h, sizeof(h))) != MLC_OK || (rc = mlc_buf_add(b, d->kind, d->kind_len)) != MLC_OK ||
        (rc = mlc_buf_add(b, d->id, d->id_len)) != MLC_OK) {
        return rc;
    }
    return mlc_buf_add(b, d->body, d->body_len);
}

enum mlc_rc mlc_delivers_parse(const char *p, size_t len, struct mlc_delivery *out, size_t max,
                               size_t *n, struct mlc_errbuf *err)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t off = 0, k = 0;
    uint64_t prev = 0;

    *n = 0;
    while (off < len) {
        struct mlc_delivery *d;
        uint64_t seq, recv;
        size_t kl, il, bl;

        if (k == max || k == MLC_DELIVERS_MAX) {
            mlc_errf(err, "DELIVERS frame: more than %zu records", k);
            return MLC_E_PROTO;
        }
        if (len - off < MLC_DELIVERY_HEAD) {
            mlc_errf(err, "DELIVERS frame: record %zu is cut short", k);
            return MLC_E_PROTO;
        }
        seq = get_be(u + off, 8);
        recv = get_be(u + off + 8, 8);
        kl = u[off + 16];
        il = u[off + 17];
        bl = (size_t)get_be(u + off + 18, 4);
        off += MLC_DELIVERY_HEAD;
        if (seq <= prev || seq > INT64_MAX || recv > INT64_MAX || kl < 1 || kl > MLC_KIND_MAX ||
            il < 1 || bl < 1) {
            mlc_errf(err, "DELIVERS frame: record %zu (seq %llu) is out of order or out of bounds", k,
                     (unsigned long long)seq);
            return MLC_E_PROTO;
        }
        if (len - off < kl || len - off - kl < il || len - off - kl - il < bl) {
            mlc_errf(err, "DELIVERS frame: record %zu (seq %llu) runs past the frame", k,
                     (unsigned long long)seq);
            return MLC_E_PROTO;
        }
        d = &out[k++];
        d->seq = seq;
        d->received_ms = (long long)recv;
        d->kind = p + off;
        d->kind_len = kl;
        d->id = p + off + kl;
        d->id_len = il;
        d->body = p + off + kl + il;
        d->body_len = bl;
        off += kl + il + bl;
        prev = seq;
    }
    if (k == 0) {
        mlc_errf(err, "DELIVERS frame without a record");
        return MLC_E_PROTO;
    }
    *n = k;
    return MLC_OK;
}

enum mlc_rc mlc_acks_add(struct mlc_buf *b, uint64_t first, uint64_t last)
{
    uint8_t h[16];

    put_be(h, first, 8);
    put_be(h + 8, last, 8);
    return mlc_buf_add(b, h, sizeof(h));
}

enum mlc_rc mlc_acks_parse(const char *p, size_t len, struct mlc_seq_range *out, size_t max,
                           size_t *n, struct mlc_errbuf *err)
{
    const uint8_t *u = (const uint8_t *)p;
    size_t k = len / 16;

    *n = 0;
    if (len == 0 || len % 16 != 0 || k > MLC_ACKS_MAX || k > max) {
        mlc_errf(err, "ACKS frame: %zu bytes is not 1 to %d ranges of 16 bytes", len, MLC_ACKS_MAX);
        return MLC_E_PROTO;
    }
    for (size_t i = 0; i < k; i++) {
        out[i].first = get_be(u + 16 * i, 8);
        out[i].last = get_be(u + 16 * i + 8, 8);
        if (out[i].first < 1 || out[i].first > out[i].last || out[i].last > INT64_MAX) {
            mlc_errf(err, "ACKS frame: range %zu (%llu-%llu) is empty or out of bounds", i,
                     (unsigned long long)out[i].first, (unsigned long long)out[i].last);
            return MLC_E_PROTO;
        }
    }
    *n = k;
    return MLC_OK;
}
