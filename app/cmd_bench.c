// app/cmd_bench.c: `sd-qzo bench`: speed and memory of the real SD3.5 shapes with
// synthetic weights (no checkpoint download needed), or of a real checkpoint given
// with --weights: MMDiT forward passes, full QZO steps (two perturbed int4 forwards
// + the scale update), VAE encode/decode, and the three text encoders as the
// encode phase of `sd-qzo train` runs them (T5 int8, blocks offloaded to the host). Each region is timed after warm-up
// with sq_timer (CUDA events on a GPU, the host clock on the CPU); prints
// median/min/max, achieved TFLOP/s and peak memory, and writes JSON with --json.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/bench_quantize.h"
#include "app/commands.h"
#include "app/options.h"
#include "qzo/flow_loss.h"
#include "qzo/qzo.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "datasets/buckets.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "qzo/flow_loss.h"
#include "qzo/qzo.h"
#include "text_encoders/conditioning.h"
#include "text_encoders/synthetic.h"
#include "vae/model.h"

typedef enum { BENCH_MMDIT = 1, BENCH_VAE = 2, BENCH_TEXT = 4, BENCH_ALL = 7, BENCH_QUANTIZE = 8 } bench_what;

typedef struct {
    sd_mmdit_preset preset;   // the synthetic model's shapes
    char weights[4096];       // "synthetic" or what `sd-qzo train --model` accepts
    int what;                 // bench_what
    sq_device_request device;
    char json[4096];
    char encoders[4096];      // tokenizers (and, for real weights, the encoders) of --what text
    int resolution, batch_size, steps, warmup, group_size, arena_mb;
    int quantize_blocks;      // --what quantize: joint blocks kept (0: all)
    int context_tokens;       // not an option: SD3.5's 77 CLIP + 256 T5 tokens
    bool synthetic;           // weights == "synthetic", decided once after parsing
} bench_args;

static const sq_opt_choice presets[] = {
    {"large", SD_MMDIT_LARGE}, {"large-turbo", SD_MMDIT_LARGE_TURBO}, {"medium", SD_MMDIT_MEDIUM}, {NULL, 0}};
static const sq_opt_choice whats[] = {{"mmdit", BENCH_MMDIT}, {"vae", BENCH_VAE}, {"text", BENCH_TEXT}, {"all", BENCH_ALL},
                                     {"quantize", BENCH_QUANTIZE}, {NULL, 0}};

static void defaults(void *p) {
    bench_args *a = p;
    memset(a, 0, sizeof *a);
    a->preset = SD_MMDIT_LARGE;
    snprintf(a->weights, sizeof a->weights, "synthetic");
    a->what = BENCH_ALL;
    a->device = SQ_DEVICE_AUTO;
    a->resolution = 1024;
    a->batch_size = 1;
    a->steps = 5;
    a->warmup = 2;
    a->group_size = 64;
    a->arena_mb = 16384;
    a->context_tokens = 333;
}

#define S bench_args
static const sq_option options[] = {
    // --config was this option's name before train's --config FILE took the word
    {"preset", "config", SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, preset), presets, false,
     "the synthetic model's shapes (ignored with --weights PATH)"},
    {"weights", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, weights), NULL, false,
     "synthetic, or the MMDiT of a diffusers pipeline/transformer folder, a Stability single file or an `sd-qzo quantize` "
     "int4 file"},
    {"resolution", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, resolution), NULL, false, "square image side in pixels (multiple of 64)"},
    {"batch-size", "batch", SQ_OPT_INT, SQ_OPT_FIELD(S, batch_size), NULL, false, "images per forward"},
    {"steps", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, steps), NULL, false, "timed runs of each region"},
    {"warmup", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, warmup), NULL, false, "untimed runs before them"},
    {"group-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, group_size), sq_opt_group_sizes, false,
     "int4 group size: 32, 64 or 128 (an int4 --weights file keeps its own)"},
    {"what", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, what), whats, false,
     "what to time (quantize: `sd-qzo quantize` of a synthetic bf16 checkpoint, not part of all)"},
    {"quantize-blocks", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, quantize_blocks), NULL, false,
     "--what quantize: joint blocks of the synthetic checkpoint (0: all of the preset's)"},
    {"device", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, device), sq_opt_devices, false,
     "where to run (auto: CUDA when a GPU is present)"},
    {"encoders", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, encoders), NULL, false,
     "a folder with tokenizer/, tokenizer_2/, tokenizer_3/ for timing synthetic text encoders (--what text); with "
     "--weights PATH the pipeline's own encoders are timed"},
    {"arena-mb", NULL, SQ_OPT_INT, SQ_OPT_FIELD(S, arena_mb), NULL, false, "scratch memory in MiB"},
    {"json", NULL, SQ_OPT_STR, SQ_OPT_STRING(S, json), NULL, false, "also write the results to this JSON file"},
};
#undef S

