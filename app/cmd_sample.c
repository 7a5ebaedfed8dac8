// app/cmd_sample.c: `sd-qzo sample`: text-to-image with a base or QZO-fine-tuned
// SD3.5 model. Holds one large model at a time: the text encoders encode every
// prompt (and the negative prompt) and are freed, then the MMDiT samples every
// prompt's latents and is freed, then the VAE decodes them. Each image is written
// as DIR/<index>_<seed>.png with its settings in an A1111 "parameters" text chunk,
// plus DIR/grid.png, a contact sheet of all of them (DIR: --out, default
// sd-qzo-samples/, kept apart from the source tree's samples/ folder).
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/commands.h"
#include "app/options.h"
#include "qzo/trained_scales.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "datasets/buckets.h"
#include "datasets/captions.h"
#include "kernels/backend.h"
#include "qzo/trained_scales.h"
#include "samples/grid.h"
#include "samples/png.h"
#include "samples/sampler.h"
#include "samples/scheduler.h"
#include "text_encoders/conditioning.h"
#include "vae/model.h"

typedef struct {
    char model[1024], transformer[1024], scales[1024], prompt[4096], prompts_file[1024], negative[4096], out[1024],
        latents[1024];
    sq_device_request device;
    int steps, width, height, batch_size, t5_max_length, arena_mb;
    float cfg;
    uint64_t seed;
    bool t5, t5_int8, low_vram;
    bool ema;            // the EMA of the scales of --scales
} sample_args;

static void defaults(void *p) {
    sample_args *a = p;
    memset(a, 0, sizeof *a);
    snprintf(a->out, sizeof a->out, "sd-qzo-samples");
    a->device = SQ_DEVICE_AUTO;
    a->steps = 28;
    a->width = a->height = 1024;
    a->batch_size = 1;
    a->t5_max_length = 256;   // SD3.5's max_sequence_length
    a->cfg = 4.5f;
    a->t5 = true;
    a->t5_int8 = true;        // as `sd-qzo train`: T5-XXL in int8, 4.9 GB instead of 9.5 GB
    a->low_vram = true;       // as `sd-qzo train`: text-encoder blocks streamed from host memory
}

#define S sample_args
#define F(f) SQ_OPT_FIELD(S, f), NULL
#define STR(f) SQ_OPT_STRING(S, f), NULL
static const sq_option options[] = {
    {"model", NULL, SQ_OPT_STR, STR(model), false, "SD3/SD3.5 diffusers pipeline folder: text encoders, VAE, scheduler, MMDiT (required)"},
    {"transformer", NULL, SQ_OPT_STR, STR(transformer), false, "the MMDiT from elsewhere: a single file, the int4 file of `sd-qzo quantize`, or an SD3.5 GGUF"},
    {"scales", NULL, SQ_OPT_STR, STR(scales), false, "QZO checkpoint: sample the fine-tuned model (int4 base + these scales)"},
    {"ema", NULL, SQ_OPT_BOOL, F(ema), false, "with --scales: sample with the checkpoint's EMA of the scales (trained with --ema)"},
    {"prompt", NULL, SQ_OPT_STR, STR(prompt), false, "one prompt"},
    {"prompts", NULL, SQ_OPT_STR, STR(prompts_file), false, "file of prompts, one per line (empty lines and lines starting with # are skipped)"},
    {"negative-prompt", NULL, SQ_OPT_STR, STR(negative), false, "prompt of the unconditional branch of CFG"},
    {"steps", NULL, SQ_OPT_INT, F(steps), false, "Euler steps (4 for Turbo models)"},
    {"cfg", NULL, SQ_OPT_FLOAT, F(cfg), false, "guidance scale (0 for Turbo models); <= 1 turns CFG off"},
    {"width", NULL, SQ_OPT_INT, F(width), false, "pixels, a multiple of 16 for SD3.5"},
    {"height", NULL, SQ_OPT_INT, F(height), false, "pixels, a multiple of 16 for SD3.5"},
    {"seed", NULL, SQ_OPT_U64, F(seed), false, "seed of the first image; image k of the run uses seed + k"},
    {"batch-size", "batch", SQ_OPT_INT, F(batch_size), false, "images per prompt, sampled together"},
    {"out", "output", SQ_OPT_STR, STR(out), false, "output folder"},
    {"latents", NULL, SQ_OPT_STR, STR(latents), false, "initial latents from a .safetensors file (tensor 'latents', or its only tensor): "
                                                      "(N,16,H/8,W/8) with N = all images, or N = batch size (every prompt)"},
    {"device", NULL, SQ_OPT_ENUM, SQ_OPT_ENUM_FIELD(S, device), sq_opt_devices, false, "where to run (auto: CUDA when a GPU is present)"},
    {"t5", NULL, SQ_OPT_BOOL, F(t5), false, "use the T5 encoder (--no-t5: zeros in its place, as diffusers without T5)"},
    {"t5-int8", NULL, SQ_OPT_BOOL, F(t5_int8), false, "T5 with int8 weights (less memory; --no-t5-int8 for bf16)"},
    {"low-vram", NULL, SQ_OPT_BOOL, F(low_vram), false, "stream text-encoder blocks from host memory (less GPU memory; --no-low-vram keeps them on the GPU)"},
    {"t5-max-length", "max-sequence-length", SQ_OPT_INT, F(t5_max_length), false, "T5 tokens per prompt"},
    {"arena-mb", NULL, SQ_OPT_INT, F(arena_mb), false, "scratch memory in MiB (0: estimated from the sizes)"},
};
#undef S
#undef F
#undef STR

