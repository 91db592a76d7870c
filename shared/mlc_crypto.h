/* SPDX-License-Identifier: Apache-2.0
 * mlc_crypto: the few primitives we need, over mbedTLS.
 */
#ifndef MLC_CRYPTO_H
#define MLC_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include "shared/mlc_err.h"

#define MLC_SHA256_LEN 32
#define MLC_AES_KEY_LEN 32
#define MLC_GCM_IV_LEN 12
#define MLC_GCM_TAG_LEN 16

void mlc_sha256(const void *data, size_t len, uint8_t out[MLC_SHA256_LEN]);
/* 1 when mlc_sha256 and mlc_hmac_sha256 run on the CPU's SHA extensions
 * (x86-64 with SHA and SSE4.1, unless MLC_NO_SHA_NI is set), else mbedTLS. */
int mlc_sha256_accelerated(void);
void mlc_hmac_sha256(const void *key, size_t klen, const void *data, size_t len,
                     uint8_t out[MLC_SHA256_LEN]);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void mlc_hex(const uint8_t *in, size_t n, char *out);
/* Constant-time comparison; 1 when equal. */
int mlc_ct_equal(const void *a, const void *b, size_t n);
/* Cryptographically strong random bytes (getrandom). */
enum mlc_rc mlc_random(void *out, size_t n);

/* AES-256-GCM. sealed = iv(12) || ciphertext || tag(16); aad may be NULL.
 * *out is heap (caller frees); *out_len set. */
enum mlc_rc mlc_seal(const uint8_t key[MLC_AES_KEY_LEN], const void *aad, size_t aad_len,
                     const void *plain, size_t len, uint8_t **out, size_t *out_len);
/* MLC_E_PROTO when the tag does not verify (wrong key, tampered data). *out is
 * NUL-terminated for convenience (not counted in *out_len). */
enum mlc_rc mlc_open(const uint8_t key[MLC_AES_KEY_LEN], const void *aad, size_t aad_len,
                     const uint8_t *sealed, size_t len, uint8_t **out, size_t *out_len);

/* Base64 (standard alphabet, padded). Heap results; decode returns NULL on bad input. */
/* Password storage for the status page: PBKDF2-HMAC-SHA256 with a random
 * salt, as "pbkdf2-sha256$<iterations>$<b64 salt>$<b64 key>" (heap). */
char *mlc_password_hash(const char *pass, unsigned iterations);
/* 1 when pass matches hash (constant-time compare), else 0. */
int mlc_password_verify(const char *hash, const char *pass);

char *mlc_base64_encode(const void *in, size_t n);
uint8_t *mlc_base64_decode(const char *in, size_t *out_len);

#endif
