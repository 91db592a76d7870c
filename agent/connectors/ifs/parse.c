/* SPDX-License-Identifier: Apache-2.0
 * ifs parse: the IFS connector's pure parts (see ifs.h). Nothing here
 * reaches the network; every input may be hostile (fuzzed).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "agent/connectors/ifs/ifs.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"

/* ---------------------------------------------------------------- cursors */

/* A key or change value usable in a cursor: a string or an integral number. */
static int part_ok(const cJSON *v)
{
    if (cJSON_IsString(v)) {
        return v->valuestring[0] != '\0' && strlen(v->valuestring) < 256;
    }
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && fabs(v->valuedouble) < 1e15 &&
           v->valuedouble == floor(v->valuedouble);
}

char *ifs_cursor_make(const cJSON *row, const struct ifs_shape *sh)
{
    cJSON *arr;
    char *s;

    if (sh->changed == NULL || !cJSON_IsObject(row)) {
        return NULL;
    }
    arr = mlc_json_xarr();
    for (int i = -1; i < sh->n_keys; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, i < 0 ? sh->changed : sh->keys[i]);
        cJSON *cp;
        if (!part_ok(v) || (i < 0 && !cJSON_IsString(v))) {
            cJSON_Delete(arr);
            return NULL;
        }
        cp = cJSON_Duplicate(v, 0);
        if (cp == NULL) {
            MLC_BUG("out of memory copying a cursor part");
        }
        cJSON_AddItemToArray(arr, cp);
    }
    s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (s == NULL) {
        MLC_BUG("out of memory printing a cursor");
    }
    return s;
}

cJSON *ifs_cursor_parse(const char *s, const struct ifs_shape *sh)
{
    cJSON *arr;
    const cJSON *it;
    int i = 0;

    if (s == NULL || s[0] != '[') {
        return NULL;
    }
    arr = cJSON_Parse(s);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != sh->n_keys + 1) {
        cJSON_Delete(arr);
        return NULL;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if (!part_ok(it) || (i == 0 && (!cJSON_IsString(it) || ifs_time_ms(it->valuestring) < 0))) {
            cJSON_Delete(arr);
            return NULL;
        }
        i++;
    }
    return arr;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

long long ifs_time_ms(const char *s)
{
    struct tm tm = { 0 };
    int y, mo, d, h = 0, mi = 0, se = 0, ms = 0, off = 0;
    const char *p;

    if (s == NULL || strlen(s) < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
        s[7] != '-' || digits(s + 8, 2, &d)) {
        return -1;
    }
    if (y < 1900 || mo < 1 || mo > 12 || d < 1 || d > 31) {
        return -1;
    }
    p = s + 10;
    if (*p == 'T' || *p == ' ') {
        if (strlen(p) < 6 || digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &mi)) {
            return -1;
        }
        p += 6;
        if (*p == ':') {
            if (digits(p + 1, 2, &se)) {
                return -1;
            }
            p += 3;
        }
        if (*p == '.') {
            int k = 0;
            for (p++; isdigit((unsigned char)*p); p++, k++) {
                if (k < 3) {
                    ms = ms * 10 + (*p - '0');
                }
            }
            if (k == 0) {
                return -1;
            }
            for (; k < 3; k++) {
                ms *= 10;
            }
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            if (strlen(p) < 6 || digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) ||
                oh > 23 || om > 59) {
                return -1;
            }
            off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
            p += 6;
        }
    }
    if (*p != '\0' || h > 23 || mi > 59 || se > 60) {
        return -1;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    return ((long long)timegm(&tm) - off) * 1000 + ms;
}

/* --------------------------------------------------------------- literals */

int ifs_literal(struct mlc_buf *b, const cJSON *v, int as_date)
{
    if (as_date) {
        if (!cJSON_IsString(v) || ifs_time_ms(v->valuestring) < 0) {
            return -1;
        }
        mlc_buf_adds(b, v->valuestring);
        return 0;
    }
    if (cJSON_IsString(v)) {
        mlc_buf_adds(b, "'");
        for (const char *p = v->valuestring; *p; p++) {
            mlc_buf_add(b, p, 1);
            if (*p == '\'') {
                mlc_buf_add(b, p, 1);
            }
        }
        mlc_buf_adds(b, "'");
        return 0;
    }
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
        if (v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e15) {
            mlc_buf_addf(b, "%.0f", v->valuedouble);
        } else {
            mlc_buf_addf(b, "%.17g", v->valuedouble);
        }
        return 0;
    }
    if (cJSON_IsBool(v)) {
        mlc_buf_adds(b, cJSON_IsTrue(v) ? "true" : "false");
        return 0;
    }
    return -1;
}

