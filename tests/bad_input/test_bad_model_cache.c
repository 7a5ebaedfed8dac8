// tests/bad_input/test_bad_model_cache.c: a broken transformer met while `train`
// quantises --model into its cache: the error names the user's model, never the
// cache file, and no int4 copy is left in the cache for a later run to reuse.
//   1. a tensor missing (renamed in the header): found when the int4 copy loads;
//   2. a NaN among the weights: refused by the quantiser, naming the tensor.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/e2e/train_fixture.h"
#include "tests/test_util.h"

static char *st_path(const char *model) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/transformer/diffusion_pytorch_model.safetensors", model);
    return p;
}

static void copy_model(const char *dst) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/pipeline/tiny' '%s'", dst, tu_fixtures_dir(), dst);
    SQ_CHECK(system(cmd) == 0, "%s", cmd);
}

// Opens a safetensors file for update and reads its JSON header (NUL-terminated,
// *n bytes; the caller frees it); the file is left just past the header.
static char *open_header(const char *file, FILE **f, uint64_t *n) {
    *f = fopen(file, "r+b");
    SQ_CHECK(*f, "open %s", file);
    SQ_CHECK(fread(n, 8, 1, *f) == 1, "read");
    char *h = malloc(*n + 1);
    SQ_CHECK(h && fread(h, 1, *n, *f) == *n, "read header");
    h[*n] = 0;
    return h;
}

// Renames tensor `name` in the header (same length: the last letter becomes 'X').
static void rename_tensor(const char *file, const char *name) {
    FILE *f;
    uint64_t n;
    char *h = open_header(file, &f, &n);
    char quoted[256];
    snprintf(quoted, sizeof quoted, "\"%s\"", name);
    char *at = strstr(h, quoted);
    SQ_CHECK(at, "%s not in the header", name);
    at[strlen(quoted) - 2] = 'X';
    SQ_CHECK(fseek(f, 8, SEEK_SET) == 0 && fwrite(h, 1, n, f) == n && fclose(f) == 0, "write");
    free(h);
}

// Writes a NaN over the first element of F32 tensor `name`.
static void poison_tensor(const char *file, const char *name) {
    FILE *f;
    uint64_t n;
    char *h = open_header(file, &f, &n);
    cJSON *j = cJSON_Parse(h);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, name);
    SQ_CHECK(t && !strcmp(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, "F32"), "%s: F32", name);
    long off = (long)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "data_offsets"), 0)->valuedouble;
    uint32_t nan_bits = 0x7fc00000u;
    SQ_CHECK(fseek(f, 8 + (long)n + off, SEEK_SET) == 0 && fwrite(&nan_bits, 4, 1, f) == 1 && fclose(f) == 0, "write");
    cJSON_Delete(j);
    free(h);
}

static int count_int4(const char *cache) {
    DIR *d = opendir(cache);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strncmp(e->d_name, "mmdit-int4-", 11) == 0;
    if (d) closedir(d);
    return n;
}

static void expect_refused(const char *bin, const char *dir, const char *model, const char *what, const char *want) {
    char cmd[4096], out_dir[1024], cache[1100], *out = NULL;
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s'; '%s' train --model '%s' --images %s/images --captions %s/captions.txt --output %s "
             "--resolution 64 --steps 1 --group-size 32 --t5-max-length 32 --batch-size 2 --device cpu --threads 1",
             out_dir, bin, model, dir, dir, out_dir);
    int rc = tu_run(cmd, &out);
    const char *e = out ? strstr(out, "sd-qzo train: error: ") : NULL;
    char line[2048] = "";
    if (e) snprintf(line, sizeof line, "%.*s", (int)strcspn(e, "\n"), e);
    printf("  %-26s -> %s\n", what, line);
    TU_CHECK(rc == 1 && e, "%s: exit 1 with an error (got %d):\n%s", what, rc, out ? out : "");
    TU_CHECK(strstr(line, model) && strstr(line, want), "%s: the error names %s and says '%s': %s", what, model, want, line);
    TU_CHECK(!strstr(line, "/cache/") && !strstr(line, "mmdit-int4-"), "%s: the error does not name the cache: %s", what, line);
    snprintf(cache, sizeof cache, "%s/cache", out_dir);
    TU_CHECK(count_int4(cache) == 0, "%s: no int4 copy left in %s", what, cache);
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_bad_model_cache SD_QZO_BINARY\n"); return 1; }
    char dir[] = "/tmp/sdqzo_badcache_XXXXXX", model[256];
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    e2e_make_dataset(dir);
    snprintf(model, sizeof model, "%s/model", dir);

    copy_model(model);
    rename_tensor(st_path(model), "transformer_blocks.1.norm1.linear.weight");
    expect_refused(argv[1], dir, model, "a missing tensor", "missing tensor 'transformer_blocks.1.norm1.linear.weight'");

    copy_model(model);
    poison_tensor(st_path(model), "transformer_blocks.0.attn.to_q.weight");
    expect_refused(argv[1], dir, model, "a NaN weight", "'transformer_blocks.0.attn.to_q.weight' holds a non-finite value");

    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "cleanup");
    return tu_finish("bad_model_cache");
}
