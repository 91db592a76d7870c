/* SPDX-License-Identifier: Apache-2.0
 * jde: JD Edwards EnterpriseOne AIS Server (REST v2) connector.
 *
 * Auth: a session token from /v2/tokenrequest (sent as jde-AIS-Auth with the
 * device name it is bound to), renewed before its configured lifetime ends
 * and once on 444/403; or stateless Basic auth per request. Reads go through
 * /v2/dataservice BROWSE ordered by (date, time, key) from a watermark. With
 * a token the next-page link (which lives in the server session) is followed;
 * in Basic mode there is no session, so each page is a fresh keyset query
 * strictly after the last row seen.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "agent/connectors/jde/jde.h"
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_buf.h"
#include "shared/mlc_date.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"

enum { JDE_AUTH_TOKEN = 0, JDE_AUTH_BASIC = 1 };

struct jde_conf {
    char *type;
    char *base_url;
    int auth;
    char *username;
    char *password;
    char *environment;
    char *role;
    char *device;
    long token_lifetime;
    long page_size;
    char *date_format;
    long timeout_s;
    int tls_insecure;
};

static const struct conf_key jde_keys[] = {
    { "type", CONF_STR, offsetof(struct jde_conf, type), NULL, "\"jde\"", 0, 0, NULL },
    { "base_url", CONF_URL, offsetof(struct jde_conf, base_url), NULL,
      "AIS service root, e.g. https://ais:9300/jderest", 0, 0, NULL },
    { "auth", CONF_ENUM, offsetof(struct jde_conf, auth), "token",
      "session token, or stateless Basic per request", 0, 0, "token|basic" },
    { "username", CONF_STR, offsetof(struct jde_conf, username), NULL, "E1 user", 0, 0, NULL },
    { "password", CONF_SECRET, offsetof(struct jde_conf, password), NULL,
      "secret:NAME or ${ENV}", 0, 0, NULL },
    { "environment", CONF_STR, offsetof(struct jde_conf, environment), NULL, "e.g. JDV920", 0, 0,
      NULL },
    { "role", CONF_STR, offsetof(struct jde_conf, role), "*ALL", "E1 role", 0, 0, NULL },
    { "device_name", CONF_STR, offsetof(struct jde_conf, device), "mlc-agent",
      "device the token is bound to", 0, 0, NULL },
    { "token_lifetime", CONF_DURATION, offsetof(struct jde_conf, token_lifetime), "25m",
      "renew the token before this age", 10, 86400, NULL },
    { "page_size", CONF_INT, offsetof(struct jde_conf, page_size), "500", "maxPageSize", 1, 50000,
      NULL },
    { "date_format", CONF_STR, offsetof(struct jde_conf, date_format), "MM/dd/yyyy",
      "date literal format (Basic mode; token mode uses the user's profile)", 0, 0, NULL },
    { "timeout_s", CONF_INT, offsetof(struct jde_conf, timeout_s), "60", "per request", 1, 600,
      NULL },
    { "tls_insecure", CONF_BOOL, offsetof(struct jde_conf, tls_insecure), "false",
      "skip TLS verification (labs only)", 0, 0, NULL },
    { 0 },
};

struct jde {
    struct jde_conf cf;
    char *password;      /* resolved */
    char *token;         /* NULL when none */
    long long token_at;  /* when obtained */
    char date_fmt[32];   /* from userInfo.simpleDateFormat */
    char *next_href;     /* open server-side cursor */
    struct jde_cursor last; /* last row delivered in this query (Basic keyset) */
    int have_last;
    char hdr_token[512];
    char hdr_device[160];
    char hdr_env[160];
    char hdr_role[160];
    struct auth *auth;   /* the session (or Basic credentials) on data and orchestration calls */
    int have_tz;         /* the server's offset is known (from the token answer) */
    long tz_offset_s;    /* server-local time = UTC + this */
};

/* ---------- pure helpers ---------- */

int jde_cursor_parse(const char *s, struct jde_cursor *out)
{
    const char *bar1, *bar2;
    char *end;
    struct mlc_ymd d;

    memset(out, 0, sizeof(*out));
    if (s == NULL || (bar1 = strchr(s, '|')) == NULL || bar1 - s != 8) {
        return -1;
    }
    memcpy(out->date, s, 8);
    out->date[8] = '\0';
    if (mlc_yyyymmdd_parse(out->date, &d) != 0) {
        return -1;
    }
    out->time = strtol(bar1 + 1, &end, 10);
    if (end == bar1 + 1 || (*end != '|' && *end != '\0') || out->time < 0 || out->time > 235959) {
        return -1;
    }
    bar2 = *end == '|' ? end : NULL;
    if (bar2 != NULL) {
        snprintf(out->key, sizeof(out->key), "%s", bar2 + 1);
    }
    return 0;
}

void jde_cursor_format(const struct jde_cursor *c, char *out, size_t n)
{
    snprintf(out, n, "%s|%06ld|%s", c->date, c->time, c->key);
}

void jde_error_text(const char *body, size_t len, char *out, size_t n)
{
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const char *m = NULL, *ud = NULL;

    out[0] = '\0';
    if (root != NULL) {
        m = mlc_json_str(root, "message");
        ud = mlc_json_str(root, "userDefinedErrorText");
        if (m == NULL) {
            m = mlc_json_str(root, "errorText");
        }
    }
    if (m != NULL && ud != NULL && ud[0]) {
        snprintf(out, n, "%s (%s)", m, ud);
    } else if (m != NULL) {
        snprintf(out, n, "%s", m);
    } else {
        size_t k = len < n - 1 ? len : n - 1;
        for (size_t i = 0; i < k; i++) {
            out[i] = (unsigned char)body[i] < 0x20 ? ' ' : body[i];
        }
        out[k] = '\0';
    }
    cJSON_Delete(root);
}

/* A cell of a row whose names lost their table prefix, as text. */
static int row_text(const cJSON *row, const char *col, char *out, size_t n, const cJSON **item_out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(row, col);

    if (item_out) {
        *item_out = it;
    }
    if (it == NULL || mlc_json_scalar_text(it, out, n) != 0) {
        return -1;
    }
    return 0;
}

static int nkeys(const struct jde_table *t)
{
    return t->n_keys > 1 ? t->n_keys : 1;
}

static const char *keycol(const struct jde_table *t, int i)
{
    return t->n_keys > 1 ? t->key_cols[i] : t->key_col;
}

/* The record key of a row (see struct jde_table) into out; NULL, or the
 * reason it has none (heap). */
