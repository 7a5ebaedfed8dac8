// core/dtype.h: element types and bf16/f16 <-> f32 conversion, shared by every module.
// Q4 is int4 packed two codes per byte: element 2i in the low nibble, 2i+1 in the
// high nibble, each a two's-complement value in [-8, 7] (symmetric quantisation
// uses [-7, 7]). A Q4 tensor of n elements takes (n + 1) / 2 bytes.
#ifndef SQ_DTYPE_H
#define SQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SQ_F32 = 0,
    SQ_BF16,
    SQ_F16,
    SQ_I8,
    SQ_U8,
    SQ_Q4,    // packed int4, see above
    SQ_I32,
    SQ_I64,
    SQ_F64,
    SQ_DTYPE_COUNT
} sq_dtype;

// Bytes for n elements of dtype (handles Q4's half-byte elements).
size_t sq_dtype_bytes(sq_dtype dtype, int64_t n);
const char *sq_dtype_name(sq_dtype dtype);            // "f32", "bf16", ...
// safetensors spelling ("F32", "BF16", "F16", "I8", "U8", "I32", "I64", "F64");
// returns 0 and sets *out, or -1 for a dtype sd-qzo does not read. Q4 is stored as U8.
int sq_dtype_from_safetensors(const char *name, sq_dtype *out);
const char *sq_dtype_to_safetensors(sq_dtype dtype);

static inline float sq_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even, as PyTorch's .to(torch.bfloat16); NaN stays NaN.
static inline uint16_t sq_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float sq_f16_to_f32(uint16_t h);
uint16_t sq_f32_to_f16(float f);

// Widens n elements of src (F32/BF16/F16/F64/I8/U8/I32/I64) into dst floats.
// Returns -1 for dtypes that are not plain numbers (Q4).
int sq_convert_to_f32(float *dst, const void *src, sq_dtype src_dtype, int64_t n);
// Narrows n floats into dst of dtype F32/BF16/F16.
int sq_convert_from_f32(void *dst, sq_dtype dst_dtype, const float *src, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