static const sq_option_table bench_table = {
    .command = "bench",
    .usage = "usage: sd-qzo bench [--preset large|large-turbo|medium] [--weights synthetic|PATH] [--resolution 1024]\n"
             "                    [--batch-size 1] [--steps 5] [--warmup 2] [--group-size 64]\n"
             "                    [--what mmdit|vae|text|all|quantize] [--quantize-blocks N] [--encoders DIR]\n"
             "                    [--device auto|cpu|cuda] [--arena-mb N] [--json FILE]\n\n"
             "Builds the model with synthetic weights (int4 joint blocks at the group size) on the device and\n"
             "times MMDiT forward passes, QZO steps (2 forwards + update), VAE encode/decode, and the text\n"
             "encoders (CLIP-L, CLIP-G, T5-XXL) as train's encode phase runs them: T5 in int8, and on a GPU\n"
             "with every encoder block offloaded to the host (train's default) and resident.\n"
             "--weights PATH: the MMDiT of a diffusers pipeline/transformer folder, a Stability single file or an\n"
             "`sd-qzo quantize` int4 file (dense weights are quantised at --group-size; the config comes from the\n"
             "file and --preset is ignored); a pipeline folder's vae/ is timed instead of a synthetic VAE.\n"
             "--what quantize: writes a dense bf16 transformer of the preset's real shapes (4 shards) under $TMPDIR\n"
             "(else /tmp) and times `sd-qzo quantize` on it, reading the files, on the CPU (all threads; set\n"
             "OMP_NUM_THREADS for fewer) and, with --device auto|cuda and a GPU, on the GPU; the two int4 files\n"
             "must be identical. Prints seconds, MB/s and peak host memory; removes the files afterwards.\n",
    .options = options,
    .count = (int)(sizeof options / sizeof options[0]),
    .struct_size = sizeof(bench_args),
    .defaults = defaults,
    .config_file = false,   // --config is the old spelling of --preset
};

static const char *preset_name(const bench_args *a) { return sq_options_choice_name(presets, (int)a->preset); }

// The pipeline's vae/ folder when --weights is a pipeline folder holding one; else "".
static void vae_dir(const bench_args *a, char *out, size_t size) {
    struct stat st;
    out[0] = 0;
    if (a->synthetic) return;
    snprintf(out, size, "%s/vae/config.json", a->weights);
    if (stat(out, &st) != 0) { out[0] = 0; return; }
    snprintf(out, size, "%s/vae", a->weights);
}

// A JSON string literal of s (paths may hold quotes or backslashes).
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
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

