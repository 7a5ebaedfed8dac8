// tests/gpu/test_gpu_ops.c: every CUDA op of kernels/ops.h against the CPU op on
// the same inputs: fresh random values (rounded to bf16 first, so only the
// arithmetic differs), NaN-poisoned device outputs, shapes that are not multiples of
// any tile (1, 3, 17, 77, 129, 333 tokens), and the norms, adaLN ops and activations
// also at SD3.5 Large's shapes and at each vectorised kernel's fallbacks (C not a
// multiple of 8, unaligned views, long rows). Run twice: bf16 device tensors
// (tolerance: max relative error 2e-2) and f32 device tensors (1e-4). Skips (exit
// 77) without a GPU.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#ifdef SQ_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif
#include "tests/ops_ref.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

static uint64_t rs = 0xC0DA;
static double TOL = 2e-2;
static sq_dtype g_dt = SQ_BF16;   // device dtype of this round

typedef struct {
    sq_tensor h, d;   // host f32 and device bf16 twins
} pair;

static pair make(int ndim, const int64_t *shape, float lo, float hi, bool poison) {
    pair p;
    SQ_CHECK(sq_tensor_alloc(&p.h, SQ_F32, SQ_CPU, ndim, shape) == SQ_OK, "alloc");
    SQ_CHECK(sq_tensor_alloc(&p.d, g_dt, SQ_CUDA, ndim, shape) == SQ_OK, "%s", sq_error_message());
    float *h = p.h.data;
    int64_t n = sq_tensor_numel(&p.h);
    if (poison) tu_poison(h, n);
    else
        for (int64_t i = 0; i < n; i++) h[i] = sq_bf16_to_f32(sq_f32_to_bf16(tu_uniform(&rs, lo, hi)));
    SQ_CHECK(sq_tensor_from_host_f32(&p.d, h) == SQ_OK, "%s", sq_error_message());
    return p;
}
static pair rnd(int ndim, const int64_t *shape, float lo, float hi) { return make(ndim, shape, lo, hi, false); }
static pair outp(int ndim, const int64_t *shape) { return make(ndim, shape, 0, 0, true); }

static void expect(const char *what, pair *o) {
    int64_t n = sq_tensor_numel(&o->h);
    float *got = malloc((size_t)n * sizeof(float));
    SQ_CHECK(sq_tensor_to_host_f32(got, &o->d) == SQ_OK, "%s", sq_error_message());
    double e = tu_rel_err(got, o->h.data, n);
    printf("  %-44s rel err %.2e\n", what, e);
    TU_CHECK(e <= TOL, "%s: relative error %.3g > %g", what, e, TOL);
    free(got);
}

static void drop(pair *p) { sq_tensor_free(&p->h); sq_tensor_free(&p->d); }

static void test_matmul(void) {
    const int64_t shapes[][3] = {{1, 16, 8}, {3, 17, 5}, {77, 129, 33}, {333, 256, 96}, {1024, 64, 200}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1], M = shapes[s][2];
        for (int bias = 0; bias < 2; bias++) {
            pair x = rnd(2, SQ_SHAPE(N, K), -1, 1), w = rnd(2, SQ_SHAPE(M, K), -1, 1), b = rnd(1, SQ_SHAPE(M), -1, 1);
            pair o = outp(2, SQ_SHAPE(N, M));
            sq_matmul(&o.h, &x.h, &w.h, bias ? &b.h : NULL);
            sq_matmul(&o.d, &x.d, &w.d, bias ? &b.d : NULL);
            char what[64];
            snprintf(what, sizeof what, "matmul %lldx%lldx%lld bias %d", (long long)N, (long long)K, (long long)M, bias);
            expect(what, &o);
            // the same with GELU (tanh): the GEMM epilogue on bf16, matmul + gelu on f32
            pair g = outp(2, SQ_SHAPE(N, M));
            sq_matmul_gelu(&g.h, &x.h, &w.h, bias ? &b.h : NULL);
            sq_matmul_gelu(&g.d, &x.d, &w.d, bias ? &b.d : NULL);
            snprintf(what, sizeof what, "matmul_gelu %lldx%lldx%lld bias %d", (long long)N, (long long)K, (long long)M, bias);
            expect(what, &g);
            drop(&x); drop(&w); drop(&b); drop(&o); drop(&g);
        }
    }
}

// More GEMM kinds than the algorithm cache holds (kernels/cuda/matmul.cu: 256; many
// bucket shapes in one run): every one must still run and be right, the first ones
// again after they made room for later ones.
static void test_matmul_many_shapes(void) {
    const int64_t K = 16, M = 8, kinds = 300;
    pair x = rnd(2, SQ_SHAPE(kinds, K), -1, 1), w = rnd(2, SQ_SHAPE(M, K), -1, 1);
    double worst = 0;
    for (int round = 0; round < 2; round++)
        for (int64_t n = 1; n <= kinds; n += round ? 37 : 1) {
            pair o = outp(2, SQ_SHAPE(n, M));
            sq_tensor xh = sq_tensor_view(x.h.data, SQ_F32, SQ_CPU, 2, SQ_SHAPE(n, K));
            sq_tensor xd = sq_tensor_view(x.d.data, g_dt, SQ_CUDA, 2, SQ_SHAPE(n, K));
            sq_matmul(&o.h, &xh, &w.h, NULL);
            sq_matmul(&o.d, &xd, &w.d, NULL);
            float *got = malloc((size_t)(n * M) * sizeof(float));
            SQ_CHECK(got && sq_tensor_to_host_f32(got, &o.d) == SQ_OK, "%s", sq_error_message());
            double e = tu_rel_err(got, o.h.data, n * M);
            if (!(e <= worst)) worst = e;
            free(got);
            drop(&o);
        }
    printf("  %-44s rel err %.2e\n", "matmul, 300 kinds, then 9 of them again", worst);
    TU_CHECK(worst <= TOL, "matmul over more kinds than the algorithm cache holds: relative error %.3g", worst);
    drop(&x); drop(&w);
}

