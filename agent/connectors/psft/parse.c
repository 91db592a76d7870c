/* SPDX-License-Identifier: Apache-2.0
 * psft parse: the pure parts of the PeopleSoft connector (see psft.h):
 * date-times, QAS and custom-service answers, error bodies, the window
 * reader that splits capped answers, the vendor join and cursors.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "agent/connectors/psft/psft.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"

static const struct psft_kind_def kinds[PSFT_NKIND] = {
    { "po", "BUSINESS_UNIT", "PO_ID", "purchaseOrders", "LAST_DTTM_UPDATE", 1 },
    { "requisition", "BUSINESS_UNIT", "REQ_ID", "requisitions", "LAST_DTTM_UPDATE", 1 },
    { "voucher", "BUSINESS_UNIT", "VOUCHER_ID", "vouchers", "LAST_DTTM_UPDATE", 1 },
    { "vendor", "SETID", "VENDOR_ID", "vendors", "LASTUPDDTTM", 0 },
};

const struct psft_kind_def *psft_kind_def(int kind)
{
    return kind >= 0 && kind < PSFT_NKIND ? &kinds[kind] : NULL;
}

int psft_kind_parse(const char *s)
{
    for (int i = 0; s != NULL && i < PSFT_NKIND; i++) {
        if (strcmp(s, kinds[i].name) == 0) {
            return i;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ date-times */

static long long days_from_civil(long y, int m, int d)
{
    long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (long long)era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, long *y, int *m, int *d)
{
    long long era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (long)(yoe + era * 400 + (*m <= 2));
}

/* n digits at s into *v; 0 on success. */
static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

int psft_dttm_parse(const char *s, long long *us)
{
    int y, mo, d, h, mi, sec, frac = 0, nf = 0, mdays;
    const char *p;
    char sep_t, sep_hm;
    static const int dim[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

    *us = 0;
    if (s == NULL || digits(s, 4, &y) != 0 || s[4] != '-' || digits(s + 5, 2, &mo) != 0 ||
        s[7] != '-' || digits(s + 8, 2, &d) != 0) {
        return -1;
    }
    if (y < 1 || mo < 1 || mo > 12) {
        return -1;
    }
    mdays = dim[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    if (d < 1 || d > mdays) {
        return -1;
    }
    if (s[10] == '\0') {
        return -2; /* a date alone */
    }
    sep_t = s[10];
    if (sep_t != 'T' && sep_t != ' ' && sep_t != '-') {
        return -1;
    }
    sep_hm = sep_t == '-' ? '.' : ':';
    if (digits(s + 11, 2, &h) != 0 || s[13] != sep_hm || digits(s + 14, 2, &mi) != 0 ||
        s[16] != sep_hm || digits(s + 17, 2, &sec) != 0 || h > 23 || mi > 59 || sec > 59) {
        return -1;
    }
    p = s + 19;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (nf < 6) {
                frac = frac * 10 + (*p - '0');
                nf++;
            }
            p++;
        }
        if (nf == 0) {
            return -1;
        }
        for (int i = nf; i < 6; i++) {
            frac *= 10;
        }
    }
    if (*p == 'Z') {
        p++; /* some services say UTC explicitly; the wall clock is the same */
    }
    if (*p != '\0') {
        return -1;
    }
    *us = ((days_from_civil(y, mo, d) * 86400LL) + h * 3600LL + mi * 60LL + sec) * 1000000LL + frac;
    return 0;
}

static void split_us(long long us, long *y, int *mo, int *d, int *h, int *mi, int *s, long *frac)
{
    long long secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    long long days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    long long rem = secs - days * 86400;

    *frac = (long)(us - secs * 1000000);
    civil_from_days(days, y, mo, d);
    *h = (int)(rem / 3600);
    *mi = (int)(rem / 60 % 60);
    *s = (int)(rem % 60);
}

void psft_dttm_format(long long us, int style, char *out, size_t n)
{
    long y, frac;
    int mo, d, h, mi, s;

    split_us(us, &y, &mo, &d, &h, &mi, &s, &frac);
    if (style == PSFT_DTTM_PSFT) {
        snprintf(out, n, "%04ld-%02d-%02d-%02d.%02d.%02d.%06ld", y, mo, d, h, mi, s, frac);
    } else if (frac != 0) {
        snprintf(out, n, "%04ld-%02d-%02d%c%02d:%02d:%02d.%06ld", y, mo, d,
                 style == PSFT_DTTM_SPACE ? ' ' : 'T', h, mi, s, frac);
    } else {
        snprintf(out, n, "%04ld-%02d-%02d%c%02d:%02d:%02d", y, mo, d,
                 style == PSFT_DTTM_SPACE ? ' ' : 'T', h, mi, s);
    }
}

void psft_dttm_format_full(long long us, char *out, size_t n)
{
    long y, frac;
    int mo, d, h, mi, s;

    split_us(us, &y, &mo, &d, &h, &mi, &s, &frac);
    snprintf(out, n, "%04ld-%02d-%02dT%02d:%02d:%02d.%06ld", y, mo, d, h, mi, s, frac);
}