// The MMDiT of --weights on the device, int4: an `sd-qzo quantize` file loads as it is
// (at its own group size); dense weights are quantised in memory at --group-size by
// the quantiser `sd-qzo quantize` uses. *group gets the group size in effect.
static int load_weights(const bench_args *a, sq_device dev, sq_dtype dt, sd_mmdit *m, int *group) {
    sd_base_model base;
    sq_safetensors *st = NULL;
    if (sd_base_open(a->weights, &base, &st) != SQ_OK) return sq_error_context("--weights");
    sq_st_close(st);
    if (sd_mmdit_load(m, a->weights, dev, dt) != SQ_OK) return sq_error_context("--weights %s", a->weights);
    *group = a->group_size;
    if (base.quantized) {
        if (base.group != a->group_size)
            sq_log_warn("%s is int4 at group size %d: --group-size %d is ignored", a->weights, base.group, a->group_size);
        *group = base.group;
        return SQ_OK;
    }
    double t0 = sq_time_now();
    if (sd_mmdit_quantize(m, a->group_size, NULL) != SQ_OK) {
        sd_mmdit_free(m);
        return sq_error_context("--weights %s: quantising to int4", a->weights);
    }
    sq_log_info("quantised %s to int4 (group %d) in %.1f s", a->weights, a->group_size, sq_time_now() - t0);
    return SQ_OK;
}

// Times `n` runs after `warmup` ones of sd_flow_loss (qzo false) or a QZO step into
// ms[]; each run starts on an idle device so one run's work does not spill into the next.
// With SQ_PROFILE_CAPTURE=1 the first timed run is the only one an external profiler
// started with capture off sees (scripts/gpu/bench-profile.sh: ncu per kernel).
static int time_runs(sq_device dev, int warmup, int n, bool qzo, sd_flow_batch *fb, const sq_qzo_config *qc,
                     sq_qzo_state *qs, const sq_qzo_params *params, double *ms) {
    double loss;
    const char *cap = getenv("SQ_PROFILE_CAPTURE");
    bool capture = !qzo && cap && *cap && strcmp(cap, "0") != 0;
    for (int i = 0; i < warmup + n; i++) {
        sq_device_synchronize(dev);
        sq_timer t;
        if (capture && i == warmup) sq_profiler_capture(true);
        if (sq_timer_start(&t, dev) != SQ_OK) return SQ_FAIL;
        int rc = qzo ? sq_qzo_step(qc, qs, params, sd_flow_loss, fb, NULL) : sd_flow_loss(fb, NULL, &loss);
        double e = sq_timer_stop(&t);   // also waits for the region's work
        if (capture && i == warmup) sq_profiler_capture(false);
        if (rc != SQ_OK) return SQ_FAIL;
        if (e < 0) return sq_error_context("bench: timing");
        if (i >= warmup) ms[i - warmup] = e;
    }
    return SQ_OK;
}

