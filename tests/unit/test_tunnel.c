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

int main(void)
{
    RUN(round_trip_small_and_large);
    RUN(headroom_is_reserved);
    RUN(hostile_frames_are_refused);
    RUN(zstd_bombs_and_garbage_are_refused);
    RUN(encoder_refuses_oversize_and_bad_types);
    return TT_DONE();
}
