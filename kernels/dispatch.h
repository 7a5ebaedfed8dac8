// kernels/dispatch.h: the one way an op of kernels/ (ops.c, quant_ops.c, int8_ops.c)
// hands a call to its CUDA implementation; the rule it serves is written at the head
// of kernels/ops.c. Internal to kernels/: model code includes kernels/ops.h,
// kernels/quant.h or kernels/int8.h and never this.
//
//   CUDA_OR_FAIL("name", cuda_x(...));
// runs the call bracketed by the profiler (SQ_PROFILE=1 times it under "name",
// kernels/profile.h; off, it costs one flag test) in a build with the CUDA backend,
// and in a CPU-only build aborts naming the op (the call is not even compiled there,
// so the cuda_* names need no stubs). A call that returns a value is written as an
// assignment: CUDA_OR_FAIL("mse", r = cuda_sum_sq_diff(...)).
#ifndef SQ_DISPATCH_H
#define SQ_DISPATCH_H

#include "core/error.h"

#ifdef SQ_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "kernels/profile.h"
#define CUDA_OR_FAIL(op, call)                 \
    do {                                       \
        double t0_ = sq_profile_begin();       \
        call;                                  \
        sq_profile_end(op, t0_);               \
    } while (0)
#else
#define CUDA_OR_FAIL(op, call) SQ_CHECK(0, "%s: the CUDA version of this op is not built", op)
#endif

#endif