static const sq_option_table sample_table = {
    .command = "sample",
    .usage = "usage: sd-qzo sample --model DIR (--prompt TEXT | --prompts FILE) [options]\n\n"
             "Text to image with a base or QZO-fine-tuned SD3.5 model: OUT/<index>_<seed>.png with the settings in\n"
             "their \"parameters\" text, and OUT/grid.png.\n",
    .epilog = "A model whose folder name contains \"turbo\" (SD3.5 Large Turbo) defaults to 4 steps, guidance 0.\n",
    .options = options,
    .count = (int)(sizeof options / sizeof options[0]),
    .struct_size = sizeof(sample_args),
    .defaults = defaults,
    .config_file = true,
};

// The last path component without trailing slashes ("models/sd3.5_large/" -> "sd3.5_large").
static void base_name(const char *path, char *out, size_t size) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && path[s - 1] != '/') s--;
    snprintf(out, size, "%.*s", (int)(n - s), path + s);
}

static bool contains_nocase(const char *s, const char *word) {
    size_t n = strlen(word);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == word[i]) i++;
        if (i == n) return true;
    }
    return false;
}

static int parse_args(sample_args *a, int argc, char **argv, bool *help) {
    defaults(a);
    bool given[sizeof options / sizeof options[0]];
    if (sq_options_parse(&sample_table, a, argc, argv, help, given) != SQ_OK) return SQ_FAIL;
    if (*help) return SQ_OK;
    if (!a->model[0]) return sq_errorf("--model is required (sd-qzo sample --help)");
    if (!a->prompt[0] == !a->prompts_file[0]) return sq_errorf("give exactly one of --prompt and --prompts");
    if (a->steps < 1 || a->steps > 10000) return sq_errorf("--steps must be in [1, 10000], not %d", a->steps);
    if (!(a->cfg >= 0 && a->cfg <= 100)) return sq_errorf("--cfg must be in [0, 100]");
    if (a->batch_size < 1 || a->batch_size > 1024) return sq_errorf("--batch-size must be in [1, 1024], not %d", a->batch_size);
    if (a->t5_max_length < 1 || a->t5_max_length > SD_T5_MAX_TOKENS)   // as train
        return sq_errorf("--t5-max-length must be in 1..%d", SD_T5_MAX_TOKENS);
    if (a->width < 1 || a->width > 65536 || a->height < 1 || a->height > 65536)
        return sq_errorf("--width and --height must be in [1, 65536]");
    if (a->arena_mb < 0) return sq_errorf("--arena-mb must be >= 0");
    if (a->ema && !a->scales[0]) return sq_errorf("--ema needs --scales (a checkpoint trained with --ema)");
    // SD3.5 Large Turbo is distilled for few steps without guidance; its files carry no
    // marker, so the folder name is the hint (explicit --steps / --cfg always win).
    char name[512];
    base_name(a->transformer[0] ? a->transformer : a->model, name, sizeof name);
    if (contains_nocase(name, "turbo") || contains_nocase(a->model, "turbo")) {
        if (!sq_options_given(&sample_table, given, "steps")) a->steps = 4;
        if (!sq_options_given(&sample_table, given, "cfg")) a->cfg = 0.0f;
        sq_log_info("'%s' looks like a Turbo model: %d steps, guidance %g", name, a->steps, (double)a->cfg);
    }
    return SQ_OK;
}

