/* SPDX-License-Identifier: Apache-2.0
 * registry: every connector the agent knows, in one table.
 */
#include <string.h>
#include "agent/connectors/connector.h"

extern const struct connector connector_ifs;
extern const struct connector connector_jde;
extern const struct connector connector_jira;
extern const struct connector connector_looker;
extern const struct connector connector_pgsql;
extern const struct connector connector_psft;

static const struct connector *const registry[] = {
    &connector_ifs,
    &connector_jde,
    &connector_jira,
    &connector_looker,
    &connector_pgsql,
    &connector_psft,
};

#define N_BUILTIN (sizeof(registry) / sizeof(registry[0]))
#define MAX_EXTRA 8

static const struct connector *all[N_BUILTIN + MAX_EXTRA];
static size_t n_extra;

void connector_register(const struct connector *c)
{
    if (n_extra < MAX_EXTRA && connector_find(c->name) == NULL) {
        all[N_BUILTIN + n_extra++] = c;
    }
}

const struct connector *connector_find(const char *name)
{
    size_t n;
    const struct connector *const *list = connector_all(&n);

    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i]->name, name) == 0) {
            return list[i];
        }
    }
    return NULL;
}

const struct connector *const *connector_all(size_t *n)
{
    for (size_t i = 0; i < N_BUILTIN; i++) {
        all[i] = registry[i];
    }
    *n = N_BUILTIN + n_extra;
    return all;
}
