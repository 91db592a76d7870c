/* SPDX-License-Identifier: Apache-2.0
 * parse.c: the Jira connector's pure parsers and builders: no network, no
 * connection state (the unit tests and fuzzers call them directly)
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "shared/mlc_buf.h"
#include "shared/mlc_conf.h"
#include "shared/mlc_err.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "agent/connectors/connector.h"
#include "agent/connectors/jira/jira.h"
#include "agent/connectors/jira/jira_adf.h"
#include "agent/connectors/jira/jira_int.h"

/* Append s to out[0..n) at *pos, truncating; out stays NUL-terminated. */
static void text_add(char *out, size_t n, size_t *pos, const char *s)
{
    size_t k = strlen(s);

    if (*pos + 1 >= n) {
        return;
    }
    if (k > n - 1 - *pos) {
        k = n - 1 - *pos;
    }
    memcpy(out + *pos, s, k);
    *pos += k;
    out[*pos] = '\0';
}

/* ErrorCollection (or OAuth error body) -> "msg; msg; field: msg"; returns length. */
static size_t collection_text(const cJSON *ec, char *out, size_t n)
{
    static const char *const extra[] = { "error_description", "error", "message", NULL };
    const cJSON *it;
    size_t pos = 0;

    out[0] = '\0';
    if (!cJSON_IsObject(ec)) {
        return 0;
    }
    cJSON_ArrayForEach(it, mlc_json_arr(ec, "errorMessages"))
    {
        if (cJSON_IsString(it) && it->valuestring[0] != '\0') {
            text_add(out, n, &pos, pos > 0 ? "; " : "");
            text_add(out, n, &pos, it->valuestring);
        }
    }
    cJSON_ArrayForEach(it, mlc_json_obj(ec, "errors"))
    {
        char val[256];

        if (it->string == NULL || mlc_json_scalar_text(it, val, sizeof(val)) != 0) {
            continue;
        }
        text_add(out, n, &pos, pos > 0 ? "; " : "");
        text_add(out, n, &pos, it->string);
        text_add(out, n, &pos, ": ");
        text_add(out, n, &pos, val);
    }
    /* OAuth bodies: error_description is the readable one; skip error then */
    for (size_t i = 0; extra[i] != NULL; i++) {
        const char *s = mlc_json_str(ec, extra[i]);

        if (s == NULL || s[0] == '\0') {
            continue;
        }
        if (i == 1 && mlc_json_str(ec, "error_description") != NULL) {
            continue;
        }
        text_add(out, n, &pos, pos > 0 ? "; " : "");
        text_add(out, n, &pos, s);
    }
    return pos;
}

/* ----------------------------------------------------------- pure helpers */

enum mlc_rc jira_error_text(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root;
    size_t i, k;

    if (out == NULL || n == 0) {
        return MLC_E_INVAL;
    }
    out[0] = '\0';
    if (body == NULL || len == 0) {
        return MLC_E_PROTO;
    }
    root = cJSON_ParseWithLength(body, len);
    if (root != NULL && collection_text(root, out, n) > 0) {
        cJSON_Delete(root);
        return MLC_OK;
    }
    cJSON_Delete(root);
    /* not an ErrorCollection (an HTML error page, a proxy): show a clean snippet */
    k = len < 200 ? len : 200;
    if (k > n - 1) {
        k = n - 1;
    }
    for (i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)body[i];

        out[i] = (ch < 0x20 || ch >= 0x7f) ? ' ' : (char)ch;
    }
    out[k] = '\0';
    return MLC_E_PROTO;
}

enum mlc_rc jira_parse_bulk_response(const char *body, size_t len, size_t n_items,
                                     struct result *out, struct mlc_errbuf *err)
{
    cJSON *root = NULL;
    const cJSON *issues, *errors, *it;
    unsigned char *failed = NULL;
    size_t n_failed = 0, n_ok = 0, i;
    enum mlc_rc rc = MLC_E_PROTO;

