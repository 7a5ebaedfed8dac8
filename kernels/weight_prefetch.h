// kernels/weight_prefetch.h: on CUDA, the next int4 linear's weights are dequantised
// on a side stream while the current linear's GEMM runs (kernels/cuda/
// weight_prefetch.cu says why that pays).
//
// Which linear comes next is learned, not declared: a model's forward calls its
// linears in the same order every pass, so the order a model owns records, for each
// int4 linear that went through dequantise-then-GEMM, the one that did so after it
// in the last pass. The first pass learns; later passes prefetch. A guess that turns
// out wrong (another layer came, or another perturbation) only costs the wasted
// dequantisation: the layer is then dequantised in line, so the weights a GEMM reads
// are always exactly those of the unpipelined path (same kernel, same bits).
//
// Prefetching happens only between sq_prefetch_pass_begin and _end, one forward
// pass: nothing dequantised ahead outlives it, so scales changed between passes
// (the QZO update, swapping in the EMA) are always read afresh.
// SQ_WEIGHT_PREFETCH=0 in the environment turns it off (the plain path).
#ifndef SQ_WEIGHT_PREFETCH_H
#define SQ_WEIGHT_PREFETCH_H

#include <stdbool.h>

#include <stdint.h>

#include "core/tensor.h"
#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sq_linear_order sq_linear_order;

// NULL when out of host memory (prefetching is then skipped: no error).
sq_linear_order *sq_linear_order_new(void);
void sq_linear_order_free(sq_linear_order *o);

// One forward pass of the model owning `o` (NULL: no prefetching in this pass) on
// `device`; passes do not nest.
void sq_prefetch_pass_begin(sq_linear_order *o, sq_device device);
// Ends the pass: later work on the default stream waits for the side stream.
void sq_prefetch_pass_end(void);

// One int4 layer as the prefetch sees it (kernels/linear.c describes its sq_linear
// so): its identity (any pointer unique to the layer for the model's life), its
// codes and scales, and what its perturbation needs.
typedef struct {
    const void *key;
    const sq_tensor *codes, *scales;
    int group;
    uint64_t index_base;
    bool frozen;
} sq_q4_layer;

// For kernels/linear.c: runs out = x·Wᵀ + b (gelu: its tanh GELU) for the int4
// layer l under the pass's perturbation p through the prefetch buffers and returns
// true, or returns false without doing anything when the layer does not take this
// path (no pass, CPU, the GEMV path, the side stream, turned off).
bool sq_prefetch_linear(sq_tensor *out, const sq_tensor *x, const sq_q4_layer *l, const sq_tensor *b,
                        const sq_perturb *p, bool gelu);

// Layers whose weights were dequantised ahead, and in line, since the start (CUDA;
// zeros elsewhere): for tests and `sd-qzo bench`.
void sq_prefetch_counts(long *ahead, long *in_line);

// Turns prefetching on or off for this process (tests; default: on unless
// SQ_WEIGHT_PREFETCH=0).
void sq_prefetch_set_enabled(bool on);

#ifdef __cplusplus
}
#endif

#endif
