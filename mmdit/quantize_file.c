// mmdit/quantize_file.c: the streaming int4 quantiser behind `sd-qzo quantize` (and
// the dense-base path of training and sampling): an SD3.5 MMDiT checkpoint in, the
// int4 + scales file that train / sample / bench load directly out.
// Streams tensor by tensor (the input is mmapped, the output written through the
// streaming safetensors writer), so host memory stays at about one tensor in f32
// regardless of the checkpoint size. The output is written atomically.
#include "mmdit/quantize_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "kernels/quant.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"

typedef struct {
    double err[SD_QK_COUNT], ref[SD_QK_COUNT];
    int64_t count[SD_QK_COUNT];
} error_report;

int sd_quantize_checkpoint(const char *model, const char *out_path, int group, bool quiet) {
    sd_base_model base;
    sq_safetensors *st = NULL;
    if (sd_base_open(model, &base, &st) != SQ_OK) return SQ_FAIL;
    if (base.quantized) {
        sq_st_close(st);
        return sq_errorf("%s: already an int4 file of `sd-qzo quantize` (group size %d)", model, base.group);
    }
    const char *weights = base.weights, *config_path = base.config;
    bool single_file = base.single_file;

    int n = sq_st_count(st), nout = 0, nq = 0;
    sq_st_tensor_desc *desc = calloc((size_t)n * 2, sizeof *desc);
    char **names = calloc((size_t)n * 2, sizeof *names);
    float *wbuf = NULL, *scales = NULL;
    uint8_t *codes = NULL;
    sq_st_writer *w = NULL;
    char *config_text = NULL;
    int rc = SQ_FAIL;
    if (!desc || !names) { sq_errorf("out of host memory"); goto done; }
    int64_t max_q_numel = 0, total_bytes = 0;
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!sd_base_keep_tensor(e->name, single_file)) continue;
        sd_qlayer_kind kind;
        total_bytes += (int64_t)e->nbytes;
        if ((e->dtype == SQ_F32 || e->dtype == SQ_BF16 || e->dtype == SQ_F16) &&
            sd_mmdit_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            size_t len = strlen(e->name) + 16;
            names[nout] = malloc(len);
            names[nout + 1] = malloc(len);
            if (!names[nout] || !names[nout + 1]) { sq_errorf("out of host memory"); goto done; }
            snprintf(names[nout], len, "%s%s", e->name, SD_Q4_CODES_SUFFIX);
            snprintf(names[nout + 1], len, "%s%s", e->name, SD_Q4_SCALES_SUFFIX);
            desc[nout] = (sq_st_tensor_desc){.name = names[nout], .dtype = SQ_U8, .ndim = 2,
                                             .shape = {e->shape[0], e->shape[1] / 2}};
            desc[nout + 1] = (sq_st_tensor_desc){.name = names[nout + 1], .dtype = SQ_F32, .ndim = 2,
                                                 .shape = {e->shape[0], e->shape[1] / group}};
            nout += 2;
            nq++;
            if (e->shape[0] * e->shape[1] > max_q_numel) max_q_numel = e->shape[0] * e->shape[1];
        } else {
            desc[nout] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim};
            memcpy(desc[nout].shape, e->shape, sizeof e->shape);
            nout++;
        }
    }
    if (nq == 0) {
        sq_errorf("%s: no joint-block linear weights found to quantise (is this an SD3 MMDiT checkpoint?)", weights);
        goto done;
    }
    wbuf = malloc((size_t)max_q_numel * sizeof(float));
    codes = malloc((size_t)max_q_numel / 2 + 1);
    scales = malloc((size_t)max_q_numel / (size_t)group * sizeof(float) + sizeof(float));
    if (!wbuf || !codes || !scales) { sq_errorf("out of host memory for a %lld-element tensor", (long long)max_q_numel); goto done; }

    size_t config_len = 0;
    if (!single_file && sq_read_file(config_path, &config_text, &config_len) != SQ_OK) goto done;
    // The hash (mmdit/base_model.h) goes into the header, which is written before the
    // data: hash first.
    char hex[65], group_s[16];
    sd_base_source_sha256(st, single_file, hex);
    snprintf(group_s, sizeof group_s, "%d", group);
    sq_st_kv meta[6] = {{"sd_qzo.format", SD_Q4_FORMAT},
                        {"sd_qzo.group_size", group_s},
                        {"sd_qzo.source_sha256", hex},
                        {"sd_qzo.layout", single_file ? "single-file" : "diffusers"},
                        {"sd_qzo.source", model},
                        {"sd_qzo.config", config_text ? config_text : "{}"}};
    if (sq_st_writer_begin(&w, out_path, desc, nout, meta, 6) != SQ_OK) goto done;

    error_report rep;
    memset(&rep, 0, sizeof rep);
    sq_progress prog;
    if (!quiet) sq_progress_begin(&prog, "quantize", total_bytes);
    int64_t done_bytes = 0;
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!sd_base_keep_tensor(e->name, single_file)) continue;
        sd_qlayer_kind kind;
        if ((e->dtype == SQ_F32 || e->dtype == SQ_BF16 || e->dtype == SQ_F16) &&
            sd_mmdit_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            int64_t numel = e->shape[0] * e->shape[1];
            sq_convert_to_f32(wbuf, e->data, e->dtype, numel);
            for (int64_t j = 0; j < numel; j++)
                if (!isfinite(wbuf[j])) {  // a NaN would become a NaN scale, trained on silently
                    sq_errorf("%s: tensor '%s' holds a non-finite value (%g at element %lld): the model file is damaged",
                              weights, e->name, (double)wbuf[j], (long long)j);
                    goto done;
                }
            double err = sq_quantize_q4(wbuf, e->shape[0], e->shape[1], group, codes, scales);
            double ref = 0;
            for (int64_t j = 0; j < numel; j++) ref += (double)wbuf[j] * wbuf[j];
            rep.err[kind] += err;
            rep.ref[kind] += ref;
            rep.count[kind]++;
            if (sq_st_writer_append(w, codes, (size_t)numel / 2) != SQ_OK ||
                sq_st_writer_append(w, scales, (size_t)(numel / group) * sizeof(float)) != SQ_OK) {
                w = NULL;   // the writer frees itself on error
                goto done;
            }
        } else if (sq_st_writer_append(w, e->data, e->nbytes) != SQ_OK) {
            w = NULL;
            goto done;
        }
        done_bytes += (int64_t)e->nbytes;
        if (!quiet) sq_progress_update(&prog, done_bytes, NULL);
    }
    if (!quiet) sq_progress_end(&prog);
    rc = sq_st_writer_commit(w);
    w = NULL;
    if (rc != SQ_OK) goto done;
    if (!quiet) {
        printf("quantised %d linear layers to int4 (group %d) -> %s\n", nq, group, out_path);
        printf("%-18s %7s %14s\n", "layer type", "layers", "rel RMS error");
        for (int k = 0; k < SD_QK_COUNT; k++)
            if (rep.count[k])
                printf("%-18s %7lld %14.4f\n", sd_qlayer_kind_name((sd_qlayer_kind)k), (long long)rep.count[k],
                       sqrt(rep.err[k] / (rep.ref[k] > 0 ? rep.ref[k] : 1)));
    }
done:
    if (w) sq_st_writer_abort(w);
    for (int i = 0; names && i < n * 2; i++) free(names[i]);
    free(names);
    free(desc);
    free(wbuf);
    free(codes);
    free(scales);
    free(config_text);
    sq_st_close(st);
    return rc;
}
