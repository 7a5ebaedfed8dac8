// app/cmd_bench.c: `sd-qzo bench`: speed and memory of the real SD3.5 shapes with
// synthetic weights (no checkpoint download needed): MMDiT forward passes, full QZO
// steps (two perturbed int4 forwards + the scale update), and VAE encode/decode.
// Times are wall-clock around device-synchronised regions after warm-up; prints
// median/min/max, achieved TFLOP/s and peak memory, and writes JSON with --json.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "app/flow_loss.h"
#include "app/qzo.h"
#include "core/error.h"
#include "core/progress.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "mmdit/quantize.h"
#include "vae/model.h"

typedef struct {
    const char *config, *what, *device, *json;
    int resolution, batch, steps, warmup, group, context_tokens;
    size_t arena_mb;
} bench_args;

static void usage(FILE *f) {
    fprintf(f, "usage: sd-qzo bench [--config large|large-turbo|medium] [--resolution 1024] [--batch 1]\n"
               "                    [--steps 5] [--warmup 2] [--group-size 64] [--what mmdit|vae|all]\n"
               "                    [--device auto|cpu|cuda] [--arena-mb N] [--json FILE]\n\n"
               "Builds the model with synthetic weights (int4 joint blocks at the group size) on the device and\n"
               "times MMDiT forward passes, QZO steps (2 forwards + update), and VAE encode/decode.\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double median, min, max;
} stats;

static stats summarise(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    stats s = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], t[n - 1]};
    return s;
}

// FLOPs of one MMDiT forward: linear layers per token, attention 4·L²·d per layer.
static double mmdit_flops(const sd_mmdit_config *c, int64_t B, int64_t N, int64_t T) {
    double D = c->hidden, f = 0, L = (double)(N + T);
    for (int i = 0; i < c->num_layers; i++) {
        bool last = i == c->num_layers - 1;
        f += 2.0 * (4 * D * D + 8 * D * D) * N;                          // image q,k,v,out + MLP
        f += 2.0 * ((last ? 3 : 4) * D * D + (last ? 0 : 8 * D * D)) * T; // context stream
        f += 4.0 * L * L * D;                                            // joint attention
        if (c->dual[i]) f += 2.0 * 4 * D * D * N + 4.0 * (double)N * N * D;
    }
    f += 2.0 * D * c->joint_attention_dim * T + 2.0 * D * c->patch_size * c->patch_size * c->out_channels * N;
    return f * (double)B;
}

static void fill_random(sq_tensor *t, uint64_t seed) {
    int64_t n = sq_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        seed ^= seed >> 12; seed ^= seed << 25; seed ^= seed >> 27;
        h[i] = (float)((seed * 2685821657736338717ull) >> 40) / 16777216.0f * 2.0f - 1.0f;
    }
    sq_tensor_from_host_f32(t, h);
    free(h);
}

static double used_gib(sq_device dev) {
    size_t fr = 0, tot = 0;
    if (dev != SQ_CUDA || sq_cuda_mem_info(&fr, &tot) != SQ_OK) return 0;
    return (double)(tot - fr) / (1024.0 * 1024.0 * 1024.0);
}

