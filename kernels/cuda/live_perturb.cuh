// kernels/cuda/live_perturb.cuh: the perturbation a perturbed int4 kernel applies,
// as its launch hands it over. Normally the value itself. While a CUDA graph is
// captured (kernels/graph.h) the launch also names the device copy of the pass's
// perturbation, which each replay writes before it runs: one graph then serves every
// QZO step, + and - pass alike, and only the layer's own part (where its scales start
// in the RNG's index space) is fixed in the graph.
#ifndef SQ_CUDA_LIVE_PERTURB_CUH
#define SQ_CUDA_LIVE_PERTURB_CUH

#include "kernels/quant.h"

typedef struct {
    sq_perturb p;              // the layer's perturbation (sign 0: none, a frozen layer's included)
    const sq_perturb *live;    // NULL, or the device copy a graph replay reads: seed, step, eps, sign, relative
} cuda_perturb;

// p (NULL: none) for a launch now: with the live copy while a graph is captured and
// p perturbs (kernels/cuda/graph.cu).
cuda_perturb cuda_perturb_of(const sq_perturb *p);

#ifdef __CUDACC__
__device__ __forceinline__ sq_perturb cuda_perturb_resolve(const cuda_perturb &c) {
    if (!c.live) return c.p;
    sq_perturb r = *c.live;
    r.index_base = c.p.index_base;
    return r;
}
#endif

#endif
