/* SPDX-License-Identifier: Apache-2.0
 * mlc_json: small helpers over cJSON. Every getter lends (never frees);
 * trees from mlc_json_parse() belong to the caller.
 */
#ifndef MLC_JSON_H
#define MLC_JSON_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

/* Parse len bytes (need not be NUL-terminated). NULL on failure, with
 * "<what>: invalid JSON near byte N" in err. */
cJSON *mlc_json_parse(const char *buf, size_t len, const char *what, struct mlc_errbuf *err);

/* Member lookups (case-sensitive); NULL / fallback when absent or wrong type. */
const char *mlc_json_str(const cJSON *obj, const char *key);
double mlc_json_num(const cJSON *obj, const char *key, double fallback);
int mlc_json_bool(const cJSON *obj, const char *key, int fallback);
const cJSON *mlc_json_obj(const cJSON *obj, const char *key);
const cJSON *mlc_json_arr(const cJSON *obj, const char *key);

/* Dotted path with [i] indexes: "a.b[2].c". */
const cJSON *mlc_json_path(const cJSON *root, const char *path);

/* A scalar as text into out (n bytes): strings as-is, integers without
 * ".0", true/false, null -> "". Returns 0 on success, -1 for objects/arrays. */
int mlc_json_scalar_text(const cJSON *item, char *out, size_t n);

/* Compact serialisation (caller frees). Aborts on OOM. */
char *mlc_json_print(const cJSON *item);
/* Append the compact text of item to b (the same text mlc_json_print gives). */
struct mlc_buf;
void mlc_json_write(struct mlc_buf *b, const cJSON *item);

/* Abort-on-OOM constructors used where failure cannot be handled usefully. */
cJSON *mlc_json_xobj(void);
cJSON *mlc_json_xarr(void);
void mlc_json_xadd_str(cJSON *obj, const char *key, const char *val);
void mlc_json_xadd_num(cJSON *obj, const char *key, double val);
void mlc_json_xadd(cJSON *obj, const char *key, cJSON *item); /* takes item */

#endif
