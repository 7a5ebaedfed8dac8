// app/bench_quantize.c: `sd-qzo bench --what quantize` (app/bench_quantize.h). The
// synthetic checkpoint is a diffusers transformer folder whose tensor list follows
// the SD3.5 layout of mmdit/config.c's parameter count (checked against
// sd_mmdit_config_params, so the list and the count cannot drift apart); its
// values are Gaussian-like bf16 from a counter-based hash, generated on all threads.
// The quantiser then reads it exactly as `sd-qzo quantize --model DIR` would, right
// after it was written (in the page cache, as a download that just finished).
#include "app/bench_quantize.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "mmdit/quantize_file.h"

#define SHARDS 4

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
} tdesc;

typedef struct {
    tdesc *t;
    int n, cap;
} tlist;

static int add(tlist *l, int ndim, const int64_t *shape, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int add(tlist *l, int ndim, const int64_t *shape, const char *fmt, ...) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        tdesc *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return sq_errorf("out of host memory");
        l->t = t;
        l->cap = cap;
    }
    tdesc *d = &l->t[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->name, sizeof d->name, fmt, ap);
    va_end(ap);
    d->ndim = ndim;
    memcpy(d->shape, shape, sizeof(int64_t) * (size_t)ndim);
    return SQ_OK;
}

#define ADD(l, ...) do { if (add(l, __VA_ARGS__) != SQ_OK) return SQ_FAIL; } while (0)

// A linear layer's weight (out, in) and bias (out).
static int linear(tlist *l, int64_t out, int64_t in, const char *prefix) {
    ADD(l, 2, (int64_t[]){out, in}, "%s.weight", prefix);
    ADD(l, 1, (int64_t[]){out}, "%s.bias", prefix);
    return SQ_OK;
}

// Every tensor of a diffusers SD3Transformer2DModel with config c.
static int tensor_list(const sd_mmdit_config *c, tlist *l) {
    int64_t D = c->hidden, p = c->patch_size, hd = c->head_dim, P = c->pos_embed_max_size;
    char pre[128];
    ADD(l, 3, (int64_t[]){1, P * P, D}, "pos_embed.pos_embed");
    ADD(l, 4, (int64_t[]){D, c->in_channels, p, p}, "pos_embed.proj.weight");
    ADD(l, 1, (int64_t[]){D}, "pos_embed.proj.bias");
    if (linear(l, D, 256, "time_text_embed.timestep_embedder.linear_1") || linear(l, D, D, "time_text_embed.timestep_embedder.linear_2") ||
        linear(l, D, c->pooled_projection_dim, "time_text_embed.text_embedder.linear_1") ||
        linear(l, D, D, "time_text_embed.text_embedder.linear_2") || linear(l, D, c->joint_attention_dim, "context_embedder") ||
        linear(l, 2 * D, D, "norm_out.linear") || linear(l, p * p * c->out_channels, D, "proj_out"))
        return SQ_FAIL;
    for (int i = 0; i < c->num_layers; i++) {
        bool last = i == c->num_layers - 1, dual = c->dual[i];
#define LIN(out, in, name) do { snprintf(pre, sizeof pre, "transformer_blocks.%d.%s", i, name); \
                                if (linear(l, out, in, pre) != SQ_OK) return SQ_FAIL; } while (0)
        LIN((dual ? 9 : 6) * D, D, "norm1.linear");
        LIN((last ? 2 : 6) * D, D, "norm1_context.linear");
        LIN(D, D, "attn.to_q"); LIN(D, D, "attn.to_k"); LIN(D, D, "attn.to_v"); LIN(D, D, "attn.to_out.0");
        LIN(D, D, "attn.add_q_proj"); LIN(D, D, "attn.add_k_proj"); LIN(D, D, "attn.add_v_proj");
        if (!last) LIN(D, D, "attn.to_add_out");
        if (c->qk_norm)
            for (int k = 0; k < 4; k++)
                ADD(l, 1, (int64_t[]){hd}, "transformer_blocks.%d.attn.%s.weight", i,
                    (const char *[]){"norm_q", "norm_k", "norm_added_q", "norm_added_k"}[k]);
        if (dual) {
            LIN(D, D, "attn2.to_q"); LIN(D, D, "attn2.to_k"); LIN(D, D, "attn2.to_v"); LIN(D, D, "attn2.to_out.0");
            if (c->qk_norm) {
                ADD(l, 1, (int64_t[]){hd}, "transformer_blocks.%d.attn2.norm_q.weight", i);
                ADD(l, 1, (int64_t[]){hd}, "transformer_blocks.%d.attn2.norm_k.weight", i);
            }
        }
        LIN(4 * D, D, "ff.net.0.proj"); LIN(D, 4 * D, "ff.net.2");
        if (!last) { LIN(4 * D, D, "ff_context.net.0.proj"); LIN(D, 4 * D, "ff_context.net.2"); }
#undef LIN
    }
    return SQ_OK;
}

