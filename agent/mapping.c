/* SPDX-License-Identifier: Apache-2.0
 * mapping: compile and apply per-customer field mappings.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/mapping.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_date.h"
#include "shared/mlc_json.h"

enum rule_kind { R_TEMPLATE, R_FROM, R_CONST, R_LIST, R_ITEMS };
enum date_kind { D_NONE, D_YYYYMMDD, D_JULIAN };
enum case_kind { C_NONE, C_UPPER, C_LOWER };

struct rule {
    char *field;
    enum rule_kind kind;
    char *text;          /* template, const, or column for R_FROM */
    const cJSON *map;    /* lent from spec */
    char *dflt;
    enum date_kind date;
    enum case_kind cas;
    int decimals; /* -1: none; else implied decimal places of an integer text */
    int required;
    long max;
    char **items; /* R_LIST templates; R_FROM with a list: the columns, first non-empty wins */
    int n_items;
    const cJSON *objs; /* R_ITEMS: array of objects of member -> template (lent from spec) */
    char *each;        /* R_ITEMS: the column holding an array of objects, or NULL */
};

struct mapping {
    cJSON *spec; /* our own copy: rules lend from it */
    struct rule *rules;
    int n;
    const char **names;
};

/* Validate a template's {COLUMN} references. */
static int template_check(const char *t, const char *path, struct mlc_errbuf *err)
{
    for (const char *p = t; *p; p++) {
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (e == NULL || e == p + 1) {
                mlc_errf(err, "%s: unbalanced or empty {} in template \"%s\"", path, t);
                return -1;
            }
            for (const char *q = p + 1; q < e; q++) {
                if (!isalnum((unsigned char)*q) && *q != '_') {
                    mlc_errf(err, "%s: '{%.*s}' is not a column name", path, (int)(e - p - 1), p + 1);
                    return -1;
                }
            }
            p = e;
        }
    }
    return 0;
}

static void column_text(const cJSON *row, const char *col, char *out, size_t n)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(row, col);

    if (mlc_json_scalar_text(it, out, n) != 0) {
        out[0] = '\0';
    }
    mlc_strip(out);
}

/* Expand template t against row into b; *filled (may be NULL) becomes 1
 * when a placeholder gave a non-empty value. */
static void expand_into(const char *t, const cJSON *row, struct mlc_buf *b, int *filled)
{
    for (const char *p = t; *p; p++) {
        const char *e;
        if (*p != '{') {
            /* the literal text up to the next brace, in one piece */
            size_t n = strcspn(p, "{");
            mlc_buf_add(b, p, n);
            p += n - 1;
        } else if ((e = strchr(p, '}')) != NULL) {
            char col[64], val[1024];
            size_t n = (size_t)(e - p - 1);
            if (n >= sizeof(col)) {
                n = sizeof(col) - 1;
            }
            memcpy(col, p + 1, n);
            col[n] = '\0';
            column_text(row, col, val, sizeof(val));
            mlc_buf_adds(b, val);
            if (filled != NULL && val[0] != '\0') {
                *filled = 1;
            }
            p = e;
        } else {
            mlc_buf_add(b, p, 1);
        }
    }
}

static void expand(const char *t, const cJSON *row, struct mlc_buf *b)
{
    expand_into(t, row, b, NULL);
}

static void rule_release(struct rule *r)
{
    free(r->field);
    free(r->text);
    free(r->dflt);
    free(r->each);
    for (int i = 0; i < r->n_items; i++) {
        free(r->items[i]);
    }
    free(r->items);
}

void mapping_free(struct mapping *m)
{
    if (m == NULL) {
        return;
    }
    for (int i = 0; i < m->n; i++) {
        rule_release(&m->rules[i]);
    }
    free(m->rules);
    free(m->names);
    cJSON_Delete(m->spec);
    free(m);
}

