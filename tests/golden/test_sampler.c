// tests/golden/test_sampler.c: samples/ against diffusers' StableDiffusion3Pipeline
// on the tiny pipeline (fixtures of tools/make_sampler_fixtures.py), fp32 CPU:
// - the latents after every step (≤ 1e-4 relative) and the final output_type="np"
//   image (≤ 1e-3 as issue 9 asks; the measured error is printed), with CFG
//   (guidance 4.5, batch 2, 32x16, negative conditioning broadcast from one row)
//   and without (guidance 1.0, as Turbo);
// - the schedule (σ and the timesteps given to the model) against the scheduler's
//   set_timesteps for static shifts 1 / 3 / 5.5, 1 / 4 / 28 steps, dynamic shifting
//   (exponential and linear) and shift_terminal;
// - seeded initial latents: an image depends on its own seed only, not the batch;
// - bad sizes, steps and missing negative conditioning are refused with messages.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "mmdit/model.h"
#include "samples/sampler.h"
#include "samples/scheduler.h"
#include "tests/test_util.h"
#include "vae/model.h"

static sq_safetensors *g_io;

static sq_tensor load_io(const char *name) {
    const sq_st_entry *e = sq_st_find(g_io, name);
    SQ_CHECK(e != NULL, "fixture lacks %s", name);
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK, "alloc");
    SQ_CHECK(sq_st_load(g_io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

typedef struct {
    const char *cas;
    int steps_seen;
    double worst;
} step_check;

static int on_step(void *ctx, int step, int steps, float timestep, const sq_tensor *lat) {
    step_check *sc = ctx;
    char key[64];
    snprintf(key, sizeof key, "%s.step%d", sc->cas, step);
    sq_tensor ref = load_io(key);
    int64_t n = sq_tensor_numel(&ref);
    TU_CHECK(n == sq_tensor_numel(lat), "%s: latent size", key);
    float *got = malloc(sizeof(float) * (size_t)n);
    sq_tensor_to_host_f32(got, lat);
    double e = tu_rel_err(got, ref.data, n);
    printf("    step %d/%d (t = %8.3f) latents rel err %.2e\n", step + 1, steps, timestep, e);
    TU_CHECK(e <= 1e-4, "%s: relative error %.3g", key, e);
    if (e > sc->worst) sc->worst = e;
    sc->steps_seen++;
    free(got);
    sq_tensor_free(&ref);
    return SQ_OK;
}

static void run_case(const sd_mmdit *m, const sd_vae *v, const sd_flow_scheduler *sch, const char *cas, float g,
                     int W, int H, int steps) {
    char k[64];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", cas, s), k)
    sq_tensor init = load_io(KEY("init")), ctx = load_io(KEY("context")), pooled = load_io(KEY("pooled"));
    sq_tensor nctx = load_io(KEY("neg_context")), npooled = load_io(KEY("neg_pooled"));
    sq_tensor ref_img = load_io(KEY("image")), ref_sig = load_io(KEY("sigmas")), ref_ts = load_io(KEY("timesteps"));
    int B = (int)init.shape[0];
    printf("%s: guidance %.1f, batch %d, %dx%d, %d steps\n", cas, g, B, W, H, steps);

    // the schedule the pipeline ran with
    float sig[64], ts[64];
    sd_scheduler_sigmas(sch, steps, 0, sig, ts);
    TU_CHECK(tu_rel_err(sig, ref_sig.data, steps + 1) <= 1e-7 && tu_rel_err(ts, ref_ts.data, steps) <= 1e-7,
             "%s: schedule differs from the pipeline's", cas);

    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 64 << 20);
    step_check sc = {.cas = cas};
    sd_sample_options o = {.batch = B, .steps = steps, .guidance = g, .width = W, .height = H,
                           .init_latents = init.data, .on_step = on_step, .on_step_ctx = &sc};
    sd_sample_cond cond = {&ctx, &pooled}, uncond = {&nctx, &npooled};
    int64_t n_img = sq_tensor_numel(&ref_img);
    float *img = malloc(sizeof(float) * (size_t)n_img);
    tu_poison(img, n_img);
    int rc = sd_sample(m, v, sch, &a, &a, &cond, &uncond, &o, img);
    TU_CHECK(rc == SQ_OK, "%s: sd_sample: %s", cas, sq_error_message());
    TU_CHECK(sc.steps_seen == steps, "%s: callback ran %d times for %d steps", cas, sc.steps_seen, steps);
    double e = tu_rel_err(img, ref_img.data, n_img), maxabs = 0;
    for (int64_t i = 0; i < n_img; i++) maxabs = fmax(maxabs, fabs((double)img[i] - ((float *)ref_img.data)[i]));
    printf("  final image (B,3,H,W) in [0,1] vs diffusers output_type=\"np\": max abs err %.2e, rel err %.2e "
           "(worst step latents %.2e)\n", maxabs, e, sc.worst);
    TU_CHECK(e <= 1e-3, "%s: image relative error %.3g > 1e-3", cas, e);
    size_t est = sd_sample_scratch_bytes(&m->cfg, &v->cfg, B, g > 1, W, H, sd_vae_factor(&v->cfg),
                                         (int)ctx.shape[1], 4);
    printf("  scratch arena high-water mark: %.2f MiB (estimate %.2f MiB)\n", a.high_water / 1048576.0,
           est / 1048576.0);
    TU_CHECK(a.high_water <= est, "%s: scratch estimate %zu below the high-water mark %zu", cas, est, a.high_water);

    // the same run without CFG must differ (the test can tell CFG from no CFG)
    if (g > 1) {
        float *img2 = malloc(sizeof(float) * (size_t)n_img);
        sd_sample_options o2 = o;
        o2.guidance = 1.0f;
        o2.on_step = NULL;
        TU_CHECK(sd_sample(m, v, sch, &a, &a, &cond, NULL, &o2, img2) == SQ_OK, "no-CFG run: %s", sq_error_message());
        TU_CHECK(tu_rel_err(img2, ref_img.data, n_img) > 1e-2, "%s: guidance made no difference", cas);
        free(img2);
    }
    free(img);
    sq_arena_free(&a);
    sq_tensor *all[] = {&init, &ctx, &pooled, &nctx, &npooled, &ref_img, &ref_sig, &ref_ts};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sq_tensor_free(all[i]);
#undef KEY
}

// Same list as SCHEDULES in tools/make_sampler_fixtures.py.
static const struct {
    double shift;
    bool dynamic;
    int steps, seq_len;
    double terminal;
    bool linear;
} SCHED[] = {
    {3.0, false, 28, 4096, 0, false}, {3.0, false, 4, 4096, 0, false}, {3.0, false, 1, 4096, 0, false},
    {1.0, false, 10, 4096, 0, false}, {5.5, false, 7, 4096, 0, false}, {1.0, true, 20, 4096, 0, false},
    {1.0, true, 9, 1024, 0, true},    {3.0, false, 12, 4096, 0.1, false},
};

static void test_schedules(void) {
    double worst = 0;
    for (size_t j = 0; j < sizeof SCHED / sizeof SCHED[0]; j++) {
        sd_flow_scheduler s;
        sd_scheduler_default(&s);
        s.shift = SCHED[j].shift;
        s.use_dynamic_shifting = SCHED[j].dynamic;
        s.shift_terminal = SCHED[j].terminal;
        s.time_shift_linear = SCHED[j].linear;
        int n = SCHED[j].steps;
        float sig[64], ts[64];
        tu_poison(sig, 64);
        tu_poison(ts, 64);
        TU_CHECK(sd_scheduler_sigmas(&s, n, SCHED[j].seq_len, sig, ts) == SQ_OK, "schedule %zu", j);
        char k[32];
        snprintf(k, sizeof k, "sched%zu.sigmas", j);
        sq_tensor rs = load_io(k);
        snprintf(k, sizeof k, "sched%zu.timesteps", j);
        sq_tensor rt = load_io(k);
        TU_CHECK(rs.shape[0] == n + 1 && rt.shape[0] == n, "schedule %zu: fixture length", j);
        double maxd = 0;
        for (int i = 0; i <= n; i++) maxd = fmax(maxd, fabs((double)sig[i] - ((float *)rs.data)[i]));
        for (int i = 0; i < n; i++) maxd = fmax(maxd, fabs((double)ts[i] - ((float *)rt.data)[i]) / 1000.0);
        printf("  schedule shift %.1f%s%s, %2d steps: max |Δσ| (and |Δt|/1000) %.2e%s\n", SCHED[j].shift,
               SCHED[j].dynamic ? (SCHED[j].linear ? " dynamic-linear" : " dynamic") : "",
               SCHED[j].terminal > 0 ? " terminal 0.1" : "", n, maxd, maxd == 0 ? " (bit-exact)" : "");
        TU_CHECK(maxd <= 1e-6, "schedule %zu differs by %.3g", j, maxd);
        if (maxd > worst) worst = maxd;
        sq_tensor_free(&rs);
        sq_tensor_free(&rt);
    }
    printf("schedules: worst difference %.2e\n", worst);
}

static void test_seeds_and_errors(const sd_mmdit *m, const sd_flow_scheduler *sch) {
    // an image depends on its own seed: image 1 of (seed 7, batch 2) == image 0 of (seed 8, batch 1)
    const int C = 16, h = 4, w = 4, n = C * h * w;
    float b2[2 * 16 * 16], b1[16 * 16];
    sd_sample_noise(7, 2, C, h, w, b2);
    sd_sample_noise(8, 1, C, h, w, b1);
    TU_CHECK(memcmp(b2 + n, b1, sizeof(float) * n) == 0, "noise of image 1 depends on the batch");
    TU_CHECK(memcmp(b2, b1, sizeof(float) * n) != 0, "seeds 7 and 8 gave the same noise");
    // standard normal statistics over a larger draw
    static float big[16 * 64 * 64];
    sd_sample_noise(123, 1, 16, 64, 64, big);
    double s = 0, s2 = 0;
    for (int i = 0; i < 16 * 64 * 64; i++) { s += big[i]; s2 += (double)big[i] * big[i]; }
    double mean = s / (16 * 64 * 64), var = s2 / (16 * 64 * 64) - mean * mean;
    printf("seeded latents: mean %.4f, variance %.4f over %d draws\n", mean, var, 16 * 64 * 64);
    TU_CHECK(fabs(mean) < 0.02 && fabs(var - 1) < 0.03, "noise is not standard normal (mean %g var %g)", mean, var);

    // the seed path equals passing the same noise as initial latents
    sq_tensor ctx = load_io("cfg.context"), pooled = load_io("cfg.pooled");
    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 64 << 20);
    sd_sample_cond cond = {&ctx, &pooled};
    float noise[2 * 16 * 8 * 8], l1[2 * 16 * 8 * 8], l2[2 * 16 * 8 * 8];
    sd_sample_noise(42, 2, 16, 8, 8, noise);
    sd_sample_options o = {.batch = 2, .steps = 2, .guidance = 1.0f, .width = 16, .height = 16, .vae_factor = 2,
                           .seed = 42};
    tu_poison(l1, 2 * 16 * 8 * 8);
    tu_poison(l2, 2 * 16 * 8 * 8);
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l1) == SQ_OK, "seeded: %s", sq_error_message());
    o.init_latents = noise;
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l2) == SQ_OK, "init: %s", sq_error_message());
    TU_CHECK(memcmp(l1, l2, sizeof l1) == 0, "seeded run differs from the same noise given as initial latents");
    TU_CHECK(a.used == 0, "sampler did not rewind its arena");

    // refusals
    o.width = 18;
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l1) == SQ_FAIL &&
                 strstr(sq_error_message(), "not a positive multiple of 4"), "bad width: %s", sq_error_message());
    printf("bad width: %s\n", sq_error_message());
    o.width = 16;
    o.steps = 0;
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l1) == SQ_FAIL && strstr(sq_error_message(), "steps"),
             "zero steps: %s", sq_error_message());
    o.steps = 2;
    o.guidance = 4.5f;
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l1) == SQ_FAIL && strstr(sq_error_message(), "negative"),
             "CFG without negative conditioning: %s", sq_error_message());
    printf("CFG without uncond: %s\n", sq_error_message());
    o.guidance = 1.0f;
    o.batch = 3;   // context has 2 rows
    TU_CHECK(sd_sample_latents(m, sch, &a, &cond, NULL, &o, l1) == SQ_FAIL && strstr(sq_error_message(), "batch of 3"),
             "batch mismatch: %s", sq_error_message());
    sq_arena_free(&a);
    sq_tensor_free(&ctx);
    sq_tensor_free(&pooled);
}

