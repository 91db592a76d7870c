/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the auth providers (agent/connectors/auth/) against a small
 * HTTP server on 127.0.0.1 that this test runs in a thread: a token endpoint
 * answering as each test scripts it, and a resource that answers 401 to any
 * Authorization but the one the test names. A fake vault and the server
 * write one event list, so the order of vault and network calls is checked.
 *
 * Until the Makefile's check-build builds it, from the repository root:
 *   mkdir -p build/tests && gcc -std=c11 -Wall -Wextra -Wshadow -Wformat=2 \
 *     -Wstrict-prototypes -Wvla -Werror -pthread -I. -D_GNU_SOURCE -DMLC_VERSION='"0.1.0"' \
 *     -o build/tests/test_auth tests/unit/test_auth.c shared/[a-z]*.c \
 *     agent/connectors/connector.c agent/connectors/auth/[a-z]*.c \
 *     $(pkg-config --cflags --libs libcurl libcjson sqlite3 libzstd libwebsockets) \
 *     -lmbedcrypto -lpthread -lm && build/tests/test_auth
 * and the same with -fsanitize=address,undefined -fno-sanitize-recover=all
 * -fno-omit-frame-pointer after -Werror (libwebsockets: shared/mlc_lws.c and
 * mlc_wsq.c need it to link).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cjson/cJSON.h>
#include "agent/connectors/auth/auth.h"
#include "shared/mlc_http.h"
#include "shared/mlc_json.h"
#include "shared/mlc_log.h"
#include "tinytest.h"

/* ------------------------------------------------------------ event list */

#define MAX_EVENTS 32

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char events[MAX_EVENTS][200];
static size_t n_events;

static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&mu);
    if (n_events < MAX_EVENTS) {
        va_start(ap, fmt);
        vsnprintf(events[n_events++], sizeof(events[0]), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&mu);
}

/* 1 when the events are exactly the NULL-terminated list (printed if not). */
static int events_are(const char *const *want)
{
    size_t n = 0;
    int same = 1;

    pthread_mutex_lock(&mu);
    for (; want[n] != NULL; n++) {
        if (n >= n_events || strcmp(events[n], want[n]) != 0) {
            same = 0;
        }
    }
    if (n != n_events) {
        same = 0;
    }
    if (!same) {
        for (size_t i = 0; i < n_events; i++) {
            fprintf(stderr, "  event %zu: %s\n", i, events[i]);
        }
    }
    pthread_mutex_unlock(&mu);
    return same;
}

/* ---------------------------------------------------------------- server */

struct seen {
    char method[8];
    char path[64];
    char authz[512];
    char ctype[128];
    char body[2048];
};

struct reply {
    int status;
    const char *body;
};

#define MAX_SEEN 16

static struct {
    int fd;
    int port;
    pthread_t th;
    int quit;
    struct reply token[8]; /* the token endpoint's answers, in turn */
    size_t n_token, next_token;
    char res_ok[512]; /* the Authorization /res accepts ("" = any) */
    struct seen seen[MAX_SEEN];
    size_t n_seen;
    int token_calls, res_calls;
} srv;

/* Value of header name (lowercase, with ':') in the head, "" when absent. */
static void header(const char *head, const char *name, char *out, size_t n)
{
    const char *p = head;
    size_t len = strlen(name);

    out[0] = '\0';
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, len) == 0) {
            const char *v = p + len, *end;
            while (*v == ' ') {
                v++;
            }
            end = strstr(v, "\r\n");
            len = end ? (size_t)(end - v) : strlen(v);
            snprintf(out, n, "%.*s", (int)len, v);
            return;
        }
    }
}

