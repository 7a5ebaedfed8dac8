// app/cmd_info.c: `sd-qzo info PATH`: what is in a checkpoint. Lists every tensor
// (name, dtype, shape) of a .safetensors file, a sharded index, a directory of
// safetensors, or each component of a diffusers pipeline directory; then totals
// and metadata keys, and the model config where the folder has one.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "app/commands.h"
#include "app/options.h"
#include "core/config.h"
#include "core/error.h"
#include "core/path.h"
#include "core/gguf.h"
#include "core/safetensors.h"
#include "mmdit/config.h"
#include "mmdit/gguf_base.h"

typedef struct {
    char path[4096];
} info_args;

static void defaults(void *p) { memset(p, 0, sizeof(info_args)); }

static const sq_option options[] = {
    {"path", NULL, SQ_OPT_STR, SQ_OPT_STRING(info_args, path), NULL, false,
     "a .safetensors file, a *.safetensors.index.json, a folder of safetensors (diffusers component such as "
     "transformer/), a diffusers pipeline folder (with model_index.json), or a .gguf file; also the bare PATH argument"},
};

static const sq_option_table info_table = {
    .command = "info",
    .usage = "usage: sd-qzo info PATH\n",
    .options = options,
    .count = (int)(sizeof options / sizeof options[0]),
    .struct_size = sizeof(info_args),
    .defaults = defaults,
    .positional = "path",
};

static void print_shape(const sq_st_entry *e) {
    printf("[");
    for (int d = 0; d < e->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)e->shape[d]);
    printf("]");
}

// 8060000000 -> "8.06 billion"
static void human_count(double n, char *buf, size_t size) {
    if (n >= 1e9) snprintf(buf, size, "%.2f billion", n / 1e9);
    else if (n >= 1e6) snprintf(buf, size, "%.2f million", n / 1e6);
    else snprintf(buf, size, "%.0f", n);
}

static void human_bytes(double b, char *buf, size_t size) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, size, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

// Prints the architecture lines of a component's config.json when it has one.
static void print_config(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) return;
    sq_config *c;
    if (sq_config_load(&c, path) != SQ_OK) {
        printf("config: %s\n", sq_error_message());
        return;
    }
    const char *cls = sq_config_string_or(c, "_class_name", "?");
    printf("config: %s (%s)\n", cls, path);
    if (!strcmp(cls, "SD3Transformer2DModel")) {
        sd_mmdit_config mc;
        if (sd_mmdit_config_load(&mc, path) == SQ_OK) {
            printf("  ");
            sd_mmdit_print_config(&mc, stdout);
        } else {
            printf("  %s\n", sq_error_message());
        }
    }
    sq_config_free(c);
}

// A GGUF: its tensors as stored (ggml type, dims in PyTorch order), totals, keys.
static int list_gguf(const char *path) {
    sq_gguf *g;
    if (sq_gguf_open(&g, path) != SQ_OK) return SQ_FAIL;
    const char *arch = sq_gguf_get_string(g, "general.architecture");
    printf("%s: GGUF version %u, alignment %u, architecture %s\n", path, sq_gguf_version(g), sq_gguf_alignment(g),
           arch ? arch : "(none)");
    double params = 0, bytes = 0;
    for (int i = 0; i < sq_gguf_tensor_count(g); i++) {
        const sq_gguf_tensor *t = sq_gguf_tensor_at(g, i);
        double n = 1;
        printf("  %-60s %-5s [", t->name, sq_ggml_type_name(t->type));
        for (int d = t->n_dims - 1; d >= 0; d--) {
            printf(d < t->n_dims - 1 ? ", %lld" : "%lld", (long long)t->ne[d]);
            n *= (double)t->ne[d];
        }
        printf("]\n");
        params += n;
        bytes += (double)t->nbytes;
    }
    char pc[64], bc[64];
    human_count(params, pc, sizeof pc);
    human_bytes(bytes, bc, sizeof bc);
    printf("%d tensors, %s parameters, %s\n", sq_gguf_tensor_count(g), pc, bc);
    for (int i = 0; i < sq_gguf_kv_count(g); i++) printf("  key: %s\n", sq_gguf_kv_key(g, i));
    sq_gguf_close(g);
    return SQ_OK;
}

static int list_one(const char *path, const char *title, int64_t *total_params, double *total_bytes) {
    sq_safetensors *st;
    if (sq_st_open(&st, path) != SQ_OK) return SQ_FAIL;
    int64_t params = 0;
    double bytes = 0;
    if (title) printf("== %s ==\n", title);
    for (int i = 0; i < sq_st_count(st); i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        int64_t n = sq_shape_numel(e->ndim, e->shape);
        params += n;
        bytes += (double)e->nbytes;
        printf("%-64s %-5s ", e->name, sq_dtype_to_safetensors(e->dtype));
        print_shape(e);
        printf("\n");
    }
    char hb[32], hc[32];
    human_bytes(bytes, hb, sizeof hb);
    human_count((double)params, hc, sizeof hc);
    printf("tensors: %d, parameters: %lld (%s), bytes: %.0f (%s), files: %d\n", sq_st_count(st), (long long)params, hc,
           bytes, hb, sq_st_file_count(st));
    if (sq_st_metadata_count(st)) {
        printf("metadata:");
        for (int i = 0; i < sq_st_metadata_count(st); i++) printf(" %s", sq_st_metadata_key(st, i));
        printf("\n");
    }
    if (sq_is_dir(path)) print_config(path);
    *total_params += params;
    *total_bytes += bytes;
    sq_st_close(st);
    return SQ_OK;
}

int sq_cmd_info(int argc, char **argv) {
    info_args a;
    bool help;
    defaults(&a);
    if (sq_options_parse(&info_table, &a, argc, argv, &help, NULL) != SQ_OK) return SQ_FAIL;
    if (help) {
        sq_options_usage(&info_table, stdout);
        return SQ_OK;
    }
    if (!a.path[0]) return sq_errorf("expected exactly one PATH (sd-qzo info --help)");
    const char *path = a.path;
    int64_t params = 0;
    double bytes = 0;
    char index[4200];
    snprintf(index, sizeof index, "%s/model_index.json", path);
    struct stat st;
    if (sq_is_dir(path) && stat(index, &st) == 0) {
        // a pipeline: every component folder that holds safetensors
        sq_config *mi;
        if (sq_config_load(&mi, index) != SQ_OK) return SQ_FAIL;
        printf("diffusers pipeline: %s (%s)\n", path, sq_config_string_or(mi, "_class_name", "?"));
        int listed = 0;
        for (const cJSON *it = ((const cJSON *)sq_config_json(mi))->child; it; it = it->next) {
            if (!cJSON_IsArray(it) || it->string[0] == '_') continue;
            char sub[4400];
            snprintf(sub, sizeof sub, "%s/%s", path, it->string);
            if (!sq_is_dir(sub)) continue;
            sq_safetensors *probe;
            if (sq_st_open(&probe, sub) != SQ_OK) continue;   // tokenizers, schedulers: nothing to list
            sq_st_close(probe);
            if (list_one(sub, it->string, &params, &bytes) != SQ_OK) { sq_config_free(mi); return SQ_FAIL; }
            listed++;
        }
        sq_config_free(mi);
        char hb[32];
        human_bytes(bytes, hb, sizeof hb);
        printf("pipeline total: %d components, parameters: %lld, bytes: %.0f (%s)\n", listed, (long long)params, bytes, hb);
        return SQ_OK;
    }
    if (!sq_is_dir(path) && sd_is_gguf_path(path)) return list_gguf(path);
    return list_one(path, NULL, &params, &bytes);
}
