/* SPDX-License-Identifier: Apache-2.0
 * ifs: IFS Cloud source and write-back connector over OData v4 projections
 * (ifs-cloud.md). URLs are
 *   {base_url}/main/ifsapplications/projection/v1/{Projection}.svc/{EntitySet}
 * (or /int/ifsapplications/entity/v1/ with "api": "int"). Auth: OAuth 2.0
 * client credentials at IFS IAM through the shared provider (renewed before
 * expires_in runs out, and once on a 401 with the same request: a next link
 * is simply asked again).
 *
 * Reading: rows ordered by (change date, key...) after the cursor, a keyset
 * condition in $filter; pages follow @odata.nextLink (Prefer:
 * odata.maxpagesize) or $top/$skip. An opaque next link may count rows by
 * offset, so a row changed while the run pages moves to the end and the row
 * behind it would slide into the part already read: before a later page is
 * taken, a one-row keyset probe asks for the first row after the last one
 * delivered, and when it is not the page's first row the page is dropped and
 * the run goes on with a fresh keyset query from the last row delivered.
 *
 * Write-back: read the record by key for its ETag (or take the one fetch()
 * just read for the core's decision), then PATCH the custom field found in
 * $metadata, or POST the bound state action, with If-Match. 412: read again;
 * the value is already there: done; the field still holds what the agent's
 * decision saw: write again with the new ETag; a person changed it:
 * MLC_E_CONFLICT, and the core reads the record again and applies the
 * field's conflict rule.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "agent/connectors/ifs/ifs.h"
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

enum { IFS_PAGING_NEXT = 0, IFS_PAGING_TOP = 1 };

struct ifs_conf {
    char *type;
    char *base_url;
    char *ns;
    char *token_url;
    char *client_id;
    char *client_secret;
    char *scope;
    long page_size;
    int paging;
    long write_attempts;
    int page_check;
    long timeout_s;
    int tls_insecure;
};

static const struct conf_key ifs_keys[] = {
    { "type", CONF_STR, offsetof(struct ifs_conf, type), NULL, "\"ifs\"", 0, 0, NULL },
    { "base_url", CONF_URL, offsetof(struct ifs_conf, base_url), NULL,
      "the IFS Cloud system URL, e.g. https://acme.ifs.cloud", 0, 0, NULL },
    { "namespace", CONF_STR, offsetof(struct ifs_conf, ns), NULL,
      "the IAM realm (namespace) of the token endpoint", 0, 0, NULL },
    { "token_url", CONF_STR, offsetof(struct ifs_conf, token_url), "",
      "token endpoint; \"\" = {base_url}/auth/realms/{namespace}/protocol/openid-connect/token",
      0, 0, NULL },
    { "client_id", CONF_STR, offsetof(struct ifs_conf, client_id), NULL, "IAM client id", 0, 0,
      NULL },
    { "client_secret", CONF_SECRET, offsetof(struct ifs_conf, client_secret), NULL,
      "IAM client secret, e.g. secret:ifs.client_secret", 0, 0, NULL },
    { "scope", CONF_STR, offsetof(struct ifs_conf, scope), "openid microprofile-jwt",
      "token scope", 0, 0, NULL },
    { "page_size", CONF_INT, offsetof(struct ifs_conf, page_size), "5000",
      "rows per page (Prefer: odata.maxpagesize, or $top)", 1, 5000, NULL },
    { "paging", CONF_ENUM, offsetof(struct ifs_conf, paging), "next_link",
      "next_link (server-driven, @odata.nextLink) or top_skip ($top/$skip)", 0, 0,
      "next_link|top_skip" },
    { "page_check", CONF_BOOL, offsetof(struct ifs_conf, page_check), "true",
      "before each later page, a one-row query checks the page starts right after the last row "
      "read (needed where next links or $skip count by offset; one call per page)", 0, 0, NULL },
    { "write_attempts", CONF_INT, offsetof(struct ifs_conf, write_attempts), "4",
      "PATCH/action attempts per write-back (each 412 reads the record again)", 1, 20, NULL },
    { "timeout_s", CONF_INT, offsetof(struct ifs_conf, timeout_s), "60", "per request", 1, 600,
      NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct ifs_conf, tls_insecure), "false",
      "skip TLS verification (labs only)", 0, 0, NULL },
    { 0 },
};

/* Where a flow's records live: from its "source" object, or a write-back
 * action's own members. */
struct ifs_src {
    char projection[128];
    char set[128];
    int intapi; /* /int/ifsapplications/entity/v1 */
    struct ifs_shape sh;
    char keybuf[IFS_MAX_KEYS][64];
    char changed[64];
    int numeric[IFS_MAX_KEYS];
    int numeric_set;     /* numeric_keys configured; else $metadata says */
    const cJSON *select; /* array of property names, or NULL */
    const char *filter;  /* extra $filter, ANDed; NULL = none */
};

struct ifs {
    struct ifs_conf cf;
    char path[128]; /* "systems.<name>" */
    struct auth *auth;
    char *secret;
    /* the run in progress */
    char *next_link;
    cJSON *start;   /* cursor the current query started after (NULL = beginning) */
    cJSON *last;    /* cursor of the last row delivered */
    long skip;      /* top_skip: rows of the current query read so far */
    int requery;    /* continue with a fresh keyset query after last */
    int start_whole_day; /* start holds the stored cursor: a date-only one reads its day again */
    /* $metadata of one service, for write-back discovery */
    char *meta_root;
    char *meta_xml;
    size_t meta_len;
    /* what fetch() read last: the core decides on it, write_back() uses its ETag */
    char *seen_url;
    char *seen_etag;
    cJSON *seen_data;
    long long seen_ms;  /* when (monotonic): only a fresh read is the core's decision */
};

#define SEEN_FRESH_MS 10000 /* fetch() then write_back() is one decision of the core */

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------- sources */

static int name_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) >= 64) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_') {
            return 0;
        }
    }
    return 1;
}

/* The source object (or write-back action) at path; need_changed: polling. */
static int src_parse(const cJSON *o, const char *path, int need_changed, struct ifs_src *s,
                     struct mlc_errbuf *err)
{
    const char *proj = mlc_json_str(o, "projection"), *set = mlc_json_str(o, "entity_set");
    const char *api = mlc_json_str(o, "api"), *ch = mlc_json_str(o, "changed");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(o, "key");
    const cJSON *num = cJSON_GetObjectItemCaseSensitive(o, "numeric_keys"), *it;
    const cJSON *sel = cJSON_GetObjectItemCaseSensitive(o, "select");
    const cJSON *flt = cJSON_GetObjectItemCaseSensitive(o, "filter");

