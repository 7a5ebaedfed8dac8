// kernels/cuda/attention_cudnn.cu: attention through cuDNN 9's fused flash SDPA,
// built with the plain backend graph API (no cudnn-frontend C++ library). Handles only
// bf16 q,k,v,out in the token-major layout of kernels/ops.h (q (B,Tq,NH,HS), k/v
// (B,Tk,NH,HS), out like q: the strides say so, nothing is permuted), no bias, no key
// mask, not causal, fp32 compute; anything else returns false and cuda_attention uses
// its own kernels. The graph is the pattern cuDNN's fused attention engines recognise
// (the same one cudnn-frontend lowers its SDPA node to for cuDNN < 9.21):
//   S = Q·Kᵀ (fp32) → S·scale (scale passed by value) → softmax as max-reduce, sub, exp,
//   sum-reduce, div (plus the log/add that forms the row statistics, left virtual as in
//   inference) → P rounded to bf16 → O = P·V.
// One execution plan per shape is built on the shape's first call (engine configs from
// heuristics mode A, the first that finalizes wins) and kept, with every descriptor it
// was built from, in the plan cache all cuDNN ops share; so is the workspace
// (cudnn_context.cuh), which grows on a shape's first call. If any step of building fails (an older cuDNN, an
// unsupported head size or GPU), the shape is remembered as unsupported, one line goes
// to stderr, and the function returns false from then on: it never aborts for that.
// Without cuDNN in the build (SQ_HAVE_CUDNN unset) it always returns false. Not
// thread-safe: one host thread driving the default stream, like every op here.
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cudnn_context.cuh"
#include "kernels/cuda/cuda_ops.h"

#ifdef SQ_HAVE_CUDNN   // check.h then includes <cudnn.h> and defines SQ_CUDNN_CHECK

