/* SPDX-License-Identifier: Apache-2.0
 * mlc_wsq: tunnel frames waiting for a writable WebSocket (see mlc_wsq.h).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_tunnel.h"
#include "shared/mlc_wsq.h"

struct mlc_wsq_item {
    struct mlc_wsq_item *next;
    size_t len;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then len bytes */
};

enum mlc_rc mlc_wsq_push(struct mlc_wsq *q, struct lws *wsi, int type, uint64_t seq, const char *json,
                         size_t len, struct mlc_errbuf *err)
{
    /* the frame is encoded after room for the item's own fields, and the
     * buffer becomes the item: no second copy */
    struct mlc_buf b = MLC_BUF_INIT;
    struct mlc_wsq_item *it;
    enum mlc_rc rc = mlc_frame_encode_with(q->codec, type, seq, json, len,
                                           offsetof(struct mlc_wsq_item, data) + LWS_PRE, &b, err);

    if (rc != MLC_OK) {
        mlc_buf_release(&b);
        return rc;
    }
    {
        size_t frame_len = b.len - offsetof(struct mlc_wsq_item, data) - LWS_PRE;
        it = (struct mlc_wsq_item *)(void *)mlc_buf_detach(&b);
        it->next = NULL;
        it->len = frame_len;
    }
    if (q->tail) {
        q->tail->next = it;
    } else {
        q->head = it;
    }
    q->tail = it;
    lws_callback_on_writable(wsi);
    return MLC_OK;
}

int mlc_wsq_write(struct mlc_wsq *q, struct lws *wsi)
{
    struct mlc_wsq_item *it = q->head;

    if (it == NULL) {
        return 0;
    }
    if (lws_write(wsi, it->data + LWS_PRE, it->len, LWS_WRITE_BINARY) < (int)it->len) {
        return -1;
    }
    q->head = it->next;
    if (q->head == NULL) {
        q->tail = NULL;
    }
    free(it);
    if (q->head) {
        lws_callback_on_writable(wsi);
    }
    return 0;
}

void mlc_wsq_clear(struct mlc_wsq *q)
{
    while (q->head) {
        struct mlc_wsq_item *n = q->head->next;
        free(q->head);
        q->head = n;
    }
    q->tail = NULL;
}