    root = mlc_json_parse(body, len, "jira bulk create response", err);
    if (root == NULL) {
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        mlc_errf(err, "jira bulk create response: expected an object");
        goto out;
    }
    issues = cJSON_GetObjectItemCaseSensitive(root, "issues");
    errors = cJSON_GetObjectItemCaseSensitive(root, "errors");
    if ((issues != NULL && !cJSON_IsArray(issues)) || (errors != NULL && !cJSON_IsArray(errors))) {
        mlc_errf(err, "jira bulk create response: 'issues' and 'errors' must be arrays");
        goto out;
    }
    failed = calloc(n_items + 1, 1);
    if (failed == NULL) {
        rc = MLC_E_NOMEM;
        goto out;
    }
    /* pass 1: validate everything so out[] is only written for a sane body */
    cJSON_ArrayForEach(it, errors)
    {
        const cJSON *num = cJSON_GetObjectItemCaseSensitive(it, "failedElementNumber");
        double v;

        if (!cJSON_IsObject(it) || !cJSON_IsNumber(num)) {
            mlc_errf(err, "jira bulk create response: error entry without failedElementNumber");
            goto out;
        }
        v = num->valuedouble;
        if (!(v >= 0 && v < (double)n_items) || (double)(size_t)v != v) {
            mlc_errf(err, "jira bulk create response: failedElementNumber %g outside 0..%zu", v,
                     n_items);
            goto out;
        }
        if (failed[(size_t)v]) {
            mlc_errf(err, "jira bulk create response: failedElementNumber %zu repeated", (size_t)v);
            goto out;
        }
        failed[(size_t)v] = 1;
        n_failed++;
    }
    cJSON_ArrayForEach(it, issues)
    {
        char key[sizeof(out->target_key)], id[sizeof(out->target_id)];

        if (!cJSON_IsObject(it) || id_text(it, "key", key, sizeof(key)) != 0 ||
            id_text(it, "id", id, sizeof(id)) != 0) {
            mlc_errf(err, "jira bulk create response: created issue without a valid key and id");
            goto out;
        }
        n_ok++;
    }
    if (n_ok + n_failed != n_items) {
        mlc_errf(err, "jira bulk create response: %zu created + %zu failed for %zu sent", n_ok,
                 n_failed, n_items);
        goto out;
    }
    /* pass 2: successes fill the indexes no error names, in request order */
    i = 0;
    cJSON_ArrayForEach(it, issues)
    {
        while (failed[i]) {
            i++;
        }
        memset(&out[i], 0, sizeof(out[i]));
        out[i].rc = MLC_OK;
        id_text(it, "key", out[i].target_key, sizeof(out[i].target_key));
        id_text(it, "id", out[i].target_id, sizeof(out[i].target_id));
        i++;
    }
    cJSON_ArrayForEach(it, errors)
    {
        size_t k = (size_t)mlc_json_num(it, "failedElementNumber", 0);
        const cJSON *ee = mlc_json_obj(it, "elementErrors");
        double st = mlc_json_num(it, "status", mlc_json_num(ee, "status", 0));
        long status = (st >= 100 && st < 600) ? (long)st : 0;
        enum mlc_rc erc = status >= 400 ? mlc_http_classify(status, 0) : MLC_E_REJECTED;

        memset(&out[k], 0, sizeof(out[k]));
        out[k].rc = erc == MLC_OK ? MLC_E_REJECTED : erc;
        if (collection_text(ee, out[k].err, sizeof(out[k].err)) == 0) {
            set_msg(out[k].err, sizeof(out[k].err), "jira rejected the issue (HTTP %ld)",
                    status != 0 ? status : 400L);
        }
    }
    rc = MLC_OK;
out:
    free(failed);
    cJSON_Delete(root);
    return rc;
}

