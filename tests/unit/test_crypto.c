/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: mlc_crypto (SHA-256 and HMAC known vectors, Jira's webhook
 * signature vector, AES-GCM sealing, base64, random, constant-time compare).
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "shared/mlc_crypto.h"
#include "shared/mlc_sha256.h"
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

/* The SHA-NI code and mbedTLS agree on every length around the block
 * boundaries and on long inputs (skipped where the CPU has no SHA-NI). */
static void sha256_hw_matches_portable(void)
{
    uint8_t buf[4200], a[32], b[32];
    int same = 0, n = 0;

    if (!mlc_sha256_hw_available()) {
        printf("# no SHA extensions on this CPU: the portable code is used\n");
        return;
    }
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 131 + (i >> 7));
    }
    for (size_t len = 0; len < sizeof(buf); len += len < 200 ? 1 : 97) {
        mlc_sha256_hw(buf, len, a);
        CHECK(mbedtls_sha256_ret(buf, len, b, 0) == 0);
        same += memcmp(a, b, 32) == 0;
        n++;
    }
    CHECK_INT(same, n);
}

static void hmac_hex(const void *key, size_t klen, const char *data,
                     char out[2 * MLC_SHA256_LEN + 1])
{
    uint8_t d[MLC_SHA256_LEN];

    mlc_hmac_sha256(key, klen, data, strlen(data), d);
    mlc_hex(d, sizeof(d), out);
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
    RUN(sha256_hw_matches_portable);
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
