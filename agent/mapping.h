/* SPDX-License-Identifier: Apache-2.0
 * mapping: per-customer field mapping, data not code. A flow's "mapping" is an
 * object of target field -> rule:
 *   "WO {DOCO}: {DL01}"                          template (values trimmed)
 *   {"from": "PRTS", "map": {"1": "Highest"}, "default": "Medium"}
 *   {"from": ["EMAIL", "USERID"]}                 the first of these columns with a value
 *   {"from": "DRQJ", "date": "yyyymmdd"}          or "julian" (CYYDDD) -> YYYY-MM-DD
 *   {"from": "AG", "decimals": 2}                 an integer with N (0..18) implied decimals,
 *        as JD Edwards stores amounts: "-123456" -> "-1234.56"; "" stays ""; any other
 *        text is an error naming the field (the record dead-letters)
 *   {"template": "...", "case": "upper"}          "upper" / "lower"
 *   {"const": "jde"}
 *   {"list": ["jde", "wo-{DCTO}"]}                an array (e.g. labels)
 *   {"items": {"id": "{SEQ}", "text": "{NOTE}"}, "each": "COMMENTS"}
 *        an array of objects (e.g. comments): one per element of the list
 *        column "each" (its members fill the templates), or without "each"
 *        one per object of "items" (an object or an array of them) filled
 *        from the row; an object none of whose {COLUMN}s has a value is left out
 * Any rule may add "required": true (an empty result dead-letters the record)
 * and "max": N (truncate to N bytes on a UTF-8 boundary).
 */
#ifndef MLC_MAPPING_H
#define MLC_MAPPING_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

struct mapping;

/* Compile and validate; messages name the JSON path ("flows.x.mapping.priority.map"). */
struct mapping *mapping_compile(const cJSON *spec, const char *path, struct mlc_errbuf *err);
void mapping_free(struct mapping *m);

/* Map one source row (column alias -> value) to a new object (caller owns).
 * NULL with err when a required field is empty or a value cannot convert. */
cJSON *mapping_apply(const struct mapping *m, const cJSON *row, struct mlc_errbuf *err);

/* Names of the target fields (lent array of n). */
const char *const *mapping_fields(const struct mapping *m, int *n);
/* Every literal value a field can produce through its value map and default
 * (heap cJSON array), e.g. for validating priority names at start-up. */
cJSON *mapping_values(const struct mapping *m, const char *field);

/* The source column a target field is read from when the mapping can be
 * reversed for it ({"from": COLUMN} with an optional value map, default or
 * date; no template, case, max or decimals), else NULL. */
const char *mapping_source_column(const struct mapping *m, const char *field);
/* A target value of field turned back into the source's format (a value
 * map read backwards, an ISO date into yyyyMMdd or CYYDDD), into out.
 * 0, or -1 with a reason in err (no source value maps to it). */
int mapping_reverse(const struct mapping *m, const char *field, const char *value, char *out,
                    size_t n, struct mlc_errbuf *err);

#endif
