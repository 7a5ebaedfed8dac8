// text_encoders/conditioning.c: assembling SD3's context and pooled vectors from the
// three encoders (the layout is in conditioning.h; the facts are from diffusers'
// StableDiffusion3Pipeline._get_clip_prompt_embeds / _get_t5_prompt_embeds /
// encode_prompt). The encoders run one after another, each rewinding its own
// scratch, so the peak is the assembly buffers plus the largest encoder's scratch.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "text_encoders/conditioning.h"

static size_t aligned(size_t n) { return (n + SQ_ARENA_ALIGN - 1) / SQ_ARENA_ALIGN * SQ_ARENA_ALIGN; }

// Elements of each assembly buffer, in the order encode() takes them.
static void buffer_sizes(const sd_text_encoders *te, int B, int64_t n[7]) {
    int64_t CL = te->clip_l.cfg.hidden, CG = te->clip_g.cfg.hidden, D = te->context_dim, T = SD_CLIP_TOKENS;
    n[0] = B * T * CL;                                    // CLIP-L penultimate
    n[1] = B * T * CG;                                    // CLIP-G penultimate
    n[2] = B * te->clip_l.cfg.projection_dim;             // pooled L
    n[3] = B * te->clip_g.cfg.projection_dim;             // pooled G
    n[4] = B * T * (D - CL - CG);                         // the zero padding of the CLIP features
    n[5] = B * T * D;                                     // CLIP part of the context
    n[6] = (int64_t)B * te->opt.t5_max_length * D;        // T5 part (states or zeros)
}

size_t sd_text_scratch_bytes(const sd_text_encoders *te, int B) {
    int64_t n[7];
    buffer_sizes(te, B, n);
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += aligned(sq_dtype_bytes(te->dtype, n[i]));
    size_t enc = sd_clip_scratch_bytes(&te->clip_l, B, SD_CLIP_TOKENS);
    size_t g = sd_clip_scratch_bytes(&te->clip_g, B, SD_CLIP_TOKENS);
    if (g > enc) enc = g;
    if (te->has_t5) {
        size_t t = sd_t5_scratch_bytes(&te->t5.cfg, B, te->opt.t5_max_length);
        if (t > enc) enc = t;
    }
    return total + enc + SQ_ARENA_ALIGN;
}

static int check_out(const sd_text_encoders *te, const sq_tensor *t, const char *what, int ndim, const int64_t *shape) {
    bool ok = t->ndim == ndim && t->device == te->device && t->dtype == te->dtype;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return SQ_OK;
    char buf[96];
    return sq_errorf("encode prompts: %s is %s, expected %s [%lld,%lld%s%lld]", what, sq_tensor_describe(t, buf, sizeof buf),
                     sq_dtype_name(te->dtype), (long long)shape[0], (long long)shape[1], ndim == 3 ? "," : "][",
                     ndim == 3 ? (long long)shape[2] : 0LL);
}

static int tokenize_all(const sd_text_encoders *te, const char *const *prompts, int B, int which, int len, int32_t *ids) {
    for (int b = 0; b < B; b++) {
        const char *p = prompts[b] ? prompts[b] : "";
        int rc = which == 0 ? sd_clip_tokenize(te->tok_l, p, len, ids + (int64_t)b * len, NULL)
               : which == 1 ? sd_clip_tokenize(te->tok_g, p, len, ids + (int64_t)b * len, NULL)
                            : sd_t5_tokenize(te->tok_t5, p, len, ids + (int64_t)b * len, NULL);
        if (rc != SQ_OK) return sq_error_context("encode prompts: prompt %d", b);
    }
    return SQ_OK;
}

