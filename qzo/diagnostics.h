// qzo/diagnostics.h: numbers a user can act on about the trained scales, measured
// on the scales as they are (any device; they are copied to the host one layer at a
// time, so the cost is one pass over the scales and no extra device memory):
//   - the relative perturbation per layer type, rms(ε·z ⊙ (1 or s)) / rms(s): how far
//     one ± pass moves the scales. QZO's estimate assumes this is small; above a few
//     per cent L+ and L- measure a different model, not a derivative;
//   - the share of scales the projection s ≥ 0 holds at exactly 0 (weights switched
//     off; a rising share means steps too large for the scales);
// The share of clipped steps is counted by the loop from each step's info.
#ifndef SD_QZO_DIAGNOSTICS_H
#define SD_QZO_DIAGNOSTICS_H

#include "qzo/qzo.h"
#include "qzo/trained_scales.h"

typedef struct {
    double rms_scale[SD_QK_COUNT];   // rms of the scales of each layer type (NAN: no such layer)
    double rel_perturb[SD_QK_COUNT]; // rms(perturbation) / rms(s) of each layer type
    double rel_perturb_max;          // the largest of rel_perturb
    double zero_share;               // scales held at 0, over all layers
    int64_t count;                   // scales measured
} sd_qzo_diagnostics;

// Measures the scales of l under the perturbation size and mode of c. The relative
// perturbation uses E[z²] = 1 rather than drawing z: exact in expectation, and it
// costs no RNG pass.
int sd_qzo_diagnose(const sd_scale_list *l, const sq_qzo_config *c, sd_qzo_diagnostics *out);

// Above this relative perturbation sd-qzo warns: the two-point estimate is no
// longer a local derivative.
#define SD_QZO_REL_PERTURB_WARN 0.05

#endif