static int bench_mmdit(const bench_args *a, sq_device dev, FILE *json) {
    sd_mmdit_config cfg;
    sq_dtype dt = dev == SQ_CUDA ? SQ_BF16 : SQ_F32;
    double base_gib = used_gib(dev);
    double t0 = sq_time_now();
    sd_mmdit m;
    memset(&m, 0, sizeof m);
    int group = a->group_size;
    if (a->synthetic) {
        sd_mmdit_config_preset(&cfg, a->preset);
        if (sd_mmdit_init_synthetic(&m, &cfg, dev, dt, a->group_size, 1234) != SQ_OK) return sq_error_context("bench: building the model");
    } else {
        if (load_weights(a, dev, dt, &m, &group) != SQ_OK) return SQ_FAIL;
        cfg = m.cfg;   // the FLOP count and shapes follow the loaded model, not a preset
    }
    double weights_gib = used_gib(dev) - base_gib;
    int64_t scales = sd_mmdit_assign_scale_indices(&m);
    char model_name[160];
    if (a->synthetic) snprintf(model_name, sizeof model_name, "SD3.5 %s, synthetic int4", preset_name(a));
    else snprintf(model_name, sizeof model_name, "%.100s, int4", a->weights);
    printf("model: %s (group %d; hidden %d, %d layers, %d heads), %lld trainable scales, ready in %.1f s, weights %.2f GiB\n",
           model_name, group, cfg.hidden, cfg.num_layers, cfg.num_heads, (long long)scales, sq_time_now() - t0, weights_gib);
    // latent side: the pipeline's VAE factor when there is one, else SD3's 8
    int factor = 8;
    char vdir[4200];
    vae_dir(a, vdir, sizeof vdir);
    sd_vae_config vc;
    if (vdir[0]) {
        char vcfg[4300];
        snprintf(vcfg, sizeof vcfg, "%s/config.json", vdir);
        if (sd_vae_config_load(&vc, vcfg) != SQ_OK) { sd_mmdit_free(&m); return sq_error_context("bench"); }
        factor = sd_vae_factor(&vc);
    }
    // (--resolution was checked against this model before it was built: check_resolution)
    int64_t B = a->batch_size, R = a->resolution, h = R / factor, T = a->context_tokens, C = cfg.in_channels;
    int64_t N = (h / cfg.patch_size) * (h / cfg.patch_size);
    int rc = SQ_FAIL, n = a->steps;
    sq_arena arena = {0};
    sq_tensor x0 = {0}, noise = {0}, ctx = {0}, pooled = {0};
    sd_flow_batch fb = {0};
    bool fb_ok = false;
    float *sigmas = malloc((size_t)B * sizeof(float));
    int nl = sd_mmdit_qlayers(&m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)nl + 1, sizeof *ls);
    sq_tensor **sp = calloc((size_t)nl + 1, sizeof *sp);
    uint64_t *bases = calloc((size_t)nl + 1, sizeof *bases);
    double *tf = calloc((size_t)n, sizeof(double)), *tq = calloc((size_t)n, sizeof(double));
    if (!sigmas || !ls || !sp || !bases || !tf || !tq) { sq_errorf("out of host memory"); goto done; }
    if (sq_arena_init(&arena, dev, (size_t)a->arena_mb << 20) != SQ_OK) goto done;
    if (sq_tensor_alloc(&x0, dt, dev, 4, (int64_t[]){B, C, h, h}) || sq_tensor_alloc(&noise, dt, dev, 4, (int64_t[]){B, C, h, h}) ||
        sq_tensor_alloc(&ctx, dt, dev, 3, (int64_t[]){B, T, cfg.joint_attention_dim}) ||
        sq_tensor_alloc(&pooled, dt, dev, 2, (int64_t[]){B, cfg.pooled_projection_dim}))
        goto done;
    fill_random(&x0, 1); fill_random(&noise, 2); fill_random(&ctx, 3); fill_random(&pooled, 4);
    for (int64_t b = 0; b < B; b++) sigmas[b] = 0.3f + 0.4f * (float)b / (float)(B > 1 ? B - 1 : 1);
    if (sd_flow_batch_init(&fb, &m, &arena, &x0, &noise, sigmas, &ctx, &pooled) != SQ_OK) goto done;
    fb_ok = true;
    // QZO parameters: the scales of every int4 layer
    sd_mmdit_qlayers(&m, ls, nl);
    int nq = 0;
    for (int i = 0; i < nl; i++)
        if (sq_linear_quantized(ls[i].linear)) { sp[nq] = &ls[i].linear->scales; bases[nq++] = ls[i].linear->index_base; }
    if (nq == 0) { sq_errorf("bench: the model has no int4 layer for a QZO step"); goto done; }
    sq_qzo_params params = {.scales = sp, .index_base = bases, .count = nq};
    sq_qzo_config qc;
    sq_qzo_config_defaults(&qc);
    // "a QZO step" is one query: two forwards and the update, the unit every
    // figure in bench/RESULTS.md uses; train's default --queries 4 runs four of them
    qc.queries = 1;
    sq_qzo_state qs;
    sq_qzo_state_init(&qs);
    if (time_runs(dev, a->warmup, n, false, &fb, &qc, &qs, &params, tf) != SQ_OK) goto done;
    if (time_runs(dev, a->warmup, n, true, &fb, &qc, &qs, &params, tq) != SQ_OK) goto done;

    stats sf = summarise(tf, n), sq = summarise(tq, n);
    double flops = mmdit_flops(&cfg, B, N, T);
    double peak = used_gib(dev);
    const char *cname = a->synthetic ? preset_name(a) : "weights";
    printf("mmdit %s %lldx%lld batch %lld (%lld image + %lld text tokens), %.1f TFLOP per forward\n", cname,
           (long long)R, (long long)R, (long long)B, (long long)N, (long long)T, flops / 1e12);
    printf("  forward:  median %8.1f ms  min %8.1f  max %8.1f  -> %6.1f TFLOP/s\n", sf.median, sf.min, sf.max,
           flops / (sf.median * 1e-3) / 1e12);
    printf("  QZO step: median %8.1f ms  min %8.1f  max %8.1f  -> %6.1f TFLOP/s (2 forwards + update)\n",
           sq.median, sq.min, sq.max, 2 * flops / (sq.median * 1e-3) / 1e12);
    printf("  memory: scratch arena high-water %.2f GiB; device in use %.2f GiB (weights %.2f GiB)\n",
           arena.high_water / 1073741824.0, peak, weights_gib);
    if (json) {
        fprintf(json, "  \"mmdit\": {\"config\": \"%s\", \"weights\": ", cname);
        json_string(json, a->weights);
        fprintf(json, ", \"hidden\": %d, \"layers\": %d, \"heads\": %d, \"resolution\": %lld, \"batch\": %lld, \"group\": %d, "
                      "\"tflop_per_forward\": %.6g, \"forward_ms\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g}, "
                      "\"qzo_step_ms\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g}, \"arena_high_water_gib\": %.3f, "
                      "\"device_used_gib\": %.3f, \"weights_gib\": %.3f, \"trainable_scales\": %lld},\n",
                cfg.hidden, cfg.num_layers, cfg.num_heads, (long long)R, (long long)B, group, flops / 1e12, sf.median,
                sf.min, sf.max, sq.median, sq.min, sq.max, arena.high_water / 1073741824.0, peak, weights_gib,
                (long long)scales);
    }
    rc = SQ_OK;