static int number_text(const char *s)
{
    char *end;

    if (s == NULL || s[0] == '\0' || strlen(s) > 18) {
        return 0;
    }
    (void)strtoll(s, &end, 10);
    return *end == '\0';
}

int ifs_key_predicate(struct mlc_buf *b, const struct ifs_shape *sh, const int *numeric,
                      const char *key)
{
    const char *p = key;

    if (key == NULL || sh->n_keys < 1) {
        return -1;
    }
    mlc_buf_adds(b, "(");
    for (int i = 0; i < sh->n_keys; i++) {
        const char *bar = i + 1 < sh->n_keys ? strchr(p, '|') : NULL;
        size_t n = bar != NULL ? (size_t)(bar - p) : strlen(p);
        char part[256];
        cJSON *v;
        int rc;

        if ((i + 1 < sh->n_keys && bar == NULL) || n == 0 || n >= sizeof(part) ||
            (i + 1 == sh->n_keys && strchr(p, '|') != NULL && sh->n_keys > 1)) {
            return -1;
        }
        memcpy(part, p, n);
        part[n] = '\0';
        if (numeric != NULL && numeric[i]) {
            if (!number_text(part)) {
                return -1;
            }
            mlc_buf_addf(b, "%s%s=%s", i ? "," : "", sh->keys[i], part);
        } else {
            v = cJSON_CreateString(part);
            if (v == NULL) {
                MLC_BUG("out of memory");
            }
            mlc_buf_addf(b, "%s%s=", i ? "," : "", sh->keys[i]);
            rc = ifs_literal(b, v, 0);
            cJSON_Delete(v);
            if (rc != 0) {
                return -1;
            }
        }
        p = bar != NULL ? bar + 1 : p + n;
    }
    mlc_buf_adds(b, ")");
    return 0;
}

/* (K_i gt v_i or (K_i eq v_i and <rest>)) for the keys from i on. */
static int after_keys(struct mlc_buf *b, const struct ifs_shape *sh, const cJSON *cur, int i)
{
    const cJSON *v = cJSON_GetArrayItem(cur, i + 1);

    if (v == NULL) {
        return -1;
    }
    mlc_buf_addf(b, "%s gt ", sh->keys[i]);
    if (ifs_literal(b, v, 0) != 0) {
        return -1;
    }
    if (i + 1 < sh->n_keys) {
        mlc_buf_addf(b, " or (%s eq ", sh->keys[i]);
        if (ifs_literal(b, v, 0) != 0) {
            return -1;
        }
        mlc_buf_adds(b, " and (");
        if (after_keys(b, sh, cur, i + 1) != 0) {
            return -1;
        }
        mlc_buf_adds(b, "))");
    }
    return 0;
}

int ifs_after_filter(struct mlc_buf *b, const struct ifs_shape *sh, const cJSON *cur)
{
    const cJSON *c0 = cJSON_GetArrayItem(cur, 0);

    if (!cJSON_IsArray(cur) || cJSON_GetArraySize(cur) != sh->n_keys + 1 || sh->changed == NULL) {
        return -1;
    }
    mlc_buf_addf(b, "(%s gt ", sh->changed);
    if (ifs_literal(b, c0, 1) != 0) {
        return -1;
    }
    mlc_buf_addf(b, " or (%s eq ", sh->changed);
    ifs_literal(b, c0, 1);
    mlc_buf_adds(b, " and (");
    if (after_keys(b, sh, cur, 0) != 0) {
        return -1;
    }
    mlc_buf_adds(b, ")))");
    return 0;
}

/* ------------------------------------------------------------------ pages */

enum mlc_rc ifs_parse_page(const char *body, size_t len, const struct ifs_shape *sh,
                           struct page *out, char **next_link, size_t *count,
                           struct mlc_errbuf *err)
{
    cJSON *root, *value, *row, *next;
    const cJSON *nl;