static int compile_rule(struct rule *r, const cJSON *v, const char *path, struct mlc_errbuf *err)
{
    static const char *const known[] = { "from", "map", "default", "date", "template", "case",
                                         "const", "list", "required", "max", "items", "each",
                                         "decimals", NULL };
    const cJSON *it;
    const char *s;

    r->decimals = -1;
    if (cJSON_IsString(v)) {
        r->kind = R_TEMPLATE;
        r->text = mlc_xstrdup(v->valuestring);
        return template_check(r->text, path, err);
    }
    if (!cJSON_IsObject(v)) {
        mlc_errf(err, "%s: expected a template string or a rule object", path);
        return -1;
    }
    cJSON_ArrayForEach(it, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++) {
            ok |= strcmp(known[i], it->string) == 0;
        }
        if (!ok) {
            mlc_errf(err, "%s.%s: unknown rule key (known: from, map, default, date, decimals, "
                     "template, case, const, list, items, each, required, max)", path, it->string);
            return -1;
        }
    }
    if ((s = mlc_json_str(v, "from")) != NULL) {
        r->kind = R_FROM;
        r->text = mlc_xstrdup(s);
    } else if ((it = mlc_json_arr(v, "from")) != NULL) {
        /* the first of several columns that has a value (an e-mail, else a user name) */
        const cJSON *e;
        int n = cJSON_GetArraySize(it);
        if (n == 0) {
            mlc_errf(err, "%s.from: expected a column name or a non-empty list of them", path);
            return -1;
        }
        r->kind = R_FROM;
        r->items = mlc_xcalloc((size_t)n + 1, sizeof(char *));
        cJSON_ArrayForEach(e, it)
        {
            if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
                mlc_errf(err, "%s.from: entries must be column names", path);
                return -1;
            }
            r->items[r->n_items++] = mlc_xstrdup(e->valuestring);
        }
        r->text = mlc_xstrdup(r->items[0]);
    } else if (cJSON_GetObjectItemCaseSensitive(v, "from") != NULL) {
        mlc_errf(err, "%s.from: expected a column name or a list of them", path);
        return -1;
    } else if ((s = mlc_json_str(v, "template")) != NULL) {
        r->kind = R_TEMPLATE;
        r->text = mlc_xstrdup(s);
        if (template_check(s, path, err) != 0) {
            return -1;
        }
    } else if ((s = mlc_json_str(v, "const")) != NULL) {
        r->kind = R_CONST;
        r->text = mlc_xstrdup(s);
    } else if ((it = mlc_json_arr(v, "list")) != NULL) {
        const cJSON *e;
        r->kind = R_LIST;
        r->items = mlc_xcalloc((size_t)cJSON_GetArraySize(it) + 1, sizeof(char *));
        cJSON_ArrayForEach(e, it)
        {
            if (!cJSON_IsString(e) || template_check(e->valuestring, path, err) != 0) {
                mlc_errf(err, "%s.list: entries must be template strings", path);
                return -1;
            }
            r->items[r->n_items++] = mlc_xstrdup(e->valuestring);
        }
    } else if ((it = cJSON_GetObjectItemCaseSensitive(v, "items")) != NULL) {
        /* a list of objects (e.g. comments {"id", "text"}): each object's
         * members are templates, expanded against the row, or against each
         * element of the array in column "each" */
        const cJSON *o, *e;
        if (cJSON_IsObject(it)) {
            cJSON *arr = mlc_json_xarr();
            cJSON_AddItemToArray(arr, cJSON_Duplicate(it, 1));
            cJSON_ReplaceItemInObjectCaseSensitive((cJSON *)v, "items", arr);
            it = arr;
        }
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) == 0) {
            mlc_errf(err, "%s.items: expected an object of member -> template, or an array of them",
                     path);
            return -1;
        }
        cJSON_ArrayForEach(o, it)
        {
            if (!cJSON_IsObject(o) || cJSON_GetArraySize(o) == 0) {
                mlc_errf(err, "%s.items: expected an object of member -> template, or an array "
                         "of them", path);
                return -1;
            }
            cJSON_ArrayForEach(e, o)
            {
                if (!cJSON_IsString(e)) {
                    mlc_errf(err, "%s.items.%s: expected a template string", path, e->string);
                    return -1;
                }
                if (template_check(e->valuestring, path, err) != 0) {
                    return -1;
                }
            }
        }
        r->kind = R_ITEMS;
        r->objs = it;
        if ((it = cJSON_GetObjectItemCaseSensitive(v, "each")) != NULL) {
            if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
                mlc_errf(err, "%s.each: expected the name of a column holding a list of objects",
                         path);
                return -1;
            }
            r->each = mlc_xstrdup(it->valuestring);
        }
    } else {
        mlc_errf(err, "%s: a rule needs one of \"from\", \"template\", \"const\", \"list\" or "
                 "\"items\"", path);
        return -1;
    }
    if (r->kind != R_ITEMS && cJSON_GetObjectItemCaseSensitive(v, "each") != NULL) {
        mlc_errf(err, "%s.each: only an \"items\" rule reads a list column", path);
        return -1;
    }
    it = cJSON_GetObjectItemCaseSensitive(v, "map");
    if (it != NULL) {
        const cJSON *e;
        if (!cJSON_IsObject(it)) {
            mlc_errf(err, "%s.map: expected an object of source value -> target value", path);
            return -1;
        }
        cJSON_ArrayForEach(e, it)
        {
            if (!cJSON_IsString(e)) {
                mlc_errf(err, "%s.map.%s: expected a string value", path, e->string);
                return -1;
            }
        }
        r->map = it;
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(v, "default")) != NULL) {
        if (!cJSON_IsString(it)) {
            mlc_errf(err, "%s.default: expected a string", path);
            return -1;
        }
        r->dflt = mlc_xstrdup(it->valuestring);
    }
    if ((s = mlc_json_str(v, "date")) != NULL) {
        if (strcmp(s, "yyyymmdd") == 0) {
            r->date = D_YYYYMMDD;
        } else if (strcmp(s, "julian") == 0) {
            r->date = D_JULIAN;
        } else {
            mlc_errf(err, "%s.date: '%s' is not one of yyyymmdd, julian", path, s);
            return -1;
        }
    }
    if ((s = mlc_json_str(v, "case")) != NULL) {
        if (strcmp(s, "upper") == 0) {
            r->cas = C_UPPER;
        } else if (strcmp(s, "lower") == 0) {
            r->cas = C_LOWER;
        } else {
            mlc_errf(err, "%s.case: '%s' is not one of upper, lower", path, s);
            return -1;
        }
    }
    if ((it = cJSON_GetObjectItemCaseSensitive(v, "decimals")) != NULL) {
        if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble ||
            it->valuedouble < 0 || it->valuedouble > 18) {
            mlc_errf(err, "%s.decimals: expected a whole number of implied decimal places, 0 to 18",
                     path);
            return -1;
        }
        if (r->date != D_NONE || r->kind == R_ITEMS) {
            mlc_errf(err, "%s.decimals: cannot be combined with %s", path,
                     r->date != D_NONE ? "\"date\"" : "\"items\"");
            return -1;
        }
        r->decimals = (int)it->valuedouble;
    }
    r->required = mlc_json_bool(v, "required", 0);
    it = cJSON_GetObjectItemCaseSensitive(v, "max");
    if (it != NULL) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 1 || it->valuedouble > 1e6) {
            mlc_errf(err, "%s.max: expected a positive byte count", path);
            return -1;
        }
        r->max = (long)it->valuedouble;
    }
    return 0;
}