static void serve(int fd)
{
    char buf[16384], clen[32], out[4096];
    struct timeval tv = { 5, 0 };
    struct seen s;
    const char *end = NULL;
    size_t got = 0, body_len = 0, head_len;
    int status;
    const char *body = "{}";

    memset(&s, 0, sizeof(s));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (end == NULL && got + 1 < sizeof(buf)) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0) {
            return;
        }
        got += (size_t)r;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (end == NULL) {
        return;
    }
    head_len = (size_t)(end - buf) + 4;
    buf[head_len - 2] = '\0'; /* keep the last header's CRLF for header() */
    header(buf, "content-length:", clen, sizeof(clen));
    body_len = (size_t)strtoul(clen, NULL, 10);
    while (got < head_len + body_len && got + 1 < sizeof(buf)) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0) {
            return;
        }
        got += (size_t)r;
    }
    sscanf(buf, "%7s %63s", s.method, s.path);
    header(buf, "authorization:", s.authz, sizeof(s.authz));
    header(buf, "content-type:", s.ctype, sizeof(s.ctype));
    snprintf(s.body, sizeof(s.body), "%.*s", (int)body_len, buf + head_len);

    pthread_mutex_lock(&mu);
    if (srv.n_seen < MAX_SEEN) {
        srv.seen[srv.n_seen++] = s;
    }
    if (strcmp(s.path, "/token") == 0 || strcmp(s.path, "/api/4.0/login") == 0) {
        srv.token_calls++;
        if (srv.next_token < srv.n_token) {
            status = srv.token[srv.next_token].status;
            body = srv.token[srv.next_token].body;
            srv.next_token++;
        } else {
            status = 500;
            body = "{\"message\":\"no answer scripted\"}";
        }
    } else if (strcmp(s.path, "/res") == 0) {
        srv.res_calls++;
        status = srv.res_ok[0] == '\0' || strcmp(s.authz, srv.res_ok) == 0 ? 200 : 401;
        body = status == 200 ? "{\"ok\":true}" : "{\"message\":\"token expired\"}";
    } else {
        status = 404;
    }
    pthread_mutex_unlock(&mu);
    if (strcmp(s.path, "/res") == 0) {
        event("res %s -> %d", s.authz, status);
    } else {
        event("token %s", s.path);
    }
    snprintf(out, sizeof(out),
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             status, strlen(body), body);
    if (send(fd, out, strlen(out), MSG_NOSIGNAL) < 0) {
        perror("test server send");
    }
}

static void *srv_main(void *arg)
{
    (void)arg;
    for (;;) {
        int quit, fd = accept(srv.fd, NULL, NULL);

        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        pthread_mutex_lock(&mu);
        quit = srv.quit;
        pthread_mutex_unlock(&mu);
        if (!quit) {
            serve(fd);
        }
        close(fd);
        if (quit) {
            break;
        }
    }
    return NULL;
}

static int loopback_socket(int *port)
{
    struct sockaddr_in a = { 0 };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test socket");
        exit(2);
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void srv_start(void)
{
    srv.fd = loopback_socket(&srv.port);
    if (listen(srv.fd, 16) != 0 || pthread_create(&srv.th, NULL, srv_main, NULL) != 0) {
        perror("test server");
        exit(2);
    }
}

static void srv_stop(void)
{
    struct sockaddr_in a = { 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    pthread_mutex_lock(&mu);
    srv.quit = 1;
    pthread_mutex_unlock(&mu);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)srv.port);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("test server stop");
    }
    pthread_join(srv.th, NULL);
    close(fd);
    close(srv.fd);
}

/* The token endpoint's next answers. */
static void script(size_t n, const struct reply *r)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n; i++) {
        srv.token[srv.n_token++] = r[i];
    }
    pthread_mutex_unlock(&mu);
}

static void resource_accepts(const char *authz)
{
    pthread_mutex_lock(&mu);
    snprintf(srv.res_ok, sizeof(srv.res_ok), "%s", authz);
    pthread_mutex_unlock(&mu);
}

static int count(const int *what)
{
    int n;

    pthread_mutex_lock(&mu);
    n = *what;
    pthread_mutex_unlock(&mu);
    return n;
}

/* The i-th request the server saw (a copy), or an empty one. */
static struct seen seen_at(size_t i)
{
    struct seen s;

    memset(&s, 0, sizeof(s));
    pthread_mutex_lock(&mu);
    if (i < srv.n_seen) {
        s = srv.seen[i];
    }
    pthread_mutex_unlock(&mu);
    return s;
}

/* ----------------------------------------------------------------- vault */

static struct {
    char name[64];
    char *stored; /* the value under name, NULL = none */
    int fail_get, fail_put;
} fv;

