// mmdit/quantize_file.c: the streaming int4 quantiser behind `sd-qzo quantize` (and
// the dense-base path of training and sampling): an SD3.5 MMDiT checkpoint in, the
// int4 + scales file that train / sample / bench load directly out.
// Streams tensor by tensor: the input is mmapped and each tensor's pages are
// released once it is done (sq_st_entry_release), the next one is prefetched, and
// the output goes through the streaming safetensors writer, so host memory stays at
// about one tensor's codes and scales (the weights are read in their stored dtype,
// never widened into a buffer) regardless of the checkpoint size. The quantiser is
// sq_quantize_q4_src on all CPU threads, or sq_quantize_q4_cuda on the GPU (the
// same bits). The source hash, which the header holds, is taken by a second thread
// over the same tensors meanwhile and patched into the header before the commit.
// The output is written atomically.
#include "mmdit/quantize_file.h"

#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"

typedef struct {
    double err[SD_QK_COUNT], ref[SD_QK_COUNT];
    int64_t count[SD_QK_COUNT];
} error_report;

// The source hash (mmdit/base_model.h) on its own thread.
typedef struct {
    const sq_safetensors *st;
    bool single_file;
    char hex[65];
} hash_job;

static void *hash_thread(void *p) {
    hash_job *j = p;
    sd_base_source_sha256(j->st, j->single_file, j->hex);
    return NULL;
}

// The first element of n (F32, BF16 or F16) that is inf or NaN (all exponent bits
// set), or -1; on all threads. Read through memcpy: the data need not be aligned.
static int64_t first_nonfinite(const void *data, sq_dtype dt, int64_t n) {
    const char *p = data;
    int64_t first = n;
    if (dt == SQ_F32) {
#pragma omp parallel for reduction(min : first) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u && i < first) first = i;
        }
    } else {
        uint16_t mask = dt == SQ_BF16 ? 0x7f80u : 0x7c00u;
#pragma omp parallel for reduction(min : first) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            uint16_t u;
            memcpy(&u, p + 2 * i, 2);
            if ((u & mask) == mask && i < first) first = i;
        }
    }
    return first < n ? first : -1;
}

static float value_at(const void *data, sq_dtype dt, int64_t i) {
    float v;
    sq_convert_to_f32(&v, (const char *)data + i * (dt == SQ_F32 ? 4 : 2), dt, 1);
    return v;
}

// CPU seconds (user + system) the process has used, all threads.
static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

// The process's peak resident set (VmHWM), in bytes; 0 where /proc is missing.
static int64_t peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
    fclose(f);
    return (int64_t)kb * 1024;
}

int sd_quantize_checkpoint(const char *model, const char *out_path, int group, bool quiet) {
    sd_quantize_options o = {.quiet = quiet, .device = SQ_DEVICE_AUTO};
    return sd_quantize_checkpoint_ex(model, out_path, group, &o, NULL);
}

