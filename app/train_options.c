// app/train_options.c: the option table of `sd-qzo train` and its three sources
// (defaults, config file, flags). See app/train_options.h.
#include "app/train_options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/sha256.h"
#include "qzo/qzo.h"

typedef enum { OPT_STR, OPT_INT, OPT_I64, OPT_U64, OPT_FLOAT, OPT_BOOL } opt_type;

typedef struct {
    const char *name;      // flag without "--"
    opt_type type;
    size_t offset;
    size_t size;           // for strings
    bool fingerprint;      // changes the trained result (a resume must match)
    const char *help;
} opt_desc;

#define OFF(field) offsetof(sd_train_options, field)
#define STR(field) OFF(field), sizeof(((sd_train_options *)0)->field)

static const opt_desc options[] = {
    {"model", OPT_STR, STR(model), false, "SD3.5 diffusers folder, single file, or `sd-qzo quantize` output (required)"},
    {"encoders", OPT_STR, STR(encoders), false, "pipeline folder with vae/ and text encoders when --model is a single file"},
    {"images", OPT_STR, STR(images), false, "folder of training images: PNG, JPEG, BMP (required)"},
    {"captions", OPT_STR, STR(captions), false, "captions file (filename<TAB>caption, or one line per image in sorted order); default: a .txt beside each image"},
    {"output", OPT_STR, STR(output), false, "run folder: checkpoints, logs, previews, report.html (required)"},
    {"resume", OPT_STR, STR(resume), false, "continue from a checkpoint (e.g. OUT/checkpoint.safetensors)"},
    {"recursive", OPT_BOOL, OFF(recursive), 0, true, "also read images in sub-folders"},
    {"skip-bad-images", OPT_BOOL, OFF(skip_bad_images), 0, true, "warn and skip images that do not decode instead of stopping"},
    {"resolution", OPT_INT, OFF(resolution), 0, true, "training resolution (pixels, multiple of 64)"},
    {"buckets", OPT_BOOL, OFF(buckets), 0, true, "aspect-ratio buckets (false: centre-cropped squares)"},
    {"random-crop", OPT_BOOL, OFF(random_crop), 0, true, "random instead of centre crop (fixed per image, so latents cache)"},
    {"flip", OPT_BOOL, OFF(flip), 0, true, "random horizontal flips"},
    {"caption-dropout", OPT_FLOAT, OFF(caption_dropout), 0, true, "probability of training on the empty prompt (keeps CFG working)"},
    {"shuffle-tags", OPT_BOOL, OFF(shuffle_tags), 0, true, "shuffle comma-separated tags of each caption per epoch"},
    {"keep-tags", OPT_INT, OFF(keep_tags), 0, true, "leading tags kept in place when shuffling"},
    {"cache", OPT_BOOL, OFF(cache), 0, false, "cache latents and text embeddings on disk (reused across runs)"},
    {"cache-dir", OPT_STR, STR(cache_dir), false, "cache folder (default OUT/cache)"},
    {"t5", OPT_BOOL, OFF(t5), 0, true, "use the T5 encoder (false: zeros in its place, as diffusers allows)"},
    {"t5-int8", OPT_BOOL, OFF(t5_int8), 0, true, "T5 with int8 weights (4.9 GB instead of 9.5 GB for T5-XXL; --no-t5-int8 for bf16)"},
    {"t5-max-length", OPT_INT, OFF(t5_max_length), 0, true, "T5 tokens per prompt"},
    {"low-vram", OPT_BOOL, OFF(low_vram), 0, false, "stream text-encoder blocks from host memory: the text phase needs <1 GB of GPU memory instead of ~7 GB (SD3.5), encoding ~0.3 s slower per batch; --no-low-vram keeps them on the GPU"},
    {"batch-size", OPT_INT, OFF(batch_size), 0, true, "images per QZO step"},
    {"steps", OPT_I64, OFF(steps), 0, false, "QZO steps to run in total"},
    {"lr", OPT_FLOAT, OFF(lr), 0, true, "learning rate of the scales"},
    {"eps", OPT_FLOAT, OFF(eps), 0, true, "perturbation size of the scales"},
    {"clip", OPT_FLOAT, OFF(clip), 0, true, "clip of the projected gradient |(L+ - L-)/2eps| (<= 0: off)"},
    {"adaptive-clip", OPT_FLOAT, OFF(adaptive_clip), 0, true, "> 0: clip at this multiple of the running median |d|"},
    {"queries", OPT_INT, OFF(queries), 0, true, "perturbations per step (2 forward passes each)"},
    {"group-size", OPT_INT, OFF(group_size), 0, true, "int4 group size: 32, 64 or 128"},
    {"seed", OPT_U64, OFF(seed), 0, true, "seed of perturbations, noise, timesteps and data order"},
    {"lr-schedule", OPT_STR, STR(lr_schedule), true, "constant, cosine or linear"},
    {"warmup-steps", OPT_INT, OFF(warmup_steps), 0, true, "linear learning-rate warm-up"},
    {"timestep-sampling", OPT_STR, STR(timestep_sampling), true, "logit_normal, uniform or mode"},
    {"logit-mean", OPT_FLOAT, OFF(logit_mean), 0, true, "mean of the logit-normal timestep density"},
    {"logit-std", OPT_FLOAT, OFF(logit_std), 0, true, "std of the logit-normal timestep density"},
    {"mode-scale", OPT_FLOAT, OFF(mode_scale), 0, true, "scale of the 'mode' timestep density"},
    {"shift", OPT_FLOAT, OFF(shift), 0, true, "timestep shift (<= 0: the model scheduler's, 3.0 for SD3.5)"},
    {"save-every", OPT_I64, OFF(save_every), 0, false, "checkpoint every N steps (and on Ctrl-C)"},
    {"sample-every", OPT_I64, OFF(sample_every), 0, false, "preview images every N steps (0: off)"},
    {"val-every", OPT_I64, OFF(val_every), 0, false, "validation loss every N steps (0: off)"},
    {"sample-prompts", OPT_STR, STR(sample_prompts), false, "preview prompts, one per line (default: first captions)"},
    {"sample-steps", OPT_INT, OFF(sample_steps), 0, false, "sampler steps for previews"},
    {"sample-cfg", OPT_FLOAT, OFF(sample_cfg), 0, false, "guidance scale for previews"},
    {"val-images", OPT_STR, STR(val_images), false, "held-out images for the validation loss"},
    {"val-captions", OPT_STR, STR(val_captions), false, "captions of --val-images (default: .txt beside each)"},
    {"device", OPT_STR, STR(device), false, "auto, cpu or cuda"},
    {"threads", OPT_INT, OFF(threads), 0, false, "CPU threads (0: all cores)"},
    {"overwrite", OPT_BOOL, OFF(overwrite), 0, false, "start afresh in an OUT that holds a different run"},
};
static const int n_options = (int)(sizeof options / sizeof options[0]);

