/* SPDX-License-Identifier: Apache-2.0
 * mlc_sig: webhook signature and JWT verification.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "shared/mlc_crypto.h"
#include "shared/mlc_sig.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

enum mlc_rc mlc_sig_hub_verify(const char *secret, size_t secret_len, const void *body, size_t len,
                               const char *header, struct mlc_errbuf *err)
{
    uint8_t want[MLC_SHA256_LEN], got[MLC_SHA256_LEN];
    const char *hex;

    if (header == NULL || strncasecmp(header, "sha256=", 7) != 0) {
        mlc_errf(err, "webhook signature: missing or unsupported method (expected sha256=...)");
        return MLC_E_AUTH;
    }
    hex = header + 7;
    if (strlen(hex) != 2 * MLC_SHA256_LEN) {
        mlc_errf(err, "webhook signature: expected %d hex digits", 2 * MLC_SHA256_LEN);
        return MLC_E_AUTH;
    }
    for (int i = 0; i < MLC_SHA256_LEN; i++) {
        int hi = hexval((unsigned char)hex[2 * i]), lo = hexval((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            mlc_errf(err, "webhook signature: not hexadecimal");
            return MLC_E_AUTH;
        }
        got[i] = (uint8_t)(hi << 4 | lo);
    }
    mlc_hmac_sha256(secret, secret_len, body, len, want);
    if (!mlc_ct_equal(want, got, sizeof(want))) {
        mlc_errf(err, "webhook signature does not match the body (wrong secret, or altered in transit)");
        return MLC_E_AUTH;
    }
    return MLC_OK;
}

char *mlc_b64url_encode(const void *in, size_t n)
{
    char *s = mlc_base64_encode(in, n);
    size_t o = 0;

    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '=') {
            break;
        }
        s[o++] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    }
    s[o] = '\0';
    return s;
}

unsigned char *mlc_b64url_decode(const char *in, size_t n, size_t *out_len)
{
    char *std;
    unsigned char *out;
    size_t pad = (4 - n % 4) % 4;

    if (n % 4 == 1 || n > (64u << 20)) {
        return NULL;
    }
    std = malloc(n + pad + 1);
    if (std == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '+' || c == '/' || c == '=') {
            free(std);
            return NULL; /* base64url only */
        }
        std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    memset(std + n, '=', pad);
    std[n + pad] = '\0';
    out = mlc_base64_decode(std, out_len);
    free(std);
    return out;
}

static cJSON *part_json(const char *p, size_t n)
{
    size_t len = 0;
    unsigned char *raw = mlc_b64url_decode(p, n, &len);
    cJSON *j;

    if (raw == NULL) {
        return NULL;
    }
    j = cJSON_ParseWithLength((const char *)raw, len);
    free(raw);
    return j;
}

enum mlc_rc mlc_sig_jwt_hs256_verify(const char *token, const char *secret, size_t secret_len,
                                     long long now, long leeway_s, cJSON **claims,
                                     struct mlc_errbuf *err)
{
    const char *dot1, *dot2, *alg;
    uint8_t want[MLC_SHA256_LEN];
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    cJSON *hdr = NULL, *body = NULL;
    const cJSON *t;
    enum mlc_rc rc = MLC_E_AUTH;

    if (claims) {
        *claims = NULL;
    }
    if (token == NULL) {
        mlc_errf(err, "webhook JWT: missing");
        return MLC_E_AUTH;
    }
    if (strncasecmp(token, "Bearer ", 7) == 0) {
        token += 7;
    }
    dot1 = strchr(token, '.');
    dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
        mlc_errf(err, "webhook JWT: not three dot-separated parts");
        return MLC_E_AUTH;
    }
    hdr = part_json(token, (size_t)(dot1 - token));
    alg = hdr ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(hdr, "alg")) : NULL;
    if (alg == NULL || strcmp(alg, "HS256") != 0) {
        mlc_errf(err, "webhook JWT: algorithm '%s' refused (only HS256)", alg ? alg : "?");
        goto out;
    }
    sig = mlc_b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig_len);
    mlc_hmac_sha256(secret, secret_len, token, (size_t)(dot2 - token), want);
    if (sig == NULL || sig_len != sizeof(want) || !mlc_ct_equal(want, sig, sizeof(want))) {
        mlc_errf(err, "webhook JWT: signature does not verify with the app's client secret");
        goto out;
    }
    body = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!cJSON_IsObject(body)) {
        mlc_errf(err, "webhook JWT: payload is not a JSON object");
        goto out;
    }
    t = cJSON_GetObjectItemCaseSensitive(body, "exp");
    if (t != NULL && (!cJSON_IsNumber(t) || (double)now > t->valuedouble + (double)leeway_s)) {
        mlc_errf(err, "webhook JWT: expired");
        goto out;
    }
    t = cJSON_GetObjectItemCaseSensitive(body, "nbf");
    if (t != NULL && (!cJSON_IsNumber(t) || (double)now + (double)leeway_s < t->valuedouble)) {
        mlc_errf(err, "webhook JWT: not valid yet");
        goto out;
    }
    rc = MLC_OK;
    if (claims) {
        *claims = body;
        body = NULL;
    }
out:
    free(sig);
    cJSON_Delete(hdr);
    cJSON_Delete(body);
    return rc;
}
