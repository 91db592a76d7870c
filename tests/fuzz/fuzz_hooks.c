/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: the relay's webhook decision on hostile requests. Byte 0
 * picks the kind and which headers are present; the next bytes up to the
 * first NUL are the header value (signature, JWT and delivery id share it);
 * the rest is the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "relay/hooks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tenant_rec t;
    struct hook_req r = { 0 };
    struct hook_verdict v;
    enum hook_kind k;
    char tn[TENANT_NAME_MAX + 1], *hdr;
    const uint8_t *nul;
    size_t hl;

    if (size < 1) {
        return 0;
    }
    memset(&t, 0, sizeof(t));
    strcpy(t.name, "acme");
    strcpy(t.hook_secret, "secret");
    strcpy(t.zoho_token, "ztoken");
    if (data[0] & 8) {
        strcpy(t.jira_client_secret, "client");
    }
    nul = memchr(data + 1, 0, size - 1);
    hl = nul ? (size_t)(nul - (data + 1)) : size - 1;
    hdr = malloc(hl + 1);
    if (hdr == NULL) {
        return 0;
    }
    memcpy(hdr, data + 1, hl);
    hdr[hl] = '\0';
    r.kind = (data[0] & 1) ? HOOK_ZOHO : HOOK_JIRA;
    r.hub_signature = (data[0] & 2) ? hdr : NULL;
    r.authorization = (data[0] & 4) ? hdr : NULL;
    r.delivery_id = (data[0] & 16) ? hdr : NULL;
    r.body = nul ? (const char *)nul + 1 : "";
    r.len = nul ? size - hl - 2 : 0;
    r.now_s = 1700000000;
    hook_check(&t, &r, &v);
    hook_route(hdr, &k, tn, sizeof(tn));
    free(hdr);
    return 0;
}