done:
    free(tf); free(tq); free(sigmas); free(ls); free(sp); free(bases);
    if (fb_ok) sd_flow_batch_free(&fb);
    sq_tensor_free(&x0); sq_tensor_free(&noise); sq_tensor_free(&ctx); sq_tensor_free(&pooled);
    if (arena.base) sq_arena_free(&arena);
    sd_mmdit_free(&m);
    return rc;
}

static int bench_vae(const bench_args *a, sq_device dev, FILE *json) {
    sq_dtype dt = SQ_F32;   // the frozen VAE runs in f32 (bf16 costs ~2-3% error for no training benefit)
    sd_vae v;
    char vdir[4200];
    vae_dir(a, vdir, sizeof vdir);
    if (vdir[0]) {
        if (sd_vae_load(&v, vdir, dev, dt) != SQ_OK) return sq_error_context("bench: loading the VAE");
    } else {
        sd_vae_config cfg;
        sd_vae_config_sd3(&cfg);
        if (sd_vae_init_synthetic(&v, &cfg, dev, dt, 99) != SQ_OK) return sq_error_context("bench: building the VAE");
    }
    int64_t B = a->batch_size, R = a->resolution, f = sd_vae_factor(&v.cfg), C = v.cfg.latent_channels;
    int rc = SQ_FAIL, n = a->steps;
    sq_arena arena = {0};
    sq_tensor img = {0}, lat = {0};
    double *te = calloc((size_t)n, sizeof(double)), *td = calloc((size_t)n, sizeof(double));
    if (!te || !td) { sq_errorf("out of host memory"); goto done; }
    if (sq_arena_init(&arena, dev, (size_t)a->arena_mb << 20) != SQ_OK) goto done;
    if (sq_tensor_alloc(&img, dt, dev, 4, (int64_t[]){B, 3, R, R}) || sq_tensor_alloc(&lat, dt, dev, 4, (int64_t[]){B, C, R / f, R / f}))
        goto done;
    fill_random(&img, 5);
    for (int i = 0; i < a->warmup + n; i++) {
        sq_timer t;
        sq_device_synchronize(dev);
        if (sq_timer_start(&t, dev) != SQ_OK) goto done;
        int r = sd_vae_encode(&v, &arena, &img, &lat);
        double e = sq_timer_stop(&t);
        if (r != SQ_OK) goto done;
        if (e < 0 || sq_timer_start(&t, dev) != SQ_OK) goto done;
        r = sd_vae_decode(&v, &arena, &lat, &img);
        double d = sq_timer_stop(&t);
        if (r != SQ_OK || d < 0) goto done;
        if (i >= a->warmup) { te[i - a->warmup] = e; td[i - a->warmup] = d; }
    }
    stats se = summarise(te, n), sd = summarise(td, n);
    printf("vae %s %lldx%lld batch %lld: encode median %.1f ms (min %.1f), decode median %.1f ms (min %.1f); "
           "scratch high-water %.2f GiB, device in use %.2f GiB\n", vdir[0] ? vdir : "SD3 synthetic", (long long)R, (long long)R,
           (long long)B, se.median, se.min, sd.median, sd.min, arena.high_water / 1073741824.0, used_gib(dev));
    if (json)
        fprintf(json, "  \"vae\": {\"weights\": \"%s\", \"resolution\": %lld, \"batch\": %lld, \"encode_ms\": %.6g, "
                      "\"decode_ms\": %.6g, \"arena_high_water_gib\": %.3f},\n", vdir[0] ? "pipeline" : "synthetic",
                (long long)R, (long long)B, se.median, sd.median, arena.high_water / 1073741824.0);
    rc = SQ_OK;
done:
    free(te); free(td);
    sq_tensor_free(&img); sq_tensor_free(&lat);
    if (arena.base) sq_arena_free(&arena);
    sd_vae_free(&v);
    return rc;
}

