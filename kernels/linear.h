// kernels/linear.h: a linear layer that is either dense or int4-quantised, so
// model code calls one function and QZO's quantised MMDiT needs no second model.
// Dense: y = x·wᵀ + b. Quantised: y = x·((s + σ·ε·z) ⊙ q)ᵀ + b, the weight
// dequantised into arena scratch just before the GEMM (kernels/quant.h), or on CUDA
// inside a model's pass into the buffers of kernels/weight_prefetch.h, ahead of time.
#ifndef SQ_LINEAR_H
#define SQ_LINEAR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"
#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    sq_tensor w;          // dense weight (Nout, K); empty (data NULL) when quantised
    sq_tensor b;          // bias (Nout); empty when the layer has none
    sq_tensor codes;      // Q4 (Nout, K) when quantised
    sq_tensor scales;     // F32 (Nout, K/group), the trained parameters
    int group;
    uint64_t index_base;  // global index of scales[0] for the perturbation RNG
    bool frozen;          // not trained (--train-blocks / --train-layers): always evaluated unperturbed
} sq_linear;

static inline bool sq_linear_quantized(const sq_linear *l) { return l->codes.data != NULL; }

// out (N, Nout) = layer(x (N, K)). p: the current perturbation (NULL or sign 0 for
// none); its index_base is replaced by the layer's, and a frozen layer ignores it (no
// z is drawn for it: the perturbation of a forward pass touches trained layers only).
// scratch: arena for the
// dequantised weight (rewound before returning). SQ_FAIL when scratch is exhausted.
int sq_linear_forward(sq_tensor *out, const sq_tensor *x, const sq_linear *l, const sq_perturb *p, sq_arena *scratch);

// out = gelu_tanh(layer(x)), the GELU fused into the GEMM where the device allows
// (kernels/ops.h sq_matmul_gelu).
int sq_linear_forward_gelu(sq_tensor *out, const sq_tensor *x, const sq_linear *l, const sq_perturb *p,
                           sq_arena *scratch);

// out_i = layer_i(x) for n layers that read the same x (a stream's q, k and v).
// When the layers are int4 with one shape, the outputs equally far apart (out_i
// starts i·(out_1 - out_0) after out_0) and x has more rows than the GEMV takes,
// the weights are dequantised side by side into scratch and the products run as
// one sq_matmul_shared_input; otherwise layer by layer. Same numbers either way,
// up to the GEMM's choice of algorithm.
enum { SQ_LINEAR_SHARED_INPUT_MAX = 4 };
int sq_linear_forward_shared_input(sq_tensor *const *out, const sq_tensor *x, const sq_linear *const *l, int n,
                                   const sq_perturb *p, sq_arena *scratch);
// How many sq_linear_forward_shared_input calls ran as one product since the start
// (for tests: the path is a speed-up, and the numbers do not show which one ran).
long sq_linear_shared_input_batched(void);

void sq_linear_free(sq_linear *l);

#ifdef __cplusplus
}
#endif

#endif