static enum mlc_rc fv_get(void *ctx, const char *name, char **out, struct mlc_errbuf *err)
{
    (void)ctx;
    event("vault.get %s", name);
    if (fv.fail_get) {
        mlc_errf(err, "state database is locked");
        return MLC_E_IO;
    }
    if (fv.stored == NULL || strcmp(name, fv.name) != 0) {
        /* like the agent's vault: a message even for "absent" */
        mlc_errf(err, "secret '%s' is not set", name);
        return MLC_E_NOTFOUND;
    }
    *out = mlc_xstrdup(fv.stored);
    return MLC_OK;
}

static enum mlc_rc fv_put(void *ctx, const char *name, const char *value, struct mlc_errbuf *err)
{
    (void)ctx;
    event("vault.put %s %s", name, value);
    if (fv.fail_put) {
        mlc_errf(err, "disk full");
        return MLC_E_IO;
    }
    snprintf(fv.name, sizeof(fv.name), "%s", name);
    free(fv.stored);
    fv.stored = mlc_xstrdup(value);
    return MLC_OK;
}

static const struct vault fake_vault = { NULL, NULL, fv_get, fv_put };

/* ------------------------------------------------------------- fixtures */

static long long fake_ms;

static long long fake_now(void)
{
    return fake_ms;
}

static char sys_name[] = "t";
static char token_url[128], login_url[128];
static const struct mlc_retry quick = { 2, 1, 2, 100 };

static void setup(struct conn *c)
{
    pthread_mutex_lock(&mu);
    n_events = 0;
    srv.n_token = srv.next_token = 0;
    srv.res_ok[0] = '\0';
    srv.n_seen = 0;
    srv.token_calls = srv.res_calls = 0;
    pthread_mutex_unlock(&mu);
    free(fv.stored);
    memset(&fv, 0, sizeof(fv));
    memset(c, 0, sizeof(*c));
    c->name = sys_name;
    c->vault = &fake_vault;
    c->http = mlc_http_new(NULL);
    fake_ms = 1000000;
}

static void teardown(struct conn *c, struct auth *au)
{
    auth_free(au);
    mlc_http_free(c->http);
    free(fv.stored);
    fv.stored = NULL;
}

static enum mlc_rc get_res(struct auth *au, struct conn *c)
{
    struct mlc_http_resp resp = { 0 };
    struct mlc_http_req rq = { 0 };
    char url[128];
    enum mlc_rc rc;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/res", srv.port);
    rq.method = "GET";
    rq.url = url;
    rc = auth_send(au, c, &rq, &resp);
    mlc_http_resp_release(&resp);
    return rc;
}

/* A refresh-grant provider as Atlassian wants it. */
static struct auth *jira_like(void)
{
    struct auth_oauth_conf cf = { 0 };

    cf.token_url = token_url;
    cf.client_id = "cid-1";
    cf.client_secret = "csecret-xyz";
    cf.refresh_token = "rt-conf-0";
    cf.vault_name = "t.refresh";
    cf.retry = &quick;
    return auth_oauth_refresh_new(&cf);
}

