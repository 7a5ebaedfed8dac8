// tests/gpu/test_gpu_mmdit.c: the MMDiT forward pass on CUDA (bf16 weights and
// activations) against the diffusers golden fixtures, relative error ≤ 2e-2, for
// every fixture configuration; plus the quantised model's + and - passes: the same
// inputs and perturbation give bit-identical losses on repeat (no atomics or
// algorithm changes between passes), and so do their masked losses (sq_weighted_mse
// with the left half of the latent weighted 1, the right half 0.25). Skips (exit 77)
// without a GPU.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include <math.h>
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

static sq_tensor to_device(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    SQ_CHECK(e != NULL, "fixture lacks %s", name);
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_BF16, SQ_CUDA, e->ndim, e->shape) == SQ_OK, "alloc");
    SQ_CHECK(sq_st_load(io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

static void run_case(const char *cas, const char *sub) {
    char io_path[1024], model_path[1024];
    snprintf(io_path, sizeof io_path, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), cas);
    snprintf(model_path, sizeof model_path, "%s/mmdit/%s/%s", tu_fixtures_dir(), cas, sub);
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    sd_mmdit m;
    if (sd_mmdit_load(&m, model_path, SQ_CUDA, SQ_BF16) != SQ_OK) {
        TU_CHECK(0, "load: %s", sq_error_message());
        return;
    }
    sq_tensor x = to_device(io, "hidden_states"), ctx = to_device(io, "encoder_hidden_states");
    sq_tensor pooled = to_device(io, "pooled_projections");
    const sq_st_entry *te = sq_st_find(io, "timestep");
    const sq_st_entry *oe = sq_st_find(io, "output");
    int64_t n = sq_shape_numel(oe->ndim, oe->shape);
    float *ref = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    sq_convert_to_f32(ref, oe->data, oe->dtype, n);
    sq_tensor out;
    sq_tensor_alloc(&out, SQ_BF16, SQ_CUDA, 4, x.shape);
    tu_poison(got, n);
    sq_tensor_from_host_f32(&out, got);
    sq_arena arena;
    SQ_CHECK(sq_arena_init(&arena, SQ_CUDA, 64 << 20) == SQ_OK, "%s", sq_error_message());
    int rc = sd_mmdit_forward(&m, &arena, &x, te->data, &ctx, &pooled, NULL, &out, NULL);
    TU_CHECK(rc == SQ_OK, "forward: %s", sq_error_message());
    sq_tensor_to_host_f32(got, &out);
    double e = tu_rel_err(got, ref, n);
    printf("%-14s %-18s CUDA bf16 vs diffusers fp32: rel err %.2e (arena high-water %.2f MiB)\n", cas, sub, e,
           arena.high_water / 1048576.0);
    TU_CHECK(e <= 2e-2, "%s: relative error %.3g > 2e-2", cas, e);
    free(ref); free(got);
    sq_arena_free(&arena);
    sq_tensor_free(&x); sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&out);
    sd_mmdit_free(&m);
    sq_st_close(io);
}

