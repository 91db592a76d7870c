/* SPDX-License-Identifier: Apache-2.0
 * looker: tells Looker (API 4.0, looker.md) that a load changed the
 * warehouse, by triggering a datagroup, so dashboards stop serving cached
 * results. The pure parts, exposed for unit tests and fuzzers: datagroup
 * lists and objects, and error bodies.
 */
#ifndef MLC_LOOKER_H
#define MLC_LOOKER_H

#include <stddef.h>
#include "agent/connectors/connector.h"

/* A GET /api/4.0/datagroups answer (an array of Datagroup objects): the id
 * of the one whose model_name and name are model and name (ids are strings;
 * a numeric id is taken as its decimal text; an id with characters other
 * than letters, digits and -_.: is not usable). 0 with the id in id; 1 when
 * the list has no such datagroup (err says which ones it has, up to a few);
 * -1 when the body is not a list of datagroups (err says why). */
int looker_datagroup_find(const char *body, size_t len, const char *model, const char *name,
                          char *id, size_t nid, struct mlc_errbuf *err);

/* One Datagroup object (GET or PATCH /api/4.0/datagroups/{id}): 0 when it is
 * the datagroup of model and name, 1 when it is another one, -1 when the
 * body is not a Datagroup. *triggered_at gets its triggered_at (0 when
 * absent or null; triggered_at may be NULL). */
int looker_datagroup_check(const char *body, size_t len, const char *model, const char *name,
                           long long *triggered_at);

/* One line of at most n-1 bytes from a Looker error body: "message", and
 * for a ValidationError the first errors[] entry as "field: message";
 * else the start of the text, control characters blanked. */
void looker_error_line(const char *body, size_t len, char *out, size_t n);

extern const struct connector connector_looker;

#endif
