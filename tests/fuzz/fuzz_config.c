// tests/fuzz/fuzz_config.c: libFuzzer target for the model config.json readers: the
// transformer (mmdit/config.c), the VAE (vae/config.c), CLIP and T5
// (text_encoders/*_load.c). The first byte picks the model; the rest is config.json,
// loaded beside the real weights of the tiny pipeline fixture (symlinked), so the
// checks of the config against the tensor shapes run too.
#include "core/error.h"
#include "mmdit/model.h"
#include "tests/fuzz/fuzz_util.h"
#include "text_encoders/clip_encoder.h"
#include "text_encoders/t5_encoder.h"
#include "vae/model.h"

#ifndef SQ_FUZZ_FIXTURES
#define SQ_FUZZ_FIXTURES "tests/fixtures"
#endif

static const char *const parts[4] = {"transformer", "vae", "text_encoder", "text_encoder_3"};
static const char *const weights[4] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors",
                                       "model.safetensors", "model.safetensors"};

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *fx = getenv("SQ_FIXTURES") ? getenv("SQ_FIXTURES") : SQ_FUZZ_FIXTURES;
    for (int k = 0; k < 4; k++) {
        char rel[256], src[1024];
        fz_mkdir(parts[k]);
        snprintf(rel, sizeof rel, "%s/%s", parts[k], weights[k]);
        snprintf(src, sizeof src, "%s/pipeline/tiny/%s/%s", fx, parts[k], weights[k]);
        if (access(src, R_OK) != 0 || symlink(src, fz_path(rel)) != 0) { perror(src); abort(); }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size < 1) return 0;
    int k = data[0] % 4;
    char rel[256];
    snprintf(rel, sizeof rel, "%s/config.json", parts[k]);
    fz_write(rel, data + 1, size - 1);
    const char *dir = fz_path(parts[k]);
    if (k == 0) {
        sd_mmdit_config c;
        (void)sd_mmdit_config_read(&c, dir);
        sd_mmdit m;
        if (sd_mmdit_load(&m, dir, SQ_CPU, SQ_F32) == SQ_OK) sd_mmdit_free(&m);
    } else if (k == 1) {
        sd_vae_config c;
        (void)sd_vae_config_load(&c, fz_path(rel));
        sd_vae v;
        if (sd_vae_load(&v, dir, SQ_CPU, SQ_F32) == SQ_OK) sd_vae_free(&v);
    } else if (k == 2) {
        sd_clip m;
        if (sd_clip_load(&m, dir, SD_CLIP_AUTO, SQ_CPU, SQ_F32) == SQ_OK) sd_clip_free(&m);
    } else {
        sd_t5 m;
        if (sd_t5_load(&m, dir, SQ_CPU, SQ_F32, false) == SQ_OK) sd_t5_free(&m);
    }
    return 0;
}
