// kernels/cpu/cpu_int8.h: raw-pointer fp32 CPU versions of kernels/int8.h.
#ifndef SQ_CPU_INT8_H
#define SQ_CPU_INT8_H

#include <stdint.h>

double cpu_quantize_i8_rows(const float *w, int64_t nout, int64_t k, int8_t *codes, float *scales);
void cpu_dequant_i8(float *out, const int8_t *codes, const float *scales, int64_t nout, int64_t k);

#endif
