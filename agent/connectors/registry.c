/* SPDX-License-Identifier: Apache-2.0
 * registry: every connector the agent knows, in one table.
 */
#include <string.h>
#include "agent/connectors/connector.h"

extern const struct connector connector_jde;
extern const struct connector connector_jira;

static const struct connector *const registry[] = {
    &connector_jde,
    &connector_jira,
};

const struct connector *connector_find(const char *name)
{
    for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++) {
        if (strcmp(registry[i]->name, name) == 0) {
            return registry[i];
        }
    }
    return NULL;
}

const struct connector *const *connector_all(size_t *n)
{
    *n = sizeof(registry) / sizeof(registry[0]);
    return registry;
}
