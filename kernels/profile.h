// kernels/profile.h: where a forward pass spends its time, by op. Off unless the
// environment sets SQ_PROFILE=1; then every op kernels/ sends to the GPU (ops.c,
// quant_ops.c, int8_ops.c, all through CUDA_OR_FAIL of kernels/dispatch.h) is
// bracketed by device synchronisations and timed on the host, and a table (op,
// calls, total ms, share) is printed to stderr at exit.
// The synchronisations remove overlap between kernels, so totals are somewhat
// above an unprofiled run's; the shares are what the table is for.
#ifndef SQ_PROFILE_H
#define SQ_PROFILE_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

bool sq_profile_enabled(void);
// Returns the start time (0 when profiling is off; no synchronisation then).
double sq_profile_begin(void);
void sq_profile_end(const char *op, double t0);

#ifdef __cplusplus
}
#endif

#endif
