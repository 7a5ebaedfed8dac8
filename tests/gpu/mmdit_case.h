// tests/gpu/mmdit_case.h: an MMDiT fixture on the GPU, quantised to int4, with its
// inputs, and a QZO update of its block layers' scales: what the tests that run one
// forward pass by several execution paths share (test_gpu_prefetch.c: the extra
// streams; test_gpu_graph.c: CUDA graph replays). Aborts on a load failure.
#ifndef SQ_TESTS_GPU_MMDIT_CASE_H
#define SQ_TESTS_GPU_MMDIT_CASE_H

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/quant.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include "tests/test_util.h"

typedef struct {
    sd_mmdit m;
    sq_safetensors *io;
    sq_tensor in[3];          // hidden_states, encoder_hidden_states, pooled_projections (bf16)
    const float *timestep;    // B values, in io
    sq_tensor out;            // the output, like in[0]
    sq_arena a;               // the forward's scratch, 16 MiB
} tu_mmdit_case;

static inline void tu_mmdit_case_load(tu_mmdit_case *c, const char *name) {
    char model_path[1024], io_path[1024];
    snprintf(model_path, sizeof model_path, "%s/mmdit/%s/transformer", tu_fixtures_dir(), name);
    snprintf(io_path, sizeof io_path, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), name);
    SQ_CHECK(sq_st_open(&c->io, io_path) == SQ_OK, "%s", sq_error_message());
    SQ_CHECK(sd_mmdit_load(&c->m, model_path, SQ_CUDA, SQ_BF16) == SQ_OK && sd_mmdit_quantize(&c->m, 32, NULL) == SQ_OK,
             "%s", sq_error_message());
    const char *names[3] = {"hidden_states", "encoder_hidden_states", "pooled_projections"};
    for (int i = 0; i < 3; i++) {
        const sq_st_entry *e = sq_st_find(c->io, names[i]);
        SQ_CHECK(sq_tensor_alloc(&c->in[i], SQ_BF16, SQ_CUDA, e->ndim, e->shape) == SQ_OK &&
                     sq_st_load(c->io, names[i], &c->in[i]) == SQ_OK,
                 "load %s", names[i]);
    }
    c->timestep = sq_st_find(c->io, "timestep")->data;
    SQ_CHECK(sq_tensor_alloc(&c->out, SQ_BF16, SQ_CUDA, 4, c->in[0].shape) == SQ_OK &&
                 sq_arena_init(&c->a, SQ_CUDA, 16 << 20) == SQ_OK,
             "%s", sq_error_message());
}

// A QZO update (seed 6, step 1, coefficient 0.05) of every int4 q, k, v, out and MLP
// layer of every block: the scales move between passes.
static inline void tu_mmdit_case_update(tu_mmdit_case *c) {
    sq_perturb u = {.seed = 6, .step = 1, .sign = +1, .relative = 1};
    for (int b = 0; b < c->m.cfg.num_layers; b++) {
        sd_mmdit_block *bl = &c->m.blocks[b];
        sq_linear *ls[] = {&bl->to_q, &bl->to_k, &bl->to_v, &bl->to_out, &bl->ff1, &bl->ff2};
        for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) {
            u.index_base = ls[k]->index_base;
            if (sq_linear_quantized(ls[k])) sq_qzo_update(&ls[k]->scales, &u, 0.05f);
        }
    }
}

// One forward of c's model on `in` (three tensors like c->in) into c->out, poisoned
// first; returns the output on the host (bf16 -> f32 is exact: its bytes compare the
// bits; the caller frees it).
static inline float *tu_mmdit_case_forward(tu_mmdit_case *c, const sq_tensor *in, const float *timestep,
                                           const sq_perturb *p) {
    sq_tensor *out = &c->out;
    int64_t n = sq_tensor_numel(out);
    float *host = malloc((size_t)n * sizeof(float));
    SQ_CHECK(host != NULL, "out of host memory");
    tu_poison(host, n);
    SQ_CHECK(sq_tensor_from_host_f32(out, host) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(sd_mmdit_forward(&c->m, &c->a, &in[0], timestep, &in[1], &in[2], p, out, NULL) == SQ_OK, "%s",
             sq_error_message());
    SQ_CHECK(sq_tensor_to_host_f32(host, out) == SQ_OK, "%s", sq_error_message());
    return host;
}

static inline void tu_mmdit_case_free(tu_mmdit_case *c) {
    sq_arena_free(&c->a);
    sq_tensor_free(&c->out);
    for (int i = 0; i < 3; i++) sq_tensor_free(&c->in[i]);
    sd_mmdit_free(&c->m);
    sq_st_close(c->io);
}

#endif