struct mapping *mapping_compile(const cJSON *spec, const char *path, struct mlc_errbuf *err)
{
    struct mapping *m;
    const cJSON *it;
    char sub[256];
    int i = 0;

    if (!cJSON_IsObject(spec) || cJSON_GetArraySize(spec) == 0) {
        mlc_errf(err, "%s: expected a non-empty object of target field -> rule", path);
        return NULL;
    }
    m = mlc_xcalloc(1, sizeof(*m));
    m->spec = cJSON_Duplicate(spec, 1);
    if (m->spec == NULL) {
        MLC_BUG("out of memory copying the mapping");
    }
    m->n = cJSON_GetArraySize(m->spec);
    m->rules = mlc_xcalloc((size_t)m->n, sizeof(*m->rules));
    m->names = mlc_xcalloc((size_t)m->n, sizeof(*m->names));
    cJSON_ArrayForEach(it, m->spec)
    {
        struct rule *r = &m->rules[i];
        snprintf(sub, sizeof(sub), "%s.%s", path, it->string);
        r->field = mlc_xstrdup(it->string);
        m->names[i] = r->field;
        i++;
        if (compile_rule(r, it, sub, err) != 0) {
            mapping_free(m);
            return NULL;
        }
    }
    return m;
}

static void truncate_utf8(char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max) {
        return;
    }
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    s[n] = '\0';
}