int sd_quantize_checkpoint_ex(const char *model, const char *out_path, int group, const sd_quantize_options *opt,
                              sd_quantize_stats *stats) {
    bool quiet = opt->quiet;
    bool gpu = opt->device == SQ_DEVICE_CUDA || (opt->device == SQ_DEVICE_AUTO && sq_cuda_device_count() > 0);
    if (gpu && sq_cuda_device_count() == 0) return sq_errorf("quantize: --device cuda, but no CUDA GPU is available");
    double t0 = sq_time_now(), cpu0 = cpu_seconds();
    if (stats) memset(stats, 0, sizeof *stats);
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
    float *scales = NULL;
    uint8_t *codes = NULL;
    sq_st_writer *w = NULL;
    char *config_text = NULL;
    pthread_t hasher;
    bool hashing = false;
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
    codes = malloc((size_t)max_q_numel / 2 + 1);
    scales = malloc((size_t)max_q_numel / (size_t)group * sizeof(float) + sizeof(float));
    if (!codes || !scales) { sq_errorf("out of host memory for a %lld-element tensor", (long long)max_q_numel); goto done; }

    size_t config_len = 0;
    if (!single_file && sq_read_file(config_path, &config_text, &config_len) != SQ_OK) goto done;
    // The hash goes into the header, which is written before the data: a placeholder
    // of the same length now, the hash (taken meanwhile) patched in before the commit.
    char placeholder[65], group_s[16];
    memset(placeholder, '0', 64);
    placeholder[64] = 0;
    snprintf(group_s, sizeof group_s, "%d", group);
    sq_st_kv meta[6] = {{"sd_qzo.format", SD_Q4_FORMAT},
                        {"sd_qzo.group_size", group_s},
                        {"sd_qzo.source_sha256", placeholder},
                        {"sd_qzo.layout", single_file ? "single-file" : "diffusers"},
                        {"sd_qzo.source", model},
                        {"sd_qzo.config", config_text ? config_text : "{}"}};
    if (sq_st_writer_begin(&w, out_path, desc, nout, meta, 6) != SQ_OK) goto done;

    error_report rep;
    memset(&rep, 0, sizeof rep);
    hash_job hj = {.st = st, .single_file = single_file};
    if (pthread_create(&hasher, NULL, hash_thread, &hj) != 0) { sq_errorf("cannot start the hashing thread"); goto done; }
    hashing = true;
    char where[64];
    if (gpu) snprintf(where, sizeof where, "cuda");
    else snprintf(where, sizeof where, "cpu, %d threads", sq_quantize_q4_threads());
    sq_progress prog;
    if (!quiet) sq_progress_begin(&prog, "quantize (MB)", total_bytes / 1000000);
    int64_t done_bytes = 0;
    const sq_st_entry *prev = NULL;
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!sd_base_keep_tensor(e->name, single_file)) continue;
        for (int j = i + 1; j < n; j++)   // the next kept tensor is read ahead meanwhile
            if (sd_base_keep_tensor(sq_st_at(st, j)->name, single_file)) { sq_st_entry_prefetch(st, sq_st_at(st, j)); break; }
        sd_qlayer_kind kind;
        if ((e->dtype == SQ_F32 || e->dtype == SQ_BF16 || e->dtype == SQ_F16) &&
            sd_mmdit_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            int64_t numel = e->shape[0] * e->shape[1];
            int64_t bad = first_nonfinite(e->data, e->dtype, numel);
            if (bad >= 0) {   // a NaN would become a NaN scale, trained on silently
                sq_errorf("%s: tensor '%s' holds a non-finite value (%g at element %lld): the model file is damaged",
                          weights, e->name, (double)value_at(e->data, e->dtype, bad), (long long)bad);
                goto done;
            }
            double err = 0, ref = 0;
            if (gpu) {
                if (sq_quantize_q4_cuda(e->data, e->dtype, e->shape[0], e->shape[1], group, codes, scales, &err, &ref) !=
                    SQ_OK) {
                    sq_error_context("quantising %s on the GPU", e->name);
                    goto done;
                }
            } else {
                err = sq_quantize_q4_src(e->data, e->dtype, e->shape[0], e->shape[1], group, codes, scales, &ref);
            }
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
        // the previous tensor's pages go (the hasher may still be on this one)
        if (prev) sq_st_entry_release(st, prev);
        prev = e;
        done_bytes += (int64_t)e->nbytes;
        if (!quiet) sq_progress_update(&prog, done_bytes / 1000000, where);
    }
    if (prev) sq_st_entry_release(st, prev);
    if (!quiet) sq_progress_end(&prog);
    pthread_join(hasher, NULL);
    hashing = false;
    if (sq_st_writer_patch_metadata(w, "sd_qzo.source_sha256", hj.hex) != SQ_OK) {
        w = NULL;   // freed
        goto done;
    }
    rc = sq_st_writer_commit(w);
    w = NULL;
    if (rc != SQ_OK) goto done;
    double seconds = sq_time_now() - t0, cpu = cpu_seconds() - cpu0;
    int64_t peak = peak_rss_bytes();
    if (stats) *stats = (sd_quantize_stats){.seconds = seconds, .bytes_in = total_bytes, .peak_rss_bytes = peak,
                                            .on_gpu = gpu, .threads = gpu ? 0 : sq_quantize_q4_threads(),
                                            .cpu_seconds = cpu};
    if (!quiet) {
        printf("quantised %d linear layers to int4 (group %d) -> %s\n", nq, group, out_path);
        printf("%.1f s for %.2f GB read (%.0f MB/s) on %s (CPU time %.1f s, hashing included); peak host memory "
               "%.2f GiB (resident set)\n", seconds, total_bytes / 1e9, total_bytes / 1e6 / (seconds > 0 ? seconds : 1), where,
               cpu, peak / 1073741824.0);
        printf("%-18s %7s %14s\n", "layer type", "layers", "rel RMS error");
        for (int k = 0; k < SD_QK_COUNT; k++)
            if (rep.count[k])
                printf("%-18s %7lld %14.4f\n", sd_qlayer_kind_name((sd_qlayer_kind)k), (long long)rep.count[k],
                       sqrt(rep.err[k] / (rep.ref[k] > 0 ? rep.ref[k] : 1)));
    }
done:
    if (hashing) pthread_join(hasher, NULL);
    if (w) sq_st_writer_abort(w);
    for (int i = 0; names && i < n * 2; i++) free(names[i]);
    free(names);
    free(desc);
    free(codes);
    free(scales);
    free(config_text);
    sq_st_close(st);
    return rc;
}
