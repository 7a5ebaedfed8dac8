// tests/gpu/test_gpu_sampler.c: the sampler on CUDA against the CPU reference, on
// the tiny pipeline and the diffusers fixtures of tools/make_sampler_fixtures.py
// (which the CPU sampler matches to ~4e-6): CFG (guidance 4.5, batch 2) and no CFG.
//   MMDiT f32 on CUDA: image and final latents within 1e-3 of the CPU run (only the
//   summation order differs, amplified by 5 guided steps);
//   MMDiT bf16 on CUDA (how sd-qzo samples): image within 2e-2 (the error is printed).
// The VAE runs f32 on CUDA in both (how `sd-qzo sample` runs the frozen VAE).
// Also: the seeded initial latents drawn for CUDA equal the CPU's (same Philox
// draw), so a seed gives the same start on both. Skips (exit 77) without a GPU.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "mmdit/model.h"
#include "samples/sampler.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"
#include "vae/model.h"

static sq_safetensors *g_io;

static sq_tensor load(const char *name, sq_device dev, sq_dtype dt) {
    const sq_st_entry *e = sq_st_find(g_io, name);
    SQ_CHECK(e != NULL, "fixture lacks %s", name);
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, dt, dev, e->ndim, e->shape) == SQ_OK, "alloc: %s", sq_error_message());
    SQ_CHECK(sq_st_load(g_io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

// One run of a fixture case on a device; image and final latents to host.
static void run(const char *pipe, const char *cas, float g, int W, int H, int steps, sq_device dev, sq_dtype dt,
                float *img, float *lat) {
    char k[64];
    sd_mmdit m;
    sd_vae v;
    SQ_CHECK(sd_mmdit_load(&m, pipe, dev, dt) == SQ_OK, "%s", sq_error_message());
    SQ_CHECK(sd_vae_load(&v, pipe, dev, SQ_F32) == SQ_OK, "%s", sq_error_message());
    sd_flow_scheduler sch;
    SQ_CHECK(sd_scheduler_load(&sch, pipe) == SQ_OK, "%s", sq_error_message());
    snprintf(k, sizeof k, "%s.context", cas);
    sq_tensor ctx = load(k, dev, dt);
    snprintf(k, sizeof k, "%s.pooled", cas);
    sq_tensor pooled = load(k, dev, dt);
    snprintf(k, sizeof k, "%s.neg_context", cas);
    sq_tensor nctx = load(k, dev, dt);
    snprintf(k, sizeof k, "%s.neg_pooled", cas);
    sq_tensor npooled = load(k, dev, dt);
    snprintf(k, sizeof k, "%s.init", cas);
    sq_tensor init = load(k, SQ_CPU, SQ_F32);
    int B = (int)init.shape[0];
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, dev, 64 << 20) == SQ_OK, "%s", sq_error_message());
    sd_sample_options o = {.batch = B, .steps = steps, .guidance = g, .width = W, .height = H,
                           .vae_factor = sd_vae_factor(&v.cfg), .init_latents = init.data};
    sd_sample_cond cond = {&ctx, &pooled}, uncond = {&nctx, &npooled};
    TU_CHECK(sd_sample_latents(&m, &sch, &a, &cond, &uncond, &o, lat) == SQ_OK, "%s: %s", cas, sq_error_message());
    TU_CHECK(sd_decode_latents(&v, &a, lat, B, (int)init.shape[1], (int)init.shape[2], (int)init.shape[3], img) == SQ_OK,
             "%s decode: %s", cas, sq_error_message());
    sq_arena_free(&a);
    sq_tensor *all[] = {&ctx, &pooled, &nctx, &npooled, &init};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sq_tensor_free(all[i]);
    sd_vae_free(&v);
    sd_mmdit_free(&m);
}