    memset(s, 0, sizeof(*s));
    if (!name_ok(proj)) {
        mlc_errf(err, "%s.projection: required: the projection name without .svc, e.g. "
                      "\"PurchaseOrderHandling\" (letters, digits, _)", path);
        return -1;
    }
    if (!name_ok(set)) {
        mlc_errf(err, "%s.entity_set: required: the entity set, e.g. \"PurchaseOrderSet\"", path);
        return -1;
    }
    snprintf(s->projection, sizeof(s->projection), "%s", proj);
    snprintf(s->set, sizeof(s->set), "%s", set);
    if (api != NULL && strcmp(api, "int") != 0 && strcmp(api, "main") != 0) {
        mlc_errf(err, "%s.api: '%s' is not main (projection APIs) or int (entity services)", path,
                 api);
        return -1;
    }
    s->intapi = api != NULL && strcmp(api, "int") == 0;
    if (cJSON_IsString(key)) {
        if (!name_ok(key->valuestring)) {
            mlc_errf(err, "%s.key: '%s' is not a property name", path, key->valuestring);
            return -1;
        }
        snprintf(s->keybuf[0], 64, "%s", key->valuestring);
        s->sh.n_keys = 1;
    } else if (cJSON_IsArray(key) && cJSON_GetArraySize(key) >= 1 &&
               cJSON_GetArraySize(key) <= IFS_MAX_KEYS) {
        cJSON_ArrayForEach(it, key)
        {
            if (!cJSON_IsString(it) || !name_ok(it->valuestring)) {
                mlc_errf(err, "%s.key: every entry must be a property name", path);
                return -1;
            }
            snprintf(s->keybuf[s->sh.n_keys++], 64, "%s", it->valuestring);
        }
    } else {
        mlc_errf(err, "%s.key: required: the key property, e.g. \"OrderNo\", or a list of up to %d "
                      "for a composite key", path, IFS_MAX_KEYS);
        return -1;
    }
    for (int i = 0; i < s->sh.n_keys; i++) {
        s->sh.keys[i] = s->keybuf[i];
    }
    if (num != NULL) {
        s->numeric_set = 1;
        if (!cJSON_IsArray(num)) {
            mlc_errf(err, "%s.numeric_keys: expected a list of the key properties that are numbers",
                     path);
            return -1;
        }
        cJSON_ArrayForEach(it, num)
        {
            int found = 0;
            for (int i = 0; cJSON_IsString(it) && i < s->sh.n_keys; i++) {
                if (strcmp(it->valuestring, s->keybuf[i]) == 0) {
                    s->numeric[i] = found = 1;
                }
            }
            if (!found) {
                mlc_errf(err, "%s.numeric_keys: every entry must be one of the key properties",
                         path);
                return -1;
            }
        }
    }
    if (ch != NULL) {
        if (!name_ok(ch)) {
            mlc_errf(err, "%s.changed: '%s' is not a property name", path, ch);
            return -1;
        }
        snprintf(s->changed, sizeof(s->changed), "%s", ch);
        s->sh.changed = s->changed;
    } else if (need_changed) {
        mlc_errf(err, "%s.changed: required: the change or creation date property the cursor "
                      "follows (Edm.Date or Edm.DateTimeOffset, see the set's $metadata)", path);
        return -1;
    }
    if (sel != NULL) {
        if (!cJSON_IsArray(sel)) {
            mlc_errf(err, "%s.select: expected a list of property names", path);
            return -1;
        }
        cJSON_ArrayForEach(it, sel)
        {
            if (!cJSON_IsString(it) || !name_ok(it->valuestring)) {
                mlc_errf(err, "%s.select: every entry must be a property name", path);
                return -1;
            }
        }
        s->select = sel;
    }
    if (flt != NULL) {
        if (!cJSON_IsString(flt) || strlen(flt->valuestring) > 2000) {
            mlc_errf(err, "%s.filter: expected an OData $filter expression, e.g. "
                          "\"Objstate eq 'Released'\"", path);
            return -1;
        }
        s->filter = flt->valuestring[0] ? flt->valuestring : NULL;
    }
    return 0;
}

static char *service_root(const struct ifs *p, const struct ifs_src *s)
{
    return mlc_xasprintf("%s/%s/%s.svc", p->cf.base_url,
                         s->intapi ? "int/ifsapplications/entity/v1"
                                   : "main/ifsapplications/projection/v1",
                         s->projection);
}

/* $select list: the configured properties plus the keys and change date. */
static void add_select(struct mlc_buf *b, const struct ifs_src *s)
{
    const cJSON *it;
    int n = 0;

    if (s->select == NULL) {
        return;
    }
    mlc_buf_adds(b, "$select=");
    for (int i = -1; i < s->sh.n_keys; i++) {
        const char *k = i < 0 ? s->sh.changed : s->sh.keys[i];
        if (k != NULL) {
            mlc_buf_addf(b, "%s%s", n++ ? "," : "", k);
        }
    }
    cJSON_ArrayForEach(it, s->select)
    {
        int dup = s->sh.changed != NULL && strcmp(it->valuestring, s->sh.changed) == 0;
        for (int i = 0; i < s->sh.n_keys; i++) {
            dup |= strcmp(it->valuestring, s->sh.keys[i]) == 0;
        }
        if (!dup) {
            mlc_buf_addf(b, ",%s", it->valuestring);
        }
    }
    mlc_buf_adds(b, "&");
}

/* The collection query: rows after `after` (NULL = all), ordered by
 * (changed, keys); top > 0 adds $top (and skip > 0 $skip); keys_only selects
 * just the cursor's parts (the probe). */
