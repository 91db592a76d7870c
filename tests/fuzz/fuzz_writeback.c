/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: Jira webhook bodies as the agent's write-back reads them
 * (they arrive from the network through the relay, or from a Jira poll).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/writeback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    struct wb_event ev;
    char *body = malloc(size + 1);

    if (body == NULL) {
        return 0;
    }
    memcpy(body, data, size);
    body[size] = '\0';
    if (writeback_event_parse(body, &ev, &err) == MLC_OK && ev.status != NULL) {
        /* touch what the worker reads */
        volatile size_t n = strlen(ev.status) + (ev.issue_key ? strlen(ev.issue_key) : 0);
        (void)n;
    }
    cJSON_Delete(ev.root);
    free(body);
    return 0;
}