/* An integer text with places implied decimals (how some ERPs store
 * amounts) as a decimal text, in place: "-123456" with 2 -> "-1234.56", "5"
 * with 2 -> "0.05", "7" with 0 -> "7". Leading zeros and a '+' go, and minus
 * zero is plain zero ("-000" with 2 -> "0.00"). 0, or -1 when v is not an
 * optionally signed run of digits (at most 60) or the result does not fit n. */
static int implied_decimals(char *v, size_t n, int places)
{
    const char *p = v;
    char digits[64], out[96];
    size_t nd = 0, o = 0;
    int neg = 0;

    if (*p == '+' || *p == '-') {
        neg = *p == '-';
        p++;
    }
    if (*p == '\0') {
        return -1;
    }
    for (; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        if (nd == 0 && *p == '0') {
            continue; /* leading zero */
        }
        if (nd + 1 >= sizeof(digits)) {
            return -1;
        }
        digits[nd++] = *p;
    }
    /* at least places + 1 digits: pad with leading zeros */
    while (nd < (size_t)places + 1) {
        if (nd + 1 >= sizeof(digits)) {
            return -1;
        }
        memmove(digits + 1, digits, nd);
        digits[0] = '0';
        nd++;
    }
    if (neg) {
        int nonzero = 0;
        for (size_t i = 0; i < nd; i++) {
            nonzero |= digits[i] != '0';
        }
        if (nonzero) {
            out[o++] = '-';
        }
    }
    memcpy(out + o, digits, nd - (size_t)places);
    o += nd - (size_t)places;
    if (places > 0) {
        out[o++] = '.';
        memcpy(out + o, digits + nd - (size_t)places, (size_t)places);
        o += (size_t)places;
    }
    out[o] = '\0';
    if (o + 1 > n) {
        return -1;
    }
    memcpy(v, out, o + 1);
    return 0;
}