enum mlc_rc jira_parse_search_page(const char *body, size_t len,
                                   void (*on_label)(void *ctx, const char *label, const char *key,
                                                    const char *id, const char *hash),
                                   void *ctx, char **next_token, struct mlc_errbuf *err)
{
    cJSON *root;
    const cJSON *issues, *it, *last, *tok;
    enum mlc_rc rc = MLC_E_PROTO;

    *next_token = NULL;
    root = mlc_json_parse(body, len, "jira search response", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    issues = cJSON_GetObjectItemCaseSensitive(root, "issues");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(issues)) {
        mlc_errf(err, "jira search response: expected an object with an 'issues' array");
        goto out;
    }
    last = cJSON_GetObjectItemCaseSensitive(root, "isLast");
    tok = cJSON_GetObjectItemCaseSensitive(root, "nextPageToken");
    if ((last != NULL && !cJSON_IsBool(last)) ||
        (tok != NULL && !cJSON_IsString(tok) && !cJSON_IsNull(tok))) {
        mlc_errf(err, "jira search response: wrong type for isLast or nextPageToken");
        goto out;
    }
    if (cJSON_IsFalse(last) && (!cJSON_IsString(tok) || tok->valuestring[0] == '\0')) {
        mlc_errf(err, "jira search response: isLast is false but there is no nextPageToken");
        goto out;
    }
    cJSON_ArrayForEach(it, issues)
    {
        char key[64], id[32];
        const cJSON *fields, *labels, *lab, *props, *trace;
        const char *hash = NULL;

        if (!cJSON_IsObject(it) || id_text(it, "key", key, sizeof(key)) != 0 ||
            id_text(it, "id", id, sizeof(id)) != 0) {
            mlc_errf(err, "jira search response: issue without a valid key and id");
            goto out;
        }
        props = cJSON_GetObjectItemCaseSensitive(it, "properties");
        trace = cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, JIRA_TRACE_PROP)
                                      : NULL;
        if (cJSON_IsObject(trace)) {
            hash = mlc_json_str(trace, "hash");
            if (hash != NULL && strlen(hash) != 64 && strcmp(hash, JIRA_TRACE_PENDING) != 0) {
                hash = NULL; /* not a hash this agent wrote */
            }
        }
        fields = cJSON_GetObjectItemCaseSensitive(it, "fields");
        if (fields == NULL) {
            continue;
        }
        labels = cJSON_GetObjectItemCaseSensitive(fields, "labels");
        if (!cJSON_IsObject(fields) || (labels != NULL && !cJSON_IsArray(labels))) {
            mlc_errf(err, "jira search response: issue %s has malformed fields.labels", key);
            goto out;
        }
        cJSON_ArrayForEach(lab, labels)
        {
            if (!cJSON_IsString(lab)) {
                mlc_errf(err, "jira search response: issue %s has a non-string label", key);
                goto out;
            }
            if (on_label != NULL) {
                on_label(ctx, lab->valuestring, key, id, hash);
            }
        }
    }
    if (!cJSON_IsTrue(last) && cJSON_IsString(tok) && tok->valuestring[0] != '\0') {
        *next_token = mlc_xstrdup(tok->valuestring);
    }
    rc = MLC_OK;
out:
    cJSON_Delete(root);
    return rc;
}

static enum mlc_rc jql_quote(struct mlc_buf *b, const char *s)
{
    enum mlc_rc rc = mlc_buf_add(b, "\"", 1);

    for (; rc == MLC_OK && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            rc = mlc_buf_add(b, "\\", 1);
            if (rc != MLC_OK) {
                break;
            }
        } else if (ch < 0x20) {
            /* a control byte cannot be in a label or project key: drop it */
            continue;
        }
        rc = mlc_buf_add(b, s, 1);
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_add(b, "\"", 1);
    }
    return rc;
}

/* One project key, bare when it is a plain key (MFG, OPS_2), else quoted. */
static enum mlc_rc jql_key(struct mlc_buf *b, const char *k, size_t n, int quote)
{
    int plain = !quote && n > 0 && isupper((unsigned char)k[0]);
    char one[256];

    for (size_t i = 0; plain && i < n; i++) {
        plain = isupper((unsigned char)k[i]) || isdigit((unsigned char)k[i]) || k[i] == '_';
    }
    if (plain) {
        return mlc_buf_addf(b, "%.*s", (int)n, k);
    }
    if (n >= sizeof(one)) {
        return MLC_E_INVAL;
    }
    memcpy(one, k, n);
    one[n] = '\0';
    return jql_quote(b, one);
}

/* "project = MFG" for one key; "project in (MFG, OPS)" for a comma
 * separated list of them (a target whose mapping picks the project). */
static enum mlc_rc jql_projects(struct mlc_buf *b, const char *list, int quote)
{
    const char *p = list;
    enum mlc_rc rc;
    int many = strchr(list, ',') != NULL;

    rc = mlc_buf_adds(b, many ? "project in (" : "project = ");
    while (rc == MLC_OK) {
        size_t n = strcspn(p, ",");
        rc = jql_key(b, p, n, quote);
        if (p[n] == '\0') {
            break;
        }
        p += n + 1;
        if (rc == MLC_OK) {
            rc = mlc_buf_adds(b, ", ");
        }
    }
    if (rc == MLC_OK && many) {
        rc = mlc_buf_adds(b, ")");
    }
    return rc;
}

