// kernels/cpu/int8.c: the reference per-row absmax int8 quantiser and its
// dequantisation (kernels/int8.h). Plain loops; the CUDA dequantisation must give
// these values rounded once to its output dtype.
#include <math.h>

#include "kernels/cpu/cpu_int8.h"

double cpu_quantize_i8_rows(const float *w, int64_t nout, int64_t k, int8_t *codes, float *scales) {
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t n = 0; n < nout; n++) {
        const float *x = w + n * k;
        float amax = 0;
        for (int64_t i = 0; i < k; i++) amax = fmaxf(amax, fabsf(x[i]));
        float s = amax / 127.0f;
        scales[n] = s;
        for (int64_t i = 0; i < k; i++) {
            float q = s > 0 ? fminf(fmaxf(rintf(x[i] / s), -127.0f), 127.0f) : 0.0f;
            codes[n * k + i] = (int8_t)q;
            double d = (double)x[i] - (double)(q * s);
            total += d * d;
        }
    }
    return total;
}

void cpu_dequant_i8(float *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < nout; n++)
        for (int64_t i = 0; i < k; i++) out[n * k + i] = scales[n] * (float)codes[n * k + i];
}
