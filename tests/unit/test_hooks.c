/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: the relay's webhook decision (relay/hooks.c).
 */
#include <stdlib.h>
#include <string.h>
#include "relay/hooks.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_sig.h"
#include "tinytest.h"

static struct tenant_rec tenant(void)
{
    struct tenant_rec t;

    memset(&t, 0, sizeof(t));
    strcpy(t.name, "acme");
    strcpy(t.hook_secret, "It's a Secret to Everybody");
    strcpy(t.zoho_token, "zTOKEN123");
    return t;
}

static char *jwt(const char *secret, const char *payload)
{
    char *h = mlc_b64url_encode("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
    char *p = mlc_b64url_encode(payload, strlen(payload));
    char *si = NULL, *msg = malloc(strlen(h) + strlen(p) + 2), *out;
    uint8_t mac[MLC_SHA256_LEN];

    sprintf(msg, "%s.%s", h, p);
    mlc_hmac_sha256(secret, strlen(secret), msg, strlen(msg), mac);
    si = mlc_b64url_encode(mac, sizeof(mac));
    out = malloc(strlen(msg) + strlen(si) + 2);
    sprintf(out, "%s.%s", msg, si);
    free(h);
    free(p);
    free(si);
    free(msg);
    return out;
}

static void routes_and_tenant_names(void)
{
    enum hook_kind k;
    char t[TENANT_NAME_MAX + 1];

    CHECK_INT(hook_route("/hooks/jira/acme", &k, t, sizeof(t)), 0);
    CHECK_INT(k, HOOK_JIRA);
    CHECK_STR(t, "acme");
    CHECK_INT(hook_route("/hooks/zoho/a_b-9", &k, t, sizeof(t)), 0);
    CHECK_INT(k, HOOK_ZOHO);
    CHECK_INT(hook_route("/hooks/jira/", &k, t, sizeof(t)), -1);
    CHECK_INT(hook_route("/hooks/jira/a/b", &k, t, sizeof(t)), -1);
    CHECK_INT(hook_route("/hooks/jira/../x", &k, t, sizeof(t)), -1);
    CHECK_INT(hook_route("/hooks/slack/acme", &k, t, sizeof(t)), -1);
    CHECK(tenant_name_ok("x"));
    CHECK(!tenant_name_ok(""));
    CHECK(!tenant_name_ok("has space"));
    CHECK(!tenant_name_ok("0123456789012345678901234567890123456789012345678901234567890123456789"));
}

static void jira_hmac_official_vector(void)
{
    struct tenant_rec t = tenant();
    struct hook_req r = { 0 };
    struct hook_verdict v;
    /* Atlassian's vector signs "Hello World!", which is not JSON: authentic, then 400 */
    r.kind = HOOK_JIRA;
    r.hub_signature = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9";
    r.body = "Hello World!";
    r.len = 12;
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 400);
    r.hub_signature = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c8";
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
}

static void jira_signed_json_and_ids(void)
{
    struct tenant_rec t = tenant();
    struct hook_req r = { 0 };
    struct hook_verdict v;
    const char *body = "{\"webhookEvent\":\"jira:issue_updated\"}";
    uint8_t mac[MLC_SHA256_LEN];
    char sig[80] = "sha256=";

    mlc_hmac_sha256(t.hook_secret, strlen(t.hook_secret), body, strlen(body), mac);
    mlc_hex(mac, sizeof(mac), sig + 7);
    r.kind = HOOK_JIRA;
    r.hub_signature = sig;
    r.body = body;
    r.len = strlen(body);
    r.delivery_id = "a1b2-c3";
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 0);
    CHECK_STR(v.ext_id, "a1b2-c3");
    r.delivery_id = "has space";
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 0);
    CHECK(strncmp(v.ext_id, "sha256:", 7) == 0 && strlen(v.ext_id) == 7 + 64);
    r.hub_signature = NULL;
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
    CHECK(strstr(v.why, t.hook_secret) == NULL);
}

static void jira_jwt(void)
{
    struct tenant_rec t = tenant();
    struct hook_req r = { 0 };
    struct hook_verdict v;
    char auth[1024], *tok;
    const char *body = "{\"matchedWebhookIds\":[1000]}";

    r.kind = HOOK_JIRA;
    r.body = body;
    r.len = strlen(body);
    r.now_s = 1700000000;
    tok = jwt("client-secret", "{\"iss\":\"app\",\"iat\":1699999920,\"exp\":1700000100}");
    snprintf(auth, sizeof(auth), "Bearer %s", tok);
    r.authorization = auth;
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401); /* no client secret configured */
    strcpy(t.jira_client_secret, "client-secret");
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 0);
    r.now_s = 1700000100 + 301; /* past exp and the leeway */
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
    free(tok);
    r.now_s = 1700000000;
    tok = jwt("not-the-secret", "{\"iss\":\"app\",\"iat\":1699999920,\"exp\":1700000100}");
    snprintf(auth, sizeof(auth), "JWT %s", tok);
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
    free(tok);
}

