// mmdit/keymap.c: diffusers <-> single-file key table (see mmdit/keymap.h).
#include "mmdit/keymap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *diffusers;   // suffix after "transformer_blocks.N." (or a whole top-level key prefix)
    const char *single;      // replacement after "joint_blocks.N."
    int part;
} rule;

static const rule block_rules[] = {
    {"attn.to_q.", "x_block.attn.qkv.", 0},
    {"attn.to_k.", "x_block.attn.qkv.", 1},
    {"attn.to_v.", "x_block.attn.qkv.", 2},
    {"attn.add_q_proj.", "context_block.attn.qkv.", 0},
    {"attn.add_k_proj.", "context_block.attn.qkv.", 1},
    {"attn.add_v_proj.", "context_block.attn.qkv.", 2},
    {"attn.norm_q.", "x_block.attn.ln_q.", -1},
    {"attn.norm_k.", "x_block.attn.ln_k.", -1},
    {"attn.norm_added_q.", "context_block.attn.ln_q.", -1},
    {"attn.norm_added_k.", "context_block.attn.ln_k.", -1},
    {"attn.to_out.0.", "x_block.attn.proj.", -1},
    {"attn.to_add_out.", "context_block.attn.proj.", -1},
    {"attn2.to_q.", "x_block.attn2.qkv.", 0},
    {"attn2.to_k.", "x_block.attn2.qkv.", 1},
    {"attn2.to_v.", "x_block.attn2.qkv.", 2},
    {"attn2.norm_q.", "x_block.attn2.ln_q.", -1},
    {"attn2.norm_k.", "x_block.attn2.ln_k.", -1},
    {"attn2.to_out.0.", "x_block.attn2.proj.", -1},
    {"norm1.linear.", "x_block.adaLN_modulation.1.", -1},
    {"norm1_context.linear.", "context_block.adaLN_modulation.1.", -1},
    {"ff.net.0.proj.", "x_block.mlp.fc1.", -1},
    {"ff.net.2.", "x_block.mlp.fc2.", -1},
    {"ff_context.net.0.proj.", "context_block.mlp.fc1.", -1},
    {"ff_context.net.2.", "context_block.mlp.fc2.", -1},
};

static const rule top_rules[] = {
    {"pos_embed.pos_embed", "pos_embed", -1},
    {"pos_embed.proj.", "x_embedder.proj.", -1},
    {"time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0.", -1},
    {"time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2.", -1},
    {"time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0.", -1},
    {"time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2.", -1},
    {"context_embedder.", "context_embedder.", -1},
    {"proj_out.", "final_layer.linear.", -1},
    {"norm_out.linear.", "final_layer.adaLN_modulation.1.", -1},
};

bool sd_mmdit_single_file_key(const char *d, int num_layers, sd_single_file_key *out) {
    out->part = -1;
    out->swap_halves = false;
    if (!strncmp(d, "transformer_blocks.", 19)) {
        char *end;
        long i = strtol(d + 19, &end, 10);
        if (end == d + 19 || *end != '.') return false;
        const char *rest = end + 1;
        for (size_t r = 0; r < sizeof block_rules / sizeof block_rules[0]; r++) {
            size_t n = strlen(block_rules[r].diffusers);
            if (strncmp(rest, block_rules[r].diffusers, n)) continue;
            snprintf(out->key, sizeof out->key, "joint_blocks.%ld.%s%s", i, block_rules[r].single, rest + n);
            out->part = block_rules[r].part;
            // the last block's context modulation is an AdaLayerNormContinuous in diffusers
            out->swap_halves = i == num_layers - 1 && !strncmp(rest, "norm1_context.linear.", 21);
            return true;
        }
        return false;
    }
    for (size_t r = 0; r < sizeof top_rules / sizeof top_rules[0]; r++) {
        size_t n = strlen(top_rules[r].diffusers);
        if (strncmp(d, top_rules[r].diffusers, n)) continue;
        snprintf(out->key, sizeof out->key, "%s%s", top_rules[r].single, d + n);
        out->swap_halves = !strncmp(d, "norm_out.linear.", 16);
        return true;
    }
    return false;
}

int sd_mmdit_diffusers_keys(const char *s, char out[3][256]) {
    int n = 0;
    if (!strncmp(s, "joint_blocks.", 13)) {
        char *end;
        long i = strtol(s + 13, &end, 10);
        if (end == s + 13 || *end != '.') return 0;
        const char *rest = end + 1;
        // the q, k, v rules of a fused tensor follow each other in the table
        for (size_t r = 0; r < sizeof block_rules / sizeof block_rules[0] && n < 3; r++) {
            size_t len = strlen(block_rules[r].single);
            if (strncmp(rest, block_rules[r].single, len)) continue;
            snprintf(out[n++], 256, "transformer_blocks.%ld.%s%s", i, block_rules[r].diffusers, rest + len);
        }
        return n;
    }
    for (size_t r = 0; r < sizeof top_rules / sizeof top_rules[0]; r++) {
        size_t len = strlen(top_rules[r].single);
        bool whole = top_rules[r].single[len - 1] != '.';   // "pos_embed" names one tensor, not a prefix
        if (whole ? strcmp(s, top_rules[r].single) : strncmp(s, top_rules[r].single, len)) continue;
        snprintf(out[0], 256, "%s%s", top_rules[r].diffusers, s + len);
        return 1;
    }
    return 0;
}