static int has(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* No secret of the oauth fixtures appears in s. */
static int no_secret(const char *s)
{
    static const char *const secrets[] = { "csecret-xyz", "rt-conf-0",   "rt-vault-1", "rt-new-2",
                                           "at-one-1111", "at-two-2222", NULL };

    for (const char *const *p = secrets; *p != NULL; p++) {
        if (has(s, *p)) {
            fprintf(stderr, "  secret '%s' in: %s\n", *p, s);
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------ basic, bearer */

static void basic_sends_user_and_password(void)
{
    struct conn c;
    struct auth *au;

    setup(&c);
    au = auth_basic_new("bob", "pw-secret-1");
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_STR(seen_at(0).authz, "Basic Ym9iOnB3LXNlY3JldC0x"); /* bob:pw-secret-1 */
    CHECK_INT(count(&srv.res_calls), 1);
    teardown(&c, au);
}

static void basic_refused_says_check_it(void)
{
    struct conn c;
    struct auth *au;

    setup(&c);
    resource_accepts("Basic c29tZW9uZTplbHNl");
    au = auth_basic_new("bob", "pw-secret-1");
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK_INT(count(&srv.res_calls), 1); /* nothing to renew: no second try */
    CHECK(has(c.err.msg, "'t'"));
    CHECK(has(c.err.msg, "'bob'"));
    CHECK(has(c.err.msg, "password was refused"));
    CHECK(has(c.err.msg, "check"));
    CHECK(!has(c.err.msg, "pw-secret-1"));
    teardown(&c, au);
}

static void bearer_sends_token_and_refusal_names_system(void)
{
    struct conn c;
    struct auth *au;

    setup(&c);
    au = auth_bearer_new("tok-abc-123");
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_STR(seen_at(0).authz, "Bearer tok-abc-123");
    resource_accepts("Bearer another");
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK_INT(count(&srv.res_calls), 2);
    CHECK(has(c.err.msg, "'t'"));
    CHECK(has(c.err.msg, "bearer token was refused"));
    CHECK(!has(c.err.msg, "tok-abc-123"));
    teardown(&c, au);
}

/* ---------------------------------------------------------- refresh grant */

static void refresh_gets_token_with_json_grant(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"expires_in\":3600,\"scope\":\"x\"}" },
    };
    struct conn c;
    struct auth *au;
    struct seen t;
    cJSON *body;
    char red[64];

    setup(&c);
    script(1, r);
    resource_accepts("Bearer at-one-1111");
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_INT(get_res(au, &c), MLC_OK); /* the token is reused */
    CHECK_INT(count(&srv.token_calls), 1);
    CHECK_INT(count(&srv.res_calls), 2);
    CHECK_INT(c.token_refreshes, 1);
    t = seen_at(0);
    CHECK_STR(t.method, "POST");
    CHECK_STR(t.path, "/token");
    CHECK_STR(t.ctype, "application/json");
    CHECK_STR(t.authz, "");
    body = cJSON_Parse(t.body);
    CHECK_STR(mlc_json_str(body, "grant_type"), "refresh_token");
    CHECK_STR(mlc_json_str(body, "client_id"), "cid-1");
    CHECK_STR(mlc_json_str(body, "client_secret"), "csecret-xyz");
    CHECK_STR(mlc_json_str(body, "refresh_token"), "rt-conf-0"); /* the vault has none */
    cJSON_Delete(body);
    /* the access token is known to the log redactor */
    CHECK_STR(mlc_log_redact("got at-one-1111 ok", red, sizeof(red)), "got [redacted] ok");
    CHECK_STR(auth_oauth_api_domain(au), "");
    teardown(&c, au);
}

static void refresh_401_renews_once_and_retries_once(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"expires_in\":3600}" },
        { 200, "{\"access_token\":\"at-two-2222\",\"expires_in\":3600}" },
    };
    static const char *const want[] = { "vault.get t.refresh",
                                        "token /token",
                                        "res Bearer at-one-1111 -> 401",
                                        "vault.get t.refresh",
                                        "token /token",
                                        "res Bearer at-two-2222 -> 200",
                                        NULL };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(2, r);
    resource_accepts("Bearer at-two-2222");
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK(events_are(want));
    CHECK_INT(count(&srv.token_calls), 2);
    CHECK_INT(count(&srv.res_calls), 2);
    CHECK_INT(c.err.set, 0); /* the handled 401 leaves no message behind */
    teardown(&c, au);
}

static void refresh_second_401_is_returned(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"expires_in\":3600}" },
        { 200, "{\"access_token\":\"at-two-2222\",\"expires_in\":3600}" },
        { 200, "{\"access_token\":\"at-three-3333\",\"expires_in\":3600}" },
    };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(3, r);
    resource_accepts("Bearer never");
    mlc_errf(&c.err, "an earlier failure");
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK_INT(count(&srv.token_calls), 2);
    CHECK_INT(count(&srv.res_calls), 2);
    CHECK_STR(c.err.msg, "an earlier failure"); /* a message from before stays first */
    teardown(&c, au);
}

