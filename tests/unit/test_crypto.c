/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: mlc_crypto (SHA-256 and HMAC known vectors, Jira's webhook
 * signature vector, AES-GCM sealing, base64, random, constant-time compare).
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <mbedtls/md.h>
#include <mbedtls/sha256.h>
#include "shared/mlc_crypto.h"
#include <mbedtls/sha256.h>
#include "tinytest.h"

static void sha_hex(const char *s, char out[2 * MLC_SHA256_LEN + 1])
{
    uint8_t d[MLC_SHA256_LEN];

    mlc_sha256(s, strlen(s), d);
    mlc_hex(d, sizeof(d), out);
}

static void sha256_vectors(void)
{
    char hex[2 * MLC_SHA256_LEN + 1];

    sha_hex("", hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abc", hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void hmac_hex(const void *key, size_t klen, const char *data,
                     char out[2 * MLC_SHA256_LEN + 1])
{
    uint8_t d[MLC_SHA256_LEN];

    mlc_hmac_sha256(key, klen, data, strlen(data), d);
    mlc_hex(d, sizeof(d), out);
}

/* Whichever code hashes (the SHA extensions where the CPU has them), the
 * digests are mbedTLS's, at every length around the 64-byte blocks and
 * with keys shorter than, as long as and longer than a block. */
static void sha256_and_hmac_agree_with_mbedtls(void)
{
    static uint8_t data[1100];
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    static const size_t klens[] = { 0, 1, 32, 63, 64, 65, 200 };
    uint8_t a[MLC_SHA256_LEN], b[MLC_SHA256_LEN];
    int bad = 0;

    printf("# SHA-256 on the CPU's SHA extensions: %s\n", mlc_sha256_accelerated() ? "yes" : "no");
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 131 + (i >> 3));
    }
    for (size_t n = 0; n <= sizeof(data); n++) {
        mlc_sha256(data, n, a);
        mbedtls_sha256_ret(data, n, b, 0);
        bad += memcmp(a, b, sizeof(a)) != 0;
    }
    for (size_t k = 0; k < sizeof(klens) / sizeof(klens[0]); k++) {
        for (size_t n = 0; n <= 300; n += 7) {
            mlc_hmac_sha256(data + 500, klens[k], data, n, a);
            mbedtls_md_hmac(md, data + 500, klens[k], data, n, b);
            bad += memcmp(a, b, sizeof(a)) != 0;
        }
    }
    CHECK_INT(bad, 0);
}