static void test_norms_acts(void) {
    int64_t rows = 77, C = 129;
    pair x = rnd(2, SQ_SHAPE(rows, C), -3, 4), w = rnd(1, SQ_SHAPE(C), 0.5f, 1.5f), b = rnd(1, SQ_SHAPE(C), -1, 1);
    for (int affine = 0; affine < 2; affine++) {
        pair o = outp(2, SQ_SHAPE(rows, C));
        sq_layernorm(&o.h, &x.h, affine ? &w.h : NULL, affine ? &b.h : NULL, 1e-6f);
        sq_layernorm(&o.d, &x.d, affine ? &w.d : NULL, affine ? &b.d : NULL, 1e-6f);
        expect(affine ? "layernorm affine" : "layernorm", &o);
        sq_rmsnorm(&o.h, &x.h, affine ? &w.h : NULL, 1e-6f);
        sq_rmsnorm(&o.d, &x.d, affine ? &w.d : NULL, 1e-6f);
        expect(affine ? "rmsnorm weight" : "rmsnorm", &o);
        drop(&o);
    }
    pair g = rnd(4, SQ_SHAPE(2, 12, 9, 7), -2, 3), gw = rnd(1, SQ_SHAPE(12), 0.5f, 1.5f), gb = rnd(1, SQ_SHAPE(12), -1, 1);
    pair go = outp(4, SQ_SHAPE(2, 12, 9, 7));
    sq_groupnorm(&go.h, &g.h, &gw.h, &gb.h, 4, 1e-6f);
    sq_groupnorm(&go.d, &g.d, &gw.d, &gb.d, 4, 1e-6f);
    expect("groupnorm 4 groups", &go);
    pair o = outp(2, SQ_SHAPE(rows, C));
    sq_gelu(&o.h, &x.h, false); sq_gelu(&o.d, &x.d, false); expect("gelu erf", &o);
    sq_gelu(&o.h, &x.h, true); sq_gelu(&o.d, &x.d, true); expect("gelu tanh", &o);
    sq_silu(&o.h, &x.h); sq_silu(&o.d, &x.d); expect("silu", &o);
    sq_quick_gelu(&o.h, &x.h); sq_quick_gelu(&o.d, &x.d); expect("quick_gelu", &o);
    drop(&x); drop(&w); drop(&b); drop(&o); drop(&g); drop(&gw); drop(&gb); drop(&go);
}

// Twins of shape `shape` starting `offset` elements into base's allocation (views;
// base owns the memory): an offset of 1 leaves the data off 16-byte alignment, which
// sends the kernels to their scalar fallbacks.
static pair view_at(pair *base, int64_t offset, int ndim, const int64_t *shape) {
    pair v;
    v.h = sq_tensor_view((float *)base->h.data + offset, SQ_F32, SQ_CPU, ndim, shape);
    v.d = sq_tensor_view((char *)base->d.data + sq_dtype_bytes(g_dt, offset), g_dt, SQ_CUDA, ndim, shape);
    return v;
}

// Re-poisons a device output between ops that share it.
static void poison_dev(pair *o) { sq_fill(&o->d, NAN); }

// G products of one input, outputs stride apart with gaps (the q/k/v projections as
// one strided-batched GEMM), against the CPU twin; the gaps must keep their value.
static void test_matmul_shared_input(void) {
    const int64_t shapes[][4] = {{3, 17, 5, 3}, {333, 256, 96, 3}, {1024, 64, 200, 2}};
    for (int s = 0; s < 3; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1], M = shapes[s][2], G = shapes[s][3], stride = N * M + 8;
        for (int bias = 0; bias < 2; bias++) {
            pair x = rnd(2, SQ_SHAPE(N, K), -1, 1), w = rnd(3, SQ_SHAPE(G, M, K), -1, 1), b = rnd(1, SQ_SHAPE(G * M), -1, 1);
            pair all = outp(1, SQ_SHAPE(G * stride));
            for (int64_t g = 0; g < G; g++) {   // the gaps hold 7 on both sides
                pair gap = view_at(&all, g * stride + N * M, 1, SQ_SHAPE(8));
                sq_fill(&gap.h, 7.0f);
                sq_fill(&gap.d, 7.0f);
            }
            pair o = view_at(&all, 0, 2, SQ_SHAPE(N, M));
            sq_matmul_shared_input(&o.h, stride, &x.h, &w.h, bias ? &b.h : NULL);
            sq_matmul_shared_input(&o.d, stride, &x.d, &w.d, bias ? &b.d : NULL);
            char what[80];
            snprintf(what, sizeof what, "matmul_shared_input %lldx%lldx%lld G %lld bias %d", (long long)N, (long long)K,
                     (long long)M, (long long)G, bias);
            expect(what, &all);
            drop(&x); drop(&w); drop(&b); drop(&all);
        }
    }
}

