// kernels/cpu/reduce.c: sums in double, in a fixed order (per-thread partial sums
// over static chunks, combined in thread order), so a loss is reproducible run to
// run for a given thread count.
#include "kernels/cpu/cpu_ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_THREADS 256

double cpu_sum_sq_diff(const float *a, const float *b, int64_t n) {
    double part[MAX_THREADS] = {0};
    int nt = 1;
#pragma omp parallel
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#pragma omp single
        nt = omp_get_num_threads();
#endif
        double s = 0;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
        if (t < MAX_THREADS) part[t] = s;
    }
    double s = 0;
    for (int t = 0; t < nt && t < MAX_THREADS; t++) s += part[t];
    return s;
}

// Pixel-major: each pixel's channel sum first, then weighted, so w is read once.
double cpu_weighted_sum_sq_diff(const float *a, const float *b, const float *w, int64_t C, int64_t P, double *wsum) {
    double part[MAX_THREADS] = {0}, wpart[MAX_THREADS] = {0};
    int nt = 1;
#pragma omp parallel
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#pragma omp single
        nt = omp_get_num_threads();
#endif
        double s = 0, ws = 0;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < P; p++) {
            double sc = 0;
            for (int64_t c = 0; c < C; c++) {
                double d = (double)a[c * P + p] - (double)b[c * P + p];
                sc += d * d;
            }
            s += (double)w[p] * sc;
            ws += (double)w[p];
        }
        if (t < MAX_THREADS) part[t] = s, wpart[t] = ws;
    }
    double s = 0, ws = 0;
    for (int t = 0; t < nt && t < MAX_THREADS; t++) s += part[t], ws += wpart[t];
    *wsum = ws;
    return s;
}

void cpu_set_num_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
#else
    (void)n;
#endif
}

