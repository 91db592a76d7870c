/* SPDX-License-Identifier: Apache-2.0
 * Fuzz target: change deliveries as the agent's write-back reads them (they
 * arrive from the network through the relay, or from a target poll). The
 * first byte picks the parser: 'P' the generic polled-change JSON
 * (change_from_json), anything else a Jira webhook body (jira_event_parse,
 * given the whole input).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "agent/connectors/connector.h"
#include "agent/connectors/jira/jira.h"

static void touch(const struct change *ch)
{
    /* what the write-back reads */
    volatile size_t n = ch->record ? strlen(ch->record) : 0;

    n += strlen(ch->author ? ch->author : "");
    for (size_t i = 0; i < ch->n_items; i++) {
        n += strlen(ch->items[i].field) + strlen(ch->items[i].from) + strlen(ch->items[i].to);
    }
    if (change_item_find(ch, "status") != NULL) {
        n++;
    }
    (void)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlc_errbuf err = { 0 };
    struct change ch;
    int poll = size > 0 && data[0] == 'P';
    const char *text;
    size_t len;
    char *body = malloc(size + 1);

    if (body == NULL) {
        return 0;
    }
    memcpy(body, data, size);
    body[size] = '\0';
    text = poll ? body + 1 : body;
    len = poll ? size - 1 : size;
    if ((poll ? change_from_json(text, len, &ch, &err) : jira_event_parse(text, len, &ch, &err)) ==
        MLC_OK) {
        touch(&ch);
    }
    change_release(&ch);
    free(body);
    return 0;
}
