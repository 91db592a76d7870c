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
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "shared/mlc_crypto.h"

/* ---- SHA-256 with the x86 SHA extensions ----
 * mbedTLS 2.28 hashes in plain C. The relay hashes every webhook body for
 * its HMAC, so on CPUs with the SHA extensions (and SSE4.1) SHA-256 and
 * HMAC-SHA256 run here; elsewhere, and for everything else, mbedTLS does. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_CODE 1

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* Compress n 64-byte blocks into h[0..8) (a..h). The instructions keep the
 * state as ABEF and CDGH and take the message four words at a time; words
 * 16..63 come from msg1 (the sigma0 part), the add of words t-7 and msg2
 * (the sigma1 part). */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_ni_blocks(uint32_t h[8], const uint8_t *p,
                                                                         size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)&h[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(const void *)&h[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

    for (; n > 0; n--, p += 64) {
        __m128i w[4], save0 = abef, save1 = cdgh;

        for (int i = 0; i < 16; i++) {
            __m128i m;
            if (i < 4) {
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)), bswap);
            } else {
                /* w[i % 4] holds words 4(i-4)..; the newest is w[(i-1) % 4] */
                __m128i t = _mm_sha256msg1_epu32(w[i % 4], w[(i + 1) % 4]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4));
                w[i % 4] = _mm_sha256msg2_epu32(t, w[(i + 3) % 4]);
            }
            m = _mm_add_epi32(w[i % 4], _mm_loadu_si128((const __m128i *)(const void *)&sha256_k[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
        }
        abef = _mm_add_epi32(abef, save0);
        cdgh = _mm_add_epi32(cdgh, save1);
    }
    /* back to a..h */
    cdab = _mm_shuffle_epi32(abef, 0x1B);  /* FEBA */
    efgh = _mm_shuffle_epi32(cdgh, 0xB1);  /* DCHG */
    dcba = _mm_blend_epi16(cdab, efgh, 0xF0); /* DCBA */
    hgfe = _mm_alignr_epi8(efgh, cdab, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&h[0], dcba);
    _mm_storeu_si128((__m128i *)(void *)&h[4], hgfe);
}

static int sha_ni; /* set once, before main() and any thread */

__attribute__((constructor)) static void sha_ni_probe(void)
{
    unsigned a, b, c, d;
    int sse41 = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) && (c & bit_SSSE3);
    int sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)); /* EBX bit 29: SHA */

    sha_ni = sse41 && sha && getenv("MLC_NO_SHA_NI") == NULL;
}
#else
#define HAVE_SHA_NI_CODE 0
#endif

struct sha256_run {
    uint32_t h[8];
    uint8_t buf[64];
    size_t nbuf;
    uint64_t total;
};

static void sha256_run_init(struct sha256_run *r)
{
    static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

    memcpy(r->h, iv, sizeof(iv));
    r->nbuf = 0;
    r->total = 0;
}

static void sha256_run_blocks(struct sha256_run *r, const uint8_t *p, size_t n)
{
#if HAVE_SHA_NI_CODE
    sha256_ni_blocks(r->h, p, n);
#else
    (void)r;
    (void)p;
    (void)n;
#endif
}

static void sha256_run_add(struct sha256_run *r, const void *data, size_t len)
{
    const uint8_t *p = data;

    r->total += len;
    if (r->nbuf > 0) {
        size_t k = 64 - r->nbuf < len ? 64 - r->nbuf : len;
        memcpy(r->buf + r->nbuf, p, k);
        r->nbuf += k;
        p += k;
        len -= k;
        if (r->nbuf < 64) {
            return;
        }
        sha256_run_blocks(r, r->buf, 1);
        r->nbuf = 0;
    }
    if (len >= 64) {
        sha256_run_blocks(r, p, len / 64);
        p += len / 64 * 64;
        len %= 64;
    }
    memcpy(r->buf, p, len);
    r->nbuf = len;
}

static void sha256_run_end(struct sha256_run *r, uint8_t out[MLC_SHA256_LEN])
{
    uint64_t bits = r->total * 8;
    uint8_t pad[72] = { 0x80 };
    size_t padlen = (r->nbuf < 56 ? 56 : 120) - r->nbuf;

    for (int i = 0; i < 8; i++) {
        pad[padlen + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    sha256_run_add(r, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(r->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(r->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(r->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)r->h[i];
    }
}

int mlc_sha256_accelerated(void)
{
#if HAVE_SHA_NI_CODE
    return sha_ni;
#else
    return 0;
#endif
}

void mlc_sha256(const void *data, size_t len, uint8_t out[MLC_SHA256_LEN])
{
    if (mlc_sha256_accelerated()) {
        struct sha256_run r;
        sha256_run_init(&r);
        sha256_run_add(&r, data, len);
        sha256_run_end(&r, out);
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
    const mbedtls_md_info_t *md;

    if (mlc_sha256_accelerated()) {
        /* RFC 2104: H((K ^ opad) || H((K ^ ipad) || data)), K hashed first
         * when longer than a block */
        uint8_t k[64] = { 0 }, pad[64], inner[MLC_SHA256_LEN];
        struct sha256_run r;
        if (klen > sizeof(k)) {
            mlc_sha256(key, klen, k);
        } else if (klen > 0) {
            memcpy(k, key, klen);
        }
        for (int i = 0; i < 64; i++) {
            pad[i] = k[i] ^ 0x36;
        }
        sha256_run_init(&r);
        sha256_run_add(&r, pad, sizeof(pad));
        sha256_run_add(&r, data, len);
        sha256_run_end(&r, inner);
        for (int i = 0; i < 64; i++) {
            pad[i] = k[i] ^ 0x5c;
        }
        sha256_run_init(&r);
        sha256_run_add(&r, pad, sizeof(pad));
        sha256_run_add(&r, inner, sizeof(inner));
        sha256_run_end(&r, out);
        mbedtls_platform_zeroize(k, sizeof(k));
        mbedtls_platform_zeroize(pad, sizeof(pad));
        mbedtls_platform_zeroize(&r, sizeof(r));
        return;
    }
    md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
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
