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
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "kernels/streams.h"
#include "kernels/weight_prefetch.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

enum { PASSES = 6 };

// Runs the pass sequence with prefetching on or off; outs[i] receives pass i's output bytes.
static void run_sequence(const char *cas, bool prefetch, bool streams, float **outs, int64_t *n_out) {
    char model_path[1024], io_path[1024];
    snprintf(model_path, sizeof model_path, "%s/mmdit/%s/transformer", tu_fixtures_dir(), cas);
    snprintf(io_path, sizeof io_path, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), cas);
    sq_prefetch_set_enabled(prefetch);
    sq_streams_set_enabled(streams);
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    sd_mmdit m;
    SQ_CHECK(sd_mmdit_load(&m, model_path, SQ_CUDA, SQ_BF16) == SQ_OK && sd_mmdit_quantize(&m, 32, NULL) == SQ_OK,
             "%s", sq_error_message());
    m.blocks[0].ff2.frozen = true;   // a frozen layer mid-sequence: prefetched unperturbed
    const char *names[3] = {"hidden_states", "encoder_hidden_states", "pooled_projections"};
    sq_tensor t[3];
    for (int i = 0; i < 3; i++) {
        const sq_st_entry *e = sq_st_find(io, names[i]);
        SQ_CHECK(sq_tensor_alloc(&t[i], SQ_BF16, SQ_CUDA, e->ndim, e->shape) == SQ_OK &&
                     sq_st_load(io, names[i], &t[i]) == SQ_OK,
                 "load");
    }
    const float *ts = sq_st_find(io, "timestep")->data;
    sq_tensor out;
    SQ_CHECK(sq_tensor_alloc(&out, SQ_BF16, SQ_CUDA, 4, t[0].shape) == SQ_OK, "alloc");
    *n_out = sq_tensor_numel(&out);
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CUDA, 16 << 20) == SQ_OK, "%s", sq_error_message());
    for (int i = 0; i < PASSES; i++) {
        // passes 0-3: +, -, +, - of two perturbations; 4: unperturbed; then the
        // scales of every layer move (a QZO update) and pass 5 is unperturbed again
        sq_perturb p = {.seed = 5, .step = (uint64_t)(9 + i / 2), .eps = 1e-2f, .sign = i % 2 ? -1 : +1, .relative = 1};
        if (i == 5) {
            sq_perturb u = {.seed = 6, .step = 1, .sign = +1, .relative = 1};
            for (int b = 0; b < m.cfg.num_layers; b++) {
                sd_mmdit_block *bl = &m.blocks[b];
                sq_linear *ls[] = {&bl->to_q, &bl->to_k, &bl->to_v, &bl->to_out, &bl->ff1, &bl->ff2};
                for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) {
                    u.index_base = ls[k]->index_base;
                    if (sq_linear_quantized(ls[k])) sq_qzo_update(&ls[k]->scales, &u, 0.05f);
                }
            }
        }
        float *poison = malloc((size_t)*n_out * sizeof(float));
        tu_poison(poison, *n_out);
        sq_tensor_from_host_f32(&out, poison);
        free(poison);
        TU_CHECK(sd_mmdit_forward(&m, &a, &t[0], ts, &t[1], &t[2], i >= 4 ? NULL : &p, &out, NULL) == SQ_OK, "%s",
                 sq_error_message());
        outs[i] = malloc((size_t)*n_out * sizeof(float));   // bf16 -> f32 is exact: the bytes compare the bits
        SQ_CHECK(sq_tensor_to_host_f32(outs[i], &out) == SQ_OK, "%s", sq_error_message());
    }
    sq_arena_free(&a);
    for (int i = 0; i < 3; i++) sq_tensor_free(&t[i]);
    sq_tensor_free(&out);
    sd_mmdit_free(&m);
    sq_st_close(io);
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
        run_sequence(cases[c], false, false, plain, &n);
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
            // every pass but the first should find nearly all its layers ready
            if (prefetch)
                TU_CHECK(a1 - a0 > 3 * (l1 - l0), "%s: too few layers were dequantised ahead (%ld ahead, %ld in line)",
                         cases[c], a1 - a0, l1 - l0);
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