void sd_train_options_defaults(sd_train_options *o) {
    memset(o, 0, sizeof *o);
    o->resolution = 1024;
    o->buckets = true;
    o->caption_dropout = 0.05f;   // a little unconditional training keeps CFG intact
    o->cache = true;
    o->t5 = true;
    o->t5_int8 = true;           // T5-XXL in int8: 4.9 GB instead of 9.5 GB while encoding
    o->low_vram = true;          // encoders run once per dataset: streaming costs seconds, saves ~6 GB
    o->t5_max_length = 256;      // SD3.5's max_sequence_length
    o->batch_size = 1;
    o->steps = 1000;
    sq_qzo_config qzo;           // the QZO hyper-parameters' one home: qzo/qzo.c
    sq_qzo_config_defaults(&qzo);
    o->lr = qzo.lr;
    o->eps = qzo.eps;
    o->clip = qzo.clip;
    o->adaptive_clip = qzo.adaptive_clip;
    o->queries = qzo.queries;
    o->group_size = 64;
    o->seed = qzo.seed;
    strcpy(o->lr_schedule, sq_lr_schedule_name(qzo.schedule));   // at most 8 characters
    o->warmup_steps = qzo.warmup_steps;
    strcpy(o->timestep_sampling, "logit_normal");
    o->logit_mean = 0.0f;
    o->logit_std = 1.0f;
    o->mode_scale = 1.29f;
    o->shift = 0.0f;
    o->save_every = 250;
    o->sample_every = 250;
    o->val_every = 50;
    o->sample_steps = 28;
    o->sample_cfg = 4.5f;
    strcpy(o->device, "auto");
}