namespace {

// Unique ids of the graph's real tensors (the variant pack names them) and the first id
// of the virtual ones.
enum { UID_Q = 1, UID_K = 2, UID_V = 3, UID_O = 4, UID_SCALE = 5, UID_VIRTUAL = 100 };

enum { MAX_DESCS = 64, MAX_CFGS = 16 };   // a plan uses 38 + MAX_CFGS descriptors

struct att_key {   // the plan cache's key: compared as bytes, so no padding
    int64_t B, Tq, Tk, NH, HS;
};

struct att_plan {
    bool ok;   // false: cuDNN could not build this shape; the caller's kernels run it
    att_key key;
    cudnnBackendDescriptor_t plan;
    int64_t ws_bytes;
    // Every descriptor the plan was built from, kept alive as long as the plan: the
    // backend API does not promise that a finalized plan owns copies of them.
    cudnnBackendDescriptor_t descs[MAX_DESCS];
    int ndescs;
    int64_t next_uid;
};

cudnnHandle_t g_handle = nullptr;   // the shared one (cudnn_context.cuh), once started

// A failed build step: reported once (with the call and line, as SQ_CUDNN_CHECK would),
// then the shape falls back. Not a panic, because "this engine does not support the
// shape" is an expected answer on older cuDNN or GPUs.
#define ATT_TRY(p, call)                                                                                         \
    do {                                                                                                         \
        cudnnStatus_t att_st_ = (call);                                                                          \
        if (att_st_ != CUDNN_STATUS_SUCCESS) {                                                                   \
            report_failure(p, att_st_, #call, __LINE__);                                                         \
            return false;                                                                                        \
        }                                                                                                        \
    } while (0)

void report_failure(const att_plan *p, cudnnStatus_t st, const char *call, int line) {
    fprintf(stderr,
            "cuDNN attention: %s at %s:%d in %s for B=%lld Tq=%lld Tk=%lld NH=%lld HS=%lld; this shape uses the "
            "flash/reference kernel\n",
            cudnnGetErrorString(st), __FILE__, line, call, (long long)p->key.B, (long long)p->key.Tq,
            (long long)p->key.Tk, (long long)p->key.NH, (long long)p->key.HS);
}

void free_descs(att_plan *p) {
    if (p->plan) SQ_CUDNN_CHECK(cudnnBackendDestroyDescriptor(p->plan));
    for (int i = 0; i < p->ndescs; i++) SQ_CUDNN_CHECK(cudnnBackendDestroyDescriptor(p->descs[i]));
    p->plan = nullptr;
    p->ndescs = 0;
}

// The plan cache's destroy callback.
void plan_destroy(void *plan) {
    att_plan *p = (att_plan *)plan;
    free_descs(p);
    free(p);
}

// Creates a descriptor owned by the plan (released with it).
bool create(att_plan *p, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    if (p->ndescs >= MAX_DESCS) {
        fprintf(stderr, "cuDNN attention: descriptor table full (%d) at %s:%d\n", MAX_DESCS, __FILE__, __LINE__);
        return false;
    }
    ATT_TRY(p, cudnnBackendCreateDescriptor(type, out));
    p->descs[p->ndescs++] = *out;
    return true;
}

// A 4-d tensor descriptor. Virtual tensors get the next free id; real ones their fixed id.
bool tensor(att_plan *p, cudnnBackendDescriptor_t *t, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
            int64_t uid, bool is_virtual, bool by_value) {
    if (!create(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t)) return false;
    if (uid < 0) uid = p->next_uid++;
    int64_t align = by_value ? 4 : 16;
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    if (by_value) ATT_TRY(p, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value));
    ATT_TRY(p, cudnnBackendFinalize(*t));
    return true;
}

bool matmul_op(att_plan *p, cudnnBackendDescriptor_t *op, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
               cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    if (!create(p, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    ATT_TRY(p, cudnnBackendFinalize(mm));
    if (!create(p, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, op)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm));
    ATT_TRY(p, cudnnBackendFinalize(*op));
    return true;
}

// y = x (op) b, or y = op(x) for unary modes (b == nullptr); fp32 math.
bool pointwise_op(att_plan *p, cudnnBackendDescriptor_t *op, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                  cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pw;
    cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    if (!create(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    ATT_TRY(p, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    ATT_TRY(p, cudnnBackendFinalize(pw));
    if (!create(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                        1, &pw));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    if (b)
        ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                            &b));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ATT_TRY(p, cudnnBackendFinalize(*op));
    return true;
}

// y (B,NH,Tq,1) = reduce over the last dim of x (B,NH,Tq,Tk); fp32.
bool reduction_op(att_plan *p, cudnnBackendDescriptor_t *op, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                  cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t red;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    if (!create(p, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &red)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode));
    ATT_TRY(p, cudnnBackendSetAttribute(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    ATT_TRY(p, cudnnBackendFinalize(red));
    if (!create(p, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, op)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ATT_TRY(p, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red));
    ATT_TRY(p, cudnnBackendFinalize(*op));
    return true;
}

// Builds the SDPA graph for p->key and finalizes the first engine config of heuristics
// mode A that accepts it. True with p->plan and p->ws_bytes set.
bool build_plan(att_plan *p) {
    const int64_t B = p->key.B, Tq = p->key.Tq, Tk = p->key.Tk, NH = p->key.NH, HS = p->key.HS;
    const cudnnDataType_t BF = CUDNN_DATA_BFLOAT16, F32 = CUDNN_DATA_FLOAT;
    // Logical dims are (batch, head, rows, cols); strides read the token-major buffers
    // in place: element (b,h,t,d) of q sits at ((b·Tq + t)·NH + h)·HS + d.
    const int64_t q_dims[4] = {B, NH, Tq, HS}, q_str[4] = {Tq * NH * HS, HS, NH * HS, 1};
    const int64_t kt_dims[4] = {B, NH, HS, Tk}, kt_str[4] = {Tk * NH * HS, HS, 1, NH * HS};   // Kᵀ: a stride swap
    const int64_t v_dims[4] = {B, NH, Tk, HS}, v_str[4] = {Tk * NH * HS, HS, NH * HS, 1};
    const int64_t s_dims[4] = {B, NH, Tq, Tk}, s_str[4] = {NH * Tq * Tk, Tq * Tk, Tk, 1};
    const int64_t r_dims[4] = {B, NH, Tq, 1}, r_str[4] = {NH * Tq, Tq, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};

    cudnnBackendDescriptor_t tq, tk, tv, to, tscale;
    if (!tensor(p, &tq, BF, q_dims, q_str, UID_Q, false, false) || !tensor(p, &tk, BF, kt_dims, kt_str, UID_K, false, false) ||
        !tensor(p, &tv, BF, v_dims, v_str, UID_V, false, false) || !tensor(p, &to, BF, q_dims, q_str, UID_O, false, false) ||
        !tensor(p, &tscale, F32, one, one, UID_SCALE, false, true))
        return false;
    // Virtual intermediates: fp32 scores and row statistics; P in bf16 (the second
    // matmul's A operand takes the I/O type).
    cudnnBackendDescriptor_t s, ss, mx, sub, ex, sum, lg, stats, pr;
    if (!tensor(p, &s, F32, s_dims, s_str, -1, true, false) || !tensor(p, &ss, F32, s_dims, s_str, -1, true, false) ||
        !tensor(p, &mx, F32, r_dims, r_str, -1, true, false) || !tensor(p, &sub, F32, s_dims, s_str, -1, true, false) ||
        !tensor(p, &ex, F32, s_dims, s_str, -1, true, false) || !tensor(p, &sum, F32, r_dims, r_str, -1, true, false) ||
        !tensor(p, &lg, F32, r_dims, r_str, -1, true, false) || !tensor(p, &stats, F32, r_dims, r_str, -1, true, false) ||
        !tensor(p, &pr, BF, s_dims, s_str, -1, true, false))
        return false;

    cudnnBackendDescriptor_t ops[10];
    if (!matmul_op(p, &ops[0], tq, tk, s) || !pointwise_op(p, &ops[1], CUDNN_POINTWISE_MUL, s, tscale, ss) ||
        !reduction_op(p, &ops[2], CUDNN_REDUCE_TENSOR_MAX, ss, mx) ||
        !pointwise_op(p, &ops[3], CUDNN_POINTWISE_SUB, ss, mx, sub) ||
        !pointwise_op(p, &ops[4], CUDNN_POINTWISE_EXP, sub, nullptr, ex) ||
        !reduction_op(p, &ops[5], CUDNN_REDUCE_TENSOR_ADD, ex, sum) ||
        !pointwise_op(p, &ops[6], CUDNN_POINTWISE_LOG, sum, nullptr, lg) ||
        !pointwise_op(p, &ops[7], CUDNN_POINTWISE_ADD, mx, lg, stats) ||
        !pointwise_op(p, &ops[8], CUDNN_POINTWISE_DIV, ex, sum, pr) || !matmul_op(p, &ops[9], pr, tv, to))
        return false;

    cudnnBackendDescriptor_t graph;
    if (!create(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g_handle));
    ATT_TRY(p, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 10, ops));
    ATT_TRY(p, cudnnBackendFinalize(graph));

    cudnnBackendDescriptor_t heur;
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    if (!create(p, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur)) return false;
    ATT_TRY(p, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                        &graph));
    ATT_TRY(p, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
    ATT_TRY(p, cudnnBackendFinalize(heur));
    cudnnBackendDescriptor_t cfgs[MAX_CFGS];
    for (int i = 0; i < MAX_CFGS; i++)
        if (!create(p, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i])) return false;
    int64_t ncfg = 0;
    ATT_TRY(p, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, MAX_CFGS,
                                        &ncfg, cfgs));
    if (ncfg > MAX_CFGS) ncfg = MAX_CFGS;
    // Engine configs are tried in the heuristics' order (expected speed); a config that
    // refuses this shape at finalize is an expected answer, not an error.
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; i < ncfg; i++) {
        cudnnBackendDescriptor_t plan;
        ATT_TRY(p, cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan));
        cudnnStatus_t st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &g_handle);
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                          &cfgs[i]);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan);
        int64_t ws = 0, n = 0;
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
        if (st == CUDNN_STATUS_SUCCESS && ws >= 0) {
            p->plan = plan;
            p->ws_bytes = ws;
            return true;
        }
        last = st;
        SQ_CUDNN_CHECK(cudnnBackendDestroyDescriptor(plan));
    }
    report_failure(p, last, ncfg ? "cudnnBackendFinalize(execution plan) for every engine config"
                                  : "heuristics (no engine config for the SDPA graph)", __LINE__);
    return false;
}

