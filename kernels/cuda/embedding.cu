// kernels/cuda/embedding.cu: sq_embedding on the device, a row gather from the
// (V,C) table. The ids live on the host; rather than a device buffer (ops never
// allocate device memory) they travel in the kernel's parameters, up to
// EMB_CHUNK ids per launch (2 KB of the 4 KB parameter space), which also keeps the
// host array free to change as soon as the call returns.
#include "kernels/cuda/common.cuh"

#define EMB_CHUNK 512

typedef struct {
    int32_t id[EMB_CHUNK];
} emb_ids;

// One block per row; rows are copied as raw elements (no dtype change).
template <typename T>
__global__ void embedding_kernel(T *out, const T *table, emb_ids ids, int64_t C) {
    const T *src = table + (int64_t)ids.id[blockIdx.x] * C;
    T *dst = out + (int64_t)blockIdx.x * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

extern "C" void cuda_embedding(sq_dtype dt, void *out, const void *table, const int32_t *ids, int64_t N, int64_t C) {
    SQ_CHECK(dt == SQ_F32 || dt == SQ_BF16, "cuda_embedding: bf16 or f32 tables only");
    for (int64_t start = 0; start < N; start += EMB_CHUNK) {
        int64_t n = N - start < EMB_CHUNK ? N - start : EMB_CHUNK;
        emb_ids chunk;
        for (int64_t i = 0; i < n; i++) chunk.id[i] = ids[start + i];
        if (dt == SQ_F32)
            embedding_kernel<float><<<(unsigned)n, 256, 0, SQ_STREAM>>>((float *)out + start * C, (const float *)table, chunk, C);
        else
            embedding_kernel<uint16_t><<<(unsigned)n, 256, 0, SQ_STREAM>>>((uint16_t *)out + start * C, (const uint16_t *)table, chunk, C);
        SQ_LAUNCH_CHECK();
    }
}
