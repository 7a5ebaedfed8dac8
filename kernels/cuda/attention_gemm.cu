// kernels/cuda/attention_gemm.cu: fp32 single-head attention over long sequences as
// two fp32 GEMMs per chunk of query rows with a row softmax between them:
//   S = Q_c·Kᵀ (c, Tk) → P = softmax(scale·S), in place → O_c = P·V (c, HS).
// This is the SD3 VAE's mid-block attention (one head of 512 over every latent pixel:
// 16384 tokens at 1024²), which runs in fp32 because the VAE does. The reference
// kernel (one block per query row, scalar loops) took about 1.5 s of the VAE encoder's
// 1.65 s at 1024² on an H200; the GEMMs go through cuda_matmul (cuBLASLt, full fp32
// compute, no TF32) and are O(T²·HS) at GEMM speed.
// Work buffers, allocated per call and freed before returning (the VAE calls this once
// per pass): Vᵀ (HS, Tk) as the second GEMM's weight, and S for chunks of rows sized
// to 64 MiB. Numerics: the softmax subtracts the row max of scale·S in fp32, as the
// reference kernel and the CPU op do.
#include "kernels/cuda/common.cuh"

// in (R, C) row-major -> out (C, R), through 32x33 shared tiles (coalesced both ways)
__global__ void transpose_f32(float *out, const float *in, int64_t R, int64_t C) {
    __shared__ float tile[32][33];
    int64_t c0 = (int64_t)blockIdx.x * 32, r0 = (int64_t)blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int64_t r = r0 + i, c = c0 + threadIdx.x;
        if (r < R && c < C) tile[i][threadIdx.x] = in[r * C + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int64_t c = c0 + i, r = r0 + threadIdx.x;
        if (r < R && c < C) out[c * R + r] = tile[threadIdx.x][i];
    }
}

// one block per row of s (n columns): s <- softmax(scale·s)
__global__ void softmax_rows_f32(float *s, int64_t n, float scale) {
    __shared__ float red[32];
    float *row = s + (int64_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, scale * row[j]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(scale * row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, red);   // its barriers also publish row[]
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) row[j] *= inv;
}

// out, q (B, Tq, HS), k, v (B, Tk, HS): one head, fp32, no bias, mask or causality.
extern "C" void cuda_attention_gemm_f32(float *out, const float *q, const float *k, const float *v, float scale, int64_t B,
                                        int64_t Tq, int64_t Tk, int64_t HS) {
    if (B == 0 || Tq == 0) return;
    int64_t rows = ((int64_t)64 << 20) / (Tk * (int64_t)sizeof(float));
    if (rows < 1) rows = 1;
    if (rows > Tq) rows = Tq;
    SQ_CHECK(rows <= 0x7fffffffLL, "attention: too many rows");
    float *s = NULL, *vt = NULL;
    SQ_CUDA_CHECK(cudaMalloc((void **)&s, (size_t)(rows * Tk) * sizeof(float)));
    SQ_CUDA_CHECK(cudaMalloc((void **)&vt, (size_t)(HS * Tk) * sizeof(float)));
    for (int64_t b = 0; b < B; b++) {
        const float *qb = q + b * Tq * HS, *kb = k + b * Tk * HS, *vb = v + b * Tk * HS;
        dim3 grid((unsigned)((HS + 31) / 32), (unsigned)((Tk + 31) / 32)), block(32, 8);
        transpose_f32<<<grid, block, 0, SQ_STREAM>>>(vt, vb, Tk, HS);
        SQ_LAUNCH_CHECK();
        for (int64_t r0 = 0; r0 < Tq; r0 += rows) {
            int64_t c = Tq - r0 < rows ? Tq - r0 : rows;
            cuda_matmul(SQ_F32, s, qb + r0 * HS, kb, NULL, c, HS, Tk);              // S = Q_c·Kᵀ
            softmax_rows_f32<<<(unsigned)c, 256, 0, SQ_STREAM>>>(s, Tk, scale);
            SQ_LAUNCH_CHECK();
            cuda_matmul(SQ_F32, out + (b * Tq + r0) * HS, s, vt, NULL, c, Tk, HS);   // O_c = P·V = P·(Vᵀ)ᵀ
        }
    }
    SQ_CUDA_CHECK(cudaFree(s));
    SQ_CUDA_CHECK(cudaFree(vt));
}
