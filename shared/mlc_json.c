/* SPDX-License-Identifier: Apache-2.0
 * mlc_json: lookup and construction helpers over cJSON.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"

cJSON *mlc_json_parse(const char *buf, size_t len, const char *what, struct mlc_errbuf *err)
{
    const char *end = NULL;
    cJSON *root;

    if (buf == NULL || len == 0) {
        mlc_errf(err, "%s: empty body where JSON was expected", what);
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (root == NULL) {
        size_t at = (end && end >= buf && end <= buf + len) ? (size_t)(end - buf) : 0;
        mlc_errf(err, "%s: invalid JSON near byte %zu of %zu", what, at, len);
    }
    return root;
}

const char *mlc_json_str(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(it) ? it->valuestring : NULL;
}

double mlc_json_num(const cJSON *obj, const char *key, double fallback)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsNumber(it) ? it->valuedouble : fallback;
}

int mlc_json_bool(const cJSON *obj, const char *key, int fallback)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsBool(it)) {
        return cJSON_IsTrue(it);
    }
    return fallback;
}

const cJSON *mlc_json_obj(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsObject(it) ? it : NULL;
}

const cJSON *mlc_json_arr(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsArray(it) ? it : NULL;
}

const cJSON *mlc_json_path(const cJSON *root, const char *path)
{
    char name[128];
    const cJSON *cur = root;
    const char *p = path;

    while (cur != NULL && *p) {
        size_t n = 0;
        while (*p && *p != '.' && *p != '[' && n + 1 < sizeof(name)) {
            name[n++] = *p++;
        }
        name[n] = '\0';
        if (n > 0) {
            cur = cJSON_GetObjectItemCaseSensitive(cur, name);
        }
        while (cur != NULL && *p == '[') {
            char *end;
            long idx = strtol(p + 1, &end, 10);
            if (*end != ']' || idx < 0) {
                return NULL;
            }
            cur = cJSON_GetArrayItem(cur, (int)idx);
            p = end + 1;
        }
        if (*p == '.') {
            p++;
        }
    }
    return cur;
}

int mlc_json_scalar_text(const cJSON *item, char *out, size_t n)
{
    if (n == 0) {
        return -1;
    }
    out[0] = '\0';
    if (item == NULL || cJSON_IsNull(item)) {
        return 0;
    }
    if (cJSON_IsString(item)) {
        snprintf(out, n, "%s", item->valuestring);
        return 0;
    }
    if (cJSON_IsBool(item)) {
        snprintf(out, n, "%s", cJSON_IsTrue(item) ? "true" : "false");
        return 0;
    }
    if (cJSON_IsNumber(item)) {
        double v = item->valuedouble;
        if (isfinite(v) && v == floor(v) && fabs(v) < 9.0e15) {
            snprintf(out, n, "%.0f", v);
        } else {
            snprintf(out, n, "%.15g", v);
        }
        return 0;
    }
    return -1;
}

char *mlc_json_print(const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);

    if (s == NULL) {
        MLC_BUG("cJSON_PrintUnformatted failed (out of memory?)");
    }
    return s;
}

cJSON *mlc_json_xobj(void)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL) {
        MLC_BUG("out of memory creating a JSON object");
    }
    return o;
}

cJSON *mlc_json_xarr(void)
{
    cJSON *o = cJSON_CreateArray();

    if (o == NULL) {
        MLC_BUG("out of memory creating a JSON array");
    }
    return o;
}

void mlc_json_xadd(cJSON *obj, const char *key, cJSON *item)
{
    if (item == NULL || !cJSON_AddItemToObject(obj, key, item)) {
        MLC_BUG("out of memory adding JSON member '%s'", key);
    }
}

void mlc_json_xadd_str(cJSON *obj, const char *key, const char *val)
{
    mlc_json_xadd(obj, key, cJSON_CreateString(val));
}

void mlc_json_xadd_num(cJSON *obj, const char *key, double val)
{
    mlc_json_xadd(obj, key, cJSON_CreateNumber(val));
}
