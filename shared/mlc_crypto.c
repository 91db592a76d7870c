/* SPDX-License-Identifier: Apache-2.0
 * mlc_crypto: SHA-256, HMAC-SHA256, AES-256-GCM sealing and base64 over
 * mbedTLS 2.28, plus random bytes from getrandom(2) and a constant-time
 * comparison for MACs and tokens.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <mbedtls/base64.h>
#include <mbedtls/gcm.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha256.h>

#include "shared/mlc_crypto.h"
#include "shared/mlc_sha256.h"

void mlc_sha256(const void *data, size_t len, uint8_t out[MLC_SHA256_LEN])
{
    if (mlc_sha256_hw_available()) {
        mlc_sha256_hw(data, len, out);
        return;
    }
    /* is224 = 0; the only failure is a hardware-accelerator error */
    if (mbedtls_sha256_ret(data, len, out, 0) != 0) {
        MLC_BUG("sha-256 failed");
    }
}

void mlc_hmac_sha256(const void *key, size_t klen, const void *data, size_t len,
                     uint8_t out[MLC_SHA256_LEN])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);

    if (md == NULL) {
        MLC_BUG("mbedtls has no sha-256");
    }
    /* fails only when mbedtls cannot allocate its small context */
    if (mbedtls_md_hmac(md, key, klen, data, len, out) != 0) {
        MLC_BUG("hmac-sha256 failed");
    }
}

void mlc_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int mlc_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *pa = a;
    const volatile unsigned char *pb = b;
    volatile unsigned char diff = 0;
    size_t i;

    /* no early exit: the time depends on n only, never on where bytes differ */
    for (i = 0; i < n; i++) {
        diff |= (unsigned char)(pa[i] ^ pb[i]);
    }
    return diff == 0;
}

enum mlc_rc mlc_random(void *out, size_t n)
{
    unsigned char *p = out;
    size_t done = 0;

    while (done < n) {
        ssize_t got = getrandom(p + done, n - done, 0);

        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return MLC_E_IO;
        }
        /* requests over 256 bytes may return short when a signal arrives */
        done += (size_t)got;
    }
    return MLC_OK;
}

enum mlc_rc mlc_seal(const uint8_t key[MLC_AES_KEY_LEN], const void *aad, size_t aad_len,
                     const void *plain, size_t len, uint8_t **out, size_t *out_len)
{
    mbedtls_gcm_context gcm;
    uint8_t *buf = NULL;
    size_t total;
    enum mlc_rc rc;

    *out = NULL;
    *out_len = 0;
    if (len > (size_t)-1 - MLC_GCM_IV_LEN - MLC_GCM_TAG_LEN) {
        return MLC_E_TOOBIG;
    }
    total = MLC_GCM_IV_LEN + len + MLC_GCM_TAG_LEN;
    mbedtls_gcm_init(&gcm);
    buf = malloc(total);
    if (buf == NULL) {
        rc = MLC_E_NOMEM;
        goto out;
    }
    /* a fresh random 96-bit IV per message; the key never seals 2^32 messages */
    rc = mlc_random(buf, MLC_GCM_IV_LEN);
    if (rc != MLC_OK) {
        goto out;
    }
    if (mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, MLC_AES_KEY_LEN * 8) != 0) {
        rc = MLC_E_INVAL;
        goto out;
    }
    if (mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, len, buf, MLC_GCM_IV_LEN, aad,
                                  aad != NULL ? aad_len : 0, plain, buf + MLC_GCM_IV_LEN,
                                  MLC_GCM_TAG_LEN, buf + MLC_GCM_IV_LEN + len) != 0) {
        rc = MLC_E_INVAL;
        goto out;
    }
    *out = buf;
    *out_len = total;
    buf = NULL;
    rc = MLC_OK;
out:
    mbedtls_gcm_free(&gcm);
    free(buf);
    return rc;
}

enum mlc_rc mlc_open(const uint8_t key[MLC_AES_KEY_LEN], const void *aad, size_t aad_len,
                     const uint8_t *sealed, size_t len, uint8_t **out, size_t *out_len)
{
    mbedtls_gcm_context gcm;
    uint8_t *buf = NULL;
    size_t plen;
    enum mlc_rc rc;
    int mrc;

    *out = NULL;
    *out_len = 0;
    if (sealed == NULL || len < MLC_GCM_IV_LEN + MLC_GCM_TAG_LEN) {
        return MLC_E_PROTO;
    }
    plen = len - MLC_GCM_IV_LEN - MLC_GCM_TAG_LEN;
    mbedtls_gcm_init(&gcm);
    buf = malloc(plen + 1);
    if (buf == NULL) {
        rc = MLC_E_NOMEM;
        goto out;
    }
    if (mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, MLC_AES_KEY_LEN * 8) != 0) {
        rc = MLC_E_INVAL;
        goto out;
    }
    mrc = mbedtls_gcm_auth_decrypt(&gcm, plen, sealed, MLC_GCM_IV_LEN, aad,
                                   aad != NULL ? aad_len : 0, sealed + MLC_GCM_IV_LEN + plen,
                                   MLC_GCM_TAG_LEN, sealed + MLC_GCM_IV_LEN, buf);
    if (mrc != 0) {
        /* mbedtls already zeroed the output on a tag mismatch */
        rc = MLC_E_PROTO;
        goto out;
    }
    buf[plen] = '\0';
    *out = buf;
    *out_len = plen;
    buf = NULL;
    rc = MLC_OK;
