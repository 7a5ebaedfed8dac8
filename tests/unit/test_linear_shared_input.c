// tests/unit/test_linear_shared_input.c: sq_linear_forward_shared_input (kernels/
// linear.h), the q/k/v projections as one batched product, on the CPU: its outputs
// must be the bits of the layer-by-layer path (each layer's own perturbation, a
// frozen layer unperturbed, with and without biases), the gaps between outputs left
// alone, and outputs that are not equally far apart must fall back to that path.
#include <string.h>

#include "core/arena.h"
#include "core/error.h"
#include "kernels/linear.h"
#include "tests/test_util.h"

enum { N = 5, K = 96, M = 40, GROUP = 32, GAP = 3 };

static uint64_t rs = 0x9e3779b9;

static void make_layer(sq_linear *l, bool bias, uint64_t index_base) {
    memset(l, 0, sizeof *l);
    SQ_CHECK(sq_tensor_alloc(&l->codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(M, K)) == SQ_OK &&
                 sq_tensor_alloc(&l->scales, SQ_F32, SQ_CPU, 2, SQ_SHAPE(M, K / GROUP)) == SQ_OK,
             "alloc");
    uint8_t *c = l->codes.data;
    for (int64_t i = 0; i < M * K / 2; i++) c[i] = (uint8_t)(tu_uniform(&rs, 0, 256));
    tu_fill_uniform(l->scales.data, M * K / GROUP, &rs, 0.01f, 0.03f);
    if (bias) {
        SQ_CHECK(sq_tensor_alloc(&l->b, SQ_F32, SQ_CPU, 1, SQ_SHAPE(M)) == SQ_OK, "alloc");
        tu_fill_uniform(l->b.data, M, &rs, -0.5f, 0.5f);
    }
    l->group = GROUP;
    l->index_base = index_base;
}

// Runs both paths and compares; spread: outputs equally far apart (else out[2] moves).
static void run_case(bool bias, bool frozen_middle, int sign, bool spread) {
    sq_linear layers[3];
    for (int i = 0; i < 3; i++) make_layer(&layers[i], bias, (uint64_t)i * 1000 + 7);
    layers[1].frozen = frozen_middle;
    const sq_linear *ls[3] = {&layers[0], &layers[1], &layers[2]};
    float x[N * K], got[3 * (N * M + GAP) + GAP], want[3][N * M];
    tu_fill_uniform(x, N * K, &rs, -1, 1);
    for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) got[i] = 7.0f;   // gaps keep 7
    int64_t stride = N * M + GAP;
    sq_tensor xt = sq_tensor_view(x, SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, K));
    sq_tensor outs[3];
    for (int i = 0; i < 3; i++) {
        int64_t at = i * stride + (!spread && i == 2 ? GAP : 0);
        outs[i] = sq_tensor_view(got + at, SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, M));
        tu_poison(outs[i].data, N * M);
    }
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, 1 << 20) == SQ_OK, "arena");
    sq_perturb p = {.seed = 5, .step = 11, .eps = 1e-2f, .sign = sign, .relative = 1};
    long batched = sq_linear_shared_input_batched();
    TU_CHECK(sq_linear_forward_shared_input((sq_tensor *[]){&outs[0], &outs[1], &outs[2]}, &xt, ls, 3, &p, &a) == SQ_OK,
             "shared-input forward: %s", sq_error_message());
    TU_CHECK(sq_linear_shared_input_batched() - batched == (spread ? 1 : 0), "spread %d: the %s path ran", spread,
             spread ? "layer-by-layer" : "batched");
    for (int i = 0; i < 3; i++) {
        sq_tensor wt = sq_tensor_view(want[i], SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, M));
        SQ_CHECK(sq_linear_forward(&wt, &xt, ls[i], &p, &a) == SQ_OK, "%s", sq_error_message());
    }
    int bad = 0, gaps_bad = 0;
    for (int i = 0; i < 3; i++)
        if (memcmp(outs[i].data, want[i], sizeof want[i])) bad++;
    for (int64_t j = 0; j < 3 * stride + GAP; j++) {
        float *v = got + j;
        bool inside = false;
        for (int i = 0; i < 3; i++) inside |= v >= (float *)outs[i].data && v < (float *)outs[i].data + N * M;
        if (!inside && *v != 7.0f) gaps_bad++;
    }
    TU_CHECK(bad == 0, "bias %d, frozen %d, sign %d, spread %d: %d of 3 outputs differ from layer by layer", bias,
             frozen_middle, sign, spread, bad);
    TU_CHECK(gaps_bad == 0, "bias %d, frozen %d, sign %d, spread %d: %d values between the outputs were written", bias,
             frozen_middle, sign, spread, gaps_bad);
    // the perturbation reached the layers: the + pass differs from the unperturbed one
    if (sign != 0 && !frozen_middle) {
        float plain[N * M];
        sq_tensor pt = sq_tensor_view(plain, SQ_F32, SQ_CPU, 2, SQ_SHAPE(N, M));
        SQ_CHECK(sq_linear_forward(&pt, &xt, ls[1], NULL, &a) == SQ_OK, "%s", sq_error_message());
        TU_CHECK(memcmp(plain, outs[1].data, sizeof plain) != 0, "the perturbation changes the middle layer's output");
    }
    sq_arena_free(&a);
    for (int i = 0; i < 3; i++) sq_linear_free(&layers[i]);
}

int main(void) {
    for (int bias = 0; bias < 2; bias++)
        for (int frozen = 0; frozen < 2; frozen++)
            for (int sign = -1; sign <= 1; sign++) run_case(bias, frozen, sign, true);
    run_case(true, false, 1, false);   // out[2] one gap further: the layer-by-layer path
    return tu_finish("test_linear_shared_input");
}
