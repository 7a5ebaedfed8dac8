// qzo/noise.c: see qzo/noise.h.
#include "qzo/noise.h"

#include <math.h>
#include <string.h>

#include "kernels/rng.h"

// Sample b's draws sit in their own counter range: 2^40 values per sample is far
// beyond any latent (1024² SD3: 262144 values).
static uint64_t sample_base(int b) { return (uint64_t)b << 40; }

void sd_draw_noise(float *out, int64_t n, uint64_t key, uint64_t step, int b) {
    uint64_t base = sample_base(b) >> 2;
    for (int64_t i = 0; i < n; i += 4) {
        float z[4];
        sq_rng_normal4(key, step, base + (uint64_t)(i >> 2), z);
        for (int j = 0; j < 4 && i + j < n; j++) out[i + j] = z[j];
    }
}

float sd_draw_sigma(const sd_sigma_config *c, uint64_t key, uint64_t step, int b) {
    sq_philox_out o = sq_philox4x32_10((uint32_t)b, 0, (uint32_t)step, (uint32_t)(step >> 32), (uint32_t)key,
                                       (uint32_t)(key >> 32));
    double u = ((double)(o.v[0] >> 8) + 0.5) / 16777216.0;   // (0, 1), never 0 or 1
    if (c->sampling == SD_T_LOGIT_NORMAL) {
        float z0, z1;
        sq_rng_box_muller(o.v[1], o.v[2], &z0, &z1);
        double x = c->logit_mean + c->logit_std * (double)z0;
        u = 1.0 / (1.0 + exp(-x));
    } else if (c->sampling == SD_T_MODE) {
        // SD3 paper eq. 20: f_mode(u) = 1 - u - s·(cos²(πu/2) - 1 + u)
        double cu = cos(M_PI * u / 2.0);
        u = 1.0 - u - c->mode_scale * (cu * cu - 1.0 + u);
    }
    double s = c->shift > 0 ? c->shift : 1.0;
    double sigma = s * u / (1.0 + (s - 1.0) * u);
    // keep σ strictly inside (0, 1): σ = 1 would make x_t pure noise with x0 unseen
    if (sigma < 1e-5) sigma = 1e-5;
    if (sigma > 1.0 - 1e-5) sigma = 1.0 - 1e-5;
    return (float)sigma;
}