// The int4 model on CUDA: the + and - passes of one QZO step, each run twice, give
// bit-identical losses (fixed kernels, no atomics), and agree with the CPU's losses.
static void test_quantized_passes(void) {
    char model_path[1024], io_path[1024];
    snprintf(model_path, sizeof model_path, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    snprintf(io_path, sizeof io_path, "%s/mmdit/large_like/io.safetensors", tu_fixtures_dir());
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    double losses[2][2], masked[2][2];
    for (int dev = 0; dev < 2; dev++) {
        sq_device d = dev ? SQ_CUDA : SQ_CPU;
        sq_dtype dt = dev ? SQ_BF16 : SQ_F32;
        sd_mmdit m;
        SQ_CHECK(sd_mmdit_load(&m, model_path, d, dt) == SQ_OK && sd_mmdit_quantize(&m, 32, NULL) == SQ_OK, "%s", sq_error_message());
        const char *names[3] = {"hidden_states", "encoder_hidden_states", "pooled_projections"};
        sq_tensor t[3];
        for (int i = 0; i < 3; i++) {
            const sq_st_entry *e = sq_st_find(io, names[i]);
            SQ_CHECK(sq_tensor_alloc(&t[i], dt, d, e->ndim, e->shape) == SQ_OK && sq_st_load(io, names[i], &t[i]) == SQ_OK, "load");
        }
        const float *ts = sq_st_find(io, "timestep")->data;
        sq_tensor out, target;
        sq_tensor_alloc(&out, dt, d, 4, t[0].shape);
        sq_tensor_alloc(&target, dt, d, 4, t[0].shape);
        sq_scale(&target, &t[0], -0.5f, 0.25f);
        int64_t H = t[0].shape[2], W = t[0].shape[3], P = H * W;
        sq_tensor w;
        float *wh = malloc((size_t)P * sizeof(float));
        for (int64_t q = 0; q < P; q++) wh[q] = (q % W) < W / 2 ? 1.0f : 0.25f;
        SQ_CHECK(sq_tensor_alloc(&w, SQ_F32, d, 2, SQ_SHAPE(H, W)) == SQ_OK && sq_tensor_from_host_f32(&w, wh) == SQ_OK, "%s",
                 sq_error_message());
        free(wh);
        sq_tensor out1 = sq_tensor_view(out.data, dt, d, 3, &t[0].shape[1]), target1 = sq_tensor_view(target.data, dt, d, 3, &t[0].shape[1]);
        sq_arena a;
        SQ_CHECK(sq_arena_init(&a, d, 16 << 20) == SQ_OK, "%s", sq_error_message());
        for (int s = 0; s < 2; s++) {
            sq_perturb p = {.seed = 5, .step = 9, .eps = 1e-3f, .sign = s ? -1 : +1};
            double l[2], lm[2];
            for (int rep = 0; rep < 2; rep++) {
                TU_CHECK(sd_mmdit_forward(&m, &a, &t[0], ts, &t[1], &t[2], &p, &out, NULL) == SQ_OK, "%s", sq_error_message());
                l[rep] = sq_mse(&out, &target);
                lm[rep] = sq_weighted_mse(&out1, &target1, &w);   // the batch is one sample
            }
            TU_CHECK(l[0] == l[1], "%s %c pass not reproducible: %.17g vs %.17g", dev ? "CUDA" : "CPU", s ? '-' : '+', l[0], l[1]);
            TU_CHECK(lm[0] == lm[1] && fabs(lm[0] - l[0]) > 1e-6 * l[0], "%s %c masked loss: %.17g, repeat %.17g, unmasked %.17g",
                     dev ? "CUDA" : "CPU", s ? '-' : '+', lm[0], lm[1], l[0]);
            losses[dev][s] = l[0];
            masked[dev][s] = lm[0];
        }
        sq_arena_free(&a);
        for (int i = 0; i < 3; i++) sq_tensor_free(&t[i]);
        sq_tensor_free(&out);
        sq_tensor_free(&target);
        sq_tensor_free(&w);
        sd_mmdit_free(&m);
    }
    printf("int4 QZO passes: CPU L+ %.6f L- %.6f | CUDA L+ %.6f L- %.6f (each bit-identical on repeat)\n", losses[0][0],
           losses[0][1], losses[1][0], losses[1][1]);
    printf("masked: CPU L+ %.6f L- %.6f | CUDA L+ %.6f L- %.6f (each bit-identical on repeat)\n", masked[0][0], masked[0][1],
           masked[1][0], masked[1][1]);
    for (int s = 0; s < 2; s++) {
        TU_CHECK(fabs(losses[1][s] - losses[0][s]) <= 2e-2 * losses[0][s], "CUDA loss %g vs CPU %g", losses[1][s], losses[0][s]);
        TU_CHECK(fabs(masked[1][s] - masked[0][s]) <= 2e-2 * masked[0][s], "CUDA masked loss %g vs CPU %g", masked[1][s],
                 masked[0][s]);
    }
    sq_st_close(io);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    run_case("large_like", "transformer");
    run_case("large_like", "single_file.safetensors");
    run_case("medium_like", "transformer");
    run_case("nonsquare_b2", "transformer");
    test_quantized_passes();
    return tu_finish("test_gpu_mmdit");
}