static char *row_key(const cJSON *row, const struct jde_table *t, char *out, size_t n)
{
    size_t len = 0;
    int any = 0;

    out[0] = '\0';
    for (int i = 0; i < nkeys(t); i++) {
        char part[JDE_KEY_MAX];
        const cJSON *kit = NULL;
        size_t pl;

        if (row_text(row, keycol(t, i), part, sizeof(part), &kit) != 0 || kit == NULL ||
            cJSON_IsNull(kit) || (nkeys(t) == 1 && t->key_numeric && !cJSON_IsNumber(kit))) {
            return mlc_xasprintf("row has no usable %s.%s (key column)", t->table, keycol(t, i));
        }
        mlc_strip(part); /* JD Edwards pads codes: business units on the left, others on the right */
        if (strchr(part, '|') != NULL) {
            return mlc_xasprintf("row's key column %s.%s holds a '|', which the key cannot carry",
                                 t->table, keycol(t, i));
        }
        pl = strlen(part);
        if (len + pl + (i > 0) + 1 > n) {
            return mlc_xasprintf("row's key (%s.%s...) is longer than %zu bytes", t->table,
                                 keycol(t, 0), n - 1);
        }
        if (i > 0) {
            out[len++] = '|';
        }
        memcpy(out + len, part, pl + 1);
        len += pl;
        any |= pl > 0;
    }
    if (!any) {
        return mlc_xasprintf("row has an empty key (%s.%s%s)", t->table, keycol(t, 0),
                             nkeys(t) > 1 ? " and the other key columns" : "");
    }
    return NULL;
}

/* The change date of a row as yyyyMMdd into out[9]: AIS sends dates as
 * yyyyMMdd text; a Julian CYYDDD number (the stored form) is taken too. */
static int row_date(const cJSON *row, const char *col, char out[9])
{
    char text[32];
    struct mlc_ymd ymd;
    const cJSON *it = NULL;

    if (row_text(row, col, text, sizeof(text), &it) != 0 || it == NULL) {
        return -1;
    }
    if (mlc_yyyymmdd_parse(text, &ymd) == 0) {
        memcpy(out, text, 9);
        return 0;
    }
    if (cJSON_IsNumber(it) && text[0] != '\0' && strspn(text, "0123456789") == strlen(text) &&
        strlen(text) <= 7 && mlc_julian_to_ymd(strtol(text, NULL, 10), &ymd) == 0 &&
        ymd.y >= 1000 && mlc_ymd_format(&ymd, "yyyyMMdd", text, sizeof(text)) == 0 &&
        strlen(text) == 8) {
        memcpy(out, text, 9);
        return 0;
    }
    return -1;
}

enum mlc_rc jde_parse_page(const char *body, size_t len, const struct jde_table *t,
                           struct page *out, int *more, char **next_href, struct mlc_errbuf *err)
{
    char fsname[48], prefix[24];
    const cJSON *fs, *grid, *summary, *links, *exc;
    enum mlc_rc rc = MLC_OK;
    cJSON *root, *rowset, *row, *next;
    size_t plen;

