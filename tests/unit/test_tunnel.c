/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: tunnel frame encoding and hostile-input decoding.
 */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "shared/mlc_tunnel.h"
#include "tinytest.h"

static void round_trip_small_and_large(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_frame f;
    const char *small = "{\"agent\":\"plant7\",\"last_ack\":41}";
    char *big = malloc(64 * 1024 + 1);

    CHECK_INT(mlc_frame_encode(MLC_FRAME_HELLO, 42, small, strlen(small), 0, &b, &e), MLC_OK);
    CHECK_INT(b.len, MLC_FRAME_HEADER + strlen(small)); /* small bodies are not compressed */
    CHECK_INT(mlc_frame_decode((const uint8_t *)b.ptr, b.len, &f, &e), MLC_OK);
    CHECK_INT(f.type, MLC_FRAME_HELLO);
    CHECK(f.seq == 42);
    CHECK_STR(f.json, small);
    mlc_frame_release(&f);

    for (int i = 0; i < 64 * 1024; i++) {
        big[i] = "{\"webhookEvent\":\"jira:issue_updated\"}"[i % 37];
    }
    big[64 * 1024] = '\0';
    mlc_buf_reset(&b);
    CHECK_INT(mlc_frame_encode(MLC_FRAME_DELIVER, 0xFFFFFFFFFFULL, big, 64 * 1024, 0, &b, &e), MLC_OK);
    CHECK(b.len < 4096); /* repetitive JSON compresses */
    CHECK(((const uint8_t *)b.ptr)[2] == MLC_FRAME_ZSTD);
    CHECK_INT(mlc_frame_decode((const uint8_t *)b.ptr, b.len, &f, &e), MLC_OK);
    CHECK(f.seq == 0xFFFFFFFFFFULL);
    CHECK_INT(f.json_len, 64 * 1024);
    CHECK(f.json != NULL && memcmp(f.json, big, 64 * 1024) == 0);
    mlc_frame_release(&f);
    free(big);
    mlc_buf_release(&b);
}

static void headroom_is_reserved(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_frame f;

    CHECK_INT(mlc_frame_encode(MLC_FRAME_ACK, 7, NULL, 0, 16, &b, &e), MLC_OK);
    CHECK_INT(b.len, 16 + MLC_FRAME_HEADER);
    CHECK_INT(mlc_frame_decode((const uint8_t *)b.ptr + 16, b.len - 16, &f, &e), MLC_OK);
    CHECK_INT(f.type, MLC_FRAME_ACK);
    CHECK_STR(f.json, "");
    mlc_frame_release(&f);
    mlc_buf_release(&b);
}

static void hostile_frames_are_refused(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_frame f;
    uint8_t *p;

    CHECK_INT(mlc_frame_encode(MLC_FRAME_PING, 1, "{}", 2, 0, &b, &e), MLC_OK);
    p = (uint8_t *)b.ptr;
    CHECK_INT(mlc_frame_decode(p, 5, &f, &e), MLC_E_PROTO);
    p[0] = 2;
    CHECK_INT(mlc_frame_decode(p, b.len, &f, &e), MLC_E_PROTO);
    p[0] = MLC_TUNNEL_VERSION;
    p[1] = 99;
    CHECK_INT(mlc_frame_decode(p, b.len, &f, &e), MLC_E_PROTO);
    p[1] = MLC_FRAME_PING;
    p[2] = 0x80;
    CHECK_INT(mlc_frame_decode(p, b.len, &f, &e), MLC_E_PROTO);
    p[2] = 0;
    p[15] = 3; /* length says 3, message has 2 */
    CHECK_INT(mlc_frame_decode(p, b.len, &f, &e), MLC_E_PROTO);
    p[12] = 0x7f; /* ~2 GiB claimed */
    CHECK_INT(mlc_frame_decode(p, b.len, &f, &e), MLC_E_TOOBIG);
    CHECK(f.json == NULL);
    mlc_buf_release(&b);
}

