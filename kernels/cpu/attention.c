// kernels/cpu/attention.c: scaled dot-product attention in fp32, one (batch, head,
// query) row at a time: scores into a per-row buffer, max-subtracted softmax with
// a double sum, then the weighted sum of values. q/k/v stay in the token-major
// (B,T,NH,HS) layout a linear layer produces, so no permute is needed.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"

void cpu_attention(float *out, const float *q, const float *k, const float *v, const float *bias,
                   const uint8_t *key_mask, bool causal, float scale, int64_t B, int64_t Tq, int64_t Tk, int64_t NH,
                   int64_t HS) {
    int64_t rows = B * NH * Tq;
#pragma omp parallel
    {
        float *scores = malloc((size_t)Tk * sizeof(float));
        float *acc = malloc((size_t)HS * sizeof(float));
        SQ_CHECK(scores && acc, "attention: out of host memory for a %lld-key row", (long long)Tk);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int64_t b = r / (NH * Tq), h = (r / Tq) % NH, i = r % Tq;
            const float *qi = q + ((b * Tq + i) * NH + h) * HS;
            float mx = -INFINITY;
            for (int64_t j = 0; j < Tk; j++) {
                bool masked = (causal && j > i) || (key_mask && !key_mask[b * Tk + j]);
                if (masked) { scores[j] = -INFINITY; continue; }
                const float *kj = k + ((b * Tk + j) * NH + h) * HS;
                float s = 0;
                for (int64_t d = 0; d < HS; d++) s += qi[d] * kj[d];
                s *= scale;
                if (bias) s += bias[(h * Tq + i) * Tk + j];
                scores[j] = s;
                mx = fmaxf(mx, s);
            }
            float *o = out + ((b * Tq + i) * NH + h) * HS;
            if (mx == -INFINITY) {          // every key masked: defined as zeros
                memset(o, 0, (size_t)HS * sizeof(float));
                continue;
            }
            double sum = 0;
            for (int64_t j = 0; j < Tk; j++) {
                float e = scores[j] == -INFINITY ? 0.0f : expf(scores[j] - mx);
                scores[j] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            memset(acc, 0, (size_t)HS * sizeof(float));
            for (int64_t j = 0; j < Tk; j++) {
                float p = scores[j];
                if (p == 0.0f) continue;
                const float *vj = v + ((b * Tk + j) * NH + h) * HS;
                for (int64_t d = 0; d < HS; d++) acc[d] += p * vj[d];
            }
            for (int64_t d = 0; d < HS; d++) o[d] = acc[d] * inv;
        }
        free(scores);
        free(acc);
    }
}