static void rotation_is_stored_before_the_token_is_used(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"refresh_token\":\"rt-new-2\","
               "\"expires_in\":3600}" },
    };
    static const char *const want[] = { "vault.get t.refresh", "token /token",
                                        "vault.put t.refresh rt-new-2",
                                        "res Bearer at-one-1111 -> 200", NULL };
    struct conn c;
    struct auth *au;
    cJSON *body;

    setup(&c);
    snprintf(fv.name, sizeof(fv.name), "t.refresh");
    fv.stored = mlc_xstrdup("rt-vault-1");
    script(1, r);
    resource_accepts("Bearer at-one-1111");
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK(events_are(want));
    body = cJSON_Parse(seen_at(0).body);
    CHECK_STR(mlc_json_str(body, "refresh_token"), "rt-vault-1"); /* the vault's wins */
    cJSON_Delete(body);
    CHECK_STR(fv.stored, "rt-new-2");
    teardown(&c, au);
}

static void rotation_not_stored_fails_and_is_stored_first_next_time(void)
{
    static const struct reply r1[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"refresh_token\":\"rt-new-2\","
               "\"expires_in\":3600}" },
    };
    static const struct reply r2[] = {
        { 200, "{\"access_token\":\"at-two-2222\",\"refresh_token\":\"rt-new-3\","
               "\"expires_in\":3600}" },
    };
    static const char *const want[] = { "vault.put t.refresh rt-new-2", "token /token",
                                        "vault.put t.refresh rt-new-3",
                                        "res Bearer at-two-2222 -> 200", NULL };
    struct conn c;
    struct auth *au;
    cJSON *body;

    setup(&c);
    fv.fail_put = 1;
    script(1, r1);
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_IO);
    CHECK_INT(count(&srv.res_calls), 0); /* the access token was never used */
    CHECK(has(c.err.msg, "'t'"));
    CHECK(has(c.err.msg, "disk full"));
    CHECK(has(c.err.msg, "re-authorise"));
    CHECK(has(c.err.msg, "re-consent"));
    CHECK(no_secret(c.err.msg));

    /* the vault works again: the held token is stored before it is sent */
    fv.fail_put = 0;
    mlc_err_reset(&c.err);
    pthread_mutex_lock(&mu);
    n_events = 0;
    pthread_mutex_unlock(&mu);
    script(1, r2);
    resource_accepts("Bearer at-two-2222");
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK(events_are(want));
    body = cJSON_Parse(seen_at(1).body);
    CHECK_STR(mlc_json_str(body, "refresh_token"), "rt-new-2");
    cJSON_Delete(body);
    CHECK_STR(fv.stored, "rt-new-3");
    teardown(&c, au);
}

static void invalid_grant_says_reauthorise_without_secrets(void)
{
    static const struct reply r[] = {
        { 403, "{\"error\":\"invalid_grant\",\"error_description\":\"Unknown or invalid "
               "refresh token.\"}" },
        /* a server that echoes what it was sent */
        { 400, "{\"error\":\"invalid_grant\",\"error_description\":\"rt-conf-0 is unknown to "
               "client csecret-xyz\"}" },
    };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(2, r);
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK_INT(count(&srv.res_calls), 0);
    CHECK(has(c.err.msg, "'t'"));
    CHECK(has(c.err.msg, "invalid_grant"));
    CHECK(has(c.err.msg, "Unknown or invalid refresh token."));
    CHECK(has(c.err.msg, "re-authorise"));
    CHECK(has(c.err.msg, "'t.refresh'"));
    CHECK(no_secret(c.err.msg));

    mlc_err_reset(&c.err);
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK(has(c.err.msg, "[redacted] is unknown"));
    CHECK(no_secret(c.err.msg));
    CHECK_INT(count(&srv.token_calls), 2);
    teardown(&c, au);
}