static int64_t numel(const tdesc *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// Gaussian-like (sum of three uniforms), std ≈ 0.02, from a hash of (tensor, index).
static inline uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_bf16(uint16_t *dst, int64_t n, uint64_t key, int64_t first) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = mix(key ^ (uint64_t)(first + i));
        float u = (float)(r & 0x1fffff) + (float)((r >> 21) & 0x1fffff) + (float)((r >> 42) & 0x1fffff);
        dst[i] = sq_f32_to_bf16(0.02f * (u / 2097152.0f - 1.5f) * 2.0f);
    }
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return sq_error_errno("%s: cannot create", path);
    bool ok = fputs(text, f) >= 0;
    if (fclose(f) != 0) ok = false;
    return ok ? SQ_OK : sq_error_errno("%s: cannot write", path);
}

// The synthetic folder: SHARDS shards of about equal size, the index and config.json.
static int write_checkpoint(const char *dir, const sd_mmdit_config *c, const tlist *l, int64_t *bytes_out) {
    int64_t total = 0;
    for (int i = 0; i < l->n; i++) total += 2 * numel(&l->t[i]);
    *bytes_out = total;
    int shard_of[4096];
    if (l->n > 4096) return sq_errorf("bench: too many tensors");
    int64_t acc = 0;
    for (int i = 0; i < l->n; i++) {
        shard_of[i] = (int)(acc * SHARDS / total);
        acc += 2 * numel(&l->t[i]);
    }
    const size_t chunk = (size_t)1 << 24;   // elements generated at a time
    uint16_t *buf = malloc(chunk * 2);
    if (!buf) return sq_errorf("out of host memory");
    sq_progress prog;
    sq_progress_begin(&prog, "writing the synthetic bf16 checkpoint (MB)", total / 1000000);
    int64_t done = 0;
    int rc = SQ_OK;
    char path[4400];
    for (int s = 0; s < SHARDS && rc == SQ_OK; s++) {
        sq_st_tensor_desc desc[4096];
        int nd = 0;
        for (int i = 0; i < l->n; i++)
            if (shard_of[i] == s) {
                desc[nd] = (sq_st_tensor_desc){.name = l->t[i].name, .dtype = SQ_BF16, .ndim = l->t[i].ndim};
                memcpy(desc[nd].shape, l->t[i].shape, sizeof l->t[i].shape);
                nd++;
            }
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model-%05d-of-%05d.safetensors", dir, s + 1, SHARDS);
        sq_st_writer *w = NULL;
        sq_st_kv meta[1] = {{"format", "pt"}};
        rc = sq_st_writer_begin(&w, path, desc, nd, meta, 1);
        for (int i = 0; i < l->n && rc == SQ_OK; i++) {
            if (shard_of[i] != s) continue;
            int64_t n = numel(&l->t[i]);
            uint64_t key = mix((uint64_t)i * 0x100000001B3ull);
            for (int64_t o = 0; o < n && rc == SQ_OK; o += (int64_t)chunk) {
                int64_t m = n - o < (int64_t)chunk ? n - o : (int64_t)chunk;
                fill_bf16(buf, m, key, o);
                rc = sq_st_writer_append(w, buf, (size_t)m * 2);
                if (rc != SQ_OK) w = NULL;   // freed on error
                done += 2 * m;
                sq_progress_update(&prog, done / 1000000, NULL);
            }
        }
        if (rc == SQ_OK) rc = sq_st_writer_commit(w);
        else if (w) sq_st_writer_abort(w);
    }
    sq_progress_end(&prog);
    free(buf);
    if (rc != SQ_OK) return rc;
    // the shard index
    size_t cap = (size_t)l->n * 200 + 256, len = 0;
    char *idx = malloc(cap);
    if (!idx) return sq_errorf("out of host memory");
    len += (size_t)snprintf(idx + len, cap - len, "{\"metadata\": {\"total_size\": %lld}, \"weight_map\": {", (long long)total);
    for (int i = 0; i < l->n; i++)
        len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\": \"diffusion_pytorch_model-%05d-of-%05d.safetensors\"",
                                i ? ", " : "", l->t[i].name, shard_of[i] + 1, SHARDS);
    snprintf(idx + len, cap - len, "}}\n");
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    rc = write_text(path, idx);
    free(idx);
    if (rc != SQ_OK) return rc;
    char cfg[4096], dual[1024] = "";
    size_t dl = 0;
    for (int i = 0; i < c->num_layers; i++)
        if (c->dual[i]) dl += (size_t)snprintf(dual + dl, sizeof dual - dl, "%s%d", dl ? ", " : "", i);
    snprintf(cfg, sizeof cfg,
             "{\"_class_name\": \"SD3Transformer2DModel\", \"sample_size\": %d, \"patch_size\": %d, \"in_channels\": %d, "
             "\"num_layers\": %d, \"attention_head_dim\": %d, \"num_attention_heads\": %d, \"joint_attention_dim\": %d, "
             "\"caption_projection_dim\": %d, \"pooled_projection_dim\": %d, \"out_channels\": %d, "
             "\"pos_embed_max_size\": %d, \"dual_attention_layers\": [%s], \"qk_norm\": %s}\n",
             c->sample_size, c->patch_size, c->in_channels, c->num_layers, c->head_dim, c->num_heads,
             c->joint_attention_dim, c->caption_projection_dim, c->pooled_projection_dim, c->out_channels,
             c->pos_embed_max_size, dual, c->qk_norm ? "\"rms_norm\"" : "null");
    snprintf(path, sizeof path, "%s/config.json", dir);
    return write_text(path, cfg);
}