static int convert(const struct rule *r, char *v, size_t n, struct mlc_errbuf *err)
{
    struct mlc_ymd d;

    if (r->map != NULL && v[0] != '\0') {
        const char *mapped = mlc_json_str(r->map, v);
        if (mapped != NULL) {
            snprintf(v, n, "%s", mapped);
        } else if (r->dflt != NULL) {
            snprintf(v, n, "%s", r->dflt);
        }
    }
    if (v[0] == '\0' && r->dflt != NULL) {
        snprintf(v, n, "%s", r->dflt);
    }
    if (r->date != D_NONE && v[0] != '\0') {
        int ok;
        if (r->date == D_JULIAN) {
            char *end;
            long j = strtol(v, &end, 10);
            ok = *end == '\0' && j != 0 && mlc_julian_to_ymd(j, &d) == 0;
        } else {
            ok = mlc_yyyymmdd_parse(v, &d) == 0;
        }
        if (strcmp(v, "0") == 0 || strcmp(v, "00000000") == 0) {
            v[0] = '\0'; /* a zero date is "no date" */
        } else if (!ok) {
            mlc_errf(err, "field '%s': '%s' is not a valid %s date", r->field, v,
                     r->date == D_JULIAN ? "Julian (CYYDDD)" : "yyyyMMdd");
            return -1;
        } else {
            char iso[11];
            mlc_ymd_iso(&d, iso);
            snprintf(v, n, "%s", iso);
        }
    }
    if (r->decimals >= 0 && v[0] != '\0' && implied_decimals(v, n, r->decimals) != 0) {
        mlc_errf(err, "field '%s': '%.64s' is not a whole number (an amount stored with %d implied "
                 "decimals was expected; check the column the rule reads)", r->field, v, r->decimals);
        return -1;
    }
    for (char *p = v; *p && r->cas != C_NONE; p++) {
        *p = (char)(r->cas == C_UPPER ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
    }
    if (r->max > 0) {
        truncate_utf8(v, (size_t)r->max);
    }
    return 0;
}

/* The objects of an R_ITEMS rule for one row (or list element) into arr;
 * an object none of whose placeholders has a value is left out (its literal
 * text alone is no item). */
static void items_add(const struct rule *r, const cJSON *row, cJSON *arr)
{
    const cJSON *o, *e;

    cJSON_ArrayForEach(o, r->objs)
    {
        cJSON *obj = mlc_json_xobj();
        int any = 0;
        cJSON_ArrayForEach(e, o)
        {
            struct mlc_buf b = MLC_BUF_INIT;
            char *t;
            expand_into(e->valuestring, row, &b, &any);
            t = mlc_buf_detach(&b);
            mlc_strip(t);
            mlc_json_xadd_str(obj, e->string, t);
            free(t);
        }
        if (any) {
            cJSON_AddItemToArray(arr, obj);
        } else {
            cJSON_Delete(obj);
        }
    }
}

cJSON *mapping_apply(const struct mapping *m, const cJSON *row, struct mlc_errbuf *err)
{
    cJSON *out = mlc_json_xobj();
    char v[4096];

    for (int i = 0; i < m->n; i++) {
        const struct rule *r = &m->rules[i];
        if (r->kind == R_ITEMS) {
            cJSON *arr = mlc_json_xarr();
            if (r->each == NULL) {
                items_add(r, row, arr);
            } else {
                const cJSON *list = cJSON_GetObjectItemCaseSensitive(row, r->each), *el;
                if (!cJSON_IsArray(list)) {
                    list = NULL;
                }
                cJSON_ArrayForEach(el, list)
                {
                    if (cJSON_IsObject(el)) {
                        items_add(r, el, arr);
                    }
                }
            }
            if (r->required && cJSON_GetArraySize(arr) == 0) {
                cJSON_Delete(arr);
                mlc_errf(err, "field '%s' is required but the source gave no items", r->field);
                goto fail;
            }
            mlc_json_xadd(out, r->field, arr);
            continue;
        }
        if (r->kind == R_LIST) {
            cJSON *arr = mlc_json_xarr();
            for (int k = 0; k < r->n_items; k++) {
                struct mlc_buf b = MLC_BUF_INIT;
                expand(r->items[k], row, &b);
                snprintf(v, sizeof(v), "%s", mlc_buf_str(&b));
                mlc_buf_release(&b);
                mlc_strip(v);
                if (convert(r, v, sizeof(v), err) != 0) {
                    cJSON_Delete(arr);
                    goto fail;
                }
                if (v[0] != '\0') {
                    cJSON_AddItemToArray(arr, cJSON_CreateString(v));
                }
            }
            mlc_json_xadd(out, r->field, arr);
            continue;
        }
        if (r->kind == R_FROM) {
            column_text(row, r->text, v, sizeof(v));
            for (int k = 1; v[0] == '\0' && k < r->n_items; k++) {
                column_text(row, r->items[k], v, sizeof(v));
            }
        } else if (r->kind == R_CONST) {
            snprintf(v, sizeof(v), "%s", r->text);
        } else {
            struct mlc_buf b = MLC_BUF_INIT;
            expand(r->text, row, &b);
            snprintf(v, sizeof(v), "%s", mlc_buf_str(&b));
            mlc_buf_release(&b);
            mlc_rstrip(v);
        }
        if (convert(r, v, sizeof(v), err) != 0) {
            goto fail;
        }
        if (v[0] == '\0') {
            if (r->required) {
                mlc_errf(err, "field '%s' is required but the source gave an empty value", r->field);
                goto fail;
            }
            continue;
        }
        mlc_json_xadd_str(out, r->field, v);
    }
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

const char *const *mapping_fields(const struct mapping *m, int *n)
{
    *n = m->n;
    return m->names;
}

cJSON *mapping_values(const struct mapping *m, const char *field)
{
    cJSON *arr = mlc_json_xarr();

    for (int i = 0; i < m->n; i++) {
        const struct rule *r = &m->rules[i];
        const cJSON *e;
        if (strcmp(r->field, field) != 0) {
            continue;
        }
        cJSON_ArrayForEach(e, r->map)
        {
            cJSON_AddItemToArray(arr, cJSON_CreateString(e->valuestring));
        }
        if (r->dflt) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(r->dflt));
        }
        if (r->kind == R_CONST) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(r->text));
        }
    }
    return arr;
}

