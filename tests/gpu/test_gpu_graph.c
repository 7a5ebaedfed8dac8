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
#include "kernels/backend.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "kernels/streams.h"
#include "kernels/weight_prefetch.h"
#include "mmdit/forward_graph.h"
#include "tests/gpu/gpu_start.h"
#include "tests/gpu/mmdit_case.h"
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
    sq_graphs_set_enabled(graphs);
    sq_prefetch_set_enabled(streams);
    sq_streams_set_enabled(streams);
    tu_mmdit_case c;
    tu_mmdit_case_load(&c, cas);
    c.m.blocks[0].ff2.frozen = true;   // recorded unperturbed, whatever the replay's perturbation
    sq_tensor copy[3];   // the inputs in other buffers
    for (int i = 0; i < 3; i++) {
        SQ_CHECK(sq_tensor_alloc(&copy[i], SQ_BF16, SQ_CUDA, c.in[i].ndim, c.in[i].shape) == SQ_OK, "alloc");
        sq_copy(&copy[i], &c.in[i]);
    }
    int64_t B = c.in[0].shape[0];
    float ts[2][8];
    SQ_CHECK(B <= 8, "%s: batch %lld", cas, (long long)B);
    for (int64_t b = 0; b < B; b++) {
        ts[0][b] = c.timestep[b];
        ts[1][b] = 0.5f * c.timestep[b] + 100.0f;
    }
    *n_out = sq_tensor_numel(&c.out);
    sq_linear *swapped = &c.m.blocks[c.m.cfg.num_layers - 1].ff1;
    sq_tensor other_scales = scaled_copy(&swapped->scales, 1.03f);
    for (int i = 0; i < PASSES; i++) {
        // 0-3: +, -, +, - of two perturbations (warm-up, record, replays); 3 reads the
        // copied inputs and other timesteps; 4-5: unperturbed (5 on the copies); 6:
        // after a QZO update; 7-8: one layer's scales swapped (a new kind: warm-up,
        // record); 9: swapped back (the first kind again, a replay); 10-11: after
        // sq_device_trim (recorded again)
        sq_perturb p = {.seed = 5, .step = (uint64_t)(9 + i / 2), .eps = 1e-2f, .sign = i % 2 ? -1 : +1, .relative = 1};
        if (i == 6) tu_mmdit_case_update(&c);
        if (i == 7 || i == 9) {   // as sd_train_val_loss_ema swaps tensor handles
            sq_tensor tmp = swapped->scales;
            swapped->scales = other_scales;
            other_scales = tmp;
        }
        if (i == 10) sq_device_trim(SQ_CUDA);
        bool copies = i == 3 || i == 5;
        outs[i] = tu_mmdit_case_forward(&c, copies ? copy : c.in, ts[copies], i == 4 || i == 5 ? NULL : &p);
    }
    sd_forward_graph_counts(&c.m, &cnt->recorded, &cnt->replayed);
    sq_tensor_free(&other_scales);
    for (int i = 0; i < 3; i++) sq_tensor_free(&copy[i]);
    tu_mmdit_case_free(&c);
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
