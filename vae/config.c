// vae/config.c: the VAE's config from vae/config.json (diffusers defaults where a
// key is absent) or SD3's published values for a single-file checkpoint.
#include <stdbool.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "vae/model.h"
#include "vae/vae_internal.h"

void sd_vae_config_sd3(sd_vae_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = c->out_channels = 3;
    c->latent_channels = 16;
    c->levels = 4;
    c->block_out[0] = 128;
    c->block_out[1] = 256;
    c->block_out[2] = c->block_out[3] = 512;
    c->layers_per_block = 2;
    c->groups = 32;
    c->scaling_factor = 1.5305f;
    c->shift_factor = 0.0609f;
    c->mid_attention = true;
}

int sd_vae_config_load(sd_vae_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    sq_config *j;
    if (sq_config_load(&j, path) != SQ_OK) return SQ_FAIL;
    int rc = SQ_OK;
    // diffusers' defaults where a key is absent; each present value must be an integer
    // within sane limits for its meaning (norm_num_groups divides every block width below).
    struct { const char *key; int64_t def, hi; int *dst; } keys[] = {
        {"in_channels", 3, 64, &c->in_channels},
        {"out_channels", 3, 64, &c->out_channels},
        {"latent_channels", 4, 1024, &c->latent_channels},
        {"layers_per_block", 1, 64, &c->layers_per_block},
        {"norm_num_groups", 32, 4096, &c->groups},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (sq_config_int_range(j, keys[i].key, keys[i].def, 1, keys[i].hi, keys[i].dst) != SQ_OK) { rc = SQ_FAIL; goto done; }
    double scaling = sq_config_double_or(j, "scaling_factor", 0.18215);
    double shift = sq_config_double_or(j, "shift_factor", 0.0);
    c->mid_attention = sq_config_bool_or(j, "mid_block_add_attention", true);
    bool quant_conv = sq_config_bool_or(j, "use_quant_conv", true) || sq_config_bool_or(j, "use_post_quant_conv", true);
    if (sq_config_check(j) != SQ_OK) { rc = SQ_FAIL; goto done; }
    if (!(scaling > 0 && scaling <= 1000)) { rc = sq_errorf("%s: key 'scaling_factor' is %g, not in (0, 1000]", path, scaling); goto done; }
    if (!(shift >= -1000 && shift <= 1000)) { rc = sq_errorf("%s: key 'shift_factor' is %g, not in [-1000, 1000]", path, shift); goto done; }
    c->scaling_factor = (float)scaling;
    c->shift_factor = (float)shift;
    int64_t bo[SD_VAE_MAX_LEVELS];
    int n = 0;
    if (sq_config_int_array(j, "block_out_channels", bo, SD_VAE_MAX_LEVELS, &n) != SQ_OK) { rc = SQ_FAIL; goto done; }
    if (n == 0) { bo[0] = 64; n = 1; }
    c->levels = n;
    for (int i = 0; i < n; i++) {
        c->block_out[i] = (int)bo[i];
        if (bo[i] <= 0 || bo[i] > 65536 || bo[i] % c->groups) { rc = sq_errorf("%s: key 'block_out_channels' entry %lld is not a positive multiple of norm_num_groups %d (at most 65536)", path, (long long)bo[i], c->groups); goto done; }
    }
    if (quant_conv)
        rc = sq_errorf("%s: quant_conv / post_quant_conv VAEs (SD1/SDXL) are not supported; SD3's VAE has none", path);
done:
    sq_config_free(j);
    return rc;
}

int sd_vae_factor(const sd_vae_config *c) { return 1 << (c->levels - 1); }

size_t sd_vae_scratch_estimate(const sd_vae_config *c, int B, int H, int W, int elem_bytes) {
    int widest = c->block_out[0];
    if (c->levels > 1 && c->block_out[1] > widest) widest = c->block_out[1];
    size_t full = (size_t)B * (size_t)H * (size_t)W * (size_t)widest * (size_t)elem_bytes;
    int f = sd_vae_factor(c);
    size_t tokens = (size_t)(H / f) * (size_t)(W / f);
    size_t attention = c->mid_attention ? (size_t)B * tokens * tokens * 4 : 0;
    return 7 * full + attention + ((size_t)64 << 20);
}