static const opt_desc *find_option(const char *key) {
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = key[i] == '_' ? '-' : key[i];
    for (int i = 0; i < n_options; i++)
        if (!strcmp(options[i].name, norm)) return &options[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) { *out = true; return SQ_OK; }
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) { *out = false; return SQ_OK; }
    return SQ_FAIL;
}

int sd_train_options_set(sd_train_options *o, const char *key, const char *value) {
    const opt_desc *d = find_option(key);
    if (!d) return sq_errorf("unknown option '%s' (sd-qzo train --help lists them)", key);
    char *field = (char *)o + d->offset, *end = NULL;
    errno = 0;
    switch (d->type) {
    case OPT_STR:
        if (strlen(value) >= d->size) return sq_errorf("--%s: value longer than %zu characters", d->name, d->size - 1);
        strcpy(field, value);
        return SQ_OK;
    case OPT_INT: {
        long v = strtol(value, &end, 10);
        if (!*value || *end || errno || v < -2147483647L || v > 2147483647L)
            return sq_errorf("--%s wants an integer, not '%s'", d->name, value);
        *(int *)field = (int)v;
        return SQ_OK;
    }
    case OPT_I64: {
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno) return sq_errorf("--%s wants an integer, not '%s'", d->name, value);
        *(int64_t *)field = v;
        return SQ_OK;
    }
    case OPT_U64: {
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno || value[0] == '-') return sq_errorf("--%s wants a non-negative integer, not '%s'", d->name, value);
        *(uint64_t *)field = v;
        return SQ_OK;
    }
    case OPT_FLOAT: {
        float v = strtof(value, &end);
        if (!*value || *end || errno || !isfinite(v)) return sq_errorf("--%s wants a number, not '%s'", d->name, value);
        *(float *)field = v;
        return SQ_OK;
    }
    case OPT_BOOL:
        if (parse_bool(value, (bool *)field) != SQ_OK) return sq_errorf("--%s wants true or false, not '%s'", d->name, value);
        return SQ_OK;
    }
    return SQ_FAIL;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { sq_error_errno("cannot open %s", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 && n < (64 << 20) ? malloc((size_t)n + 1) : NULL;
    if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(s);
        sq_errorf("cannot read %s", path);
        return NULL;
    }
    fclose(f);
    s[n] = 0;
    return s;
}

