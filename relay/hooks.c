/* SPDX-License-Identifier: Apache-2.0
 * hooks: authenticity and shape of one incoming webhook (see hooks.h).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "relay/hooks.h"
#include "shared/mlc_crypto.h"
#include "shared/mlc_sig.h"

#define JWT_LEEWAY_S 300
/* Atlassian signs each delivery with a JWT that lives a few minutes (iat to
 * exp: 180 s in practice). A longer-lived token is a replayable credential:
 * refuse anything over 10 minutes, and tokens without iat or exp. */
#define JWT_MAX_LIFETIME_S 600

int hook_route(const char *path, enum hook_kind *kind, char *tenant, size_t n)
{
    const char *rest;

    if (strncmp(path, "/hooks/jira/", 12) == 0) {
        *kind = HOOK_JIRA;
        rest = path + 12;
    } else if (strncmp(path, "/hooks/zoho/", 12) == 0) {
        *kind = HOOK_ZOHO;
        rest = path + 12;
    } else {
        return -1;
    }
    if (strlen(rest) >= n || !tenant_name_ok(rest)) {
        return -1;
    }
    strcpy(tenant, rest);
    return 0;
}

static void body_id(const char *prefix, const struct hook_req *r, struct hook_verdict *v)
{
    uint8_t h[MLC_SHA256_LEN];
    char hex[2 * MLC_SHA256_LEN + 1];

    mlc_sha256(r->body, r->len, h);
    mlc_hex(h, sizeof(h), hex);
    snprintf(v->ext_id, sizeof(v->ext_id), "%s%s", prefix, hex);
}

/* A sender's identifier is used as is when it is short printable ASCII. */
static int id_ok(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        if (s[n] <= ' ' || s[n] > '~' || n >= 90) {
            return 0;
        }
    }
    return n > 0;
}

/* NULL when the verified claims carry a short, current lifetime; else why not.
 * Comparisons are written so that NaN or infinity (cJSON reads 1e999 as inf)
 * fail them. */
static const char *jwt_lifetime_bad(const cJSON *claims, long long now_s)
{
    const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    double life;

    if (!cJSON_IsNumber(iat) || !cJSON_IsNumber(exp)) {
        return "it must carry numeric iat and exp claims";
    }
    if (!isfinite(iat->valuedouble) || !isfinite(exp->valuedouble)) {
        return "iat or exp is not a finite number";
    }
    if (!(iat->valuedouble <= (double)now_s + JWT_LEEWAY_S)) {
        return "issued in the future (iat after now plus 300 s of clock leeway)";
    }
    life = exp->valuedouble - iat->valuedouble;
    if (!(life >= 0 && life <= JWT_MAX_LIFETIME_S)) {
        return "lifetime exp - iat is negative or over the 600 s the relay accepts";
    }
    return NULL;
}

static void check_jira(const struct tenant_rec *t, const struct hook_req *r, struct hook_verdict *v)
{
    struct mlc_errbuf err = { 0 };
    cJSON *claims = NULL;
    const char *bad;

    if (r->hub_signature != NULL) {
        if (mlc_sig_hub_verify(t->hook_secret, strlen(t->hook_secret), r->body, r->len,
                               r->hub_signature, &err) != MLC_OK) {
            v->status = 401;
            snprintf(v->why, sizeof(v->why), "X-Hub-Signature does not match the tenant's webhook secret");
            return;
        }
    } else if (r->authorization != NULL) {
        const char *tok = r->authorization;
        if (strncasecmp(tok, "JWT ", 4) == 0) {
            tok += 4;
        }
        if (t->jira_client_secret[0] == '\0') {
            v->status = 401;
            snprintf(v->why, sizeof(v->why),
                     "JWT-signed delivery but tenant %s has no Jira client secret "
                     "(set one with 'mlc-relay tenant set-secret')", t->name);
            return;
        }
        if (mlc_sig_jwt_hs256_verify(tok, t->jira_client_secret, strlen(t->jira_client_secret),
                                     r->now_s, JWT_LEEWAY_S, &claims, &err) != MLC_OK) {
            v->status = 401;
            snprintf(v->why, sizeof(v->why), "Authorization JWT rejected: %.100s", mlc_err_msg(&err));
            return;
        }
        bad = jwt_lifetime_bad(claims, r->now_s);
        cJSON_Delete(claims);
        if (bad != NULL) {
            v->status = 401;
            snprintf(v->why, sizeof(v->why), "Authorization JWT rejected: %s", bad);
            return;
        }
    } else {
        v->status = 401;
        snprintf(v->why, sizeof(v->why), "unsigned delivery: neither X-Hub-Signature nor Authorization");
        return;
    }
    if (r->delivery_id != NULL && id_ok(r->delivery_id)) {
        snprintf(v->ext_id, sizeof(v->ext_id), "%s", r->delivery_id);
    } else {
        body_id("sha256:", r, v);
    }
}

static void check_zoho(const struct tenant_rec *t, const cJSON *doc, const struct hook_req *r,
                       struct hook_verdict *v)
{
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(doc, "token");
    size_t want = strlen(t->zoho_token);

    if (!cJSON_IsString(tok) || want == 0 || strlen(tok->valuestring) != want ||
        !mlc_ct_equal(tok->valuestring, t->zoho_token, want)) {
        v->status = 401;
        snprintf(v->why, sizeof(v->why), "Zoho notification token does not match the tenant's channel token");
        return;
    }
    /* Zoho sends no delivery identifier: identical bodies are one delivery */
    body_id("zoho:", r, v);
}

void hook_check(const struct tenant_rec *t, const struct hook_req *r, struct hook_verdict *v)
{
    cJSON *doc;

    memset(v, 0, sizeof(*v));
    /* Jira: authenticity first, so nothing unauthenticated is even parsed */
    if (r->kind == HOOK_JIRA) {
        check_jira(t, r, v);
        if (v->status != 0) {
            return;
        }
    }
    doc = cJSON_ParseWithLength(r->body, r->len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        v->status = 400;
        v->ext_id[0] = '\0';
        snprintf(v->why, sizeof(v->why), "body is not a JSON object");
        return;
    }
    if (r->kind == HOOK_ZOHO) {
        check_zoho(t, doc, r, v);
    }
    cJSON_Delete(doc);
}
