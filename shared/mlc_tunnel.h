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
 *   16 ...  body: JSON text (DELIVERS and ACKS: binary, below), zstd-compressed
 *           when the flag is set
 * A decoder rejects other versions, unknown types, nonzero reserved bits,
 * lengths that disagree, and bodies over their caps, before decompressing.
 *
 * Batched frames, sent only to a peer whose HELLO said "batch":true (older
 * peers close the tunnel on a type they do not know):
 *   DELIVERS body: 1 to MLC_DELIVERS_MAX records, seqs strictly increasing,
 *     each: u64 seq, u64 received_ms, u8 kind length (1-15), u8 id length
 *     (1-255), u32 body length (>= 1), then kind, id and body (the webhook's
 *     JSON) bytes. The header's seq is the first record's.
 *   ACKS body: 1 to MLC_ACKS_MAX ranges, each u64 first, u64 last (first <=
 *     last): every seq in the range is in the agent's inbox. The agent sends
 *     ranges of seqs it holds only, so a range never covers a gap it did not
 *     receive. The header's seq is the first range's first.
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
    MLC_FRAME_DELIVERS = 8, /* relay -> agent: several deliveries (binary, see above) */
    MLC_FRAME_ACKS = 9,     /* agent -> relay: ranges of delivery seqs in the inbox */
};
#define MLC_FRAME_TYPE_MAX 9
#define MLC_DELIVERS_MAX 256 /* records in one DELIVERS frame */
#define MLC_ACKS_MAX 4096    /* ranges in one ACKS frame */
#define MLC_KIND_MAX 15      /* "jira", "zoho": what an inbox row's kind holds */
#define MLC_DELIVERY_HEAD 22 /* bytes of a DELIVERS record besides kind, id and body */

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

/* zstd state reused from frame to frame by one thread: a context made for
 * every frame costs more than compressing a small body. The functions
 * taking one accept NULL (a context per call, as the plain ones do). */
struct mlc_frame_codec;
struct mlc_frame_codec *mlc_frame_codec_new(void);
void mlc_frame_codec_free(struct mlc_frame_codec *c);
enum mlc_rc mlc_frame_encode_with(struct mlc_frame_codec *c, int type, uint64_t seq, const char *body,
                                  size_t len, size_t front, struct mlc_buf *out,
                                  struct mlc_errbuf *err);
enum mlc_rc mlc_frame_decode_with(struct mlc_frame_codec *c, const uint8_t *p, size_t n,
                                  struct mlc_frame *out, struct mlc_errbuf *err);

/* One record of a DELIVERS body; the pointers point into that body. */
struct mlc_delivery {
    uint64_t seq;
    long long received_ms;
    const char *kind, *id, *body;
    size_t kind_len, id_len, body_len;
};

/* Append a record to a DELIVERS body being built (the caller keeps seqs
 * increasing and at most MLC_DELIVERS_MAX records). MLC_E_INVAL for a
 * kind or id out of bounds or an empty body. */
enum mlc_rc mlc_delivers_add(struct mlc_buf *b, const struct mlc_delivery *d, struct mlc_errbuf *err);
/* Check a whole DELIVERS body and fill out[0..*n) (max >= MLC_DELIVERS_MAX
 * always suffices). All or nothing: MLC_E_PROTO, with nothing usable, when
 * any record is out of bounds or out of order. */
enum mlc_rc mlc_delivers_parse(const char *p, size_t len, struct mlc_delivery *out, size_t max,
                               size_t *n, struct mlc_errbuf *err);

struct mlc_seq_range {
    uint64_t first, last;
};
/* Append one range to an ACKS body. */
enum mlc_rc mlc_acks_add(struct mlc_buf *b, uint64_t first, uint64_t last);
/* Check an ACKS body and fill out[0..*n) (max >= MLC_ACKS_MAX suffices). */
enum mlc_rc mlc_acks_parse(const char *p, size_t len, struct mlc_seq_range *out, size_t max,
                           size_t *n, struct mlc_errbuf *err);

#endif
