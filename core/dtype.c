// core/dtype.c: dtype names, sizes and host-side conversions.
#include "core/dtype.h"

#include <math.h>

static const char *names[SQ_DTYPE_COUNT] = {"f32", "bf16", "f16", "i8", "u8", "q4", "i32", "i64", "f64"};
static const char *st_names[SQ_DTYPE_COUNT] = {"F32", "BF16", "F16", "I8", "U8", "U8", "I32", "I64", "F64"};

size_t sq_dtype_bytes(sq_dtype dtype, int64_t n) {
    switch (dtype) {
    case SQ_F32: case SQ_I32: return (size_t)n * 4;
    case SQ_BF16: case SQ_F16: return (size_t)n * 2;
    case SQ_I8: case SQ_U8: return (size_t)n;
    case SQ_Q4: return (size_t)(n + 1) / 2;
    case SQ_I64: case SQ_F64: return (size_t)n * 8;
    default: return 0;
    }
}

const char *sq_dtype_name(sq_dtype dtype) { return dtype < SQ_DTYPE_COUNT ? names[dtype] : "?"; }

const char *sq_dtype_to_safetensors(sq_dtype dtype) { return dtype < SQ_DTYPE_COUNT ? st_names[dtype] : "?"; }

int sq_dtype_from_safetensors(const char *name, sq_dtype *out) {
    for (int i = 0; i < SQ_DTYPE_COUNT; i++) {
        if (i == SQ_Q4) continue;
        if (!strcmp(name, st_names[i])) { *out = (sq_dtype)i; return 0; }
    }
    return -1;
}

float sq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    int exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        // subnormal (or zero): mant * 2^-24
        f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    uint32_t u;
    if (exp == 31) u = sign | 0x7f800000u | (mant << 13);
    else u = sign | ((uint32_t)(exp - 15 + 127) << 23) | (mant << 13);
    memcpy(&f, &u, 4);
    return f;
}

uint16_t sq_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;              // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00;             // overflow -> inf (incl. inf)
    if (a < 0x38800000u) {                                  // subnormal half or zero
        float af;
        memcpy(&af, &a, 4);
        return sign | (uint16_t)lrintf(af * 16777216.0f);  // round-to-nearest-even via lrint
    }
    // normal: round mantissa from 23 to 10 bits, nearest even
    uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

// Safetensors data may start at any byte offset (the format does not align tensors), so
// every multi-byte element is read and written through memcpy, never a typed load.
#define SQ_READ_LOOP(T, EXPR)                                                   \
    for (int64_t i = 0; i < n; i++) {                                           \
        T v;                                                                    \
        memcpy(&v, (const char *)src + (size_t)i * sizeof(T), sizeof(T));       \
        dst[i] = (EXPR);                                                        \
    }

int sq_convert_to_f32(float *dst, const void *src, sq_dtype t, int64_t n) {
    switch (t) {
    case SQ_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case SQ_BF16: SQ_READ_LOOP(uint16_t, sq_bf16_to_f32(v)) return 0;
    case SQ_F16: SQ_READ_LOOP(uint16_t, sq_f16_to_f32(v)) return 0;
    case SQ_F64: SQ_READ_LOOP(double, (float)v) return 0;
    case SQ_I8: { const int8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; return 0; }
    case SQ_U8: { const uint8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; return 0; }
    case SQ_I32: SQ_READ_LOOP(int32_t, (float)v) return 0;
    case SQ_I64: SQ_READ_LOOP(int64_t, (float)v) return 0;
    default: return -1;
    }
}
#undef SQ_READ_LOOP

int sq_convert_from_f32(void *dst, sq_dtype t, const float *src, int64_t n) {
    switch (t) {
    case SQ_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case SQ_BF16: for (int64_t i = 0; i < n; i++) { uint16_t v = sq_f32_to_bf16(src[i]); memcpy((char *)dst + 2 * i, &v, 2); } return 0;
    case SQ_F16: for (int64_t i = 0; i < n; i++) { uint16_t v = sq_f32_to_f16(src[i]); memcpy((char *)dst + 2 * i, &v, 2); } return 0;
    default: return -1;
    }
}