/* status of a delivery whose JWT carries these claims (correctly signed) at now */
static int jwt_status(const char *claims, long long now)
{
    struct tenant_rec t = tenant();
    struct hook_req r = { 0 };
    struct hook_verdict v;
    char auth[1024], *tok = jwt("client-secret", claims);
    const char *body = "{\"matchedWebhookIds\":[1000]}";

    strcpy(t.jira_client_secret, "client-secret");
    snprintf(auth, sizeof(auth), "Bearer %s", tok);
    r.kind = HOOK_JIRA;
    r.body = body;
    r.len = strlen(body);
    r.now_s = now;
    r.authorization = auth;
    hook_check(&t, &r, &v);
    free(tok);
    if (v.status == 401) {
        CHECK(strstr(v.why, "client-secret") == NULL);
    }
    return v.status;
}

/* issue 10: a JWT must say when it was issued and expire within 10 minutes */
static void jira_jwt_lifetime(void)
{
    const long long now = 1700000000;

    /* as Atlassian (and tests/sims/jira_sim.py) sign them: iat now, exp now + 180 */
    CHECK_INT(jwt_status("{\"iat\":1700000000,\"exp\":1700000180}", now), 0);
    CHECK_INT(jwt_status("{\"iat\":1699999700,\"exp\":1700000300}", now), 0); /* exactly 600 s */
    CHECK_INT(jwt_status("{\"iat\":1700000200,\"exp\":1700000380}", now), 0); /* clock skew */
    CHECK_INT(jwt_status("{\"iss\":\"app\"}", now), 401);                      /* neither */
    CHECK_INT(jwt_status("{\"iat\":1700000000}", now), 401);                    /* no exp */
    CHECK_INT(jwt_status("{\"exp\":1700000180}", now), 401);                    /* no iat */
    CHECK_INT(jwt_status("{\"iat\":1700000000,\"exp\":1e30}", now), 401);       /* far future */
    CHECK_INT(jwt_status("{\"iat\":1e30,\"exp\":1e30}", now), 401);            /* issued later */
    CHECK_INT(jwt_status("{\"iat\":1699999699,\"exp\":1700000300}", now), 401); /* 601 s */
    CHECK_INT(jwt_status("{\"iat\":1700000100,\"exp\":1700000000}", now), 401); /* exp < iat */
    CHECK_INT(jwt_status("{\"iat\":1700000000,\"exp\":1e999}", now), 401);      /* inf */
    CHECK_INT(jwt_status("{\"iat\":\"1700000000\",\"exp\":1700000180}", now), 401);
    CHECK_INT(jwt_status("{\"iat\":1700000600,\"exp\":1700000700}", now), 401); /* > leeway */
}

static void zoho_token(void)
{
    struct tenant_rec t = tenant();
    struct hook_req r = { 0 };
    struct hook_verdict v, v2;
    const char *good = "{\"channel_id\":\"1\",\"token\":\"zTOKEN123\",\"ids\":[\"5\"]}";
    const char *bad = "{\"channel_id\":\"1\",\"token\":\"zTOKEN124\",\"ids\":[\"5\"]}";
    const char *none = "{\"channel_id\":\"1\",\"ids\":[\"5\"]}";

    r.kind = HOOK_ZOHO;
    r.body = good;
    r.len = strlen(good);
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 0);
    hook_check(&t, &r, &v2);
    CHECK_STR(v.ext_id, v2.ext_id); /* identical bodies are one delivery */
    r.body = bad;
    r.len = strlen(bad);
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
    r.body = none;
    r.len = strlen(none);
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 401);
    r.body = "[1]";
    r.len = 3;
    hook_check(&t, &r, &v);
    CHECK_INT(v.status, 400);
}

int main(void)
{
    RUN(routes_and_tenant_names);
    RUN(jira_hmac_official_vector);
    RUN(jira_signed_json_and_ids);
    RUN(jira_jwt);
    RUN(jira_jwt_lifetime);
    RUN(zoho_token);
    return TT_DONE();
}
