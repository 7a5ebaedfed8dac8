// qzo/diagnostics.c: see qzo/diagnostics.h.
#include "qzo/diagnostics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int sd_qzo_diagnose(const sd_scale_list *l, const sq_qzo_config *c, sd_qzo_diagnostics *out) {
    memset(out, 0, sizeof *out);
    double sum_s2[SD_QK_COUNT] = {0};
    int64_t n[SD_QK_COUNT] = {0}, zeros = 0, max_numel = 0;
    for (int i = 0; i < l->count; i++)
        if (sq_tensor_numel(l->scales[i]) > max_numel) max_numel = sq_tensor_numel(l->scales[i]);
    float *host = malloc((size_t)max_numel * sizeof(float) + sizeof(float));
    if (!host) return sq_errorf("out of host memory measuring the scales");
    for (int i = 0; i < l->count; i++) {
        int64_t numel = sq_tensor_numel(l->scales[i]);
        if (sq_tensor_to_host_f32(host, l->scales[i]) != SQ_OK) { free(host); return SQ_FAIL; }
        int k = (int)l->kind[i];
        for (int64_t j = 0; j < numel; j++) {
            double s = host[j];
            sum_s2[k] += s * s;
            zeros += host[j] == 0.0f;
        }
        n[k] += numel;
        out->count += numel;
    }
    free(host);
    for (int k = 0; k < SD_QK_COUNT; k++) {
        if (n[k] == 0) { out->rms_scale[k] = out->rel_perturb[k] = NAN; continue; }
        double ms = sum_s2[k] / (double)n[k];
        out->rms_scale[k] = sqrt(ms);
        // absolute: rms(ε z) = ε; relative: rms(ε z s) = ε rms(s), since z is
        // independent of s with E[z²] = 1, so the ratio is ε itself (also when every
        // scale of the type is 0: those stay 0, no scale moves by more than ε).
        if (c->relative) out->rel_perturb[k] = (double)c->eps;
        else out->rel_perturb[k] = ms > 0 ? (double)c->eps / sqrt(ms) : INFINITY;
        if (out->rel_perturb[k] > out->rel_perturb_max) out->rel_perturb_max = out->rel_perturb[k];
    }
    out->zero_share = out->count ? (double)zeros / (double)out->count : 0;
    return SQ_OK;
}