static int load_json(sd_train_options *o, const char *path, const char *text) {
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sq_errorf("%s: not a JSON object", path);
    }
    int rc = SQ_OK;
    cJSON *it;
    cJSON_ArrayForEach(it, root) {
        char buf[1100];
        if (cJSON_IsString(it)) snprintf(buf, sizeof buf, "%s", it->valuestring);
        else if (cJSON_IsBool(it)) snprintf(buf, sizeof buf, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsNumber(it)) {
            double v = it->valuedouble;
            if (v == floor(v) && fabs(v) < 9e15) snprintf(buf, sizeof buf, "%lld", (long long)v);
            else snprintf(buf, sizeof buf, "%.9g", v);
        } else {
            rc = sq_errorf("%s: value of '%s' must be a string, number or boolean", path, it->string);
            break;
        }
        if (sd_train_options_set(o, it->string, buf) != SQ_OK) {
            rc = sq_error_context("%s", path);
            break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

// Flat TOML: `key = value` lines, "# comments", quoted or bare values. Tables and
// arrays are refused by name rather than misread.
static int load_toml(sd_train_options *o, const char *path, char *text) {
    int line_no = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        line_no++;
        char *l = trim(line);
        if (!*l || *l == '#') continue;
        if (*l == '[') return sq_errorf("%s:%d: TOML tables are not used by sd-qzo; write flat key = value lines", path, line_no);
        char *eq = strchr(l, '=');
        if (!eq) return sq_errorf("%s:%d: expected key = value", path, line_no);
        *eq = 0;
        char *key = trim(l), *val = trim(eq + 1);
        if (*val == '"' || *val == '\'') {
            char q = *val++;
            char *close = strchr(val, q);
            if (!close) return sq_errorf("%s:%d: unterminated string", path, line_no);
            *close = 0;
        } else {
            char *hash = strchr(val, '#');
            if (hash) *hash = 0;
            val = trim(val);
            if (*val == '[') return sq_errorf("%s:%d: arrays are not used by sd-qzo options", path, line_no);
        }
        if (sd_train_options_set(o, key, val) != SQ_OK) return sq_error_context("%s:%d", path, line_no);
    }
    return SQ_OK;
}

int sd_train_options_load_file(sd_train_options *o, const char *path) {
    char *text = read_text(path);
    if (!text) return SQ_FAIL;
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    int rc = *p == '{' ? load_json(o, path, text) : load_toml(o, path, text);
    free(text);
    return rc;
}

int sd_train_options_parse(sd_train_options *o, int argc, char **argv, bool *help) {
    *help = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { *help = true; return SQ_OK; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return sq_errorf("--config needs a file");
            if (sd_train_options_load_file(o, argv[i + 1]) != SQ_OK) return SQ_FAIL;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) { i++; continue; }
        if (strncmp(a, "--", 2)) return sq_errorf("unexpected argument '%s' (options start with --)", a);
        const char *name = a + 2;
        char key[64];
        const char *eqv = strchr(name, '=');
        size_t klen = eqv ? (size_t)(eqv - name) : strlen(name);
        if (klen >= sizeof key) return sq_errorf("unknown option '%s'", a);
        memcpy(key, name, klen);
        key[klen] = 0;
        const opt_desc *d = find_option(key);
        if (!d && !strncmp(key, "no-", 3) && (d = find_option(key + 3)) && d->type == OPT_BOOL) {
            if (eqv) return sq_errorf("--%s takes no value", key);
            *(bool *)((char *)o + d->offset) = false;
            continue;
        }
        if (!d) return sq_errorf("unknown option '%s' (sd-qzo train --help lists them)", a);
        const char *value;
        if (eqv) value = eqv + 1;
        else if (d->type == OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &(bool){0}) != SQ_OK)) value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else return sq_errorf("--%s needs a value", key);
        if (sd_train_options_set(o, key, value) != SQ_OK) return SQ_FAIL;
    }
    return SQ_OK;
}

int sd_train_options_validate(const sd_train_options *o) {
    if (!o->model[0]) return sq_errorf("--model is required (an SD3.5 diffusers folder or checkpoint)");
    if (!o->images[0]) return sq_errorf("--images is required (a folder of training images)");
    if (!o->output[0]) return sq_errorf("--output is required (the run folder)");
    if (o->resolution < 64 || o->resolution % 64) return sq_errorf("--resolution must be a positive multiple of 64, not %d", o->resolution);
    if (o->batch_size < 1) return sq_errorf("--batch-size must be at least 1");
    if (o->steps < 1) return sq_errorf("--steps must be at least 1");
    if (o->queries < 1) return sq_errorf("--queries must be at least 1");
    if (!(o->lr >= 0)) return sq_errorf("--lr must be >= 0");
    if (!(o->eps > 0)) return sq_errorf("--eps must be > 0");
    if (o->group_size != 32 && o->group_size != 64 && o->group_size != 128) return sq_errorf("--group-size must be 32, 64 or 128");
    if (o->caption_dropout < 0 || o->caption_dropout > 1) return sq_errorf("--caption-dropout must be in [0, 1]");
    if (strcmp(o->lr_schedule, "constant") && strcmp(o->lr_schedule, "cosine") && strcmp(o->lr_schedule, "linear"))
        return sq_errorf("--lr-schedule must be constant, cosine or linear, not '%s'", o->lr_schedule);
    if (strcmp(o->timestep_sampling, "logit_normal") && strcmp(o->timestep_sampling, "uniform") && strcmp(o->timestep_sampling, "mode"))
        return sq_errorf("--timestep-sampling must be logit_normal, uniform or mode, not '%s'", o->timestep_sampling);
    if (!(o->logit_std > 0)) return sq_errorf("--logit-std must be > 0");
    if (o->t5_max_length < 1 || o->t5_max_length > 512) return sq_errorf("--t5-max-length must be in 1..512");
    if (o->save_every < 1) return sq_errorf("--save-every must be at least 1");
    if (o->sample_every < 0 || o->val_every < 0) return sq_errorf("--sample-every and --val-every must be >= 0");
    if (o->sample_steps < 1) return sq_errorf("--sample-steps must be at least 1");
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))
        return sq_errorf("--device must be auto, cpu or cuda, not '%s'", o->device);
    return SQ_OK;
}