static int bench_mmdit(const bench_args *a, sq_device dev, FILE *json) {
    sd_mmdit_config cfg;
    sd_mmdit_config_preset(&cfg, !strcmp(a->config, "medium") ? SD_MMDIT_MEDIUM : SD_MMDIT_LARGE);
    sq_dtype dt = dev == SQ_CUDA ? SQ_BF16 : SQ_F32;
    double base_gib = used_gib(dev);
    double t0 = sq_time_now();
    sd_mmdit m;
    if (sd_mmdit_init_synthetic(&m, &cfg, dev, dt, a->group, 1234) != SQ_OK) return sq_error_context("bench: building the model");
    double weights_gib = used_gib(dev) - base_gib;
    int64_t scales = sd_mmdit_assign_scale_indices(&m);
    printf("model: SD3.5 %s, synthetic int4 (group %d), %lld trainable scales, built in %.1f s, weights %.2f GiB\n",
           a->config, a->group, (long long)scales, sq_time_now() - t0, weights_gib);
    int64_t B = a->batch, R = a->resolution, h = R / 8, T = a->context_tokens;
    int64_t N = (h / cfg.patch_size) * (h / cfg.patch_size);
    sq_arena arena;
    if (sq_arena_init(&arena, dev, a->arena_mb << 20) != SQ_OK) { sd_mmdit_free(&m); return SQ_FAIL; }
    sq_tensor x0, noise, ctx, pooled;
    if (sq_tensor_alloc(&x0, dt, dev, 4, (int64_t[]){B, 16, h, h}) || sq_tensor_alloc(&noise, dt, dev, 4, (int64_t[]){B, 16, h, h}) ||
        sq_tensor_alloc(&ctx, dt, dev, 3, (int64_t[]){B, T, cfg.joint_attention_dim}) ||
        sq_tensor_alloc(&pooled, dt, dev, 2, (int64_t[]){B, cfg.pooled_projection_dim}))
        return SQ_FAIL;
    fill_random(&x0, 1); fill_random(&noise, 2); fill_random(&ctx, 3); fill_random(&pooled, 4);
    float *sigmas = malloc((size_t)B * sizeof(float));
    for (int64_t b = 0; b < B; b++) sigmas[b] = 0.3f + 0.4f * (float)b / (float)(B > 1 ? B - 1 : 1);
    sd_flow_batch fb;
    if (sd_flow_batch_init(&fb, &m, &arena, &x0, &noise, sigmas, &ctx, &pooled) != SQ_OK) return SQ_FAIL;
    // QZO parameters
    int nl = sd_mmdit_qlayers(&m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)nl, sizeof *ls);
    sd_mmdit_qlayers(&m, ls, nl);
    sq_tensor **sp = calloc((size_t)nl, sizeof *sp);
    uint64_t *bases = calloc((size_t)nl, sizeof *bases);
    int nq = 0;
    for (int i = 0; i < nl; i++)
        if (sq_linear_quantized(ls[i].linear)) { sp[nq] = &ls[i].linear->scales; bases[nq++] = ls[i].linear->index_base; }
    sq_qzo_params params = {.scales = sp, .index_base = bases, .count = nq};
    sq_qzo_config qc;
    sq_qzo_config_defaults(&qc);
    sq_qzo_state qs;
    sq_qzo_state_init(&qs);

    int n = a->steps;
    double *tf = calloc((size_t)n, sizeof(double)), *tq = calloc((size_t)n, sizeof(double));
    double loss;
    for (int i = 0; i < a->warmup + n; i++) {
        sq_device_synchronize(dev);
        double s = sq_time_now();
        if (sd_flow_loss(&fb, NULL, &loss) != SQ_OK) return SQ_FAIL;   // forward + loss (syncs)
        double e = sq_time_now();
        if (i >= a->warmup) tf[i - a->warmup] = e - s;
    }
    for (int i = 0; i < a->warmup + n; i++) {
        sq_device_synchronize(dev);
        double s = sq_time_now();
        if (sq_qzo_step(&qc, &qs, &params, sd_flow_loss, &fb, NULL) != SQ_OK) return SQ_FAIL;
        sq_device_synchronize(dev);
        double e = sq_time_now();
        if (i >= a->warmup) tq[i - a->warmup] = e - s;
    }
    stats sf = summarise(tf, n), sq = summarise(tq, n);
    double flops = mmdit_flops(&cfg, B, N, T);
    double peak = used_gib(dev);
    printf("mmdit %s %lldx%lld batch %lld (%lld image + %lld text tokens), %.1f TFLOP per forward\n", a->config,
           (long long)R, (long long)R, (long long)B, (long long)N, (long long)T, flops / 1e12);
    printf("  forward:  median %8.1f ms  min %8.1f  max %8.1f  -> %6.1f TFLOP/s\n", sf.median * 1e3, sf.min * 1e3,
           sf.max * 1e3, flops / sf.median / 1e12);
    printf("  QZO step: median %8.1f ms  min %8.1f  max %8.1f  -> %6.1f TFLOP/s (2 forwards + update)\n",
           sq.median * 1e3, sq.min * 1e3, sq.max * 1e3, 2 * flops / sq.median / 1e12);
    printf("  memory: scratch arena high-water %.2f GiB; device in use %.2f GiB (weights %.2f GiB)\n",
           arena.high_water / 1073741824.0, peak, weights_gib);
    if (json)
        fprintf(json, "  \"mmdit\": {\"config\": \"%s\", \"resolution\": %lld, \"batch\": %lld, \"group\": %d, "
                      "\"tflop_per_forward\": %.3f, \"forward_ms\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f}, "
                      "\"qzo_step_ms\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f}, \"arena_high_water_gib\": %.3f, "
                      "\"device_used_gib\": %.3f, \"weights_gib\": %.3f, \"trainable_scales\": %lld},\n",
                a->config, (long long)R, (long long)B, a->group, flops / 1e12, sf.median * 1e3, sf.min * 1e3,
                sf.max * 1e3, sq.median * 1e3, sq.min * 1e3, sq.max * 1e3, arena.high_water / 1073741824.0, peak,
                weights_gib, (long long)scales);
    free(tf); free(tq); free(sigmas); free(ls); free(sp); free(bases);
    sd_flow_batch_free(&fb);
    sq_tensor_free(&x0); sq_tensor_free(&noise); sq_tensor_free(&ctx); sq_tensor_free(&pooled);
    sq_arena_free(&arena);
    sd_mmdit_free(&m);
    return SQ_OK;
}

