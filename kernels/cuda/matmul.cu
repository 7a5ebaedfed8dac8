// kernels/cuda/matmul.cu: out (N,M) = x (N,K) · w (M,K)ᵀ + b through cuBLASLt, bf16
// in/out, fp32 accumulation, bias (and for the MLPs the tanh GELU) fused in the
// epilogue. One handle, one 32 MiB
// workspace, and the algorithm chosen once per shape and cached, so the + and - QZO
// passes run exactly the same kernels (the loss difference must not see algorithm
// changes).
//
// Row-major to column-major: out (N,M) row-major is outᵀ (M,N) column-major, and
// outᵀ = w · xᵀ, i.e. D = op(A)·B with A = w viewed as (K,M) col-major, op = T, and
// B = x viewed as (K,N) col-major. The bias is per row of D (length M).
// cuda_matmul_shared_input: G such products of one x as one strided batch (B's batch
// stride 0), for the q/k/v projections (kernels/linear.h).
#include <cublasLt.h>
#include <stdio.h>

#include "kernels/cuda/common.cuh"

#define SQ_CUBLAS_CHECK(call)                                                                         \
    do {                                                                                              \
        cublasStatus_t s_ = (call);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) sq_panic(__FILE__, __LINE__, "cuBLAS error %d in %s", (int)s_, #call); \
    } while (0)

static cublasLtHandle_t g_lt;
static void *g_workspace;
// GEMMs on the side stream (kernels/streams.h) may run while the default stream's
// run: each needs a workspace of its own (split-K partial sums live there).
static void *g_side_workspace;
static const size_t WORKSPACE_BYTES = 32u << 20;

typedef struct {
    int64_t N, K, M;
    int64_t G, out_stride;   // G > 1: G products of one x (cuda_matmul_shared_input)
    int bias;
    int f32;
    int gelu;
    cublasLtMatmulAlgo_t algo;
    // the descriptors too: creating and destroying four per call cost host time that
    // showed in the short GEMMs of a 512² forward
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    int used;
} algo_entry;

#define ALGO_CACHE 256
static algo_entry g_cache[ALGO_CACHE];

extern "C" int cuda_matmul_init(void) {
    if (g_lt) return SQ_OK;
    if (cublasLtCreate(&g_lt) != CUBLAS_STATUS_SUCCESS) return sq_errorf("cuBLASLt: cannot create a handle");
    SQ_CUDA_TRY(cudaMalloc(&g_workspace, WORKSPACE_BYTES));
    return SQ_OK;
}

// G > 1: a strided batch of G products; w_g is K·M elements after w_{g-1}, every
// product reads the same x (batch stride 0) and out_g is out_stride after out_{g-1}.
static void make_layouts(cudaDataType_t t, int64_t N, int64_t K, int64_t M, int64_t G, int64_t out_stride,
                         cublasLtMatrixLayout_t *a, cublasLtMatrixLayout_t *b, cublasLtMatrixLayout_t *d) {
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(a, t, (uint64_t)K, (uint64_t)M, K));
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(b, t, (uint64_t)K, (uint64_t)N, K));
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(d, t, (uint64_t)M, (uint64_t)N, M));
    if (G <= 1) return;
    int32_t count = (int32_t)G;
    int64_t sa = K * M, sb = 0;
    cublasLtMatrixLayout_t ls[3] = {*a, *b, *d};
    const int64_t strides[3] = {sa, sb, out_stride};
    for (int i = 0; i < 3; i++) {
        SQ_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
        SQ_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                         sizeof strides[i]));
    }
}

// Fills cache slot c for one GEMM kind: its descriptors and the heuristic's first choice.
static void fill_entry(algo_entry *c, int64_t N, int64_t K, int64_t M, int64_t G, int64_t out_stride, const void *b,
                       int f32, int gelu) {
    SQ_CUBLAS_CHECK(cublasLtMatmulDescCreate(&c->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t ep = gelu ? (b ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                 : (b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
    if (b) SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
    if (b && G > 1) {   // b_g is M elements after b_{g-1}
        int64_t bias_stride = M;
        SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride,
                                                       sizeof bias_stride));
    }
    make_layouts(f32 ? CUDA_R_32F : CUDA_R_16BF, N, K, M, G, out_stride, &c->la, &c->lb, &c->ld);
    cublasLtMatmulPreference_t pref;
    SQ_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WORKSPACE_BYTES;
    SQ_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    SQ_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g_lt, c->desc, c->la, c->lb, c->ld, c->ld, pref, 1, &res, &found));
    SQ_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    SQ_CHECK(found > 0, "cuBLASLt: no algorithm for a %lldx%lldx%lld %s GEMM", (long long)N, (long long)K, (long long)M, f32 ? "f32" : "bf16");
    c->N = N; c->K = K; c->M = M; c->G = G; c->out_stride = out_stride; c->bias = b != NULL; c->f32 = f32; c->gelu = gelu; c->algo = res.algo; c->used = 1;
}

