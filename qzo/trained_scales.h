// qzo/trained_scales.h: what QZO trains, and the model it gives. The trained-scale
// list names every int4 layer's scales the way a checkpoint stores them; loading a
// fine-tuned MMDiT (`sd-qzo sample`, training previews, ...) is the int4 base a QZO
// checkpoint was trained on + its scales, or a base model as it is.
#ifndef SD_QZO_TRAINED_SCALES_H
#define SD_QZO_TRAINED_SCALES_H

#include "mmdit/model.h"
#include "mmdit/quantize.h"
#include "qzo/checkpoint.h"

// The trained parameters of an int4 model as a checkpoint sees them: one entry per
// int4 layer in the canonical order (mmdit/quantize.h), named "<layer>.weight.scales",
// with its scale tensor and the global index of its first scale (the RNG counter).
typedef struct {
    sq_named_scales *named;
    char (*names)[112];
    sq_tensor **scales;
    uint64_t *index_base;
    sd_qlayer_kind *kind;     // the layer's type (attention q/k/v, MLP in, adaLN, ...)
    int count;
} sd_scale_list;

// SQ_FAIL (message names `origin`) when the model has no int4 layer.
int sd_scale_list_make(sd_mmdit *m, const char *origin, sd_scale_list *out);
// The same for the layers that train (not sq_linear.frozen: qzo/train_selection.h),
// in the same order; SQ_FAIL when none does.
int sd_scale_list_make_trained(sd_mmdit *m, const char *origin, sd_scale_list *out);
void sd_scale_list_free(sd_scale_list *l);

// model: a diffusers pipeline or transformer folder, a Stability single file, or
// the int4 file of `sd-qzo quantize`. scales: NULL, or a training checkpoint
// (qzo/checkpoint.h).
// Without scales the model loads as it is. With scales:
//   - an int4 model is used as it is; its group size must be the checkpoint's;
//   - a dense model is first quantised with `sd-qzo quantize`'s quantiser at the
//     checkpoint's group size into a temporary file in tmp_dir (NULL: $TMPDIR or
//     /tmp; removed afterwards), so the codes are exactly the ones training used;
//   - the checkpoint's base hash must equal the model's (source) hash, then every
//     int4 layer's scales are replaced by the checkpoint's.
// ema: then every layer the checkpoint holds an EMA for (the trained ones, --ema)
// takes its EMA instead of its scales; a checkpoint without EMA is refused first.
// On failure *m is freed and the message names the file and the problem.
int sd_load_finetuned_mmdit(sd_mmdit *m, const char *model, const char *scales, bool ema, sq_device device,
                            sq_dtype dtype, const char *tmp_dir);
// SQ_OK when the checkpoint at `scales` holds an EMA of its scales; else one line
// saying it was trained without --ema (for `sample --ema` before any model loads).
int sd_require_ema(const char *scales);

#endif