static void zstd_bombs_and_garbage_are_refused(void)
{
    /* a valid zstd frame that declares 64 MiB of output */
    size_t n = 64u << 20, bound = ZSTD_compressBound(n), clen;
    char *zeros = calloc(1, n), *packed = malloc(bound);
    uint8_t *msg;
    struct mlc_errbuf e = { 0 };
    struct mlc_frame f;

    clen = ZSTD_compress(packed, bound, zeros, n, 1);
    CHECK(!ZSTD_isError(clen));
    msg = malloc(MLC_FRAME_HEADER + clen);
    memset(msg, 0, MLC_FRAME_HEADER);
    msg[0] = MLC_TUNNEL_VERSION;
    msg[1] = MLC_FRAME_DELIVER;
    msg[2] = MLC_FRAME_ZSTD;
    msg[12] = (uint8_t)(clen >> 24);
    msg[13] = (uint8_t)(clen >> 16);
    msg[14] = (uint8_t)(clen >> 8);
    msg[15] = (uint8_t)clen;
    memcpy(msg + MLC_FRAME_HEADER, packed, clen);
    CHECK_INT(mlc_frame_decode(msg, MLC_FRAME_HEADER + clen, &f, &e), MLC_E_TOOBIG);
    CHECK(f.json == NULL);
    /* flipped bytes inside the compressed body */
    memset(msg + MLC_FRAME_HEADER + 8, 0xA5, clen > 16 ? clen - 12 : 1);
    mlc_err_reset(&e);
    CHECK(mlc_frame_decode(msg, MLC_FRAME_HEADER + clen, &f, &e) != MLC_OK);
    CHECK(f.json == NULL);
    free(zeros);
    free(packed);
    free(msg);
}

static void encoder_refuses_oversize_and_bad_types(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };

    CHECK_INT(mlc_frame_encode(0, 1, "{}", 2, 0, &b, &e), MLC_E_INVAL);
    CHECK_INT(mlc_frame_encode(MLC_FRAME_DELIVER, 1, "x", MLC_FRAME_MAX_JSON + 1, 0, &b, &e),
              MLC_E_TOOBIG);
    CHECK_STR(mlc_frame_type_name(MLC_FRAME_COMMAND), "COMMAND");
    CHECK_STR(mlc_frame_type_name(42), "?");
    mlc_buf_release(&b);
}

static void delivers_round_trip_through_a_compressed_frame(void)
{
    struct mlc_frame_codec *c = mlc_frame_codec_new();
    struct mlc_buf body = MLC_BUF_INIT, wire = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_delivery in[3], out[MLC_DELIVERS_MAX];
    struct mlc_frame f;
    char big[3000];
    size_t n = 0;

    memset(big, 'x', sizeof(big));
    big[0] = '{';
    big[sizeof(big) - 1] = '}';
    in[0] = (struct mlc_delivery){ 7, 1700000000000LL, "jira", "id-7", "{\"a\":1}", 4, 4, 7 };
    in[1] = (struct mlc_delivery){ 8, 1700000000001LL, "zoho", "zoho:abc", big, 4, 8, sizeof(big) };
    in[2] = (struct mlc_delivery){ 10, 0, "jira", "x", "{}", 4, 1, 2 };
    for (int i = 0; i < 3; i++) {
        CHECK_INT(mlc_delivers_add(&body, &in[i], &e), MLC_OK);
    }
    CHECK(c != NULL);
    CHECK_INT(mlc_frame_encode_with(c, MLC_FRAME_DELIVERS, 7, body.ptr, body.len, 0, &wire, &e), MLC_OK);
    CHECK(wire.len < body.len); /* compressed */
    CHECK_INT(mlc_frame_decode_with(c, (const uint8_t *)wire.ptr, wire.len, &f, &e), MLC_OK);
    CHECK_INT(f.type, MLC_FRAME_DELIVERS);
    CHECK_STR(mlc_frame_type_name(f.type), "DELIVERS");
    CHECK_INT(mlc_delivers_parse(f.json, f.json_len, out, MLC_DELIVERS_MAX, &n, &e), MLC_OK);
    CHECK_INT(n, 3);
    for (size_t i = 0; i < n && i < 3; i++) {
        CHECK_INT(out[i].seq, in[i].seq);
        CHECK_INT(out[i].received_ms, in[i].received_ms);
        CHECK(out[i].kind_len == in[i].kind_len && memcmp(out[i].kind, in[i].kind, in[i].kind_len) == 0);
        CHECK(out[i].id_len == in[i].id_len && memcmp(out[i].id, in[i].id, in[i].id_len) == 0);
        CHECK(out[i].body_len == in[i].body_len && memcmp(out[i].body, in[i].body, in[i].body_len) == 0);
    }
    mlc_frame_release(&f);
    mlc_buf_release(&body);
    mlc_buf_release(&wire);
    mlc_frame_codec_free(c);
}

