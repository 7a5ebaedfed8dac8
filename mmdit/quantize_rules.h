// mmdit/quantize_rules.h: which checkpoint tensors QZO quantises, and how they are
// named in a quantised file.
// docs/DESIGN.md: every linear layer of the MMDiT's joint blocks (attention q/k/v/out for
// both streams, the dual attention, MLPs, adaLN modulation) is int4; embedders, the
// final layer and norms stay in the checkpoint precision. Both key layouts are
// recognised: diffusers ("transformer_blocks.N.") and Stability's single file
// ("model.diffusion_model.joint_blocks.N.").
#ifndef SQ_QUANTIZE_RULES_H
#define SQ_QUANTIZE_RULES_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    SQ_LAYER_ATTN_QKV = 0,
    SQ_LAYER_ATTN_OUT,
    SQ_LAYER_MLP_IN,
    SQ_LAYER_MLP_OUT,
    SQ_LAYER_ADALN,
    SQ_LAYER_KIND_COUNT
} sq_layer_kind;

const char *sq_layer_kind_name(sq_layer_kind k);
// True when the tensor `name` with shape (nout, k) is quantised at group size g;
// sets *kind. K must be a multiple of g.
bool sq_should_quantize(const char *name, int ndim, const int64_t *shape, int group, sq_layer_kind *kind);

// Suffixes of the two tensors that replace "X.weight": "X.weight.q4" (U8, (Nout, K/2))
// and "X.weight.scales" (F32, (Nout, K/G)).
#define SQ_Q4_CODES_SUFFIX ".q4"
#define SQ_Q4_SCALES_SUFFIX ".scales"

#endif