enum mlc_rc jira_jql_markers(struct mlc_buf *b, const char *project, const char *const *markers,
                             size_t n)
{
    enum mlc_rc rc;
    size_t i;

    if (project == NULL || n == 0) {
        return MLC_E_INVAL;
    }
    rc = jql_projects(b, project, 1);
    if (rc == MLC_OK) {
        rc = mlc_buf_adds(b, " AND labels in (");
    }
    for (i = 0; rc == MLC_OK && i < n; i++) {
        if (i > 0) {
            rc = mlc_buf_adds(b, ", ");
        }
        if (rc == MLC_OK) {
            rc = jql_quote(b, markers[i] != NULL ? markers[i] : "");
        }
    }
    if (rc == MLC_OK) {
        rc = mlc_buf_adds(b, ")");
    }
    return rc;
}

void jira_summary_clean(const char *in, char *out, size_t n)
{
    char *clean = jira_text_clean(in);
    size_t max = n - 1, len, i, o = 0;

    if (n == 0) {
        free(clean);
        return;
    }
    out[0] = '\0';
    if (clean == NULL) {
        return;
    }
    if (max > JIRA_SUMMARY_MAX) {
        max = JIRA_SUMMARY_MAX;
    }
    len = strlen(clean);
    /* the cleaned text is valid UTF-8, so a cut before a lead byte is safe */
    if (len > max) {
        len = max;
        while (len > 0 && ((unsigned char)clean[len] & 0xc0) == 0x80) {
            len--;
        }
    }
    for (i = 0; i < len; i++) {
        /* CRLF was already folded to one LF; LF and TAB become spaces */
        out[o++] = (clean[i] == '\n' || clean[i] == '\t') ? ' ' : clean[i];
    }
    out[o] = '\0';
    free(clean);
}

char *jira_label_clean(const char *in)
{
    char *clean = jira_text_clean(in);
    size_t i;

    if (clean == NULL) {
        return NULL;
    }
    for (i = 0; clean[i] != '\0'; i++) {
        if (isspace((unsigned char)clean[i])) {
            clean[i] = '_';
        }
    }
    if (clean[0] == '\0') {
        free(clean);
        return NULL;
    }
    return clean;
}

static int digits_at(const char *s, int n, int *out)
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

int jira_time_parse(const char *s, long long *ms)
{
    int y, mo, d, hh, mi, ss, frac = 0, fdig = 0, zh = 0, zm = 0, sign = 1;
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    const char *p;
    struct tm tm;

    if (s == NULL || strlen(s) < 19) {
        return -1;
    }
    if (digits_at(s, 4, &y) || s[4] != '-' || digits_at(s + 5, 2, &mo) || s[7] != '-' ||
        digits_at(s + 8, 2, &d) || (s[10] != 'T' && s[10] != ' ') || digits_at(s + 11, 2, &hh) ||
        s[13] != ':' || digits_at(s + 14, 2, &mi) || s[16] != ':' || digits_at(s + 17, 2, &ss)) {
        return -1;
    }
    p = s + 19;
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++) {
            if (fdig < 3) {
                frac = frac * 10 + (*p - '0');
                fdig++;
            }
        }
        if (fdig == 0) {
            return -1;
        }
        for (; fdig < 3; fdig++) {
            frac *= 10;
        }
    }
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits_at(p, 2, &zh) != 0) {
            return -1;
        }
        p += 2;
        if (*p == ':') {
            p++;
        }
        if (digits_at(p, 2, &zm) != 0) {
            return -1;
        }
        p += 2;
    } else {
        return -1; /* without a zone the instant is ambiguous */
    }
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || hh > 23 ||
        mi > 59 || ss > 60 || zh > 23 || zm > 59) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = hh;
    tm.tm_min = mi;
    tm.tm_sec = ss;
    *ms = ((long long)timegm(&tm) - sign * (zh * 3600LL + zm * 60LL)) * 1000LL + frac;
    return 0;
}

void jira_time_format(long long ms, char *out, size_t n)
{
    time_t secs;
    struct tm tm;
    char full[48];
    size_t k;
    int milli;

    if (n == 0) {
        return;
    }
    if (ms < 0) {
        ms = 0;
    }
    secs = (time_t)(ms / 1000);
    milli = (int)(ms % 1000);
    gmtime_r(&secs, &tm);
    k = strftime(full, sizeof(full) - 10, "%Y-%m-%dT%H:%M:%S", &tm);
    full[k++] = '.';
    full[k++] = (char)('0' + milli / 100);
    full[k++] = (char)('0' + milli / 10 % 10);
    full[k++] = (char)('0' + milli % 10);
    memcpy(full + k, "+0000", 6);
    k += 5;
    if (k > n - 1) {
        k = n - 1;
    }
    memcpy(out, full, k);
    out[k] = '\0';
}