static void format_value(const sd_train_options *o, const opt_desc *d, char *buf, size_t size) {
    const char *field = (const char *)o + d->offset;
    switch (d->type) {
    case OPT_STR: snprintf(buf, size, "%s", field); break;
    case OPT_INT: snprintf(buf, size, "%d", *(const int *)field); break;
    case OPT_I64: snprintf(buf, size, "%lld", (long long)*(const int64_t *)field); break;
    case OPT_U64: snprintf(buf, size, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case OPT_FLOAT: snprintf(buf, size, "%.9g", *(const float *)field); break;
    case OPT_BOOL: snprintf(buf, size, "%s", *(const bool *)field ? "true" : "false"); break;
    }
}

void sd_train_options_usage(FILE *f) {
    sd_train_options def;
    sd_train_options_defaults(&def);
    fprintf(f, "usage: sd-qzo train --model M --images DIR [--captions FILE] --output OUT [options]\n"
               "       sd-qzo train --config run.toml|run.json [options]\n\n"
               "QZO fine-tuning: the MMDiT stays int4 and only its quantisation scales are trained, from two\n"
               "forward passes per step. Ctrl-C saves a checkpoint; --resume OUT/checkpoint.safetensors continues.\n\n"
               "options (config-file keys are the same names):\n");
    for (int i = 0; i < n_options; i++) {
        char def_s[64];
        format_value(&def, &options[i], def_s, sizeof def_s);
        char flag[48];
        snprintf(flag, sizeof flag, "--%s", options[i].name);
        fprintf(f, "  %-20s %s", flag, options[i].help);
        if (def_s[0]) fprintf(f, " [%s]", def_s);
        fputc('\n', f);
    }
}

char *sd_train_options_json(const sd_train_options *o) {
    cJSON *root = cJSON_CreateObject();
    for (int i = 0; i < n_options; i++) {
        const opt_desc *d = &options[i];
        const char *field = (const char *)o + d->offset;
        switch (d->type) {
        case OPT_STR: cJSON_AddStringToObject(root, d->name, field); break;
        case OPT_INT: cJSON_AddNumberToObject(root, d->name, *(const int *)field); break;
        case OPT_I64: cJSON_AddNumberToObject(root, d->name, (double)*(const int64_t *)field); break;
        case OPT_U64: {
            // seeds above 2^53 would lose digits as JSON numbers: store them as strings
            char buf[32];
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)field);
            cJSON_AddStringToObject(root, d->name, buf);
            break;
        }
        case OPT_FLOAT: cJSON_AddNumberToObject(root, d->name, *(const float *)field); break;
        case OPT_BOOL: cJSON_AddBoolToObject(root, d->name, *(const bool *)field); break;
        }
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

void sd_train_options_fingerprint(const sd_train_options *o, char hex[65]) {
    sq_sha256 h;
    sq_sha256_init(&h);
    for (int i = 0; i < n_options; i++) {
        if (!options[i].fingerprint) continue;
        char buf[1100];
        format_value(o, &options[i], buf, sizeof buf);
        sq_sha256_update(&h, options[i].name, strlen(options[i].name) + 1);
        sq_sha256_update(&h, buf, strlen(buf) + 1);
    }
    uint8_t digest[32];
    sq_sha256_final(&h, digest);
    sq_sha256_hex(digest, hex);
}
