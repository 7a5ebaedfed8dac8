// kernels/cpu/matmul.c: out = x · wᵀ + b in fp32. Blocked over rows of x and rows
// of w so a tile of each stays in L1/L2 and the inner dot products vectorise; the
// (N/MB)×(M/NB) tiles are spread over OpenMP threads. Accumulation order within a
// dot product is fixed (4 independent partial sums over K), so results do not
// depend on the thread count.
#include "kernels/cpu/cpu_ops.h"

#define ROW_BLOCK 4     // rows of x per micro-tile
#define COL_BLOCK 4     // rows of w per micro-tile
#define K_BLOCK 256     // K slice kept hot in L1

static inline float dot(const float *a, const float *b, int64_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

// 4x4 micro-kernel over one K slice: acc[r][c] += x[r]·w[c]
static inline void tile4x4(float acc[ROW_BLOCK][COL_BLOCK], const float *x, const float *w, int64_t K, int64_t k0,
                           int64_t kn) {
    const float *x0 = x + k0, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
    const float *w0 = w + k0, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
    float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
    for (int64_t i = 0; i < kn; i++) {
        float b0 = w0[i], b1 = w1[i], b2 = w2[i], b3 = w3[i];
        float c0 = x0[i], c1 = x1[i], c2 = x2[i], c3 = x3[i];
        a00 += c0 * b0; a01 += c0 * b1; a02 += c0 * b2; a03 += c0 * b3;
        a10 += c1 * b0; a11 += c1 * b1; a12 += c1 * b2; a13 += c1 * b3;
        a20 += c2 * b0; a21 += c2 * b1; a22 += c2 * b2; a23 += c2 * b3;
        a30 += c3 * b0; a31 += c3 * b1; a32 += c3 * b2; a33 += c3 * b3;
    }
    acc[0][0] += a00; acc[0][1] += a01; acc[0][2] += a02; acc[0][3] += a03;
    acc[1][0] += a10; acc[1][1] += a11; acc[1][2] += a12; acc[1][3] += a13;
    acc[2][0] += a20; acc[2][1] += a21; acc[2][2] += a22; acc[2][3] += a23;
    acc[3][0] += a30; acc[3][1] += a31; acc[3][2] += a32; acc[3][3] += a33;
}

void cpu_matmul(float *out, const float *x, const float *w, const float *b, int64_t N, int64_t K, int64_t M) {
    int64_t nt = (N + ROW_BLOCK - 1) / ROW_BLOCK, mt = (M + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < nt * mt; t++) {
        int64_t r0 = (t / mt) * ROW_BLOCK, c0 = (t % mt) * COL_BLOCK;
        if (r0 + ROW_BLOCK <= N && c0 + COL_BLOCK <= M) {
            float acc[ROW_BLOCK][COL_BLOCK] = {{0}};
            for (int64_t k0 = 0; k0 < K; k0 += K_BLOCK)
                tile4x4(acc, x + r0 * K, w + c0 * K, K, k0, K - k0 < K_BLOCK ? K - k0 : K_BLOCK);
            for (int r = 0; r < ROW_BLOCK; r++)
                for (int c = 0; c < COL_BLOCK; c++)
                    out[(r0 + r) * M + c0 + c] = acc[r][c] + (b ? b[c0 + c] : 0.0f);
        } else {
            // ragged edge: plain dot products
            for (int64_t r = r0; r < N && r < r0 + ROW_BLOCK; r++)
                for (int64_t c = c0; c < M && c < c0 + COL_BLOCK; c++)
                    out[r * M + c] = dot(x + r * K, w + c * K, K) + (b ? b[c] : 0.0f);
        }
    }
}
