// kernels/graph.h: a sequence of ops recorded once and then replayed as one CUDA
// graph. Why: an SD3.5 forward is some 1500 launches (GEMMs, norms, dequantisations,
// the events of kernels/streams.h and kernels/weight_prefetch.h); issuing them costs
// the host about 8 ms a pass, close to all of a 512² Medium pass on an H100, and the
// GPU a gap after each. A replay is one launch.
//
//   if (sq_graph_begin(dev) == SQ_OK) { ...ops...; g = sq_graph_end(dev); }
//   sq_graph_launch(g, p);   // runs them, now and as often as wanted
//
// Between begin and end the ops are recorded, not run. What they may do: launch on
// the current stream (every op of kernels/ does), fork and join the side streams. Not:
// allocate or free device memory, read results back, or depend on values the host
// computes per call, because a replay repeats the recorded arguments. The one
// exception is the perturbation of int4 layers: a layer that was perturbed when
// recorded reads, at each replay, the seed, step, eps, sign and relative flag of the
// p given to sq_graph_launch (only where its scales start is fixed); a layer that
// was not (frozen, or p had sign 0) stays unperturbed.
//
// Buffers a graph points into must outlive it: sq_graph_generation() moves whenever
// the backend frees or replaces memory of its own that graphs may use (the prefetch
// buffers, cuDNN's workspace; sq_device_trim does), and a graph recorded under an
// older generation must not be launched. Off on the CPU, under SQ_PROFILE (which
// synchronises around each op) and with SQ_CUDA_GRAPHS=0 in the environment.
#ifndef SQ_GRAPH_H
#define SQ_GRAPH_H

#include <stdbool.h>

#include "core/tensor.h"
#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sq_graph sq_graph;

bool sq_graphs_enabled(sq_device device);
// For this process (tests): on unless SQ_CUDA_GRAPHS=0.
void sq_graphs_set_enabled(bool on);
unsigned long sq_graph_generation(void);

int sq_graph_begin(sq_device device);
// The recorded graph, ready to launch; NULL (with the error set) when recording
// failed, e.g. an op that may not be recorded. Either way recording has stopped.
sq_graph *sq_graph_end(sq_device device);
void sq_graph_launch(sq_graph *g, const sq_perturb *p);
void sq_graph_free(sq_graph *g);

#ifdef __cplusplus
}
#endif

#endif
