// mmdit/forward.c: the MMDiT forward pass: embeddings, the joint blocks, the final
// AdaLayerNormContinuous + projection, and unpatchify back to a latent image.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/weight_prefetch.h"
#include "mmdit/blocks.h"
#include "mmdit/forward_graph.h"

// The forward's arena high-water mark, estimated (mmdit/model.h explains the terms):
// keep it in step with what sd_mmdit_forward and the joint block allocate.
size_t sd_mmdit_scratch_estimate(const sd_mmdit_config *c, int B, int N, int T, int elem_bytes) {
    size_t D = (size_t)c->hidden, es = (size_t)elem_bytes;
    size_t act = (size_t)B * (size_t)(N + T) * D * es;
    size_t weight = (B > SQ_QGEMV_MAX_ROWS ? 9 : 4) * D * D * es;
    // B > 1: measured above 12 (Large 1024², batch 4: 1.25 GiB live at the peak, 14.5
    // activations' worth): the per-sample layout copies of the joint attention.
    // Plus the context half's own arena (mmdit/joint_block.c, kernels/streams.h).
    return (B > 1 ? 16 : 12) * act + weight + sd_joint_block_side_bytes(c, B, T, elem_bytes) + ((size_t)64 << 20);
}

static float *trace_copy(const sq_tensor *t) {
    float *h = malloc((size_t)sq_tensor_numel(t) * sizeof(float));
    if (h && sq_tensor_to_host_f32(h, t) != SQ_OK) { free(h); h = NULL; }
    return h;
}

void sd_mmdit_trace_free(sd_mmdit_trace *t) {
    free(t->x_embedded);
    free(t->temb);
    free(t->context_embedded);
    free(t->block0_hidden);
    free(t->block0_context);
    free(t->final_hidden);
    memset(t, 0, sizeof *t);
}

// (B,N,p*p*C) tokens -> (B,C,H,W) image, as diffusers' unpatchify
// reshape(B,h,w,p,p,C) + einsum("nhwpqc->nchpwq"), done per sample as two permutes.
static int unpatchify(const sd_mmdit *m, sq_arena *a, const sq_tensor *tok, int64_t h, int64_t w, sq_tensor *out) {
    int64_t B = tok->shape[0], p = m->cfg.patch_size, C = m->cfg.out_channels;
    size_t mark = sq_arena_mark(a), es = sq_dtype_bytes(tok->dtype, 1);
    int64_t per = h * w * p * p * C;
    sq_tensor tmp;
    if (sd_tmp(a, m, &tmp, 4, (int64_t[]){h, p, w, p * C})) return SQ_FAIL;
    for (int64_t b = 0; b < B; b++) {
        // (h, w, p, q*C) -> (h, p, w, q*C)
        sq_tensor src = sq_tensor_view((char *)tok->data + b * per * (int64_t)es, tok->dtype, tok->device, 4,
                                       (int64_t[]){h, w, p, p * C});
        sq_permute(&tmp, &src, (const int[]){0, 2, 1, 3});
        // (h*p*w, q, C) -> (C, h*p*w, q): channel-major, rows h*p, columns w*q
        sq_tensor t3 = sq_tensor_reshape(&tmp, 3, (int64_t[]){h * p * w, p, C});
        sq_tensor dst = sq_tensor_view((char *)out->data + b * per * (int64_t)es, out->dtype, out->device, 3,
                                       (int64_t[]){C, h * p * w, p});
        sq_permute(&dst, &t3, (const int[]){2, 0, 1});
    }
    sq_arena_reset(a, mark);
    return SQ_OK;
}

static int check_inputs(const sd_mmdit *m, const sq_tensor *latent, const sq_tensor *context, const sq_tensor *pooled,
                        const sq_tensor *out) {
    const sd_mmdit_config *c = &m->cfg;
    if (latent->ndim != 4 || latent->shape[1] != c->in_channels)
        return sq_errorf("mmdit: latent must be (B,%d,H,W)", c->in_channels);
    int64_t B = latent->shape[0], H = latent->shape[2], W = latent->shape[3];
    if (H % c->patch_size || W % c->patch_size)
        return sq_errorf("mmdit: latent %lldx%lld is not a multiple of the patch size %d", (long long)H, (long long)W, c->patch_size);
    if (H / c->patch_size > c->pos_embed_max_size || W / c->patch_size > c->pos_embed_max_size)
        return sq_errorf("mmdit: latent %lldx%lld exceeds this model's %dx%d position table (images up to %dx%d pixels)",
                         (long long)H, (long long)W, c->pos_embed_max_size * c->patch_size,
                         c->pos_embed_max_size * c->patch_size, c->pos_embed_max_size * c->patch_size * 8,
                         c->pos_embed_max_size * c->patch_size * 8);
    if (context->ndim != 3 || context->shape[0] != B || context->shape[2] != c->joint_attention_dim)
        return sq_errorf("mmdit: context must be (%lld,T,%d)", (long long)B, c->joint_attention_dim);
    if (pooled->ndim != 2 || pooled->shape[0] != B || pooled->shape[1] != c->pooled_projection_dim)
        return sq_errorf("mmdit: pooled must be (%lld,%d)", (long long)B, c->pooled_projection_dim);
    if (out->ndim != 4 || out->shape[0] != B || out->shape[1] != c->out_channels || out->shape[2] != H || out->shape[3] != W)
        return sq_errorf("mmdit: output must be (%lld,%d,%lld,%lld)", (long long)B, c->out_channels, (long long)H, (long long)W);
    const sq_tensor *ts[4] = {latent, context, pooled, out};
    for (int i = 0; i < 4; i++)
        if (ts[i]->device != m->device || ts[i]->dtype != m->dtype)
            return sq_errorf("mmdit: inputs must be %s on the model's device", sq_dtype_name(m->dtype));
    return SQ_OK;
}

