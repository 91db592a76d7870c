/* SPDX-License-Identifier: Apache-2.0
 * psft: PeopleSoft FSCM source connector over Integration Broker REST
 * (peoplesoft.md). URLs are
 *   {base_url}/PSIGW/RESTListeningConnector/{node}/{OPERATION}.v{N}/...
 * Two read paths, chosen per flow: the delivered Query Access Services
 * (ExecuteQuery.v1, prompts for the window) and a customer's list services
 * (section 9 contract: fromDttm/toDttm, "truncated"). Auth: HTTP Basic with
 * an OPRID, a fixed bearer token, or an OAuth 2.0 access token from the
 * customer's IdP (client_credentials), all through the shared providers.
 *
 * A run reads every record whose change time is at or after the cursor:
 * windows on the cursor column, split while capped (psft_read_window). A
 * record's change time is the later of its own stamp and its vendor's, so a
 * vendor rename re-sends the POs and vouchers that show the vendor: when the
 * vendor master has changes since the cursor, the records older than the
 * cursor are read too and those of the changed vendors kept. A run's records
 * are sorted in memory and handed out page by page.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "agent/connectors/psft/psft.h"
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

enum { PSFT_AUTH_BASIC = 0, PSFT_AUTH_BEARER, PSFT_AUTH_OAUTH };

struct psft_conf {
    char *type;
    char *base_url;
    char *node;
    int auth;
    char *user;
    char *password;
    char *token;
    char *token_url;
    char *client_id;
    char *client_secret;
    char *scope;
    int dttm_style;
    char *ping_path;
    long timeout_s;
    int tls_insecure;
};

static const struct conf_key psft_keys[] = {
    { "type", CONF_STR, offsetof(struct psft_conf, type), NULL, "\"psft\"", 0, 0, NULL },
    { "base_url", CONF_URL, offsetof(struct psft_conf, base_url), NULL,
      "Integration Gateway host and port, e.g. https://psft.example.com:8443", 0, 0, NULL },
    { "node", CONF_STR, offsetof(struct psft_conf, node), NULL,
      "default local node, e.g. PSFT_EP", 0, 0, NULL },
    { "auth", CONF_ENUM, offsetof(struct psft_conf, auth), "basic",
      "basic (OPRID + password), bearer (fixed token) or oauth (client_credentials at the IdP)",
      0, 0, "basic|bearer|oauth" },
    { "user", CONF_STR, offsetof(struct psft_conf, user), "", "OPRID (basic)", 0, 0, NULL },
    { "password", CONF_SECRET, offsetof(struct psft_conf, password), "",
      "OPRID password (basic), e.g. secret:psft.password", 0, 0, NULL },
    { "token", CONF_SECRET, offsetof(struct psft_conf, token), "", "bearer token (bearer)", 0, 0,
      NULL },
    { "token_url", CONF_STR, offsetof(struct psft_conf, token_url), "",
      "the IdP's token endpoint (oauth; PeopleSoft has none)", 0, 0, NULL },
    { "client_id", CONF_STR, offsetof(struct psft_conf, client_id), "", "OAuth client id", 0, 0,
      NULL },
    { "client_secret", CONF_SECRET, offsetof(struct psft_conf, client_secret), "",
      "OAuth client secret", 0, 0, NULL },
    { "scope", CONF_STR, offsetof(struct psft_conf, scope), "", "OAuth scope (may be empty)", 0,
      0, NULL },
    { "datetime_format", CONF_ENUM, offsetof(struct psft_conf, dttm_style), "iso",
      "how window bounds are written: iso 2024-01-15T00:00:00, space 2024-01-15 00:00:00, "
      "psft 2024-01-15-00.00.00.000000",
      0, 0, "iso|space|psft" },
    { "ping_path", CONF_STR, offsetof(struct psft_conf, ping_path),
      "MLC_VNDR_LIST.v1/vendors?fromDttm=2999-01-01T00:00:00&toDttm=2999-01-01T00:00:01",
      "operation and path that `ping` reads (after the node); any cheap GET", 0, 0, NULL },
    { "timeout_s", CONF_INT, offsetof(struct psft_conf, timeout_s), "60", "per request", 1, 600,
      NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct psft_conf, tls_insecure), "false",
      "skip TLS verification (labs only)", 0, 0, NULL },
    { 0 },
};

enum { READ_QAS = 0, READ_SVC = 1 };
#define PSFT_MAX_CHILDREN 4

/* One read path: QAS query or custom service, with its window inputs. */
struct psft_path {
    int read;
    char *owner, *query;      /* qas */
    char *operation, *path;   /* service */
    const cJSON *params;      /* service: fixed query parameters (object), lent */
    const cJSON *prompts;     /* qas: fixed prompts name -> value (object), lent */
    char *from_name, *to_name; /* window prompt / parameter names */
    char *after_param;        /* service: after-key parameter, "" = none */
    char *maxrows_param;      /* service: the parameter that carries maxrows, "" = none */
    const cJSON *after_prompts; /* qas: two prompt names, NULL = none (or the defaults) */
    char *after_default[2];   /* qas: AFTER_<K1>, AFTER_<K2> when after_prompts is not set */
    const cJSON *key_names;   /* two prompt (qas) or parameter (service) names that select
                               * one record by key, NULL = no by-key read (fetch) */
    int sorted;               /* answers come sorted by the cursor column, then key */
    /* qas: child queries read over the same windows; their rows become arrays
     * of the record (e.g. "lines" from a PO_LINE query, "comments") */
    char *child_name[PSFT_MAX_CHILDREN];
    char *child_query[PSFT_MAX_CHILDREN];
    int n_children;
    const char *child;        /* set on the copy that reads one child query */
    char *list;               /* service list member, "" = the kind's */
    char *cursor_col;
    long maxrows;
    int kind;
};

struct psft_source {
    struct psft_path main;
    struct psft_path vendors; /* vendors.read == -1: no vendor join */
    int have_vendors;
    char *terms_col;
    long page_size;
    long long since;
};

struct psft {
    struct psft_conf cf;
    char path[128];      /* "systems.<name>" */
    struct auth *auth;
    char *secret;        /* resolved password / token / client secret */
    struct psft_source src;
    int have_src;
    /* the run in progress: its records in cursor order, handed out by page */
    struct psft_batch run;
    size_t run_pos;
    struct psft_vendors vendors;
    char *run_cursor;  /* the cursor the run in progress started from ("" = none) */
    char *done_cursor; /* where the last run this process finished ended, NULL = none */
    char *last_cursor; /* the last cursor handed out in the run in progress */
    cJSON *run_source;  /* a copy of the flow source of the run in progress */
    cJSON *done_source; /* ... and of the last finished run (done_cursor) */
};

/* ---------------------------------------------------------------- config */

static int name_ok(const char *s, const char *extra)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 64) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && strchr(extra, *p) == NULL) {
            return 0;
        }
    }
    return 1;
}