out:
    mbedtls_gcm_free(&gcm);
    free(buf);
    return rc;
}

char *mlc_base64_encode(const void *in, size_t n)
{
    size_t need = 0;
    char *out;

    if (n == 0) {
        return calloc(1, 1);
    }
    /* with a zero-sized buffer mbedtls reports the size it needs (with NUL) */
    mbedtls_base64_encode(NULL, 0, &need, in, n);
    if (need == 0) {
        return NULL;
    }
    out = malloc(need);
    if (out == NULL) {
        return NULL;
    }
    if (mbedtls_base64_encode((unsigned char *)out, need, &need, in, n) != 0) {
        free(out);
        return NULL;
    }
    out[need] = '\0';
    return out;
}

static int b64_char(int ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* mbedtls tolerates embedded whitespace; we accept only canonical padded text. */
static int b64_strict(const char *in, size_t n)
{
    size_t i, pad = 0;

    if (n % 4 != 0) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (in[i] == '=') {
            pad++;
        } else if (pad > 0 || !b64_char((unsigned char)in[i])) {
            return 0;
        }
    }
    return pad <= 2;
}

uint8_t *mlc_base64_decode(const char *in, size_t *out_len)
{
    size_t n, need = 0;
    uint8_t *out;

    *out_len = 0;
    if (in == NULL) {
        return NULL;
    }
    n = strlen(in);
    if (!b64_strict(in, n)) {
        return NULL;
    }
    /* 3 bytes per 4 characters, plus one so an empty result is still a buffer */
    out = malloc(n / 4 * 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    if (mbedtls_base64_decode(out, n / 4 * 3 + 1, &need, (const unsigned char *)in, n) != 0) {
        free(out);
        return NULL;
    }
    *out_len = need;
    return out;
}

/* ---- passwords: "pbkdf2-sha256$<iterations>$<b64 salt>$<b64 key>" ---- */

static int pbkdf2(const char *pass, const uint8_t *salt, size_t slen, unsigned iters, uint8_t out[32])
{
    mbedtls_md_context_t md;
    int rc;

    mbedtls_md_init(&md);
    rc = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0) {
        rc = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)pass, strlen(pass), salt, slen, iters,
                                       32, out);
    }
    mbedtls_md_free(&md);
    return rc;
}

char *mlc_password_hash(const char *pass, unsigned iterations)
{
    uint8_t salt[16], key[32];
    char *s64, *k64, *out;

    if (mlc_random(salt, sizeof(salt)) != MLC_OK || pbkdf2(pass, salt, sizeof(salt), iterations, key) != 0) {
        return NULL;
    }
    s64 = mlc_base64_encode(salt, sizeof(salt));
    k64 = mlc_base64_encode(key, sizeof(key));
    out = NULL;
    if (s64 && k64) {
        size_t n = strlen(s64) + strlen(k64) + 40;
        out = malloc(n);
        if (out) {
            snprintf(out, n, "pbkdf2-sha256$%u$%s$%s", iterations, s64, k64);
        }
    }
    free(s64);
    free(k64);
    memset(key, 0, sizeof(key));
    return out;
}

int mlc_password_verify(const char *hash, const char *pass)
{
    char buf[256], *iter, *salt, *key, *save = NULL;
    uint8_t *sb = NULL, *kb = NULL, got[32];
    size_t sl = 0, kl = 0;
    unsigned long it;
    int ok = 0;

    if (hash == NULL || pass == NULL || strlen(hash) >= sizeof(buf) || strncmp(hash, "pbkdf2-sha256$", 14) != 0) {
        return 0;
    }
    strcpy(buf, hash + 14);
    iter = strtok_r(buf, "$", &save);
    salt = strtok_r(NULL, "$", &save);
    key = strtok_r(NULL, "$", &save);
    if (iter == NULL || salt == NULL || key == NULL) {
        return 0;
    }
    it = strtoul(iter, NULL, 10);
    sb = mlc_base64_decode(salt, &sl);
    kb = mlc_base64_decode(key, &kl);
    if (it >= 1000 && it <= 10000000 && sb && kb && kl == sizeof(got) &&
        pbkdf2(pass, sb, sl, (unsigned)it, got) == 0) {
        ok = mlc_ct_equal(got, kb, sizeof(got));
    }
    free(sb);
    free(kb);
    memset(got, 0, sizeof(got));
    return ok;
}
