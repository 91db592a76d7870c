/* SPDX-License-Identifier: Apache-2.0
 * mailbox: requests to the worker thread (see mailbox.h).
 */
#include <stdlib.h>
#include <time.h>
#include "agent/mailbox.h"
#include "shared/mlc_buf.h"

void mailbox_init(struct mailbox *mb)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&mb->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&mb->cv, &ca);
    pthread_condattr_destroy(&ca);
    mb->wakes = 0;
    mb->head = mb->tail = NULL;
}

void mailbox_msg_free(struct mb_msg *m)
{
    if (m) {
        free(m->json);
        free(m);
    }
}

void mailbox_destroy(struct mailbox *mb)
{
    while (mb->head) {
        struct mb_msg *n = mb->head->next;
        mailbox_msg_free(mb->head);
        mb->head = n;
    }
    pthread_mutex_destroy(&mb->mu);
    pthread_cond_destroy(&mb->cv);
}

void mailbox_post(struct mailbox *mb, long long id, const char *json,
                  void (*reply)(void *ctx, long long id, const char *json), void *ctx)
{
    struct mb_msg *m = mlc_xcalloc(1, sizeof(*m));

    m->id = id;
    m->json = mlc_xstrdup(json);
    m->reply = reply;
    m->ctx = ctx;
    pthread_mutex_lock(&mb->mu);
    if (mb->tail) {
        mb->tail->next = m;
    } else {
        mb->head = m;
    }
    mb->tail = m;
    pthread_cond_broadcast(&mb->cv);
    pthread_mutex_unlock(&mb->mu);
}

void mailbox_poke(struct mailbox *mb)
{
    pthread_mutex_lock(&mb->mu);
    mb->wakes++;
    pthread_cond_broadcast(&mb->cv);
    pthread_mutex_unlock(&mb->mu);
}

struct mb_msg *mailbox_wait(struct mailbox *mb, long timeout_ms)
{
    struct timespec ts;
    struct mb_msg *m = NULL;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mb->mu);
    while (mb->wakes == 0 && mb->head == NULL) {
        if (pthread_cond_timedwait(&mb->cv, &mb->mu, &ts) != 0) {
            break;
        }
    }
    mb->wakes = 0;
    if (mb->head) {
        m = mb->head;
        mb->head = m->next;
        if (mb->head == NULL) {
            mb->tail = NULL;
        } else {
            mb->wakes = 1; /* more waiting */
        }
        m->next = NULL;
    }
    pthread_mutex_unlock(&mb->mu);
    return m;
}