/* "NAME.vN" */
static int operation_ok(const char *s)
{
    const char *v = s != NULL ? strrchr(s, '.') : NULL;

    if (v == NULL || v == s || v[1] != 'v' || !isdigit((unsigned char)v[2])) {
        return 0;
    }
    for (const char *p = v + 2; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            return 0;
        }
    }
    for (const char *p = s; p < v; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_') {
            return 0;
        }
    }
    return 1;
}

/* A string member of o, or dflt; NULL (with err) when present but not a string. */
static int str_member(const cJSON *o, const char *key, const char *dflt, char **out,
                      const char *path, struct mlc_errbuf *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);

    *out = NULL;
    if (it == NULL) {
        *out = mlc_xstrdup(dflt);
        return 0;
    }
    if (!cJSON_IsString(it)) {
        mlc_errf(err, "%s.%s: expected a string", path, key);
        return -1;
    }
    *out = mlc_xstrdup(it->valuestring);
    return 0;
}

static void path_release(struct psft_path *p)
{
    free(p->owner);
    free(p->query);
    free(p->operation);
    free(p->path);
    free(p->from_name);
    free(p->to_name);
    free(p->after_param);
    free(p->maxrows_param);
    free(p->list);
    free(p->cursor_col);
    free(p->after_default[0]);
    free(p->after_default[1]);
    for (int i = 0; i < p->n_children; i++) {
        free(p->child_name[i]);
        free(p->child_query[i]);
    }
    memset(p, 0, sizeof(*p));
}

static void source_release(struct psft_source *s)
{
    path_release(&s->main);
    path_release(&s->vendors);
    free(s->terms_col);
    memset(s, 0, sizeof(*s));
}

static const char *const path_keys[] = {
    "system", "kind", "read", "owner", "query", "prompts", "operation", "path", "params",
    "from", "to", "after_param", "after_prompts", "list", "cursor_column", "maxrows",
    "vendors", "terms_column", "page_size", "since", "key_prompts", "key_params", "sorted",
    "maxrows_param", "children", NULL,
};

/* A flat object of scalar values (prompts, params). */
static int flat_object(const cJSON *o, const char *path, const char *key, struct mlc_errbuf *err)
{
    const cJSON *it;

    if (o == NULL) {
        return 0;
    }
    if (!cJSON_IsObject(o)) {
        mlc_errf(err, "%s.%s: expected an object of name -> value", path, key);
        return -1;
    }
    cJSON_ArrayForEach(it, o)
    {
        if (!cJSON_IsString(it) && !cJSON_IsNumber(it)) {
            mlc_errf(err, "%s.%s.%s: expected a string or number", path, key, it->string);
            return -1;
        }
        if (cJSON_IsString(it) && strchr(it->valuestring, ',') != NULL && strcmp(key, "prompts") == 0) {
            mlc_errf(err,
                     "%s.%s.%s: '%s' contains a comma, which QAS prompt lists cannot carry "
                     "(values are comma-separated)",
                     path, key, it->string, it->valuestring);
            return -1;
        }
    }
    return 0;
}

static int path_load(const cJSON *o, const char *path, int kind, struct psft_path *p,
                     struct mlc_errbuf *err)
{
    const struct psft_kind_def *kd = psft_kind_def(kind);
    const char *read = mlc_json_str(o, "read");
    const char *unknown = mlc_conf_unknown_member(o, NULL, path_keys);
    const cJSON *mr;