// --prompts FILE: one prompt per line, UTF-8 as caption files must be (datasets/captions.h).
static int read_prompts(const char *path, char ***out, int *n) {
    char *text;
    size_t len;
    if (sq_read_file(path, &text, &len) != SQ_OK) return SQ_FAIL;
    if (strlen(text) != len) { free(text); return sq_errorf("%s: contains a NUL byte (not a text file)", path); }
    if (sd_text_check_utf8(path, text, len) != SQ_OK) { free(text); return SQ_FAIL; }
    int cap = 16, k = 0;
    char **list = malloc(sizeof(char *) * (size_t)cap);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = 0;
        if (!l || line[0] == '#') continue;
        if (k == cap) list = realloc(list, sizeof(char *) * (size_t)(cap *= 2));
        list[k++] = strdup(line);
    }
    free(text);
    if (k == 0) { free(list); return sq_errorf("%s: no prompts in the file", path); }
    *out = list;
    *n = k;
    return SQ_OK;
}

// Host copies of each prompt's conditioning: context (T,D) and pooled (P) floats.
typedef struct {
    float *context, *pooled;
} host_cond;

// neg: NULL when CFG is off (the negative prompt is then not needed).
static int encode_all(const sample_args *a, sq_device dev, char **prompts, int n, host_cond *conds, host_cond *neg,
                      int *T, int *D, int *P) {
    sd_text_options to;
    sd_text_options_defaults(&to);
    to.use_t5 = a->t5;
    to.t5_int8 = a->t5_int8;
    to.offload = a->low_vram;
    to.t5_max_length = a->t5_max_length;
    sd_text_encoders te;
    sq_dtype dt = dev == SQ_CUDA ? SQ_BF16 : SQ_F32;
    double t0 = sq_time_now();
    if (sd_text_encoders_load(&te, a->model, dev, dt, &to) != SQ_OK) return sq_error_context("loading the text encoders");
    *T = sd_text_context_tokens(&te);
    *D = sd_text_context_dim(&te);
    *P = sd_text_pooled_dim(&te);
    sq_arena arena;
    if (sq_arena_init(&arena, dev, sd_text_scratch_bytes(&te, 1)) != SQ_OK) { sd_text_encoders_free(&te); return SQ_FAIL; }
    sq_tensor ctx = {0}, pooled = {0};
    int rc = SQ_FAIL;
    if (sq_tensor_alloc(&ctx, dt, dev, 3, (int64_t[]){1, *T, *D}) != SQ_OK ||
        sq_tensor_alloc(&pooled, dt, dev, 2, (int64_t[]){1, *P}) != SQ_OK)
        goto done;
    for (int i = 0; i < n + (neg != NULL); i++) {
        const char *p = i < n ? prompts[i] : a->negative;
        host_cond *h = i < n ? &conds[i] : neg;
        h->context = sq_malloc(sizeof(float) * (size_t)*T * (size_t)*D);
        h->pooled = sq_malloc(sizeof(float) * (size_t)*P);
        if (!h->context || !h->pooled) goto done;
        if (sd_encode_prompts(&te, &arena, &p, 1, &ctx, &pooled) != SQ_OK) {
            sq_error_context("%s %d", i < n ? "prompt" : "negative prompt", i + 1);
            goto done;
        }
        if (sq_tensor_to_host_f32(h->context, &ctx) != SQ_OK || sq_tensor_to_host_f32(h->pooled, &pooled) != SQ_OK) goto done;
    }
    sq_log_info("encoded %d prompt%s%s in %.1f s (context %dx%d, pooled %d%s)", n, n > 1 ? "s" : "",
                neg ? " and the negative prompt" : "", sq_time_now() - t0, *T, *D, *P, !a->t5 ? ", no T5" : "");
    rc = SQ_OK;
done:
    sq_tensor_free(&ctx);
    sq_tensor_free(&pooled);
    sq_arena_free(&arena);
    sd_text_encoders_free(&te);
    return rc;
}