static void bad_delivers_bodies_are_refused_whole(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_delivery d = { 5, 1, "jira", "a", "{}", 4, 1, 2 }, out[MLC_DELIVERS_MAX];
    size_t n = 99;

    /* empty, and a kind, id or body out of bounds on the way out */
    CHECK_INT(mlc_delivers_parse("", 0, out, MLC_DELIVERS_MAX, &n, &e), MLC_E_PROTO);
    CHECK_INT(n, 0);
    d.kind_len = 16;
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_E_INVAL);
    d.kind_len = 4;
    d.body_len = 0;
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_E_INVAL);
    d.body_len = 2;
    d.seq = 0;
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_E_INVAL);
    d.seq = 5;
    CHECK_INT(b.len, 0);
    /* seqs must increase: 5 then 5 */
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_OK);
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_OK);
    CHECK_INT(mlc_delivers_parse(b.ptr, b.len, out, MLC_DELIVERS_MAX, &n, &e), MLC_E_PROTO);
    CHECK_INT(n, 0);
    /* one record, cut anywhere */
    mlc_buf_reset(&b);
    CHECK_INT(mlc_delivers_add(&b, &d, &e), MLC_OK);
    for (size_t cut = 1; cut < b.len; cut++) {
        CHECK_INT(mlc_delivers_parse(b.ptr, cut, out, MLC_DELIVERS_MAX, &n, &e), MLC_E_PROTO);
    }
    CHECK_INT(mlc_delivers_parse(b.ptr, b.len, out, MLC_DELIVERS_MAX, &n, &e), MLC_OK);
    CHECK_INT(n, 1);
    /* a body length that runs past the end */
    b.ptr[21] = 100;
    CHECK_INT(mlc_delivers_parse(b.ptr, b.len, out, MLC_DELIVERS_MAX, &n, &e), MLC_E_PROTO);
    /* more records than the caller has room for */
    mlc_buf_reset(&b);
    for (int i = 1; i <= 3; i++) {
        d.seq = (uint64_t)i;
        mlc_delivers_add(&b, &d, &e);
    }
    CHECK_INT(mlc_delivers_parse(b.ptr, b.len, out, 2, &n, &e), MLC_E_PROTO);
    mlc_buf_release(&b);
}

static void acks_ranges_round_trip_and_bounds(void)
{
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_errbuf e = { 0 };
    struct mlc_seq_range r[MLC_ACKS_MAX];
    size_t n = 0;

    CHECK_INT(mlc_acks_add(&b, 3, 9), MLC_OK);
    CHECK_INT(mlc_acks_add(&b, 12, 12), MLC_OK);
    CHECK_INT(mlc_acks_parse(b.ptr, b.len, r, MLC_ACKS_MAX, &n, &e), MLC_OK);
    CHECK_INT(n, 2);
    CHECK(r[0].first == 3 && r[0].last == 9 && r[1].first == 12 && r[1].last == 12);
    CHECK_INT(mlc_acks_parse(b.ptr, b.len - 1, r, MLC_ACKS_MAX, &n, &e), MLC_E_PROTO);
    CHECK_INT(mlc_acks_parse(b.ptr, 0, r, MLC_ACKS_MAX, &n, &e), MLC_E_PROTO);
    CHECK_INT(mlc_acks_parse(b.ptr, b.len, r, 1, &n, &e), MLC_E_PROTO);
    mlc_buf_reset(&b);
    mlc_acks_add(&b, 9, 3); /* backwards */
    CHECK_INT(mlc_acks_parse(b.ptr, b.len, r, MLC_ACKS_MAX, &n, &e), MLC_E_PROTO);
    mlc_buf_reset(&b);
    mlc_acks_add(&b, 0, 3); /* seq 0 is no delivery */
    CHECK_INT(mlc_acks_parse(b.ptr, b.len, r, MLC_ACKS_MAX, &n, &e), MLC_E_PROTO);
    mlc_buf_reset(&b);
    mlc_acks_add(&b, 1, UINT64_MAX); /* past what a seq can be */
    CHECK_INT(mlc_acks_parse(b.ptr, b.len, r, MLC_ACKS_MAX, &n, &e), MLC_E_PROTO);
    CHECK_INT(n, 0);
    mlc_buf_release(&b);
}

int main(void)
{
    RUN(round_trip_small_and_large);
    RUN(headroom_is_reserved);
    RUN(hostile_frames_are_refused);
    RUN(zstd_bombs_and_garbage_are_refused);
    RUN(encoder_refuses_oversize_and_bad_types);
    RUN(delivers_round_trip_through_a_compressed_frame);
    RUN(bad_delivers_bodies_are_refused_whole);
    RUN(acks_ranges_round_trip_and_bounds);
    return TT_DONE();
}
