// mmdit/quantize.c: the int4 layer table (canonical order, checkpoint names), scale
// indices and in-place int4 quantisation of a loaded MMDiT.
#include "mmdit/quantize.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "mmdit/keymap.h"

const char *sd_qlayer_kind_name(sd_qlayer_kind k) {
    static const char *n[] = {"attention q/k/v", "attention out", "mlp in", "mlp out", "adaLN modulation"};
    return k < SD_QK_COUNT ? n[k] : "?";
}

// The int4 layers of one joint block, in the canonical order: the block member,
// its diffusers name after "transformer_blocks.N." and its kind.
static const struct {
    size_t offset;
    const char *name;
    sd_qlayer_kind kind;
} block_qlayers[SD_MMDIT_LAYERS_PER_BLOCK] = {
    {offsetof(sd_mmdit_block, norm1), "norm1.linear", SD_QK_ADALN},
    {offsetof(sd_mmdit_block, norm1_context), "norm1_context.linear", SD_QK_ADALN},
    {offsetof(sd_mmdit_block, to_q), "attn.to_q", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, to_k), "attn.to_k", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, to_v), "attn.to_v", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, to_out), "attn.to_out.0", SD_QK_ATTN_OUT},
    {offsetof(sd_mmdit_block, add_q), "attn.add_q_proj", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, add_k), "attn.add_k_proj", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, add_v), "attn.add_v_proj", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, to_add_out), "attn.to_add_out", SD_QK_ATTN_OUT},
    {offsetof(sd_mmdit_block, attn2_q), "attn2.to_q", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, attn2_k), "attn2.to_k", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, attn2_v), "attn2.to_v", SD_QK_ATTN_QKV},
    {offsetof(sd_mmdit_block, attn2_out), "attn2.to_out.0", SD_QK_ATTN_OUT},
    {offsetof(sd_mmdit_block, ff1), "ff.net.0.proj", SD_QK_MLP_IN},
    {offsetof(sd_mmdit_block, ff2), "ff.net.2", SD_QK_MLP_OUT},
    {offsetof(sd_mmdit_block, ff_context1), "ff_context.net.0.proj", SD_QK_MLP_IN},
    {offsetof(sd_mmdit_block, ff_context2), "ff_context.net.2", SD_QK_MLP_OUT},
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

bool sd_mmdit_should_quantize(const char *name, int ndim, const int64_t *shape, int group, sd_qlayer_kind *kind) {
    if (ndim != 2 || !ends_with(name, ".weight")) return false;
    if (shape[1] % group != 0 || shape[1] % 8 != 0) return false;
    // a single-file key is asked for by the diffusers name of what it holds (the first
    // third of a fused qkv names its kind as well as the other two)
    char dkeys[3][256];
    const char *single = strstr(name, "joint_blocks.");
    if (single) {
        if (sd_mmdit_diffusers_keys(single, dkeys) == 0) return false;
        name = dkeys[0];
    }
    if (strncmp(name, "transformer_blocks.", 19)) return false;
    char *end;
    strtol(name + 19, &end, 10);
    if (end == name + 19 || *end != '.') return false;
    const char *rest = end + 1;
    size_t len = strlen(rest) - strlen(".weight");
    for (int j = 0; j < SD_MMDIT_LAYERS_PER_BLOCK; j++)
        if (strlen(block_qlayers[j].name) == len && !strncmp(rest, block_qlayers[j].name, len)) {
            *kind = block_qlayers[j].kind;
            return true;
        }
    return false;
}

int sd_mmdit_qlayers(sd_mmdit *m, sd_mmdit_qlayer *out, int max) {
    int n = 0;
    for (int i = 0; i < m->cfg.num_layers; i++) {
        for (int j = 0; j < SD_MMDIT_LAYERS_PER_BLOCK; j++) {
            sq_linear *l = (sq_linear *)((char *)&m->blocks[i] + block_qlayers[j].offset);
            if (!l->w.data && !l->codes.data) continue;   // absent in this block (pre-only, no dual)
            if (n < max) {
                snprintf(out[n].name, sizeof out[n].name, "transformer_blocks.%d.%s", i, block_qlayers[j].name);
                out[n].linear = l;
                out[n].kind = block_qlayers[j].kind;
            }
            n++;
        }
    }
    return n;
}