static int bench_vae(const bench_args *a, sq_device dev, FILE *json) {
    sd_vae_config cfg;
    sd_vae_config_sd3(&cfg);
    sq_dtype dt = SQ_F32;   // the frozen VAE runs in f32 (bf16 costs ~2-3% error for no training benefit)
    sd_vae v;
    if (sd_vae_init_synthetic(&v, &cfg, dev, dt, 99) != SQ_OK) return sq_error_context("bench: building the VAE");
    int64_t B = a->batch, R = a->resolution;
    sq_arena arena;
    if (sq_arena_init(&arena, dev, a->arena_mb << 20) != SQ_OK) { sd_vae_free(&v); return SQ_FAIL; }
    sq_tensor img, lat;
    if (sq_tensor_alloc(&img, dt, dev, 4, (int64_t[]){B, 3, R, R}) ||
        sq_tensor_alloc(&lat, dt, dev, 4, (int64_t[]){B, 16, R / 8, R / 8}))
        return SQ_FAIL;
    fill_random(&img, 5);
    int n = a->steps;
    double *te = calloc((size_t)n, sizeof(double)), *td = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < a->warmup + n; i++) {
        sq_device_synchronize(dev);
        double s = sq_time_now();
        if (sd_vae_encode(&v, &arena, &img, &lat) != SQ_OK) return SQ_FAIL;
        sq_device_synchronize(dev);
        double m = sq_time_now();
        if (sd_vae_decode(&v, &arena, &lat, &img) != SQ_OK) return SQ_FAIL;
        sq_device_synchronize(dev);
        double e = sq_time_now();
        if (i >= a->warmup) { te[i - a->warmup] = m - s; td[i - a->warmup] = e - m; }
    }
    stats se = summarise(te, n), sd = summarise(td, n);
    printf("vae SD3 %lldx%lld batch %lld: encode median %.1f ms (min %.1f), decode median %.1f ms (min %.1f); "
           "scratch high-water %.2f GiB, device in use %.2f GiB\n", (long long)R, (long long)R, (long long)B,
           se.median * 1e3, se.min * 1e3, sd.median * 1e3, sd.min * 1e3, arena.high_water / 1073741824.0, used_gib(dev));
    if (json)
        fprintf(json, "  \"vae\": {\"resolution\": %lld, \"batch\": %lld, \"encode_ms\": %.3f, \"decode_ms\": %.3f, "
                      "\"arena_high_water_gib\": %.3f},\n", (long long)R, (long long)B, se.median * 1e3, sd.median * 1e3,
                arena.high_water / 1073741824.0);
    free(te); free(td);
    sq_tensor_free(&img); sq_tensor_free(&lat);
    sq_arena_free(&arena);
    sd_vae_free(&v);
    return SQ_OK;
}

int sq_cmd_bench(int argc, char **argv) {
    bench_args a = {.config = "large", .what = "all", .device = "auto", .resolution = 1024, .batch = 1, .steps = 5,
                    .warmup = 2, .group = 64, .context_tokens = 333, .arena_mb = 16384};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return SQ_OK; }
        if (i + 1 >= argc) return sq_errorf("option %s needs a value (see sd-qzo bench --help)", argv[i]);
        const char *o = argv[i], *v = argv[++i];
        if (!strcmp(o, "--config")) a.config = v;
        else if (!strcmp(o, "--what")) a.what = v;
        else if (!strcmp(o, "--device")) a.device = v;
        else if (!strcmp(o, "--json")) a.json = v;
        else if (!strcmp(o, "--resolution")) a.resolution = atoi(v);
        else if (!strcmp(o, "--batch")) a.batch = atoi(v);
        else if (!strcmp(o, "--steps")) a.steps = atoi(v);
        else if (!strcmp(o, "--warmup")) a.warmup = atoi(v);
        else if (!strcmp(o, "--group-size")) a.group = atoi(v);
        else if (!strcmp(o, "--arena-mb")) a.arena_mb = (size_t)atol(v);
        else return sq_errorf("unknown option '%s' (see sd-qzo bench --help)", o);
    }
    if (strcmp(a.config, "large") && strcmp(a.config, "large-turbo") && strcmp(a.config, "medium"))
        return sq_errorf("--config must be large, large-turbo or medium, not '%s'", a.config);
    if (a.resolution < 64 || a.resolution % 64) return sq_errorf("--resolution must be a multiple of 64");
    if (a.batch < 1 || a.steps < 1 || a.warmup < 0) return sq_errorf("--batch and --steps must be >= 1");
    if (a.group != 32 && a.group != 64 && a.group != 128) return sq_errorf("--group-size must be 32, 64 or 128");
    sq_device dev;
    if (sq_backend_init(a.device, &dev) != SQ_OK) return SQ_FAIL;
    char gpu[256] = "cpu";
    if (dev == SQ_CUDA) sq_cuda_describe(gpu, sizeof gpu);
    printf("sd-qzo bench on %s\n", gpu);
    FILE *json = a.json ? fopen(a.json, "w") : NULL;
    if (a.json && !json) return sq_error_errno("%s: cannot create", a.json);
    if (json) fprintf(json, "{\n  \"device\": \"%s\",\n", gpu);
    int rc = SQ_OK;
    if (!strcmp(a.what, "mmdit") || !strcmp(a.what, "all")) rc = bench_mmdit(&a, dev, json);
    if (rc == SQ_OK && (!strcmp(a.what, "vae") || !strcmp(a.what, "all"))) rc = bench_vae(&a, dev, json);
    if (json) {
        fprintf(json, "  \"ok\": %s\n}\n", rc == SQ_OK ? "true" : "false");
        fclose(json);
    }
    return rc;
}
