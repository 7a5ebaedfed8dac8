// core/sha256.c: FIPS 180-4 SHA-256. The plain compression function is written for
// clarity (about 300 MB/s); on x86 CPUs with the SHA extensions (Intel since Ice
// Lake / Goldmont, AMD since Zen) whole blocks go through the SHA-NI instructions
// instead, several times faster, so that hashing a 16 GB checkpoint keeps up with
// quantising it (mmdit/quantize_file.c). Both give the same digest (tests/unit/
// test_core.c checks the FIPS vectors and long inputs against each other).
#include "core/sha256.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

// n 64-byte blocks with SHA-NI: four rounds per step, the message schedule in four
// registers (msg1/msg2), the state as ABEF/CDGH as the instructions want it.
__attribute__((target("sha,sse4.1,ssse3"))) static void compress_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bll, 0x0405060700010203ll);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);   // CDAB
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);   // EFGH
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                         // ABEF
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                              // CDGH
    for (; n > 0; n--, p += 64) {
        __m128i save0 = st0, save1 = st1, m[4];
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) {
            if (q < 4) m[q] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * q)), bswap);
            __m128i cur = m[q & 3];
            __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&K[4 * q]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            if (q >= 3 && q <= 14) {   // schedule words 4(q+1) .. 4(q+1)+3
                __m128i next = _mm_add_epi32(m[(q + 1) & 3], _mm_alignr_epi8(cur, m[(q - 1) & 3], 4));
                m[(q + 1) & 3] = _mm_sha256msg2_epu32(next, cur);
            }
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(msg, 0x0E));
            if (q >= 1 && q <= 12) m[(q - 1) & 3] = _mm_sha256msg1_epu32(m[(q - 1) & 3], cur);
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);        // FEBA
    st1 = _mm_shuffle_epi32(st1, 0xB1);        // DCHG
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);     // DCBA
    st1 = _mm_alignr_epi8(st1, tmp, 8);        // HGFE
    _mm_storeu_si128((__m128i *)&h[0], st0);
    _mm_storeu_si128((__m128i *)&h[4], st1);
}

static bool have_shani(void) {
    static int have = -1;   // benign: every thread computes the same answer
    int v = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a, b, c, d;
        bool sse = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 19)) && (c & (1u << 9));   // SSE4.1, SSSE3
        bool sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
        v = sse && sha && !getenv("SQ_SHA256_PLAIN");
        __atomic_store_n(&have, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

// n whole blocks.
static void compress_blocks(uint32_t h[8], const uint8_t *p, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (n > 0 && have_shani()) {
        compress_shani(h, p, n);
        return;
    }
#endif
    for (; n > 0; n--, p += 64) compress(h, p);
}

bool sq_sha256_accelerated(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return have_shani();
#else
    return false;
#endif
}

void sq_sha256_init(sq_sha256 *s) {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, init, sizeof init);
    s->length = 0;
    s->used = 0;
}

void sq_sha256_update(sq_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->length += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used < 64) return;
        compress_blocks(s->h, s->block, 1);
        s->used = 0;
    }
    size_t blocks = n / 64;
    compress_blocks(s->h, p, blocks);
    p += blocks * 64;
    n -= blocks * 64;
    memcpy(s->block, p, n);
    s->used = n;
}

void sq_sha256_final(sq_sha256 *s, uint8_t digest[32]) {
    uint64_t bits = s->length * 8;
    uint8_t pad = 0x80;
    uint64_t len = s->length;
    sq_sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->used != 56) sq_sha256_update(s, &zero, 1);
    uint8_t be[8];
    for (int i = 0; i < 8; i++) be[i] = (uint8_t)(bits >> (56 - 8 * i));
    sq_sha256_update(s, be, 8);
    s->length = len;
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(s->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void sq_sha256_hex(const uint8_t digest[32], char out[65]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[64] = 0;
}

int sq_sha256_file(const char *path, char out_hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return sq_error_errno("%s: cannot open", path);
    static _Thread_local uint8_t buf[1 << 20];
    sq_sha256 s;
    sq_sha256_init(&s);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sq_sha256_update(&s, buf, n);
    int err = ferror(f);
    fclose(f);
    if (err) return sq_errorf("%s: read error while hashing", path);
    uint8_t d[32];
    sq_sha256_final(&s, d);
    sq_sha256_hex(d, out_hex);
    return SQ_OK;
}