// The pass, its timestep features already on the device.
static int forward_core(const sd_forward_pass *f, const sq_tensor *time_features, sd_mmdit_trace *trace) {
    const sd_mmdit *m = f->m;
    sq_arena *a = f->a;
    const sq_tensor *latent = f->latent, *context = f->context, *pooled = f->pooled;
    const sq_perturb *p = f->p;
    sq_tensor *out = f->out;
    const sd_mmdit_config *c = &m->cfg;
    int64_t B = latent->shape[0], T = context->shape[1], D = c->hidden, P = c->patch_size;
    int64_t h = latent->shape[2] / P, w = latent->shape[3] / P, N = h * w;
    size_t mark = sq_arena_mark(a);
    int rc = SQ_FAIL;
    sq_tensor x, ctx, temb, st, mod, scale, shift, tok;
    sq_prefetch_pass_begin(m->linear_order, m->device);
    if (sd_tmp(a, m, &x, 3, (int64_t[]){B, N, D}) || sd_tmp(a, m, &ctx, 3, (int64_t[]){B, T, D}) ||
        sd_tmp(a, m, &temb, 2, (int64_t[]){B, D}) || sd_tmp(a, m, &st, 2, (int64_t[]){B, D}))
        goto done;
    if (sd_embed_patches(m, a, latent, &x) || sd_embed_time_text(m, a, time_features, pooled, p, &temb) ||
        sq_linear_forward(&ctx, context, &m->context_embedder, p, a))
        goto done;
    if (trace) {
        trace->x_embedded = trace_copy(&x);
        trace->temb = trace_copy(&temb);
        trace->context_embedded = trace_copy(&ctx);
    }
    sq_silu(&st, &temb);   // every adaLN linear reads silu(temb)
    // the context half of every block works in this arena of its own (kernels/streams.h)
    size_t side_bytes = sd_joint_block_side_bytes(c, (int)B, (int)T, (int)sq_dtype_bytes(m->dtype, 1));
    void *side_base = sq_arena_alloc(a, side_bytes);
    if (!side_base) goto done;
    sq_arena side = {.base = side_base, .size = side_bytes, .device = m->device};
    for (int i = 0; i < c->num_layers; i++) {
        if (sd_joint_block(m, &m->blocks[i], a, &side, &x, &ctx, &st, p) != SQ_OK) goto done;
        if (trace && i == 0) {
            trace->block0_hidden = trace_copy(&x);
            if (!m->blocks[0].context_pre_only) trace->block0_context = trace_copy(&ctx);
        }
    }
    if (trace) trace->final_hidden = trace_copy(&x);
    // norm_out: AdaLayerNormContinuous, its linear gives (scale, shift)
    if (sd_tmp(a, m, &mod, 2, (int64_t[]){B, 2 * D}) || sq_linear_forward(&mod, &st, &m->norm_out, p, a) ||
        sd_chunk(a, m, &mod, 2, 0, &scale) || sd_chunk(a, m, &mod, 2, 1, &shift))
        goto done;
    sq_layernorm_modulate(&x, &x, &shift, &scale, 1e-6f);
    if (sd_tmp(a, m, &tok, 3, (int64_t[]){B, N, P * P * c->out_channels}) ||
        sq_linear_forward(&tok, &x, &m->proj_out, p, a) || unpatchify(m, a, &tok, h, w, out))
        goto done;
    rc = SQ_OK;
done:
    sq_prefetch_pass_end();
    sq_arena_reset(a, mark);
    return rc;
}

// The pass. time_features: the timestep features already on the device (what a
// CUDA graph records, mmdit/forward_graph.h), or NULL: they go to the arena first.
static int run_pass(const sd_forward_pass *f, const sq_tensor *time_features, sd_mmdit_trace *trace) {
    size_t mark = sq_arena_mark(f->a);
    sq_tensor feat;
    int rc = SQ_OK;
    if (!time_features) {
        rc = sd_tmp(f->a, f->m, &feat, 2, (int64_t[]){f->latent->shape[0], 256});
        if (rc == SQ_OK) rc = sd_time_features_upload(f->timestep, &feat);
        time_features = &feat;
    }
    if (rc == SQ_OK) rc = forward_core(f, time_features, trace);
    sq_arena_reset(f->a, mark);
    return rc;
}

static int run_untraced(const sd_forward_pass *f, const sq_tensor *time_features) {
    return run_pass(f, time_features, NULL);
}

int sd_mmdit_forward(const sd_mmdit *m, sq_arena *a, const sq_tensor *latent, const float *timestep,
                     const sq_tensor *context, const sq_tensor *pooled, const sq_perturb *p, sq_tensor *out,
                     sd_mmdit_trace *trace) {
    if (check_inputs(m, latent, context, pooled, out) != SQ_OK) return SQ_FAIL;
    sd_forward_pass f = {m, a, latent, timestep, context, pooled, p, out};
    // replayed as a CUDA graph where it can be; a traced pass reads results back midway
    int rc = !trace && sq_graphs_enabled(m->device) ? sd_forward_graph_run(&f, run_untraced) : run_pass(&f, NULL, trace);
    if (rc != SQ_OK) sq_error_context("mmdit forward");
    return rc;
}