static void zoho_form_grant_scheme_and_api_domain(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"1000.at.zz\",\"scope\":\"ZohoCRM.modules.ALL\","
               "\"api_domain\":\"https://www.zohoapis.eu\",\"token_type\":\"Bearer\","
               "\"expires_in\":3600}" },
    };
    struct auth_oauth_conf cf = { 0 };
    struct conn c;
    struct auth *au;
    struct seen t;

    setup(&c);
    cf.token_url = token_url;
    cf.client_id = "1000.CID";
    cf.client_secret = "a b&c=d";
    cf.refresh_token = "1000.rt.zz";
    cf.vault_name = "z.refresh";
    cf.form = 1;
    cf.scheme = "Zoho-oauthtoken";
    cf.retry = &quick;
    script(1, r);
    resource_accepts("Zoho-oauthtoken 1000.at.zz");
    au = auth_oauth_refresh_new(&cf);
    CHECK_STR(auth_oauth_api_domain(au), "");
    CHECK_INT(get_res(au, &c), MLC_OK);
    t = seen_at(0);
    CHECK_STR(t.ctype, "application/x-www-form-urlencoded");
    CHECK_STR(t.body, "grant_type=refresh_token&client_id=1000.CID&client_secret=a%20b%26c%3Dd"
                      "&refresh_token=1000.rt.zz");
    CHECK_STR(seen_at(1).authz, "Zoho-oauthtoken 1000.at.zz");
    CHECK_STR(auth_oauth_api_domain(au), "https://www.zohoapis.eu");
    teardown(&c, au);
}

static void error_in_a_200_answer_is_no_token(void)
{
    static const struct reply r[] = {
        { 200, "{\"error\":\"invalid_code\"}" }, /* Zoho may say it with a 200 */
        { 200, "{\"token_type\":\"Bearer\"}" },
        { 200, "{\"access_token\":\"at-one-1111\",\"api_domain\":\"file:///etc\"}" },
    };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(3, r);
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK(has(c.err.msg, "re-authorise"));
    mlc_err_reset(&c.err);
    CHECK_INT(get_res(au, &c), MLC_E_PROTO);
    CHECK(has(c.err.msg, "without an access_token"));
    mlc_err_reset(&c.err);
    CHECK_INT(get_res(au, &c), MLC_E_PROTO);
    CHECK(has(c.err.msg, "api_domain"));
    CHECK_INT(count(&srv.res_calls), 0);
    CHECK_INT(c.token_refreshes, 0);
    teardown(&c, au);
}

static void token_endpoint_5xx_and_transport_are_transient(void)
{
    static const struct reply r[] = {
        { 500, "{\"message\":\"down\"}" },
        { 502, "bad gateway" },
    };
    struct auth_oauth_conf cf = { 0 };
    struct conn c;
    struct auth *au;
    char closed_url[128];
    int port, fd;

    setup(&c);
    script(2, r);
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_NET);
    CHECK_INT(count(&srv.token_calls), 2); /* mlc_http retried, as told by quick */
    CHECK_INT(count(&srv.res_calls), 0);
    CHECK(has(c.err.msg, "'t'"));
    CHECK(has(c.err.msg, "HTTP 502"));
    auth_free(au);

    /* a port nobody listens on (bound, never listening) */
    fd = loopback_socket(&port);
    snprintf(closed_url, sizeof(closed_url), "http://127.0.0.1:%d/token", port);
    cf.token_url = closed_url;
    cf.refresh_token = "rt-conf-0";
    cf.retry = &quick;
    mlc_err_reset(&c.err);
    au = auth_oauth_refresh_new(&cf);
    CHECK_INT(get_res(au, &c), MLC_E_NET);
    CHECK(has(c.err.msg, "oauth token refresh failed"));
    close(fd);
    teardown(&c, au);
}

static void refresh_renews_when_under_a_minute_remains(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"at-one-1111\",\"expires_in\":3600}" },
        { 200, "{\"access_token\":\"at-two-2222\",\"expires_in\":\"3600\"}" },
    };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(2, r);
    au = jira_like();
    au->now_ms = fake_now;
    CHECK_INT(get_res(au, &c), MLC_OK);
    fake_ms += (3600 - 61) * 1000LL; /* 61 s left */
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_INT(count(&srv.token_calls), 1);
    fake_ms += 2000; /* 59 s left */
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_INT(count(&srv.token_calls), 2);
    CHECK_STR(seen_at(4).authz, "Bearer at-two-2222");
    CHECK_INT(count(&srv.res_calls), 3); /* renewed before the call, not after a 401 */
    teardown(&c, au);
}

static void vault_read_error_stops_before_the_network(void)
{
    struct conn c;
    struct auth *au;

    setup(&c);
    fv.fail_get = 1;
    au = jira_like();
    CHECK_INT(get_res(au, &c), MLC_E_IO);
    CHECK(has(c.err.msg, "cannot read secret 't.refresh'"));
    CHECK(has(c.err.msg, "state database is locked"));
    CHECK_INT(count(&srv.token_calls), 0);
    CHECK_INT(count(&srv.res_calls), 0);
    teardown(&c, au);
}

