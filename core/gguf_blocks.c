// core/gguf_blocks.c: the ggml block formats sd-qzo reads (core/gguf.h has their
// byte layouts): sizes, names and dequantisation to f32. Written from the layouts,
// checked against the gguf Python package's dequantize (tests/unit/test_gguf.c).
// Blocks may sit at any byte offset, so multi-byte fields go through memcpy.
#include <stdio.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/gguf.h"

bool sq_ggml_type_block(uint32_t type, int *elems, int *bytes) {
    switch (type) {
    case SQ_GGML_F32: *elems = 1; *bytes = 4; return true;
    case SQ_GGML_F16: case SQ_GGML_BF16: *elems = 1; *bytes = 2; return true;
    case SQ_GGML_Q4_0: *elems = 32; *bytes = 18; return true;
    case SQ_GGML_Q8_0: *elems = 32; *bytes = 34; return true;
    case SQ_GGML_Q4_K: *elems = 256; *bytes = 144; return true;
    default: return false;
    }
}

const char *sq_ggml_type_name(uint32_t type) {
    switch (type) {
    case SQ_GGML_F32: return "F32";
    case SQ_GGML_F16: return "F16";
    case SQ_GGML_BF16: return "BF16";
    case SQ_GGML_Q4_0: return "Q4_0";
    case SQ_GGML_Q8_0: return "Q8_0";
    case SQ_GGML_Q4_K: return "Q4_K";
    default: {
        static _Thread_local char buf[32];
        snprintf(buf, sizeof buf, "ggml type %u", type);
        return buf;
    }
    }
}

size_t sq_ggml_nbytes(uint32_t type, int64_t n) {
    int e, b;
    if (!sq_ggml_type_block(type, &e, &b) || n < 0) return 0;
    return (size_t)(n / e) * (size_t)b;
}

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return sq_f16_to_f32(h);
}

// Q4_K's eight 6-bit (scale, min) pairs in 12 bytes: pairs 0-3 are the low six
// bits of bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 take their low four bits
// from bytes 8-11 and their top two bits from the spare top bits of bytes 0-7.
static void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

int sq_ggml_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const uint8_t *p = src;
    switch (type) {
    case SQ_GGML_F32: memcpy(dst, src, (size_t)n * 4); return SQ_OK;
    case SQ_GGML_F16: return sq_convert_to_f32(dst, src, SQ_F16, n) == 0 ? SQ_OK : SQ_FAIL;
    case SQ_GGML_BF16: return sq_convert_to_f32(dst, src, SQ_BF16, n) == 0 ? SQ_OK : SQ_FAIL;
    case SQ_GGML_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
            float d = f16_at(p);
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((p[2 + j] & 0xF) - 8) * d;
                dst[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
            }
        }
        return SQ_OK;
    case SQ_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34, dst += 32) {
            float d = f16_at(p);
            for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)p[2 + j] * d;
        }
        return SQ_OK;
    case SQ_GGML_Q4_K:
        for (int64_t b = 0; b < n / 256; b++, p += 144, dst += 256) {
            float d = f16_at(p), dmin = f16_at(p + 2);
            const uint8_t *scales = p + 4, *q = p + 16;
            // four chunks of 64 elements: 32 low nibbles (sub-block 2c), then the
            // same 32 bytes' high nibbles (sub-block 2c + 1)
            for (int c = 0; c < 4; c++) {
                int sc0, m0, sc1, m1;
                q4k_scale_min(scales, 2 * c, &sc0, &m0);
                q4k_scale_min(scales, 2 * c + 1, &sc1, &m1);
                float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
                for (int l = 0; l < 32; l++) {
                    dst[64 * c + l] = d0 * (float)(q[32 * c + l] & 0xF) - mm0;
                    dst[64 * c + 32 + l] = d1 * (float)(q[32 * c + l] >> 4) - mm1;
                }
            }
        }
        return SQ_OK;
    default: return sq_errorf("cannot dequantise %s", sq_ggml_type_name(type));
    }
}
