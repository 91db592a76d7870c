/* SPDX-License-Identifier: Apache-2.0
 * jira_int.h: what the files of the Jira connector share and nobody else
 * sees: the connection state (struct jira), the small helpers and the
 * prototypes that cross file boundaries inside agent/connectors/jira/.
 */
#ifndef JIRA_INT_H
#define JIRA_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_err.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "agent/connectors/connector.h"

enum { JIRA_AUTH_BASIC = 0, JIRA_AUTH_OAUTH = 1 };

/* A search that pages longer than this is looping. */
#define JIRA_SEARCH_MAX_PAGES   10000

struct jira_conf {
    char *type;
    char *base_url;
    int auth;
    char *email;
    char *api_token;
    char *client_id;
    char *client_secret;
    char *refresh_token;
    char *cloud_id;
    char *token_url;
    long timeout_s;
    int tls_insecure;
    long user_cache_s;
};

enum jira_field_kind {
    FIELD_TEXT = 0,     /* plain string */
    FIELD_OPTION,       /* select/radio: {"value": v} */
    FIELD_OPTION_ARRAY, /* multi-select: [{"value": v}] */
    FIELD_ADF,          /* multi-line text: ADF document */
    FIELD_NUMBER,       /* number */
};

struct jira_field {
    char *id; /* customfield_10050 */
    char *name;
    enum jira_field_kind kind;
};

struct jira_user {
    char *email;      /* lowercased */
    char *account_id; /* NULL: no such user (a cached miss) */
    double expires;   /* monotonic seconds */
    int warned;
};

struct auth;

struct jira {
    struct jira_conf cf;
    int conf_loaded;
    char *path;     /* "systems.<name>" for messages */
    char *api_base; /* site URL, or base_url/ex/jira/<cloud_id> */
    char *token_url;
    char *refresh_name; /* secret store name of the current refresh token */
    struct mlc_http *own_http;

    char *basic_pass;
    char *client_secret;
    struct auth *oauth; /* OAuth 2.0 refresh-token provider, made on first use */
    int auth_failed;   /* the last jira_call() failed while getting a token */

    struct jira_field *fields;
    size_t n_fields;
    int fields_loaded;

    struct jira_user *users;
    size_t n_users;
    size_t user_evict;

    /* per flow target whose mapping picks the project: every project it
     * may write to, comma separated, the target's own project first */
    struct jira_scope {
        const cJSON *target;
        char *projects;
    } *scopes;
    size_t n_scopes;

    /* the status a new issue starts in, per "project/issue type", as read
     * after a create: a new issue mapped to it needs no status call */
    cJSON *initial;
};

/* ---------------------------------------------------------------- helpers */

static inline double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void set_msg(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void set_msg(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static inline const char *body_str(const struct mlc_http_resp *resp)
{
    return mlc_buf_str(&resp->body);
}

/* A string member or a number member as text (Jira ids are strings, but be lenient). */
static inline int id_text(const cJSON *obj, const char *key, char *out, size_t n)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(it) && it->valuestring[0] != '\0' && strlen(it->valuestring) < n) {
        memcpy(out, it->valuestring, strlen(it->valuestring) + 1);
        return 0;
    }
    if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 1e15 &&
        (double)(long long)it->valuedouble == it->valuedouble) {
        int k = snprintf(out, n, "%lld", (long long)it->valuedouble);

        return k > 0 && (size_t)k < n ? 0 : -1;
    }
    return -1;
}

/* "<prefix><urlencoded s><suffix>" (heap). */
static inline char *path_with(const char *prefix, const char *s, const char *suffix)
{
    struct mlc_buf b = MLC_BUF_INIT;

    mlc_buf_adds(&b, prefix);
    mlc_http_urlencode(&b, s);
    mlc_buf_adds(&b, suffix);
    return mlc_buf_detach(&b);
}

static inline int empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static inline cJSON *xdup(const cJSON *v)
{
    cJSON *d = cJSON_Duplicate(v, 1);

    if (d == NULL) {
        MLC_BUG("out of memory copying a json value");
    }
    return d;
}

