// kernels/graph.c: see kernels/graph.h.
#include "kernels/graph.h"

#include "kernels/dispatch.h"
#include "kernels/env_switch.h"
#include "kernels/profile.h"

static int g_enabled = -1;   // kernels/env_switch.h

void sq_graphs_set_enabled(bool on) { g_enabled = on; }

bool sq_graphs_enabled(sq_device device) {
    return device == SQ_CUDA && !sq_profile_enabled() && sq_env_switch_on(&g_enabled, "SQ_CUDA_GRAPHS");
}

#ifdef SQ_HAVE_CUDA
unsigned long sq_graph_generation(void) { return cuda_graph_generation(); }

int sq_graph_begin(sq_device device) {
    if (device != SQ_CUDA) return sq_errorf("CUDA graphs need the CUDA device");
    return cuda_graph_begin();
}

sq_graph *sq_graph_end(sq_device device) {
    (void)device;
    return (sq_graph *)cuda_graph_end();
}

void sq_graph_launch(sq_graph *g, const sq_perturb *p) { CUDA_OR_FAIL("graph", cuda_graph_launch(g, p)); }

void sq_graph_free(sq_graph *g) {
    if (g) cuda_graph_free(g);
}
#else
unsigned long sq_graph_generation(void) { return 0; }
int sq_graph_begin(sq_device device) { (void)device; return sq_errorf("this build has no CUDA backend"); }
sq_graph *sq_graph_end(sq_device device) { (void)device; return NULL; }
void sq_graph_launch(sq_graph *g, const sq_perturb *p) { (void)g; (void)p; CUDA_OR_FAIL("graph", (void)0); }
void sq_graph_free(sq_graph *g) { (void)g; }
#endif
