// mmdit/quantize_rules.c: the name rules of mmdit/quantize_rules.h.
#include "mmdit/quantize_rules.h"

#include <string.h>

const char *sq_layer_kind_name(sq_layer_kind k) {
    static const char *names[] = {"attention q/k/v", "attention out", "mlp in", "mlp out", "adaLN modulation"};
    return k < SQ_LAYER_KIND_COUNT ? names[k] : "?";
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

bool sq_should_quantize(const char *name, int ndim, const int64_t *shape, int group, sq_layer_kind *kind) {
    if (ndim != 2 || !ends_with(name, ".weight")) return false;
    if (shape[1] % group != 0 || shape[1] % 8 != 0) return false;
    bool in_block = !strncmp(name, "transformer_blocks.", 19) || strstr(name, "joint_blocks.") != NULL;
    if (!in_block) return false;
    // diffusers names first, then the single-file equivalents
    static const struct { const char *pattern; sq_layer_kind kind; } rules[] = {
        {".attn.to_q.", SQ_LAYER_ATTN_QKV}, {".attn.to_k.", SQ_LAYER_ATTN_QKV}, {".attn.to_v.", SQ_LAYER_ATTN_QKV},
        {".attn.add_q_proj.", SQ_LAYER_ATTN_QKV}, {".attn.add_k_proj.", SQ_LAYER_ATTN_QKV},
        {".attn.add_v_proj.", SQ_LAYER_ATTN_QKV}, {".attn2.to_q.", SQ_LAYER_ATTN_QKV},
        {".attn2.to_k.", SQ_LAYER_ATTN_QKV}, {".attn2.to_v.", SQ_LAYER_ATTN_QKV},
        {".attn.to_out.0.", SQ_LAYER_ATTN_OUT}, {".attn.to_add_out.", SQ_LAYER_ATTN_OUT},
        {".attn2.to_out.0.", SQ_LAYER_ATTN_OUT},
        {".ff.net.0.proj.", SQ_LAYER_MLP_IN}, {".ff_context.net.0.proj.", SQ_LAYER_MLP_IN},
        {".ff.net.2.", SQ_LAYER_MLP_OUT}, {".ff_context.net.2.", SQ_LAYER_MLP_OUT},
        {".norm1.linear.", SQ_LAYER_ADALN}, {".norm1_context.linear.", SQ_LAYER_ADALN},
        // single-file layout (fused qkv)
        {".attn.qkv.", SQ_LAYER_ATTN_QKV}, {".attn2.qkv.", SQ_LAYER_ATTN_QKV},
        {".attn.proj.", SQ_LAYER_ATTN_OUT}, {".attn2.proj.", SQ_LAYER_ATTN_OUT},
        {".mlp.fc1.", SQ_LAYER_MLP_IN}, {".mlp.fc2.", SQ_LAYER_MLP_OUT},
        {".adaLN_modulation.1.", SQ_LAYER_ADALN},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if (strstr(name, rules[i].pattern)) {
            *kind = rules[i].kind;
            return true;
        }
    }
    return false;
}