/* ---------------------------------------------------- client credentials */

static struct auth *ifs_like(enum auth_cc_style style)
{
    struct auth_cc_conf cf = { 0 };

    cf.token_url = token_url;
    cf.client_id = "ifs-client";
    cf.client_secret = "cs:ifs/1";
    cf.scope = "openid microprofile-jwt";
    cf.style = style;
    cf.retry = &quick;
    return auth_client_credentials_new(&cf);
}

static void client_credentials_basic_form_and_cache(void)
{
    static const struct reply r[] = {
        { 200, "{\"access_token\":\"eyJ.ifs.1\",\"expires_in\":180,\"refresh_expires_in\":1800,"
               "\"refresh_token\":\"kc-refresh\",\"token_type\":\"Bearer\"}" },
        { 200, "{\"access_token\":\"eyJ.ifs.2\",\"expires_in\":180}" },
    };
    struct conn c;
    struct auth *au;
    struct seen t;

    setup(&c);
    script(2, r);
    au = ifs_like(AUTH_CC_BASIC);
    au->now_ms = fake_now;
    CHECK_INT(get_res(au, &c), MLC_OK);
    t = seen_at(0);
    CHECK_STR(t.path, "/token");
    /* ifs-client:cs%3Aifs%2F1, each part form-encoded first (RFC 6749 2.3.1) */
    CHECK_STR(t.authz, "Basic aWZzLWNsaWVudDpjcyUzQWlmcyUyRjE=");
    CHECK_STR(t.ctype, "application/x-www-form-urlencoded");
    CHECK_STR(t.body, "grant_type=client_credentials&scope=openid%20microprofile-jwt");
    CHECK_STR(seen_at(1).authz, "Bearer eyJ.ifs.1");
    fake_ms += 119 * 1000; /* 61 s left of 180 */
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_INT(count(&srv.token_calls), 1);
    fake_ms += 1000; /* 60 s left */
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_INT(count(&srv.token_calls), 2);
    CHECK_STR(seen_at(4).authz, "Bearer eyJ.ifs.2");
    CHECK_INT(c.token_refreshes, 2);
    CHECK(events_are((const char *const[]){ "token /token", "res Bearer eyJ.ifs.1 -> 200",
                                            "res Bearer eyJ.ifs.1 -> 200", "token /token",
                                            "res Bearer eyJ.ifs.2 -> 200", NULL }));
    teardown(&c, au);
}

static void client_credentials_in_the_body(void)
{
    static const struct reply r[] = { { 200, "{\"access_token\":\"eyJ.ifs.1\"}" } };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(1, r);
    au = ifs_like(AUTH_CC_POST);
    CHECK_INT(get_res(au, &c), MLC_OK);
    CHECK_STR(seen_at(0).authz, "");
    CHECK_STR(seen_at(0).body, "grant_type=client_credentials&client_id=ifs-client"
                            "&client_secret=cs%3Aifs%2F1&scope=openid%20microprofile-jwt");
    CHECK_INT(au->renew_at_ms, 0); /* no expires_in: kept until refused */
    teardown(&c, au);
}

static void client_credentials_refused(void)
{
    static const struct reply r[] = {
        { 401, "{\"error\":\"invalid_client\",\"error_description\":\"Invalid client or "
               "Invalid client credentials\"}" },
        { 400, "{\"error\":\"invalid_scope\"}" },
    };
    struct conn c;
    struct auth *au;

    setup(&c);
    script(2, r);
    au = ifs_like(AUTH_CC_BASIC);
    CHECK_INT(get_res(au, &c), MLC_E_AUTH);
    CHECK(has(c.err.msg, "refused client 'ifs-client'"));
    CHECK(has(c.err.msg, "check client_id and client_secret"));
    CHECK(!has(c.err.msg, "cs:ifs/1"));
    mlc_err_reset(&c.err);
    CHECK_INT(get_res(au, &c), MLC_E_INVAL);
    CHECK(has(c.err.msg, "invalid_scope"));
    CHECK_INT(count(&srv.res_calls), 0);
    teardown(&c, au);
}

