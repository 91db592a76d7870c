/* SPDX-License-Identifier: Apache-2.0
 * ifs: IFS Cloud OData v4 projection connector (ifs-cloud.md); the pure
 * parts, exposed for unit tests and fuzzers: OData collection pages, OData
 * error bodies, $metadata discovery (custom fields, bound state actions),
 * key predicates, filter literals and cursors.
 */
#ifndef MLC_IFS_H
#define MLC_IFS_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"

#define IFS_MAX_KEYS 4

/* How the rows of one entity set are keyed and ordered. */
struct ifs_shape {
    const char *keys[IFS_MAX_KEYS]; /* key properties, e.g. "OrderNo"; composite keys in order */
    int n_keys;
    const char *changed;            /* change-date property, e.g. "ChangedDate"; NULL = none */
};

/* A cursor is the position of a row in ($orderby changed, keys...): the
 * compact JSON array [changed, key1, key2, ...] with each value as the row
 * carries it (a key number stays a number, so its literal stays unquoted).
 * ifs_cursor_make() returns a heap string, NULL when the row lacks a part. */
char *ifs_cursor_make(const cJSON *row, const struct ifs_shape *sh);
/* Parse a cursor written by ifs_cursor_make(); a heap array of 1 + n_keys
 * scalars, NULL when it is not one. */
cJSON *ifs_cursor_parse(const char *s, const struct ifs_shape *sh);
/* The instant of an ISO date or date-time ("2026-01-15", "2026-01-15T10:00:00Z",
 * "...+02:00", fractions allowed; no zone = UTC), ms since the epoch, or -1. */
long long ifs_time_ms(const char *s);

/* One OData literal of a JSON scalar, appended to b: strings in single quotes
 * with ' doubled, numbers and booleans as they are; date values (as==1) are
 * written unquoted after checking they hold only date-time characters.
 * Returns 0, -1 when the value cannot be a literal. */
int ifs_literal(struct mlc_buf *b, const cJSON *v, int as_date);
/* The key predicate "(OrderNo='P1')" / "(WoNo=12)" / "(A='x',B=1)" from the
 * source key as text ("P1", composite parts joined by '|'); numeric[i] says
 * which parts are unquoted numbers. Returns 0, -1 when the key does not fit
 * (wrong number of parts, a numeric part that is not a number). Not
 * URL-encoded. */
int ifs_key_predicate(struct mlc_buf *b, const struct ifs_shape *sh, const int *numeric,
                      const char *key);
/* The keyset condition "rows after cursor" in ($orderby changed, keys):
 * (C gt c) or (C eq c and (K1 gt k1 or (K1 eq k1 and ...))). -1 when cur
 * does not fit sh. */
int ifs_after_filter(struct mlc_buf *b, const struct ifs_shape *sh, const cJSON *cur);

/* Parse one OData collection answer: {"value":[...],"@odata.nextLink":..}.
 * Each row becomes a record (its JSON object moved out of the answer, its
 * "@odata.etag" kept in the data); rows without a usable key or change date
 * become records with .error set. *next_link: heap, NULL when the answer has
 * none. *count: the rows in the answer (error rows included). */
enum mlc_rc ifs_parse_page(const char *body, size_t len, const struct ifs_shape *sh,
                           struct page *out, char **next_link, size_t *count,
                           struct mlc_errbuf *err);

/* The parts of an OData error body {"error":{"code","message","details":[..]}}.
 * Also accepts the token endpoint's {"error":"invalid_client",
 * "error_description":..}. Returns 0 when it was one; code and msg get ""
 * otherwise (msg then holds the start of the text, control characters
 * blanked). */
int ifs_error_parse(const char *body, size_t len, char *code, size_t ncode, char *msg,
                    size_t nmsg);

/* $metadata (CSDL XML) discovery for one entity set. */
struct ifs_meta {
    char ns[128];          /* the schema's Namespace, e.g. "IfsApp.PurchaseOrderHandling" */
    char type[128];        /* the set's entity type, unqualified, e.g. "PurchaseOrder" */
    char cf_names[16][64]; /* the type's custom fields (properties named Cf_...) */
    int n_cf;
};
/* Find set in the document: 0 and out filled, -1 when the set is not there. */
int ifs_meta_entity(const char *xml, size_t len, const char *set, struct ifs_meta *out);
/* The property of the set's type that a configured custom field name means:
 * the exact name, else "Cf_" + name, case-insensitively. 0 with the real
 * name in out, -1 when the type has no such property. */
int ifs_meta_property(const char *xml, size_t len, const struct ifs_meta *m, const char *name,
                      char *out, size_t n);
/* Whether property prop of the set's type is a number (Edm.Int*, Decimal,
 * Double, ...): 1, 0 for another type, -1 when the type has no such
 * property. A key predicate writes numbers unquoted. */
int ifs_meta_numeric(const char *xml, size_t len, const struct ifs_meta *m, const char *prop);
/* Whether a bound action of that name ("Release", or as IFS spells state
 * events, "PurchaseOrder_Release") takes the set's entity type as its
 * binding parameter: 0 with its name as spelt in $metadata in out, -1 when not. */
int ifs_meta_action(const char *xml, size_t len, const struct ifs_meta *m, const char *name,
                    char *out, size_t n);

extern const struct connector connector_ifs;

#endif