    *next_link = NULL;
    *count = 0;
    root = mlc_json_parse(body, len, "IFS OData answer", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    if (!cJSON_IsObject(root)) {
        mlc_errf(err, "IFS OData answer is not a JSON object");
        cJSON_Delete(root);
        return MLC_E_PROTO;
    }
    value = cJSON_GetObjectItemCaseSensitive(root, "value");
    if (!cJSON_IsArray(value)) {
        mlc_errf(err, "IFS OData answer has no \"value\" array (is the entity set a collection?)");
        cJSON_Delete(root);
        return MLC_E_PROTO;
    }
    nl = cJSON_GetObjectItemCaseSensitive(root, "@odata.nextLink");
    if (nl != NULL && !cJSON_IsNull(nl)) {
        if (!cJSON_IsString(nl) || nl->valuestring[0] == '\0') {
            mlc_errf(err, "IFS OData answer has an @odata.nextLink that is not a link");
            cJSON_Delete(root);
            return MLC_E_PROTO;
        }
        *next_link = mlc_xstrdup(nl->valuestring);
    }
    for (row = value->child; row != NULL; row = next) {
        struct record *r = page_push(out);
        char key[512];
        struct mlc_buf kb = MLC_BUF_INIT;
        int bad = 0;

        next = row->next;
        (*count)++;
        if (!cJSON_IsObject(row)) {
            r->data = mlc_json_xobj();
            r->error = mlc_xstrdup("row is not a JSON object");
            continue;
        }
        cJSON_DetachItemViaPointer(value, row);
        r->data = row;
        for (int i = 0; i < sh->n_keys && !bad; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, sh->keys[i]);
            if (!part_ok(v) || mlc_json_scalar_text(v, key, sizeof(key)) != 0 ||
                (sh->n_keys > 1 && strchr(key, '|') != NULL)) {
                r->error = mlc_xasprintf("row has no usable key property %s", sh->keys[i]);
                bad = 1;
                break;
            }
            mlc_buf_addf(&kb, "%s%s", i ? "|" : "", key);
        }
        if (bad) {
            mlc_buf_release(&kb);
            continue;
        }
        r->key = mlc_buf_detach(&kb);
        if (r->key == NULL) {
            r->key = mlc_xstrdup("");
        }
        if (sh->changed != NULL) {
            r->cursor = ifs_cursor_make(row, sh);
            if (r->cursor == NULL) {
                const cJSON *cv = cJSON_GetObjectItemCaseSensitive(row, sh->changed);
                r->error = mlc_xasprintf("row %s has no usable %s (change date)%s", r->key,
                                         sh->changed,
                                         cv == NULL || cJSON_IsNull(cv) ? ": it is empty" : "");
            } else if (ifs_time_ms(cJSON_GetObjectItemCaseSensitive(row, sh->changed)->valuestring) <
                       0) {
                r->error = mlc_xasprintf("row %s has a %s that is not a date", r->key, sh->changed);
                free(r->cursor);
                r->cursor = NULL;
            }
        }
    }
    cJSON_Delete(root);
    return MLC_OK;
}

/* ----------------------------------------------------------------- errors */

static void copy_line(const char *s, size_t len, char *out, size_t n)
{
    size_t k = len < n - 1 ? len : n - 1;

    for (size_t i = 0; i < k; i++) {
        out[i] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    }
    out[k] = '\0';
}

int ifs_error_parse(const char *body, size_t len, char *code, size_t ncode, char *msg,
                    size_t nmsg)
{
    cJSON *root = body != NULL && len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = root != NULL ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    const char *c = NULL, *m = NULL, *dm = NULL;
    int found = 0;

    code[0] = msg[0] = '\0';
    if (cJSON_IsObject(e)) {
        const cJSON *det = mlc_json_arr(e, "details");
        c = mlc_json_str(e, "code");
        m = mlc_json_str(e, "message");
        if (det != NULL && cJSON_IsObject(det->child)) {
            dm = mlc_json_str(det->child, "message");
        }
        found = c != NULL || m != NULL;
    } else if (cJSON_IsString(e)) {
        c = e->valuestring; /* the token endpoint: {"error":"invalid_client",...} */
        m = mlc_json_str(root, "error_description");
        found = 1;
    }
    if (found) {
        snprintf(code, ncode, "%s", c != NULL ? c : "");
        if (m != NULL && dm != NULL && strcmp(m, dm) != 0) {
            snprintf(msg, nmsg, "%s (%s)", m, dm);
        } else {
            snprintf(msg, nmsg, "%s", m != NULL ? m : dm != NULL ? dm : "");
        }
        for (char *p = msg; *p; p++) {
            if ((unsigned char)*p < 0x20) {
                *p = ' ';
            }
        }
    } else if (body != NULL) {
        copy_line(body, len, msg, nmsg);
    }
    cJSON_Delete(root);
    return found ? 0 : -1;
}