static void looker_login(void)
{
    static const struct reply r[] = {
        { 404, "{\"message\":\"Not found\",\"documentation_url\":\"https://docs.example\"}" },
        { 200, "{\"access_token\":\"lk-token-1\",\"token_type\":\"Bearer\",\"expires_in\":3600,"
               "\"refresh_token\":null}" },
    };
    struct auth_cc_conf cf = { 0 };
    struct conn c;
    struct auth *au;
    struct seen t;

    setup(&c);
    cf.token_url = login_url;
    cf.client_id = "lk-id";
    cf.client_secret = "lk-secret-9";
    cf.scope = "ignored";
    cf.style = AUTH_CC_LOOKER;
    cf.scheme = "token";
    cf.retry = &quick;
    script(2, r);
    resource_accepts("token lk-token-1");
    au = auth_client_credentials_new(&cf);
    CHECK_INT(get_res(au, &c), MLC_E_AUTH); /* Looker's 404 for a bad API key */
    CHECK(has(c.err.msg, "'lk-id'"));
    CHECK(has(c.err.msg, "/api/4.0/login"));
    CHECK(!has(c.err.msg, "lk-secret-9"));
    mlc_err_reset(&c.err);
    CHECK_INT(get_res(au, &c), MLC_OK);
    t = seen_at(1);
    CHECK_STR(t.path, "/api/4.0/login");
    CHECK_STR(t.authz, "");
    CHECK_STR(t.ctype, "application/x-www-form-urlencoded");
    CHECK_STR(t.body, "client_id=lk-id&client_secret=lk-secret-9");
    CHECK_STR(seen_at(2).authz, "token lk-token-1");
    teardown(&c, au);
}

/* --------------------------------------------------------------- expiry */

static void lifetime_margin(void)
{
    struct auth *au = auth_bearer_new("tok-abc-123");

    au->now_ms = fake_now;
    fake_ms = 5000;
    auth_set_lifetime(au, 3600);
    CHECK_INT(au->renew_at_ms, 5000 + 3540000); /* a minute early */
    auth_set_lifetime(au, 100);
    CHECK_INT(au->renew_at_ms, 5000 + 50000); /* short-lived: at half its life */
    auth_set_lifetime(au, 0);
    CHECK_INT(au->renew_at_ms, 0);
    auth_set_lifetime(au, -5);
    CHECK_INT(au->renew_at_ms, 0);
    auth_set_lifetime(au, NAN);
    CHECK_INT(au->renew_at_ms, 0);
    auth_free(au);
}

int main(void)
{
    /* loopback only: no proxy may take these requests elsewhere */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    setenv("no_proxy", "*", 1);
    mlc_log_level = MLC_LOG_ERROR;
    mlc_http_global_init();
    srv_start();
    snprintf(token_url, sizeof(token_url), "http://127.0.0.1:%d/token", srv.port);
    snprintf(login_url, sizeof(login_url), "http://127.0.0.1:%d/api/4.0/login", srv.port);

    RUN(basic_sends_user_and_password);
    RUN(basic_refused_says_check_it);
    RUN(bearer_sends_token_and_refusal_names_system);
    RUN(refresh_gets_token_with_json_grant);
    RUN(refresh_401_renews_once_and_retries_once);
    RUN(refresh_second_401_is_returned);
    RUN(rotation_is_stored_before_the_token_is_used);
    RUN(rotation_not_stored_fails_and_is_stored_first_next_time);
    RUN(invalid_grant_says_reauthorise_without_secrets);
    RUN(zoho_form_grant_scheme_and_api_domain);
    RUN(error_in_a_200_answer_is_no_token);
    RUN(token_endpoint_5xx_and_transport_are_transient);
    RUN(refresh_renews_when_under_a_minute_remains);
    RUN(vault_read_error_stops_before_the_network);
    RUN(client_credentials_basic_form_and_cache);
    RUN(client_credentials_in_the_body);
    RUN(client_credentials_refused);
    RUN(looker_login);
    RUN(lifetime_margin);

    srv_stop();
    mlc_log_clear_secrets();
    mlc_http_global_cleanup();
    return TT_DONE();
}
