// tests/golden/test_clip_encoder.c: the CLIP text encoders against transformers'
// CLIPTextModelWithProjection on the fixtures of tools/make_clip_fixtures.py (fp32
// CPU, <= 1e-4 relative): hidden_states[-2], last_hidden_state and the projected
// pooled output of the tiny pipeline's CLIP-L-like (quick_gelu) and CLIP-G-like
// (gelu, pad "!") encoders, loaded from the pipeline folder and from fp16 single
// files with the config inferred from shapes. The token ids come from the C
// tokenizer and must equal transformers'. Also: scratch sized by
// sd_clip_scratch_bytes is enough, one prompt alone equals its row of a batch, the
// two EOS rules, and a bad token id is an error.
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "tests/test_util.h"
#include "text_encoders/clip_encoder.h"
#include "text_encoders/clip_tokenizer.h"

static sq_safetensors *g_io;

static sq_tensor fixture(const char *name) {
    const sq_st_entry *e = sq_st_find(g_io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, e->dtype == SQ_I32 ? SQ_I32 : SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK,
             "fixture %s", name);
    if (e->dtype == SQ_I32) memcpy(t.data, e->data, e->nbytes);
    else SQ_CHECK(sq_st_load(g_io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

static sq_tensor poisoned(int ndim, const int64_t *shape) {
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, ndim, shape) == SQ_OK, "alloc");
    tu_poison(t.data, sq_tensor_numel(&t));
    return t;
}

static void compare(const char *label, const char *what, const float *got, const char *key, int64_t offset) {
    sq_tensor ref = fixture(key);
    int64_t n = sq_tensor_numel(&ref) / ref.shape[0];
    // offset: which row of the reference batch `got` holds (-1: the whole batch)
    double e = offset < 0 ? tu_rel_err(got, ref.data, sq_tensor_numel(&ref))
                          : tu_rel_err(got, (const float *)ref.data + offset * n, n);
    printf("  %-22s %-26s rel err %.2e\n", label, what, e);
    TU_CHECK(e <= 1e-4, "%s %s: relative error %.3g", label, what, e);
    sq_tensor_free(&ref);
}

// tag "l"/"g", prefix "" (folder) or "single_" (single file)
static void run(const char *label, const char *path, sd_clip_kind kind, const char *tag, const char *prefix,
                const char *tok_dir) {
    sd_clip m;
    if (sd_clip_load(&m, path, kind, SQ_CPU, SQ_F32) != SQ_OK) { TU_CHECK(0, "load %s: %s", path, sq_error_message()); return; }
    printf("%s: %d layers x %d, %d heads, MLP %d, proj %d, %s, eos rule %d\n", label, m.cfg.layers, m.cfg.hidden,
           m.cfg.heads, m.cfg.intermediate, m.cfg.projection_dim, m.cfg.quick_gelu ? "quick_gelu" : "gelu",
           m.cfg.eos_token_id);
    char key[64];
    snprintf(key, sizeof key, "%s%s.ids", prefix, tag);
    sq_tensor ids = fixture(key);
    int B = (int)ids.shape[0], T = (int)ids.shape[1];
    int64_t C = m.cfg.hidden;

    // the C tokenizer gives the ids transformers gave
    sd_clip_tokenizer *tok;
    SQ_CHECK(sd_clip_tokenizer_load(&tok, tok_dir) == SQ_OK, "%s", sq_error_message());
    for (int b = 0; b < B; b++) {
        char pk[16];
        snprintf(pk, sizeof pk, "prompt%d", b);
        const char *prompt = sq_st_metadata(g_io, pk);
        int32_t mine[77];
        SQ_CHECK(prompt && T == 77, "fixture prompt %d", b);
        TU_CHECK(sd_clip_tokenize(tok, prompt, T, mine, NULL) == SQ_OK, "tokenize: %s", sq_error_message());
        TU_CHECK(!memcmp(mine, (const int32_t *)ids.data + b * T, sizeof mine), "%s: ids of prompt %d differ", label, b);
    }
    sd_clip_tokenizer_free(tok);

    sq_arena a;
    size_t need = sd_clip_scratch_bytes(&m, B, T);
    SQ_CHECK(sq_arena_init(&a, SQ_CPU, need) == SQ_OK, "%s", sq_error_message());
    sq_tensor pen = poisoned(3, (int64_t[]){B, T, C}), last = poisoned(3, (int64_t[]){B, T, C});
    sq_tensor pooled = poisoned(2, (int64_t[]){B, m.cfg.projection_dim});
    sd_clip_outputs o = {&pen, &last, &pooled};
    TU_CHECK(sd_clip_encode(&m, &a, ids.data, B, T, &o) == SQ_OK, "encode: %s", sq_error_message());
    snprintf(key, sizeof key, "%s%s.penultimate", prefix, tag);
    compare(label, "hidden_states[-2]", pen.data, key, -1);
    snprintf(key, sizeof key, "%s%s.last", prefix, tag);
    compare(label, "last_hidden_state", last.data, key, -1);
    snprintf(key, sizeof key, "%s%s.pooled", prefix, tag);
    compare(label, "pooled (text_embeds)", pooled.data, key, -1);
    printf("  scratch %.1f KiB (bound %.1f KiB)\n", a.high_water / 1024.0, need / 1024.0);

    // pooled alone (final norm into scratch), for the last prompt of the batch on its own
    sq_tensor p1 = poisoned(2, (int64_t[]){1, m.cfg.projection_dim});
    sd_clip_outputs o1 = {NULL, NULL, &p1};
    TU_CHECK(sd_clip_encode(&m, &a, (const int32_t *)ids.data + (int64_t)(B - 1) * T, 1, T, &o1) == SQ_OK, "encode: %s",
             sq_error_message());
    compare(label, "pooled, B=1, alone", p1.data, key, B - 1);

    // a token id outside the vocabulary is an error naming it, not an abort
    int32_t bad[77];
    memcpy(bad, ids.data, sizeof bad);
    bad[5] = m.cfg.vocab_size;
    TU_CHECK(sd_clip_encode(&m, &a, bad, 1, T, &o1) == SQ_FAIL && strstr(sq_error_message(), "vocabulary"),
             "bad id refused: %s", sq_error_message());

    sq_tensor_free(&ids); sq_tensor_free(&pen); sq_tensor_free(&last); sq_tensor_free(&pooled); sq_tensor_free(&p1);
    sq_arena_free(&a);
    sd_clip_free(&m);
}

// transformers' two pooling rules: eos_token_id 2 takes argmax(ids), any other
// eos_token_id its first occurrence (0 when absent).
static void test_eos_rules(void) {
    const int32_t ids[6] = {49406, 320, 49407, 0, 49408, 0};
    sd_clip_config legacy = {.eos_token_id = 2}, fixed = {.eos_token_id = 49407}, none = {.eos_token_id = 7};
    TU_CHECK(sd_clip_eos_position(&legacy, ids, 6) == 4, "legacy rule: %d", sd_clip_eos_position(&legacy, ids, 6));
    TU_CHECK(sd_clip_eos_position(&fixed, ids, 6) == 2, "eos rule: %d", sd_clip_eos_position(&fixed, ids, 6));
    TU_CHECK(sd_clip_eos_position(&none, ids, 6) == 0, "no eos: %d", sd_clip_eos_position(&none, ids, 6));
}

int main(void) {
    const char *fx = tu_fixtures_dir();
    char io_path[1024], p[1024], tl[1024], tg[1024];
    snprintf(io_path, sizeof io_path, "%s/clip/io.safetensors", fx);
    if (sq_st_open(&g_io, io_path) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    snprintf(tl, sizeof tl, "%s/pipeline/tiny/tokenizer", fx);
    snprintf(tg, sizeof tg, "%s/pipeline/tiny/tokenizer_2", fx);
    snprintf(p, sizeof p, "%s/pipeline/tiny", fx);   // the pipeline folder, kind picks text_encoder/
    run("CLIP-L folder", p, SD_CLIP_L, "l", "", tl);
    snprintf(p, sizeof p, "%s/pipeline/tiny/text_encoder_2", fx);   // the component folder itself
    run("CLIP-G folder", p, SD_CLIP_AUTO, "g", "", tg);
    snprintf(p, sizeof p, "%s/clip/clip_l.safetensors", fx);
    run("CLIP-L single file", p, SD_CLIP_L, "l", "single_", tl);
    snprintf(p, sizeof p, "%s/clip/clip_g.safetensors", fx);
    run("CLIP-G single file", p, SD_CLIP_G, "g", "single_", tg);
    test_eos_rules();
    sq_st_close(g_io);
    return tu_finish("test_clip_encoder");
}
