// app/export.c: `sd-qzo export` writers: the diffusers folder (sharded like
// diffusers' save_pretrained) and Stability's single file, both streamed tensor by
// tensor from the plan (app/export_plan.h) through the streaming safetensors writer.
#include "app/export.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/export_gguf.h"
#include "app/export_plan.h"
#include "core/error.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"

#define DIFFUSERS_WEIGHTS "diffusion_pytorch_model"
#define DEFAULT_SHARD_BYTES 5000000000LL   // diffusers writes "5GB" as 5·10⁹ bytes

void sd_export_options_defaults(sd_export_options *o) {
    memset(o, 0, sizeof *o);
    o->formats = SD_EXPORT_DIFFUSERS;
    o->dtype = -1;
}

// the metadata of every file written: format, origin, hash, step, group, base, which scales
#define SD_EXPORT_META 7

typedef struct {
    const sd_export_options *o;
    sd_export_plan plan;
    sd_export_scratch scratch;
    void *bytes;            // one tensor in the output dtype
    sq_dtype dtype;
    sq_progress prog;
    int64_t done;
    char step[32], group[16];
    sq_st_kv meta[SD_EXPORT_META];
} exporter;

static int64_t out_bytes(const exporter *x, const sd_export_tensor *t) {
    return (int64_t)sq_dtype_bytes(x->dtype, sq_shape_numel(t->ndim, t->shape));
}

static int join_path(char *out, size_t size, const char *dir, const char *name) {
    if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size) return sq_errorf("%s: path too long", dir);
    return SQ_OK;
}

static bool dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return true;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

// With --force: an earlier export's weight files, so a stale index or shard set
// cannot shadow the new one (sq_st_open and diffusers prefer an index).
static int remove_old_weights(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return SQ_OK;
    struct dirent *e;
    int rc = SQ_OK;
    while (rc == SQ_OK && (e = readdir(d))) {
        if (strncmp(e->d_name, DIFFUSERS_WEIGHTS, strlen(DIFFUSERS_WEIGHTS))) continue;
        char p[4400];
        if (join_path(p, sizeof p, dir, e->d_name) != SQ_OK) rc = SQ_FAIL;
        else if (unlink(p) != 0) rc = sq_error_errno("%s: cannot remove the earlier export's file", p);
    }
    closedir(d);
    return rc;
}

// Small text files (config.json, the shard index) atomically, like the tensors.
static int write_text_atomic(const char *path, const char *text) {
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return sq_error_errno("%s: cannot create", tmp);
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = false;
    if (!ok) { unlink(tmp); return sq_error_errno("%s: write failed", tmp); }
    if (rename(tmp, path) != 0) { unlink(tmp); return sq_error_errno("%s: cannot rename into place", path); }
    return SQ_OK;
}

// Values of t in the output dtype into x->bytes; the halves swapped when asked.
static int convert(exporter *x, const sd_export_tensor *t, bool swap) {
    if (sd_export_materialise(&x->plan, t, &x->scratch) != SQ_OK) return SQ_FAIL;
    int64_t n = sq_shape_numel(t->ndim, t->shape);
    const float *v = x->scratch.values;
    if (!swap) return sq_convert_from_f32(x->bytes, x->dtype, v, n) == 0 ? SQ_OK : sq_errorf("cannot convert '%s'", t->name);
    size_t half = sq_dtype_bytes(x->dtype, n / 2);
    if (sq_convert_from_f32(x->bytes, x->dtype, v + n / 2, n / 2) != 0 ||
        sq_convert_from_f32((char *)x->bytes + half, x->dtype, v, n / 2) != 0)
        return sq_errorf("cannot convert '%s'", t->name);
    return SQ_OK;
}

// One safetensors file holding the tensors order[0..n) (each made of `parts`
// consecutive plan tensors, concatenated along rows).
typedef struct {
    char name[300];
    int first, parts;        // indexes into a tensor order array
    bool swap;
    int ndim;
    int64_t shape[SQ_ST_MAX_DIMS];
} out_tensor;

static int write_file(exporter *x, const char *path, const out_tensor *ts, int n, const sd_export_tensor **order) {
    sq_st_tensor_desc *desc = calloc((size_t)n + 1, sizeof *desc);
    if (!desc) return sq_errorf("out of host memory");
    for (int i = 0; i < n; i++) {
        desc[i] = (sq_st_tensor_desc){.name = ts[i].name, .dtype = x->dtype, .ndim = ts[i].ndim};
        memcpy(desc[i].shape, ts[i].shape, sizeof desc[i].shape);
    }
    sq_st_writer *w;
    int rc = sq_st_writer_begin(&w, path, desc, n, x->meta, SD_EXPORT_META);
    free(desc);
    if (rc != SQ_OK) return SQ_FAIL;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < ts[i].parts; j++) {
            const sd_export_tensor *t = order[ts[i].first + j];
            if (convert(x, t, ts[i].swap) != SQ_OK) {
                sq_st_writer_abort(w);
                return sq_error_context("%s", path);
            }
            if (sq_st_writer_append(w, x->bytes, (size_t)out_bytes(x, t)) != SQ_OK) return SQ_FAIL;  // w freed
            x->done += out_bytes(x, t);
            if (!x->o->quiet) sq_progress_update(&x->prog, x->done, NULL);
        }
    }
    return sq_st_writer_commit(w);
}

