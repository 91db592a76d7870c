/* SPDX-License-Identifier: Apache-2.0
 * SHA-256 with the x86 SHA extensions (SHA-NI), for the agent's hot path:
 * every record read is hashed to compare it with the ledger, and mbedTLS's
 * portable code is most of that cost. Used only when the CPU says it has
 * the extensions; mlc_sha256() falls back to mbedTLS otherwise. The result
 * is plain SHA-256 (FIPS 180-4); tests compare the two on many inputs.
 *
 * The state lives in two registers the SHA instructions expect: ABEF and
 * CDGH. Each sha256rnds2 does two rounds; a block is 16 groups of four
 * message words, the first four loaded, the rest made by sha256msg1/msg2
 * from the four before: w[t] = s1(w[t-2]) + w[t-7] + s0(w[t-15]) + w[t-16].
 */
#include <stdint.h>
#include <string.h>
#include "shared/mlc_sha256.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

SHA_TARGET static void blocks(uint32_t st[8], const uint8_t *p, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abef, cdgh, t;

    /* st[] is A..H; the instructions want ABEF and CDGH (A in the high lane) */
    t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[0]), 0xB1);    /* C D A B */
    cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[4]), 0x1B); /* H G F E */
    abef = _mm_alignr_epi8(t, cdgh, 8);
    cdgh = _mm_blend_epi16(cdgh, t, 0xF0);
    for (; nblocks > 0; nblocks--, p += 64) {
        __m128i w[16], save_abef = abef, save_cdgh = cdgh;

        for (int g = 0; g < 16; g++) {
            __m128i m;
            if (g < 4) {
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            } else {
                t = _mm_add_epi32(_mm_sha256msg1_epu32(w[g - 4], w[g - 3]),
                                  _mm_alignr_epi8(w[g - 1], w[g - 2], 4));
                w[g] = _mm_sha256msg2_epu32(t, w[g - 1]);
            }
            m = _mm_add_epi32(w[g], _mm_loadu_si128((const __m128i *)&k256[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
        }
        abef = _mm_add_epi32(abef, save_abef);
        cdgh = _mm_add_epi32(cdgh, save_cdgh);
    }
    t = _mm_shuffle_epi32(abef, 0x1B);    /* F E B A */
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1); /* D C H G */
    _mm_storeu_si128((__m128i *)&st[0], _mm_blend_epi16(t, cdgh, 0xF0));
    _mm_storeu_si128((__m128i *)&st[4], _mm_alignr_epi8(cdgh, t, 8));
}

int mlc_sha256_hw_available(void)
{
    static int known = -1;
    unsigned a, b, c, d;

    if (known < 0) {
        int sse = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) && (c & bit_SSSE3);
        int sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
        known = sse && sha;
    }
    return known;
}

void mlc_sha256_hw(const void *data, size_t len, uint8_t out[32])
{
    uint32_t st[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    const uint8_t *p = data;
    uint8_t tail[128];
    size_t full = len / 64, rest = len % 64, tlen;
    uint64_t bits = (uint64_t)len * 8;

    blocks(st, p, full);
    /* the last bytes, 0x80, zeros, and the length in bits (big-endian) */
    memset(tail, 0, sizeof(tail));
    memcpy(tail, p + full * 64, rest);
    tail[rest] = 0x80;
    tlen = rest + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++) {
        tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
    blocks(st, tail, tlen / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

#else

int mlc_sha256_hw_available(void)
{
    return 0;
}

void mlc_sha256_hw(const void *data, size_t len, uint8_t out[32])
{
    (void)data;
    (void)len;
    memset(out, 0, 32);
}

#endif