int sd_encode_prompts3(const sd_text_encoders *te, sq_arena *a, const char *const *prompts_l,
                       const char *const *prompts_g, const char *const *prompts_t5, int B, sq_tensor *context,
                       sq_tensor *pooled) {
    if (B <= 0 || !prompts_l) return sq_errorf("encode prompts: no prompts");
    if (!prompts_g) prompts_g = prompts_l;
    if (!prompts_t5) prompts_t5 = prompts_l;
    int T = SD_CLIP_TOKENS, T5 = te->opt.t5_max_length;
    int64_t D = te->context_dim;
    if (check_out(te, context, "context", 3, (int64_t[]){B, T + T5, D}) ||
        check_out(te, pooled, "pooled", 2, (int64_t[]){B, sd_text_pooled_dim(te)}))
        return SQ_FAIL;

    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * (size_t)(T > T5 ? T : T5));
    if (!ids) return sq_errorf("out of host memory");
    size_t mark = sq_arena_mark(a);
    int64_t n[7];
    buffer_sizes(te, B, n);
    int64_t CL = te->clip_l.cfg.hidden, CG = te->clip_g.cfg.hidden;
    sq_tensor pen_l, pen_g, pool_l, pool_g, pad, clip_ctx, t5_ctx;
    int rc = SQ_FAIL;
    if (sq_arena_tensor(a, &pen_l, te->dtype, 3, (int64_t[]){B, T, CL}) ||
        sq_arena_tensor(a, &pen_g, te->dtype, 3, (int64_t[]){B, T, CG}) ||
        sq_arena_tensor(a, &pool_l, te->dtype, 2, (int64_t[]){B, te->clip_l.cfg.projection_dim}) ||
        sq_arena_tensor(a, &pool_g, te->dtype, 2, (int64_t[]){B, te->clip_g.cfg.projection_dim}) ||
        (n[4] && sq_arena_tensor(a, &pad, te->dtype, 3, (int64_t[]){B, T, D - CL - CG})) ||
        sq_arena_tensor(a, &clip_ctx, te->dtype, 3, (int64_t[]){B, T, D}) ||
        sq_arena_tensor(a, &t5_ctx, te->dtype, 3, (int64_t[]){B, T5, D})) {
        sq_error_context("encode prompts (scratch for B=%d)", B);
        goto done;
    }

    // CLIP-L and CLIP-G: 77 tokens each, penultimate states and projected pooled
    sd_clip_outputs ol = {.penultimate = &pen_l, .pooled = &pool_l}, og = {.penultimate = &pen_g, .pooled = &pool_g};
    if (tokenize_all(te, prompts_l, B, 0, T, ids) || sd_clip_encode(&te->clip_l, a, ids, B, T, &ol) ||
        tokenize_all(te, prompts_g, B, 1, T, ids) || sd_clip_encode(&te->clip_g, a, ids, B, T, &og))
        goto done;
    // features [L | G | zeros up to D] (torch.cat(dim=-1), then F.pad)
    if (n[4]) {
        sq_fill(&pad, 0.0f);
        sq_concat(&clip_ctx, (const sq_tensor *[]){&pen_l, &pen_g, &pad}, 3, 2);
    } else {
        sq_concat(&clip_ctx, (const sq_tensor *[]){&pen_l, &pen_g}, 2, 2);
    }
    // T5 states, or zeros of the same length when T5 is off (the pipeline's
    // text_encoder_3 = None branch)
    if (te->has_t5) {
        if (tokenize_all(te, prompts_t5, B, 2, T5, ids) || sd_t5_encode(&te->t5, a, ids, B, T5, &t5_ctx)) goto done;
    } else {
        sq_fill(&t5_ctx, 0.0f);
    }
    sq_concat(context, (const sq_tensor *[]){&clip_ctx, &t5_ctx}, 2, 1);
    sq_concat(pooled, (const sq_tensor *[]){&pool_l, &pool_g}, 2, 1);
    rc = SQ_OK;
done:
    sq_arena_reset(a, mark);
    free(ids);
    return rc;
}

int sd_encode_prompts(const sd_text_encoders *te, sq_arena *scratch, const char *const *prompts, int B,
                      sq_tensor *context, sq_tensor *pooled) {
    return sd_encode_prompts3(te, scratch, prompts, NULL, NULL, B, context, pooled);
}
