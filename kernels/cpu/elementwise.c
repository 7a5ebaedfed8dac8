// kernels/cpu/elementwise.c: elementwise arithmetic and the adaLN helpers
// (modulate: x·(1+scale)+shift; gated residual: x += gate·y), per-sample vectors
// broadcast over tokens. All allow out == input.
#include "kernels/cpu/cpu_ops.h"

void cpu_add(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_sub(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] - b[i];
}

void cpu_mul(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void cpu_scale(float *out, const float *x, float alpha, float beta, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = alpha * x[i] + beta;
}

void cpu_axpby(float *out, float alpha, const float *a, float beta, const float *b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = alpha * a[i] + beta * b[i];
}

void cpu_fill(float *out, float value, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = value;
}

void cpu_modulate(float *out, const float *x, const float *shift, const float *scale, int64_t B, int64_t T, int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * T; r++) {
        int64_t b = r / T;
        const float *sh = shift + b * C, *sc = scale + b * C;
        for (int64_t i = 0; i < C; i++) out[r * C + i] = x[r * C + i] * (1.0f + sc[i]) + sh[i];
    }
}

void cpu_gated_add(float *x, const float *gate, const float *y, int64_t B, int64_t T, int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * T; r++) {
        const float *g = gate ? gate + (r / T) * C : 0;
        for (int64_t i = 0; i < C; i++) x[r * C + i] += g ? g[i] * y[r * C + i] : y[r * C + i];
    }
}