    *more = 0;
    *next_href = NULL;
    root = mlc_json_parse(body, len, "jde data service answer", err);
    if (root == NULL) {
        return MLC_E_PROTO;
    }
    exc = cJSON_GetObjectItemCaseSensitive(root, "exception");
    if (exc != NULL && !cJSON_IsNull(exc)) {
        char msg[300];
        jde_error_text(body, len, msg, sizeof(msg));
        mlc_errf(err, "jde data service reported an exception for table %s: %s", t->table, msg);
        rc = MLC_E_REJECTED;
        goto out;
    }
    snprintf(fsname, sizeof(fsname), "fs_DATABROWSE_%s", t->table);
    fs = mlc_json_obj(root, fsname);
    grid = fs ? mlc_json_path(fs, "data.gridData") : NULL;
    rowset = grid ? (cJSON *)mlc_json_arr(grid, "rowset") : NULL; /* root is ours */
    if (rowset == NULL) {
        mlc_errf(err, "jde data service answer has no %s.data.gridData.rowset", fsname);
        rc = MLC_E_PROTO;
        goto out;
    }
    summary = mlc_json_obj(grid, "summary");
    *more = summary ? mlc_json_bool(summary, "moreRecords", 0) : 0;
    links = mlc_json_arr(root, "links");
    for (const cJSON *ln = links ? links->child : NULL; ln != NULL; ln = ln->next) {
        const char *rel = mlc_json_str(ln, "rel"), *href = mlc_json_str(ln, "href");
        if (rel && href && strcmp(rel, "next") == 0 && *next_href == NULL) {
            *next_href = mlc_xstrdup(href);
        }
    }
    snprintf(prefix, sizeof(prefix), "%s_", t->table);
    plen = strlen(prefix);
    for (row = rowset->child; row != NULL; row = next) {
        struct record *r = page_push(out);
        char key[JDE_KEY_MAX], date[9], tbuf[32];
        long tm = -1;
        char *tend;

        next = row->next;
        if (!cJSON_IsObject(row)) {
            r->data = mlc_json_xobj();
            r->error = mlc_xstrdup("row is not a JSON object");
            continue;
        }
        /* the row becomes the record as it is: taken out of the answer, its
         * cells renamed in place ("F4801_DOCO" -> "DOCO"), nothing copied */
        cJSON_DetachItemViaPointer(rowset, row);
        for (cJSON *cell = row->child; cell != NULL; cell = cell->next) {
            if (cell->string != NULL && !(cell->type & cJSON_StringIsConst) &&
                strncmp(cell->string, prefix, plen) == 0) {
                memmove(cell->string, cell->string + plen, strlen(cell->string + plen) + 1);
            }
        }
        r->data = row;
        if ((r->error = row_key(row, t, key, sizeof(key))) != NULL) {
            continue;
        }
        r->key = mlc_xstrdup(key);
        if (row_date(row, t->date_col, date) != 0) {
            r->error = mlc_xasprintf("row %s has an invalid %s.%s date", key, t->table, t->date_col);
            continue;
        }
        if (row_text(row, t->time_col, tbuf, sizeof(tbuf), NULL) == 0) {
            tm = strtol(tbuf, &tend, 10);
            if (tend == tbuf || *tend != '\0' || tm < 0 || tm > 235959) {
                tm = -1;
            }
        }
        if (tm < 0) {
            r->error = mlc_xasprintf("row %s has an invalid %s.%s time", key, t->table, t->time_col);
            continue;
        }
        {
            /* "date|HHMMSS|key", as jde_cursor_format writes it, without printf */
            size_t dl = strlen(date), kl = strlen(key);
            char *c = mlc_xmalloc(dl + kl + 9);

            memcpy(c, date, dl);
            c[dl] = '|';
            for (int d = 5; d >= 0; d--, tm /= 10) {
                c[dl + 1 + d] = (char)('0' + tm % 10);
            }
            c[dl + 7] = '|';
            memcpy(c + dl + 8, key, kl + 1);
            r->cursor = c;
        }
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* ---------- requests ---------- */

static const char *ctype_json = "Content-Type: application/json";

/* The AIS headers of a request: the session token when token is set, and
 * the environment and role when env_role is set (Basic mode, and the token
 * request itself). */
static void jde_headers(struct jde *j, const char **h, const char *token, int env_role)
{
    int n = 0;

    h[n++] = ctype_json;
    h[n++] = "Accept: application/json";
    if (token != NULL) {
        snprintf(j->hdr_token, sizeof(j->hdr_token), "jde-AIS-Auth: %s", token);
        h[n++] = j->hdr_token;
    }
    snprintf(j->hdr_device, sizeof(j->hdr_device), "jde-AIS-Auth-Device: %s", j->cf.device);
    h[n++] = j->hdr_device;
    if (env_role) {
        snprintf(j->hdr_env, sizeof(j->hdr_env), "jde-AIS-Auth-Environment: %s", j->cf.environment);
        snprintf(j->hdr_role, sizeof(j->hdr_role), "jde-AIS-Auth-Role: %s", j->cf.role);
        h[n++] = j->hdr_env;
        h[n++] = j->hdr_role;
    }
    h[n] = NULL;
}

static enum mlc_rc jde_post(struct conn *c, const char *url, const char *body, int use_token,
                            struct mlc_http_resp *resp)
{
    struct jde *j = c->priv;
    struct mlc_http_req rq = { 0 };
    const char *h[8];

    jde_headers(j, h, use_token ? j->token : NULL, j->cf.auth == JDE_AUTH_BASIC || !use_token);
    rq.method = "POST";
    rq.url = url;
    rq.headers = h;
    rq.body = body ? body : "{}";
    rq.body_len = strlen(rq.body);
    if (!use_token) {
        rq.basic_user = j->cf.username;
        rq.basic_pass = j->password;
    }
    c->api_calls++;
    return mlc_http_send(c->http, &rq, resp, NULL, c->stop, &c->err);
}

static void jde_logout(struct conn *c)
{
    struct jde *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct mlc_errbuf ignore = { 0 };
    struct mlc_http_req rq = { 0 };
    const char *h[8];
    char *url, *body;
    cJSON *o;

    if (j->token == NULL) {
        return;
    }
    o = mlc_json_xobj();
    mlc_json_xadd_str(o, "token", j->token);
    mlc_json_xadd_str(o, "deviceName", j->cf.device);
    body = mlc_json_print(o);
    cJSON_Delete(o);
    url = mlc_xasprintf("%s/v2/tokenrequest/logout", j->cf.base_url);
    jde_headers(j, h, j->token, j->cf.auth == JDE_AUTH_BASIC);
    rq.method = "POST";
    rq.url = url;
    rq.headers = h;
    rq.body = body;
    rq.body_len = strlen(body);
    mlc_http_do(c->http, &rq, &resp, &ignore);
    mlc_http_resp_release(&resp);
    free(url);
    free(body);
    free(j->token);
    j->token = NULL;
}

/* POST /v2/tokenrequest with the body credentials (or Basic headers). */
static enum mlc_rc jde_login(struct conn *c, int basic_headers)
{
    struct jde *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    char *url = mlc_xasprintf("%s/v2/tokenrequest", j->cf.base_url), *body;
    const char *tok, *fmt;
    enum mlc_rc rc;
    cJSON *o, *root = NULL;

    o = mlc_json_xobj();
    if (!basic_headers) {
        mlc_json_xadd_str(o, "username", j->cf.username);
        mlc_json_xadd_str(o, "password", j->password);
        mlc_json_xadd_str(o, "environment", j->cf.environment);
        mlc_json_xadd_str(o, "role", j->cf.role);
    }
    mlc_json_xadd_str(o, "deviceName", j->cf.device);
    body = mlc_json_print(o);
    cJSON_Delete(o);
    free(j->token);
    j->token = NULL;
    rc = jde_post(c, url, body, 0, &resp);
    if (basic_headers == 0) {
        memset(body, 0, strlen(body)); /* it held the password */
    }
    free(body);
    if (rc != MLC_OK) {
        char msg[300];
        jde_error_text(mlc_buf_str(&resp.body), resp.body.len, msg, sizeof(msg));
        mlc_err_reset(&c->err);
        if (resp.status == 403 || resp.status == 401) {
            mlc_errf(&c->err,
                     "jde at %s: login refused for user '%s' in environment '%s' (HTTP %ld: %s): "
                     "check username, password, environment and role",
                     j->cf.base_url, j->cf.username, j->cf.environment, resp.status, msg);
            rc = MLC_E_AUTH;
        } else if (resp.status == 0) {
            mlc_errf(&c->err, "cannot reach jde at %s: request failed (check base_url and network)",
                     j->cf.base_url);
        } else {
            mlc_errf(&c->err, "jde at %s: token request failed (HTTP %ld: %s)", j->cf.base_url,
                     resp.status, msg);
        }
        goto out;
    }
    root = mlc_json_parse(mlc_buf_str(&resp.body), resp.body.len, "jde token answer", &c->err);
    tok = root ? mlc_json_str(mlc_json_obj(root, "userInfo"), "token") : NULL;
    if (tok == NULL || tok[0] == '\0') {
        mlc_errf(&c->err, "jde at %s: token answer has no userInfo.token", j->cf.base_url);
        rc = MLC_E_PROTO;
        goto out;
    }
    j->token = mlc_xstrdup(tok);
    __atomic_add_fetch(&c->token_refreshes, 1, __ATOMIC_RELAXED);
    mlc_log_add_secret(j->token);
    j->token_at = (long long)time(NULL);
    {
        /* stamps (UPMJ/TDAY) are server-local: "UTC-05:00" says how */
        const char *tz = mlc_json_str(mlc_json_obj(root, "userInfo"), "timeZoneOffset");
        int hh = 0, mm = 0;
        char sign = 0;
        if (tz != NULL && sscanf(tz, "UTC%c%d:%d", &sign, &hh, &mm) == 3 &&
            (sign == '+' || sign == '-') && hh >= 0 && hh <= 14 && mm >= 0 && mm < 60) {
            j->tz_offset_s = (sign == '-' ? -1L : 1L) * (hh * 3600L + mm * 60L);
            j->have_tz = 1;
        }
    }
    fmt = mlc_json_str(mlc_json_obj(root, "userInfo"), "simpleDateFormat");
    if (fmt && strstr(fmt, "yyyy") && strstr(fmt, "MM") && strstr(fmt, "dd")) {
        snprintf(j->date_fmt, sizeof(j->date_fmt), "%s", fmt);
    }
    conn_log(c, MLC_LOG_DEBUG, "new AIS session token (date format %s)", j->date_fmt);
out:
    cJSON_Delete(root);
    mlc_http_resp_release(&resp);
    free(url);
    return rc;
}

static enum mlc_rc jde_ensure_token(struct conn *c)
{
    struct jde *j = c->priv;

    if (j->cf.auth == JDE_AUTH_BASIC) {
        return MLC_OK;
    }
    /* renew at 90% of the configured lifetime, before the server expires it */
    if (j->token != NULL && (long long)time(NULL) - j->token_at < j->cf.token_lifetime * 9 / 10) {
        return MLC_OK;
    }
    if (j->token != NULL) {
        jde_logout(c);
    }
    return jde_login(c, 0);
}

/* ---------- the session as an auth provider ---------- */

/* renew: a session token (a refused one is dropped and a new one requested);
 * Basic credentials cannot be renewed: a refusal is final. */
static enum mlc_rc jde_auth_renew(struct auth *au, struct conn *c, int force)
{
    struct jde *j = au->priv;

    if (j->cf.auth == JDE_AUTH_BASIC) {
        if (force) {
            mlc_errf(&c->err,
                     "jde at %s: Basic credentials of user '%s' refused: check username, password, "
                     "environment and role",
                     j->cf.base_url, j->cf.username);
            return MLC_E_AUTH;
        }
        return MLC_OK;
    }
    if (force) {
        conn_log(c, MLC_LOG_INFO, "AIS session rejected; requesting a new token");
        free(j->token);
        j->token = NULL;
    }
    return jde_ensure_token(c);
}

static void jde_auth_apply(struct auth *au, struct mlc_http_req *rq)
{
    struct jde *j = au->priv;

    if (j->cf.auth == JDE_AUTH_BASIC) {
        rq->basic_user = j->cf.username;
        rq->basic_pass = j->password;
        au->header[0] = '\0';
    } else {
        snprintf(au->header, sizeof(au->header), "jde-AIS-Auth: %s", j->token ? j->token : "");
    }
}

static const struct auth_ops jde_auth_ops = {
    .name = "jde-session",
    .renew = jde_auth_renew,
    .apply = jde_auth_apply,
};

/* A data or orchestration call in the session, through the shared
 * renew-once wrapper. */
static enum mlc_rc jde_send(struct conn *c, const char *url, const char *body,
                            struct mlc_http_resp *resp)
{
    struct jde *j = c->priv;
    struct mlc_http_req rq = { 0 };
    const char *h[8];

    /* the token header itself comes from the auth provider (jde_auth_apply) */
    jde_headers(j, h, NULL, j->cf.auth == JDE_AUTH_BASIC);
    rq.method = "POST";
    rq.url = url;
    rq.headers = h;
    rq.body = body ? body : "{}";
    rq.body_len = strlen(rq.body);
    /* renew at 90% of the configured lifetime, before the server expires it */
    if (j->cf.auth == JDE_AUTH_TOKEN &&
        (j->token == NULL || (long long)time(NULL) - j->token_at >= j->cf.token_lifetime * 9 / 10)) {
        j->auth->have = 0;
    }
    c->api_calls++;
    return auth_send(j->auth, c, &rq, resp);
}

/* ---------- query building ---------- */

static cJSON *cond(const char *table, const char *col, const char *op, const char *const *vals,
                   int nvals)
{
    cJSON *c = mlc_json_xobj(), *arr = mlc_json_xarr();
    char id[48];

    snprintf(id, sizeof(id), "%s.%s", table, col);
    mlc_json_xadd_str(c, "controlId", id);
    mlc_json_xadd_str(c, "operator", op);
    for (int i = 0; i < nvals; i++) {
        cJSON *v = mlc_json_xobj();
        mlc_json_xadd_str(v, "specialValueId", "LITERAL");
        mlc_json_xadd_str(v, "content", vals[i]);
        cJSON_AddItemToArray(arr, v);
    }
    if (nvals > 0) {
        mlc_json_xadd(c, "value", arr);
    } else {
        cJSON_Delete(arr);
    }
    return c;
}

static cJSON *subquery(const char *match)
{
    cJSON *q = mlc_json_xobj();

    mlc_json_xadd_str(q, "matchType", match);
    mlc_json_xadd(q, "condition", mlc_json_xarr());
    return q;
}

/* Append condition c (taken) to query q's condition list. */
static void add_cond(cJSON *q, cJSON *c)
{
    cJSON_AddItemToArray(cJSON_GetObjectItem(q, "condition"), c);
}

static void add_complex(cJSON *q, const char *andor, cJSON *sub)
{
    cJSON *cq = cJSON_GetObjectItemCaseSensitive(q, "complexQuery"), *e = mlc_json_xobj();

    if (cq == NULL) {
        cq = mlc_json_xarr();
        mlc_json_xadd(q, "complexQuery", cq);
    }
    mlc_json_xadd_str(e, "andOr", andor);
    mlc_json_xadd(e, "query", sub);
    cJSON_AddItemToArray(cq, e);
}

/* Watermark: (D > d) OR (D = d AND T >= t)            with a token (overlap)
 *            (D > d) OR (D = d AND T > t) OR (D = d AND T = t AND K > k)  keyset,
 * where with a composite key K > k is (K1 > k1) OR (K1 = k1 AND K2 > k2) OR ...
 * (cur->key holds the parts joined with '|', as row_key writes them). */
static cJSON *watermark(const struct jde_table *t, const struct jde_cursor *cur, const char *dlit,
                        int keyset)
{
    const char *d[1] = { dlit };
    char tbuf[16];
    const char *tv[1] = { tbuf };
    cJSON *w = subquery("MATCH_ALL"), *same;

    snprintf(tbuf, sizeof(tbuf), "%ld", cur->time);
    add_cond(w, cond(t->table, t->date_col, "GREATER", d, 1));
    same = subquery("MATCH_ALL");
    add_cond(same, cond(t->table, t->date_col, "EQUAL", d, 1));
    add_cond(same, cond(t->table, t->time_col, keyset ? "GREATER" : "GREATER_EQUAL", tv, 1));
    add_complex(w, "OR", same);
    if (keyset && cur->key[0]) {
        char parts[JDE_KEY_MAX], *pv[JDE_MAX_KEYS], *p = parts;
        int n = 0;

        snprintf(parts, sizeof(parts), "%s", cur->key);
        while (n < nkeys(t)) {
            pv[n++] = p;
            if ((p = strchr(p, '|')) == NULL) {
                break;
            }
            *p++ = '\0';
        }
        /* a cursor of another key shape (the flow's key was changed): the
         * tie-break uses the parts it has */
        for (int i = 0; i < n; i++) {
            cJSON *tie = subquery("MATCH_ALL");
            const char *kv[1];
            add_cond(tie, cond(t->table, t->date_col, "EQUAL", d, 1));
            add_cond(tie, cond(t->table, t->time_col, "EQUAL", tv, 1));
            for (int k = 0; k < i; k++) {
                kv[0] = pv[k];
                add_cond(tie, cond(t->table, keycol(t, k), "EQUAL", kv, 1));
            }
            kv[0] = pv[i];
            add_cond(tie, cond(t->table, keycol(t, i), "GREATER", kv, 1));
            add_complex(w, "OR", tie);
        }
    }
    return w;
}

/* A column alias as it goes into a controlId: letters and digits. */
static int alias_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 20) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p)) {
            return 0;
        }
    }
    return 1;
}

