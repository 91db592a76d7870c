/* SPDX-License-Identifier: Apache-2.0
 * mlc_wsq: the queue of encoded tunnel frames waiting for a WebSocket to be
 * writable, shared by the relay's and the agent's ends of the tunnel.
 * One thread (the libwebsockets loop of that connection) uses a queue.
 */
#ifndef MLC_WSQ_H
#define MLC_WSQ_H

#include <stddef.h>
#include <stdint.h>
#include <libwebsockets.h>
#include "shared/mlc_err.h"

struct mlc_wsq_item;

struct mlc_frame_codec;

struct mlc_wsq {
    struct mlc_wsq_item *head, *tail;
    struct mlc_frame_codec *codec; /* optional, not owned: zstd state for this thread */
};

/* Encode a frame (shared/mlc_tunnel.h), queue it and ask for a writable
 * callback on wsi. MLC_OK, or the encoder's error (nothing queued). */
enum mlc_rc mlc_wsq_push(struct mlc_wsq *q, struct lws *wsi, int type, uint64_t seq, const char *json,
                         size_t len, struct mlc_errbuf *err);
/* From the WRITEABLE callback: write the oldest frame, ask again if more
 * wait. 0, or -1 when the write failed (close the connection). */
int mlc_wsq_write(struct mlc_wsq *q, struct lws *wsi);
void mlc_wsq_clear(struct mlc_wsq *q);

#endif
