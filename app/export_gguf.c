// app/export_gguf.c: `sd-qzo export --format gguf`: the fine-tuned MMDiT as one GGUF
// in the layout that stable-diffusion.cpp (--diffusion-model) and ComfyUI-GGUF's
// Unet Loader read for SD3.5: Stability's single-file tensor names without the
// "model.diffusion_model." prefix (both loaders accept that form: sd.cpp adds the
// prefix, ComfyUI-GGUF strips it when present), general.architecture "sd3".
//
// The int4 layers go out as Q4_0, carrying the trained model over: sd-qzo's code c
// (two's complement, -8..7) is Q4_0's q = c + 8 (0..15), so every code is held
// exactly, and a group of G = 32·m elements is m blocks with the same scale, which
// is the only thing rounded (fp32 → the block's fp16 d; the error is printed, and a
// scale past fp16's range is refused). Other tensors follow ComfyUI-GGUF's
// convert.py: 1-D tensors and tensors of at most 1024 elements F32, the rest F16
// (or BF16 / F32 with --dtype). Fused qkv and swapped adaLN halves are assembled
// from the plan as for the single safetensors file (mmdit/keymap.h). Streamed one
// tensor at a time through the atomic writer of core/gguf.h.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/export_gguf.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/gguf.h"
#include "core/progress.h"

#define SMALL_TENSOR 1024   // convert.py's QUANTIZATION_THRESHOLD: kept F32

typedef struct {
    char name[300];          // single-file key, no prefix
    int first, parts;        // consecutive plan tensors in `order`
    bool swap, q4;
    int ndim;
    int64_t shape[SQ_ST_MAX_DIMS];   // PyTorch order, fused rows included
    uint32_t type;
} gguf_out;

static int by_single_key(const void *a, const void *b) {
    const sd_export_tensor *x = *(const sd_export_tensor *const *)a, *y = *(const sd_export_tensor *const *)b;
    int c = strcmp(x->single_key, y->single_key);
    return c ? c : x->single_part - y->single_part;
}

// Rows of codes (diffusers order, two a byte, element 2i low) and their scales
// (rows, K/G) as Q4_0 blocks into out; adds to the scale-rounding statistics.
static int to_q4_0(const uint8_t *codes, const float *scales, int64_t rows, int64_t k, int group, uint8_t *out,
                   sd_gguf_export_stats *s, const char *name) {
    int64_t nb = k / 32;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < nb; b++) {
            float sc = scales[r * (k / group) + b * 32 / group];
            // negative scales are valid (a Q4_0 GGUF base brings them) and Q4_0's d is signed
            if (!(fabsf(sc) <= 65504.0f))
                return sq_errorf("'%s': scale %g does not fit an fp16 Q4_0 scale", name, (double)sc);
            uint16_t h = sq_f32_to_f16(sc);
            if (b * 32 % group == 0) {   // each scale counted once
                double d = sq_f16_to_f32(h), err = fabs(d - sc), mag = fabs(sc);
                s->scales++;
                if (err > s->max_abs_err) s->max_abs_err = err;
                if (mag > 0 && err / mag > s->max_rel_err) s->max_rel_err = err / mag;
                s->sum_rel_err += mag > 0 ? err / mag : 0;
                if (mag > 0 && fabs(d) < 6.103515625e-05) s->subnormal++;
            }
            uint8_t *blk = out + (r * nb + b) * 18;
            memcpy(blk, &h, 2);   // little-endian hosts only, as the rest of sd-qzo's file code
            memset(blk + 2, 0, 16);
            for (int j = 0; j < 32; j++) {
                int64_t e = r * k + b * 32 + j;
                int nib = (codes[e >> 1] >> ((e & 1) * 4)) & 0xF;
                int c = nib >= 8 ? nib - 16 : nib;   // sd-qzo's code, -8..7
                int q = c + 8;                      // Q4_0's, 0..15: always representable
                blk[2 + (j & 15)] |= (uint8_t)(q << (j < 16 ? 0 : 4));
            }
        }
    }
    s->codes += rows * k;
    return SQ_OK;
}

