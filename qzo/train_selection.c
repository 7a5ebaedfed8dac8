// qzo/train_selection.c: --train-blocks / --train-layers (see qzo/train_selection.h).
#include "qzo/train_selection.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define ALL_KINDS ((1u << SD_QK_COUNT) - 1u)

void sd_train_selection_all(sd_train_selection *s) {
    memset(s, 0, sizeof *s);
    s->all_blocks = true;
    s->max_block = -1;
    s->kinds = ALL_KINDS;
}

static bool is_all(const char *spec) { return !spec || !spec[0] || !strcmp(spec, "all"); }

// A block number: digits only, below SD_TRAIN_MAX_BLOCKS. *end is set past it.
static bool block_number(const char *p, const char **end, int *out) {
    if (!isdigit((unsigned char)*p)) return false;
    errno = 0;
    char *e;
    long v = strtol(p, &e, 10);
    if (errno || v >= SD_TRAIN_MAX_BLOCKS) return false;
    *out = (int)v;
    *end = e;
    return true;
}

static int parse_blocks(const char *spec, sd_train_selection *s) {
    if (is_all(spec)) return SQ_OK;
    s->all_blocks = false;
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q;
        int a, b;
        if (!block_number(p, &q, &a))
            return sq_errorf("--train-blocks '%s': '%.*s' is not a block number or range (e.g. 0-11,20; blocks count "
                             "from 0, below %d)", spec, (int)len, p, SD_TRAIN_MAX_BLOCKS);
        b = a;
        if (*q == '-' && !block_number(q + 1, &q, &b))
            return sq_errorf("--train-blocks '%s': '%.*s' is not a range FIRST-LAST of block numbers", spec, (int)len, p);
        if (q != p + len)
            return sq_errorf("--train-blocks '%s': '%.*s' is not a block number or range (e.g. 0-11,20)", spec, (int)len, p);
        if (b < a) return sq_errorf("--train-blocks '%s': the range '%.*s' runs backwards", spec, (int)len, p);
        for (int i = a; i <= b; i++) s->block[i] = true;
        if (b > s->max_block) s->max_block = b;
        if (!end) return SQ_OK;
        p = end + 1;
    }
}

static const struct {
    const char *name;
    unsigned kinds;
} layer_names[] = {
    {"attn", (1u << SD_QK_ATTN_QKV) | (1u << SD_QK_ATTN_OUT)},
    {"mlp", (1u << SD_QK_MLP_IN) | (1u << SD_QK_MLP_OUT)},
    {"adaln", 1u << SD_QK_ADALN},
    {"attn_qkv", 1u << SD_QK_ATTN_QKV},
    {"attn_out", 1u << SD_QK_ATTN_OUT},
    {"mlp_in", 1u << SD_QK_MLP_IN},
    {"mlp_out", 1u << SD_QK_MLP_OUT},
};

static int parse_layers(const char *spec, sd_train_selection *s) {
    if (is_all(spec)) return SQ_OK;
    s->kinds = 0;
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        unsigned k = 0;
        for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0] && !k; i++)
            if (strlen(layer_names[i].name) == len && !strncmp(p, layer_names[i].name, len)) k = layer_names[i].kinds;
        if (!k)
            return sq_errorf("--train-layers '%s': '%.*s' is not a layer type (attn, mlp, adaln, or attn_qkv, attn_out, "
                             "mlp_in, mlp_out; or all)", spec, (int)len, p);
        s->kinds |= k;
        if (!end) return SQ_OK;
        p = end + 1;
    }
}

int sd_train_selection_parse(const char *blocks, const char *layers, sd_train_selection *s) {
    sd_train_selection_all(s);
    if (parse_blocks(blocks, s) != SQ_OK || parse_layers(layers, s) != SQ_OK) return SQ_FAIL;
    return SQ_OK;
}

bool sd_train_selection_is_all(const sd_train_selection *s) { return s->all_blocks && s->kinds == ALL_KINDS; }

bool sd_train_selection_equal(const sd_train_selection *a, const sd_train_selection *b) {
    if (a->all_blocks != b->all_blocks || a->kinds != b->kinds) return false;
    return a->all_blocks || !memcmp(a->block, b->block, sizeof a->block);
}

bool sd_train_selection_has(const sd_train_selection *s, int block, sd_qlayer_kind kind) {
    if (!(s->kinds & (1u << kind))) return false;
    return s->all_blocks || (block >= 0 && block < SD_TRAIN_MAX_BLOCKS && s->block[block]);
}

int sd_train_selection_apply(const sd_train_selection *s, sd_mmdit *m, sd_train_selection_count *count) {
    memset(count, 0, sizeof *count);
    if (!s->all_blocks && s->max_block >= m->cfg.num_layers)
        return sq_errorf("--train-blocks: block %d is not in the model, which has %d joint blocks (0-%d)", s->max_block,
                         m->cfg.num_layers, m->cfg.num_layers - 1);
    int n = sd_mmdit_qlayers(m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)n + 1, sizeof *ls);
    if (!ls) return sq_errorf("out of host memory");
    sd_mmdit_qlayers(m, ls, n);
    for (int i = 0; i < n; i++) {
        sq_linear *l = ls[i].linear;
        if (!sq_linear_quantized(l)) continue;
        // the block number of "transformer_blocks.N.…"
        int block = atoi(ls[i].name + strlen("transformer_blocks."));
        l->frozen = !sd_train_selection_has(s, block, ls[i].kind);
        int64_t k = sq_tensor_numel(&l->scales);
        count->total_layers++;
        count->total_scales += k;
        if (!l->frozen) {
            count->layers++;
            count->scales += k;
        }
    }
    free(ls);
    if (count->layers == 0)
        return sq_errorf("--train-blocks / --train-layers select none of the model's %d int4 layers: nothing to train",
                         count->total_layers);
    return SQ_OK;
}