// Empties slot c (for another kind, when the cache is full).
static void drop_entry(algo_entry *c) {
    SQ_CUBLAS_CHECK(cublasLtMatmulDescDestroy(c->desc));
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->la));
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->lb));
    SQ_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->ld));
    c->used = 0;
}

// gelu: apply GELU(tanh approximation, as cuBLASLt's GELU epilogue computes it) to
// the fp32 result before the one rounding to bf16.
static void matmul(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t N, int64_t K, int64_t M,
                   int gelu, int64_t G, int64_t out_stride) {
    SQ_CHECK(dt == SQ_BF16 || dt == SQ_F32, "cuda_matmul: bf16 or f32 only");
    int f32 = dt == SQ_F32;   // f32: full fp32 compute (no TF32), for models run at full precision
    SQ_CHECK(g_lt != NULL, "cuda_matmul: CUDA backend not initialised");
    if (N == 0 || M == 0) return;
    // cache: (N, K, M, G, out_stride, bias, f32, gelu) -> descriptors and the heuristic's first choice
    algo_entry *e = NULL;
    unsigned h = (unsigned)((N * 73856093) ^ (K * 19349663) ^ (M * 83492791) ^ (G * 2654435761u) ^ (b ? 1 : 0) ^
                            (f32 ? 2 : 0) ^ (gelu ? 4 : 0)) %
                 ALGO_CACHE;
    for (int probe = 0; probe < ALGO_CACHE; probe++) {
        algo_entry *c = &g_cache[(h + probe) % ALGO_CACHE];
        if (c->used && c->N == N && c->K == K && c->M == M && c->G == G && c->out_stride == out_stride &&
            c->bias == (b != NULL) && c->f32 == f32 && c->gelu == gelu) {
            e = c;
            break;
        }
        if (!c->used) {
            fill_entry(c, N, K, M, G, out_stride, b, f32, gelu);
            e = c;
            break;
        }
    }
    if (!e) {
        // Full (many bucket shapes): the kind in this one's first slot makes room, and is
        // made again if it comes back (the heuristic gives it the same algorithm, and a
        // recorded CUDA graph holds its launches, not these host-side descriptors).
        e = &g_cache[h];
        drop_entry(e);
        fill_entry(e, N, K, M, G, out_stride, b, f32, gelu);
    }
    // the bias differs per layer: point the cached descriptor at this call's
    if (b) SQ_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
    const float one = 1.0f, zero = 0.0f;
    void *ws = g_workspace;
    if (SQ_STREAM != g_sq_main_stream) {   // on the side stream (kernels/streams.h)
        if (!g_side_workspace) {
            SQ_CUDA_CHECK(cudaMalloc(&g_side_workspace, WORKSPACE_BYTES));
            cuda_graph_memory_moved();
        }
        ws = g_side_workspace;
    }
    SQ_CUBLAS_CHECK(cublasLtMatmul(g_lt, e->desc, &one, w, e->la, x, e->lb, &zero, out, e->ld, out, e->ld, &e->algo,
                                   ws, WORKSPACE_BYTES, SQ_STREAM));
}

extern "C" void cuda_matmul(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t N, int64_t K,
                            int64_t M) {
    matmul(dt, out, x, w, b, N, K, M, 0, 1, 0);
}

extern "C" void cuda_matmul_gelu(sq_dtype dt, void *out, const void *x, const void *w, const void *b, int64_t N,
                                 int64_t K, int64_t M) {
    matmul(dt, out, x, w, b, N, K, M, 1, 1, 0);
}

extern "C" void cuda_matmul_shared_input(sq_dtype dt, void *out, int64_t out_stride, const void *x, const void *w,
                                         const void *b, int64_t G, int64_t N, int64_t K, int64_t M) {
    matmul(dt, out, x, w, b, N, K, M, 0, G, G > 1 ? out_stride : 0);
}