static sd_mmdit_qlayer *all_layers(sd_mmdit *m, int *count) {
    int n = sd_mmdit_qlayers(m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)n + 1, sizeof *ls);
    if (ls) sd_mmdit_qlayers(m, ls, n);
    *count = n;
    return ls;
}

int64_t sd_mmdit_assign_scale_indices(sd_mmdit *m) {
    int n;
    sd_mmdit_qlayer *ls = all_layers(m, &n);
    if (!ls) return -1;
    int64_t next = 0;
    for (int i = 0; i < n; i++) {
        sq_linear *l = ls[i].linear;
        if (!sq_linear_quantized(l)) continue;
        l->index_base = (uint64_t)next;
        next += sq_tensor_numel(&l->scales);
    }
    free(ls);
    return next;
}

int sd_mmdit_quantize(sd_mmdit *m, int group, sd_quant_report *rep) {
    int n;
    sd_mmdit_qlayer *ls = all_layers(m, &n);
    if (!ls) return sq_errorf("out of host memory");
    if (rep) memset(rep, 0, sizeof *rep);
    int rc = SQ_OK;
    for (int i = 0; i < n && rc == SQ_OK; i++) {
        sq_linear *l = ls[i].linear;
        if (sq_linear_quantized(l)) continue;
        int64_t nout = l->w.shape[0], k = l->w.shape[1];
        if (k % group || k % 8) continue;   // stays dense
        float *w = malloc((size_t)(nout * k) * sizeof(float));
        uint8_t *codes = malloc((size_t)(nout * k) / 2);
        float *scales = malloc((size_t)(nout * k / group) * sizeof(float));
        if (!w || !codes || !scales) rc = sq_errorf("out of host memory quantising %s", ls[i].name);
        if (rc == SQ_OK) rc = sq_tensor_to_host_f32(w, &l->w);
        if (rc == SQ_OK) {
            double ref = 0, err = sq_quantize_q4_src(w, SQ_F32, nout, k, group, codes, scales, &ref);
            if (rep) {
                rep->err[ls[i].kind] += err;
                rep->ref[ls[i].kind] += ref;
                rep->layers[ls[i].kind]++;
            }
            sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, (int64_t[]){nout, k});
            sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 2, (int64_t[]){nout, k / group});
            sq_device dev = l->w.device;
            rc = sq_tensor_alloc(&l->codes, SQ_Q4, dev, 2, hc.shape);
            if (rc == SQ_OK) rc = sq_tensor_alloc(&l->scales, SQ_F32, dev, 2, hs.shape);
            if (rc == SQ_OK) rc = sq_tensor_copy(&l->codes, &hc);
            if (rc == SQ_OK) rc = sq_tensor_copy(&l->scales, &hs);
            if (rc == SQ_OK) {
                l->group = group;
                sq_tensor_free(&l->w);
            }
        }
        free(w);
        free(codes);
        free(scales);
    }
    free(ls);
    if (rc != SQ_OK) return rc;
    int64_t total = sd_mmdit_assign_scale_indices(m);
    if (rep) rep->scales = total;
    return SQ_OK;
}

void sd_quant_report_print(const sd_quant_report *r, FILE *f) {
    fprintf(f, "%-18s %7s %14s\n", "layer type", "layers", "rel RMS error");
    for (int k = 0; k < SD_QK_COUNT; k++)
        if (r->layers[k])
            fprintf(f, "%-18s %7d %14.4f\n", sd_qlayer_kind_name((sd_qlayer_kind)k), r->layers[k],
                    sqrt(r->err[k] / (r->ref[k] > 0 ? r->ref[k] : 1)));
    fprintf(f, "trainable scales: %lld\n", (long long)r->scales);
}
