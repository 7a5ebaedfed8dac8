// qzo/checkpoint.h: the QZO training checkpoint: a small safetensors file holding
// only the trained scales (one F32 tensor per quantised layer, named like the
// quantised file's "<layer>.weight.scales") plus metadata: the base model's source
// hash and group size (so scales are never applied to the wrong model), the step,
// the optimiser's hyper-parameters and state (for an exact resume), and the loss
// history. Loading it onto the quantised base reproduces the fine-tuned model.
// Files are written atomically (core/safetensors.h), so a crash mid-save keeps the
// previous checkpoint intact.
#ifndef SQ_QZO_CHECKPOINT_H
#define SQ_QZO_CHECKPOINT_H

#include "core/safetensors.h"
#include "core/tensor.h"
#include "qzo/qzo.h"

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
} sq_checkpoint_info;

int sq_checkpoint_save(const char *path, const sq_named_scales *layers, int n, const sq_checkpoint_info *info);
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
int sq_checkpoint_load(const char *path, const sq_named_scales *layers, int n, const char *expect_sha256,
                       sq_checkpoint_info *info);

#endif
