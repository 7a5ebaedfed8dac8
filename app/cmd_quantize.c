// app/cmd_quantize.c: `sd-qzo quantize`: convert an SD3.5 MMDiT checkpoint to the
// int4 + scales file that train / sample / bench load directly.
// Streams tensor by tensor (the input is mmapped, the output written through the
// streaming safetensors writer), so host memory stays at about one tensor in f32
// regardless of the checkpoint size. The output is written atomically.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/base_model.h"
#include "app/commands.h"
#include "app/options.h"
#include "app/quantize_rules.h"
#include "core/config.h"
#include "core/error.h"
#include "core/path.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "kernels/quant.h"

// Finds the transformer weights and its config.json (NULL config for a single file).
static int resolve_model(const char *model, char *weights, size_t wsize, char *config, size_t csize) {
    config[0] = 0;
    if (sq_is_dir(model)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/transformer", model);
        const char *dir = sq_is_dir(p) ? p : model;
        snprintf(weights, wsize, "%s", dir);
        if ((size_t)snprintf(config, csize, "%.4000s/config.json", dir) >= csize) return sq_errorf("%s: path too long", dir);
        if (!sq_is_file(config)) return sq_errorf("%s: no config.json (expected a diffusers SD3 transformer directory)", dir);
        return SQ_OK;
    }
    if (!sq_is_file(model)) return sq_errorf("%s: no such file or directory", model);
    snprintf(weights, wsize, "%s", model);
    return SQ_OK;
}

typedef struct {
    double err[SQ_LAYER_KIND_COUNT], ref[SQ_LAYER_KIND_COUNT];
    int64_t count[SQ_LAYER_KIND_COUNT];
} error_report;

int sq_quantize_checkpoint(const char *model, const char *out_path, int group, bool quiet) {
    char weights[4096], config_path[4096];
    if (resolve_model(model, weights, sizeof weights, config_path, sizeof config_path) != SQ_OK) return SQ_FAIL;
    bool single_file = config_path[0] == 0;
    sq_safetensors *st = NULL;
    if (sq_st_open(&st, weights) != SQ_OK) return SQ_FAIL;

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
        if (!sq_base_keep_tensor(e->name, single_file)) continue;
        sq_layer_kind kind;
        total_bytes += (int64_t)e->nbytes;
        if ((e->dtype == SQ_F32 || e->dtype == SQ_BF16 || e->dtype == SQ_F16) &&
            sq_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            size_t len = strlen(e->name) + 16;
            names[nout] = malloc(len);
            names[nout + 1] = malloc(len);
            if (!names[nout] || !names[nout + 1]) { sq_errorf("out of host memory"); goto done; }
            snprintf(names[nout], len, "%s%s", e->name, SQ_Q4_CODES_SUFFIX);
            snprintf(names[nout + 1], len, "%s%s", e->name, SQ_Q4_SCALES_SUFFIX);
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
    // The hash (app/base_model.h) goes into the header, which is written before the
    // data: hash first.
    char hex[65], group_s[16];
    sq_base_source_sha256(st, single_file, hex);
    snprintf(group_s, sizeof group_s, "%d", group);
    sq_st_kv meta[6] = {{"sd_qzo.format", "q4-v1"},
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
        if (!sq_base_keep_tensor(e->name, single_file)) continue;
        sq_layer_kind kind;
        if ((e->dtype == SQ_F32 || e->dtype == SQ_BF16 || e->dtype == SQ_F16) &&
            sq_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            int64_t numel = e->shape[0] * e->shape[1];
            sq_convert_to_f32(wbuf, e->data, e->dtype, numel);
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
        for (int k = 0; k < SQ_LAYER_KIND_COUNT; k++)
            if (rep.count[k])
                printf("%-18s %7lld %14.4f\n", sq_layer_kind_name((sq_layer_kind)k), (long long)rep.count[k],
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

typedef struct {
    char model[4096], out[4096];
    int group_size;
} quantize_args;

static void quantize_defaults(void *p) {
    quantize_args *a = p;
    memset(a, 0, sizeof *a);
    a->group_size = 64;
}

static const sq_option quantize_options[] = {
    {"model", NULL, SQ_OPT_STR, SQ_OPT_STRING(quantize_args, model), NULL, false,
     "diffusers pipeline dir, its transformer/ dir, or a single-file checkpoint (only model.diffusion_model.* keys "
     "are kept from a single file) (required)"},
    {"out", "output", SQ_OPT_STR, SQ_OPT_STRING(quantize_args, out), NULL, false,
     "output .safetensors: int4 codes + fp32 scales + unquantised tensors (required)"},
    {"group-size", NULL, SQ_OPT_INT, SQ_OPT_FIELD(quantize_args, group_size), sq_opt_group_sizes, false,
     "input features per scale: 32, 64 or 128"},
};

static const sq_option_table quantize_table = {
    .command = "quantize",
    .usage = "usage: sd-qzo quantize --model DIR_OR_FILE --out FILE.safetensors [--group-size 64]\n",
    .options = quantize_options,
    .count = (int)(sizeof quantize_options / sizeof quantize_options[0]),
    .struct_size = sizeof(quantize_args),
    .defaults = quantize_defaults,
    .config_file = true,
};

int sq_cmd_quantize(int argc, char **argv) {
    quantize_args a;
    bool help;
    quantize_defaults(&a);
    if (sq_options_parse(&quantize_table, &a, argc, argv, &help, NULL) != SQ_OK) return SQ_FAIL;
    if (help) {
        sq_options_usage(&quantize_table, stdout);
        return SQ_OK;
    }
    if (!a.model[0] || !a.out[0]) return sq_errorf("--model and --out are required (see sd-qzo quantize --help)");
    return sq_quantize_checkpoint(a.model, a.out, a.group_size, false);
}