static void test_rgb8(void) {
    float img[3 * 1 * 2] = {0.0f, 1.0f, 0.5f, NAN, 0.2f, 0.999f};   // (1,3,1,2)
    uint8_t rgb[6];
    sd_images_to_rgb8(img, 1, 1, 2, rgb);
    // pixel 0 = (R,G,B) = (0, 0.5, 0.2); pixel 1 = (1, NaN, 0.999); round half to even: 127.5 -> 128
    const uint8_t want[6] = {0, 128, 51, 255, 0, 255};
    TU_CHECK(memcmp(rgb, want, 6) == 0, "rgb8: %d %d %d %d %d %d", rgb[0], rgb[1], rgb[2], rgb[3], rgb[4], rgb[5]);
}

int main(void) {
    char p[1024];
    snprintf(p, sizeof p, "%s/sampler/tiny.safetensors", tu_fixtures_dir());
    if (sq_st_open(&g_io, p) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    snprintf(p, sizeof p, "%s/pipeline/tiny", tu_fixtures_dir());
    sd_mmdit m;
    sd_vae v;
    sd_flow_scheduler sch;
    if (sd_mmdit_load(&m, p, SQ_CPU, SQ_F32) != SQ_OK || sd_vae_load(&v, p, SQ_CPU, SQ_F32) != SQ_OK ||
        sd_scheduler_load(&sch, p) != SQ_OK) {
        fprintf(stderr, "%s\n", sq_error_message());
        return 1;
    }
    TU_CHECK(sch.shift == 3.0 && !sch.use_dynamic_shifting && sch.num_train_timesteps == 1000, "scheduler config");
    run_case(&m, &v, &sch, "cfg", 4.5f, 32, 16, 5);
    run_case(&m, &v, &sch, "nocfg", 1.0f, 16, 16, 4);
    test_schedules();
    test_seeds_and_errors(&m, &sch);
    test_rgb8();
    sd_mmdit_free(&m);
    sd_vae_free(&v);
    sq_st_close(g_io);
    return tu_finish("test_sampler");
}