static inline const cJSON *json_member(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* Minutes the changes() query looks back: from since to now, plus overlap. */
static inline long long changes_minutes(long long since_ms, long long now_ms)
{
    long long mins = since_ms < now_ms ? (now_ms - since_ms) / 60000 : 0;

    if (mins > 10LL * 366 * 1440) {
        mins = 10LL * 366 * 1440; /* a cursor years old: ten years is everything */
    }
    return mins + 2;
}

static inline long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The server's clock from the Date header, or fallback. */
static inline long long server_ms(const struct mlc_http_resp *resp, long long fallback)
{
    return resp->date > 0 ? resp->date * 1000LL : fallback;
}

static inline void state_set(cJSON *state, const char *key, cJSON *val)
{
    if (val == NULL) {
        MLC_BUG("out of memory building the watch state");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(state, key);
    mlc_json_xadd(state, key, val);
}


/* ------------------------------------------------ shared inside the folder */

/* jira.c: one logical API call (auth, one re-authentication on a 401) */
enum mlc_rc jira_call(struct conn *c, const char *method, const char *path, const cJSON *body,
                      struct mlc_http_resp *resp, struct mlc_errbuf *err);
/* jira.c: one page of POST /rest/api/3/search/jql: the issues matching jql
 * with fields (NULL-terminated), the agent's trace property and expand
 * (NULL = none), 100 a page, from token (NULL = the first page). */
enum mlc_rc jira_search_page(struct conn *c, const char *jql, const char *const *fields,
                             const char *expand, const char *token, struct mlc_http_resp *resp,
                             struct mlc_errbuf *err);
/* Whole-call failure message into c->err: "jira at <url>: <what>: <reason>". */
void jira_call_failed(struct conn *c, const char *what, const struct mlc_errbuf *one);

/* schema.c: field metadata, prepare() checks, assignee lookups */
enum mlc_rc jira_load_fields(struct conn *c);
const struct jira_field *jira_field_find(const struct jira *j, const char *id);
enum mlc_rc jira_prepare(struct conn *c, const cJSON *target, const struct prep_info *pi);
/* The projects of a flow's target: "MFG", or "MFG,OPS" when its mapping
 * picks the project (the target's own first). */
const char *jira_projects(struct conn *c, const cJSON *target);
/* The next key of a comma separated project list into out; *p moves past
 * it. 0 when the list is done. */
int jira_project_next(const char **p, char *out, size_t n);
/* Whether key is one of a comma separated list of project keys. */
int jira_project_in(const char *list, const char *key);
enum mlc_rc jira_account_for(struct conn *c, const char *email_in, const char **account,
                             char *msg, size_t msgn);
enum mlc_rc jira_account_known(struct conn *c, const char *id, int *known, char *msg,
                               size_t msgn);
int jira_account_id_shape(const char *s);

/* issue.c: issue bodies, apply() and find() */
enum mlc_rc jira_item_body(struct conn *c, const cJSON *target, const struct tgt_item *item,
                           int create, cJSON **out, struct result *r, char *msg, size_t msgn);
enum mlc_rc jira_apply(struct conn *c, const struct batch *in, struct result *out);
enum mlc_rc jira_find(struct conn *c, const cJSON *target, const char *const *markers,
                      size_t n, const char *const *before, size_t n_before, struct tgt_found *out);

/* workflow.c: status and comments after a write (see its top comment) */
/* 1 when the item maps a status or comments that may need calls after the
 * write (create: any; update: a status or comment id prev does not list). */
int jira_item_has_after(struct conn *c, const cJSON *target, const struct tgt_item *item,
                        int create);
/* MLC_E_REJECTED (msg says why) when the mapped status or comments are
 * malformed; MLC_OK otherwise. */
enum mlc_rc jira_item_check_after(const struct tgt_item *item, char *msg, size_t msgn);
/* The mlc.trace property value for item with hash (NULL: none). */
cJSON *jira_trace_json(const struct tgt_item *item, const char *hash);
/* After item was written as issue key (fresh: created in this call, so it
 * has no comments): post its new comments, move it to its status, then
 * write the final trace when the write carried JIRA_TRACE_PENDING (pending,
 * as jira_item_has_after said when the body was built). r->lists gains
 * "comments" and "status" for the ledger. On failure r->rc and r->err say
 * why (the per-item verdict) and that rc is returned. */
enum mlc_rc jira_item_after(struct conn *c, const cJSON *target, const struct tgt_item *item,
                            const char *key, int fresh, int pending, struct result *r);

/* webhook.c: watch() */
enum mlc_rc jira_watch(struct conn *c, const cJSON *target, const struct watch_req *req,
                       cJSON *state, long long *next_ms);

/* changes.c: changes(), the polling fallback */
enum mlc_rc jira_changes(struct conn *c, const cJSON *target, char **cursor, cJSON *state,
                         cJSON *events);

#endif
