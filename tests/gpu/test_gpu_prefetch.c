// tests/gpu/test_gpu_prefetch.c: the two ways a forward pass uses more than the
// default stream give the MMDiT forward the same bits as the plain path:
// dequantising the next int4 linear ahead (kernels/weight_prefetch.h) and running
// the context half of each block on a side stream (kernels/streams.h), alone and
// together, on one sample (joint rows) and on two (the concat path, a dual-attention
// model). The sequence of passes exercises every case of the prefetch: the first pass
// (the order is learned), + and - passes (prefetches taken), a frozen layer, scales
// changed between passes (nothing dequantised ahead may outlive its pass), and an
// unperturbed pass after perturbed ones. The outputs are compared byte for byte, and
// the prefetch counters show the side stream did the work. Skips (exit 77) without a GPU.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/graph.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/streams.h"
#include "kernels/weight_prefetch.h"
#include "tests/gpu/gpu_start.h"
#include "tests/gpu/mmdit_case.h"
#include "tests/test_util.h"

enum { PASSES = 6 };

// Runs the pass sequence with prefetching on or off; outs[i] receives pass i's output bytes.
static void run_sequence(const char *cas, bool prefetch, bool streams, float **outs, int64_t *n_out) {
    sq_prefetch_set_enabled(prefetch);
    sq_streams_set_enabled(streams);
    tu_mmdit_case c;
    tu_mmdit_case_load(&c, cas);
    c.m.blocks[0].ff2.frozen = true;   // a frozen layer mid-sequence: prefetched unperturbed
    *n_out = sq_tensor_numel(&c.out);
    for (int i = 0; i < PASSES; i++) {
        // passes 0-3: +, -, +, - of two perturbations; 4: unperturbed; then the
        // scales of every layer move (a QZO update) and pass 5 is unperturbed again
        sq_perturb p = {.seed = 5, .step = (uint64_t)(9 + i / 2), .eps = 1e-2f, .sign = i % 2 ? -1 : +1, .relative = 1};
        if (i == 5) tu_mmdit_case_update(&c);
        outs[i] = tu_mmdit_case_forward(&c, c.in, c.timestep, i >= 4 ? NULL : &p);
    }
    tu_mmdit_case_free(&c);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    // every pass runs op by op, so the prefetch counters see each one (CUDA graph
    // replays, tests/gpu/test_gpu_graph.c, do not call the host side)
    sq_graphs_set_enabled(false);
    static const char *cases[] = {"large_like", "medium_like", "nonsquare_b2"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *plain[PASSES], *other[PASSES];
        int64_t n;
        long a0, l0, a1, l1;
        sq_prefetch_counts(&a0, &l0);
        long batched = sq_linear_shared_input_batched();
        run_sequence(cases[c], false, false, plain, &n);
        // q, k and v took one GEMM on the GPU (kernels/linear.h), whose results these passes check too
        TU_CHECK(sq_linear_shared_input_batched() > batched, "%s: no q/k/v projections ran as one GEMM", cases[c]);
        sq_prefetch_counts(&a1, &l1);
        TU_CHECK(a1 == a0 && l1 == l0, "%s: prefetching off, yet %ld layers went through its buffers", cases[c],
                 (a1 - a0) + (l1 - l0));
        for (int mode = 1; mode <= 3; mode++) {   // prefetch alone, side stream alone, both
            bool prefetch = mode & 1, streams = mode & 2;
            sq_prefetch_counts(&a0, &l0);
            run_sequence(cases[c], prefetch, streams, other, &n);
            sq_prefetch_counts(&a1, &l1);
            printf("%-13s prefetch %s, side stream %s: %ld layers dequantised ahead, %ld in line over %d passes\n",
                   cases[c], prefetch ? "on " : "off", streams ? "on " : "off", a1 - a0, l1 - l0, PASSES);
            // every pass takes the same layers through the prefetch: the first learns
            // the order (all in line), each later one finds all but its first ready
            if (prefetch) {
                long per_pass = ((a1 - a0) + (l1 - l0)) / PASSES;
                TU_CHECK(((a1 - a0) + (l1 - l0)) % PASSES == 0 && per_pass > 1 && (l1 - l0) - per_pass <= PASSES - 1,
                         "%s: too few layers were dequantised ahead (%ld ahead, %ld in line over %d passes)", cases[c],
                         a1 - a0, l1 - l0, PASSES);
            }
            for (int i = 0; i < PASSES; i++) {
                TU_CHECK(memcmp(plain[i], other[i], (size_t)n * sizeof(float)) == 0,
                         "%s pass %d: output differs with prefetch %d, side stream %d", cases[c], i, prefetch, streams);
                if (i > 0)
                    TU_CHECK(memcmp(other[i], other[i - 1], (size_t)n * sizeof(float)) != 0,
                             "%s: passes %d and %d gave the same output", cases[c], i - 1, i);
            }
            for (int i = 0; i < PASSES; i++) free(other[i]);
        }
        for (int i = 0; i < PASSES; i++) free(plain[i]);
    }
    return tu_finish("test_gpu_prefetch");
}
