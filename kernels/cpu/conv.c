// kernels/cpu/conv.c: 2-D convolution (NCHW, zero padding with separate pads per
// side) as im2col + the blocked matmul, a chunk of output rows at a time so the
// patch buffer stays small (a few MB) whatever the image size; chunks are spread
// over OpenMP threads. Also nearest-neighbour ×2 up-sampling.
#include <stdlib.h>

#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"

void cpu_conv2d(float *out, const float *x, const float *w, const float *b, int64_t B, int64_t Cin, int64_t H,
                int64_t W, int64_t Cout, int64_t KH, int64_t KW, int stride, int pad_top, int pad_left, int64_t Ho,
                int64_t Wo) {
    int64_t kc = Cin * KH * KW;
    // rows per chunk: aim for ~256 output pixels per matmul
    int64_t rows_per_chunk = Wo >= 256 ? 1 : (256 + Wo - 1) / Wo;
    if (rows_per_chunk > Ho) rows_per_chunk = Ho;
    int64_t chunks = (Ho + rows_per_chunk - 1) / rows_per_chunk;
#pragma omp parallel
    {
        float *patch = malloc((size_t)(rows_per_chunk * Wo * kc) * sizeof(float));
        float *res = malloc((size_t)(rows_per_chunk * Wo * Cout) * sizeof(float));
        SQ_CHECK(patch && res, "conv2d: out of host memory for the im2col buffer");
#pragma omp for schedule(static)
        for (int64_t t = 0; t < B * chunks; t++) {
            int64_t bi = t / chunks, oy0 = (t % chunks) * rows_per_chunk;
            int64_t nrows = Ho - oy0 < rows_per_chunk ? Ho - oy0 : rows_per_chunk;
            int64_t npix = nrows * Wo;
            // im2col: patch[p, (ci, ky, kx)]
            for (int64_t p = 0; p < npix; p++) {
                int64_t oy = oy0 + p / Wo, ox = p % Wo;
                float *row = patch + p * kc;
                for (int64_t ci = 0; ci < Cin; ci++) {
                    const float *xc = x + (bi * Cin + ci) * H * W;
                    for (int64_t ky = 0; ky < KH; ky++) {
                        int64_t iy = oy * stride + ky - pad_top;
                        for (int64_t kx = 0; kx < KW; kx++) {
                            int64_t ix = ox * stride + kx - pad_left;
                            *row++ = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? xc[iy * W + ix] : 0.0f;
                        }
                    }
                }
            }
            cpu_matmul(res, patch, w, b, npix, kc, Cout);   // (npix, Cout); nested: runs on this thread
            for (int64_t co = 0; co < Cout; co++) {
                float *o = out + ((bi * Cout + co) * Ho + oy0) * Wo;
                for (int64_t p = 0; p < npix; p++) o[p] = res[p * Cout + co];
            }
        }
        free(patch);
        free(res);
    }
}

void cpu_upsample_nearest2x(float *out, const float *x, int64_t BC, int64_t H, int64_t W) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < BC; c++) {
        const float *xc = x + c * H * W;
        float *oc = out + c * 4 * H * W;
        for (int64_t y = 0; y < 2 * H; y++)
            for (int64_t xx = 0; xx < 2 * W; xx++) oc[y * 2 * W + xx] = xc[(y / 2) * W + xx / 2];
    }
}