// The row kernels of kernels/cuda/norm.cu: the SD3.5 Large shapes at 1024² (4429
// tokens of C 2432; the QK RMSNorm over 4429 * 38 heads of 64), T5's C 4096, and the
// sizes at each path's edge: C 8192 (the longest row kept in registers), C 8200 (the
// block-per-row kernels), C not a multiple of 8 (scalar loads: a warp per row up to
// 256, a block up to 2047, then the block-per-row kernels), and data one element off
// alignment.
static void norm_case(int64_t rows, int64_t C, int64_t off) {
    pair xb = rnd(1, SQ_SHAPE(rows * C + off), -3, 4), ob = outp(1, SQ_SHAPE(rows * C + off));
    pair x = view_at(&xb, off, 2, SQ_SHAPE(rows, C)), o = view_at(&ob, off, 2, SQ_SHAPE(rows, C));
    pair w = rnd(1, SQ_SHAPE(C), 0.5f, 1.5f), b = rnd(1, SQ_SHAPE(C), -1, 1);
    char what[96];
    for (int affine = 0; affine < 2; affine++) {
        poison_dev(&o);
        sq_layernorm(&o.h, &x.h, affine ? &w.h : NULL, affine ? &b.h : NULL, 1e-6f);
        sq_layernorm(&o.d, &x.d, affine ? &w.d : NULL, affine ? &b.d : NULL, 1e-6f);
        snprintf(what, sizeof what, "layernorm %lldx%lld%s%s", (long long)rows, (long long)C, affine ? " affine" : "",
                 off ? " unaligned" : "");
        expect(what, &o);
        poison_dev(&o);
        sq_rmsnorm(&o.h, &x.h, affine ? &w.h : NULL, 1e-6f);
        sq_rmsnorm(&o.d, &x.d, affine ? &w.d : NULL, 1e-6f);
        snprintf(what, sizeof what, "rmsnorm %lldx%lld%s%s", (long long)rows, (long long)C, affine ? " weight" : "",
                 off ? " unaligned" : "");
        expect(what, &o);
    }
    sq_rmsnorm(&x.h, &x.h, &w.h, 1e-6f);   // in place, as the QK norm runs
    sq_rmsnorm(&x.d, &x.d, &w.d, 1e-6f);
    snprintf(what, sizeof what, "rmsnorm %lldx%lld in place%s", (long long)rows, (long long)C, off ? " unaligned" : "");
    expect(what, &x);
    drop(&xb); drop(&ob); drop(&w); drop(&b);
}

// modulate, gated_add and the fused layernorm_modulate ops on (B,T,C). For one sample
// the shift / scale / gate vectors are views into one (1, 6C) adaLN output, as
// mmdit/embed.c's sd_chunk makes them (aligned only when C is a multiple of 8); for
// two, separate (B,C) tensors. off shifts x, y and out off alignment.
static void adaln_case(int64_t B, int64_t T, int64_t C, int64_t off) {
    int64_t n = B * T * C;
    pair xb = rnd(1, SQ_SHAPE(n + off), -3, 4), yb = rnd(1, SQ_SHAPE(n + off), -2, 2), ob = outp(1, SQ_SHAPE(n + off));
    pair x = view_at(&xb, off, 3, SQ_SHAPE(B, T, C)), y = view_at(&yb, off, 3, SQ_SHAPE(B, T, C));
    pair o = view_at(&ob, off, 3, SQ_SHAPE(B, T, C));
    pair mod = rnd(2, SQ_SHAPE(B, 6 * C), -1, 1), vec[3];
    for (int i = 0; i < 3; i++) vec[i] = B == 1 ? view_at(&mod, (i + 3) * C, 2, SQ_SHAPE(1, C)) : rnd(2, SQ_SHAPE(B, C), -1, 1);
    pair *sh = &vec[0], *sc = &vec[1], *g = &vec[2];
    char shape[64], what[96];
    snprintf(shape, sizeof shape, "B%lld T%lld C%lld%s", (long long)B, (long long)T, (long long)C, off ? " unaligned" : "");

    tr_modulate(&o.h, &x.h, &sh->h, &sc->h);
    tr_modulate(&o.d, &x.d, &sh->d, &sc->d);
    snprintf(what, sizeof what, "modulate %s", shape);
    expect(what, &o);
    poison_dev(&o);
    sq_layernorm_modulate(&o.h, &x.h, &sh->h, &sc->h, 1e-6f);
    sq_layernorm_modulate(&o.d, &x.d, &sh->d, &sc->d, 1e-6f);
    snprintf(what, sizeof what, "layernorm_modulate %s", shape);
    expect(what, &o);
    sq_copy(&o.h, &x.h);
    sq_copy(&o.d, &x.d);
    sq_layernorm_modulate(&o.h, &o.h, &sh->h, &sc->h, 1e-6f);
    sq_layernorm_modulate(&o.d, &o.d, &sh->d, &sc->d, 1e-6f);
    snprintf(what, sizeof what, "layernorm_modulate in place %s", shape);
    expect(what, &o);
    for (int gated = 1; gated >= 0; gated--) {
        sq_gated_add(&x.h, gated ? &g->h : NULL, &y.h);
        sq_gated_add(&x.d, gated ? &g->d : NULL, &y.d);
        snprintf(what, sizeof what, "gated_add%s %s", gated ? "" : " (no gate)", shape);
        expect(what, &x);
        poison_dev(&o);
        sq_gated_add_layernorm_modulate(&x.h, gated ? &g->h : NULL, &y.h, &o.h, &sh->h, &sc->h, 1e-6f);
        sq_gated_add_layernorm_modulate(&x.d, gated ? &g->d : NULL, &y.d, &o.d, &sh->d, &sc->d, 1e-6f);
        snprintf(what, sizeof what, "gated_add_ln_mod%s %s: x", gated ? "" : " (no gate)", shape);
        expect(what, &x);
        snprintf(what, sizeof what, "gated_add_ln_mod%s %s: h", gated ? "" : " (no gate)", shape);
        expect(what, &o);
    }
    if (B > 1)
        for (int i = 0; i < 3; i++) drop(&vec[i]);
    drop(&xb); drop(&yb); drop(&ob); drop(&mod);
}