static char *query_url(const struct ifs *p, const struct ifs_src *s, const cJSON *after, long top,
                       long skip, int keys_only, int whole_day)
{
    struct mlc_buf q = MLC_BUF_INIT, f = MLC_BUF_INIT;
    char *root = service_root(p, s), *url;

    if (keys_only) {
        struct ifs_src k = *s;
        cJSON *empty = mlc_json_xarr();
        k.select = empty;
        for (int i = 0; i < k.sh.n_keys; i++) {
            k.sh.keys[i] = k.keybuf[i];
        }
        k.sh.changed = s->sh.changed != NULL ? k.changed : NULL;
        add_select(&q, &k);
        cJSON_Delete(empty);
    } else {
        add_select(&q, s);
    }
    if (s->filter != NULL) {
        mlc_buf_addf(&f, "(%s)", s->filter);
    }
    if (after != NULL && whole_day && cJSON_IsString(cJSON_GetArrayItem(after, 0)) &&
        strlen(cJSON_GetArrayItem(after, 0)->valuestring) == 10) {
        /* a change date without a time: rows changed later that day may sort
         * before the cursor's key, so a run reads the cursor's whole day again
         * (unchanged rows cost no write: the pipeline compares content) */
        mlc_buf_addf(&f, "%s%s ge %s", f.len ? " and " : "", s->sh.changed,
                     cJSON_GetArrayItem(after, 0)->valuestring);
    } else if (after != NULL) {
        struct mlc_buf a = MLC_BUF_INIT;
        if (ifs_after_filter(&a, &s->sh, after) == 0) {
            mlc_buf_addf(&f, "%s%s", f.len ? " and " : "", mlc_buf_str(&a));
        }
        mlc_buf_release(&a);
    }
    if (f.len) {
        mlc_buf_adds(&q, "$filter=");
        mlc_http_urlencode(&q, mlc_buf_str(&f));
        mlc_buf_adds(&q, "&");
    }
    mlc_buf_adds(&q, "$orderby=");
    {
        struct mlc_buf o = MLC_BUF_INIT;
        if (s->sh.changed != NULL) {
            mlc_buf_addf(&o, "%s asc,", s->sh.changed);
        }
        for (int i = 0; i < s->sh.n_keys; i++) {
            mlc_buf_addf(&o, "%s asc%s", s->sh.keys[i], i + 1 < s->sh.n_keys ? "," : "");
        }
        mlc_http_urlencode(&q, mlc_buf_str(&o));
        mlc_buf_release(&o);
    }
    if (top > 0) {
        mlc_buf_addf(&q, "&$top=%ld", top);
    }
    if (skip > 0) {
        mlc_buf_addf(&q, "&$skip=%ld", skip);
    }
    url = mlc_xasprintf("%s/%s?%s", root, s->set, mlc_buf_str(&q));
    mlc_buf_release(&q);
    mlc_buf_release(&f);
    free(root);
    return url;
}

/* ------------------------------------------------------------- requests */

static enum mlc_rc ifs_resolve(struct conn *c)
{
    struct ifs *p = c->priv;
    struct auth_cc_conf cc = { 0 };
    char *url = NULL;
    enum mlc_rc rc;

    if (p->auth != NULL) {
        return MLC_OK;
    }
    rc = conn_secret(c, p->cf.client_secret, &p->secret);
    if (rc != MLC_OK) {
        return rc;
    }
    if (p->cf.token_url[0] == '\0') {
        url = mlc_xasprintf("%s/auth/realms/%s/protocol/openid-connect/token", p->cf.base_url,
                            p->cf.ns);
    }
    cc.token_url = url != NULL ? url : p->cf.token_url;
    cc.client_id = p->cf.client_id;
    cc.client_secret = p->secret;
    cc.scope = p->cf.scope;
    cc.style = AUTH_CC_POST; /* form fields, as IFS's sample shows (ifs-cloud.md 2) */
    p->auth = auth_client_credentials_new(&cc);
    free(url);
    return MLC_OK;
}

/* The URL without its query string, for messages. */
static void url_base(const char *url, char *out, size_t n)
{
    const char *q = strchr(url, '?');
    size_t k = q != NULL ? (size_t)(q - url) : strlen(url);

    snprintf(out, n, "%.*s", (int)(k < n ? k : n - 1), url);
}

/* One request through the auth provider. hdr: extra headers (NULL-ended,
 * may be NULL). On failure c->err says what failed; *code gets the OData
 * error code ("" when none). */
static enum mlc_rc ifs_send(struct conn *c, const char *method, const char *url,
                            const char *const *hdr, const char *body, const char *accept,
                            struct mlc_http_resp *resp, char *code, size_t ncode)
{
    struct ifs *p = c->priv;
    struct mlc_http_req rq = { 0 };
    const char *h[8];
    char acc[64], msg[400], where[300];
    enum mlc_rc rc;
    int n = 0;

    code[0] = '\0';
    rc = ifs_resolve(c);
    if (rc != MLC_OK) {
        return rc;
    }
    snprintf(acc, sizeof(acc), "Accept: %s", accept != NULL ? accept : "application/json");
    h[n++] = acc;
    for (int i = 0; hdr != NULL && hdr[i] != NULL && n < 7; i++) {
        h[n++] = hdr[i];
    }
    h[n] = NULL;
    rq.method = method;
    rq.url = url;
    rq.headers = h;
    rq.body = body;
    rq.body_len = body != NULL ? strlen(body) : 0;
    c->api_calls++;
    rc = auth_send(p->auth, c, &rq, resp);
    if (rc == MLC_OK) {
        return MLC_OK;
    }
    if (resp->status == 0) {
        if (rc == MLC_E_AUTH) {
            /* the token endpoint refused: the provider said why; name the settings */
            char prev[sizeof(c->err.msg)];
            snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "%s (settings %s.client_id, %s.client_secret, %s.namespace)", prev,
                     p->path, p->path, p->path);
        }
        return rc;
    }
    url_base(url, where, sizeof(where));
    ifs_error_parse(mlc_buf_str(&resp->body), resp->body.len, code, ncode, msg, sizeof(msg));
    mlc_err_reset(&c->err);
    if (resp->status == 401 || resp->status == 403) {
        mlc_errf(&c->err,
                 "ifs %s %s: refused with a fresh access token (HTTP %ld: %s): the IAM client's "
                 "service user needs a permission set granting this projection",
                 method, where, resp->status, msg);
        return MLC_E_AUTH;
    }
    mlc_errf(&c->err, "ifs %s %s failed (HTTP %ld%s%s: %s)", method, where, resp->status,
             code[0] ? ", " : "", code, msg);
    return rc;
}

/* ----------------------------------------------------------- connector */

static enum mlc_rc ifs_open(struct conn *c)
{
    struct ifs *p = mlc_xcalloc(1, sizeof(*p));
    enum mlc_rc rc;