// One prompt per image, of the length users write (CLIP truncates at 77 tokens; T5
// pads to its 256 either way, so the length changes only the tokenizers' share).
static const char *bench_prompt(int i) {
    static const char *p[] = {
        "a watercolour painting of a lighthouse on a rocky coast at dusk, warm light in the windows, gulls over the waves",
        "close-up photograph of a ceramic teapot with a blue glaze on a wooden table, soft window light, shallow depth of field",
        "an isometric pixel-art city block at night with neon signs, rain on the streets and a tram crossing the bridge",
        "portrait of an elderly fisherman in a knitted sweater, weathered face, overcast sky, 85mm film photograph"};
    return p[i % 4];
}

// Times sd_encode_prompts for --batch-size prompts with the encoders configured as
// `sd-qzo train` uses them (T5-XXL int8); on a GPU once with the encoder blocks
// offloaded to the host (train's --low-vram default) and once resident.
static int bench_text(const bench_args *a, sq_device dev, FILE *json) {
    if (a->synthetic && !a->encoders[0]) {   // only with --what all (sq_cmd_bench refuses --what text)
        sq_log_info("text encoders not timed: synthetic weights need --encoders DIR for their tokenizers");
        return SQ_OK;
    }
    sq_dtype dt = dev == SQ_CUDA ? SQ_BF16 : SQ_F32;
    int B = a->batch_size, n = a->steps, runs = dev == SQ_CUDA ? 2 : 1;
    const char **prompts = calloc((size_t)B, sizeof *prompts);
    double *ms = calloc((size_t)n, sizeof(double));
    if (!prompts || !ms) { free(prompts); free(ms); return sq_errorf("out of host memory"); }
    for (int i = 0; i < B; i++) prompts[i] = bench_prompt(i);
    int rc = SQ_OK;
    if (json) fprintf(json, "  \"text\": [\n");
    for (int r = 0; r < runs && rc == SQ_OK; r++) {
        rc = SQ_FAIL;
        sd_text_options to;
        sd_text_options_defaults(&to);
        to.t5_int8 = true;
        to.offload = dev == SQ_CUDA && r == 0;
        double base_gib = used_gib(dev), t0 = sq_time_now();
        sd_text_encoders te;
        memset(&te, 0, sizeof te);
        int lr = a->synthetic ? sd_text_encoders_init_synthetic(&te, a->encoders, dev, dt, &to, 77)
                              : sd_text_encoders_load(&te, a->weights, dev, dt, &to);
        if (lr != SQ_OK) { free(prompts); free(ms); return sq_error_context("bench: building the text encoders"); }
        double ready = sq_time_now() - t0, weights_gib = used_gib(dev) - base_gib;
        sq_arena arena = {0};
        sq_tensor ctx = {0}, pooled = {0};
        int64_t T = sd_text_context_tokens(&te), D = sd_text_context_dim(&te), P = sd_text_pooled_dim(&te);
        if (sq_arena_init(&arena, dev, sd_text_scratch_bytes(&te, B)) != SQ_OK) goto next;
        if (sq_tensor_alloc(&ctx, dt, dev, 3, (int64_t[]){B, T, D}) || sq_tensor_alloc(&pooled, dt, dev, 2, (int64_t[]){B, P}))
            goto next;
        for (int i = 0; i < a->warmup + n; i++) {
            sq_timer t;
            sq_device_synchronize(dev);
            if (sq_timer_start(&t, dev) != SQ_OK) goto next;
            sq_arena_reset(&arena, 0);
            int er = sd_encode_prompts(&te, &arena, prompts, B, &ctx, &pooled);
            double e = sq_timer_stop(&t);
            if (er != SQ_OK || e < 0) goto next;
            if (i >= a->warmup) ms[i - a->warmup] = e;
        }
        stats st = summarise(ms, n);
        const char *mode = dev != SQ_CUDA ? "cpu" : to.offload ? "offloaded" : "resident";
        printf("text encoders %s (CLIP-L + CLIP-G + T5 int8, %lld tokens), %s, batch %d: median %.1f ms (min %.1f) "
               "-> %.1f prompts/s; ready in %.1f s, weights on the device %.2f GiB, device in use %.2f GiB\n",
               a->synthetic ? "synthetic" : a->weights, (long long)T, mode, B, st.median, st.min, B / (st.median * 1e-3), ready,
               weights_gib, used_gib(dev));
        if (json)
            fprintf(json, "    {\"mode\": \"%s\", \"batch\": %d, \"tokens\": %lld, \"encode_ms\": %.6g, \"prompts_per_s\": %.6g, "
                          "\"weights_gib\": %.3f}%s\n", mode, B, (long long)T, st.median, B / (st.median * 1e-3), weights_gib,
                    r + 1 < runs ? "," : "");
        rc = SQ_OK;
    next:
        sq_tensor_free(&ctx); sq_tensor_free(&pooled);
        if (arena.base) sq_arena_free(&arena);
        sd_text_encoders_free(&te);
    }
    if (json) fprintf(json, "  ],\n");
    free(prompts); free(ms);
    return rc;
}