static uint32_t dense_type(const gguf_out *o, int dtype) {
    int64_t n = 1;
    for (int d = 0; d < o->ndim; d++) n *= o->shape[d];
    if (o->ndim == 1 || n <= SMALL_TENSOR || dtype == SQ_F32) return SQ_GGML_F32;
    return dtype == SQ_BF16 ? SQ_GGML_BF16 : SQ_GGML_F16;
}

// One output tensor's bytes into buf (sized by the caller).
static int encode(const sd_export_plan *p, sd_export_scratch *sc, const sd_export_tensor **order, const gguf_out *o,
                  uint8_t *buf, sd_gguf_export_stats *s) {
    size_t off = 0;
    for (int j = 0; j < o->parts; j++) {
        const sd_export_tensor *t = order[o->first + j];
        if (sd_export_materialise(p, t, sc) != SQ_OK) return SQ_FAIL;
        int64_t n = sq_shape_numel(t->ndim, t->shape), rows = t->shape[0], k = n / rows;
        if (o->q4) {
            // swapped halves: rows [R/2, R) first; a group never spans rows
            size_t row_bytes = (size_t)(k / 32) * 18;
            for (int h = 0; h < (o->swap ? 2 : 1); h++) {
                int64_t r0 = o->swap ? (h == 0 ? rows / 2 : 0) : 0, nr = o->swap ? rows / 2 : rows;
                if (to_q4_0(sc->codes + r0 * k / 2, sc->scales + r0 * (k / p->group), nr, k, p->group, buf + off, s, o->name) !=
                    SQ_OK)
                    return SQ_FAIL;
                off += row_bytes * (size_t)nr;
            }
            s->q4_tensors += j == 0;
        } else {
            const float *v = sc->values;
            sq_dtype dt = o->type == SQ_GGML_F32 ? SQ_F32 : o->type == SQ_GGML_BF16 ? SQ_BF16 : SQ_F16;
            size_t es = sq_dtype_bytes(dt, 1);
            if (o->swap) {
                sq_convert_from_f32(buf + off, dt, v + n / 2, n / 2);
                sq_convert_from_f32(buf + off + (size_t)(n / 2) * es, dt, v, n / 2);
            } else {
                sq_convert_from_f32(buf + off, dt, v, n);
            }
            off += (size_t)n * es;
        }
    }
    return SQ_OK;
}

