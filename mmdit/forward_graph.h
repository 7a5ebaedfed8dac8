// mmdit/forward_graph.h: the MMDiT forward pass replayed as a CUDA graph
// (kernels/graph.h). A model keeps a few recorded passes, one per kind of pass:
// the same scratch arena and mark, input shapes, weights (their buffers, as a
// fingerprint) and whether the pass is perturbed. A kind's first pass runs as
// written (it learns the prefetch order, sizes the buffers, picks the GEMM
// algorithms), its second is recorded and replayed, and every later one is a
// replay: the inputs are copied into the recorded pass's own buffers, the timestep
// features written there, the graph launched with this pass's perturbation, and the
// output copied out. The outputs are those of the pass as written, bit for bit
// (tests/gpu/test_gpu_graph.c). A pass that cannot be recorded runs as written from
// then on, with one warning.
#ifndef SD_MMDIT_FORWARD_GRAPH_H
#define SD_MMDIT_FORWARD_GRAPH_H

#include "mmdit/model.h"

// One forward's arguments (sd_mmdit_forward's).
typedef struct {
    const sd_mmdit *m;
    sq_arena *a;
    const sq_tensor *latent;
    const float *timestep;
    const sq_tensor *context, *pooled;
    const sq_perturb *p;
    sq_tensor *out;
} sd_forward_pass;

// Runs pass f as written. time_features: the timestep features already on the
// device (f->timestep unused), or NULL to compute them from f->timestep.
typedef int (*sd_forward_run_fn)(const sd_forward_pass *f, const sq_tensor *time_features);

sd_forward_graphs *sd_forward_graphs_new(void);
void sd_forward_graphs_free(sd_forward_graphs *g);

// Pass f through f->m's recorded passes (run as written where there is none yet).
int sd_forward_graph_run(const sd_forward_pass *f, sd_forward_run_fn run);

// How many passes of m were recorded and replayed so far (a recorded pass is also
// replayed once: recording does not run it).
void sd_forward_graph_counts(const sd_mmdit *m, long *recorded, long *replayed);

#endif