// --latents FILE into host (total,C,h,w), repeating a (batch,...) tensor per prompt.
static int read_latents(const char *path, int total, int batch, int C, int h, int w, float *out) {
    sq_safetensors *st;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    const sq_st_entry *e = sq_st_find(st, "latents");
    if (!e && sq_st_count(st) == 1) e = sq_st_at(st, 0);
    int rc = SQ_FAIL;
    if (!e) { sq_errorf("%s: no tensor named 'latents'", path); goto done; }
    int64_t N = e->ndim == 4 ? e->shape[0] : -1;
    if (e->ndim != 4 || (N != total && N != batch) || e->shape[1] != C || e->shape[2] != h || e->shape[3] != w) {
        sq_errorf("%s: tensor '%s' must be (%d or %d, %d, %d, %d) for these settings", path, e->name, total, batch, C, h, w);
        goto done;
    }
    int64_t n1 = (int64_t)C * h * w;
    float *buf = sq_malloc(sizeof(float) * (size_t)(N * n1));
    if (!buf) goto done;
    if (sq_convert_to_f32(buf, e->data, e->dtype, N * n1) != SQ_OK) { free(buf); sq_error_context("%s", path); goto done; }
    for (int k = 0; k < total; k++) memcpy(out + k * n1, buf + (k % N) * n1, sizeof(float) * (size_t)n1);
    free(buf);
    rc = SQ_OK;
done:
    sq_st_close(st);
    return rc;
}

typedef struct {
    sq_progress *bar;
    int64_t offset;
} progress_ctx;

static int on_step(void *ctx, int step, int steps, float timestep, const sq_tensor *latents) {
    progress_ctx *p = ctx;
    char extra[48];
    snprintf(extra, sizeof extra, "t %.0f", (double)timestep);
    sq_progress_update(p->bar, p->offset + step + 1, extra);
    return SQ_OK;
}

