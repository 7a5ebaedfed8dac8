// kernels/cpu/activation.c: GELU (erf and tanh forms), SiLU, quick GELU.
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_gelu(float *out, const float *x, int64_t n, bool tanh_approx) {
    if (tanh_approx) {
        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch's approximate="tanh"
        const float k = 0.7978845608028654f;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            out[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            out[i] = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
        }
    }
}

void cpu_silu(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
}

void cpu_quick_gelu(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

