// kernels/cpu/cpu_quant.h: raw-pointer fp32 CPU versions of kernels/quant.h.
#ifndef SQ_CPU_QUANT_H
#define SQ_CPU_QUANT_H

#include <stdint.h>

#include "kernels/quant.h"

double cpu_quantize_q4(const float *w, int64_t nout, int64_t k, int group, uint8_t *codes, float *scales);
void cpu_dequant_q4(float *out, const uint8_t *codes, const float *scales, int64_t nout, int64_t k, int group,
                    const sq_perturb *p);
void cpu_qzo_update(float *scales, int64_t count, const sq_perturb *p, float coeff);
void cpu_ema_update(float *ema, const float *scales, int64_t count, float beta);

#endif