    c->priv = p;
    snprintf(p->path, sizeof(p->path), "systems.%s", c->name);
    rc = mlc_conf_load(c->conf, p->path, ifs_keys, conn_common_allow, &p->cf, &c->err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(p->cf.type, "ifs") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"ifs\"", p->path);
        return MLC_E_INVAL;
    }
    if (!name_ok(p->cf.ns) && p->cf.token_url[0] == '\0') {
        mlc_errf(&c->err, "%s.namespace: '%s' is not an IAM realm name (letters, digits, _)",
                 p->path, p->cf.ns);
        return MLC_E_INVAL;
    }
    if (p->cf.token_url[0] != '\0' && strncmp(p->cf.token_url, "http://", 7) != 0 &&
        strncmp(p->cf.token_url, "https://", 8) != 0) {
        mlc_errf(&c->err, "%s.token_url: '%s' is not an http(s) URL", p->path, p->cf.token_url);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

static void run_reset(struct ifs *p)
{
    free(p->next_link);
    p->next_link = NULL;
    cJSON_Delete(p->start);
    p->start = NULL;
    cJSON_Delete(p->last);
    p->last = NULL;
    p->skip = 0;
    p->requery = 0;
    p->start_whole_day = 0;
}

static void seen_reset(struct ifs *p)
{
    free(p->seen_url);
    free(p->seen_etag);
    cJSON_Delete(p->seen_data);
    p->seen_url = p->seen_etag = NULL;
    p->seen_data = NULL;
}

static void ifs_close(struct conn *c)
{
    struct ifs *p = c->priv;

    if (p == NULL) {
        return;
    }
    run_reset(p);
    seen_reset(p);
    if (p->secret != NULL) {
        memset(p->secret, 0, strlen(p->secret));
    }
    free(p->secret);
    free(p->meta_root);
    free(p->meta_xml);
    auth_free(p->auth);
    mlc_conf_release(ifs_keys, &p->cf);
    free(p);
    c->priv = NULL;
}

static enum mlc_rc ifs_ping(struct conn *c)
{
    struct ifs *p = c->priv;
    enum mlc_rc rc = ifs_resolve(c);

    if (rc != MLC_OK) {
        return rc;
    }
    p->auth->renew_at_ms = 0;
    rc = p->auth->ops->renew(p->auth, c, 1);
    if (rc == MLC_E_AUTH) {
        char prev[sizeof(c->err.msg)];
        snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
        mlc_err_reset(&c->err);
        mlc_errf(&c->err, "%s (settings %s.client_id, %s.client_secret, %s.namespace)", prev,
                 p->path, p->path, p->path);
    } else if (rc == MLC_OK) {
        p->auth->have = 1;
    }
    return rc;
}

/* A 404 on a collection: unknown projection or set; say which settings. */
static void explain_404(struct conn *c, const struct ifs_src *s)
{
    char prev[sizeof(c->err.msg)];

    snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
    mlc_err_reset(&c->err);
    mlc_errf(&c->err,
             "%s: unknown projection or entity set: check the flow's source.projection ('%s') and "
             "source.entity_set ('%s') against the API Explorer, and that the IAM client's "
             "permission set grants the projection",
             prev, s->projection, s->set);
}

/* GET one page and parse it; the rows are appended to out. */
static enum mlc_rc get_page(struct conn *c, const struct ifs_src *s, const char *url, int prefer,
                            struct page *out, char **next, size_t *count)
{
    struct ifs *p = c->priv;
    struct mlc_http_resp resp = { 0 };
    char pref[64], code[64];
    const char *h[2] = { pref, NULL };
    enum mlc_rc rc;

    snprintf(pref, sizeof(pref), "Prefer: odata.maxpagesize=%ld", p->cf.page_size);
    rc = ifs_send(c, "GET", url, prefer ? h : NULL, NULL, NULL, &resp, code, sizeof(code));
    if (rc == MLC_E_NOTFOUND || (rc != MLC_OK && strcmp(code, "ODP_RESOURCE_NOTFOUND") == 0)) {
        explain_404(c, s);
        rc = MLC_E_INVAL;
    }
    if (rc == MLC_OK) {
        rc = ifs_parse_page(mlc_buf_str(&resp.body), resp.body.len, &s->sh, out, next, count,
                            &c->err);
    }
    mlc_http_resp_release(&resp);
    return rc;
}

/* The next link as an absolute URL (OData allows one relative to the service root). */
static char *absolute_link(const struct ifs *p, const struct ifs_src *s, const char *link)
{
    char *root, *u;

    if (strncmp(link, "http://", 7) == 0 || strncmp(link, "https://", 8) == 0) {
        return mlc_xstrdup(link);
    }
    if (link[0] == '/') {
        return mlc_xasprintf("%s%s", p->cf.base_url, link);
    }
    root = service_root(p, s);
    u = mlc_xasprintf("%s/%s", root, link);
    free(root);
    return u;
}

static int same_cursor(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The first row after p->last now: NULL cursor when there is none. */
static enum mlc_rc probe_after(struct conn *c, const struct ifs_src *s, char **cursor)
{
    struct ifs *p = c->priv;
    struct page pg = { 0 };
    char *url = query_url(p, s, p->last, 1, 0, 1, 0), *next = NULL;
    size_t n = 0;
    enum mlc_rc rc = get_page(c, s, url, 0, &pg, &next, &n);

    *cursor = NULL;
    if (rc == MLC_OK && pg.n > 0 && pg.recs[0].cursor != NULL) {
        *cursor = pg.recs[0].cursor;
        pg.recs[0].cursor = NULL;
    }
    free(next);
    free(url);
    page_release(&pg);
    return rc;
}

static enum mlc_rc ifs_poll(struct conn *c, const struct poll_req *rq, struct page *out)
{
    struct ifs *p = c->priv;
    struct ifs_src s;
    char *url = NULL, *next = NULL;
    size_t base = out->n, count = 0;
    int fresh;
    enum mlc_rc rc;

    if (src_parse(rq->source, "source", 1, &s, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    if (rq->first) {
        run_reset(p);
        if (rq->cursor != NULL && rq->cursor[0] != '\0') {
            p->start = ifs_cursor_parse(rq->cursor, &s.sh);
            p->start_whole_day = 1;
            if (p->start == NULL) {
                mlc_errf(&c->err,
                         "ifs: the stored cursor '%.200s' does not fit source %s/%s (key %s, "
                         "changed %s): was the flow's key or changed property edited? Reset the "
                         "flow's cursor to read it again from the start",
                         rq->cursor, s.projection, s.set, s.sh.keys[0], s.sh.changed);
                return MLC_E_INVAL;
            }
        }
    }
    fresh = rq->first || p->requery || (p->cf.paging == IFS_PAGING_NEXT && p->next_link == NULL);
    if (fresh && !rq->first) {
        /* a new keyset query from the last row delivered */
        cJSON_Delete(p->start);
        p->start = p->last != NULL ? cJSON_Duplicate(p->last, 1) : NULL;
        p->skip = 0;
        p->requery = 0;
        p->start_whole_day = 0;
    }
    for (int round = 0; round < 2; round++) {
        if (fresh) {
            url = query_url(p, &s, p->start,
                            p->cf.paging == IFS_PAGING_TOP ? p->cf.page_size : 0, 0, 0,
                            p->start_whole_day);
        } else if (p->cf.paging == IFS_PAGING_NEXT) {
            url = absolute_link(p, &s, p->next_link);
        } else {
            url = query_url(p, &s, p->start, p->cf.page_size, p->skip, 0, p->start_whole_day);
        }
        rc = get_page(c, &s, url, p->cf.paging == IFS_PAGING_NEXT, out, &next, &count);
        free(url);
        url = NULL;
        if (rc != MLC_OK) {
            goto out;
        }
        if (!fresh && p->last != NULL && p->cf.page_check) {
            /* continuity: the page must start at the first row after the last
             * one delivered (an offset-based next link or $skip slides when a
             * row read before moves to the end) */
            char *probe = NULL;
            const char *first = NULL;
            for (size_t i = base; i < out->n && first == NULL; i++) {
                first = out->recs[i].cursor;
            }
            rc = probe_after(c, &s, &probe);
            if (rc != MLC_OK) {
                goto out;
            }
            if (probe != NULL && !same_cursor(probe, first)) {
                conn_log(c, MLC_LOG_INFO,
                         "%s/%s: the rows moved while paging (the next page does not start at "
                         "the first row after the last one read); reading on with a fresh query "
                         "from the last row read", s.projection, s.set);
                while (out->n > base) {
                    record_release(&out->recs[--out->n]);
                }
                free(next);
                next = NULL;
                free(p->next_link);
                p->next_link = NULL;
                cJSON_Delete(p->start);
                p->start = cJSON_Duplicate(p->last, 1);
                p->skip = 0;
                p->start_whole_day = 0;
                fresh = 1;
                free(probe);
                continue;
            }
            free(probe);
        }
        break;
    }
    p->skip += (long)count;
    /* a row at or before the last one delivered is a repeat: drop it */
    if (p->last != NULL) {
        char *lastc = cJSON_PrintUnformatted(p->last);
        long long lt = ifs_time_ms(cJSON_GetArrayItem(p->last, 0)->valuestring);
        size_t w = base;
        for (size_t i = base; i < out->n; i++) {
            struct record *r = &out->recs[i];
            cJSON *rc0 = r->cursor != NULL ? ifs_cursor_parse(r->cursor, &s.sh) : NULL;
            int drop = r->cursor != NULL &&
                       (same_cursor(r->cursor, lastc) ||
                        (rc0 != NULL && ifs_time_ms(cJSON_GetArrayItem(rc0, 0)->valuestring) < lt));
            cJSON_Delete(rc0);
            if (drop) {
                record_release(r);
                continue;
            }
            out->recs[w++] = *r;
        }
        out->n = w;
        free(lastc);
    }
    for (size_t i = out->n; i-- > base;) {
        if (out->recs[i].cursor != NULL) {
            cJSON_Delete(p->last);
            p->last = ifs_cursor_parse(out->recs[i].cursor, &s.sh);
            break;
        }
    }
    free(p->next_link);
    p->next_link = NULL;
    if (p->cf.paging == IFS_PAGING_NEXT) {
        p->next_link = next;
        next = NULL;
        out->more = p->next_link != NULL;
        if (!out->more && count >= (size_t)p->cf.page_size && p->last != NULL) {
            /* a full page and no next link: a service that caps answers
             * without paging; read on after the last row */
            p->requery = 1;
            out->more = 1;
        }
    } else {
        out->more = count >= (size_t)p->cf.page_size && p->last != NULL;
    }
out:
    free(next);
    free(url);
    return rc;
}

/* The record's entity URL: {root}/{Set}(key predicate). */
static char *entity_url(struct conn *c, const struct ifs_src *s, const char *key)
{
    struct ifs *p = c->priv;
    struct mlc_buf kp = MLC_BUF_INIT, enc = MLC_BUF_INIT;
    char *root, *url;

    if (ifs_key_predicate(&kp, &s->sh, s->numeric, key) != 0) {
        mlc_errf(&c->err,
                 "ifs: key '%s' does not fit %s/%s (key %s%s, numeric_keys %s): cannot address "
                 "the record",
                 key, s->projection, s->set, s->sh.keys[0], s->sh.n_keys > 1 ? ", ..." : "",
                 s->numeric[0] ? "set" : "none");
        mlc_buf_release(&kp);
        return NULL;
    }
    /* keep ( ) = , ' as they are; encode the rest of the quoted values */
    for (const char *q = mlc_buf_str(&kp); *q; q++) {
        if (isalnum((unsigned char)*q) || strchr("()=,'-._~", *q) != NULL) {
            mlc_buf_add(&enc, q, 1);
        } else {
            mlc_buf_addf(&enc, "%%%02X", (unsigned char)*q);
        }
    }
    root = service_root(p, s);
    url = mlc_xasprintf("%s/%s%s", root, s->set, mlc_buf_str(&enc));
    free(root);
    mlc_buf_release(&kp);
    mlc_buf_release(&enc);
    return url;
}

/* GET one entity: *data NULL when it does not exist (404 on the key while
 * the set answers). *etag: the ETag header, else @odata.etag, else "". */
static enum mlc_rc get_entity(struct conn *c, const struct ifs_src *s, const char *url,
                              cJSON **data, char *etag, size_t n)
{
    struct ifs *p = c->priv;
    struct mlc_http_resp resp = { 0 };
    char code[64], *full;
    enum mlc_rc rc;
    struct mlc_buf q = MLC_BUF_INIT;

    *data = NULL;
    etag[0] = '\0';
    add_select(&q, s);
    full = q.len ? mlc_xasprintf("%s?%.*s", url, (int)q.len - 1, mlc_buf_str(&q))
                 : mlc_xstrdup(url);
    mlc_buf_release(&q);
    rc = ifs_send(c, "GET", full, NULL, NULL, NULL, &resp, code, sizeof(code));
    free(full);
    if (rc == MLC_E_NOTFOUND) {
        /* the record is gone, or the projection or set is unknown: ask the set */
        struct mlc_http_resp r2 = { 0 };
        char *root = service_root(p, s), *probe = mlc_xasprintf("%s/%s?$top=0", root, s->set);
        struct mlc_errbuf keep = c->err;
        enum mlc_rc rc2 = ifs_send(c, "GET", probe, NULL, NULL, NULL, &r2, code, sizeof(code));
        free(root);
        free(probe);
        mlc_http_resp_release(&r2);
        if (rc2 == MLC_OK) {
            mlc_err_reset(&c->err);
            rc = MLC_OK; /* the set answers: no such record */
        } else if (rc2 == MLC_E_NOTFOUND) {
            c->err = keep;
            explain_404(c, s);
            rc = MLC_E_INVAL;
        } else {
            rc = rc2;
        }
        goto out;
    }
    if (rc != MLC_OK) {
        goto out;
    }
    *data = mlc_json_parse(mlc_buf_str(&resp.body), resp.body.len, "IFS entity answer", &c->err);
    if (*data == NULL || !cJSON_IsObject(*data)) {
        if (*data != NULL) {
            mlc_errf(&c->err, "IFS entity answer is not a JSON object");
        }
        cJSON_Delete(*data);
        *data = NULL;
        rc = MLC_E_PROTO;
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(*data, "@odata.context");
    if (resp.etag[0]) {
        snprintf(etag, n, "%s", resp.etag);
    } else if (mlc_json_str(*data, "@odata.etag") != NULL) {
        snprintf(etag, n, "%s", mlc_json_str(*data, "@odata.etag"));
    }
out:
    mlc_http_resp_release(&resp);
    return rc;
}

static enum mlc_rc load_meta(struct conn *c, const struct ifs_src *s, struct ifs_meta *m,
                             const char *plan_path);
static void meta_key_types(const struct ifs *p, const struct ifs_meta *m, struct ifs_src *s);

static enum mlc_rc ifs_fetch(struct conn *c, const cJSON *source, const char *key,
                             struct record *out)
{
    struct ifs *p = c->priv;
    struct ifs_src s;
    char etag[256], *url;
    cJSON *data = NULL;
    enum mlc_rc rc;

    memset(out, 0, sizeof(*out));
    if (src_parse(source, "source", 0, &s, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    if (!s.numeric_set) {
        struct ifs_meta m;
        rc = load_meta(c, &s, &m, "source");
        if (rc != MLC_OK) {
            return rc;
        }
        meta_key_types(p, &m, &s);
    }
    url = entity_url(c, &s, key);
    if (url == NULL) {
        return MLC_E_INVAL;
    }
    rc = get_entity(c, &s, url, &data, etag, sizeof(etag));
    seen_reset(p);
    if (rc == MLC_OK && data != NULL) {
        out->key = mlc_xstrdup(key);
        out->data = data;
        if (s.sh.changed != NULL) {
            out->cursor = ifs_cursor_make(data, &s.sh);
        }
        p->seen_url = url;
        url = NULL;
        p->seen_etag = mlc_xstrdup(etag);
        p->seen_data = cJSON_Duplicate(data, 1);
        p->seen_ms = mono_ms();
    }
    free(url);
    return rc;
}

static long long ifs_cursor_time(struct conn *c, const char *cursor)
{
    cJSON *arr = cursor != NULL && cursor[0] == '[' ? cJSON_Parse(cursor) : NULL;
    const cJSON *c0 = cJSON_GetArrayItem(arr, 0);
    long long t = cJSON_IsString(c0) ? ifs_time_ms(c0->valuestring) : -1;

    (void)c;
    cJSON_Delete(arr);
    return t;
}

/* ------------------------------------------------------------ write-back */

/* One write-back action: where (its own members, or the flow's source the
 * connector saw), and what: a custom field with a value template, or a
 * bound state action with "done_when" (property -> template: the action has
 * taken effect when the record holds these). */
struct ifs_plan {
    char path[256];
    cJSON *where;      /* projection, entity_set, key, numeric_keys, api; NULL = the source's */
    char *custom_field; /* as configured; the real property comes from $metadata */
    char *value;        /* template */
    char *action;
    char **dw_names, **dw_tmpls;
    int n_dw;
    int if_match_any;
};

static const char *const ifs_wb_keys[] = { "custom_field", "value",        "action",
                                           "done_when",    "if_match",     "projection",
                                           "entity_set",   "key",          "numeric_keys",
                                           "api",          NULL };

static void ifs_plan_free(void *v)
{
    struct ifs_plan *pl = v;

    if (pl == NULL) {
        return;
    }
    cJSON_Delete(pl->where);
    free(pl->custom_field);
    free(pl->value);
    free(pl->action);
    for (int i = 0; i < pl->n_dw; i++) {
        free(pl->dw_names[i]);
        free(pl->dw_tmpls[i]);
    }
    free(pl->dw_names);
    free(pl->dw_tmpls);
    free(pl);
}

static void *ifs_plan_new(const cJSON *action, const char *path, const char *const *vars,
                          struct mlc_errbuf *err)
{
    const char *cf = mlc_json_str(action, "custom_field"), *act = mlc_json_str(action, "action");
    const char *val = mlc_json_str(action, "value"), *im = mlc_json_str(action, "if_match");
    const cJSON *dw = cJSON_GetObjectItemCaseSensitive(action, "done_when"), *it;
    struct ifs_plan *pl;
    char sub[400];

    if ((cf == NULL) == (act == NULL)) {
        mlc_errf(err, "%s: name either custom_field (a custom field to PATCH, e.g. \"JiraStatus\" "
                      "for Cf_JiraStatus) or action (a bound state action, e.g. \"Release\")",
                 path);
        return NULL;
    }
    if (!name_ok(cf != NULL ? cf : act)) {
        mlc_errf(err, "%s.%s: '%s' is not a property or action name (letters, digits, _)", path,
                 cf != NULL ? "custom_field" : "action", cf != NULL ? cf : act);
        return NULL;
    }
    if (im != NULL && strcmp(im, "etag") != 0 && strcmp(im, "any") != 0) {
        mlc_errf(err, "%s.if_match: '%s' is not etag (optimistic concurrency) or any "
                      "(If-Match: *)", path, im);
        return NULL;
    }
    pl = mlc_xcalloc(1, sizeof(*pl));
    snprintf(pl->path, sizeof(pl->path), "%s", path);
    pl->if_match_any = im != NULL && strcmp(im, "any") == 0;
    if (cJSON_GetObjectItemCaseSensitive(action, "projection") != NULL) {
        struct ifs_src s;
        if (src_parse(action, path, 0, &s, err) != 0) {
            ifs_plan_free(pl);
            return NULL;
        }
        pl->where = cJSON_Duplicate(action, 1);
    }
    if (cf != NULL) {
        pl->custom_field = mlc_xstrdup(cf);
        snprintf(sub, sizeof(sub), "%s.value", path);
        if (val != NULL && conn_tmpl_check(val, vars, sub, err) != 0) {
            ifs_plan_free(pl);
            return NULL;
        }
        if (val == NULL) {
            /* a field's new value, or the status code status_map gives */
            for (const char *const *v = vars; v != NULL && *v != NULL && val == NULL; v++) {
                if (strcmp(*v, "value") == 0) {
                    val = "{value}";
                } else if (strcmp(*v, "code") == 0) {
                    val = "{code}";
                }
            }
            if (val == NULL) {
                mlc_errf(err, "%s.value: required: the value template to write, e.g. \"{status}\"",
                         path);
                ifs_plan_free(pl);
                return NULL;
            }
        }
        pl->value = mlc_xstrdup(val);
    } else {
        pl->action = mlc_xstrdup(act);
        if (dw != NULL && !cJSON_IsObject(dw)) {
            mlc_errf(err, "%s.done_when: expected an object of property -> value template, e.g. "
                          "{\"Objstate\": \"Released\"}", path);
            ifs_plan_free(pl);
            return NULL;
        }
        if (dw != NULL) {
            pl->dw_names = mlc_xcalloc((size_t)cJSON_GetArraySize(dw) + 1, sizeof(char *));
            pl->dw_tmpls = mlc_xcalloc((size_t)cJSON_GetArraySize(dw) + 1, sizeof(char *));
            cJSON_ArrayForEach(it, dw)
            {
                snprintf(sub, sizeof(sub), "%s.done_when.%s", path, it->string);
                if (!cJSON_IsString(it) || conn_tmpl_check(it->valuestring, vars, sub, err) != 0) {
                    if (!err->set) {
                        mlc_errf(err, "%s: expected a string", sub);
                    }
                    ifs_plan_free(pl);
                    return NULL;
                }
                pl->dw_names[pl->n_dw] = mlc_xstrdup(it->string);
                pl->dw_tmpls[pl->n_dw++] = mlc_xstrdup(it->valuestring);
            }
        }
    }
    return pl;
}

static void ifs_plan_describe(const void *v, char *out, size_t n)
{
    const struct ifs_plan *pl = v;

    if (pl == NULL) {
        snprintf(out, n, "ifs ?");
    } else if (pl->custom_field != NULL) {
        snprintf(out, n, "ifs custom field %s", pl->custom_field);
    } else {
        snprintf(out, n, "ifs state action %s", pl->action);
    }
}

/* $metadata of the service, cached per service root. */
static enum mlc_rc load_meta(struct conn *c, const struct ifs_src *s, struct ifs_meta *m,
                             const char *plan_path)
{
    struct ifs *p = c->priv;
    char *root = service_root(p, s);
    enum mlc_rc rc = MLC_OK;

    if (p->meta_root == NULL || strcmp(p->meta_root, root) != 0) {
        struct mlc_http_resp resp = { 0 };
        char code[64], *url = mlc_xasprintf("%s/$metadata", root);
        rc = ifs_send(c, "GET", url, NULL, NULL, "application/xml", &resp, code, sizeof(code));
        free(url);
        if (rc == MLC_E_NOTFOUND) {
            explain_404(c, s);
            rc = MLC_E_INVAL;
        }
        if (rc == MLC_OK) {
            free(p->meta_root);
            free(p->meta_xml);
            p->meta_len = resp.body.len;
            p->meta_xml = mlc_buf_detach(&resp.body);
            if (p->meta_xml == NULL) {
                p->meta_xml = mlc_xstrdup("");
            }
            p->meta_root = root;
            root = NULL;
        }
        mlc_http_resp_release(&resp);
    }
    free(root);
    if (rc == MLC_OK && ifs_meta_entity(p->meta_xml, p->meta_len, s->set, m) != 0) {
        mlc_errf(&c->err, "%s: entity set %s is not in %s.svc/$metadata: check the projection "
                          "and entity_set of the flow (source, or this write-back action)",
                 plan_path, s->set, s->projection);
        rc = MLC_E_INVAL;
    }
    return rc;
}

static void text_of(const cJSON *data, const char *prop, char *out, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, prop);

    out[0] = '\0';
    if (v != NULL && !cJSON_IsNull(v) && mlc_json_scalar_text(v, out, n) != 0) {
        out[0] = '\0';
    }
}

/* Which key parts are numbers, as $metadata types them, where the flow names
 * no numeric_keys: IFS refuses a key predicate that quotes a number. */
static void meta_key_types(const struct ifs *p, const struct ifs_meta *m, struct ifs_src *s)
{
    if (s->numeric_set) {
        return;
    }
    for (int i = 0; i < s->sh.n_keys; i++) {
        s->numeric[i] = ifs_meta_numeric(p->meta_xml, p->meta_len, m, s->sh.keys[i]) == 1;
    }
}

static int done_holds(const struct ifs_plan *pl, const struct wb_write *w, const cJSON *data)
{
    if (pl->n_dw == 0) {
        return 0;
    }
    for (int i = 0; i < pl->n_dw; i++) {
        char now[256], *want = conn_tmpl_expand(pl->dw_tmpls[i], w->vars, w->n_vars);
        int ok;
        text_of(data, pl->dw_names[i], now, sizeof(now));
        ok = strcmp(now, want) == 0;
        free(want);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static enum mlc_rc ifs_write_back(struct conn *c, const struct wb_write *w)
{
    struct ifs *p = c->priv;
    const struct ifs_plan *pl = w->plan;
    const cJSON *where;
    struct ifs_src s;
    struct ifs_meta m;
    char prop[128] = "", act[128] = "", etag[256], code[64], base_val[256] = "";
    char *url = NULL, *value = NULL, *target = NULL, *body = NULL;
    int have_base = 0, written = 0;
    enum mlc_rc rc;

    if (pl == NULL) {
        mlc_errf(&c->err, "ifs write-back of %s: no action configured for this change",
                 w->source_key ? w->source_key : "?");
        return MLC_E_INVAL;
    }
    where = pl->where != NULL ? pl->where : w->source;
    if (where == NULL) {
        mlc_errf(&c->err, "%s: no source object to say where %s lives; name projection, "
                          "entity_set and key in the write-back action", pl->path,
                 w->source_key ? w->source_key : "?");
        return MLC_E_INVAL;
    }
    if (src_parse(where, pl->where != NULL ? pl->path : "source", 0, &s, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    rc = load_meta(c, &s, &m, pl->path);
    if (rc != MLC_OK) {
        return rc;
    }
    if (pl->custom_field != NULL &&
        ifs_meta_property(p->meta_xml, p->meta_len, &m, pl->custom_field, prop, sizeof(prop)) != 0) {
        struct mlc_buf names = MLC_BUF_INIT;
        for (int i = 0; i < m.n_cf; i++) {
            mlc_buf_addf(&names, "%s%s", i ? ", " : "", m.cf_names[i]);
        }
        mlc_errf(&c->err,
                 "%s.custom_field: '%s' is not a property of %s in %s.svc/$metadata (custom "
                 "fields there: %s): check the name and that the custom field is published",
                 pl->path, pl->custom_field, m.type, s.projection,
                 names.len ? mlc_buf_str(&names) : "none");
        mlc_buf_release(&names);
        return MLC_E_INVAL;
    }
    if (pl->action != NULL &&
        ifs_meta_action(p->meta_xml, p->meta_len, &m, pl->action, act, sizeof(act)) != 0) {
        mlc_errf(&c->err,
                 "%s.action: '%s' is not a bound action of %s in %s.svc/$metadata: check the "
                 "state action's name",
                 pl->path, pl->action, m.type, s.projection);
        return MLC_E_INVAL;
    }
    meta_key_types(p, &m, &s);
    url = entity_url(c, &s, w->source_key);
    if (url == NULL) {
        return MLC_E_INVAL;
    }
    if (prop[0]) {
        cJSON *o = mlc_json_xobj();
        value = conn_tmpl_expand(pl->value, w->vars, w->n_vars);
        mlc_json_xadd_str(o, prop, value);
        body = mlc_json_print(o);
        cJSON_Delete(o);
        target = mlc_xstrdup(url);
    } else {
        body = mlc_xstrdup("{}");
        target = mlc_xasprintf("%s/%s.%s", url, m.ns, act);
    }
    rc = MLC_E_CONFLICT;
    for (long attempt = 0; attempt < p->cf.write_attempts; attempt++) {
        struct mlc_http_resp resp = { 0 };
        char hdr_if[300];
        const char *h[3] = { "Content-Type: application/json", hdr_if, NULL };
        cJSON *data = NULL;
        char now[256];

        if (attempt == 0 && p->seen_url != NULL && strcmp(p->seen_url, url) == 0 &&
            p->seen_data != NULL && mono_ms() - p->seen_ms < SEEN_FRESH_MS) {
            /* the record the core just decided on, and its ETag */
            data = cJSON_Duplicate(p->seen_data, 1);
            snprintf(etag, sizeof(etag), "%s", p->seen_etag);
        } else {
            rc = get_entity(c, &s, url, &data, etag, sizeof(etag));
            if (rc != MLC_OK) {
                break;
            }
            if (data == NULL) {
                mlc_errf(&c->err, "ifs %s %s no longer exists: %s not written", s.set,
                         w->source_key, prop[0] ? prop : act);
                rc = MLC_E_NOTFOUND;
                break;
            }
        }
        seen_reset(p);
        if (prop[0]) {
            text_of(data, prop, now, sizeof(now));
            if (strcmp(now, value) == 0) {
                conn_log(c, MLC_LOG_INFO, "%s %s already has %s '%s'", s.set, w->source_key, prop,
                         value);
                cJSON_Delete(data);
                rc = MLC_OK;
                break;
            }
            if (have_base && strcmp(now, base_val) != 0) {
                int is_field = 0;
                for (size_t i = 0; i < w->n_vars; i++) {
                    is_field |= strcmp(w->vars[i].name, "value") == 0;
                }
                mlc_errf(&c->err,
                         "ifs %s %s: %s was changed in IFS to '%s' while the agent was writing "
                         "'%s' (it had '%s'): %s",
                         s.set, w->source_key, prop, now, value, base_val,
                         is_field ? "left to the field's conflict rule, which the next attempt "
                                    "applies after reading the record again"
                                  : "left to the flow's writeback.conflict (target_wins: the next "
                                    "attempt reads the record again and writes the status over "
                                    "it)");
                cJSON_Delete(data);
                rc = MLC_E_CONFLICT;
                break;
            }
            snprintf(base_val, sizeof(base_val), "%s", now);
            have_base = 1;
        } else {
            char st[128];
            text_of(data, "Objstate", st, sizeof(st));
            if (done_holds(pl, w, data)) {
                conn_log(c, MLC_LOG_INFO, "%s %s: %s has already taken effect", s.set,
                         w->source_key, act);
                cJSON_Delete(data);
                rc = MLC_OK;
                break;
            }
            if (have_base && strcmp(st, base_val) != 0) {
                mlc_errf(&c->err,
                         "ifs %s %s: its state changed in IFS to '%s' while the agent was calling "
                         "%s (it was '%s'): left to the next attempt, which reads it again",
                         s.set, w->source_key, st, act, base_val);
                cJSON_Delete(data);
                rc = MLC_E_CONFLICT;
                break;
            }
            snprintf(base_val, sizeof(base_val), "%s", st);
            have_base = 1;
        }
        cJSON_Delete(data);
        if (pl->if_match_any) {
            snprintf(hdr_if, sizeof(hdr_if), "If-Match: *");
        } else if (etag[0] == '\0') {
            mlc_errf(&c->err,
                     "ifs %s %s: IFS sent no ETag (header or @odata.etag) for the record, so it "
                     "cannot be written with If-Match; set %s.if_match to \"any\" to write "
                     "without the concurrency check",
                     s.set, w->source_key, pl->path);
            rc = MLC_E_REJECTED;
            break;
        } else {
            snprintf(hdr_if, sizeof(hdr_if), "If-Match: %s", etag);
        }
        rc = ifs_send(c, prop[0] ? "PATCH" : "POST", target, h, body, NULL, &resp, code,
                      sizeof(code));
        if (rc == MLC_OK) {
            written = 1;
            mlc_http_resp_release(&resp);
            break;
        }
        if (resp.status == 412 || strcmp(code, "MI_MODIFIED_ERROR") == 0) {
            /* stale ETag, or the projection's metadata cache was rebuilt: read
             * again and decide again */
            conn_log(c, MLC_LOG_INFO, "%s %s: %s (attempt %ld of %ld); reading it again", s.set,
                     w->source_key, resp.status == 412 ? "changed since read (412)" : code,
                     attempt + 1, p->cf.write_attempts);
            rc = MLC_E_CONFLICT;
            mlc_err_reset(&c->err);
            mlc_http_resp_release(&resp);
            continue;
        }
        if (resp.status == 423) {
            char prev[sizeof(c->err.msg)];
            snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "ifs %s %s is locked in IFS (HTTP 423), e.g. open for editing by a "
                              "person; written when the lock is released: %s",
                     s.set, w->source_key, prev);
            rc = MLC_E_NET; /* the core retries later */
        } else if (strcmp(code, "ODP_MISSING_PRECONDITION") == 0) {
            char prev[sizeof(c->err.msg)];
            snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "ifs %s %s: IFS says the If-Match precondition is missing although "
                              "the agent sent '%s' (a proxy dropping the header?): %s",
                     s.set, w->source_key, hdr_if, prev);
            rc = MLC_E_REJECTED;
        } else if (resp.status == 404 && prop[0] == '\0') {
            char prev[sizeof(c->err.msg)];
            snprintf(prev, sizeof(prev), "%s", mlc_err_msg(&c->err));
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "%s.action: IFS does not know %s.%s on %s: %s", pl->path, m.ns,
                     act, s.set, prev);
            rc = MLC_E_INVAL;
        }
        mlc_http_resp_release(&resp);
        break;
    }
    if (rc == MLC_E_CONFLICT && !c->err.set) {
        mlc_errf(&c->err, "ifs %s %s kept changing: %ld attempts ended in 412; the core tries "
                          "again later (systems.%s.write_attempts)",
                 s.set, w->source_key, p->cf.write_attempts, c->name);
    }
    if (rc == MLC_OK && written) {
        conn_log(c, MLC_LOG_INFO, "%s %s: %s%s%s written (audit %s)", s.set, w->source_key,
                 prop[0] ? prop : act, prop[0] ? " = " : "", prop[0] ? value : "",
                 w->audit_id != NULL ? w->audit_id : "-");
    }
    free(url);
    free(target);
    free(value);
    free(body);
    return rc;
}

const struct connector connector_ifs = {
    .name = "ifs",
    .caps = CONN_SOURCE | CONN_WRITEBACK,
    .keys = ifs_keys,
    .open = ifs_open,
    .close = ifs_close,
    .ping = ifs_ping,
    .poll = ifs_poll,
    .fetch = ifs_fetch,
    .cursor_time = ifs_cursor_time,
    .wb_keys = ifs_wb_keys,
    .wb_plan = ifs_plan_new,
    .wb_plan_free = ifs_plan_free,
    .wb_describe = ifs_plan_describe,
    .write_back = ifs_write_back,
};
