/* SPDX-License-Identifier: Apache-2.0
 * mailbox: how the tunnel thread and the status-page thread ask the worker
 * for something (sync a flow, ping the systems) and get the answer back.
 * The worker sleeps in mailbox_wait(); anyone may post or poke.
 */
#ifndef MLC_AGENT_MAILBOX_H
#define MLC_AGENT_MAILBOX_H

#include <pthread.h>

struct mb_msg {
    struct mb_msg *next;
    long long id;   /* the poster's id for the answer (relay command id, request id) */
    char *json;     /* {"command":"sync-now","flow":"..."} or {"command":"ping"} */
    /* called on the worker thread with the answer JSON; may be NULL */
    void (*reply)(void *ctx, long long id, const char *json);
    void *ctx;
};

struct mailbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wakes;
    struct mb_msg *head, *tail;
};

void mailbox_init(struct mailbox *mb);
void mailbox_destroy(struct mailbox *mb);
/* Takes a copy of json. */
void mailbox_post(struct mailbox *mb, long long id, const char *json,
                  void (*reply)(void *ctx, long long id, const char *json), void *ctx);
/* Wake the worker (new inbox rows, a stop request). */
void mailbox_poke(struct mailbox *mb);
/* Wait up to timeout_ms for a message or a poke. Returns the oldest message
 * (caller frees it with mailbox_msg_free) or NULL. */
struct mb_msg *mailbox_wait(struct mailbox *mb, long timeout_ms);
void mailbox_msg_free(struct mb_msg *m);

#endif
