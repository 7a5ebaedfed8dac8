// text_encoders/conditioning_load.c: loading SD3's three text encoders and their
// tokenizers (a pipeline folder, or single files + a tokenizer folder), the
// context width rule, and the content hash used as the dataset cache key.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/sha256.h"
#include "text_encoders/conditioning.h"

#define SD3_JOINT_DIM 4096   // SD3/SD3.5 transformers' joint_attention_dim

void sd_text_options_defaults(sd_text_options *o) {
    o->t5_max_length = 256;
    o->use_t5 = true;
    o->t5_int8 = false;
    o->offload = false;
}

static int add_file(sd_text_encoders *te, const char *path) {
    char **f = realloc(te->files, (size_t)(te->n_files + 1) * sizeof *f);
    if (!f) return sq_errorf("out of host memory");
    te->files = f;
    if (!(te->files[te->n_files] = strdup(path))) return sq_errorf("out of host memory");
    te->n_files++;
    return SQ_OK;
}

static bool hashed_name(const char *n) {
    static const char *ext[] = {".safetensors", ".json", ".txt", ".model"};
    size_t l = strlen(n);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t e = strlen(ext[i]);
        if (l > e && !strcmp(n + l - e, ext[i])) return true;
    }
    return false;
}

static int filter(const struct dirent *d) { return d->d_name[0] != '.' && hashed_name(d->d_name); }

// A folder's weight, config and tokenizer files in name order (a file: itself).
static int add_path(sd_text_encoders *te, const char *path) {
    if (!sq_is_dir(path)) return add_file(te, path);
    struct dirent **list;
    int n = scandir(path, &list, filter, alphasort);
    if (n < 0) return sq_error_errno("%s: cannot list the folder", path);
    int rc = SQ_OK;
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, list[i]->d_name);
        if (rc == SQ_OK && sq_is_file(p)) rc = add_file(te, p);
        free(list[i]);
    }
    free(list);
    return rc;
}

static int need_dir(const char *dir, const char *what) {
    if (!sq_is_dir(dir)) return sq_errorf("%s: missing folder (%s)", dir, what);
    return SQ_OK;
}

// D without T5: the transformer's joint_attention_dim when its config sits under
// root (what the pipeline pads to), else SD3's 4096.
static int joint_dim_without_t5(const char *root, int *dim) {
    char p[4200];
    *dim = SD3_JOINT_DIM;
    if (!root) return SQ_OK;
    snprintf(p, sizeof p, "%s/transformer/config.json", root);
    if (!sq_is_file(p)) return SQ_OK;
    sq_config *c;
    if (sq_config_load(&c, p) != SQ_OK) return SQ_FAIL;
    int rc = sq_config_int_range(c, "joint_attention_dim", SD3_JOINT_DIM, 1, 65536, dim);
    sq_config_free(c);
    return rc;
}

// The shared second half of both loaders: tokenizers from tok_root/tokenizer*/, the
// width rule and its checks. clip and t5 models are already loaded.
static int finish(sd_text_encoders *te, const char *tok_root, const char *transformer_root) {
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer", tok_root);
    if (need_dir(p, "CLIP-L tokenizer") || sd_clip_tokenizer_load(&te->tok_l, p) || add_path(te, p)) return SQ_FAIL;
    snprintf(p, sizeof p, "%s/tokenizer_2", tok_root);
    if (need_dir(p, "CLIP-G tokenizer") || sd_clip_tokenizer_load(&te->tok_g, p) || add_path(te, p)) return SQ_FAIL;
    if (te->has_t5) {
        snprintf(p, sizeof p, "%s/tokenizer_3", tok_root);
        if (need_dir(p, "T5 tokenizer") || sd_t5_tokenizer_load(&te->tok_t5, p) || add_path(te, p)) return SQ_FAIL;
        te->context_dim = te->t5.cfg.d_model;
    } else if (joint_dim_without_t5(transformer_root, &te->context_dim) != SQ_OK) {
        return SQ_FAIL;
    }
    int clip_width = te->clip_l.cfg.hidden + te->clip_g.cfg.hidden;
    if (te->context_dim < clip_width)
        return sq_errorf("%s: the context width %d is smaller than CLIP-L + CLIP-G's %d", tok_root, te->context_dim,
                         clip_width);
    if (te->clip_l.cfg.max_positions < SD_CLIP_TOKENS || te->clip_g.cfg.max_positions < SD_CLIP_TOKENS)
        return sq_errorf("%s: the CLIP encoders have fewer than %d positions", tok_root, SD_CLIP_TOKENS);
    if (te->opt.t5_max_length < 1) return sq_errorf("t5_max_length %d must be positive", te->opt.t5_max_length);
    return SQ_OK;
}

static void start(sd_text_encoders *te, sq_device device, sq_dtype dtype, const sd_text_options *opt) {
    memset(te, 0, sizeof *te);
    if (opt) te->opt = *opt;
    else sd_text_options_defaults(&te->opt);
    te->device = device;
    te->dtype = dtype;
}

static int fail(sd_text_encoders *te) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sq_error_message());
    sd_text_encoders_free(te);
    return sq_errorf("%s", msg);
}

