// kernels/cpu/norm.c: LayerNorm, RMSNorm and GroupNorm in fp32 with statistics
// accumulated in double (two passes: mean, then centred variance), matching
// PyTorch's biased variance.
#include <math.h>
#include <stddef.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_layernorm(float *out, const float *x, const float *w, const float *b, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *o = out + r * C;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < C; i++) mean += xr[i];
        mean /= (double)C;
        for (int64_t i = 0; i < C; i++) var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        var /= (double)C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int64_t i = 0; i < C; i++) {
            float y = (xr[i] - m) * rstd;
            if (w) y *= w[i];
            if (b) y += b[i];
            o[i] = y;
        }
    }
}

// The two ops one after the other, so the fused op is their arithmetic exactly (the
// CPU is the reference the fused CUDA kernel is tested against, not a fast path).
void cpu_layernorm_modulate(float *out, const float *x, const float *shift, const float *scale, int64_t B, int64_t T,
                            int64_t C, float eps) {
    cpu_layernorm(out, x, NULL, NULL, B * T, C, eps);
    cpu_modulate(out, out, shift, scale, B, T, C);
}

void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *o = out + r * C;
        double ss = 0;
        for (int64_t i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float rr = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t i = 0; i < C; i++) o[i] = w ? xr[i] * rr * w[i] : xr[i] * rr;
    }
}

void cpu_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t B, int64_t C, int64_t HW,
                   int groups, float eps) {
    int64_t cpg = C / groups;
#pragma omp parallel for schedule(static)
    for (int64_t bg = 0; bg < B * groups; bg++) {
        int64_t bi = bg / groups, g = bg % groups;
        const float *xg = x + (bi * C + g * cpg) * HW;
        float *og = out + (bi * C + g * cpg) * HW;
        int64_t n = cpg * HW;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mean += xg[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) var += ((double)xg[i] - mean) * ((double)xg[i] - mean);
        var /= (double)n;
        float rstd = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
        for (int64_t c = 0; c < cpg; c++) {
            int64_t ch = g * cpg + c;
            float sw = w ? w[ch] : 1.0f, sb = b ? b[ch] : 0.0f;
            for (int64_t i = 0; i < HW; i++) og[c * HW + i] = (xg[c * HW + i] - m) * rstd * sw + sb;
        }
    }
}