int sq_cmd_sample(int argc, char **argv) {
    sample_args a;
    bool help;
    if (parse_args(&a, argc, argv, &help) != SQ_OK) return SQ_FAIL;
    if (help) { sq_options_usage(&sample_table, stdout); return SQ_OK; }
    sq_device dev;
    if (sq_backend_select(a.device, &dev) != SQ_OK) return SQ_FAIL;
    if (a.ema && sd_require_ema(a.scales) != SQ_OK) return SQ_FAIL;   // before the text encoders run

    char **prompts = NULL;
    int n = 0, rc = SQ_FAIL;
    if (a.prompt[0]) {
        prompts = malloc(sizeof(char *));
        prompts[0] = strdup(a.prompt);
        n = 1;
    } else if (read_prompts(a.prompts_file, &prompts, &n) != SQ_OK) {
        return SQ_FAIL;
    }
    const int B = a.batch_size, total = n * B;
    host_cond *conds = calloc((size_t)n, sizeof *conds), neg = {0};
    float *latents = NULL, *images = NULL;
    uint8_t *rgb = NULL;
    sd_mmdit m = {0};
    sd_vae v = {0};
    bool m_loaded = false, v_loaded = false;
    sq_arena arena = {0};
    sq_tensor ctx = {0}, pooled = {0}, nctx = {0}, npooled = {0};
    int T = 0, D = 0, P = 0;

    // settings that need no model: the VAE factor (from its config) and the schedule
    sd_vae_config vc;
    char vae_dir[4200];
    snprintf(vae_dir, sizeof vae_dir, "%.4000s/vae/config.json", a.model);
    if (!sq_is_dir(a.model)) {
        sq_errorf("--model %s: not a folder (expected an SD3/SD3.5 diffusers pipeline folder)", a.model);
        goto done;
    }
    if (access(vae_dir, F_OK) != 0) sd_vae_config_sd3(&vc);
    else if (sd_vae_config_load(&vc, vae_dir) != SQ_OK) goto done;
    const int f = sd_vae_factor(&vc);
    sd_flow_scheduler sch;
    if (sd_scheduler_load(&sch, a.model) != SQ_OK) goto done;
    // the size against the VAE and the MMDiT's position table, before any model loads
    sd_mmdit_config mc;
    const char *mmdit_path = a.transformer[0] ? a.transformer : a.model;
    if (sd_mmdit_config_read(&mc, mmdit_path) != SQ_OK) {
        sq_error_context("%s", a.transformer[0] ? "--transformer" : "--model");
        goto done;
    }
    char origin[4300];
    sd_mmdit_config_origin(mmdit_path, origin, sizeof origin);
    sd_size_limits lim = {f, mc.patch_size, mc.pos_embed_max_size, origin};
    if (sd_check_image_size(a.width, a.height, &lim) != SQ_OK) goto done;
    const int C = vc.latent_channels, h = a.height / f, w = a.width / f;
    const int64_t n_lat = (int64_t)C * h * w, n_img = (int64_t)3 * a.height * a.width;
    latents = sq_malloc(sizeof(float) * (size_t)(total * n_lat));
    if (!latents) goto done;
    if (a.latents[0] && read_latents(a.latents, total, B, C, h, w, latents) != SQ_OK) goto done;
    if (sq_mkdirs(a.out) != SQ_OK) goto done;

    // 1. text encoders: encode everything, then free them
    const bool cfg_on = a.cfg > 1.0f;   // as diffusers: guidance <= 1 runs the conditional branch only
    if (encode_all(&a, dev, prompts, n, conds, cfg_on ? &neg : NULL, &T, &D, &P) != SQ_OK) goto done;

    // 2. the MMDiT: sample every prompt's latents, then free it
    sq_dtype dt = dev == SQ_CUDA ? SQ_BF16 : SQ_F32;
    double t0 = sq_time_now();
    if (sd_load_finetuned_mmdit(&m, a.transformer[0] ? a.transformer : a.model, a.scales[0] ? a.scales : NULL, a.ema, dev, dt,
                                a.out) != SQ_OK) goto done;
    m_loaded = true;
    sq_log_info("loaded the MMDiT%s in %.1f s", a.scales[0] ? (a.ema ? " and the EMA of its fine-tuned scales" : " and its fine-tuned scales") : "",
                sq_time_now() - t0);
    if (m.cfg.joint_attention_dim != D || m.cfg.pooled_projection_dim != P || m.cfg.in_channels != C) {
        sq_errorf("the MMDiT (context %d, pooled %d, %d latent channels) does not fit the text encoders / VAE of %s "
                  "(context %d, pooled %d, %d channels)", m.cfg.joint_attention_dim, m.cfg.pooled_projection_dim,
                  m.cfg.in_channels, a.model, D, P, C);
        goto done;
    }
    size_t bytes = a.arena_mb ? (size_t)a.arena_mb << 20
                              : sd_sample_scratch_bytes(&m.cfg, &vc, B, cfg_on, a.width, a.height, f, T,
                                                        (int)sq_dtype_bytes(dt, 1));
    if (sq_arena_init(&arena, dev, bytes) != SQ_OK) goto done;
    if (sq_tensor_alloc(&ctx, dt, dev, 3, (int64_t[]){1, T, D}) || sq_tensor_alloc(&pooled, dt, dev, 2, (int64_t[]){1, P}))
        goto done;
    if (cfg_on && (sq_tensor_alloc(&nctx, dt, dev, 3, (int64_t[]){1, T, D}) ||
                   sq_tensor_alloc(&npooled, dt, dev, 2, (int64_t[]){1, P}) ||
                   sq_tensor_from_host_f32(&nctx, neg.context) || sq_tensor_from_host_f32(&npooled, neg.pooled)))
        goto done;
    sq_progress bar;
    progress_ctx pc = {&bar, 0};
    sq_progress_begin(&bar, "sampling", (int64_t)n * a.steps);
    for (int i = 0; i < n; i++) {
        if (sq_tensor_from_host_f32(&ctx, conds[i].context) || sq_tensor_from_host_f32(&pooled, conds[i].pooled)) goto done;
        sd_sample_cond cond = {&ctx, &pooled}, uncond = {&nctx, &npooled};
        sd_sample_options o = {.batch = B, .steps = a.steps, .guidance = a.cfg, .width = a.width, .height = a.height,
                               .vae_factor = f, .seed = a.seed + (uint64_t)i * B,
                               .init_latents = a.latents[0] ? latents + (int64_t)i * B * n_lat : NULL,
                               .on_step = on_step, .on_step_ctx = &pc};
        pc.offset = (int64_t)i * a.steps;
        if (sd_sample_latents(&m, &sch, &arena, &cond, cfg_on ? &uncond : NULL, &o, latents + (int64_t)i * B * n_lat) != SQ_OK) {
            sq_progress_end(&bar);
            sq_error_context("prompt %d", i + 1);
            goto done;
        }
    }
    sq_progress_end(&bar);
    sq_log_info("sampled %d image%s in %.1f s (scratch high-water %.2f GiB)", total, total > 1 ? "s" : "",
                sq_time_now() - t0, arena.high_water / 1073741824.0);
    sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&nctx); sq_tensor_free(&npooled);
    sd_mmdit_free(&m);
    m_loaded = false;

    // 3. the VAE (f32 on every device: it is small and runs once per image)
    if (sd_vae_load(&v, a.model, dev, SQ_F32) != SQ_OK) goto done;
    v_loaded = true;
    // one image's floats at a time; the bytes of all of them are kept for the grid
    images = sq_malloc(sizeof(float) * (size_t)n_img);
    rgb = sq_malloc((size_t)(total * n_img));
    if (!images || !rgb) goto done;
    for (int k = 0; k < total; k++) {
        if (sd_decode_latents(&v, &arena, latents + k * n_lat, 1, C, h, w, images) != SQ_OK) {
            sq_error_context("image %d", k);
            goto done;
        }
        sd_images_to_rgb8(images, 1, a.height, a.width, rgb + k * n_img);
    }

    // 4. PNGs with their settings, and the grid
    char model_name[512], scales_name[512], extra[700] = "", path[4300];
    base_name(a.model, model_name, sizeof model_name);
    if (a.scales[0]) {
        base_name(a.scales, scales_name, sizeof scales_name);
        snprintf(extra, sizeof extra, "Scales: %s%s", scales_name, a.ema ? " (EMA)" : "");
    }
    char *first_text = NULL;
    const uint8_t **cells = malloc(sizeof(uint8_t *) * (size_t)total);
    if (!cells) { sq_errorf("out of host memory"); goto done; }
    for (int k = 0; k < total; k++) {
        uint64_t seed = a.seed + (uint64_t)k;
        sd_png_params pp = {.prompt = prompts[k / B], .negative_prompt = a.negative, .steps = a.steps, .cfg = a.cfg,
                            .seed = seed, .width = a.width, .height = a.height, .model = model_name,
                            .extra = extra[0] ? extra : NULL};
        char *text = sd_png_parameters_text(&pp);
        if (!text) { free(cells); free(first_text); goto done; }
        snprintf(path, sizeof path, "%s/%05d_%" PRIu64 ".png", a.out, k, seed);
        cells[k] = rgb + k * n_img;
        if (sd_png_write(path, cells[k], a.width, a.height, "parameters", text) != SQ_OK) {
            free(text); free(cells); free(first_text);
            goto done;
        }
        printf("%s\n", path);
        if (k == 0) first_text = text;
        else free(text);
    }
    uint8_t *grid;
    int gw, gh;
    int grc = sd_grid(cells, total, a.width, a.height, 0, 8, 255, &grid, &gw, &gh);
    free(cells);
    if (grc != SQ_OK) { free(first_text); goto done; }
    snprintf(path, sizeof path, "%s/grid.png", a.out);
    grc = sd_png_write(path, grid, gw, gh, "parameters", first_text);   // A1111 grids carry the first image's text
    free(grid);
    free(first_text);
    if (grc != SQ_OK) goto done;
    printf("%s\n", path);
    rc = SQ_OK;
done:
    if (m_loaded) sd_mmdit_free(&m);
    if (v_loaded) sd_vae_free(&v);
    sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&nctx); sq_tensor_free(&npooled);
    if (arena.base) sq_arena_free(&arena);
    for (int i = 0; i < n; i++) {
        free(prompts[i]);
        if (conds) { free(conds[i].context); free(conds[i].pooled); }
    }
    free(prompts);
    free(conds);
    free(neg.context);
    free(neg.pooled);
    free(latents);
    free(images);
    free(rgb);
    return rc;
}
