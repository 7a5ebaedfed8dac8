// kernels/rng.h: the counter-based random numbers QZO perturbs its scales with.
// z for scale i at step k is a standard normal derived from
//     philox4x32_10(key = seed, counter = (i / 4, step))   element i % 4
// through Box-Muller. z is never stored: the + pass, the - pass and the update all
// regenerate it. This one header is compiled for the host and (under nvcc) for the
// device, and every float operation in it is either exact, correctly rounded
// (+, *, /, sqrtf) or an explicit fmaf, with no libm calls, so host and device draw
// bit-identical z and a resumed run reproduces the original exactly.
// (Do not build with -ffast-math / --use_fast_math: they break that guarantee.)
//
// Streams. Every random draw of a run is Philox under some key at some counter, and
// two draws are independent only if their (key, counter) pairs differ. Streams lay
// their counters out differently (the perturbation: (scale index / 4, step); the data
// pipeline: (choice, epoch, item, draw); the noise: (sample block, step)), so counter
// layouts alone cannot keep them apart: each stream has its own key instead,
// sq_rng_stream_key(seed, stream), the run's seed mixed with the stream's id below.
// The perturbation is the exception by history: its key is the seed itself (every
// checkpoint's z and the golden fixtures depend on it); a derived key equals a given
// seed only by a 2^-64 coincidence.
#ifndef SQ_RNG_H
#define SQ_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define SQ_HD __host__ __device__ __forceinline__
#else
#define SQ_HD static inline
#endif

typedef struct {
    uint32_t v[4];
} sq_philox_out;

// The stream ids of one run (the one list: a new stream takes a new number here).
typedef enum {
    SQ_RNG_STREAM_NOISE = 1,   // training noise n (app/)
    SQ_RNG_STREAM_SIGMA = 2,   // training σ (app/)
    SQ_RNG_STREAM_VAL = 3,     // validation noise (app/train_eval.c)
    SQ_RNG_STREAM_DATA = 4,    // data order, crops, flips, caption dropout and tag shuffle (datasets/rng.h)
    SQ_RNG_STREAM_VAL_SIGMA = 5,  // validation σ (app/train_eval.c)
} sq_rng_stream;

// The key of one stream: the seed mixed with the stream id (splitmix64's finaliser), so
// streams never share Philox keys, whatever their counters.
static inline uint64_t sq_rng_stream_key(uint64_t seed, sq_rng_stream stream) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(stream + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Philox4x32 with 10 rounds (Salmon et al., SC'11; Random123's constants).
SQ_HD sq_philox_out sq_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    sq_philox_out o = {{c0, c1, c2, c3}};
    return o;
}

// Natural log of u in (0, 1] from exact bit manipulation and an atanh series in
// fmaf: |error| < 2e-7 absolute, identical on host and device.
SQ_HD float sq_rng_logf(float u) {
    union { float f; uint32_t i; } b;
    b.f = u;
    int e = (int)((b.i >> 23) & 0xff) - 127;
    b.i = (b.i & 0x007fffffu) | 0x3f800000u;       // m in [1, 2)
    float m = b.f;
    if (m > 1.41421356f) { m = m * 0.5f; e += 1; }  // m in [0.707, 1.414]: exact halving
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float p = fmaf(s2, 1.0f / 11.0f, 1.0f / 9.0f);
    p = fmaf(s2, p, 1.0f / 7.0f);
    p = fmaf(s2, p, 1.0f / 5.0f);
    p = fmaf(s2, p, 1.0f / 3.0f);
    p = fmaf(s2, p, 1.0f);
    float lm = 2.0f * s * p;
    return fmaf((float)e, 0.693147182f, lm);
}

// sin and cos of pi/2 * f for f in [0, 1], Taylor polynomials in fmaf
// (truncation error below 1e-7 on that range).
SQ_HD void sq_rng_sincos_quarter(float f, float *s, float *c) {
    float x = f * 1.57079637f;
    float x2 = x * x;
    float ps = fmaf(x2, -1.0f / 39916800.0f, 1.0f / 362880.0f);
    ps = fmaf(x2, ps, -1.0f / 5040.0f);
    ps = fmaf(x2, ps, 1.0f / 120.0f);
    ps = fmaf(x2, ps, -1.0f / 6.0f);
    ps = fmaf(x2, ps, 1.0f);
    float pc = fmaf(x2, 1.0f / 479001600.0f, -1.0f / 3628800.0f);
    pc = fmaf(x2, pc, 1.0f / 40320.0f);
    pc = fmaf(x2, pc, -1.0f / 720.0f);
    pc = fmaf(x2, pc, 1.0f / 24.0f);
    pc = fmaf(x2, pc, -0.5f);
    pc = fmaf(x2, pc, 1.0f);
    *s = x * ps;
    *c = pc;
}

// Two independent standard normals from two 32-bit words (Box-Muller).
SQ_HD void sq_rng_box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    float u1 = (float)((a >> 8) + 1u) * 5.96046448e-08f;   // (0, 1], exact: 24-bit / 2^24
    float u2 = (float)(b >> 8) * 5.96046448e-08f;          // [0, 1)
    float r = sqrtf(-2.0f * sq_rng_logf(u1));
    float t = u2 * 4.0f;                                    // exact
    int quadrant = (int)t;
    float f = t - (float)quadrant;                          // exact
    float s, c;
    sq_rng_sincos_quarter(f, &s, &c);
    float sn, cs;                                           // sin/cos of 2*pi*u2
    switch (quadrant) {
    case 0: sn = s; cs = c; break;
    case 1: sn = c; cs = -s; break;
    case 2: sn = -s; cs = -c; break;
    default: sn = -c; cs = s; break;
    }
    *z0 = r * cs;
    *z1 = r * sn;
}

// The perturbation direction z for global scale index `index` at `step`.
SQ_HD float sq_rng_normal(uint64_t seed, uint64_t step, uint64_t index) {
    uint64_t block = index >> 2;
    sq_philox_out o = sq_philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)step,
                                       (uint32_t)(step >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
    float z0, z1;
    int lane = (int)(index & 3);
    if (lane < 2) sq_rng_box_muller(o.v[0], o.v[1], &z0, &z1);
    else sq_rng_box_muller(o.v[2], o.v[3], &z0, &z1);
    return (lane & 1) ? z1 : z0;
}

// Four consecutive normals (indices 4*block .. 4*block+3) from one Philox call:
// what a kernel that dequantises 4 groups at a time wants.
SQ_HD void sq_rng_normal4(uint64_t seed, uint64_t step, uint64_t block, float z[4]) {
    sq_philox_out o = sq_philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)step,
                                       (uint32_t)(step >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
    sq_rng_box_muller(o.v[0], o.v[1], &z[0], &z[1]);
    sq_rng_box_muller(o.v[2], o.v[3], &z[2], &z[3]);
}

#endif
