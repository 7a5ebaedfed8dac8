// mmdit/quantize.h: the MMDiT's quantised layers, the one table of which tensors
// are int4. DESIGN.md: every linear layer of the joint blocks (attention q/k/v/out
// of both streams, the dual attention, MLPs, adaLN modulation) is int4; embedders,
// the final layer and norms stay in the checkpoint precision. QZO trains the scales
// of those layers; this file lists them in one fixed order (block by block: norm1,
// norm1_context, to_q, to_k, to_v, to_out, add_q, add_k, add_v, to_add_out, attn2
// q/k/v/out, ff1, ff2, ff_context1, ff_context2), which defines each scale's global
// index for the perturbation RNG, tells a checkpoint's tensor names that are int4
// (both key layouts: diffusers, and Stability's single file through mmdit/keymap.h),
// and converts a dense model to int4 in place.
#ifndef SD_MMDIT_QUANTIZE_H
#define SD_MMDIT_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mmdit/model.h"

#define SD_MMDIT_LAYERS_PER_BLOCK 18

typedef enum { SD_QK_ATTN_QKV = 0, SD_QK_ATTN_OUT, SD_QK_MLP_IN, SD_QK_MLP_OUT, SD_QK_ADALN, SD_QK_COUNT } sd_qlayer_kind;

typedef struct {
    char name[96];        // diffusers prefix, e.g. "transformer_blocks.3.attn.to_q"
    sq_linear *linear;
    sd_qlayer_kind kind;
} sd_mmdit_qlayer;

// True when checkpoint tensor `name` (diffusers "transformer_blocks.N.…" or
// single-file "[model.diffusion_model.]joint_blocks.N.…") with shape (Nout, K) is
// one of the layers above's weight and K is a multiple of the group size g (and of
// 8); sets *kind. Such a tensor becomes "X.weight.q4" + "X.weight.scales" in an int4
// file (mmdit/base_model.h).
bool sd_mmdit_should_quantize(const char *name, int ndim, const int64_t *shape, int group, sd_qlayer_kind *kind);

// Fills out[] (up to max) with the joint-block linears that exist in this model, in
// the canonical order; returns the count.
int sd_mmdit_qlayers(sd_mmdit *m, sd_mmdit_qlayer *out, int max);
const char *sd_qlayer_kind_name(sd_qlayer_kind k);
// Gives every quantised layer its index_base (consecutive, canonical order) and
// returns the total number of scales.
int64_t sd_mmdit_assign_scale_indices(sd_mmdit *m);

typedef struct {
    double err[SD_QK_COUNT], ref[SD_QK_COUNT];   // squared error and squared weights per kind
    int layers[SD_QK_COUNT];
    int64_t scales;
} sd_quant_report;

// Quantises every joint-block linear whose input width is a multiple of `group`
// (int4, per-group clipping search; kernels/quant.h), replacing its dense weight
// with codes + scales on the model's device. report may be NULL.
int sd_mmdit_quantize(sd_mmdit *m, int group, sd_quant_report *report);
void sd_quant_report_print(const sd_quant_report *r, FILE *f);

#endif