int jde_table_from_source(const cJSON *src, struct jde_table *t, struct mlc_errbuf *err)
{
    const char *table = mlc_json_str(src, "table");
    const char *kt = mlc_json_str(src, "key_type");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(src, "key");
    const cJSON *changed = cJSON_GetObjectItemCaseSensitive(src, "changed");

    memset(t, 0, sizeof(*t));
    if (table == NULL || strlen(table) >= sizeof(t->table) || table[0] == '\0') {
        mlc_errf(err, "source.table: required (e.g. \"F4801\")");
        return -1;
    }
    for (const char *p = table; *p; p++) {
        if (!isalnum((unsigned char)*p)) {
            mlc_errf(err, "source.table: '%s' is not a table name", table);
            return -1;
        }
    }
    snprintf(t->table, sizeof(t->table), "%s", table);
    if (key == NULL) {
        t->key_col = "DOCO";
    } else if (cJSON_IsString(key)) {
        t->key_col = key->valuestring;
    } else if (cJSON_IsArray(key) && cJSON_GetArraySize(key) >= 1 &&
               cJSON_GetArraySize(key) <= JDE_MAX_KEYS) {
        const cJSON *k;
        cJSON_ArrayForEach(k, key)
        {
            if (!cJSON_IsString(k) || !alias_ok(k->valuestring)) {
                mlc_errf(err, "source.key: every entry must be a column alias such as \"DOC\"");
                return -1;
            }
            for (int i = 0; i < t->n_keys; i++) {
                if (strcmp(t->key_cols[i], k->valuestring) == 0) {
                    mlc_errf(err, "source.key: column %s is listed twice", k->valuestring);
                    return -1;
                }
            }
            t->key_cols[t->n_keys++] = k->valuestring;
        }
        t->key_col = t->key_cols[0];
        if (t->n_keys == 1) {
            t->n_keys = 0;
        }
    } else {
        mlc_errf(err, "source.key: expected a column alias or an array of 1 to %d of them "
                 "(e.g. [\"KCO\", \"DOC\", \"DCT\", \"SFX\"])", JDE_MAX_KEYS);
        return -1;
    }
    if (!alias_ok(t->key_col)) {
        mlc_errf(err, "source.key: '%s' is not a column alias (letters and digits, e.g. \"DOCO\")",
                 t->key_col);
        return -1;
    }
    t->date_col = mlc_json_str(src, "date_column") ? mlc_json_str(src, "date_column") : "UPMJ";
    t->time_col = mlc_json_str(src, "time_column")
                      ? mlc_json_str(src, "time_column")
                      : (strcmp(table, "F4801") == 0 ? "TDAY" : "UPMT");
    if (changed != NULL) {
        const char *d = mlc_json_str(changed, "date"), *tm = mlc_json_str(changed, "time");
        if (!cJSON_IsObject(changed) || (d == NULL && tm == NULL)) {
            mlc_errf(err, "source.changed: expected {\"date\": \"UPMJ\", \"time\": \"UPMT\"} (the "
                     "columns of the row's last change)");
            return -1;
        }
        t->date_col = d ? d : t->date_col;
        t->time_col = tm ? tm : t->time_col;
    }
    if (!alias_ok(t->date_col) || !alias_ok(t->time_col)) {
        mlc_errf(err, "source.changed: '%s' is not a column alias (letters and digits)",
                 alias_ok(t->date_col) ? t->time_col : t->date_col);
        return -1;
    }
    if (kt != NULL && strcmp(kt, "number") != 0 && strcmp(kt, "string") != 0) {
        mlc_errf(err, "source.key_type: '%s' is not one of number, string", kt);
        return -1;
    }
    /* a key given as one string keeps the old default (numeric, as DOCO);
     * a key given as an array is checked only when key_type says so */
    t->key_numeric = t->n_keys == 0 && (kt != NULL ? strcmp(kt, "number") == 0 : !cJSON_IsArray(key));
    return 0;
}