int sd_export_gguf(const sd_export_plan *p, const char *path, int dtype, const sq_gguf_kv *extra, int n_extra, bool quiet,
                   sd_gguf_export_stats *stats) {
    memset(stats, 0, sizeof *stats);
    gguf_out *outs = calloc((size_t)p->n + 1, sizeof *outs);
    const sd_export_tensor **order = calloc((size_t)p->n + 1, sizeof *order);
    sq_gguf_tensor_desc *desc = calloc((size_t)p->n + 1, sizeof *desc);
    sq_gguf_kv *kvs = calloc((size_t)n_extra + 4, sizeof *kvs);
    sd_export_scratch sc = {0};
    uint8_t *buf = NULL;
    sq_gguf_writer *w = NULL;
    int rc = SQ_FAIL, n = 0;
    if (!outs || !order || !desc || !kvs) { sq_errorf("out of host memory"); goto done; }
    for (int i = 0; i < p->n; i++) {
        if (!p->t[i].single_key[0]) { sq_errorf("%s: tensor '%s' has no single-file key", p->base.weights, p->t[i].name); goto done; }
        order[i] = &p->t[i];
    }
    qsort(order, (size_t)p->n, sizeof *order, by_single_key);
    size_t max_bytes = 0;
    int64_t total = 0;
    for (int i = 0; i < p->n;) {
        const sd_export_tensor *t = order[i];
        int parts = 1;
        while (i + parts < p->n && !strcmp(order[i + parts]->single_key, t->single_key)) parts++;
        bool fused = t->single_part >= 0, q4 = true;
        for (int j = 0; j < parts; j++) {
            const sd_export_tensor *u = order[i + j];
            if ((fused ? u->single_part != j : parts != 1) || (fused && parts != 3) ||
                sq_shape_numel(u->ndim, u->shape) != sq_shape_numel(t->ndim, t->shape)) {
                sq_errorf("%s: '%s' cannot be assembled from %d diffusers tensor(s) (a q/k/v third missing?)", p->base.weights,
                          t->single_key, parts);
                goto done;
            }
            q4 &= u->quantized && u->ndim == 2 && u->shape[1] % 32 == 0;
        }
        gguf_out *o = &outs[n++];
        *o = (gguf_out){.first = i, .parts = parts, .swap = t->single_swapped, .q4 = q4, .ndim = t->ndim};
        snprintf(o->name, sizeof o->name, "%s", t->single_key);
        memcpy(o->shape, t->shape, sizeof o->shape);
        o->shape[0] *= parts;
        if (o->ndim > SQ_GGUF_MAX_DIMS) { sq_errorf("'%s' has %d dimensions (GGUF holds 4)", o->name, o->ndim); goto done; }
        o->type = q4 ? SQ_GGML_Q4_0 : dense_type(o, dtype);
        desc[n - 1] = (sq_gguf_tensor_desc){.name = o->name, .type = o->type, .n_dims = o->ndim};
        for (int d = 0; d < o->ndim; d++) desc[n - 1].ne[d] = o->shape[o->ndim - 1 - d];
        int64_t numel = sq_shape_numel(o->ndim, o->shape);
        size_t b = sq_ggml_nbytes(o->type, numel);
        if (b > max_bytes) max_bytes = b;
        total += (int64_t)b;
        i += parts;
    }
    int nk = 0;
    kvs[nk++] = (sq_gguf_kv){.key = "general.architecture", .type = SQ_GGUF_STRING, .str = "sd3"};
    kvs[nk++] = (sq_gguf_kv){.key = "general.quantization_version", .type = SQ_GGUF_U32, .i = 2};
    kvs[nk++] = (sq_gguf_kv){.key = "general.file_type", .type = SQ_GGUF_U32, .i = 2};   // llama's MOSTLY_Q4_0
    for (int i = 0; i < n_extra; i++) kvs[nk++] = extra[i];
    buf = malloc(max_bytes + 16);
    if (!buf || sd_export_scratch_alloc(&sc, p) != SQ_OK) { if (!buf) sq_errorf("out of host memory"); goto done; }
    if (sq_gguf_writer_begin(&w, path, desc, n, kvs, nk) != SQ_OK) goto done;
    sq_progress prog;
    if (!quiet) sq_progress_begin(&prog, "export gguf", total);
    int64_t written = 0;
    for (int i = 0; i < n; i++) {
        size_t b = sq_ggml_nbytes(outs[i].type, sq_shape_numel(outs[i].ndim, outs[i].shape));
        if (encode(p, &sc, order, &outs[i], buf, stats) != SQ_OK) {
            sq_error_context("%s", path);
            sq_gguf_writer_abort(w);
            w = NULL;
            if (!quiet) sq_progress_end(&prog);
            goto done;
        }
        if (sq_gguf_writer_append(w, buf, b) != SQ_OK) {   // w freed
            w = NULL;
            if (!quiet) sq_progress_end(&prog);
            goto done;
        }
        written += (int64_t)b;
        if (!quiet) sq_progress_update(&prog, written, NULL);
    }
    if (!quiet) sq_progress_end(&prog);
    stats->bytes = written;
    stats->tensors = n;
    rc = sq_gguf_writer_commit(w);
    w = NULL;
done:
    if (w) sq_gguf_writer_abort(w);
    sd_export_scratch_free(&sc);
    free(buf);
    free(outs);
    free(order);
    free(desc);
    free(kvs);
    return rc;
}