static const struct rule *rule_of(const struct mapping *m, const char *field)
{
    for (int i = 0; i < m->n; i++) {
        if (strcmp(m->rules[i].field, field) == 0) {
            return &m->rules[i];
        }
    }
    return NULL;
}

const char *mapping_source_column(const struct mapping *m, const char *field)
{
    const struct rule *r = rule_of(m, field);

    if (r == NULL || r->kind != R_FROM || r->n_items > 1 || r->cas != C_NONE || r->max > 0 ||
        r->decimals >= 0) {
        return NULL;
    }
    return r->text;
}

int mapping_reverse(const struct mapping *m, const char *field, const char *value, char *out,
                    size_t n, struct mlc_errbuf *err)
{
    const struct rule *r = rule_of(m, field);
    struct mlc_ymd d;

    if (mapping_source_column(m, field) == NULL) {
        mlc_errf(err, "field '%s' is not read from one source column", field);
        return -1;
    }
    snprintf(out, n, "%s", value);
    if (r->date != D_NONE) {
        if (value[0] == '\0') {
            return 0; /* the date was cleared */
        }
        if (strlen(value) != 10 || value[4] != '-' || value[7] != '-' ||
            mlc_yyyymmdd_parse((char[]){ value[0], value[1], value[2], value[3], value[5],
                                         value[6], value[8], value[9], '\0' },
                               &d) != 0) {
            mlc_errf(err, "'%s' is not a date (YYYY-MM-DD)", value);
            return -1;
        }
        if (r->date == D_JULIAN) {
            snprintf(out, n, "%ld", mlc_ymd_to_julian(&d));
        } else {
            snprintf(out, n, "%04d%02d%02d", d.y, d.m, d.d);
        }
        return 0;
    }
    if (r->map != NULL) {
        const cJSON *e;
        cJSON_ArrayForEach(e, r->map)
        {
            if (cJSON_IsString(e) && strcmp(e->valuestring, value) == 0) {
                snprintf(out, n, "%s", e->string);
                return 0;
            }
        }
        cJSON_ArrayForEach(e, r->map)
        {
            if (cJSON_IsString(e) && strcasecmp(e->valuestring, value) == 0) {
                snprintf(out, n, "%s", e->string);
                return 0;
            }
        }
        mlc_errf(err, "no source value of '%s' maps to '%s' (the mapping's map lists the values)",
                 r->text, value);
        return -1;
    }
    return 0;
}