static char *build_request(struct jde *j, const struct jde_table *t, const cJSON *src,
                           const struct jde_cursor *cur, int keyset, struct mlc_errbuf *err)
{
    cJSON *o = mlc_json_xobj(), *q = subquery("MATCH_ALL"), *agg, *ob, *e;
    const cJSON *cols = mlc_json_arr(src, "columns"), *filters = mlc_json_arr(src, "filter"), *f;
    struct mlc_buf ids = MLC_BUF_INIT;
    const char *order[2 + JDE_MAX_KEYS] = { t->date_col, t->time_col };
    int n_order = 2;
    char ps[16], *out = NULL;

    for (int i = 0; i < nkeys(t); i++) {
        order[n_order++] = keycol(t, i);
    }

    mlc_json_xadd_str(o, "targetName", t->table);
    mlc_json_xadd_str(o, "targetType", "table");
    mlc_json_xadd_str(o, "dataServiceType", "BROWSE");
    if (cols != NULL) {
        const cJSON *c;
        int have[2 + JDE_MAX_KEYS] = { 0 };
        cJSON_ArrayForEach(c, cols)
        {
            if (!cJSON_IsString(c)) {
                mlc_errf(err, "source.columns: every entry must be a column alias string");
                goto fail;
            }
            mlc_buf_addf(&ids, "%s%s.%s", ids.len ? "|" : "", t->table, c->valuestring);
            for (int i = 0; i < n_order; i++) {
                have[i] |= strcmp(c->valuestring, order[i]) == 0;
            }
        }
        for (int i = 0; i < n_order; i++) {
            if (!have[i]) {
                mlc_buf_addf(&ids, "%s%s.%s", ids.len ? "|" : "", t->table, order[i]);
            }
        }
        mlc_json_xadd_str(o, "returnControlIDs", mlc_buf_str(&ids));
    }
    snprintf(ps, sizeof(ps), "%ld", j->cf.page_size);
    mlc_json_xadd_str(o, "maxPageSize", ps);
    mlc_json_xadd(o, "enableNextPageProcessing", cJSON_CreateBool(j->cf.auth == JDE_AUTH_TOKEN));
    mlc_json_xadd(o, "aliasNaming", cJSON_CreateTrue());
    mlc_json_xadd_str(o, "findOnEntry", "TRUE");
    mlc_json_xadd(q, "autoFind", cJSON_CreateTrue());
    cJSON_ArrayForEach(f, filters)
    {
        const char *col = mlc_json_str(f, "column"), *op = mlc_json_str(f, "op");
        const cJSON *vals = mlc_json_arr(f, "values"), *v;
        const char *vv[32];
        int n = 0;
        if (col == NULL || op == NULL) {
            mlc_errf(err, "source.filter: each entry needs \"column\" and \"op\"");
            goto fail;
        }
        cJSON_ArrayForEach(v, vals)
        {
            if (n < 32 && cJSON_IsString(v)) {
                vv[n++] = v->valuestring;
            }
        }
        add_cond(q, cond(t->table, col, op, vv, n));
    }
    if (cur != NULL) {
        struct mlc_ymd ymd;
        char lit[32];
        if (mlc_yyyymmdd_parse(cur->date, &ymd) != 0 ||
            mlc_ymd_format(&ymd, j->date_fmt, lit, sizeof(lit)) != 0) {
            mlc_errf(err, "jde: cannot format watermark date '%s' as '%s'", cur->date, j->date_fmt);
            goto fail;
        }
        add_complex(q, "AND", watermark(t, cur, lit, keyset));
    }
    mlc_json_xadd(o, "query", q);
    q = NULL;
    agg = mlc_json_xobj();
    ob = mlc_json_xarr();
    for (int i = 0; i < n_order; i++) {
        char colid[48];
        e = mlc_json_xobj();
        snprintf(colid, sizeof(colid), "%s.%s", t->table, order[i]);
        mlc_json_xadd_str(e, "column", colid);
        mlc_json_xadd_str(e, "direction", "ASC");
        cJSON_AddItemToArray(ob, e);
    }
    mlc_json_xadd(agg, "orderBy", ob);
    mlc_json_xadd(o, "aggregation", agg);
    out = mlc_json_print(o);
fail:
    cJSON_Delete(q);
    cJSON_Delete(o);
    mlc_buf_release(&ids);
    return out;
}