static char *index_json(const exporter *x, const out_tensor *ts, int n, const int *shard_of, int nshards, int64_t total) {
    cJSON *o = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(o, "metadata"), *map = cJSON_AddObjectToObject(o, "weight_map");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    for (int i = 1; i < SD_EXPORT_META; i++) cJSON_AddStringToObject(meta, x->meta[i].key, x->meta[i].value);
    char f[128];
    for (int i = 0; i < n; i++) {
        snprintf(f, sizeof f, DIFFUSERS_WEIGHTS "-%05d-of-%05d.safetensors", shard_of[i] + 1, nshards);
        cJSON_AddStringToObject(map, ts[i].name, f);
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static int write_diffusers(exporter *x, const char *dir) {
    const sd_export_plan *p = &x->plan;
    int64_t max = x->o->max_shard_bytes > 0 ? x->o->max_shard_bytes : DEFAULT_SHARD_BYTES;
    out_tensor *ts = calloc((size_t)p->n + 1, sizeof *ts);
    const sd_export_tensor **order = calloc((size_t)p->n + 1, sizeof *order);
    int *shard_of = calloc((size_t)p->n + 1, sizeof *shard_of);
    char path[4400];
    int rc = SQ_FAIL, nshards = 1;
    if (!ts || !order || !shard_of) { sq_errorf("out of host memory"); goto done; }
    // diffusers' rule: a shard takes tensors in order until the next would pass the
    // limit; a tensor larger than the limit gets a shard of its own
    int64_t in_shard = 0, total = 0;
    for (int i = 0; i < p->n; i++) {
        const sd_export_tensor *t = &p->t[i];
        order[i] = t;
        ts[i] = (out_tensor){.first = i, .parts = 1, .ndim = t->ndim};
        snprintf(ts[i].name, sizeof ts[i].name, "%s", t->name);
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
        int64_t b = out_bytes(x, t);
        if (in_shard > 0 && in_shard + b > max) { nshards++; in_shard = 0; }
        shard_of[i] = nshards - 1;
        in_shard += b;
        total += b;
    }
    for (int s = 0, first = 0; s < nshards; s++) {
        int last = first;
        while (last < p->n && shard_of[last] == s) last++;
        char file[128];
        if (nshards == 1) snprintf(file, sizeof file, DIFFUSERS_WEIGHTS ".safetensors");
        else snprintf(file, sizeof file, DIFFUSERS_WEIGHTS "-%05d-of-%05d.safetensors", s + 1, nshards);
        if (join_path(path, sizeof path, dir, file) != SQ_OK || write_file(x, path, ts + first, last - first, order) != SQ_OK)
            goto done;
        first = last;
    }
    if (nshards > 1) {
        char *index = index_json(x, ts, p->n, shard_of, nshards, total);
        int irc = !index ? sq_errorf("out of host memory")
                  : join_path(path, sizeof path, dir, DIFFUSERS_WEIGHTS ".safetensors.index.json") != SQ_OK
                      ? SQ_FAIL
                      : write_text_atomic(path, index);
        free(index);
        if (irc != SQ_OK) goto done;
    }
    // last, so a folder with a config.json is always a complete model
    if (join_path(path, sizeof path, dir, "config.json") == SQ_OK) rc = write_text_atomic(path, p->config_json);
done:
    free(ts);
    free(order);
    free(shard_of);
    return rc;
}

static int by_single_key(const void *a, const void *b) {
    const sd_export_tensor *x = *(const sd_export_tensor *const *)a, *y = *(const sd_export_tensor *const *)b;
    int c = strcmp(x->single_key, y->single_key);
    return c ? c : x->single_part - y->single_part;
}

static int write_single(exporter *x, const char *path) {
    const sd_export_plan *p = &x->plan;
    out_tensor *ts = calloc((size_t)p->n + 1, sizeof *ts);
    const sd_export_tensor **order = calloc((size_t)p->n + 1, sizeof *order);
    int rc = SQ_FAIL, n = 0;
    if (!ts || !order) { sq_errorf("out of host memory"); goto done; }
    for (int i = 0; i < p->n; i++) {
        if (!p->t[i].single_key[0]) { sq_errorf("%s: tensor '%s' has no single-file key", p->base.weights, p->t[i].name); goto done; }
        order[i] = &p->t[i];
    }
    // the thirds of a fused qkv sort next to each other, in q, k, v order
    qsort(order, (size_t)p->n, sizeof *order, by_single_key);
    for (int i = 0; i < p->n;) {
        const sd_export_tensor *t = order[i];
        int parts = 1;
        while (i + parts < p->n && !strcmp(order[i + parts]->single_key, t->single_key)) parts++;
        bool fused = t->single_part >= 0;
        for (int j = 0; j < parts; j++)
            if ((fused ? order[i + j]->single_part != j : parts != 1) || (fused && parts != 3) ||
                sq_shape_numel(order[i + j]->ndim, order[i + j]->shape) != sq_shape_numel(t->ndim, t->shape)) {
                sq_errorf("%s: '%s' cannot be assembled from %d diffusers tensor(s) (a q/k/v third missing?)",
                          p->base.weights, t->single_key, parts);
                goto done;
            }
        out_tensor *o = &ts[n++];
        *o = (out_tensor){.first = i, .parts = parts, .swap = t->single_swapped, .ndim = t->ndim};
        snprintf(o->name, sizeof o->name, "%s%s", SD_SINGLE_FILE_PREFIX, t->single_key);
        memcpy(o->shape, t->shape, sizeof o->shape);
        o->shape[0] *= parts;
        i += parts;
    }
    rc = write_file(x, path, ts, n, order);
done:
    free(ts);
    free(order);
    return rc;
}

static int prepare_out_dir(const sd_export_options *o, const sd_base_model *base) {
    struct stat st;
    if (stat(o->out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return sq_errorf("%s: exists and is not a directory", o->out_dir);
        if (!o->force && !dir_is_empty(o->out_dir))
            return sq_errorf("%s: directory is not empty (use --force to write into it)", o->out_dir);
    } else if (sq_mkdirs(o->out_dir) != SQ_OK) {
        return SQ_FAIL;
    }
    char out_real[PATH_MAX], base_real[PATH_MAX], t[4400];
    if (join_path(t, sizeof t, o->out_dir, "transformer") != SQ_OK) return SQ_FAIL;
    if ((o->formats & SD_EXPORT_DIFFUSERS) && realpath(t, out_real) && realpath(base->weights, base_real) &&
        !strcmp(out_real, base_real))
        return sq_errorf("%s: is the base model's own folder; export somewhere else", t);
    if (o->formats & SD_EXPORT_DIFFUSERS) {
        if (sq_mkdirs(t) != SQ_OK) return SQ_FAIL;
        if (o->force && remove_old_weights(t) != SQ_OK) return SQ_FAIL;
    }
    return SQ_OK;
}

static void single_name(const sd_export_options *o, char *out, size_t size) {
    if (o->name && o->name[0]) { snprintf(out, size, "%s", o->name); return; }
    char real[PATH_MAX];
    const char *p = realpath(o->out_dir, real) ? real : o->out_dir;
    const char *slash = strrchr(p, '/');
    snprintf(out, size, "%s", slash && slash[1] ? slash + 1 : "model");
}

int sd_export(const sd_export_options *o) {
    if (!o->model || !o->scales || !o->out_dir) return sq_errorf("export needs a model, a scales checkpoint and an output folder");
    if (!(o->formats & (SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE | SD_EXPORT_GGUF))) return sq_errorf("export: no output format chosen");
    if (o->dtype != -1 && o->dtype != SQ_F32 && o->dtype != SQ_BF16 && o->dtype != SQ_F16)
        return sq_errorf("export: the output dtype must be bf16, fp16 or fp32");
    exporter x;
    memset(&x, 0, sizeof x);
    x.o = o;
    bool progress = false;
    if (sd_export_plan_open(&x.plan, o->model, o->scales, o->ema) != SQ_OK) return SQ_FAIL;
    const sd_export_plan *p = &x.plan;
    int rc = SQ_FAIL;
    x.dtype = o->dtype == -1 ? p->base_dtype : (sq_dtype)o->dtype;
    if (prepare_out_dir(o, &p->base) != SQ_OK || sd_export_scratch_alloc(&x.scratch, p) != SQ_OK) goto done;
    x.bytes = malloc((size_t)p->max_numel * sizeof(float) + 16);
    if (!x.bytes) { sq_errorf("out of host memory"); goto done; }
    snprintf(x.step, sizeof x.step, "%lld", (long long)p->info.state.step);
    snprintf(x.group, sizeof x.group, "%d", p->group);
    // "format": "pt" as torch's save_file writes it; no sd_qzo.format, so sd-qzo
    // reads the result as ordinary dense weights
    sq_st_kv meta[SD_EXPORT_META] = {{"format", "pt"},
                                     {"sd_qzo.exported_from", o->scales},
                                     {"sd_qzo.base_sha256", p->base_sha256},
                                     {"sd_qzo.step", x.step},
                                     {"sd_qzo.group_size", x.group},
                                     {"sd_qzo.base_model", o->model},
                                     {"sd_qzo.exported_scales", o->ema ? "ema" : "trained"}};
    memcpy(x.meta, meta, sizeof meta);
    int64_t per_pass = 0;
    for (int i = 0; i < p->n; i++) per_pass += out_bytes(&x, &p->t[i]);
    int passes = ((o->formats & SD_EXPORT_DIFFUSERS) != 0) + ((o->formats & SD_EXPORT_SINGLE) != 0);
    progress = !o->quiet && passes > 0;
    if (progress) sq_progress_begin(&x.prog, "export", per_pass * passes);
    char path[4400], name[256];
    if (o->formats & SD_EXPORT_DIFFUSERS) {
        if (join_path(path, sizeof path, o->out_dir, "transformer") != SQ_OK || write_diffusers(&x, path) != SQ_OK) goto done;
    }
    single_name(o, name, sizeof name);
    if (o->formats & SD_EXPORT_SINGLE) {
        char file[300];
        snprintf(file, sizeof file, "%s.safetensors", name);
        if (join_path(path, sizeof path, o->out_dir, file) != SQ_OK || write_single(&x, path) != SQ_OK) goto done;
    }
    if (progress) {
        sq_progress_end(&x.prog);
        progress = false;
    }
    sd_gguf_export_stats gs;
    if (o->formats & SD_EXPORT_GGUF) {
        char file[300];
        snprintf(file, sizeof file, "%s.gguf", name);
        sq_gguf_kv kv[5] = {{"sd_qzo.exported_from", SQ_GGUF_STRING, o->scales, 0},
                            {"sd_qzo.exported_scales", SQ_GGUF_STRING, o->ema ? "ema" : "trained", 0},
                            {"sd_qzo.base_sha256", SQ_GGUF_STRING, p->base_sha256, 0},
                            {"sd_qzo.step", SQ_GGUF_STRING, x.step, 0},
                            {"sd_qzo.group_size", SQ_GGUF_U32, NULL, p->group}};
        if (join_path(path, sizeof path, o->out_dir, file) != SQ_OK ||
            sd_export_gguf(p, path, o->dtype, kv, 5, o->quiet, &gs) != SQ_OK)
            goto done;
    }
    if (!o->quiet && (o->formats & (SD_EXPORT_DIFFUSERS | SD_EXPORT_SINGLE))) {
        printf("exported %d tensors (%d int4 layers dequantised with the %s of step %s, group %d) as %s, %.1f MB per copy:\n",
               p->n, p->n_quantized, o->ema ? "EMA of the scales" : "scales", x.step, p->group, sq_dtype_name(x.dtype),
               (double)per_pass / 1e6);
        if (o->formats & SD_EXPORT_DIFFUSERS) printf("  diffusers: %s/transformer\n", o->out_dir);
        if (o->formats & SD_EXPORT_SINGLE) printf("  single file: %s/%s.safetensors\n", o->out_dir, name);
    }
    if (!o->quiet && (o->formats & SD_EXPORT_GGUF)) {
        printf("exported %d tensors as GGUF (%d int4 layers as Q4_0 with the scales of step %s; the rest %s), %.1f MB:\n"
               "  gguf: %s/%s.gguf\n",
               gs.tensors, p->n_quantized, x.step, o->dtype == SQ_F32 ? "F32" : o->dtype == SQ_BF16 ? "BF16 (F32 if small)" : "F16 (F32 if small)",
               (double)gs.bytes / 1e6, o->out_dir, name);
        printf("  Q4_0: all %lld codes carried over exactly (code c is q = c + 8); %lld scales rounded to fp16: max relative "
               "error %.3g, mean %.3g, max absolute %.3g\n",
               (long long)gs.codes, (long long)gs.scales, gs.max_rel_err, gs.scales ? gs.sum_rel_err / (double)gs.scales : 0.0,
               gs.max_abs_err);
        if (gs.subnormal)
            printf("  %lld scales are below fp16's normal range (6.1e-5) and keep fewer bits\n", (long long)gs.subnormal);
    }
    rc = SQ_OK;
done:
    if (progress) sq_progress_end(&x.prog);   // end the bar's line before main prints the error
    free(x.bytes);
    sd_export_scratch_free(&x.scratch);
    sd_export_plan_close(&x.plan);
    return rc;
}
