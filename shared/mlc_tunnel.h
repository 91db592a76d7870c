/* SPDX-License-Identifier: Apache-2.0
 * mlc_tunnel: the agent <-> relay tunnel message format, shared by both sides.
 *
 * One binary WebSocket message = one frame, big-endian:
 *   0  u8   version (MLC_TUNNEL_VERSION)
 *   1  u8   type (enum mlc_frame_type)
 *   2  u8   flags (MLC_FRAME_ZSTD: body is one zstd frame)
 *   3  u8   reserved, 0
 *   4  u64  sequence number (DELIVER/ACK: the delivery; others: sender's counter)
 *   12 u32  body length in bytes as sent
 *   16 ...  body: JSON text, zstd-compressed when the flag is set
 * A decoder rejects other versions, unknown types, nonzero reserved bits,
 * lengths that disagree, and bodies over their caps, before decompressing.
 */
#ifndef MLC_TUNNEL_H
#define MLC_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"

#define MLC_TUNNEL_VERSION 1
#define MLC_FRAME_HEADER 16
#define MLC_FRAME_ZSTD 0x01u
#define MLC_FRAME_MAX_WIRE (1u << 20)   /* compressed body cap: 1 MiB */
#define MLC_FRAME_MAX_JSON (4u << 20)   /* decompressed body cap: 4 MiB */
#define MLC_FRAME_COMPRESS_MIN 256      /* smaller bodies go uncompressed */

enum mlc_frame_type {
    MLC_FRAME_HELLO = 1,   /* agent -> relay: agent id, version, last acked seq */
    MLC_FRAME_DELIVER = 2, /* relay -> agent: one stored webhook delivery */
    MLC_FRAME_ACK = 3,     /* agent -> relay: delivery seq is in the agent's inbox */
    MLC_FRAME_COMMAND = 4, /* relay -> agent: sync-now, ping */
    MLC_FRAME_STATUS = 5,  /* agent -> relay: answer to a command, health */
    MLC_FRAME_PING = 6,    /* heartbeat, either way */
    MLC_FRAME_PONG = 7,
};
#define MLC_FRAME_TYPE_MAX 7

/* "HELLO", "DELIVER", ...; "?" for unknown values. */
const char *mlc_frame_type_name(int type);

/* Append a frame to out, after `front` bytes of untouched headroom that the
 * caller reserves (LWS_PRE for lws_write); json may be NULL/empty. */
enum mlc_rc mlc_frame_encode(int type, uint64_t seq, const char *json, size_t len, size_t front,
                             struct mlc_buf *out, struct mlc_errbuf *err);

struct mlc_frame {
    int type;
    uint64_t seq;
    char *json;      /* heap, NUL-terminated, "" for an empty body; caller frees */
    size_t json_len;
};

/* Decode exactly one frame from p[0..n). Never trusts a length it has not
 * checked against n and the caps. On error out->json is NULL. */
enum mlc_rc mlc_frame_decode(const uint8_t *p, size_t n, struct mlc_frame *out,
                             struct mlc_errbuf *err);
void mlc_frame_release(struct mlc_frame *f);

#endif