/* ---------- connector ops ---------- */

static enum mlc_rc jde_open(struct conn *c)
{
    struct jde *j = mlc_xcalloc(1, sizeof(*j));
    char path[128];
    enum mlc_rc rc;

    c->priv = j;
    snprintf(path, sizeof(path), "systems.%s", c->name);
    rc = mlc_conf_load(c->conf, path, jde_keys, conn_common_allow, &j->cf, &c->err);
    if (rc != MLC_OK) {
        return rc;
    }
    if (strcmp(j->cf.type, "jde") != 0) {
        mlc_errf(&c->err, "%s.type: expected \"jde\"", path);
        return MLC_E_INVAL;
    }
    if (strlen(j->cf.date_format) >= sizeof(j->date_fmt) || !strstr(j->cf.date_format, "yyyy") ||
        !strstr(j->cf.date_format, "MM") || !strstr(j->cf.date_format, "dd")) {
        mlc_errf(&c->err, "%s.date_format: '%s' must contain yyyy, MM and dd", path, j->cf.date_format);
        return MLC_E_INVAL;
    }
    snprintf(j->date_fmt, sizeof(j->date_fmt), "%s", j->cf.date_format);
    j->auth = auth_custom_new(&jde_auth_ops, j);
    return MLC_OK;
}

static void jde_close(struct conn *c)
{
    struct jde *j = c->priv;

    if (j == NULL) {
        return;
    }
    if (j->token != NULL && c->http != NULL) {
        jde_logout(c);
    }
    if (j->password) {
        memset(j->password, 0, strlen(j->password));
    }
    free(j->password);
    free(j->token);
    free(j->next_href);
    auth_free(j->auth);
    mlc_conf_release(jde_keys, &j->cf);
    free(j);
    c->priv = NULL;
}

static enum mlc_rc jde_resolve(struct conn *c)
{
    struct jde *j = c->priv;

    if (j->password != NULL) {
        return MLC_OK;
    }
    return conn_secret(c, j->cf.password, &j->password);
}

static enum mlc_rc jde_ping(struct conn *c)
{
    enum mlc_rc rc = jde_resolve(c);

    if (rc != MLC_OK) {
        return rc;
    }
    /* the token request accepts Basic credentials too: same check for both modes */
    rc = jde_login(c, 0);
    if (rc == MLC_OK) {
        jde_logout(c);
    }
    return rc;
}

/* One data request (first page or next link). Re-authenticates once on
 * 444/403 and then the caller restarts from the committed watermark. */
static enum mlc_rc jde_fetch(struct conn *c, const char *url, const char *body,
                             struct mlc_http_resp *resp)
{
    struct jde *j = c->priv;
    enum mlc_rc rc = jde_send(c, url, body, resp);

    if (rc != MLC_OK) {
        char msg[300];
        jde_error_text(mlc_buf_str(&resp->body), resp->body.len, msg, sizeof(msg));
        if (rc == MLC_E_AUTH || resp->status == 403) {
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "jde at %s: session rejected (HTTP %ld: %s)", j->cf.base_url,
                     resp->status, msg);
            return MLC_E_AUTH;
        }
        if (resp->status >= 400 && resp->status < 600 && rc != MLC_E_NET && rc != MLC_E_THROTTLED) {
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "jde at %s: data request refused (HTTP %ld: %s)", j->cf.base_url,
                     resp->status, msg);
            return MLC_E_REJECTED;
        }
        if (resp->status == 500) {
            /* AIS reports bad tables and columns as 500: not worth retrying forever */
            mlc_err_reset(&c->err);
            mlc_errf(&c->err, "jde at %s: data request failed (HTTP 500: %s)", j->cf.base_url, msg);
        }
    }
    return rc;
}

static enum mlc_rc jde_poll(struct conn *c, const struct poll_req *rq, struct page *out)
{
    struct jde *j = c->priv;
    struct mlc_http_resp resp = { 0 };
    struct jde_table t;
    struct jde_cursor cur, *curp = NULL;
    char *url = NULL, *body = NULL, *next = NULL;
    int more = 0, reauthed = 0, first = rq->first;
    enum mlc_rc rc;