// Byte-for-byte comparison of two files.
static int same_file(const char *a, const char *b, bool *same) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int rc = SQ_OK;
    *same = false;
    if (!fa || !fb) rc = sq_error_errno("%s: cannot open", !fa ? a : b);
    size_t bs = (size_t)1 << 24;
    char *ba = rc == SQ_OK ? malloc(bs) : NULL, *bb = rc == SQ_OK ? malloc(bs) : NULL;
    if (rc == SQ_OK && (!ba || !bb)) rc = sq_errorf("out of host memory");
    if (rc == SQ_OK) {
        *same = true;
        for (;;) {
            size_t na = fread(ba, 1, bs, fa), nb = fread(bb, 1, bs, fb);
            if (na != nb || memcmp(ba, bb, na)) { *same = false; break; }
            if (na < bs) break;
        }
    }
    free(ba);
    free(bb);
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return rc;
}

static void remove_folder(const char *dir, bool outputs) {
    char path[4400];
    for (int s = 0; s < SHARDS; s++) {
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model-%05d-of-%05d.safetensors", dir, s + 1, SHARDS);
        unlink(path);
    }
    const char *other[] = {"diffusion_pytorch_model.safetensors.index.json", "config.json", "int4-cpu.safetensors",
                           "int4-cuda.safetensors"};
    for (int i = 0; i < 4; i++) {
        if (i >= 2 && !outputs) break;
        snprintf(path, sizeof path, "%s/%s", dir, other[i]);
        unlink(path);
    }
    rmdir(dir);
}

// Resets the process's peak resident set (VmHWM), so each run reports its own.
static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