int psft_column_date_only(const char *col)
{
    size_t n = col != NULL ? strlen(col) : 0;

    /* PeopleSoft names date fields *_DT (PO_DT, INVOICE_DT, DUE_DT) and
     * date-times *_DTTM or *DTTM (LAST_DTTM_UPDATE, LASTUPDDTTM) */
    return n >= 3 && strcmp(col + n - 3, "_DT") == 0;
}

/* ------------------------------------------------------------ batches */

struct psft_item *psft_batch_push(struct psft_batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = mlc_xrealloc(b->v, b->cap * sizeof(*b->v));
    }
    memset(&b->v[b->n], 0, sizeof(b->v[0]));
    b->v[b->n].stamp = -1;
    b->v[b->n].eff = -1;
    return &b->v[b->n++];
}

static void item_release(struct psft_item *it)
{
    free(it->k1);
    free(it->k2);
    free(it->key);
    free(it->error);
    cJSON_Delete(it->data);
    memset(it, 0, sizeof(*it));
}

void psft_batch_release(struct psft_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        item_release(&b->v[i]);
    }
    free(b->v);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------ rows */

/* Columns of a PO or requisition line when a query returns one row per line. */
static const char *const line_cols[] = {
    "LINE_NBR",      "SCHED_NBR",       "DESCR254_MIXED", "DESCR254",  "ITM_ID_VNDR",
    "INV_ITEM_ID",   "QTY_PO",          "QTY_REQ",        "UNIT_OF_MEASURE", "PRICE_PO",
    "PRICE_REQ",     "MERCHANDISE_AMT", "LINE_STATUS",    "CURR_STATUS", NULL,
};