    memset(p, 0, sizeof(*p));
    p->kind = kind;
    if (unknown != NULL) {
        mlc_errf(err, "%s.%s: unknown setting", path, unknown);
        return -1;
    }
    if (read == NULL || (strcmp(read, "qas") != 0 && strcmp(read, "service") != 0)) {
        mlc_errf(err,
                 "%s.read: required: \"qas\" (Query Access Services, a query with date-time "
                 "prompts) or \"service\" (a custom list service operation)",
                 path);
        return -1;
    }
    p->read = strcmp(read, "qas") == 0 ? READ_QAS : READ_SVC;
    if (str_member(o, "cursor_column", kd->stamp, &p->cursor_col, path, err) != 0) {
        return -1;
    }
    if (!name_ok(p->cursor_col, "")) {
        mlc_errf(err, "%s.cursor_column: '%s' is not a column name", path, p->cursor_col);
        return -1;
    }
    if (psft_column_date_only(p->cursor_col)) {
        mlc_errf(err,
                 "%s.cursor_column: %s is a date column (no time): it cannot be a cursor, every "
                 "change on one day would look alike; name a date-time column such as "
                 "LAST_DTTM_UPDATE or LASTUPDDTTM",
                 path, p->cursor_col);
        return -1;
    }
    mr = cJSON_GetObjectItemCaseSensitive(o, "maxrows");
    p->maxrows = 1000;
    if (mr != NULL) {
        if (!cJSON_IsNumber(mr) || mr->valuedouble < 2 || mr->valuedouble > 100000 ||
            mr->valuedouble != (double)(long)mr->valuedouble) {
            mlc_errf(err, "%s.maxrows: expected a whole number from 2 to 100000 (the most rows "
                          "one answer carries)", path);
            return -1;
        }
        p->maxrows = (long)mr->valuedouble;
    }
    if (str_member(o, "list", "", &p->list, path, err) != 0) {
        return -1;
    }
    {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "sorted");
        if (so != NULL && !cJSON_IsBool(so)) {
            mlc_errf(err, "%s.sorted: expected true or false (true: the query or service sorts its "
                          "rows by %s, then key, before it cuts them at maxrows)", path, p->cursor_col);
            return -1;
        }
        p->sorted = cJSON_IsTrue(so);
    }
    {
        const char *kn = p->read == READ_QAS ? "key_prompts" : "key_params";
        const char *other = p->read == READ_QAS ? "key_params" : "key_prompts";
        p->key_names = cJSON_GetObjectItemCaseSensitive(o, kn);
        if (cJSON_GetObjectItemCaseSensitive(o, other) != NULL) {
            mlc_errf(err, "%s.%s: only for read \"%s\" (this path reads with %s)", path, other,
                     p->read == READ_QAS ? "service" : "qas", kn);
            return -1;
        }
        if (p->key_names != NULL &&
            (!cJSON_IsArray(p->key_names) || cJSON_GetArraySize(p->key_names) != 2 ||
             !cJSON_IsString(p->key_names->child) || !cJSON_IsString(p->key_names->child->next) ||
             !name_ok(p->key_names->child->valuestring, "") ||
             !name_ok(p->key_names->child->next->valuestring, ""))) {
            mlc_errf(err, "%s.%s: expected two names, for %s and %s (they select one record)",
                     path, kn, kd->k1, kd->k2);
            return -1;
        }
    }
    if (p->read == READ_QAS) {
        if (str_member(o, "owner", "PUBLIC", &p->owner, path, err) != 0 ||
            str_member(o, "query", "", &p->query, path, err) != 0 ||
            str_member(o, "from", "FROM_DTTM", &p->from_name, path, err) != 0 ||
            str_member(o, "to", "TO_DTTM", &p->to_name, path, err) != 0) {
            return -1;
        }
        if (!name_ok(p->owner, "") ) {
            mlc_errf(err, "%s.owner: '%s' is not an owner type (PUBLIC or PRIVATE)", path, p->owner);
            return -1;
        }
        if (!name_ok(p->query, "")) {
            mlc_errf(err, "%s.query: required: the query name, e.g. \"MLC_PO_CHANGES\" (letters, "
                          "digits, _)", path);
            return -1;
        }
        if (!name_ok(p->from_name, "") || !name_ok(p->to_name, "")) {
            mlc_errf(err, "%s.from/to: prompt names must be letters, digits and _", path);
            return -1;
        }
        p->prompts = cJSON_GetObjectItemCaseSensitive(o, "prompts");
        if (flat_object(p->prompts, path, "prompts", err) != 0) {
            return -1;
        }
        p->after_prompts = cJSON_GetObjectItemCaseSensitive(o, "after_prompts");
        if (p->after_prompts != NULL && cJSON_IsArray(p->after_prompts) &&
            cJSON_GetArraySize(p->after_prompts) == 0) {
            p->after_prompts = NULL; /* [] : the query has none */
        } else if (p->after_prompts != NULL &&
                   (!cJSON_IsArray(p->after_prompts) || cJSON_GetArraySize(p->after_prompts) != 2 ||
                    !cJSON_IsString(p->after_prompts->child) ||
                    !cJSON_IsString(p->after_prompts->child->next) ||
                    !name_ok(p->after_prompts->child->valuestring, "") ||
                    !name_ok(p->after_prompts->child->next->valuestring, ""))) {
            mlc_errf(err, "%s.after_prompts: expected two prompt names, for %s and %s (the "
                          "query then returns the rows after that position in (%s, key) order), "
                          "or [] when it has none", path, kd->k1, kd->k2, p->cursor_col);
            return -1;
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "after_prompts") == NULL) {
            p->after_default[0] = mlc_xasprintf("AFTER_%s", kd->k1);
            p->after_default[1] = mlc_xasprintf("AFTER_%s", kd->k2);
        }
        {
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "children"), *it;
            if (ch != NULL && !cJSON_IsObject(ch)) {
                mlc_errf(err, "%s.children: expected an object of array name -> query, e.g. "
                              "{\"lines\": \"MLC_PO_LINE_QRY\"}", path);
                return -1;
            }
            cJSON_ArrayForEach(it, ch)
            {
                if (!cJSON_IsString(it) || !name_ok(it->valuestring, "") ||
                    !name_ok(it->string, "")) {
                    mlc_errf(err, "%s.children.%s: expected a query name (letters, digits, _)", path,
                             it->string);
                    return -1;
                }
                if (p->n_children == PSFT_MAX_CHILDREN) {
                    mlc_errf(err, "%s.children: at most %d child queries", path, PSFT_MAX_CHILDREN);
                    return -1;
                }
                p->child_name[p->n_children] = mlc_xstrdup(it->string);
                p->child_query[p->n_children] = mlc_xstrdup(it->valuestring);
                p->n_children++;
            }
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "operation") != NULL) {
            mlc_errf(err, "%s.operation: only for read \"service\" (QAS always calls "
                          "ExecuteQuery.v1)", path);
            return -1;
        }
        return 0;
    }
    if (str_member(o, "operation", "", &p->operation, path, err) != 0 ||
        str_member(o, "path", "", &p->path, path, err) != 0 ||
        str_member(o, "from", "fromDttm", &p->from_name, path, err) != 0 ||
        str_member(o, "to", "toDttm", &p->to_name, path, err) != 0 ||
        str_member(o, "after_param", "afterKey", &p->after_param, path, err) != 0 ||
        str_member(o, "maxrows_param", "maxRows", &p->maxrows_param, path, err) != 0) {
        return -1;
    }
    if (!operation_ok(p->operation)) {
        mlc_errf(err,
                 "%s.operation: '%s' is not a REST service operation with its version, e.g. "
                 "\"MLC_PO_LIST.v1\"",
                 path, p->operation);
        return -1;
    }
    for (const char *c = p->path; *c; c++) {
        if (!isalnum((unsigned char)*c) && strchr("_-./", *c) == NULL) {
            mlc_errf(err, "%s.path: '%s' may hold letters, digits and _ - . / only (the URI "
                          "template part, e.g. \"purchaseorders\")", path, p->path);
            return -1;
        }
    }
    if (!name_ok(p->from_name, "") || !name_ok(p->to_name, "") ||
        (p->after_param[0] != '\0' && !name_ok(p->after_param, "")) ||
        (p->maxrows_param[0] != '\0' && !name_ok(p->maxrows_param, ""))) {
        mlc_errf(err, "%s.from/to/after_param/maxrows_param: parameter names must be letters, "
                      "digits and _", path);
        return -1;
    }
    p->params = cJSON_GetObjectItemCaseSensitive(o, "params");
    if (flat_object(p->params, path, "params", err) != 0) {
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "query") != NULL ||
        cJSON_GetObjectItemCaseSensitive(o, "children") != NULL) {
        mlc_errf(err, "%s.%s: only for read \"qas\" (a service sends child rows inside each "
                      "record, e.g. \"lines\": [...])",
                 path, cJSON_GetObjectItemCaseSensitive(o, "query") != NULL ? "query" : "children");
        return -1;
    }
    return 0;
}

static int source_load_parts(const cJSON *src, struct psft_source *s, struct mlc_errbuf *err)
{
    const char *kind = mlc_json_str(src, "kind");
    const cJSON *vo = cJSON_GetObjectItemCaseSensitive(src, "vendors");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(src, "page_size");
    const char *since = mlc_json_str(src, "since");
    int k = psft_kind_parse(kind);

    memset(s, 0, sizeof(*s));
    if (k < 0) {
        mlc_errf(err, "source.kind: required: po, requisition, voucher or vendor (got '%s')",
                 kind ? kind : "");
        return -1;
    }
    if (path_load(src, "source", k, &s->main, err) != 0) {
        return -1;
    }
    s->page_size = 500;
    if (ps != NULL) {
        if (!cJSON_IsNumber(ps) || ps->valuedouble < 1 || ps->valuedouble > 10000) {
            mlc_errf(err, "source.page_size: expected a number from 1 to 10000");
            return -1;
        }
        s->page_size = (long)ps->valuedouble;
    }
    if (psft_dttm_parse(since ? since : "2000-01-01T00:00:00", &s->since) != 0 ||
        s->since % 1000000 != 0) {
        mlc_errf(err, "source.since: '%s' is not a date-time (YYYY-MM-DDTHH:MM:SS): the earliest "
                      "change the first run reads", since);
        return -1;
    }
    if (str_member(src, "terms_column", "PYMNT_TERMS_CD", &s->terms_col, "source", err) != 0) {
        return -1;
    }
    if (vo != NULL) {
        if (!psft_kind_def(k)->vendor_join) {
            mlc_errf(err, "source.vendors: only POs, requisitions and vouchers name a vendor (kind "
                          "is %s)", kind);
            return -1;
        }
        if (!cJSON_IsObject(vo)) {
            mlc_errf(err, "source.vendors: expected an object: how to read the vendor master "
                          "(read, operation/path or query, ...)");
            return -1;
        }
        if (path_load(vo, "source.vendors", PSFT_VNDR, &s->vendors, err) != 0) {
            return -1;
        }
        s->have_vendors = 1;
    }
    return 0;
}