int sq_bench_quantize(sd_mmdit_preset preset, int group, sq_device_request device, int blocks, FILE *json) {
    sd_mmdit_config c;
    sd_mmdit_config_preset(&c, preset);
    if (blocks > 0 && blocks < c.num_layers) c.num_layers = blocks;
    tlist l = {0};
    if (tensor_list(&c, &l) != SQ_OK) { free(l.t); return SQ_FAIL; }
    int64_t params = 0;
    for (int i = 0; i < l.n; i++) params += numel(&l.t[i]);
    if (params != sd_mmdit_config_params(&c)) {
        free(l.t);
        return sq_errorf("bench: the synthetic tensor list holds %lld parameters, the config %lld", (long long)params,
                         (long long)sd_mmdit_config_params(&c));
    }
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/sd-qzo-bench-quantize-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) { free(l.t); return sq_error_errno("%s: cannot create", dir); }
    printf("quantize: a synthetic %d-block SD3.5 transformer (%.2f B parameters, bf16, %d shards) in %s\n",
           c.num_layers, params / 1e9, SHARDS, dir);
    fflush(stdout);
    int64_t bytes = 0;
    double t0 = sq_time_now();
    int rc = write_checkpoint(dir, &c, &l, &bytes);
    double t_write = sq_time_now() - t0;
    free(l.t);
    if (rc == SQ_OK) printf("wrote %.2f GB in %.1f s\n", bytes / 1e9, t_write);
    bool gpu_present = sq_cuda_device_count() > 0;
    if (device == SQ_DEVICE_CUDA && !gpu_present) rc = sq_errorf("bench --what quantize --device cuda: no CUDA GPU");
    bool run_cpu = device != SQ_DEVICE_CUDA, run_gpu = device != SQ_DEVICE_CPU && gpu_present;
    sd_quantize_stats st[2];
    char out[2][4400];
    snprintf(out[0], sizeof out[0], "%s/int4-cpu.safetensors", dir);
    snprintf(out[1], sizeof out[1], "%s/int4-cuda.safetensors", dir);
    for (int d = 0; d < 2 && rc == SQ_OK; d++) {
        if (!(d == 0 ? run_cpu : run_gpu)) continue;
        printf("\nquantize on the %s:\n", d == 0 ? "CPU" : "GPU");
        fflush(stdout);
        reset_peak_rss();
        sd_quantize_options o = {.quiet = false, .device = d == 0 ? SQ_DEVICE_CPU : SQ_DEVICE_CUDA};
        rc = sd_quantize_checkpoint_ex(dir, out[d], group, &o, &st[d]);
    }
    bool same = false;
    if (rc == SQ_OK && run_cpu && run_gpu) rc = same_file(out[0], out[1], &same);
    if (rc == SQ_OK) {
        char head[32];
        snprintf(head, sizeof head, "quantize (G=%d)", group);
        printf("\n%-26s %9s %9s %16s %13s\n", head, "seconds", "MB/s", "peak host memory", "CPU seconds");
        for (int d = 0; d < 2; d++) {
            if (!(d == 0 ? run_cpu : run_gpu)) continue;
            char where[64];
            if (d == 0) snprintf(where, sizeof where, "CPU, %d threads", st[d].threads);
            else snprintf(where, sizeof where, "GPU");
            printf("%-26s %9.1f %9.0f %12.2f GiB %13.1f\n", where, st[d].seconds, bytes / 1e6 / st[d].seconds,
                   st[d].peak_rss_bytes / 1073741824.0, st[d].cpu_seconds);
        }
        if (run_cpu && run_gpu) printf("the CPU's and the GPU's int4 files are %s\n", same ? "identical, byte for byte" : "DIFFERENT");
        if (run_cpu && run_gpu && !same) rc = sq_errorf("bench: the GPU's int4 file differs from the CPU's");
    }
    if (rc == SQ_OK && json) {
        fprintf(json, "  \"quantize\": {\"blocks\": %d, \"group_size\": %d, \"source_bytes\": %lld, \"write_seconds\": %.3f",
                c.num_layers, group, (long long)bytes, t_write);
        for (int d = 0; d < 2; d++)
            if (d == 0 ? run_cpu : run_gpu)
                fprintf(json, ", \"%s\": {\"seconds\": %.3f, \"mb_per_s\": %.1f, \"threads\": %d, \"peak_rss_bytes\": %lld, \"cpu_seconds\": %.1f}",
                        d == 0 ? "cpu" : "cuda", st[d].seconds, bytes / 1e6 / st[d].seconds, st[d].threads,
                        (long long)st[d].peak_rss_bytes, st[d].cpu_seconds);
        fprintf(json, ", \"identical\": %s},\n", run_cpu && run_gpu ? (same ? "true" : "false") : "null");
    }
    remove_folder(dir, true);
    return rc;
}
