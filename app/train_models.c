// app/train_models.c: where a training run gets its frozen models: the VAE and the
// text encoders from the pipeline folder (--model DIR, or --encoders DIR when
// --model is a single file), or, for `--model synthetic:large|large-turbo|medium`,
// SD3.5's real shapes with random weights (measuring a whole run's memory and time
// without a download; --encoders then only supplies tokenizer folders).
#include <stdio.h>
#include <string.h>

#include "app/train.h"
#include "core/error.h"
#include "core/sha256.h"
#include "text_encoders/synthetic.h"

int sd_train_parse_synthetic(const char *model, bool *synthetic, sd_mmdit_preset *preset) {
    *synthetic = !strncmp(model, "synthetic:", 10);
    if (!*synthetic) return SQ_OK;
    const char *p = model + 10;
    if (!strcmp(p, "large")) *preset = SD_MMDIT_LARGE;
    else if (!strcmp(p, "large-turbo")) *preset = SD_MMDIT_LARGE_TURBO;
    else if (!strcmp(p, "medium")) *preset = SD_MMDIT_MEDIUM;
    else return sq_errorf("--model %s: synthetic models are synthetic:large, synthetic:large-turbo or synthetic:medium", model);
    return SQ_OK;
}

int sd_train_vae_config(const sd_trainer *t, sd_vae_config *c) {
    if (t->synthetic) {
        sd_vae_config_sd3(c);
        return SQ_OK;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/vae/config.json", t->components);
    if (sd_vae_config_load(c, path) != SQ_OK) return sq_error_context("reading the VAE config");
    return SQ_OK;
}

int sd_train_vae_hash(const sd_trainer *t, char hex[65]) {
    if (t->synthetic) {
        snprintf(hex, 65, "%064llx", (unsigned long long)(t->opt.seed + 1));
        return SQ_OK;
    }
    // The VAE is small (SD3's: 168 MB), so its content hash is cheap and exact.
    char path[1200];
    snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors", t->components);
    if (sq_sha256_file(path, hex) != SQ_OK) return sq_error_context("hashing the VAE");
    return SQ_OK;
}

int sd_train_load_vae(const sd_trainer *t, sd_vae *v) {
    if (t->synthetic) {
        sd_vae_config c;
        sd_vae_config_sd3(&c);
        return sd_vae_init_synthetic(v, &c, t->device, t->dtype, t->opt.seed + 1);
    }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/vae", t->components);
    if (sd_vae_load(v, dir, t->device, t->dtype) != SQ_OK) return sq_error_context("loading the VAE");
    return SQ_OK;
}

int sd_train_load_text(const sd_trainer *t, sd_text_encoders *te) {
    sd_text_options to;
    sd_text_options_defaults(&to);
    to.use_t5 = t->opt.t5;
    to.t5_int8 = t->opt.t5_int8;
    to.t5_max_length = t->opt.t5_max_length;
    to.offload = t->opt.low_vram;
    int rc = t->synthetic ? sd_text_encoders_init_synthetic(te, t->components, t->device, t->dtype, &to, t->opt.seed + 2)
                          : sd_text_encoders_load(te, t->components, t->device, t->dtype, &to);
    return rc == SQ_OK ? SQ_OK : sq_error_context("loading the text encoders");
}

int sd_train_load_mmdit(const sd_trainer *t, sd_mmdit *m) {
    sd_mmdit_config c;
    sd_mmdit_config_preset(&c, t->preset);
    if (sd_mmdit_init_synthetic(m, &c, t->device, t->dtype, t->opt.group_size, t->opt.seed + 3) != SQ_OK)
        return sq_error_context("synthetic MMDiT");
    // a base hash, so checkpoints of synthetic runs are refused by real models
    char text[1200];
    snprintf(text, sizeof text, "%s group=%d seed=%llu", t->opt.model, t->opt.group_size, (unsigned long long)t->opt.seed);
    sq_sha256 h;
    sq_sha256_init(&h);
    sq_sha256_update(&h, text, strlen(text));
    uint8_t d[32];
    sq_sha256_final(&h, d);
    sq_sha256_hex(d, m->source_sha256);
    return SQ_OK;
}
