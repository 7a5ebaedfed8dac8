// tests/gpu/test_gpu_graph.c: the MMDiT forward replayed as a CUDA graph
// (mmdit/forward_graph.h) gives the same bits as the forward run op by op, over a
// sequence of passes that covers what a replay must follow: + and - passes of
// several perturbations (the perturbation is read at replay), new input buffers and
// timesteps (copied into the graph's own), scales moved by a QZO update (read at
// replay), a layer's scales swapped for other ones as the EMA is swapped in (a new
// kind of pass), unperturbed passes (another kind), and memory given back by
// sq_device_trim (the graphs are recorded again). With the prefetch and the side
// stream on and off, on one sample and on two. Skips (exit 77) without a GPU.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "kernels/streams.h"
#include "kernels/weight_prefetch.h"
#include "mmdit/forward_graph.h"
#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"

enum { PASSES = 12 };

typedef struct {
    long recorded, replayed;
} counts;

// Host copy of t scaled by `by` into a new tensor like t.
static sq_tensor scaled_copy(const sq_tensor *t, float by) {
    int64_t n = sq_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof(float));
    SQ_CHECK(h && sq_tensor_to_host_f32(h, t) == SQ_OK, "read back");
    for (int64_t i = 0; i < n; i++) h[i] *= by;
    sq_tensor c;
    SQ_CHECK(sq_tensor_alloc(&c, t->dtype, t->device, t->ndim, t->shape) == SQ_OK && sq_tensor_from_host_f32(&c, h) == SQ_OK,
             "copy");
    free(h);
    return c;
}

