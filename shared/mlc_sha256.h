/* SPDX-License-Identifier: Apache-2.0
 * SHA-256 on the CPU's SHA extensions; mlc_sha256() (mlc_crypto.h) picks it
 * when mlc_sha256_hw_available() says so. */
#ifndef MLC_SHA256_H
#define MLC_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* 1 when this CPU has the x86 SHA extensions (and SSE4.1, SSSE3). */
int mlc_sha256_hw_available(void);
/* SHA-256 of data; only call when mlc_sha256_hw_available(). */
void mlc_sha256_hw(const void *data, size_t len, uint8_t out[32]);

#endif
