// qzo/trained_scales.c: the trained-scale list, and the base MMDiT or base + QZO
// scales for inference (see qzo/trained_scales.h). The dense-base path reuses
// `sd-qzo quantize`'s quantiser (mmdit/quantize_file.h) through a
// temporary file rather than quantising in memory, so the int4 codes are bit for
// bit the ones the training run saw (it quantises the same way, from the file).
#include "qzo/trained_scales.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "qzo/checkpoint.h"

static int make_list(sd_mmdit *m, const char *origin, bool trained_only, sd_scale_list *out) {
    memset(out, 0, sizeof *out);
    int n = sd_mmdit_qlayers(m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)n + 1, sizeof *ls);
    out->named = calloc((size_t)n + 1, sizeof *out->named);
    out->names = calloc((size_t)n + 1, sizeof *out->names);
    out->scales = calloc((size_t)n + 1, sizeof *out->scales);
    out->index_base = calloc((size_t)n + 1, sizeof *out->index_base);
    out->kind = calloc((size_t)n + 1, sizeof *out->kind);
    if (!ls || !out->named || !out->names || !out->scales || !out->index_base || !out->kind) {
        free(ls);
        sd_scale_list_free(out);
        return sq_errorf("out of host memory");
    }
    sd_mmdit_qlayers(m, ls, n);
    for (int i = 0; i < n; i++) {
        if (!sq_linear_quantized(ls[i].linear) || (trained_only && ls[i].linear->frozen)) continue;
        int k = out->count++;
        snprintf(out->names[k], sizeof out->names[k], "%.96s.weight" SD_Q4_SCALES_SUFFIX, ls[i].name);
        out->named[k] = (sq_named_scales){out->names[k], &ls[i].linear->scales};
        out->scales[k] = &ls[i].linear->scales;
        out->index_base[k] = ls[i].linear->index_base;
        out->kind[k] = ls[i].kind;
    }
    free(ls);
    if (out->count == 0) {
        sd_scale_list_free(out);
        return sq_errorf(trained_only ? "%s: no int4 layer of the model trains" : "%s: the model has no int4 layer", origin);
    }
    return SQ_OK;
}

int sd_scale_list_make(sd_mmdit *m, const char *origin, sd_scale_list *out) { return make_list(m, origin, false, out); }

int sd_scale_list_make_trained(sd_mmdit *m, const char *origin, sd_scale_list *out) {
    return make_list(m, origin, true, out);
}

void sd_scale_list_free(sd_scale_list *l) {
    free(l->kind);
    free(l->named);
    free(l->names);
    free(l->scales);
    free(l->index_base);
    memset(l, 0, sizeof *l);
}

static int no_ema(const char *scales) {
    return sq_errorf("--ema: %s holds no EMA of the scales (it was trained without --ema); leave out --ema to use its "
                     "scales", scales);
}

int sd_require_ema(const char *scales) {
    sq_checkpoint_info info;
    if (sq_checkpoint_read_file(scales, &info) != SQ_OK) return sq_error_context("--scales");
    return info.ema_beta > 0 ? SQ_OK : no_ema(scales);
}

// Replaces every int4 layer's scales with the checkpoint's (hash checked first), and
// with ema those of the trained layers with their EMA.
static int apply_scales(sd_mmdit *m, const char *scales, bool ema) {
    sd_scale_list sl;
    if (sd_scale_list_make(m, scales, &sl) != SQ_OK) return SQ_FAIL;
    sq_checkpoint_info info;
    int rc = sq_checkpoint_load(scales, sl.named, sl.count, m->source_sha256[0] ? m->source_sha256 : NULL, &info);
    bool *loaded = calloc((size_t)sl.count + 1, sizeof *loaded);
    if (rc == SQ_OK && !loaded) rc = sq_errorf("out of host memory");
    if (rc == SQ_OK && ema) rc = sq_checkpoint_load_ema(scales, sl.named, sl.count, loaded);
    if (rc == SQ_OK) {
        int n_ema = 0;
        for (int i = 0; i < sl.count; i++) n_ema += loaded[i];
        if (ema)
            sq_log_info("applied the EMA (beta %g, %lld steps) of %s (step %lld) to %d of %d int4 layers, the scales to the "
                        "others (frozen in training)", (double)info.ema_beta, (long long)info.ema_updates, scales,
                        (long long)info.state.step, n_ema, sl.count);
        else
            sq_log_info("applied the scales of %s (step %lld) to %d int4 layers", scales, (long long)info.state.step, sl.count);
    }
    free(info.loss_history);   // sq_checkpoint_load sets it (NULL on failure)
    free(loaded);
    sd_scale_list_free(&sl);
    return rc;
}

int sd_load_finetuned_mmdit(sd_mmdit *m, const char *model, const char *scales, bool ema, sq_device device,
                            sq_dtype dtype, const char *tmp_dir) {
    memset(m, 0, sizeof *m);
    if (!scales) return ema ? sq_errorf("--ema needs --scales (a checkpoint trained with --ema)")
                            : sd_mmdit_load(m, model, device, dtype);

    sq_checkpoint_info info;
    if (sq_checkpoint_read_file(scales, &info) != SQ_OK) return sq_error_context("--scales");
    if (ema && info.ema_beta == 0) return no_ema(scales);

    sd_base_model base;
    sq_safetensors *st = NULL;
    if (sd_base_open(model, &base, &st) != SQ_OK) return SQ_FAIL;
    sq_st_close(st);
    char tmp[4200] = "";
    const char *load_path = model;
    if (base.quantized) {
        if (base.group != info.group_size)
            return sq_errorf("%s: int4 at group size %d, but %s was trained at group size %d", model, base.group, scales,
                             info.group_size);
    } else {
        const char *dir = tmp_dir ? tmp_dir : getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/sd-qzo-int4-%ld.safetensors", dir && dir[0] ? dir : "/tmp", (long)getpid());
        sq_log_info("quantising %s to int4 (group %d) for the scales of %s; pass the file of `sd-qzo quantize` as the "
                    "model to skip this", model, info.group_size, scales);
        if (sd_quantize_checkpoint(model, tmp, info.group_size, true) != SQ_OK) {
            unlink(tmp);
            return sq_error_context("quantising %s", model);
        }
        load_path = tmp;
    }
    int rc = sd_mmdit_load(m, load_path, device, dtype);
    if (tmp[0]) unlink(tmp);
    if (rc != SQ_OK) return SQ_FAIL;
    if (apply_scales(m, scales, ema) != SQ_OK) {
        sd_mmdit_free(m);
        return SQ_FAIL;
    }
    return SQ_OK;
}