static void compare_case(const char *pipe, const char *cas, float g, int W, int H, int steps) {
    char k[64];
    snprintf(k, sizeof k, "%s.init", cas);
    const sq_st_entry *ie = sq_st_find(g_io, k);
    int64_t n_lat = sq_shape_numel(ie->ndim, ie->shape), n_img = ie->shape[0] * 3 * H * W;
    float *ci = malloc(sizeof(float) * n_img), *cl = malloc(sizeof(float) * n_lat);
    float *gi = malloc(sizeof(float) * n_img), *gl = malloc(sizeof(float) * n_lat);
    tu_poison(ci, n_img);
    tu_poison(cl, n_lat);
    run(pipe, cas, g, W, H, steps, SQ_CPU, SQ_F32, ci, cl);
    for (int r = 0; r < 2; r++) {
        sq_dtype dt = r ? SQ_BF16 : SQ_F32;
        tu_poison(gi, n_img);
        tu_poison(gl, n_lat);
        run(pipe, cas, g, W, H, steps, SQ_CUDA, dt, gi, gl);
        double ei = tu_rel_err(gi, ci, n_img), el = tu_rel_err(gl, cl, n_lat);
        double tol = dt == SQ_F32 ? 1e-3 : 2e-2;
        printf("  %-5s MMDiT %s on CUDA vs CPU: image rel err %.2e, final latents rel err %.2e\n", cas,
               sq_dtype_name(dt), ei, el);
        TU_CHECK(ei <= tol, "%s %s: image relative error %.3g > %g", cas, sq_dtype_name(dt), ei, tol);
        if (dt == SQ_F32) TU_CHECK(el <= tol, "%s f32: latent relative error %.3g > %g", cas, el, tol);
    }
    free(ci); free(cl); free(gi); free(gl);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    char p[1024], pipe[1024];
    snprintf(p, sizeof p, "%s/sampler/tiny.safetensors", tu_fixtures_dir());
    snprintf(pipe, sizeof pipe, "%s/pipeline/tiny", tu_fixtures_dir());
    if (sq_st_open(&g_io, p) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    compare_case(pipe, "cfg", 4.5f, 32, 16, 5);
    compare_case(pipe, "nocfg", 1.0f, 16, 16, 4);

    // seeded start: drawn on the host for both devices, so identical by construction;
    // check the device run with the seed equals the device run given that noise
    sd_mmdit m;
    SQ_CHECK(sd_mmdit_load(&m, pipe, SQ_CUDA, SQ_BF16) == SQ_OK, "%s", sq_error_message());
    sd_flow_scheduler sch;
    sd_scheduler_load(&sch, pipe);
    sq_tensor ctx = load("cfg.context", SQ_CUDA, SQ_BF16), pooled = load("cfg.pooled", SQ_CUDA, SQ_BF16);
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CUDA, 64 << 20) == SQ_OK, "%s", sq_error_message());
    static float noise[2 * 16 * 8 * 8], l1[2 * 16 * 8 * 8], l2[2 * 16 * 8 * 8];
    sd_sample_noise(5, 2, 16, 8, 8, noise);
    sd_sample_cond cond = {&ctx, &pooled};
    sd_sample_options o = {.batch = 2, .steps = 3, .guidance = 1.0f, .width = 16, .height = 16, .vae_factor = 2, .seed = 5};
    TU_CHECK(sd_sample_latents(&m, &sch, &a, &cond, NULL, &o, l1) == SQ_OK, "seeded: %s", sq_error_message());
    o.init_latents = noise;
    TU_CHECK(sd_sample_latents(&m, &sch, &a, &cond, NULL, &o, l2) == SQ_OK, "init: %s", sq_error_message());
    TU_CHECK(memcmp(l1, l2, sizeof l1) == 0, "CUDA: seeded run differs from the same noise given as latents "
                                              "(or the run is not deterministic)");
    sq_arena_free(&a);
    sq_tensor_free(&ctx);
    sq_tensor_free(&pooled);
    sd_mmdit_free(&m);
    sq_st_close(g_io);
    return tu_finish("test_gpu_sampler");
}