static void run_sequence(const char *cas, bool graphs, bool streams, float **outs, int64_t *n_out, counts *cnt) {
    char model_path[1024], io_path[1024];
    snprintf(model_path, sizeof model_path, "%s/mmdit/%s/transformer", tu_fixtures_dir(), cas);
    snprintf(io_path, sizeof io_path, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), cas);
    sq_graphs_set_enabled(graphs);
    sq_prefetch_set_enabled(streams);
    sq_streams_set_enabled(streams);
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    sd_mmdit m;
    SQ_CHECK(sd_mmdit_load(&m, model_path, SQ_CUDA, SQ_BF16) == SQ_OK && sd_mmdit_quantize(&m, 32, NULL) == SQ_OK,
             "%s", sq_error_message());
    m.blocks[0].ff2.frozen = true;   // recorded unperturbed, whatever the replay's perturbation
    const char *names[3] = {"hidden_states", "encoder_hidden_states", "pooled_projections"};
    sq_tensor t[2][3];   // the inputs, and a copy of them in other buffers
    for (int i = 0; i < 3; i++) {
        const sq_st_entry *e = sq_st_find(io, names[i]);
        for (int c = 0; c < 2; c++)
            SQ_CHECK(sq_tensor_alloc(&t[c][i], SQ_BF16, SQ_CUDA, e->ndim, e->shape) == SQ_OK &&
                         sq_st_load(io, names[i], &t[c][i]) == SQ_OK,
                     "load");
    }
    const sq_st_entry *te = sq_st_find(io, "timestep");
    int64_t B = t[0][0].shape[0];
    float ts[2][8];
    for (int64_t b = 0; b < B; b++) {
        ts[0][b] = ((const float *)te->data)[b];
        ts[1][b] = 0.5f * ts[0][b] + 100.0f;
    }
    sq_tensor out;
    SQ_CHECK(sq_tensor_alloc(&out, SQ_BF16, SQ_CUDA, 4, t[0][0].shape) == SQ_OK, "alloc");
    *n_out = sq_tensor_numel(&out);
    sq_arena a;
    SQ_CHECK(sq_arena_init(&a, SQ_CUDA, 16 << 20) == SQ_OK, "%s", sq_error_message());
    sq_linear *swapped = &m.blocks[m.cfg.num_layers - 1].ff1;
    sq_tensor other_scales = scaled_copy(&swapped->scales, 1.03f);
    for (int i = 0; i < PASSES; i++) {
        // 0-3: +, -, +, - of two perturbations (warm-up, record, replays); 3 reads the
        // copied inputs and other timesteps; 4-5: unperturbed (5 on the copies); 6: after a QZO update;
        // 7-8: one layer's scales swapped (a new kind: warm-up, record); 9: swapped
        // back (the first kind again, a replay); 10-11: after sq_device_trim
        sq_perturb p = {.seed = 5, .step = (uint64_t)(9 + i / 2), .eps = 1e-2f, .sign = i % 2 ? -1 : +1, .relative = 1};
        if (i == 6) {
            sq_perturb u = {.seed = 6, .step = 1, .sign = +1, .relative = 1};
            for (int b = 0; b < m.cfg.num_layers; b++) {
                sd_mmdit_block *bl = &m.blocks[b];
                sq_linear *ls[] = {&bl->to_q, &bl->to_k, &bl->to_v, &bl->to_out, &bl->ff1, &bl->ff2};
                for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) {
                    u.index_base = ls[k]->index_base;
                    if (sq_linear_quantized(ls[k])) sq_qzo_update(&ls[k]->scales, &u, 0.05f);
                }
            }
        }
        if (i == 7 || i == 9) {   // as sd_train_val_loss_ema swaps tensor handles
            sq_tensor tmp = swapped->scales;
            swapped->scales = other_scales;
            other_scales = tmp;
        }
        if (i == 10) sq_device_trim(SQ_CUDA);
        int c = i == 3 || i == 5 ? 1 : 0;
        float *poison = malloc((size_t)*n_out * sizeof(float));
        tu_poison(poison, *n_out);
        sq_tensor_from_host_f32(&out, poison);
        free(poison);
        TU_CHECK(sd_mmdit_forward(&m, &a, &t[c][0], ts[c], &t[c][1], &t[c][2], i == 4 || i == 5 ? NULL : &p, &out, NULL) ==
                     SQ_OK,
                 "%s", sq_error_message());
        outs[i] = malloc((size_t)*n_out * sizeof(float));   // bf16 -> f32 is exact: the bytes compare the bits
        SQ_CHECK(sq_tensor_to_host_f32(outs[i], &out) == SQ_OK, "%s", sq_error_message());
    }
    sd_forward_graph_counts(&m, &cnt->recorded, &cnt->replayed);
    sq_tensor_free(&other_scales);
    sq_arena_free(&a);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 3; i++) sq_tensor_free(&t[c][i]);
    sq_tensor_free(&out);
    sd_mmdit_free(&m);
    sq_st_close(io);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    static const char *cases[] = {"large_like", "medium_like", "nonsquare_b2"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int streams = 0; streams <= 1; streams++) {
            float *plain[PASSES], *graph[PASSES];
            int64_t n;
            counts none, rec;
            run_sequence(cases[c], false, streams, plain, &n, &none);
            run_sequence(cases[c], true, streams, graph, &n, &rec);
            printf("%-13s prefetch and side stream %s: %ld passes recorded, %ld replayed of %d\n", cases[c],
                   streams ? "on " : "off", rec.recorded, rec.replayed, PASSES);
            TU_CHECK(none.recorded == 0 && none.replayed == 0, "%s: graphs off, yet %ld passes replayed", cases[c],
                     none.replayed);
            // recorded: passes 1, 5, 8, 11; replayed: those and 2, 3, 6, 9
            TU_CHECK(rec.recorded == 4 && rec.replayed == 8, "%s: %ld recorded and %ld replayed, expected 4 and 8",
                     cases[c], rec.recorded, rec.replayed);
            for (int i = 0; i < PASSES; i++) {
                TU_CHECK(memcmp(plain[i], graph[i], (size_t)n * sizeof(float)) == 0,
                         "%s pass %d: the graph's output differs (prefetch and side stream %d)", cases[c], i, streams);
                if (i > 0)
                    TU_CHECK(memcmp(graph[i], graph[i - 1], (size_t)n * sizeof(float)) != 0,
                             "%s: passes %d and %d gave the same output", cases[c], i - 1, i);
            }
            for (int i = 0; i < PASSES; i++) {
                free(plain[i]);
                free(graph[i]);
            }
        }
    return tu_finish("test_gpu_graph");
}