int jira_expiration_parse(const cJSON *v, long long *ms)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;

        if (!(d >= 0 && d < 1e15)) {
            return -1;
        }
        *ms = (long long)d;
        return 0;
    }
    if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        const char *s = v->valuestring;
        size_t i;

        for (i = 0; isdigit((unsigned char)s[i]); i++) {
        }
        if (s[i] == '\0' && i < 16) {
            *ms = strtoll(s, NULL, 10);
            return 0;
        }
        return jira_time_parse(s, ms);
    }
    return -1;
}

enum mlc_rc jira_jql_project(struct mlc_buf *b, const char *project)
{
    if (empty(project)) {
        return MLC_E_INVAL;
    }
    return jql_projects(b, project, 0);
}

enum mlc_rc jira_jql_changes(struct mlc_buf *b, const char *project, long long since_ms,
                             long long server_now_ms)
{
    enum mlc_rc rc = jira_jql_project(b, project);

    if (rc == MLC_OK) {
        rc = mlc_buf_addf(b, " AND updated >= \"-%lldm\" ORDER BY updated ASC",
                          changes_minutes(since_ms, server_now_ms));
    }
    return rc;
}

/* ---- event_parse(): one webhook delivery as a generic change ---- */

/* Changelog fields whose raw "to"/"from" is the value as the API writes it
 * (an ISO date); the others are compared by their display strings. */
static const char *const raw_valued[] = { "duedate", NULL };

enum mlc_rc jira_event_parse(const char *body, size_t len, struct change *ch,
                             struct mlc_errbuf *err)
{
    const cJSON *issue, *it;
    enum mlc_rc rc = change_begin(ch, body, len, "jira webhook body", err);

    if (rc != MLC_OK) {
        return rc;
    }
    ch->event = mlc_json_str(ch->root, "webhookEvent");
    issue = mlc_json_obj(ch->root, "issue");
    ch->record = mlc_json_str(issue, "key");
    ch->markers = mlc_json_arr(mlc_json_obj(issue, "fields"), "labels");
    ch->author = mlc_json_str(mlc_json_obj(ch->root, "user"), "accountId");
    ch->at_ms = change_ms(ch->root, "timestamp");
    cJSON_ArrayForEach(it, mlc_json_arr(mlc_json_obj(ch->root, "changelog"), "items"))
    {
        const char *field = mlc_json_str(it, "fieldId");
        int raw = 0;

        if (field == NULL) {
            field = mlc_json_str(it, "field");
        }
        if (field == NULL || field[0] == '\0') {
            continue;
        }
        for (const char *const *r = raw_valued; *r && !raw; r++) {
            raw = strcmp(*r, field) == 0;
        }
        if (raw) {
            change_set(ch, field, mlc_json_str(it, "from"), mlc_json_str(it, "to"));
        } else {
            change_set(ch, field, mlc_json_str(it, "fromString"), mlc_json_str(it, "toString"));
        }
    }
    change_finish(ch);
    return MLC_OK;
}

int jira_number_text(const char *s, double *out)
{
    const char *p = s;
    char *end;
    double d;
    int digits = 0;

    while (*p == ' ' || *p == '\t') {
        p++;
    }
    /* strtod would also take hex, inf and nan: check the decimal shape first */
    {
        const char *q = p;
        if (*q == '+' || *q == '-') {
            q++;
        }
        while (isdigit((unsigned char)*q)) {
            q++, digits++;
        }
        if (*q == '.') {
            q++;
            while (isdigit((unsigned char)*q)) {
                q++, digits++;
            }
        }
        if (digits == 0) {
            return -1;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-') {
                q++;
            }
            if (!isdigit((unsigned char)*q)) {
                return -1;
            }
            while (isdigit((unsigned char)*q)) {
                q++;
            }
        }
        while (*q == ' ' || *q == '\t') {
            q++;
        }
        if (*q != '\0') {
            return -1;
        }
    }
    d = strtod(p, &end);
    if (end == p || !(d == d) || d > 1.7e308 || d < -1.7e308) {
        return -1;
    }
    if (out != NULL) {
        *out = d;
    }
    return 0;
}
