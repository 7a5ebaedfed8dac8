// mmdit/keymap.h: where a diffusers MMDiT tensor lives in Stability's single-file
// checkpoint. The model is always loaded by diffusers names; for a single file each
// name is mapped here to (key, row slice of a fused qkv, halves swapped); export
// goes the other way (single-file key -> the diffusers tensors it holds). This is
// the one place that knows the single-file layout (facts from diffusers'
// convert_sd3_transformer_checkpoint_to_diffusers).
#ifndef SD_MMDIT_KEYMAP_H
#define SD_MMDIT_KEYMAP_H

#include <stdbool.h>

typedef struct {
    char key[256];   // single-file key without the "model.diffusion_model." prefix
    int part;        // which third of a fused qkv tensor (rows), or -1 for all of it
    bool swap_halves; // (shift, scale) stored where diffusers has (scale, shift)
} sd_single_file_key;

// Maps a diffusers key. num_layers tells which block is the context-pre-only last
// one (its context adaLN is stored swapped). Returns false for an unknown key.
bool sd_mmdit_single_file_key(const char *diffusers_key, int num_layers, sd_single_file_key *out);

// The reverse: the diffusers tensors that the single-file key (without the
// prefix) holds, in row order: three for a fused qkv (q, k, v), one otherwise.
// Returns how many were written to out, 0 for an unknown key. Whether the halves
// are swapped comes from sd_mmdit_single_file_key on each result.
int sd_mmdit_diffusers_keys(const char *single_key, char out[3][256]);

#endif