// A pipeline diffusers saved without T5 lists "text_encoder_3": [null, null] in its
// model_index.json; diffusers then runs with zeros in T5's part of the context, and so
// does sd-qzo (the same branch as --no-t5).
static bool pipeline_lacks_t5(const char *model) {
    char p[4200];
    snprintf(p, sizeof p, "%s/model_index.json", model);
    sq_config *c = NULL;
    if (!sq_is_file(p) || sq_config_load(&c, p) != SQ_OK) {
        sq_error_clear();   // no or unreadable index: decided by text_encoder_3/ as before
        return false;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive((const cJSON *)sq_config_json(c), "text_encoder_3");
    bool lacks = cJSON_IsNull(e) || (cJSON_IsArray(e) && cJSON_IsNull(cJSON_GetArrayItem(e, 0)));
    sq_config_free(c);
    return lacks;
}

int sd_text_encoders_load(sd_text_encoders *te, const char *model, sq_device device, sq_dtype dtype,
                          const sd_text_options *opt) {
    start(te, device, dtype, opt);
    char p[4200];
    if (!sq_is_dir(model)) return sq_errorf("%s: not a diffusers pipeline folder", model);
    snprintf(p, sizeof p, "%s/text_encoder", model);
    if (need_dir(p, "CLIP-L text encoder") || sd_clip_load_ex(&te->clip_l, p, SD_CLIP_L, device, dtype, te->opt.offload) || add_path(te, p))
        return fail(te);
    snprintf(p, sizeof p, "%s/text_encoder_2", model);
    if (need_dir(p, "CLIP-G text encoder") || sd_clip_load_ex(&te->clip_g, p, SD_CLIP_G, device, dtype, te->opt.offload) || add_path(te, p))
        return fail(te);
    if (te->opt.use_t5 && pipeline_lacks_t5(model)) {
        sq_log_info("%s/model_index.json has no text_encoder_3: running without T5 (zeros in its place), as "
                    "diffusers does", model);
        te->opt.use_t5 = false;
    }
    if (te->opt.use_t5) {
        snprintf(p, sizeof p, "%s/text_encoder_3", model);
        if (need_dir(p, "T5 text encoder; --no-t5 runs without it")) return fail(te);
        if (sd_t5_load_ex(&te->t5, p, device, dtype, te->opt.t5_int8, te->opt.offload) != SQ_OK) return fail(te);
        te->has_t5 = true;
        if (add_path(te, p)) return fail(te);
    }
    if (finish(te, model, model) != SQ_OK) return fail(te);
    return SQ_OK;
}

int sd_text_encoders_load_files(sd_text_encoders *te, const char *clip_l, const char *clip_g, const char *t5,
                                const char *tokenizers, sq_device device, sq_dtype dtype, const sd_text_options *opt) {
    start(te, device, dtype, opt);
    if (!t5) te->opt.use_t5 = false;
    if (sd_clip_load_ex(&te->clip_l, clip_l, SD_CLIP_L, device, dtype, te->opt.offload) || add_path(te, clip_l) ||
        sd_clip_load_ex(&te->clip_g, clip_g, SD_CLIP_G, device, dtype, te->opt.offload) || add_path(te, clip_g))
        return fail(te);
    if (te->opt.use_t5) {
        if (sd_t5_load_ex(&te->t5, t5, device, dtype, te->opt.t5_int8, te->opt.offload) != SQ_OK) return fail(te);
        te->has_t5 = true;
        if (add_path(te, t5)) return fail(te);
    }
    if (need_dir(tokenizers, "tokenizer folder") || finish(te, tokenizers, tokenizers) != SQ_OK) return fail(te);
    return SQ_OK;
}

void sd_text_encoders_free(sd_text_encoders *te) {
    sd_clip_free(&te->clip_l);
    sd_clip_free(&te->clip_g);
    sd_t5_free(&te->t5);   // safe on the zeroed struct when T5 was never loaded
    if (te->tok_l) sd_clip_tokenizer_free(te->tok_l);
    if (te->tok_g) sd_clip_tokenizer_free(te->tok_g);
    if (te->tok_t5) sd_t5_tokenizer_free(te->tok_t5);
    for (int i = 0; i < te->n_files; i++) free(te->files[i]);
    free(te->files);
    memset(te, 0, sizeof *te);
}

int sd_text_context_tokens(const sd_text_encoders *te) { return SD_CLIP_TOKENS + te->opt.t5_max_length; }
int sd_text_context_dim(const sd_text_encoders *te) { return te->context_dim; }
int sd_text_pooled_dim(const sd_text_encoders *te) { return te->clip_l.cfg.projection_dim + te->clip_g.cfg.projection_dim; }

int sd_text_encoders_hash(const sd_text_encoders *te, char hex[65]) {
    sq_sha256 s;
    sq_sha256_init(&s);
    char line[160];
    // what changes the numbers besides the files: T5 on/off, its length and int8, and
    // the compute dtype (bf16 embeddings differ from f32 ones); not offload, whose
    // output is bit-for-bit the resident encoders'
    int n = snprintf(line, sizeof line, "sd-qzo text v1 t5=%d len=%d int8=%d dtype=%s\n", te->has_t5,
                     te->opt.t5_max_length, te->has_t5 && te->opt.t5_int8, sq_dtype_name(te->dtype));
    sq_sha256_update(&s, line, (size_t)n);
    for (int i = 0; i < te->n_files; i++) {
        char h[65];
        if (sq_sha256_file(te->files[i], h) != SQ_OK) return SQ_FAIL;
        sq_sha256_update(&s, h, 64);
    }
    uint8_t d[32];
    sq_sha256_final(&s, d);
    sq_sha256_hex(d, hex);
    return SQ_OK;
}