// GELU (both forms) and SiLU; `full` = 0 runs only GELU(tanh), the MMDiT's, for the
// large MLP activation.
static void act_case(int64_t n, int64_t off, bool full) {
    pair xb = rnd(1, SQ_SHAPE(n + off), -6, 6), ob = outp(1, SQ_SHAPE(n + off));
    pair x = view_at(&xb, off, 1, SQ_SHAPE(n)), o = view_at(&ob, off, 1, SQ_SHAPE(n));
    char what[96];
    for (int kind = full ? 0 : 1; kind < (full ? 3 : 2); kind++) {
        static const char *names[] = {"gelu erf", "gelu tanh", "silu"};
        poison_dev(&o);
        if (kind < 2) { sq_gelu(&o.h, &x.h, kind == 1); sq_gelu(&o.d, &x.d, kind == 1); }
        else { sq_silu(&o.h, &x.h); sq_silu(&o.d, &x.d); }
        snprintf(what, sizeof what, "%s n %lld%s", names[kind], (long long)n, off ? " unaligned" : "");
        expect(what, &o);
    }
    drop(&xb); drop(&ob);
}

static void test_fast_paths(void) {
    norm_case(4429 * 38, 64, 0);
    norm_case(1000, 64, 1);
    norm_case(4429, 2432, 0);
    norm_case(41, 2432, 1);
    norm_case(77, 4096, 0);
    norm_case(37, 8192, 0);
    norm_case(5, 8200, 0);
    norm_case(77, 1024, 0);
    norm_case(333, 100, 0);
    norm_case(19, 1001, 0);
    norm_case(13, 2047, 0);
    norm_case(9, 3001, 0);
    norm_case(33, 3, 0);
    adaln_case(1, 4096, 2432, 0);
    adaln_case(2, 333, 2432, 0);
    adaln_case(1, 333, 2432, 1);
    adaln_case(2, 17, 100, 0);
    adaln_case(3, 7, 24, 0);
    adaln_case(1, 3, 9000, 0);
    act_case(4429 * 9728, 0, false);
    act_case(4096 * 8, 0, true);
    act_case(4096, 1, true);
    act_case(1031, 0, true);
}

// A key mask (B,Tk) on host and device: every fifth key masked, and in batch 1 every
// key (so the all-masked row must produce zeros).
static void make_key_mask(sq_tensor *mh, sq_tensor *md, int64_t B, int64_t Tk) {
    sq_tensor_alloc(mh, SQ_U8, SQ_CPU, 2, SQ_SHAPE(B, Tk));
    sq_tensor_alloc(md, SQ_U8, SQ_CUDA, 2, SQ_SHAPE(B, Tk));
    uint8_t *m = mh->data;
    for (int64_t i = 0; i < B * Tk; i++) m[i] = (uint8_t)((i * 7 + 3) % 5 != 0);
    if (B > 1) memset(m + Tk, 0, (size_t)Tk);
    sq_tensor_copy(md, mh);
}

#ifdef SQ_HAVE_CUDA
// The fast device path's output against the reference kernel's, within TOL. Returns
// the fast output on the host (caller frees) for expect_repeat_identical.
static float *expect_fast_matches_reference(const char *what, const sq_tensor *fast, const sq_tensor *ref) {
    int64_t n = sq_tensor_numel(fast);
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    SQ_CHECK(sq_tensor_to_host_f32(a, fast) == SQ_OK && sq_tensor_to_host_f32(b, ref) == SQ_OK, "%s", sq_error_message());
    double e = tu_rel_err(a, b, n);
    printf("  %-44s rel err %.2e\n", what, e);
    TU_CHECK(e <= TOL, "%s: relative error %.3g > %g", what, e, TOL);
    free(b);
    return a;
}