static void hmac_rfc4231_vectors(void)
{
    char hex[2 * MLC_SHA256_LEN + 1];
    uint8_t key1[20], key6[131];

    memset(key1, 0x0b, sizeof(key1));
    hmac_hex(key1, sizeof(key1), "Hi There", hex);
    CHECK_STR(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    hmac_hex("Jefe", 4, "what do ya want for nothing?", hex);
    CHECK_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* a key longer than the block size is hashed first */
    memset(key6, 0xaa, sizeof(key6));
    hmac_hex(key6, sizeof(key6), "Test Using Larger Than Block-Size Key - Hash Key First", hex);
    CHECK_STR(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void hmac_jira_webhook_vector(void)
{
    static const char secret[] = "It's a Secret to Everybody";
    char hex[2 * MLC_SHA256_LEN + 1];

    hmac_hex(secret, strlen(secret), "Hello World!", hex);
    CHECK_STR(hex, "a4771c39fbe90f317c7824e83ddef3caae9cb3d976c214ace1f2937e133263c9");
}

static void ct_equal_compares(void)
{
    CHECK(mlc_ct_equal("abcdef", "abcdef", 6));
    CHECK(!mlc_ct_equal("abcdef", "abcdeg", 6));
    CHECK(!mlc_ct_equal("Xbcdef", "abcdef", 6));
    CHECK(mlc_ct_equal("a", "b", 0));
}

static void random_fills(void)
{
    uint8_t a[1000], b[1000];

    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    CHECK_INT(mlc_random(a, sizeof(a)), MLC_OK);
    CHECK_INT(mlc_random(b, sizeof(b)), MLC_OK);
    CHECK(memcmp(a, b, sizeof(a)) != 0);
    CHECK_INT(mlc_random(a, 0), MLC_OK);
}

static void seal_open_round_trip(void)
{
    uint8_t key[MLC_AES_KEY_LEN];
    static const char msg[] = "refresh-token-value";
    uint8_t *sealed = NULL, *plain = NULL, *sealed2 = NULL;
    size_t slen = 0, plen = 0, slen2 = 0;

    memset(key, 7, sizeof(key));
    CHECK_INT(mlc_seal(key, "jira.oauth", 10, msg, strlen(msg), &sealed, &slen), MLC_OK);
    CHECK_INT(slen, MLC_GCM_IV_LEN + strlen(msg) + MLC_GCM_TAG_LEN);
    CHECK_INT(mlc_open(key, "jira.oauth", 10, sealed, slen, &plain, &plen), MLC_OK);
    CHECK_INT(plen, strlen(msg));
    CHECK_STR((const char *)plain, msg);
    free(plain);
    plain = NULL;
    /* a fresh IV every time: the same plaintext never seals the same way */
    CHECK_INT(mlc_seal(key, "jira.oauth", 10, msg, strlen(msg), &sealed2, &slen2), MLC_OK);
    CHECK(slen2 == slen && memcmp(sealed, sealed2, slen) != 0);
    free(sealed2);
    /* empty plaintext, no aad */
    free(sealed);
    sealed = NULL;
    CHECK_INT(mlc_seal(key, NULL, 0, "", 0, &sealed, &slen), MLC_OK);
    CHECK_INT(mlc_open(key, NULL, 0, sealed, slen, &plain, &plen), MLC_OK);
    CHECK_INT(plen, 0);
    CHECK(plain != NULL && plain[0] == '\0');
    free(plain);
    free(sealed);
}

static void open_rejects_tampering(void)
{
    uint8_t key[MLC_AES_KEY_LEN], bad[MLC_AES_KEY_LEN];
    uint8_t *sealed = NULL, *plain = NULL;
    size_t slen = 0, plen = 0, i;

    memset(key, 1, sizeof(key));
    memcpy(bad, key, sizeof(bad));
    bad[31] ^= 1;
    CHECK_INT(mlc_seal(key, "aad", 3, "secret", 6, &sealed, &slen), MLC_OK);
    /* every byte matters: IV, ciphertext and tag */
    for (i = 0; i < slen; i++) {
        sealed[i] ^= 0x40;
        CHECK_INT(mlc_open(key, "aad", 3, sealed, slen, &plain, &plen), MLC_E_PROTO);
        CHECK(plain == NULL);
        sealed[i] ^= 0x40;
    }
    CHECK_INT(mlc_open(bad, "aad", 3, sealed, slen, &plain, &plen), MLC_E_PROTO);
    CHECK_INT(mlc_open(key, "aaD", 3, sealed, slen, &plain, &plen), MLC_E_PROTO);
    CHECK_INT(mlc_open(key, NULL, 0, sealed, slen, &plain, &plen), MLC_E_PROTO);
    CHECK_INT(mlc_open(key, "aad", 3, sealed, slen - 1, &plain, &plen), MLC_E_PROTO);
    CHECK_INT(mlc_open(key, "aad", 3, sealed, MLC_GCM_IV_LEN + MLC_GCM_TAG_LEN - 1, &plain, &plen),
              MLC_E_PROTO);
    CHECK_INT(mlc_open(key, "aad", 3, sealed, slen, &plain, &plen), MLC_OK);
    CHECK_STR((const char *)plain, "secret");
    free(plain);
    free(sealed);
}

static void b64_case(const char *plain, const char *encoded)
{
    char *e = mlc_base64_encode(plain, strlen(plain));
    uint8_t *d;
    size_t n = 99;

    CHECK_STR(e, encoded);
    free(e);
    d = mlc_base64_decode(encoded, &n);
    CHECK(d != NULL);
    CHECK_INT(n, strlen(plain));
    CHECK(d != NULL && memcmp(d, plain, n) == 0);
    free(d);
}

static void base64_round_trip(void)
{
    uint8_t bin[256], *d;
    char *e;
    size_t n, i;

    b64_case("", "");
    b64_case("f", "Zg==");
    b64_case("fo", "Zm8=");
    b64_case("foo", "Zm9v");
    b64_case("foobar", "Zm9vYmFy");
    b64_case("user@example.com:token", "dXNlckBleGFtcGxlLmNvbTp0b2tlbg==");
    for (i = 0; i < sizeof(bin); i++) {
        bin[i] = (uint8_t)i;
    }
    e = mlc_base64_encode(bin, sizeof(bin));
    d = mlc_base64_decode(e, &n);
    CHECK_INT(n, sizeof(bin));
    CHECK(d != NULL && memcmp(d, bin, sizeof(bin)) == 0);
    free(d);
    free(e);
}

static void base64_rejects_bad_input(void)
{
    static const char *const bad[] = { "Zg",       "Zg=",  "Z===",   "====", "=Zg=", "Zg=a",
                                       "Zm9v!A==", "Zm 9", "Zm9v\n", "Zm-v", NULL };
    size_t n;

    for (size_t i = 0; bad[i] != NULL; i++) {
        uint8_t *d = mlc_base64_decode(bad[i], &n);

        if (d != NULL) {
            fprintf(stderr, "  accepted '%s'\n", bad[i]);
        }
        CHECK(d == NULL);
        free(d);
    }
    CHECK(mlc_base64_decode(NULL, &n) == NULL);
}

int main(void)
{
    RUN(sha256_vectors);
    RUN(sha256_and_hmac_agree_with_mbedtls);
    RUN(hmac_rfc4231_vectors);
    RUN(hmac_jira_webhook_vector);
    RUN(ct_equal_compares);
    RUN(random_fills);
    RUN(seal_open_round_trip);
    RUN(open_rejects_tampering);
    RUN(base64_round_trip);
    RUN(base64_rejects_bad_input);
    return TT_DONE();
}