/* --------------------------------------------------------------- metadata */

/* The first occurrence of needle in [p, end), or NULL. */
static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);

    for (; p != NULL && p + n <= end; p++) {
        if (*p == needle[0] && memcmp(p, needle, n) == 0) {
            return p;
        }
    }
    return NULL;
}

/* The value of attribute name in the tag starting at tag (up to its '>'). */
static int attr(const char *tag, const char *end, const char *name, char *out, size_t n)
{
    const char *gt = find(tag, end, ">"), *p = tag;
    size_t nl = strlen(name);

    out[0] = '\0';
    if (gt == NULL) {
        return -1;
    }
    while ((p = find(p, gt, name)) != NULL) {
        if (isspace((unsigned char)p[-1]) && p + nl + 1 < gt && p[nl] == '=' &&
            (p[nl + 1] == '"' || p[nl + 1] == '\'')) {
            const char *v = p + nl + 2, *q = v;
            while (q < gt && *q != p[nl + 1]) {
                q++;
            }
            if (q >= gt || (size_t)(q - v) >= n) {
                return -1;
            }
            memcpy(out, v, (size_t)(q - v));
            out[q - v] = '\0';
            return 0;
        }
        p += nl;
    }
    return -1;
}

/* Each tag "<name " in [p, end): calls fn until it returns nonzero. */
typedef int (*tag_fn)(const char *tag, const char *end, void *ctx);
static int each_tag(const char *p, const char *end, const char *open, tag_fn fn, void *ctx)
{
    while ((p = find(p, end, open)) != NULL) {
        int r = fn(p, end, ctx);
        if (r != 0) {
            return r;
        }
        p += strlen(open);
    }
    return 0;
}

struct set_find {
    const char *set;
    struct ifs_meta *m;
};

static int set_tag(const char *tag, const char *end, void *ctx)
{
    struct set_find *sf = ctx;
    char name[128], type[256];
    const char *dot;

    if (attr(tag, end, "Name", name, sizeof(name)) != 0 || strcmp(name, sf->set) != 0 ||
        attr(tag, end, "EntityType", type, sizeof(type)) != 0) {
        return 0;
    }
    dot = strrchr(type, '.');
    if (dot == NULL || dot == type || dot[1] == '\0' ||
        (size_t)(dot - type) >= sizeof(sf->m->ns)) {
        return -1;
    }
    memcpy(sf->m->ns, type, (size_t)(dot - type));
    sf->m->ns[dot - type] = '\0';
    snprintf(sf->m->type, sizeof(sf->m->type), "%s", dot + 1);
    return 1;
}

/* The body of <EntityType Name="type" ...> ... </EntityType>. */
static const char *type_body(const char *xml, const char *end, const char *type,
                             const char **body_end)
{
    const char *p = xml;
    char name[128];

    while ((p = find(p, end, "<EntityType ")) != NULL) {
        if (attr(p, end, "Name", name, sizeof(name)) == 0 && strcmp(name, type) == 0) {
            const char *close = find(p, end, "</EntityType>");
            *body_end = close != NULL ? close : end;
            return p;
        }
        p += 12;
    }
    return NULL;
}

struct prop_scan {
    struct ifs_meta *m;
    const char *want; /* NULL: collect Cf_ names */
    char *out;
    size_t n;
};

static int prop_tag(const char *tag, const char *end, void *ctx)
{
    struct prop_scan *ps = ctx;
    char name[128];

    if (attr(tag, end, "Name", name, sizeof(name)) != 0) {
        return 0;
    }
    if (ps->want == NULL) {
        if (strncasecmp(name, "Cf_", 3) == 0 && ps->m->n_cf < 16 && strlen(name) < 64) {
            snprintf(ps->m->cf_names[ps->m->n_cf++], 64, "%s", name);
        }
        return 0;
    }
    if (strcasecmp(name, ps->want) == 0 ||
        (strncasecmp(name, "Cf_", 3) == 0 && strcasecmp(name + 3, ps->want) == 0)) {
        snprintf(ps->out, ps->n, "%s", name);
        return 1;
    }
    return 0;
}