// --resolution against the VAE and (when it is timed) the MMDiT, before any model
// is built (datasets/buckets.h holds the rule).
static int check_resolution(const bench_args *a) {
    sd_size_limits lim = {8, 2, 0, NULL};   // SD3's VAE factor and patch size
    char origin[4300];
    char vdir[4200];
    vae_dir(a, vdir, sizeof vdir);
    if (vdir[0]) {
        sd_vae_config vc;
        char vcfg[4300];
        snprintf(vcfg, sizeof vcfg, "%s/config.json", vdir);
        if (sd_vae_config_load(&vc, vcfg) != SQ_OK) return sq_error_context("bench");
        lim.vae_factor = sd_vae_factor(&vc);
    }
    if (a->what & BENCH_MMDIT) {
        sd_mmdit_config mc;
        if (a->synthetic) sd_mmdit_config_preset(&mc, a->preset);
        else if (sd_mmdit_config_read(&mc, a->weights) != SQ_OK) return sq_error_context("--weights");
        lim.patch_size = mc.patch_size;
        lim.pos_embed_max_size = mc.pos_embed_max_size;
        if (!a->synthetic) {
            sd_mmdit_config_origin(a->weights, origin, sizeof origin);
            lim.origin = origin;
        }
    }
    return sd_check_resolution(a->resolution, false, &lim);
}