/* The flow's source object, or -1 (err says which member, nothing held). */
static int source_load(const cJSON *src, struct psft_source *s, struct mlc_errbuf *err)
{
    if (source_load_parts(src, s, err) != 0) {
        source_release(s);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- requests */

/* value with the URL's reserved characters escaped; QAS prompt lists keep
 * their separating commas raw (peoplesoft.md 4), so values are escaped one
 * by one. */
static void add_param(struct mlc_buf *b, const char *name, const char *value)
{
    mlc_buf_adds(b, strchr(mlc_buf_str(b), '?') != NULL ? "&" : "?");
    mlc_http_urlencode(b, name);
    mlc_buf_adds(b, "=");
    mlc_http_urlencode(b, value);
}

static void scalar(const cJSON *it, char *out, size_t n)
{
    if (mlc_json_scalar_text(it, out, n) != 0) {
        out[0] = '\0';
    }
}

/* The QAS after-key prompt names (i = 0, 1), NULL when the query has none. */
static const char *qas_after(const struct psft_path *rp, int i)
{
    if (rp->after_prompts != NULL) {
        return i == 0 ? rp->after_prompts->child->valuestring
                      : rp->after_prompts->child->next->valuestring;
    }
    return rp->after_default[i];
}

/* The URL of one read. after1/after2: continue after that key (NULL: no). */
static char *read_url(struct psft *p, const struct psft_path *rp, long long from, long long to,
                      const char *after1, const char *after2, const char *const *key)
{
    struct mlc_buf b = { 0 };
    char f[40], t[40], v[256];
    const cJSON *it;

    psft_dttm_format(from, p->cf.dttm_style, f, sizeof(f));
    psft_dttm_format(to, p->cf.dttm_style, t, sizeof(t));
    mlc_buf_addf(&b, "%s/PSIGW/RESTListeningConnector/%s/", p->cf.base_url, p->cf.node);
    if (rp->read == READ_QAS) {
        struct mlc_buf names = { 0 }, vals = { 0 };

        mlc_buf_addf(&b, "ExecuteQuery.v1/%s/%s/JSON/NONFILE", rp->owner, rp->query);
        mlc_buf_addf(&b, "?isconnectedquery=n&maxrows=%ld", rp->maxrows);
        cJSON_ArrayForEach(it, rp->prompts)
        {
            scalar(it, v, sizeof(v));
            mlc_buf_adds(&names, names.len ? "," : "");
            mlc_http_urlencode(&names, it->string);
            mlc_buf_adds(&vals, vals.len || names.len > strlen(it->string) ? "," : "");
            mlc_http_urlencode(&vals, v);
        }
        mlc_buf_adds(&names, names.len ? "," : "");
        mlc_buf_adds(&names, rp->from_name);
        mlc_buf_adds(&names, ",");
        mlc_buf_adds(&names, rp->to_name);
        mlc_buf_adds(&vals, cJSON_GetArraySize(rp->prompts) > 0 ? "," : "");
        mlc_http_urlencode(&vals, f);
        mlc_buf_adds(&vals, ",");
        mlc_http_urlencode(&vals, t);
        if (after1 != NULL && (after1[0] != '\0' || after2[0] != '\0') && qas_after(rp, 0) != NULL) {
            /* ("", ""), the start of `from`, goes without them */
            mlc_buf_addf(&names, ",%s,%s", qas_after(rp, 0), qas_after(rp, 1));
            mlc_buf_adds(&vals, ",");
            mlc_http_urlencode(&vals, after1);
            mlc_buf_adds(&vals, ",");
            mlc_http_urlencode(&vals, after2);
        }
        if (key != NULL && rp->key_names != NULL) {
            mlc_buf_addf(&names, ",%s,%s", rp->key_names->child->valuestring,
                         rp->key_names->child->next->valuestring);
            mlc_buf_adds(&vals, ",");
            mlc_http_urlencode(&vals, key[0]);
            mlc_buf_adds(&vals, ",");
            mlc_http_urlencode(&vals, key[1]);
        }
        mlc_buf_addf(&b, "&prompt_uniquepromptname=%s&prompt_fieldvalue=%s&json_resp=true",
                     mlc_buf_str(&names), mlc_buf_str(&vals));
        mlc_buf_release(&names);
        mlc_buf_release(&vals);
        return mlc_buf_detach(&b);
    }
    mlc_buf_addf(&b, "%s%s%s", rp->operation, rp->path[0] ? "/" : "", rp->path);
    cJSON_ArrayForEach(it, rp->params)
    {
        scalar(it, v, sizeof(v));
        add_param(&b, it->string, v);
    }
    add_param(&b, rp->from_name, f);
    add_param(&b, rp->to_name, t);
    if (rp->maxrows_param[0] != '\0') {
        snprintf(v, sizeof(v), "%ld", rp->maxrows);
        add_param(&b, rp->maxrows_param, v);
    }
    if (after1 != NULL && rp->after_param[0] != '\0') {
        char *k = mlc_xasprintf("%s,%s", after1, after2);
        add_param(&b, rp->after_param, k);
        free(k);
    }
    if (key != NULL && rp->key_names != NULL) {
        add_param(&b, rp->key_names->child->valuestring, key[0]);
        add_param(&b, rp->key_names->child->next->valuestring, key[1]);
    }
    return mlc_buf_detach(&b);
}

/* "ExecuteQuery.v1 query X" / "operation Y", for messages. */
static void what_path(const struct psft_path *rp, char *out, size_t n)
{
    if (rp->read == READ_QAS) {
        snprintf(out, n, "query %s (ExecuteQuery.v1, owner %s)", rp->query, rp->owner);
    } else {
        snprintf(out, n, "operation %s%s%s", rp->operation, rp->path[0] ? "/" : "", rp->path);
    }
}

static enum mlc_rc psft_resolve(struct conn *c)
{
    struct psft *p = c->priv;
    struct auth_cc_conf cc = { 0 };
    enum mlc_rc rc;

    if (p->auth != NULL) {
        return MLC_OK;
    }
    switch (p->cf.auth) {
    case PSFT_AUTH_BASIC:
        rc = conn_secret(c, p->cf.password, &p->secret);
        if (rc != MLC_OK) {
            return rc;
        }
        p->auth = auth_basic_new(p->cf.user, p->secret);
        break;
    case PSFT_AUTH_BEARER:
        rc = conn_secret(c, p->cf.token, &p->secret);
        if (rc != MLC_OK) {
            return rc;
        }
        p->auth = auth_bearer_new(p->secret);
        break;
    default:
        rc = conn_secret(c, p->cf.client_secret, &p->secret);
        if (rc != MLC_OK) {
            return rc;
        }
        cc.token_url = p->cf.token_url;
        cc.client_id = p->cf.client_id;
        cc.client_secret = p->secret;
        cc.scope = p->cf.scope[0] ? p->cf.scope : NULL;
        cc.style = AUTH_CC_BASIC;
        p->auth = auth_client_credentials_new(&cc);
        break;
    }
    return MLC_OK;
}

/* The URL without its query string, for messages. */
static void url_base(const char *url, char *out, size_t n)
{
    const char *q = strchr(url, '?');
    size_t k = q != NULL ? (size_t)(q - url) : strlen(url);

    snprintf(out, n, "%.*s", (int)(k < n ? k : n - 1), url);
}

/* One GET through the auth provider (renewed once on a refusal; 429/503
 * and 5xx retried in mlc_http). On failure c->err holds one line saying what
 * to fix; body errors of a 2xx answer are the caller's to find. */
static enum mlc_rc psft_get(struct conn *c, const char *url, const char *what,
                            struct mlc_http_resp *resp)
{
    static const char *const hdrs[] = { "Accept: application/json", NULL };
    struct psft *p = c->priv;
    struct mlc_http_req rq = { 0 };
    enum mlc_rc rc;
    char msg[320], where[300];

    rc = psft_resolve(c);
    if (rc != MLC_OK) {
        return rc;
    }
    rq.method = "GET";
    rq.url = url;
    rq.headers = hdrs;
    c->api_calls++;
    rc = auth_send(p->auth, c, &rq, resp);
    if (rc == MLC_OK) {
        return MLC_OK;
    }
    url_base(url, where, sizeof(where));
    psft_error_text(mlc_buf_str(&resp->body), resp->body.len, msg, sizeof(msg));
    if (resp->status == 0 && rc == MLC_E_AUTH && p->cf.auth != PSFT_AUTH_OAUTH) {
        /* refused, and a fixed credential cannot be renewed: auth_send gave
         * up without a second answer */
        resp->status = 401;
    } else if (resp->status == 0) {
        return rc; /* transport, or the IdP's token call failed: that message stays */
    }
    if (resp->status != 401 && resp->status != 403 &&
        psft_is_ibresponse(mlc_buf_str(&resp->body), resp->body.len)) {
        /* the framework failed before any handler ran (peoplesoft.md 8):
         * an unknown node, operation or version, or an inactive one */
        char lower[320];
        char fixed[300];
        size_t i;
        for (i = 0; msg[i] && i + 1 < sizeof(lower); i++) {
            lower[i] = (char)tolower((unsigned char)msg[i]);
        }
        lower[i] = '\0';
        if (strstr(lower, "node") != NULL) {
            snprintf(fixed, sizeof(fixed),
                     "check systems.%s.node ('%s'): it must be the database's default local node",
                     c->name, p->cf.node);
        } else if (strstr(lower, "operation") != NULL || strstr(lower, "service") != NULL ||
                   strstr(lower, "version") != NULL) {
            snprintf(fixed, sizeof(fixed),
                     "check the flow's source operation/query (name, .vN version, active, granted "
                     "to the user) on node '%s'",
                     p->cf.node);
        } else {
            snprintf(fixed, sizeof(fixed),
                     "check systems.%s.node ('%s') and the flow's source operation/query (name, "
                     ".vN version, active)",
                     c->name, p->cf.node);
        }
        mlc_err_reset(&c->err);
        mlc_errf(&c->err, "psft %s: Integration Broker refused GET %s (HTTP %ld, %s): %s", what,
                 where, resp->status, msg, fixed);
        return rc == MLC_E_NET || rc == MLC_OK ? MLC_E_REJECTED : rc;
    }
    mlc_err_reset(&c->err);
    switch (resp->status) {
    case 401:
        if (p->cf.auth == PSFT_AUTH_BASIC) {
            mlc_errf(&c->err,
                     "psft %s: OPRID '%s' or its password was refused (HTTP 401 at %s): check "
                     "systems.%s.user and systems.%s.password",
                     what, p->cf.user, where, c->name, c->name);
        } else if (p->cf.auth == PSFT_AUTH_BEARER) {
            mlc_errf(&c->err,
                     "psft %s: the bearer token was refused (HTTP 401 at %s): it expired or is "
                     "invalid; put a new one in systems.%s.token",
                     what, where, c->name);
        } else {
            mlc_errf(&c->err,
                     "psft %s: a fresh access token from %s was refused too (HTTP 401 at %s: %s): "
                     "check that PeopleSoft trusts that IdP and maps the token's user to an OPRID, "
                     "and that the operation accepts OAuth2",
                     what, p->cf.token_url, where, msg[0] ? msg : "no reason given");
        }
        return MLC_E_AUTH;
    case 403:
        mlc_errf(&c->err,
                 "psft %s: user not authorised (HTTP 403 at %s: %s): grant the operation to a "
                 "permission list of OPRID '%s'",
                 what, where, msg, p->cf.user[0] ? p->cf.user : "(token user)");
        return MLC_E_AUTH;
    case 404:
        mlc_errf(&c->err,
                 "psft %s: not found (HTTP 404 at %s: %s): check the operation's URI template "
                 "(source.path) and systems.%s.node",
                 what, where, msg, c->name);
        return MLC_E_REJECTED;
    case 429:
    case 503:
        mlc_errf(&c->err,
                 "psft %s: PeopleSoft is busy or unavailable (HTTP %ld at %s) and stayed so "
                 "through the retries; the next run tries again",
                 what, resp->status, where);
        return rc;
    default:
        mlc_errf(&c->err, "psft %s: HTTP %ld at %s: %s", what, resp->status, where,
                 msg[0] ? msg : "(empty body)");
        return rc;
    }
}

/* ---------------------------------------------------------------- reading */

struct fetch_ctx {
    struct conn *c;
    const struct psft_path *rp;
    const char *const *key; /* one record's key parts, NULL = all */
};

static enum mlc_rc window_fetch(void *ctx, long long from, long long to, const char *after1,
                                const char *after2, struct psft_batch *out, struct mlc_errbuf *err)
{
    struct fetch_ctx *fc = ctx;
    struct conn *c = fc->c;
    const struct psft_path *rp = fc->rp;
    struct mlc_http_resp resp = { 0 };
    struct psft_shape sh = { 0 };
    char *url = read_url(c->priv, rp, from, to, after1, after2, fc->key);
    char what[200];
    enum mlc_rc rc;

    what_path(rp, what, sizeof(what));
    rc = psft_get(c, url, what, &resp);
    if (rc != MLC_OK) {
        mlc_errf(err, "%s", mlc_err_msg(&c->err));
        goto out;
    }
    sh.kind = rp->kind;
    sh.cursor_col = rp->cursor_col;
    sh.maxrows = rp->maxrows;
    sh.list = rp->list[0] ? rp->list : NULL;
    sh.query = rp->read == READ_QAS ? rp->query : NULL;
    sh.child = rp->child;
    {
        struct mlc_errbuf one = { 0 };
        rc = rp->read == READ_QAS
                 ? psft_parse_qas(mlc_buf_str(&resp.body), resp.body.len, &sh, out, &one)
                 : psft_parse_svc(mlc_buf_str(&resp.body), resp.body.len, &sh, out, &one);
        if (rc != MLC_OK) {
            char where[300];
            url_base(url, where, sizeof(where));
            const char *hint = "";
            if (rc == MLC_E_REJECTED) {
                hint = psft_is_ibresponse(mlc_buf_str(&resp.body), resp.body.len)
                           ? " (an Integration Broker failure sent with HTTP 200: check the node, "
                             "the operation and the gateway's log)"
                           : " (the service refused the read: check the flow's source "
                             "params/prompts against what it expects, and its log)";
            }
            mlc_errf(err, "psft %s at %s: %s%s", what, where, mlc_err_msg(&one), hint);
        }
    }
out:
    mlc_http_resp_release(&resp);
    free(url);
    return rc;
}

static enum mlc_rc read_range(struct conn *c, const struct psft_path *rp, long long from,
                              long long to, const char *const *key, struct psft_batch *out)
{
    struct fetch_ctx fc = { c, rp, key };
    struct psft_window w = { 0 };
    char hint[160];
    enum mlc_rc rc;

    snprintf(hint, sizeof(hint), "%s",
             rp->read == READ_QAS ? "source.maxrows; source.after_prompts for a key-ordered query"
                                  : "source.maxrows and the service's maxRows; source.after_param");
    w.fetch = window_fetch;
    w.ctx = &fc;
    w.can_after = rp->read == READ_QAS ? qas_after(rp, 0) != NULL : rp->after_param[0] != '\0';
    w.res_us = 1000000;
    w.sorted = rp->sorted;
    w.maxrows = rp->maxrows;
    w.column = rp->cursor_col;
    w.hint = hint;
    mlc_err_reset(&c->err);
    rc = psft_read_window(&w, from, to, out, &c->err);
    conn_log(c, MLC_LOG_DEBUG, "read %zu rows in %lu calls", out->n, w.calls);
    return rc;
}

/* Now on the agent's wall clock as server-wall-clock microseconds (the two
 * are taken to share a zone), plus a day of slack for clock skew. */
static long long upper_bound(void)
{
    time_t now = time(NULL);
    struct tm tm;

    localtime_r(&now, &tm);
    return ((long long)timegm(&tm) + 86400) * 1000000LL;
}

static int cmp_item_key(const void *a, const void *b)
{
    const struct psft_item *const *x = a, *const *y = b;

    return strcmp((*x)->key, (*y)->key);
}

/* The child queries of rp over [from, to): each record of got receives its
 * children's array (records without children get an empty one). */
static enum mlc_rc read_children(struct conn *c, const struct psft_path *rp, long long from,
                                 long long to, struct psft_batch *got)
{
    struct psft_item **idx;
    size_t n = 0;
    enum mlc_rc rc = MLC_OK;

    if (rp->n_children == 0) {
        return MLC_OK;
    }
    idx = mlc_xcalloc(got->n + 1, sizeof(*idx));
    for (size_t i = 0; i < got->n; i++) {
        if (got->v[i].error == NULL && got->v[i].key != NULL) {
            idx[n++] = &got->v[i];
        }
    }
    qsort(idx, n, sizeof(*idx), cmp_item_key);
    for (int k = 0; rc == MLC_OK && k < rp->n_children; k++) {
        struct psft_path cp = *rp; /* shares rp's strings: never released */
        struct psft_batch cb = { 0 };
        const char *name = rp->child_name[k];

        cp.query = rp->child_query[k];
        cp.child = name;
        cp.n_children = 0;
        for (size_t i = 0; i < n; i++) {
            cJSON_DeleteItemFromObjectCaseSensitive(idx[i]->data, name);
            mlc_json_xadd(idx[i]->data, name, mlc_json_xarr());
        }
        rc = read_range(c, &cp, from, to, NULL, &cb);
        for (size_t i = 0; rc == MLC_OK && i < cb.n; i++) {
            struct psft_item probe = { 0 }, *pp = &probe, **hit;
            cJSON *arr;
            if (cb.v[i].error != NULL || cb.v[i].key == NULL) {
                continue;
            }
            probe.key = cb.v[i].key;
            hit = bsearch(&pp, idx, n, sizeof(*idx), cmp_item_key);
            arr = cJSON_DetachItemFromObjectCaseSensitive(cb.v[i].data, name);
            if (hit != NULL && cJSON_IsArray(arr)) {
                cJSON_ReplaceItemInObjectCaseSensitive((*hit)->data, name, arr);
                arr = NULL;
                if (strcmp(name, "lines") == 0) {
                    psft_lines_summarise((*hit)->data);
                }
            }
            cJSON_Delete(arr);
        }
        psft_batch_release(&cb);
    }
    free(idx);
    return rc;
}

/* The earliest vendor change read: PeopleSoft's own lowest date. */
static long long vendor_floor(void)
{
    long long us = 0;

    psft_dttm_parse("1900-01-01T00:00:00", &us);
    return us;
}

/* Gather the run: records changed at or after the cursor, in cursor order. */
static enum mlc_rc gather(struct conn *c, const struct psft_source *s, const char *cursor)
{
    struct psft *p = c->priv;
    struct psft_batch got = { 0 }, old = { 0 };
    long long t0 = s->since, ck_eff = 0, hi = upper_bound();
    char ck_key[256] = "";
    int have_ck = 0, vendor_changed = 0;
    enum mlc_rc rc;
    size_t k;

    if (cursor != NULL) {
        if (psft_cursor_parse(cursor, &ck_eff, ck_key, sizeof(ck_key)) == 0) {
            have_ck = 1;
            /* windows start on whole seconds: a bound is written to the second */
            t0 = ck_eff - ((ck_eff % 1000000) + 1000000) % 1000000;
        } else {
            conn_log(c, MLC_LOG_WARN, "stored cursor '%.60s' is not a PeopleSoft cursor; reading "
                                      "from source.since", cursor);
        }
    }
    if (s->have_vendors) {
        struct psft_batch vb = { 0 };
        struct psft_vendors prev = p->vendors;
        /* a vendor change this process already carried through to the end of
         * a run that stopped at this very cursor needs no re-read */
        int done = have_ck && p->done_cursor != NULL &&
                   cJSON_Compare(p->done_source, p->run_source, 1) &&
                   strcmp(p->done_cursor, cursor) == 0;

        /* every vendor, however long unchanged: the records need their names */
        rc = read_range(c, &s->vendors, vendor_floor(), hi, NULL, &vb);
        if (rc != MLC_OK) {
            psft_batch_release(&vb);
            psft_vendors_release(&prev);
            memset(&p->vendors, 0, sizeof(p->vendors));
            return rc;
        }
        memset(&p->vendors, 0, sizeof(p->vendors));
        psft_vendors_build(&p->vendors, &vb, s->terms_col);
        psft_batch_release(&vb);
        for (size_t i = 0; have_ck && i < p->vendors.n; i++) {
            const struct psft_vendor *v = &p->vendors.v[i], *pv;
            if (v->stamp < t0) {
                continue;
            }
            pv = done ? psft_vendors_find(&prev, v->key) : NULL;
            if (pv == NULL || pv->stamp != v->stamp) {
                vendor_changed = 1;
            }
        }
        psft_vendors_release(&prev);
    } else {
        psft_vendors_release(&p->vendors);
    }
    rc = read_range(c, &s->main, t0, hi, NULL, &got);
    if (rc == MLC_OK && vendor_changed && t0 > s->since) {
        /* a vendor changed since the cursor: its older records show it too */
        conn_log(c, MLC_LOG_INFO, "vendor master changed since the cursor; re-reading older "
                                  "records for their vendor names");
        rc = read_range(c, &s->main, s->since, t0, NULL, &old);
        for (size_t i = 0; rc == MLC_OK && i < old.n; i++) {
            *psft_batch_push(&got) = old.v[i];
            memset(&old.v[i], 0, sizeof(old.v[i]));
        }
    }
    psft_batch_release(&old);
    if (rc != MLC_OK) {
        psft_batch_release(&got);
        return rc;
    }
    psft_batch_dedupe(&got);
    rc = read_children(c, &s->main, vendor_changed && t0 > s->since ? s->since : t0, hi, &got);
    if (rc != MLC_OK) {
        psft_batch_release(&got);
        return rc;
    }
    for (size_t i = 0; i < got.n; i++) {
        got.v[i].eff = got.v[i].stamp;
        if (s->have_vendors) {
            psft_join_vendor(&got.v[i], &p->vendors);
        }
    }
    /* keep what follows the cursor */
    k = 0;
    for (size_t i = 0; i < got.n; i++) {
        struct psft_item *it = &got.v[i];
        if (it->error == NULL && have_ck && psft_cursor_cmp(it->eff, it->key, ck_eff, ck_key) <= 0) {
            free(it->k1);
            free(it->k2);
            free(it->key);
            cJSON_Delete(it->data);
            continue;
        }
        got.v[k++] = *it;
    }
    got.n = k;
    psft_batch_sort(&got);
    if (got.excluded > 0) {
        conn_log(c, MLC_LOG_DEBUG, "%zu template vouchers left out", got.excluded);
    }
    psft_batch_release(&p->run);
    p->run = got;
    p->run_pos = 0;
    free(p->run_cursor);
    p->run_cursor = mlc_xstrdup(cursor != NULL ? cursor : "");
    free(p->last_cursor);
    p->last_cursor = NULL;
    return MLC_OK;
}

static void item_to_record(struct psft_item *it, struct record *r)
{
    char cur[320];

    r->data = it->data;
    it->data = NULL;
    if (it->error != NULL) {
        r->error = it->error;
        it->error = NULL;
        if (r->data == NULL) {
            r->data = mlc_json_xobj();
        }
        if (it->key != NULL) {
            r->key = mlc_xstrdup(it->key);
        }
        return;
    }
    r->key = mlc_xstrdup(it->key);
    psft_cursor_format(it->eff, it->key, cur, sizeof(cur));
    r->cursor = mlc_xstrdup(cur);
}

static enum mlc_rc psft_poll(struct conn *c, const struct poll_req *rq, struct page *out)
{
    struct psft *p = c->priv;
    size_t end;

    if (rq->first || !p->have_src || !cJSON_Compare(p->run_source, rq->source, 1)) {
        struct psft_source s;
        if (source_load(rq->source, &s, &c->err) != 0) {
            return MLC_E_INVAL;
        }
        if (p->have_src) {
            source_release(&p->src);
        }
        p->src = s;
        p->have_src = 1;
        cJSON_Delete(p->run_source);
        p->run_source = cJSON_Duplicate(rq->source, 1);
        if (!rq->first) {
            conn_log(c, MLC_LOG_INFO, "no run in progress; reading again from the cursor");
        }
        enum mlc_rc rc = gather(c, &p->src, rq->cursor);
        if (rc != MLC_OK) {
            return rc;
        }
    }
    end = p->run_pos + (size_t)p->src.page_size;
    if (end > p->run.n) {
        end = p->run.n;
    }
    for (; p->run_pos < end; p->run_pos++) {
        struct record *r = page_push(out);
        item_to_record(&p->run.v[p->run_pos], r);
        if (r->cursor != NULL) {
            free(p->last_cursor);
            p->last_cursor = mlc_xstrdup(r->cursor);
        }
    }
    out->more = p->run_pos < p->run.n;
    if (!out->more) {
        /* the run is whole: it ends at its last cursor (or where it began) */
        free(p->done_cursor);
        cJSON_Delete(p->done_source);
        p->done_source = cJSON_Duplicate(p->run_source, 1);
        p->done_cursor = p->last_cursor != NULL ? p->last_cursor : p->run_cursor;
        if (p->done_cursor == p->run_cursor) {
            free(p->last_cursor);
        } else {
            free(p->run_cursor);
        }
        p->last_cursor = NULL;
        p->run_cursor = NULL;
        psft_batch_release(&p->run);
        p->run_pos = 0;
    }
    return MLC_OK;
}

/* One record by key "K1-K2" (the first '-' splits it): the read path's
 * key_prompts / key_params select it; PeopleSoft has no generic by-key
 * read, so without them there is none. */
static enum mlc_rc psft_fetch(struct conn *c, const cJSON *source, const char *key,
                              struct record *out)
{
    struct psft *p = c->priv;
    struct psft_source s;
    struct psft_batch b = { 0 };
    const char *dash = key != NULL ? strchr(key, '-') : NULL;
    char *parts[2] = { NULL, NULL };
    enum mlc_rc rc;

    memset(out, 0, sizeof(*out));
    if (source_load(source, &s, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    if (s.main.key_names == NULL) {
        mlc_errf(&c->err, "psft: reading one record needs source.%s (two names that select "
                          "%s and %s); PeopleSoft offers no by-key read otherwise",
                 s.main.read == READ_QAS ? "key_prompts" : "key_params",
                 psft_kind_def(s.main.kind)->k1, psft_kind_def(s.main.kind)->k2);
        source_release(&s);
        return MLC_E_INVAL;
    }
    if (dash == NULL || dash == key || dash[1] == '\0') {
        mlc_errf(&c->err, "psft: '%s' is not a record key of the form %s-%s", key ? key : "",
                 psft_kind_def(s.main.kind)->k1, psft_kind_def(s.main.kind)->k2);
        source_release(&s);
        return MLC_E_INVAL;
    }
    parts[0] = mlc_xasprintf("%.*s", (int)(dash - key), key);
    parts[1] = mlc_xstrdup(dash + 1);
    rc = read_range(c, &s.main, vendor_floor(), upper_bound(), (const char *const *)parts, &b);
    if (rc == MLC_OK) {
        psft_batch_dedupe(&b);
        for (size_t i = 0; i < b.n; i++) {
            if (b.v[i].key != NULL && b.v[i].error == NULL && strcmp(b.v[i].key, key) == 0) {
                b.v[i].eff = b.v[i].stamp;
                if (s.have_vendors && p->vendors.n > 0) {
                    psft_join_vendor(&b.v[i], &p->vendors); /* the last run's vendor cache */
                }
                item_to_record(&b.v[i], out);
                break;
            }
        }
    }
    free(parts[0]);
    free(parts[1]);
    psft_batch_release(&b);
    source_release(&s);
    return rc;
}

/* A cursor's time, read as the agent's local wall clock (PeopleSoft stamps
 * carry no zone; the server is taken to share the agent's). */
static long long psft_cursor_time(struct conn *c, const char *cursor)
{
    long long eff;
    char key[256], when[40];
    struct tm tm = { 0 };

    (void)c;
    if (psft_cursor_parse(cursor, &eff, key, sizeof(key)) != 0) {
        return -1;
    }
    psft_dttm_format_full(eff, when, sizeof(when));
    if (sscanf(when, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    return (long long)mktime(&tm) * 1000 + (eff % 1000000) / 1000;
}

static enum mlc_rc psft_ping(struct conn *c)
{
    struct psft *p = c->priv;
    struct mlc_http_resp resp = { 0 };
    char *url = mlc_xasprintf("%s/PSIGW/RESTListeningConnector/%s/%s", p->cf.base_url, p->cf.node,
                              p->cf.ping_path);
    char msg[300];
    enum mlc_rc rc = psft_get(c, url, "ping", &resp);

    if (rc == MLC_OK && psft_body_failed(mlc_buf_str(&resp.body), resp.body.len, msg, sizeof(msg))) {
        char where[300];
        url_base(url, where, sizeof(where));
        mlc_errf(&c->err, "psft ping: %s answered HTTP %ld with an error: %s: check "
                          "systems.%s.ping_path and node", where, resp.status, msg, c->name);
        rc = MLC_E_REJECTED;
    }
    mlc_http_resp_release(&resp);
    free(url);
    return rc;
}

/* ---------------------------------------------------------------- open/close */

static enum mlc_rc psft_open(struct conn *c)
{
    struct psft *p = mlc_xcalloc(1, sizeof(*p));
    enum mlc_rc rc;

    c->priv = p;
    snprintf(p->path, sizeof(p->path), "systems.%s", c->name);
    rc = mlc_conf_load(c->conf, p->path, psft_keys, conn_common_allow, &p->cf, &c->err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(p->cf.type, "psft") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"psft\"", p->path);
        return MLC_E_INVAL;
    }
    if (!name_ok(p->cf.node, "")) {
        mlc_errf(&c->err, "%s.node: '%s' is not a node name (letters, digits, _), e.g. PSFT_EP",
                 p->path, p->cf.node);
        return MLC_E_INVAL;
    }
    if (strstr(p->cf.base_url, "/PSIGW") != NULL) {
        mlc_errf(&c->err, "%s.base_url: give host and port only (e.g. https://psft:8443); the "
                          "connector adds /PSIGW/RESTListeningConnector/<node>/", p->path);
        return MLC_E_INVAL;
    }
    switch (p->cf.auth) {
    case PSFT_AUTH_BASIC:
        if (p->cf.user[0] == '\0' || p->cf.password[0] == '\0') {
            mlc_errf(&c->err, "%s.user and %s.password: required for auth basic (the OPRID and "
                              "its password, e.g. secret:psft.password)", p->path, p->path);
            return MLC_E_INVAL;
        }
        break;
    case PSFT_AUTH_BEARER:
        if (p->cf.token[0] == '\0') {
            mlc_errf(&c->err, "%s.token: required for auth bearer (e.g. secret:psft.token)",
                     p->path);
            return MLC_E_INVAL;
        }
        break;
    default:
        if (strncmp(p->cf.token_url, "http://", 7) != 0 &&
            strncmp(p->cf.token_url, "https://", 8) != 0) {
            mlc_errf(&c->err, "%s.token_url: required for auth oauth: the IdP's token endpoint "
                              "(PeopleSoft validates the tokens, it issues none)", p->path);
            return MLC_E_INVAL;
        }
        if (p->cf.client_id[0] == '\0' || p->cf.client_secret[0] == '\0') {
            mlc_errf(&c->err, "%s.client_id and %s.client_secret: required for auth oauth",
                     p->path, p->path);
            return MLC_E_INVAL;
        }
        break;
    }
    if (p->cf.ping_path[0] == '\0' || p->cf.ping_path[0] == '/') {
        mlc_errf(&c->err, "%s.ping_path: an operation and path after the node, e.g. "
                          "\"MLC_VNDR_LIST.v1/vendors\"", p->path);
        return MLC_E_INVAL;
    }
    return MLC_OK;
}

static void psft_close(struct conn *c)
{
    struct psft *p = c->priv;

    if (p == NULL) {
        return;
    }
    auth_free(p->auth);
    if (p->secret != NULL) {
        explicit_bzero(p->secret, strlen(p->secret));
        free(p->secret);
    }
    if (p->have_src) {
        source_release(&p->src);
    }
    psft_batch_release(&p->run);
    psft_vendors_release(&p->vendors);
    free(p->run_cursor);
    free(p->done_cursor);
    free(p->last_cursor);
    cJSON_Delete(p->run_source);
    cJSON_Delete(p->done_source);
    mlc_conf_release(psft_keys, &p->cf);
    free(p);
    c->priv = NULL;
}

const struct connector connector_psft = {
    .name = "psft",
    .caps = CONN_SOURCE,
    .keys = psft_keys,
    .open = psft_open,
    .close = psft_close,
    .ping = psft_ping,
    .poll = psft_poll,
    .fetch = psft_fetch,
    .cursor_time = psft_cursor_time,
};