int ifs_meta_entity(const char *xml, size_t len, const char *set, struct ifs_meta *out)
{
    const char *end = xml + len, *body, *bend;
    struct set_find sf = { set, out };
    struct prop_scan ps = { out, NULL, NULL, 0 };

    memset(out, 0, sizeof(*out));
    if (xml == NULL || set == NULL || set[0] == '\0' ||
        each_tag(xml, end, "<EntitySet ", set_tag, &sf) != 1) {
        return -1;
    }
    body = type_body(xml, end, out->type, &bend);
    if (body != NULL) {
        each_tag(body, bend, "<Property ", prop_tag, &ps);
    }
    return 0;
}

int ifs_meta_property(const char *xml, size_t len, const struct ifs_meta *m, const char *name,
                      char *out, size_t n)
{
    const char *end = xml + len, *body, *bend;
    struct prop_scan ps = { (struct ifs_meta *)m, name, out, n };

    out[0] = '\0';
    if (xml == NULL || name == NULL || name[0] == '\0') {
        return -1;
    }
    body = type_body(xml, end, m->type, &bend);
    if (body == NULL) {
        return -1;
    }
    /* the want branch never writes to m */
    return each_tag(body, bend, "<Property ", prop_tag, &ps) == 1 ? 0 : -1;
}

struct type_scan {
    const char *want;
    int numeric;
};

static int type_tag(const char *tag, const char *end, void *ctx)
{
    static const char *const nums[] = { "Edm.Byte",  "Edm.SByte",   "Edm.Int16",  "Edm.Int32",
                                        "Edm.Int64", "Edm.Decimal", "Edm.Double", "Edm.Single",
                                        NULL };
    struct type_scan *ts = ctx;
    char name[128], type[64];

    if (attr(tag, end, "Name", name, sizeof(name)) != 0 || strcmp(name, ts->want) != 0) {
        return 0;
    }
    if (attr(tag, end, "Type", type, sizeof(type)) != 0) {
        return -1;
    }
    ts->numeric = 0;
    for (int i = 0; nums[i] != NULL; i++) {
        ts->numeric |= strcmp(type, nums[i]) == 0;
    }
    return 1;
}

int ifs_meta_numeric(const char *xml, size_t len, const struct ifs_meta *m, const char *prop)
{
    const char *end = xml + len, *body, *bend;
    struct type_scan ts = { prop, 0 };

    if (xml == NULL || prop == NULL || prop[0] == '\0') {
        return -1;
    }
    body = type_body(xml, end, m->type, &bend);
    if (body == NULL || each_tag(body, bend, "<Property ", type_tag, &ts) != 1) {
        return -1;
    }
    return ts.numeric;
}

/* an is "<type>_<name>" (IFS names state events after their entity). */
static int type_prefixed(const char *an, const char *type, const char *name)
{
    size_t tl = strlen(type);

    return strncasecmp(an, type, tl) == 0 && an[tl] == '_' && strcasecmp(an + tl + 1, name) == 0;
}

int ifs_meta_action(const char *xml, size_t len, const struct ifs_meta *m, const char *name,
                    char *out, size_t n)
{
    const char *end = xml + len, *p = xml;
    char an[128], bound[16], ptype[256];

    out[0] = '\0';
    if (xml == NULL || name == NULL || name[0] == '\0') {
        return -1;
    }
    while ((p = find(p, end, "<Action ")) != NULL) {
        const char *close = find(p, end, "</Action>"), *par;
        const char *lim = close != NULL ? close : end;
        p += 8;
        if (attr(p - 8, end, "Name", an, sizeof(an)) != 0 ||
            (strcasecmp(an, name) != 0 && !type_prefixed(an, m->type, name)) ||
            attr(p - 8, end, "IsBound", bound, sizeof(bound)) != 0 || strcmp(bound, "true") != 0) {
            continue;
        }
        par = find(p, lim, "<Parameter ");
        if (par == NULL || attr(par, lim, "Type", ptype, sizeof(ptype)) != 0) {
            continue;
        }
        {
            size_t tl = strlen(m->type), pl = strlen(ptype);
            if (pl > tl && strcmp(ptype + pl - tl, m->type) == 0 && ptype[pl - tl - 1] == '.') {
                snprintf(out, n, "%s", an);
                return 0;
            }
        }
    }
    return -1;
}
