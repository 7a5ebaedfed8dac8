// qzo/train_selection.h: which int4 layers QZO trains (--train-blocks, --train-layers).
// The others stay frozen int4: the forward passes evaluate them with their scales
// as they are (no z is drawn for them) and the update never touches them. Global
// scale indices (mmdit/quantize.h) are those of the whole model whatever the
// selection, so a trained layer draws the same z in a run of every block and in a
// run of a subset. Specs:
//   blocks  "all", or a comma list of joint-block numbers and inclusive ranges
//           counted from 0: "0-11,20";
//   layers  "all", or a comma list of layer groups: attn (attention q/k/v and out,
//           both streams and the dual attention), mlp (both MLP linears), adaln
//           (the adaLN modulation linears), or the finer types of the log's
//           columns: attn_qkv, attn_out, mlp_in, mlp_out.
#ifndef SD_QZO_TRAIN_SELECTION_H
#define SD_QZO_TRAIN_SELECTION_H

#include <stdbool.h>
#include <stdint.h>

#include "mmdit/model.h"
#include "mmdit/quantize.h"

#define SD_TRAIN_MAX_BLOCKS 256

typedef struct {
    bool all_blocks;
    bool block[SD_TRAIN_MAX_BLOCKS];   // when !all_blocks
    int max_block;                     // the highest block named (-1 with all_blocks)
    unsigned kinds;                    // bit k: layers of sd_qlayer_kind k train
} sd_train_selection;

// Every block and layer type.
void sd_train_selection_all(sd_train_selection *s);
// Parses both specs (NULL or "" reads as "all"). Errors are one line naming the
// flag, the spec and what is wrong with it.
int sd_train_selection_parse(const char *blocks, const char *layers, sd_train_selection *s);
bool sd_train_selection_is_all(const sd_train_selection *s);
bool sd_train_selection_equal(const sd_train_selection *a, const sd_train_selection *b);
bool sd_train_selection_has(const sd_train_selection *s, int block, sd_qlayer_kind kind);

typedef struct {
    int layers, total_layers;        // int4 layers trained, of all
    int64_t scales, total_scales;    // their scales, of all
} sd_train_selection_count;

// Marks every int4 layer of m outside the selection frozen (and those inside not).
// SQ_FAIL when a named block is not in the model, or nothing is left to train.
int sd_train_selection_apply(const sd_train_selection *s, sd_mmdit *m, sd_train_selection_count *count);

#endif
