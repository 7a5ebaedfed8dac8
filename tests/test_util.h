// tests/test_util.h: the few helpers every test program uses: a deterministic
// random generator for inputs, poison values for outputs, error metrics, and a
// CHECK that records failures and keeps going so one run reports them all.
// Each test program returns 0 when every check passed, 1 otherwise, 77 to skip.
#ifndef SQ_TEST_UTIL_H
#define SQ_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int tu_failures = 0;
static int tu_checks = 0;

#define TU_CHECK(cond, ...)                                                       \
    do {                                                                          \
        tu_checks++;                                                              \
        if (!(cond)) {                                                            \
            tu_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                  \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

// Runs a shell command (the CLI tests' way to call the sd-qzo binary); returns its exit
// status (-1 when it could not run or was killed) and, when out is not NULL, its stdout
// and stderr together in a malloc'ed *out (NULL when it could not run).
static inline int tu_run(const char *cmd, char **out) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    if (out) *out = NULL;
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t cap = 1 << 20, n = 0, r;
    char *buf = calloc(cap, 1);
    while (buf && (r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int tu_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

// xorshift64*: reproducible inputs without libc's rand().
static inline uint64_t tu_next(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static inline float tu_uniform(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((tu_next(s) >> 40) * (1.0 / 16777216.0));
}
static inline void tu_fill_uniform(float *x, int64_t n, uint64_t *s, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = tu_uniform(s, lo, hi);
}
// Poison: NaN, so any element an op forgets to write fails the comparison.
static inline void tu_poison(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
}

// max |a-b| / max(max|b|, tiny): the relative error the quality bar speaks of.
// NaN anywhere gives +inf.
static inline double tu_rel_err_f32_f64(const float *a, const double *ref, int64_t n) {
    double maxdiff = 0, maxref = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - ref[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    return maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
}
static inline double tu_rel_err(const float *a, const float *ref, int64_t n) {
    double maxdiff = 0, maxref = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)ref[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    return maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
}

// ||a - ref||₂ / ||ref||₂: the error of a whole tensor, for bf16 comparisons of
// deep random models where one element's max-relative error is dominated by bf16
// rounding of the largest activations (PyTorch's own bf16 run shows the same).
static inline double tu_norm_rel_err(const float *a, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(ref[i])) return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 1e-300 ? den : 1e-300));
}

static inline const char *tu_fixtures_dir(void) {
    const char *d = getenv("SQ_FIXTURES");
    return d ? d : "tests/fixtures";
}

#endif
