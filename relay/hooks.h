/* SPDX-License-Identifier: Apache-2.0
 * hooks: the decision the relay makes about one incoming webhook, kept free
 * of any server code so it can be unit-tested and fuzzed: is it authentic,
 * is it well-formed, and what is its idempotency key?
 */
#ifndef MLC_RELAY_HOOKS_H
#define MLC_RELAY_HOOKS_H

#include <stddef.h>
#include "relay/store.h"

enum hook_kind { HOOK_JIRA = 0, HOOK_ZOHO = 1 };

/* The request parts that matter; NULL when the header was absent. */
struct hook_req {
    enum hook_kind kind;
    const char *hub_signature;  /* X-Hub-Signature */
    const char *authorization;  /* Authorization */
    const char *delivery_id;    /* X-Atlassian-Webhook-Identifier */
    const char *body;
    size_t len;
    long long now_s;
};

struct hook_verdict {
    int status;         /* HTTP status to answer when not storing: 400 / 401 */
    char ext_id[96];    /* idempotency key when status == 0 (store it) */
    char why[256];      /* for the log and the answer body; never holds a secret */
};

/* status 0: authentic and well-formed, store it under ext_id. */
void hook_check(const struct tenant_rec *t, const struct hook_req *r, struct hook_verdict *v);

/* "/hooks/jira/t1" -> kind + tenant; 0 on success, -1 when the path is not a
 * hook path or the tenant name is not [A-Za-z0-9_-]{1,64}. */
int hook_route(const char *path, enum hook_kind *kind, char *tenant, size_t n);

#endif
