// qzo/checkpoint.h: the QZO training checkpoint: a small safetensors file holding
// only the trained scales (one F32 tensor per quantised layer, named like the
// quantised file's "<layer>.weight.scales") plus metadata: the base model's source
// hash and group size (so scales are never applied to the wrong model), the step,
// the optimiser's hyper-parameters and state (for an exact resume), and the loss
// history. Loading it onto the quantised base reproduces the fine-tuned model.
// With --ema the file also holds the EMA of the trained scales as tensors named
// SQ_CHECKPOINT_EMA_PREFIX + the scales' name ("ema.<layer>.weight.scales"), one per
// trained layer (a frozen layer's EMA is its scales), described by the metadata
// "sd_qzo.ema"; which layers trained is in "sd_qzo.train". A checkpoint without
// either loads as before (no EMA; every layer trained).
// Files are written atomically (core/safetensors.h), so a crash mid-save keeps the
// previous checkpoint intact.
#ifndef SQ_QZO_CHECKPOINT_H
#define SQ_QZO_CHECKPOINT_H

#include <stdbool.h>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "qzo/qzo.h"

#define SQ_CHECKPOINT_EMA_PREFIX "ema."

typedef struct {
    const char *name;      // tensor name in the checkpoint
    sq_tensor *scales;     // F32, any device
} sq_named_scales;

typedef struct {
    char base_sha256[65];  // sd_qzo.source_sha256 of the quantised base
    int group_size;
    sq_qzo_config config;
    sq_qzo_state state;
    double *loss_history;  // malloc'ed on load (caller frees), loss per step
    int loss_count;
    // which scales trained: --train-blocks and --train-layers as the run gave them
    // ("" when the checkpoint predates them: all), and how many scales that is (0: not recorded)
    char train_blocks[256], train_layers[128];
    int64_t trained_scales;
    // the EMA of the trained scales (--ema): ema_beta 0 when the checkpoint has none
    float ema_beta;
    int64_t ema_updates;   // accepted steps averaged in since the EMA started
    int ema_tensors;       // its "ema.*" tensors
} sq_checkpoint_info;

int sq_checkpoint_save(const char *path, const sq_named_scales *layers, int n, const sq_checkpoint_info *info);
// The same with the EMA: ema[i].name must start with SQ_CHECKPOINT_EMA_PREFIX and name
// one of layers' tensors after it; info->ema_beta > 0 when n_ema > 0.
int sq_checkpoint_save_with_ema(const char *path, const sq_named_scales *layers, int n, const sq_named_scales *ema,
                                int n_ema, const sq_checkpoint_info *info);
// Reads only the metadata of an open checkpoint (the scale tensors stay in the
// file, for callers that stream them): format, base hash (checked against
// expect_sha256 when non-NULL), group size, optimiser state, loss history.
int sq_checkpoint_read_info(const sq_safetensors *st, const char *path, const char *expect_sha256,
                            sq_checkpoint_info *info);
// The step a run resumed from the checkpoint at `path` starts at (its optimiser
// state's next step), from the metadata alone.
// sq_checkpoint_read_info on a checkpoint file by path, without the loss history
// (info->loss_history is NULL): what a caller checks before it loads anything.
int sq_checkpoint_read_file(const char *path, sq_checkpoint_info *info);
int sq_checkpoint_read_step(const char *path, int64_t *step);
// Loads every layer's scales (shapes must match) and the metadata into info. When
// expect_sha256 is non-NULL it must equal the checkpoint's base hash.
// The EMA tensors do not count as layers.
int sq_checkpoint_load(const char *path, const sq_named_scales *layers, int n, const char *expect_sha256,
                       sq_checkpoint_info *info);
// Loads the EMA of each layer (tensor SQ_CHECKPOINT_EMA_PREFIX + layers[i].name) into
// layers[i].scales where the checkpoint has one; loaded[i] (may be NULL) says where.
// layers[i].name is the scales' own name. SQ_FAIL, naming the file, when the
// checkpoint has no EMA at all (trained without --ema).
int sq_checkpoint_load_ema(const char *path, const sq_named_scales *layers, int n, bool *loaded);

#endif