static int is_line_col(const char *name)
{
    for (const char *const *p = line_cols; *p != NULL; p++) {
        if (strcmp(*p, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A scalar cell as text; NULL when absent, empty or not a scalar. */
static char *cell_text(const cJSON *row, const char *col)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(row, col);
    char buf[256];

    if (it == NULL || mlc_json_scalar_text(it, buf, sizeof(buf)) != 0) {
        return NULL;
    }
    mlc_rstrip(buf); /* CHAR columns come blank-padded from some databases */
    return buf[0] != '\0' ? mlc_xstrdup(buf) : NULL;
}

/* Fill the key and stamp of it from it->data. Returns -2 when the cursor
 * column holds a date only (a configuration error), else 0. */
static int item_key_stamp(struct psft_item *it, const struct psft_shape *sh)
{
    const struct psft_kind_def *kd = psft_kind_def(sh->kind);
    const cJSON *st;
    int rc;

    it->k1 = cell_text(it->data, kd->k1);
    it->k2 = cell_text(it->data, kd->k2);
    if (it->k1 == NULL || it->k2 == NULL) {
        it->error = mlc_xasprintf("%s row without %s%s%s (key columns)", kd->name,
                                  it->k1 == NULL ? kd->k1 : "",
                                  it->k1 == NULL && it->k2 == NULL ? " and " : "",
                                  it->k2 == NULL ? kd->k2 : "");
        return 0;
    }
    it->key = mlc_xasprintf("%s-%s", it->k1, it->k2);
    st = cJSON_GetObjectItemCaseSensitive(it->data, sh->cursor_col);
    if (!cJSON_IsString(st)) {
        it->error = mlc_xasprintf("%s %s has no %s text (cursor column)", kd->name, it->key,
                                  sh->cursor_col);
        return 0;
    }
    rc = psft_dttm_parse(st->valuestring, &it->stamp);
    if (rc == -2) {
        it->stamp = -1;
        it->error = mlc_xasprintf("%s %s: %s holds a date without a time", kd->name, it->key,
                                  sh->cursor_col);
        return -2;
    }
    if (rc != 0) {
        it->stamp = -1;
        it->error = mlc_xasprintf("%s %s has an invalid %s '%.40s' (expected a date-time)",
                                  kd->name, it->key, sh->cursor_col, st->valuestring);
        return 0;
    }
    it->eff = it->stamp;
    return 0;
}

/* 1 when the row is a voucher template (VOUCHER_STYLE TMPL, peoplesoft.md 6). */
static int is_template(const struct psft_shape *sh, const cJSON *row)
{
    const char *style = sh->kind == PSFT_VCHR ? mlc_json_str(row, "VOUCHER_STYLE") : NULL;

    return style != NULL && strncmp(style, "TMPL", 4) == 0;
}

static enum mlc_rc date_only_error(const struct psft_shape *sh, const cJSON *row,
                                   struct mlc_errbuf *err)
{
    const char *v = mlc_json_str(row, sh->cursor_col);

    mlc_errf(err,
             "source.cursor_column: %s holds dates without a time ('%.20s'); a date cannot be a "
             "cursor (every change on one day would look alike): name a date-time column such as "
             "LAST_DTTM_UPDATE",
             sh->cursor_col, v ? v : "");
    return MLC_E_INVAL;
}

/* ------------------------------------------------------------ QAS */

/* The row with alias prefixes dropped ("A.PO_ID" -> "PO_ID", the first of
 * two same-named columns wins) and attr:rownumber left out; row is emptied. */
static cJSON *qas_normalise(cJSON *row)
{
    cJSON *o = mlc_json_xobj(), *cell;

    while ((cell = row->child) != NULL) {
        const char *name = cell->string != NULL ? cell->string : "";
        const char *dot = strchr(name, '.');
        const char *bare = dot != NULL && dot[1] != '\0' ? dot + 1 : name;

        cJSON_DetachItemViaPointer(row, cell);
        if (strncmp(name, "attr:", 5) == 0 || bare[0] == '\0' ||
            cJSON_GetObjectItemCaseSensitive(o, bare) != NULL) {
            cJSON_Delete(cell);
            continue;
        }
        /* cJSON copies the name before it frees the old one */
        cJSON_AddItemToObject(o, bare, cell);
    }
    return o;
}

/* Move the line columns of data into a new line object; with sh->child,
 * every column but the key and cursor columns. */
static cJSON *take_line(cJSON *data, const struct psft_shape *sh)
{
    const struct psft_kind_def *kd = psft_kind_def(sh->kind);
    cJSON *line = mlc_json_xobj(), *cell, *next;

    for (cell = data->child; cell != NULL; cell = next) {
        const char *nm = cell->string;
        next = cell->next;
        if (nm == NULL) {
            continue;
        }
        if (sh->child != NULL ? strcmp(nm, kd->k1) != 0 && strcmp(nm, kd->k2) != 0 &&
                                    strcmp(nm, sh->cursor_col) != 0
                              : is_line_col(nm)) {
            cJSON_DetachItemViaPointer(data, cell);
            cJSON_AddItemToObject(line, cell->string, cell);
        }
    }
    return line;
}

enum mlc_rc psft_parse_qas(const char *body, size_t len, const struct psft_shape *sh,
                           struct psft_batch *out, struct mlc_errbuf *err)
{
    const struct psft_kind_def *kd = psft_kind_def(sh->kind);
    const char *status, *qn;
    cJSON *query, *root, *rows, *row;
    enum mlc_rc rc = MLC_OK;
    size_t nrows = 0, start = out->n;
    char msg[300];

    if (kd == NULL) {
        MLC_BUG("psft_parse_qas: unknown kind %d", sh->kind);
    }
    if (psft_body_failed(body, len, msg, sizeof(msg))) {
        mlc_errf(err, "PeopleSoft query answer reports a failure: %s", msg);
        return MLC_E_REJECTED;
    }
    root = mlc_json_parse(body, len, "PeopleSoft query answer", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    status = mlc_json_str(root, "status");
    if (status != NULL && strcmp(status, "success") != 0) {
        psft_error_text(body, len, msg, sizeof(msg));
        mlc_errf(err, "PeopleSoft query answer has status '%.40s': %s", status, msg);
        rc = MLC_E_REJECTED;
        goto out;
    }
    query = (cJSON *)mlc_json_path(root, "data.query"); /* root is ours */
    if (!cJSON_IsObject(query)) {
        mlc_errf(err, "PeopleSoft query answer has no data.query object");
        rc = MLC_E_PROTO;
        goto out;
    }
    /* one client in the field spells the member "queryname=" (peoplesoft.md 5) */
    qn = mlc_json_str(query, "queryname");
    if (qn == NULL) {
        qn = mlc_json_str(query, "queryname=");
    }
    if (qn != NULL && sh->query != NULL && strcasecmp(qn, sh->query) != 0) {
        mlc_errf(err, "PeopleSoft query answer is for query '%.64s', not '%s'", qn, sh->query);
        rc = MLC_E_PROTO;
        goto out;
    }
    rows = cJSON_GetObjectItemCaseSensitive(query, "rows");
    if (rows == NULL || cJSON_IsNull(rows)) {
        goto out; /* no rows at all */
    }
    if (cJSON_IsObject(rows)) {
        /* a single row, as some XML-to-JSON conversions send it */
        cJSON *arr = mlc_json_xarr();
        cJSON_DetachItemViaPointer(query, rows);
        cJSON_AddItemToArray(arr, rows);
        cJSON_AddItemToObject(query, "rows", arr);
        rows = arr;
    }
    if (!cJSON_IsArray(rows)) {
        mlc_errf(err, "PeopleSoft query answer: data.query.rows is not a list");
        rc = MLC_E_PROTO;
        goto out;
    }
    while ((row = rows->child) != NULL) {
        cJSON *data;
        struct psft_item *it = NULL;
        char *k1, *k2;

        cJSON_DetachItemViaPointer(rows, row);
        nrows++;
        if (!cJSON_IsObject(row)) {
            cJSON_Delete(row);
            it = psft_batch_push(out);
            it->data = mlc_json_xobj();
            it->error = mlc_xstrdup("query row is not a JSON object");
            continue;
        }
        data = qas_normalise(row);
        cJSON_Delete(row);
        if (is_template(sh, data)) {
            cJSON_Delete(data);
            out->excluded++;
            continue;
        }
        /* a further line of a record already read in this answer? */
        k1 = cell_text(data, kd->k1);
        k2 = cell_text(data, kd->k2);
        if (k1 != NULL && k2 != NULL &&
            (sh->child != NULL || cJSON_GetObjectItemCaseSensitive(data, "LINE_NBR") != NULL)) {
            for (size_t i = out->n; i-- > start;) {
                struct psft_item *o = &out->v[i];
                if (o->k1 != NULL && o->k2 != NULL && strcmp(o->k1, k1) == 0 &&
                    strcmp(o->k2, k2) == 0) {
                    it = o;
                    break;
                }
            }
        }
        free(k1);
        free(k2);
        if (it != NULL) {
            cJSON *lines = cJSON_GetObjectItemCaseSensitive(it->data, sh->child ? sh->child : "lines");
            if (cJSON_IsArray(lines)) {
                cJSON_AddItemToArray(lines, take_line(data, sh));
            }
            cJSON_Delete(data);
            continue;
        }
        it = psft_batch_push(out);
        it->data = data;
        if (item_key_stamp(it, sh) == -2) {
            rc = date_only_error(sh, data, err);
            goto out;
        }
        if (sh->child != NULL || cJSON_GetObjectItemCaseSensitive(data, "LINE_NBR") != NULL) {
            cJSON *lines = mlc_json_xarr();
            cJSON_AddItemToArray(lines, take_line(data, sh));
            mlc_json_xadd(data, sh->child ? sh->child : "lines", lines);
        }
    }
    for (size_t i = start; i < out->n; i++) {
        if (out->v[i].data != NULL && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(out->v[i].data, "lines"))) {
            psft_lines_summarise(out->v[i].data);
        }
    }
    if (sh->maxrows > 0 && (long)nrows >= sh->maxrows) {
        out->capped = 1;
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------ custom services */

enum mlc_rc psft_parse_svc(const char *body, size_t len, const struct psft_shape *sh,
                           struct psft_batch *out, struct mlc_errbuf *err)
{
    const struct psft_kind_def *kd = psft_kind_def(sh->kind);
    const char *list = sh->list != NULL ? sh->list : (kd != NULL ? kd->list : NULL);
    const char *status;
    const cJSON *tr;
    cJSON *root, *rows, *row;
    enum mlc_rc rc = MLC_OK;
    size_t nrows = 0;
    char msg[300];

    if (kd == NULL) {
        MLC_BUG("psft_parse_svc: unknown kind %d", sh->kind);
    }
    if (psft_body_failed(body, len, msg, sizeof(msg))) {
        mlc_errf(err, "PeopleSoft service answer reports a failure: %s", msg);
        return MLC_E_REJECTED;
    }
    root = mlc_json_parse(body, len, "PeopleSoft service answer", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    status = mlc_json_str(root, "status");
    if (status != NULL && strcmp(status, "success") != 0) {
        psft_error_text(body, len, msg, sizeof(msg));
        mlc_errf(err, "PeopleSoft service answer has status '%.40s': %s", status, msg);
        rc = MLC_E_REJECTED;
        goto out;
    }
    rows = cJSON_GetObjectItemCaseSensitive(root, list);
    if (rows == NULL || cJSON_IsNull(rows)) {
        long count = (long)mlc_json_num(root, "count", -1);
        if (count > 0 || !cJSON_IsObject(root)) {
            mlc_errf(err, "PeopleSoft service answer has no \"%s\" list (source.list names it)",
                     list);
            rc = MLC_E_PROTO;
        }
        goto out;
    }
    if (!cJSON_IsArray(rows)) {
        mlc_errf(err, "PeopleSoft service answer: \"%s\" is not a list", list);
        rc = MLC_E_PROTO;
        goto out;
    }
    tr = cJSON_GetObjectItemCaseSensitive(root, "truncated");
    if (cJSON_IsTrue(tr)) {
        out->capped = 1;
    }
    while ((row = rows->child) != NULL) {
        struct psft_item *it;

        cJSON_DetachItemViaPointer(rows, row);
        nrows++;
        if (!cJSON_IsObject(row)) {
            cJSON_Delete(row);
            it = psft_batch_push(out);
            it->data = mlc_json_xobj();
            it->error = mlc_xstrdup("service row is not a JSON object");
            continue;
        }
        if (is_template(sh, row)) {
            cJSON_Delete(row);
            out->excluded++;
            continue;
        }
        it = psft_batch_push(out);
        it->data = row;
        if (item_key_stamp(it, sh) == -2) {
            rc = date_only_error(sh, row, err);
            goto out;
        }
        if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(row, "lines"))) {
            psft_lines_summarise(row);
        }
    }
    if (sh->maxrows > 0 && (long)nrows >= sh->maxrows) {
        out->capped = 1;
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------ lines */

static const char *first_text(const cJSON *o, const char *const *names, char *buf, size_t n)
{
    for (const char *const *p = names; *p != NULL; p++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, *p);
        if (it != NULL && mlc_json_scalar_text(it, buf, n) == 0 && buf[0] != '\0') {
            mlc_rstrip(buf);
            return buf;
        }
    }
    return NULL;
}

#define PSFT_SUMMARY_LINES 25

void psft_lines_summarise(cJSON *data)
{
    static const char *const nbr[] = { "LINE_NBR", NULL };
    static const char *const descr[] = { "DESCR254_MIXED", "DESCR254", "DESCR", "ITM_ID_VNDR",
                                         "INV_ITEM_ID", NULL };
    static const char *const qty[] = { "QTY_PO", "QTY_REQ", "QTY", NULL };
    static const char *const uom[] = { "UNIT_OF_MEASURE", NULL };
    static const char *const amt[] = { "MERCHANDISE_AMT", "AMOUNT", NULL };
    const cJSON *lines = cJSON_GetObjectItemCaseSensitive(data, "lines"), *ln;
    struct mlc_buf b = { 0 };
    int count = 0;
    char *s;

    cJSON_ArrayForEach(ln, lines)
    {
        char n1[32], d1[260], q1[40], u1[16], a1[48];
        const char *n = first_text(ln, nbr, n1, sizeof(n1));
        const char *d = first_text(ln, descr, d1, sizeof(d1));
        const char *q = first_text(ln, qty, q1, sizeof(q1));
        const char *u = first_text(ln, uom, u1, sizeof(u1));
        const char *a = first_text(ln, amt, a1, sizeof(a1));

        count++;
        if (count > PSFT_SUMMARY_LINES) {
            continue;
        }
        if (b.len > 0) {
            mlc_buf_adds(&b, "\n");
        }
        mlc_buf_addf(&b, "Line %s: %s", n ? n : "?", d ? d : "(no description)");
        if (q != NULL) {
            mlc_buf_addf(&b, ", qty %s%s%s", q, u ? " " : "", u ? u : "");
        }
        if (a != NULL) {
            mlc_buf_addf(&b, ", amount %s", a);
        }
    }
    if (count > PSFT_SUMMARY_LINES) {
        mlc_buf_addf(&b, "\n(%d more lines)", count - PSFT_SUMMARY_LINES);
    }
    s = mlc_buf_detach(&b);
    cJSON_DeleteItemFromObjectCaseSensitive(data, "LINES_SUMMARY");
    cJSON_DeleteItemFromObjectCaseSensitive(data, "LINE_COUNT");
    mlc_json_xadd_str(data, "LINES_SUMMARY", s != NULL ? s : "");
    mlc_json_xadd_num(data, "LINE_COUNT", count);
    free(s);
}

/* ------------------------------------------------------------ errors */

int psft_is_ibresponse(const char *body, size_t len)
{
    size_t i = 0;

    while (i < len && isspace((unsigned char)body[i])) {
        i++;
    }
    if (len - i >= 5 && memcmp(body + i, "<?xml", 5) == 0) {
        const char *gt = memchr(body + i, '>', len - i);
        if (gt == NULL) {
            return 0;
        }
        i = (size_t)(gt - body) + 1;
        while (i < len && isspace((unsigned char)body[i])) {
            i++;
        }
    }
    return len - i >= 11 && memcmp(body + i, "<IBResponse", 11) == 0;
}

/* The text of the first <tag>...</tag> in body (entities left as they are),
 * control characters turned to spaces; "" when absent. */
static void xml_elem(const char *body, size_t len, const char *tag, char *out, size_t n)
{
    char open[48], close[48];
    const char *s, *e, *end = body + len;
    size_t k = 0;

    out[0] = '\0';
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    for (s = body; s + strlen(open) <= end; s++) {
        if (memcmp(s, open, strlen(open)) == 0) {
            break;
        }
    }
    if (s + strlen(open) > end) {
        return;
    }
    s += strlen(open);
    for (e = s; e + strlen(close) <= end; e++) {
        if (memcmp(e, close, strlen(close)) == 0) {
            break;
        }
    }
    if (e + strlen(close) > end) {
        return;
    }
    while (s < e && k + 1 < n) {
        out[k++] = (unsigned char)*s < 0x20 ? ' ' : *s;
        s++;
    }
    out[k] = '\0';
    mlc_strip(out);
}

/* Body text as one line, at most n-1 bytes. */
static void text_line(const char *body, size_t len, char *out, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < len && k + 1 < n; i++) {
        out[k++] = (unsigned char)body[i] < 0x20 ? ' ' : body[i];
    }
    out[k] = '\0';
    mlc_strip(out);
}

void psft_error_text(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root;

    if (n == 0) {
        return;
    }
    out[0] = '\0';
    if (body == NULL || len == 0) {
        return;
    }
    if (psft_is_ibresponse(body, len)) {
        char msg[256], set[16], id[16], code[16];
        xml_elem(body, len, "DefaultMessage", msg, sizeof(msg));
        xml_elem(body, len, "MessageSet", set, sizeof(set));
        xml_elem(body, len, "MessageID", id, sizeof(id));
        xml_elem(body, len, "StatusCode", code, sizeof(code));
        snprintf(out, n, "IBResponse error (status %s, message %s/%s): %s", code[0] ? code : "?",
                 set[0] ? set : "?", id[0] ? id : "?", msg[0] ? msg : "no DefaultMessage");
        return;
    }
    root = cJSON_ParseWithLength(body, len);
    if (cJSON_IsObject(root)) {
        const char *code = mlc_json_str(root, "code");
        const char *m = mlc_json_str(root, "message");
        if (m == NULL) {
            m = mlc_json_str(root, "error");
        }
        if (m == NULL) {
            m = mlc_json_str(root, "errorMessage");
        }
        if (m != NULL) {
            char line[400];
            text_line(m, strlen(m), line, sizeof(line));
            if (code != NULL) {
                snprintf(out, n, "%.32s: %s", code, line);
            } else {
                snprintf(out, n, "%s", line);
            }
            cJSON_Delete(root);
            return;
        }
    }
    cJSON_Delete(root);
    text_line(body, len, out, n);
}

int psft_body_failed(const char *body, size_t len, char *out, size_t n)
{
    size_t i = 0;
    const char *status;
    cJSON *root;
    int failed = 0;

    if (n > 0) {
        out[0] = '\0';
    }
    if (body == NULL || len == 0) {
        return 0;
    }
    if (psft_is_ibresponse(body, len)) {
        psft_error_text(body, len, out, n);
        return 1;
    }
    while (i < len && isspace((unsigned char)body[i])) {
        i++;
    }
    if (i == len || body[i] != '{') {
        return 0;
    }
    root = cJSON_ParseWithLength(body, len);
    status = cJSON_IsObject(root) ? mlc_json_str(root, "status") : NULL;
    if (status != NULL && strcmp(status, "success") != 0) {
        failed = 1;
        psft_error_text(body, len, out, n);
    }
    cJSON_Delete(root);
    return failed;
}

/* ------------------------------------------------------------ window reader */

/* (a1, a2) vs (b1, b2), column by column. */
static int tuple_cmp(const char *a1, const char *a2, const char *b1, const char *b2)
{
    int c = strcmp(a1, b1);

    return c != 0 ? c : strcmp(a2, b2);
}

/* Move the items of src that lie in [from, to) (and, when after1 is set,
 * whose key follows (after1, after2)) to dst; free the others. Error rows
 * (no key or no stamp) are moved as they are. */
static void take_in_window(struct psft_batch *src, long long from, long long to, const char *after1,
                           const char *after2, struct psft_batch *dst)
{
    for (size_t i = 0; i < src->n; i++) {
        struct psft_item *it = &src->v[i];
        int keep = it->error != NULL ||
                   (it->stamp >= from && it->stamp < to &&
                    (after1 == NULL || tuple_cmp(it->k1, it->k2, after1, after2) > 0));
        if (keep) {
            *psft_batch_push(dst) = *it;
            memset(it, 0, sizeof(*it));
        } else {
            item_release(it);
        }
    }
    dst->excluded += src->excluded;
    free(src->v);
    memset(src, 0, sizeof(*src));
}

/* (stamp, k1, k2) of a keyed item against a position. */
static int pos_cmp(const struct psft_item *it, long long st, const char *a1, const char *a2)
{
    if (it->stamp != st) {
        return it->stamp < st ? -1 : 1;
    }
    return tuple_cmp(it->k1, it->k2, a1, a2);
}

static int cmp_pos_items(const void *pa, const void *pb)
{
    const struct psft_item *a = pa, *b = pb;

    if (a->error != NULL || b->error != NULL) {
        return (a->error == NULL) - (b->error == NULL);
    }
    return pos_cmp(a, b->stamp, b->k1, b->k2);
}

/* Walk [from, to) in (stamp, key) order: each read asks for the rows after
 * the last position read (fromDttm = its stamp, after-key = its key; the
 * first read after the key ("", "")), and a cut answer gives up its last
 * record, which may be incomplete (a query with a row per line). Rows the
 * service sends outside the window still move the position on. */
static enum mlc_rc walk_keyset(struct psft_window *w, long long from, long long to,
                               struct psft_batch *out, struct mlc_errbuf *err)
{
    char *a1 = mlc_xstrdup(""), *a2 = mlc_xstrdup("");
    long long pos = from;
    enum mlc_rc rc = MLC_OK;
    char when[40];

    for (;;) {
        struct psft_batch b = { 0 };
        size_t keyed = 0, k = 0;
        int capped;

        w->calls++;
        rc = w->fetch(w->ctx, pos, to, a1, a2, &b, err);
        capped = b.capped;
        if (rc != MLC_OK) {
            psft_batch_release(&b);
            break;
        }
        if (capped) {
            /* only a sorted answer's cut is the end of what it read */
            const struct psft_item *prev = NULL;
            for (size_t i = 0; i < b.n; i++) {
                if (b.v[i].error != NULL) {
                    continue;
                }
                if (prev != NULL && pos_cmp(&b.v[i], prev->stamp, prev->k1, prev->k2) < 0) {
                    psft_dttm_format_full(pos, when, sizeof(when));
                    mlc_errf(err,
                             "%s: a cut answer from %s is not sorted by (%s, key), so what it "
                             "left out is unknown: the after-key read needs the query or service "
                             "to sort before it cuts (%s)",
                             w->column, when, w->column, w->hint);
                    psft_batch_release(&b);
                    rc = MLC_E_REJECTED;
                    goto out;
                }
                prev = &b.v[i];
            }
        }
        /* what lies after the position, in (stamp, key) order; error rows first */
        for (size_t i = 0; i < b.n; i++) {
            struct psft_item *it = &b.v[i];
            if (it->error == NULL && pos_cmp(it, pos, a1, a2) <= 0) {
                item_release(it);
                continue;
            }
            keyed += it->error == NULL;
            b.v[k++] = *it;
        }
        b.n = k;
        qsort(b.v, b.n, sizeof(b.v[0]), cmp_pos_items);
        if (capped) {
            if (keyed < 2) {
                psft_dttm_format_full(pos, when, sizeof(when));
                mlc_errf(err,
                         "%s: reading on by key from %s makes no progress: one record has more "
                         "rows than maxrows=%ld, or the read path ignores the after-key: raise "
                         "maxrows (%s)",
                         w->column, when, w->maxrows, w->hint);
                psft_batch_release(&b);
                rc = MLC_E_REJECTED;
                break;
            }
            item_release(&b.v[b.n - 1]);
            b.n--;
            pos = b.v[b.n - 1].stamp;
            free(a1);
            free(a2);
            a1 = mlc_xstrdup(b.v[b.n - 1].k1);
            a2 = mlc_xstrdup(b.v[b.n - 1].k2);
        }
        take_in_window(&b, from, to, NULL, NULL, out);
        if (!capped || pos >= to) {
            break;
        }
    }
out:
    free(a1);
    free(a2);
    return rc;
}

/* Sorted answers: a capped one is whole below the second of its last row,
 * so the next read starts there; a second that fills an answer alone is
 * read by key. */
static enum mlc_rc read_sorted(struct psft_window *w, long long from, long long to,
                               struct psft_batch *out, struct mlc_errbuf *err)
{
    long long res = w->res_us > 0 ? w->res_us : 1000000, cur = from;
    enum mlc_rc rc;

    if (w->can_after) {
        return walk_keyset(w, from, to, out, err);
    }
    while (cur < to) {
        struct psft_batch b = { 0 };
        long long maxst = LLONG_MIN, cut;

        w->calls++;
        rc = w->fetch(w->ctx, cur, to, NULL, NULL, &b, err);
        if (rc != MLC_OK) {
            psft_batch_release(&b);
            return rc;
        }
        if (!b.capped) {
            take_in_window(&b, cur, to, NULL, NULL, out);
            return MLC_OK;
        }
        for (size_t i = 0; i < b.n; i++) {
            if (b.v[i].error == NULL && b.v[i].stamp > maxst) {
                maxst = b.v[i].stamp;
            }
        }
        cut = maxst >= cur ? cur + (maxst - cur) / res * res : cur;
        if (cut > to) {
            cut = to;
        }
        if (cut > cur) {
            take_in_window(&b, cur, cut, NULL, NULL, out);
            cur = cut;
            continue;
        }
        psft_batch_release(&b);
        {
            char when[40];
            psft_dttm_format_full(cur, when, sizeof(when));
            mlc_errf(err,
                     "%s: at least maxrows=%ld rows changed within the second at %s and the read "
                     "path cannot continue by key: raise maxrows above the number of rows changed "
                     "in one second, or give the query/service an after-key (%s)",
                     w->column, w->maxrows, when, w->hint);
            return MLC_E_REJECTED;
        }
    }
    return MLC_OK;
}

enum mlc_rc psft_read_window(struct psft_window *w, long long from, long long to,
                             struct psft_batch *out, struct mlc_errbuf *err)
{
    struct psft_batch b = { 0 };
    long long res = w->res_us > 0 ? w->res_us : 1000000, mid;
    enum mlc_rc rc;

    if (to <= from) {
        return MLC_OK;
    }
    if (w->sorted) {
        return read_sorted(w, from, to, out, err);
    }
    w->calls++;
    rc = w->fetch(w->ctx, from, to, NULL, NULL, &b, err);
    if (rc != MLC_OK) {
        psft_batch_release(&b);
        return rc;
    }
    if (!b.capped) {
        take_in_window(&b, from, to, NULL, NULL, out);
        return MLC_OK;
    }
    psft_batch_release(&b);
    if (to - from <= res) {
        char when[40];
        if (w->can_after) {
            return walk_keyset(w, from, to, out, err);
        }
        psft_dttm_format_full(from, when, sizeof(when));
        mlc_errf(err,
                 "%s: at least maxrows=%ld rows changed within the second at %s and the read "
                 "path cannot continue by key: raise maxrows above the number of rows changed in "
                 "one second, or give the query/service an after-key (%s)",
                 w->column, w->maxrows, when, w->hint);
        return MLC_E_REJECTED;
    }
    /* split at a whole step of res, so both halves stay expressible */
    mid = from + ((to - from) / 2 / res) * res;
    if (mid <= from) {
        mid = from + res;
    }
    rc = psft_read_window(w, from, mid, out, err);
    if (rc == MLC_OK) {
        rc = psft_read_window(w, mid, to, out, err);
    }
    return rc;
}

/* ------------------------------------------------------------ vendors */

static int cmp_vendor(const void *pa, const void *pb)
{
    const struct psft_vendor *a = pa, *b = pb;

    return strcmp(a->key, b->key);
}

void psft_vendors_build(struct psft_vendors *vc, const struct psft_batch *b, const char *terms_col)
{
    size_t k = 0;

    psft_vendors_release(vc);
    vc->v = mlc_xcalloc(b->n ? b->n : 1, sizeof(*vc->v));
    for (size_t i = 0; i < b->n; i++) {
        const struct psft_item *it = &b->v[i];
        struct psft_vendor *v;

        if (it->error != NULL || it->key == NULL) {
            continue;
        }
        v = &vc->v[k++];
        v->key = mlc_xstrdup(it->key);
        v->name = cell_text(it->data, "NAME1");
        v->terms = terms_col != NULL ? cell_text(it->data, terms_col) : NULL;
        v->stamp = it->stamp;
    }
    vc->n = k;
    qsort(vc->v, vc->n, sizeof(*vc->v), cmp_vendor);
    /* the same vendor read twice (it changed during the read): keep the later */
    k = 0;
    for (size_t i = 0; i < vc->n; i++) {
        if (k > 0 && strcmp(vc->v[k - 1].key, vc->v[i].key) == 0) {
            struct psft_vendor *keep = &vc->v[k - 1], *other = &vc->v[i];
            if (other->stamp > keep->stamp) {
                struct psft_vendor t = *keep;
                *keep = *other;
                *other = t;
            }
            free(other->key);
            free(other->name);
            free(other->terms);
            continue;
        }
        vc->v[k++] = vc->v[i];
    }
    vc->n = k;
}

const struct psft_vendor *psft_vendors_find(const struct psft_vendors *vc, const char *key)
{
    struct psft_vendor probe = { 0 };

    if (vc == NULL || vc->n == 0 || key == NULL) {
        return NULL;
    }
    probe.key = (char *)key;
    return bsearch(&probe, vc->v, vc->n, sizeof(*vc->v), cmp_vendor);
}

void psft_vendors_release(struct psft_vendors *vc)
{
    for (size_t i = 0; i < vc->n; i++) {
        free(vc->v[i].key);
        free(vc->v[i].name);
        free(vc->v[i].terms);
    }
    free(vc->v);
    memset(vc, 0, sizeof(*vc));
}

const struct psft_vendor *psft_join_vendor(struct psft_item *it, const struct psft_vendors *vc)
{
    const struct psft_vendor *v = NULL;
    char *setid, *id, *key;

    if (it->error != NULL || it->data == NULL) {
        return NULL;
    }
    it->eff = it->stamp;
    setid = cell_text(it->data, "VENDOR_SETID");
    id = cell_text(it->data, "VENDOR_ID");
    if (setid != NULL && id != NULL) {
        key = mlc_xasprintf("%s-%s", setid, id);
        v = psft_vendors_find(vc, key);
        free(key);
    }
    free(setid);
    free(id);
    cJSON_DeleteItemFromObjectCaseSensitive(it->data, "VENDOR_NAME");
    cJSON_DeleteItemFromObjectCaseSensitive(it->data, "VENDOR_TERMS");
    if (v == NULL) {
        return NULL;
    }
    mlc_json_xadd_str(it->data, "VENDOR_NAME", v->name != NULL ? v->name : "");
    if (v->terms != NULL) {
        mlc_json_xadd_str(it->data, "VENDOR_TERMS", v->terms);
    }
    if (v->stamp > it->eff) {
        it->eff = v->stamp; /* a rename shows on the record: it changed then */
    }
    return v;
}

/* ------------------------------------------------------------ order, cursors */

int psft_cursor_cmp(long long a_eff, const char *a_key, long long b_eff, const char *b_key)
{
    if (a_eff != b_eff) {
        return a_eff < b_eff ? -1 : 1;
    }
    return strcmp(a_key ? a_key : "", b_key ? b_key : "");
}

static int cmp_cursor_items(const void *pa, const void *pb)
{
    const struct psft_item *a = pa, *b = pb;

    if (a->error != NULL || b->error != NULL) {
        return (a->error == NULL) - (b->error == NULL);
    }
    return psft_cursor_cmp(a->eff, a->key, b->eff, b->key);
}

void psft_batch_sort(struct psft_batch *b)
{
    if (b->n > 1) {
        qsort(b->v, b->n, sizeof(b->v[0]), cmp_cursor_items);
    }
}

static int cmp_key_stamp(const void *pa, const void *pb)
{
    const struct psft_item *a = pa, *b = pb;
    int c;

    if (a->key == NULL || b->key == NULL) {
        return (a->key != NULL) - (b->key != NULL);
    }
    c = strcmp(a->key, b->key);
    if (c != 0) {
        return c;
    }
    return a->stamp < b->stamp ? -1 : a->stamp > b->stamp;
}

void psft_batch_dedupe(struct psft_batch *b)
{
    size_t k = 0;

    if (b->n < 2) {
        return;
    }
    qsort(b->v, b->n, sizeof(b->v[0]), cmp_key_stamp);
    for (size_t i = 0; i < b->n; i++) {
        /* keyless rows sort first and all stay; of one key, the last (latest) stays */
        if (b->v[i].key != NULL && i + 1 < b->n && b->v[i + 1].key != NULL &&
            strcmp(b->v[i].key, b->v[i + 1].key) == 0) {
            item_release(&b->v[i]);
            continue;
        }
        b->v[k++] = b->v[i];
    }
    b->n = k;
}

int psft_cursor_parse(const char *s, long long *eff, char *key, size_t n)
{
    const char *bar;
    char stamp[40];

    *eff = 0;
    if (n > 0) {
        key[0] = '\0';
    }
    if (s == NULL || (bar = strchr(s, '|')) == NULL || (size_t)(bar - s) >= sizeof(stamp)) {
        return -1;
    }
    memcpy(stamp, s, (size_t)(bar - s));
    stamp[bar - s] = '\0';
    if (psft_dttm_parse(stamp, eff) != 0) {
        return -1;
    }
    if (strlen(bar + 1) >= n) {
        return -1;
    }
    memcpy(key, bar + 1, strlen(bar + 1) + 1);
    return 0;
}

void psft_cursor_format(long long eff, const char *key, char *out, size_t n)
{
    char when[40];

    psft_dttm_format_full(eff, when, sizeof(when));
    snprintf(out, n, "%s|%s", when, key ? key : "");
}
