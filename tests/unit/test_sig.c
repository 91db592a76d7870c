/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: webhook HMAC signatures and HS256 JWTs.
 */
#include <stdlib.h>
#include <string.h>
#include "shared/mlc_crypto.h"
#include "shared/mlc_sig.h"
#include "tinytest.h"

static const char vec_secret[] = "It's a Secret to Everybody";
static const char vec_body[] = "Hello World!";

static void hub_signature_official_vector(void)
{
    struct mlc_errbuf e = { 0 };
    /* Atlassian's published test vector (jira-cloud.md, section 4.3) */
    const char *good = "sha256=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9";
    const char *upper = "sha256=A4771C39FBE90F317C7824E83DDEF3CAAE9CB3D976C214ACE1F2937E133263C9";

    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), vec_body, strlen(vec_body), good, &e), MLC_OK);
    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), vec_body, strlen(vec_body), upper, &e), MLC_OK);
    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), "Hello World?", 12, good, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_hub_verify("other", 5, vec_body, strlen(vec_body), good, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), vec_body, strlen(vec_body),
                                 "sha1=a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9", &e),
              MLC_E_AUTH);
    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), vec_body, strlen(vec_body), "sha256=abc", &e),
              MLC_E_AUTH);
    CHECK_INT(mlc_sig_hub_verify(vec_secret, strlen(vec_secret), vec_body, strlen(vec_body), NULL, &e),
              MLC_E_AUTH);
}

/* Build a JWT the way a signer would: base64url(header).base64url(payload).sig */
static char *make_jwt(const char *header, const char *payload, const char *secret)
{
    char *h = mlc_b64url_encode(header, strlen(header));
    char *p = mlc_b64url_encode(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + 2;
    char *signing = malloc(n), *sig, *out;
    uint8_t mac[MLC_SHA256_LEN];

    snprintf(signing, n, "%s.%s", h, p);
    mlc_hmac_sha256(secret, strlen(secret), signing, strlen(signing), mac);
    sig = mlc_b64url_encode(mac, sizeof(mac));
    out = malloc(strlen(signing) + strlen(sig) + 2);
    sprintf(out, "%s.%s", signing, sig);
    free(h);
    free(p);
    free(signing);
    free(sig);
    return out;
}

static void jwt_hs256_accepts_and_refuses(void)
{
    struct mlc_errbuf e = { 0 };
    cJSON *claims = NULL;
    char *tok = make_jwt("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                         "{\"iss\":\"jira\",\"exp\":1700000600,\"nbf\":1699999900}", "app-secret");
    char bearer[1024], *bad;

    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "app-secret", 10, 1700000000LL, 30, &claims, &e), MLC_OK);
    CHECK(claims != NULL && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(claims, "iss")), "jira") == 0);
    cJSON_Delete(claims);
    snprintf(bearer, sizeof(bearer), "Bearer %s", tok);
    CHECK_INT(mlc_sig_jwt_hs256_verify(bearer, "app-secret", 10, 1700000000LL, 30, NULL, &e), MLC_OK);
    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "wrong-secret", 12, 1700000000LL, 30, NULL, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "app-secret", 10, 1700001000LL, 30, NULL, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "app-secret", 10, 1699999000LL, 30, NULL, &e), MLC_E_AUTH);
    /* one changed payload byte */
    bad = strdup(tok);
    bad[strchr(bad, '.') - bad + 3] ^= 1;
    CHECK_INT(mlc_sig_jwt_hs256_verify(bad, "app-secret", 10, 1700000000LL, 30, NULL, &e), MLC_E_AUTH);
    free(bad);
    free(tok);
    /* alg "none" and other algorithms are refused even when "signed" */
    tok = make_jwt("{\"alg\":\"none\"}", "{\"iss\":\"x\"}", "app-secret");
    mlc_err_reset(&e);
    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "app-secret", 10, 1700000000LL, 30, NULL, &e), MLC_E_AUTH);
    CHECK(strstr(mlc_err_msg(&e), "none") != NULL);
    free(tok);
    tok = make_jwt("{\"alg\":\"HS512\"}", "{}", "app-secret");
    CHECK_INT(mlc_sig_jwt_hs256_verify(tok, "app-secret", 10, 1700000000LL, 30, NULL, &e), MLC_E_AUTH);
    free(tok);
    CHECK_INT(mlc_sig_jwt_hs256_verify("a.b", "s", 1, 0, 0, NULL, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_jwt_hs256_verify("a.b.c.d", "s", 1, 0, 0, NULL, &e), MLC_E_AUTH);
    CHECK_INT(mlc_sig_jwt_hs256_verify("...", "s", 1, 0, 0, NULL, &e), MLC_E_AUTH);
}

static void b64url_round_trip(void)
{
    const unsigned char raw[] = { 0xfb, 0xff, 0xfe, 0x00, 0x3e, 0x3f };
    char *s = mlc_b64url_encode(raw, sizeof(raw));
    unsigned char *back;
    size_t n = 0;

    CHECK_STR(s, "-__-AD4_");
    back = mlc_b64url_decode(s, strlen(s), &n);
    CHECK(back != NULL && n == sizeof(raw) && memcmp(back, raw, n) == 0);
    free(back);
    free(s);
    CHECK(mlc_b64url_decode("ab+/", 4, &n) == NULL);
    CHECK(mlc_b64url_decode("a", 1, &n) == NULL);
}

int main(void)
{
    RUN(hub_signature_official_vector);
    RUN(jwt_hs256_accepts_and_refuses);
    RUN(b64url_round_trip);
    return TT_DONE();
}
