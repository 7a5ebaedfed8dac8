// kernels/int8.h: int8 weights with one fp32 scale per output channel, for frozen
// models that are only run, never trained (T5-XXL's 4.76 B parameters: 4.8 GB as
// int8 instead of 9.5 GB as bf16). Separate from kernels/quant.h on purpose: the
// int4 format there carries QZO's trainable, perturbed scales; nothing here is
// perturbed or trained.
//
// Layout of a layer with weight W (Nout, K):
//   codes  I8 (Nout, K) row-major, values in [-127, 127];
//   scales F32 (Nout): W[n, k] ≈ scales[n] * codes[n, k], scales[n] = max_k |W[n, k]| / 127
//          (per-row absmax, round to nearest; an all-zero row gets scale 0).
// A model dequantises one layer at a time into scratch just before its GEMM.
#ifndef SQ_INT8_H
#define SQ_INT8_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// Host quantiser: W (Nout, K) f32 -> codes (Nout*K) and scales (Nout). Returns the
// total squared quantisation error.
double sq_quantize_i8_rows(const float *w, int64_t nout, int64_t k, int8_t *codes, float *scales);

// out (Nout, K) = scales ⊙ codes, in out's dtype (F32 on the CPU; BF16 or F32 on
// CUDA, rounded once from the exact fp32 product). codes, scales and out on one device.
void sq_dequant_i8(sq_tensor *out, const sq_tensor *codes, const sq_tensor *scales);

#ifdef __cplusplus
}
#endif

#endif