// A second run of the fast path must equal the first bit for bit (no atomics).
static void expect_repeat_identical(const char *what, const float *first, const sq_tensor *again) {
    int64_t n = sq_tensor_numel(again);
    float *b = malloc((size_t)n * sizeof(float));
    SQ_CHECK(sq_tensor_to_host_f32(b, again) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(memcmp(first, b, (size_t)n * sizeof(float)) == 0, "%s: repeat not bit-identical", what);
    free(b);
}
#endif

static void attention_case(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS, bool use_bias, bool use_mask, bool causal) {
    pair q = rnd(4, SQ_SHAPE(B, Tq, NH, HS), -1, 1), k = rnd(4, SQ_SHAPE(B, Tk, NH, HS), -1, 1);
    pair v = rnd(4, SQ_SHAPE(B, Tk, NH, HS), -1, 1), bias = rnd(3, SQ_SHAPE(NH, Tq, Tk), -1, 1);
    pair o = outp(4, SQ_SHAPE(B, Tq, NH, HS));
    sq_tensor mh, md;
    make_key_mask(&mh, &md, B, Tk);
    float scale = 1.0f / sqrtf((float)HS);
    sq_attention(&o.h, &q.h, &k.h, &v.h, use_bias ? &bias.h : NULL, use_mask ? &mh : NULL, causal, scale);
    sq_attention(&o.d, &q.d, &k.d, &v.d, use_bias ? &bias.d : NULL, use_mask ? &md : NULL, causal, scale);
    char what[96];
    snprintf(what, sizeof what, "attention B%lld Tq%lld Tk%lld NH%lld HS%lld b%d m%d c%d", (long long)B, (long long)Tq,
             (long long)Tk, (long long)NH, (long long)HS, use_bias, use_mask, causal);
    expect(what, &o);
    drop(&q); drop(&k); drop(&v); drop(&bias); drop(&o);
    sq_tensor_free(&mh); sq_tensor_free(&md);
}

// bf16 only: sq_attention's device path (the flash kernel for bf16, no bias, not
// causal, HS 64/128) against the CPU op and against cuda_attention_reference (the
// simple kernel) on the same inputs; with a mask, batch 1 has every key masked (zeros).
static void attention_flash_case(int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t HS, bool use_mask) {
#ifdef SQ_HAVE_CUDA
    pair q = rnd(4, SQ_SHAPE(B, Tq, NH, HS), -1, 1), k = rnd(4, SQ_SHAPE(B, Tk, NH, HS), -1, 1);
    pair v = rnd(4, SQ_SHAPE(B, Tk, NH, HS), -1, 1);
    pair o = outp(4, SQ_SHAPE(B, Tq, NH, HS)), r = outp(4, SQ_SHAPE(B, Tq, NH, HS));
    sq_tensor mh, md;
    make_key_mask(&mh, &md, B, Tk);
    float scale = 1.0f / sqrtf((float)HS);
    sq_attention(&o.h, &q.h, &k.h, &v.h, NULL, use_mask ? &mh : NULL, false, scale);
    memcpy(r.h.data, o.h.data, (size_t)sq_tensor_numel(&o.h) * sizeof(float));
    sq_attention(&o.d, &q.d, &k.d, &v.d, NULL, use_mask ? &md : NULL, false, scale);
    cuda_attention_reference(g_dt, r.d.data, q.d.data, k.d.data, v.d.data, NULL, use_mask ? md.data : NULL, false, scale,
                             B, Tq, Tk, NH, HS);
    char what[96];
    snprintf(what, sizeof what, "flash attn B%lld Tq%lld Tk%lld NH%lld HS%lld m%d vs CPU", (long long)B, (long long)Tq,
             (long long)Tk, (long long)NH, (long long)HS, use_mask);
    expect(what, &o);
    snprintf(what, sizeof what, "ref attn   B%lld Tq%lld Tk%lld NH%lld HS%lld m%d vs CPU", (long long)B, (long long)Tq,
             (long long)Tk, (long long)NH, (long long)HS, use_mask);
    expect(what, &r);
    float *first = expect_fast_matches_reference("  flash vs reference kernel", &o.d, &r.d);
    sq_attention(&o.d, &q.d, &k.d, &v.d, NULL, use_mask ? &md : NULL, false, scale);
    expect_repeat_identical("flash attention", first, &o.d);
    free(first);
    drop(&q); drop(&k); drop(&v); drop(&o); drop(&r);
    sq_tensor_free(&mh); sq_tensor_free(&md);
#else
    (void)B; (void)Tq; (void)Tk; (void)NH; (void)HS; (void)use_mask;
#endif
}

static void conv_case(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t K, int stride, int pt, int pb,
                      int pl, int pr) {
    int64_t Ho = (H + pt + pb - K) / stride + 1, Wo = (W + pl + pr - K) / stride + 1;
    pair x = rnd(4, SQ_SHAPE(B, Cin, H, W), -1, 1), w = rnd(4, SQ_SHAPE(Cout, Cin, K, K), -1, 1), b = rnd(1, SQ_SHAPE(Cout), -1, 1);
    pair o = outp(4, SQ_SHAPE(B, Cout, Ho, Wo));
    sq_conv2d(&o.h, &x.h, &w.h, &b.h, stride, pt, pb, pl, pr);
    sq_conv2d(&o.d, &x.d, &w.d, &b.d, stride, pt, pb, pl, pr);
    char what[96];
    snprintf(what, sizeof what, "conv2d %lldx%lld k%lld s%d pad(%d,%d,%d,%d)", (long long)H, (long long)W, (long long)K,
             stride, pt, pb, pl, pr);
    expect(what, &o);
    drop(&x); drop(&w); drop(&b); drop(&o);
}

// sq_conv2d's device path (cuDNN when the build has it and the padding is symmetric,
// else the reference kernel: the (0,1,0,1) stride-2 case is that fallback) against the
// CPU op and against cuda_conv2d_reference on the same inputs, then a repeat that must
// be bit-identical (only deterministic cuDNN algorithms are picked).
static void conv_cudnn_case(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t K, int stride, int pt, int pb,
                            int pl, int pr) {
#ifdef SQ_HAVE_CUDA
    int64_t Ho = (H + pt + pb - K) / stride + 1, Wo = (W + pl + pr - K) / stride + 1;
    pair x = rnd(4, SQ_SHAPE(B, Cin, H, W), -1, 1), w = rnd(4, SQ_SHAPE(Cout, Cin, K, K), -1, 1), b = rnd(1, SQ_SHAPE(Cout), -1, 1);
    pair o = outp(4, SQ_SHAPE(B, Cout, Ho, Wo)), r = outp(4, SQ_SHAPE(B, Cout, Ho, Wo));
    sq_conv2d(&o.h, &x.h, &w.h, &b.h, stride, pt, pb, pl, pr);
    memcpy(r.h.data, o.h.data, (size_t)sq_tensor_numel(&o.h) * sizeof(float));
    sq_conv2d(&o.d, &x.d, &w.d, &b.d, stride, pt, pb, pl, pr);
    cuda_conv2d_reference(g_dt, r.d.data, x.d.data, w.d.data, b.d.data, B, Cin, H, W, Cout, K, K, stride, pt, pb, pl, pr, Ho,
                          Wo);
    char what[96];
    snprintf(what, sizeof what, "conv B%lld %lldx%lldx%lld->%lld k%lld s%d p(%d,%d,%d,%d) vs CPU", (long long)B, (long long)Cin,
             (long long)H, (long long)W, (long long)Cout, (long long)K, stride, pt, pb, pl, pr);
    expect(what, &o);
    snprintf(what, sizeof what, "ref conv B%lld %lldx%lldx%lld->%lld k%lld vs CPU", (long long)B, (long long)Cin, (long long)H,
             (long long)W, (long long)Cout, (long long)K);
    expect(what, &r);
    float *first = expect_fast_matches_reference("  default vs reference conv kernel", &o.d, &r.d);
    sq_copy(&o.d, &r.d);   // overwrite with the reference output, then recompute
    sq_conv2d(&o.d, &x.d, &w.d, &b.d, stride, pt, pb, pl, pr);
    expect_repeat_identical("conv", first, &o.d);
    free(first);
    drop(&x); drop(&w); drop(&b); drop(&o); drop(&r);
#else
    (void)B; (void)Cin; (void)H; (void)W; (void)Cout; (void)K; (void)stride; (void)pt; (void)pb; (void)pl; (void)pr;
#endif
}

static void test_elementwise_layout(void) {
    int64_t B = 2, T = 17, C = 24;
    pair a = rnd(3, SQ_SHAPE(B, T, C), -2, 2), b = rnd(3, SQ_SHAPE(B, T, C), -2, 2), o = outp(3, SQ_SHAPE(B, T, C));
    pair sh = rnd(2, SQ_SHAPE(B, C), -1, 1), sc = rnd(2, SQ_SHAPE(B, C), -1, 1), rb = rnd(1, SQ_SHAPE(C), -1, 1);
    sq_add(&o.h, &a.h, &b.h); sq_add(&o.d, &a.d, &b.d); expect("add", &o);
    sq_sub(&o.h, &a.h, &b.h); sq_sub(&o.d, &a.d, &b.d); expect("sub", &o);
    sq_mul(&o.h, &a.h, &b.h); sq_mul(&o.d, &a.d, &b.d); expect("mul", &o);
    sq_scale(&o.h, &a.h, 1.5f, -0.25f); sq_scale(&o.d, &a.d, 1.5f, -0.25f); expect("scale", &o);
    sq_axpby(&o.h, 0.5f, &a.h, -2.0f, &b.h); sq_axpby(&o.d, 0.5f, &a.d, -2.0f, &b.d); expect("axpby", &o);
    sq_fill(&o.h, -1.25f); sq_fill(&o.d, -1.25f); expect("fill", &o);
    tr_modulate(&o.h, &a.h, &sh.h, &sc.h); tr_modulate(&o.d, &a.d, &sh.d, &sc.d); expect("modulate", &o);
    sq_gated_add(&o.h, &sc.h, &b.h); sq_gated_add(&o.d, &sc.d, &b.d); expect("gated_add", &o);
    sq_gated_add(&o.h, NULL, &a.h); sq_gated_add(&o.d, NULL, &a.d); expect("residual add (no gate)", &o);
    pair img = rnd(4, SQ_SHAPE(2, 3, 5, 7), -1, 1), cb = rnd(2, SQ_SHAPE(2, 3), -1, 1), up = outp(4, SQ_SHAPE(2, 3, 10, 14));
    tr_add_channel_bias(&img.h, &cb.h); tr_add_channel_bias(&img.d, &cb.d); expect("add_channel_bias", &img);
    sq_upsample_nearest2x(&up.h, &img.h); sq_upsample_nearest2x(&up.d, &img.d); expect("upsample nearest 2x", &up);
    // layout: permute, concat, slice
    pair x4 = rnd(4, SQ_SHAPE(2, 3, 5, 7), -1, 1), pm = outp(4, SQ_SHAPE(7, 2, 5, 3));
    sq_permute(&pm.h, &x4.h, (const int[]){3, 0, 2, 1}); sq_permute(&pm.d, &x4.d, (const int[]){3, 0, 2, 1});
    expect("permute (3,0,2,1)", &pm);
    pair cat = outp(3, SQ_SHAPE(B, 2 * T, C));
    sq_concat(&cat.h, (const sq_tensor *[]){&a.h, &b.h}, 2, 1);
    sq_concat(&cat.d, (const sq_tensor *[]){&a.d, &b.d}, 2, 1);
    expect("concat tokens", &cat);
    pair sl = outp(3, SQ_SHAPE(B, 5, C));
    sq_slice(&sl.h, &cat.h, 1, 20); sq_slice(&sl.d, &cat.d, 1, 20); expect("slice tokens", &sl);
    // the joint attention's shapes: rows of 16-byte multiples (the vectorised copy), B > 1
    pair qi = rnd(4, SQ_SHAPE(3, 19, 2, 8), -1, 1), qc = rnd(4, SQ_SHAPE(3, 5, 2, 8), -1, 1);
    pair qj = outp(4, SQ_SHAPE(3, 24, 2, 8)), qs = outp(4, SQ_SHAPE(3, 5, 2, 8));
    sq_concat(&qj.h, (const sq_tensor *[]){&qi.h, &qc.h}, 2, 1);
    sq_concat(&qj.d, (const sq_tensor *[]){&qi.d, &qc.d}, 2, 1);
    expect("concat tokens (16-byte rows)", &qj);
    sq_slice(&qs.h, &qj.h, 1, 19); sq_slice(&qs.d, &qj.d, 1, 19); expect("slice tokens (16-byte rows)", &qs);
    pair ch = outp(2, SQ_SHAPE(3, 16)), mods = rnd(2, SQ_SHAPE(3, 48), -1, 1);
    sq_slice(&ch.h, &mods.h, 1, 8); sq_slice(&ch.d, &mods.d, 1, 8); expect("slice columns, 16-byte aligned", &ch);
    sq_slice(&ch.h, &mods.h, 1, 2); sq_slice(&ch.d, &mods.d, 1, 2); expect("slice columns, 4-byte aligned", &ch);
    sq_slice(&ch.h, &mods.h, 1, 3); sq_slice(&ch.d, &mods.d, 1, 3); expect("slice columns, 2-byte aligned", &ch);
    // reductions: deterministic and close to the CPU
    double mh = sq_mse(&a.h, &b.h), md = sq_mse(&a.d, &b.d), md2 = sq_mse(&a.d, &b.d);
    TU_CHECK(fabs(md - mh) <= 1e-6 * mh && md == md2, "mse %g vs %g (repeat %g)", md, mh, md2);
    double meh = tr_mean(&a.h), med = tr_mean(&a.d);
    TU_CHECK(fabs(med - meh) <= 1e-6, "mean %g vs %g", med, meh);
    printf("  mse / mean: CUDA %.7g / %.7g, CPU %.7g / %.7g, repeat bit-identical: %s\n", md, med, mh, meh, md == md2 ? "yes" : "NO");
    // bf16 <-> f32 copy on the device
    sq_tensor f;
    sq_tensor_alloc(&f, g_dt == SQ_F32 ? SQ_BF16 : SQ_F32, SQ_CUDA, 3, SQ_SHAPE(B, T, C));
    sq_copy(&f, &a.d);
    sq_fill(&o.d, 0.0f);
    sq_copy(&o.d, &f);
    memcpy(o.h.data, a.h.data, (size_t)(B * T * C) * sizeof(float));
    expect("copy with dtype conversion and back", &o);
    sq_tensor_free(&f);
    drop(&a); drop(&b); drop(&o); drop(&sh); drop(&sc); drop(&rb); drop(&img); drop(&cb); drop(&up); drop(&x4); drop(&pm);
    drop(&cat); drop(&sl);
}

// sq_weighted_mse (the loss-mask reduction): CUDA vs CPU on the same (bf16-rounded)
// inputs, with weights in [0, 1] (a third exactly 0). The device weights are a view of
// a longer NaN-poisoned buffer and a, b views into poisoned ones too, so a read past
// (C, P) or P shows as NaN. Both sums are in double, so only the order differs.
static void weighted_mse_case(int64_t C, int64_t H, int64_t W) {
    int64_t P = H * W, n = C * P, pad = 1000, np = n + pad, wp = P + pad;
    pair a = rnd(1, &np, -2, 2), b = rnd(1, &np, -1, 3);
    tu_poison((float *)a.h.data + n, pad);
    tu_poison((float *)b.h.data + n, pad);
    SQ_CHECK(sq_tensor_from_host_f32(&a.d, a.h.data) == SQ_OK && sq_tensor_from_host_f32(&b.d, b.h.data) == SQ_OK, "%s",
             sq_error_message());
    sq_tensor wh, wd;
    SQ_CHECK(sq_tensor_alloc(&wh, SQ_F32, SQ_CPU, 1, &wp) == SQ_OK && sq_tensor_alloc(&wd, SQ_F32, SQ_CUDA, 1, &wp) == SQ_OK,
             "%s", sq_error_message());
    float *w = wh.data;
    for (int64_t p = 0; p < P; p++) w[p] = p % 3 == 0 ? 0.0f : tu_uniform(&rs, 0, 1);
    tu_poison(w + P, pad);
    SQ_CHECK(sq_tensor_from_host_f32(&wd, w) == SQ_OK, "%s", sq_error_message());
    sq_tensor ah = sq_tensor_view(a.h.data, SQ_F32, SQ_CPU, 3, SQ_SHAPE(C, H, W));
    sq_tensor bh = sq_tensor_view(b.h.data, SQ_F32, SQ_CPU, 3, SQ_SHAPE(C, H, W));
    sq_tensor ad = sq_tensor_view(a.d.data, g_dt, SQ_CUDA, 3, SQ_SHAPE(C, H, W));
    sq_tensor bd = sq_tensor_view(b.d.data, g_dt, SQ_CUDA, 3, SQ_SHAPE(C, H, W));
    sq_tensor whv = sq_tensor_view(w, SQ_F32, SQ_CPU, 2, SQ_SHAPE(H, W));
    sq_tensor wdv = sq_tensor_view(wd.data, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(H, W));
    double h = sq_weighted_mse(&ah, &bh, &whv), d = sq_weighted_mse(&ad, &bd, &wdv), d2 = sq_weighted_mse(&ad, &bd, &wdv);
    double plain = sq_mse(&ah, &bh);
    printf("  weighted mse (%lld,%lldx%lld): CUDA %.15g, CPU %.15g, unweighted %.7g, repeat bit-identical: %s\n",
           (long long)C, (long long)H, (long long)W, d, h, plain, d == d2 ? "yes" : "NO");
    TU_CHECK(isfinite(d) && fabs(d - h) <= 1e-9 * h && d == d2, "weighted mse (%lld,%lld,%lld): CUDA %.17g vs CPU %.17g (repeat %.17g)",
             (long long)C, (long long)H, (long long)W, d, h, d2);
    TU_CHECK(fabs(h - plain) > 1e-4 * plain, "the weights change the value (%g vs %g)", h, plain);
    sq_tensor_free(&wh);
    sq_tensor_free(&wd);
    drop(&a); drop(&b);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    char gpu[256];
    sq_cuda_describe(gpu, sizeof gpu);
    printf("GPU: %s\n", gpu);
    for (int round = 0; round < 2; round++) {
        g_dt = round ? SQ_F32 : SQ_BF16;
        TOL = round ? 1e-4 : 2e-2;
        printf("-- device tensors %s, tolerance %g --\n", sq_dtype_name(g_dt), TOL);
        test_matmul();
        test_matmul_shared_input();
        test_matmul_many_shapes();
        test_norms_acts();
        test_fast_paths();
        weighted_mse_case(1, 1, 2);
        weighted_mse_case(16, 17, 23);
        weighted_mse_case(16, 128, 128);   // SD3.5 at 1024²: 16 channels, 128x128 latent pixels
        weighted_mse_case(3, 300, 301);    // more pixels than the grid has threads
        attention_case(1, 1, 1, 1, 16, false, false, false);
        attention_case(2, 77, 77, 3, 64, false, false, false);
        attention_case(1, 333, 333, 2, 64, false, false, false);
        attention_case(2, 17, 29, 2, 16, true, false, false);
        attention_case(3, 13, 23, 2, 32, false, true, false);
        attention_case(2, 19, 19, 4, 16, false, false, true);
        attention_case(1, 64, 64, 1, 512, false, false, false);   // the VAE's single-head attention
        // fp32, one head, 256 keys or more: the chunked GEMM path (attention_gemm.cu), with
        // a last chunk shorter than the others (rows of 64 MiB: 16384 x 1024 keys)
        attention_case(2, 300, 257, 1, 64, false, false, false);
        if (g_dt == SQ_F32) {
#ifdef SQ_HAVE_CUDA
            TU_CHECK(cuda_attention_last_path() == CUDA_ATTN_GEMM, "fp32 single-head attention ran the GEMM path");
#endif
            attention_case(1, 17000, 1024, 1, 16, false, false, false);
            attention_case(1, 1024, 1024, 1, 512, false, false, false);   // the VAE's at 256² (32² latent pixels)
        }
        if (g_dt == SQ_BF16) {
            attention_flash_case(2, 200, 200, 3, 64, false);
            attention_flash_case(2, 77, 77, 2, 64, true);
            attention_flash_case(1, 1000, 1000, 2, 64, false);
            attention_flash_case(2, 150, 333, 2, 64, true);
            attention_flash_case(1, 130, 70, 2, 128, true);
            attention_flash_case(1, 1, 1, 1, 64, false);
        }
        conv_case(2, 3, 9, 11, 5, 3, 1, 1, 1, 1, 1);
        conv_case(1, 16, 8, 8, 7, 1, 1, 0, 0, 0, 0);
        conv_case(2, 4, 9, 10, 6, 3, 2, 0, 1, 0, 1);
        conv_case(2, 16, 8, 12, 32, 2, 2, 0, 0, 0, 0);
        conv_cudnn_case(2, 8, 17, 23, 16, 3, 1, 1, 1, 1, 1);
        conv_cudnn_case(1, 32, 32, 32, 64, 1, 1, 0, 0, 0, 0);
        conv_cudnn_case(1, 16, 33, 31, 16, 3, 2, 0, 1, 0, 1);   // asymmetric pad: the reference-kernel fallback
        conv_cudnn_case(1, 128, 64, 64, 128, 3, 1, 1, 1, 1, 1);
        test_elementwise_layout();
    }
    return tu_finish("test_gpu_ops");
}