att_plan *plan_for(const att_key &key) {
    att_plan *p = (att_plan *)sq_cudnn_plan_find(SQ_CUDNN_OP_ATTENTION, &key, sizeof key);
    if (p) return p;
    p = (att_plan *)calloc(1, sizeof *p);
    SQ_CHECK(p, "cuDNN attention: out of host memory for a plan");
    p->key = key;
    p->next_uid = UID_VIRTUAL;
    p->ok = build_plan(p);
    if (!p->ok) free_descs(p);   // the entry stays, so the shape is not tried again
    sq_cudnn_plan_put(SQ_CUDNN_OP_ATTENTION, &key, sizeof key, p, plan_destroy);
    return p;
}

bool execute(att_plan *p, void *out, const void *q, const void *k, const void *v, float scale) {
    cudnnBackendDescriptor_t pack;
    ATT_TRY(p, cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
    int64_t uids[5] = {UID_Q, UID_K, UID_V, UID_O, UID_SCALE};
    void *ptrs[5] = {(void *)q, (void *)k, (void *)v, out, &scale};   // scale: host value, read at launch
    void *ws = p->ws_bytes ? sq_cudnn_workspace() : nullptr;
    cudnnStatus_t st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetStream(g_handle, SQ_STREAM);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(g_handle, p->plan, pack);
    SQ_CUDNN_CHECK(cudnnBackendDestroyDescriptor(pack));
    if (st != CUDNN_STATUS_SUCCESS) {
        report_failure(p, st, "cudnnBackendExecute", __LINE__);
        return false;
    }
    SQ_LAUNCH_CHECK();   // a kernel fault inside cuDNN is as fatal as one of ours
    return true;
}

}   // namespace