int sq_cmd_bench(int argc, char **argv) {
    bench_args a;
    bool help, given[sizeof options / sizeof options[0]];
    defaults(&a);
    if (sq_options_parse(&bench_table, &a, argc, argv, &help, given) != SQ_OK) return SQ_FAIL;
    if (help) {
        sq_options_usage(&bench_table, stdout);
        return SQ_OK;
    }
    if (a.batch_size < 1 || a.steps < 1 || a.warmup < 0)
        return sq_errorf("--batch-size and --steps must be >= 1, --warmup >= 0");
    if (a.arena_mb < 1) return sq_errorf("--arena-mb must be >= 1");
    if (a.quantize_blocks < 0) return sq_errorf("--quantize-blocks must be >= 0");
    if (!a.weights[0]) return sq_errorf("--weights must be synthetic or a path, not empty");
    a.synthetic = !strcmp(a.weights, "synthetic");
    if (sq_options_given(&bench_table, given, "preset") && !a.synthetic)
        sq_log_warn("--preset %s is ignored: the model's config comes from --weights %s", preset_name(&a), a.weights);
    if (a.what == BENCH_TEXT && a.synthetic && !a.encoders[0])
        return sq_errorf("--what text with synthetic weights needs --encoders DIR (a folder with tokenizer/, tokenizer_2/, "
                         "tokenizer_3/, e.g. an SD3.5 repository without its weights)");
    if (check_resolution(&a) != SQ_OK) return SQ_FAIL;
    sq_device dev;
    if (sq_backend_select(a.device, &dev) != SQ_OK) return SQ_FAIL;
    char gpu[256] = "cpu";
    if (dev == SQ_CUDA) sq_cuda_describe(gpu, sizeof gpu);
    printf("sd-qzo bench on %s\n", gpu);
    fflush(stdout);   // before any error line on stderr, also when stdout is a pipe
    // --json FILE: the results go to FILE.tmp.<pid> (created now, so an unwritable place fails
    // before measuring), which replaces FILE only when the whole run succeeded; a failed run
    // leaves an existing FILE as it was.
    char tmp[sizeof a.json + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", a.json, (long)getpid());
    FILE *json = a.json[0] ? fopen(tmp, "w") : NULL;
    if (a.json[0] && !json) return sq_error_errno("%s: cannot create", tmp);
    if (json) fprintf(json, "{\n  \"device\": \"%s\",\n  \"timer\": \"%s\",\n", gpu, sq_timer_kind(dev));
    int rc = SQ_OK;
    if (a.what & BENCH_MMDIT) rc = bench_mmdit(&a, dev, json);
    if (rc == SQ_OK && (a.what & BENCH_QUANTIZE))
        rc = sq_bench_quantize(a.preset, a.group_size, a.device, a.quantize_blocks, json);
    if (rc == SQ_OK && (a.what & BENCH_VAE)) rc = bench_vae(&a, dev, json);
    if (rc == SQ_OK && (a.what & BENCH_TEXT)) rc = bench_text(&a, dev, json);
    if (json) {
        fprintf(json, "  \"ok\": true\n}\n");
        bool written = fflush(json) == 0 && !ferror(json) && fsync(fileno(json)) == 0;
        if (fclose(json) != 0) written = false;
        if (rc == SQ_OK && !written) rc = sq_error_errno("%s: cannot write", tmp);
        if (rc == SQ_OK && rename(tmp, a.json) != 0) rc = sq_error_errno("%s: cannot rename into place", a.json);
        if (rc != SQ_OK) unlink(tmp);
    }
    return rc;
}