    if (jde_table_from_source(rq->source, &t, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    if ((rc = jde_resolve(c)) != MLC_OK) {
        return rc;
    }
again:
    rc = jde_ensure_token(c);
    if (rc != MLC_OK) {
        goto out;
    }
    if (!first && j->cf.auth == JDE_AUTH_TOKEN && j->next_href == NULL) {
        first = 1; /* cursor lost: restart from the committed watermark */
    }
    if (first || j->cf.auth == JDE_AUTH_BASIC) {
        curp = NULL;
        if (!first && j->have_last) {
            cur = j->last; /* Basic mode: keyset continuation */
            curp = &cur;
        } else if (rq->cursor != NULL && jde_cursor_parse(rq->cursor, &cur) == 0) {
            curp = &cur;
        }
        free(body);
        body = build_request(j, &t, rq->source, curp, j->cf.auth == JDE_AUTH_BASIC, &c->err);
        if (body == NULL) {
            rc = MLC_E_INVAL;
            goto out;
        }
        free(url);
        url = mlc_xasprintf("%s/v2/dataservice", j->cf.base_url);
        rc = jde_fetch(c, url, body, &resp);
    } else {
        rc = jde_fetch(c, j->next_href, "{}", &resp);
    }
    if (rc == MLC_E_AUTH && j->cf.auth == JDE_AUTH_TOKEN && !reauthed) {
        /* expired or killed session: its server cursor died with it */
        conn_log(c, MLC_LOG_INFO, "AIS session rejected; requesting a new token and restarting the "
                                  "query from the last committed watermark");
        reauthed = 1;
        free(j->token);
        j->token = NULL;
        free(j->next_href);
        j->next_href = NULL;
        mlc_err_reset(&c->err);
        first = 1;
        goto again;
    }
    if (rc == MLC_E_REJECTED && !first && j->cf.auth == JDE_AUTH_TOKEN && !reauthed) {
        /* "no next page": the server dropped the cursor; restart from the watermark */
        conn_log(c, MLC_LOG_INFO, "AIS next-page cursor lost; restarting from the watermark");
        reauthed = 1;
        free(j->next_href);
        j->next_href = NULL;
        mlc_err_reset(&c->err);
        first = 1;
        goto again;
    }
    if (rc != MLC_OK) {
        goto out;
    }
    rc = jde_parse_page(mlc_buf_str(&resp.body), resp.body.len, &t, out, &more, &next, &c->err);
    if (rc != MLC_OK) {
        goto out;
    }
    free(j->next_href);
    j->next_href = NULL;
    j->have_last = 0;
    for (size_t i = out->n; i-- > 0;) {
        if (out->recs[i].cursor != NULL && jde_cursor_parse(out->recs[i].cursor, &j->last) == 0) {
            j->have_last = 1;
            break;
        }
    }
    if (j->cf.auth == JDE_AUTH_TOKEN) {
        out->more = more && next != NULL;
        j->next_href = next;
        next = NULL;
        if (more && out->more == 0) {
            conn_log(c, MLC_LOG_WARN, "AIS says more records but sent no next link; the next run "
                                      "continues from the watermark");
        }
    } else {
        out->more = more && j->have_last;
    }
out:
    free(next);
    free(body);
    free(url);
    mlc_http_resp_release(&resp);
    return rc;
}

/* ---------- write-back: one orchestration per action ---------- */

/* What a writeback action compiles to: the orchestration and its inputs
 * (name -> template). */
struct jde_plan {
    char *orchestration;
    char **names;
    char **tmpls;
    int n;
};

static const char *const jde_wb_keys[] = { "orchestration", "inputs", NULL };

static void jde_plan_free(void *p)
{
    struct jde_plan *pl = p;

    if (pl == NULL) {
        return;
    }
    for (int i = 0; i < pl->n; i++) {
        free(pl->names[i]);
        free(pl->tmpls[i]);
    }
    free(pl->names);
    free(pl->tmpls);
    free(pl->orchestration);
    free(pl);
}

/* Orchestration names go into a URL path: letters, digits, _ - . only. */
static int orch_name_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 128) {
        return 0;
    }
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            return 0;
        }
    }
    return 1;
}

static void *jde_plan_new(const cJSON *action, const char *path, const char *const *vars,
                          struct mlc_errbuf *err)
{
    const char *orch = mlc_json_str(action, "orchestration");
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(action, "inputs"), *it;
    struct jde_plan *pl;
    char sub[400];

    if (orch == NULL) {
        mlc_errf(err, "%s.orchestration: required: the orchestration to call, e.g. \"MLC_UpdateWOStatus\"",
                 path);
        return NULL;
    }
    if (!orch_name_ok(orch)) {
        mlc_errf(err, "%s.orchestration: '%s' is not an orchestration name (letters, digits, _ - .)",
                 path, orch);
        return NULL;
    }
    if (!cJSON_IsObject(inputs) || cJSON_GetArraySize(inputs) == 0) {
        mlc_errf(err,
                 "%s.inputs: required object of orchestration input name -> value template, "
                 "e.g. {\"WorkOrder\": \"{key}\"}",
                 path);
        return NULL;
    }
    pl = mlc_xcalloc(1, sizeof(*pl));
    pl->orchestration = mlc_xstrdup(orch);
    pl->names = mlc_xcalloc((size_t)cJSON_GetArraySize(inputs), sizeof(char *));
    pl->tmpls = mlc_xcalloc((size_t)cJSON_GetArraySize(inputs), sizeof(char *));
    cJSON_ArrayForEach(it, inputs)
    {
        snprintf(sub, sizeof(sub), "%s.inputs.%s", path, it->string);
        if (!cJSON_IsString(it)) {
            mlc_errf(err, "%s: expected a string (a value or a template such as \"{key}\")", sub);
            jde_plan_free(pl);
            return NULL;
        }
        if (conn_tmpl_check(it->valuestring, vars, sub, err) != 0) {
            jde_plan_free(pl);
            return NULL;
        }
        pl->names[pl->n] = mlc_xstrdup(it->string);
        pl->tmpls[pl->n] = mlc_xstrdup(it->valuestring);
        pl->n++;
    }
    return pl;
}

static void jde_plan_describe(const void *p, char *out, size_t n)
{
    const struct jde_plan *pl = p;

    snprintf(out, n, "orchestration %s", pl ? pl->orchestration : "?");
}

static enum mlc_rc jde_write_back(struct conn *c, const struct wb_write *w)
{
    struct jde *j = c->priv;
    const struct jde_plan *pl = w->plan;
    struct mlc_http_resp resp = { 0 };
    char *url = NULL, *body = NULL;
    enum mlc_rc rc;
    cJSON *o, *inputs, *in;

