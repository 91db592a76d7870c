/* SPDX-License-Identifier: Apache-2.0
 * mlc_json: lookup and construction helpers over cJSON.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
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
    if (cJSON_IsString(item) || cJSON_IsBool(item)) {
        const char *s = cJSON_IsString(item) ? item->valuestring
                                             : cJSON_IsTrue(item) ? "true" : "false";
        size_t len = strlen(s);

        len = len < n - 1 ? len : n - 1; /* cut to fit, as snprintf would */
        memcpy(out, s, len);
        out[len] = '\0';
        return 0;
    }
    if (cJSON_IsNumber(item)) {
        double v = item->valuedouble;
        if (isfinite(v) && v == floor(v) && fabs(v) < 9.0e15) {
            /* "%.0f" of a whole number: its digits (and "-0" for minus zero) */
            char digits[24], *p = digits + sizeof(digits);
            unsigned long long u = (unsigned long long)fabs(v);
            size_t len;

            do {
                *--p = (char)('0' + u % 10);
                u /= 10;
            } while (u != 0);
            if (signbit(v)) {
                *--p = '-';
            }
            len = (size_t)(digits + sizeof(digits) - p);
            len = len < n - 1 ? len : n - 1;
            memcpy(out, p, len);
            out[len] = '\0';
        } else {
            snprintf(out, n, "%.15g", v);
        }
        return 0;
    }
    return -1;
}

/* The compact text, byte for byte as cJSON_PrintUnformatted (1.7) writes it:
 * content hashes are taken over this text, so it must not change between
 * versions. cJSON writes a number with "%1.15g", or "%1.17g" when that does
 * not read back; a whole number below 10^15 comes out of "%1.15g" as its
 * plain digits, so those (ids, quantities, dates: the common case) are
 * written here without printf. */
/* Nonzero when one of the 8 bytes of x is below 0x20, a quote or a
 * backslash: the bytes a JSON string cannot hold as they are. */
static inline uint64_t needs_escape8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');

    return ((x - ones * 0x20) | (q - ones) | (bs - ones)) & ~x & high;
}

static void put_str(struct mlc_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t len, i = 0, run = 0;

    mlc_buf_add(b, "\"", 1);
    if (s == NULL) {
        mlc_buf_add(b, "\"", 1);
        return;
    }
    len = strlen(s);
    while (i < len) {
        unsigned char c;
        char esc[6];
        size_t n = 2;

        /* eight plain bytes at a time (most text has nothing to escape) */
        while (i + 8 <= len) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (needs_escape8(x)) {
                break;
            }
            i += 8;
        }
        if (i >= len) {
            break;
        }
        c = (unsigned char)s[i];
        if (c >= 32 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        mlc_buf_add(b, s + run, i - run);
        run = ++i;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        mlc_buf_add(b, esc, n);
    }
    mlc_buf_add(b, s + run, len - run);
    mlc_buf_add(b, "\"", 1);
}

static void put_num(struct mlc_buf *b, const cJSON *item)
{
    double d = item->valuedouble;
    char text[32];
    int n;

    if (isnan(d) || isinf(d)) {
        mlc_buf_add(b, "null", 4);
        return;
    }
    if (d == floor(d) && fabs(d) < 1e15 && !(d == 0 && signbit(d))) {
        /* "%1.15g" writes such a number as its plain digits */
        long long v = (long long)d;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        char *p = text + sizeof(text);

        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u != 0);
        if (v < 0) {
            *--p = '-';
        }
        mlc_buf_add(b, p, (size_t)(text + sizeof(text) - p));
        return;
    }
    n = snprintf(text, sizeof(text), "%1.15g", d);
    {
        double back = 0;
        if (sscanf(text, "%lg", &back) != 1 ||
            fabs(back - d) > (fabs(back) > fabs(d) ? fabs(back) : fabs(d)) * DBL_EPSILON) {
            n = snprintf(text, sizeof(text), "%1.17g", d);
        }
    }
    mlc_buf_add(b, text, (size_t)n);
}

void mlc_json_write(struct mlc_buf *b, const cJSON *item)
{
    const cJSON *c;

    switch (item->type & 0xff) {
    case cJSON_NULL:
        mlc_buf_add(b, "null", 4);
        break;
    case cJSON_False:
        mlc_buf_add(b, "false", 5);
        break;
    case cJSON_True:
        mlc_buf_add(b, "true", 4);
        break;
    case cJSON_Number:
        put_num(b, item);
        break;
    case cJSON_Raw:
        if (item->valuestring != NULL) {
            mlc_buf_adds(b, item->valuestring);
        }
        break;
    case cJSON_String:
        put_str(b, item->valuestring);
        break;
    case cJSON_Array:
        mlc_buf_add(b, "[", 1);
        for (c = item->child; c != NULL; c = c->next) {
            mlc_json_write(b, c);
            if (c->next != NULL) {
                mlc_buf_add(b, ",", 1);
            }
        }
        mlc_buf_add(b, "]", 1);
        break;
    case cJSON_Object:
        mlc_buf_add(b, "{", 1);
        for (c = item->child; c != NULL; c = c->next) {
            put_str(b, c->string);
            mlc_buf_add(b, ":", 1);
            mlc_json_write(b, c);
            if (c->next != NULL) {
                mlc_buf_add(b, ",", 1);
            }
        }
        mlc_buf_add(b, "}", 1);
        break;
    default:
        MLC_BUG("cannot write a cJSON item of type %d", item->type);
    }
}

char *mlc_json_print(const cJSON *item)
{
    struct mlc_buf b = MLC_BUF_INIT;

    /* most records print to under a kilobyte: one allocation, no regrowth */
    b.ptr = mlc_xmalloc(1024);
    b.cap = 1024;
    b.ptr[0] = '\0';
    mlc_json_write(&b, item);
    return mlc_buf_detach(&b);
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