extern "C" bool cuda_attention_cudnn_available(void) { return true; }

extern "C" bool cuda_attention_cudnn(void *out, const void *q, const void *k, const void *v, float scale, int64_t B,
                                     int64_t Tq, int64_t Tk, int64_t NH, int64_t HS) {
    if (B <= 0 || Tq <= 0 || Tk <= 0 || NH <= 0 || HS <= 0) return false;
    if (HS % 8 || HS > 256) return false;   // 16-byte rows: what every fused engine asks for
    if (((uintptr_t)out | (uintptr_t)q | (uintptr_t)k | (uintptr_t)v) & 15) return false;
    if (B * NH * Tq * Tk > ((int64_t)1 << 40)) return false;   // the virtual score strides stay sane
    g_handle = sq_cudnn_handle("attention uses the flash kernel");
    if (!g_handle) return false;
    att_key key = {B, Tq, Tk, NH, HS};
    att_plan *p = plan_for(key);
    if (!p->ok) return false;
    // the shared workspace may have been released between phases (sq_cudnn_workspace_release)
    if (!sq_cudnn_workspace_reserve((size_t)p->ws_bytes)) {
        fprintf(stderr, "cuDNN attention: no device memory for a %lld-byte workspace; flash kernel used\n",
                (long long)p->ws_bytes);
        return false;
    }
    if (!execute(p, out, q, k, v, scale)) {
        p->ok = false;   // never again for this shape
        return false;
    }
    return true;
}

#else   // no cuDNN: never handles a call

extern "C" bool cuda_attention_cudnn_available(void) { return false; }

extern "C" bool cuda_attention_cudnn(void *out, const void *q, const void *k, const void *v, float scale, int64_t B,
                                     int64_t Tq, int64_t Tk, int64_t NH, int64_t HS) {
    (void)out; (void)q; (void)k; (void)v; (void)scale; (void)B; (void)Tq; (void)Tk; (void)NH; (void)HS;
    return false;
}

#endif