    if (pl == NULL) {
        mlc_errf(&c->err, "jde write-back of %s: no orchestration configured for this change",
                 w->source_key ? w->source_key : "?");
        return MLC_E_INVAL;
    }
    if ((rc = jde_resolve(c)) != MLC_OK) {
        return rc;
    }
    /* JDE standard input format: {"inputs":[{"name":..,"value":..}]} */
    o = mlc_json_xobj();
    inputs = mlc_json_xarr();
    for (int i = 0; i < pl->n; i++) {
        char *val = conn_tmpl_expand(pl->tmpls[i], w->vars, w->n_vars);
        in = mlc_json_xobj();
        mlc_json_xadd_str(in, "name", pl->names[i]);
        mlc_json_xadd_str(in, "value", val);
        cJSON_AddItemToArray(inputs, in);
        free(val);
    }
    mlc_json_xadd(o, "inputs", inputs);
    body = mlc_json_print(o);
    cJSON_Delete(o);
    url = mlc_xasprintf("%s/v2/orchestrator/%s", j->cf.base_url, pl->orchestration);
    rc = jde_send(c, url, body, &resp);
    if (rc != MLC_OK) {
        char msg[300];
        jde_error_text(mlc_buf_str(&resp.body), resp.body.len, msg, sizeof(msg));
        mlc_err_reset(&c->err);
        mlc_errf(&c->err, "jde orchestration %s for %s failed (HTTP %ld: %s)", pl->orchestration,
                 w->source_key ? w->source_key : "?", resp.status, msg);
    }
    mlc_http_resp_release(&resp);
    free(url);
    free(body);
    return rc;
}

/* A cursor "yyyyMMdd|HHMMSS|key" is the row's last change (UPMJ/TDAY), in
 * the JD Edwards server's local time: its token answer's timeZoneOffset
 * says which; before a login (or in Basic mode) the agent's own zone is
 * taken (they usually sit side by side). */
static long long jde_cursor_time(struct conn *c, const char *cursor)
{
    const struct jde *j = c != NULL ? c->priv : NULL;
    struct jde_cursor cu;
    struct mlc_ymd d;
    struct tm tm = { 0 };

    if (jde_cursor_parse(cursor, &cu) != 0 || mlc_yyyymmdd_parse(cu.date, &d) != 0) {
        return -1;
    }
    tm.tm_year = d.y - 1900;
    tm.tm_mon = d.m - 1;
    tm.tm_mday = d.d;
    tm.tm_hour = (int)(cu.time / 10000);
    tm.tm_min = (int)(cu.time / 100 % 100);
    tm.tm_sec = (int)(cu.time % 100);
    if (j != NULL && j->have_tz) {
        return ((long long)timegm(&tm) - j->tz_offset_s) * 1000;
    }
    tm.tm_isdst = -1;
    return (long long)mktime(&tm) * 1000;
}

/* One record by key: the flow's table query with KEY = key added. */
static enum mlc_rc jde_fetch_one(struct conn *c, const cJSON *source, const char *key,
                                 struct record *out)
{
    struct mlc_http_resp resp = { 0 };
    struct page pg = { 0 };
    struct jde_table t;
    cJSON *src = NULL, *filters, *f, *vals;
    char *url = NULL, *body = NULL, *next = NULL;
    int more = 0;
    enum mlc_rc rc;

    memset(out, 0, sizeof(*out));
    if (jde_table_from_source(source, &t, &c->err) != 0) {
        return MLC_E_INVAL;
    }
    if ((rc = jde_resolve(c)) != MLC_OK) {
        return rc;
    }
    src = cJSON_Duplicate(source, 1);
    if (src == NULL) {
        MLC_BUG("out of memory copying a jde source");
    }
    /* t's column names point into source, which outlives this call */
    filters = cJSON_GetObjectItemCaseSensitive(src, "filter");
    if (!cJSON_IsArray(filters)) {
        cJSON_DeleteItemFromObjectCaseSensitive(src, "filter");
        filters = mlc_json_xarr();
        mlc_json_xadd(src, "filter", filters);
    }
    {
        /* one EQUAL per key column: a composite key's parts are '|'-separated */
        char parts[JDE_KEY_MAX], *p = parts, *bar;
        int i = 0;

        snprintf(parts, sizeof(parts), "%s", key);
        for (; i < nkeys(&t); i++) {
            bar = strchr(p, '|');
            if (bar != NULL && i + 1 < nkeys(&t)) {
                *bar = '\0';
            } else if (i + 1 < nkeys(&t)) {
                break; /* fewer parts than key columns */
            }
            f = mlc_json_xobj();
            mlc_json_xadd_str(f, "column", keycol(&t, i));
            mlc_json_xadd_str(f, "op", "EQUAL");
            vals = mlc_json_xarr();
            cJSON_AddItemToArray(vals, cJSON_CreateString(p));
            mlc_json_xadd(f, "values", vals);
            cJSON_AddItemToArray(filters, f);
            p = bar != NULL ? bar + 1 : p + strlen(p);
        }
        if (i < nkeys(&t)) {
            mlc_errf(&c->err, "jde: key '%s' has fewer parts than the %d key columns of %s "
                     "(%s...)", key, nkeys(&t), t.table, t.key_col);
            rc = MLC_E_INVAL;
            goto out;
        }
    }
    body = build_request(c->priv, &t, src, NULL, 0, &c->err);
    if (body == NULL) {
        rc = MLC_E_INVAL;
        goto out;
    }
    url = mlc_xasprintf("%s/v2/dataservice", ((struct jde *)c->priv)->cf.base_url);
    rc = jde_fetch(c, url, body, &resp);
    if (rc != MLC_OK) {
        goto out;
    }
    rc = jde_parse_page(mlc_buf_str(&resp.body), resp.body.len, &t, &pg, &more, &next, &c->err);
    for (size_t i = 0; rc == MLC_OK && i < pg.n; i++) {
        if (pg.recs[i].key != NULL && strcmp(pg.recs[i].key, key) == 0) {
            *out = pg.recs[i]; /* the page gives its strings up */
            memset(&pg.recs[i], 0, sizeof(pg.recs[i]));
            break;
        }
    }
out:
    page_release(&pg);
    free(next);
    free(url);
    free(body);
    cJSON_Delete(src);
    mlc_http_resp_release(&resp);
    return rc;
}

const struct connector connector_jde = {
    .name = "jde",
    .caps = CONN_SOURCE | CONN_WRITEBACK,
    .keys = jde_keys,
    .open = jde_open,
    .close = jde_close,
    .ping = jde_ping,
    .poll = jde_poll,
    .fetch = jde_fetch_one,
    .cursor_time = jde_cursor_time,
    .wb_keys = jde_wb_keys,
    .wb_plan = jde_plan_new,
    .wb_plan_free = jde_plan_free,
    .wb_describe = jde_plan_describe,
    .write_back = jde_write_back,
};
