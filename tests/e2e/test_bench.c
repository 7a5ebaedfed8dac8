// tests/e2e/test_bench.c: `sd-qzo bench --weights PATH` on the tiny pipeline fixture
// (CPU): it must load the real MMDiT (its config, not a preset's, in the JSON), the
// pipeline's VAE and its text encoders, and report positive times; a bad --weights path is a one-line
// error naming it, and --config (the old spelling of --preset) beside --weights is
// reported as ignored.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

// Runs cmd with stderr folded into stdout; returns the exit status, output in *out.
static int run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    *out = NULL;
    if (!p) return -1;
    size_t cap = 1 << 16, n = 0, r;
    char *buf = calloc(cap, 1);
    while (buf && (r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1 << 16, 1);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

// The number after "key": at or after `from` in json; -1 when absent.
static double number_after(const char *json, const char *from, const char *key) {
    const char *s = from ? strstr(json, from) : json;
    if (!s) return -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    s = strstr(s, pat);
    return s ? atof(s + strlen(pat)) : -1;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_bench SD_QZO_BINARY SOURCE_ROOT\n"); return 1; }
    char json_path[64], cmd[2048], *out = NULL;
    snprintf(json_path, sizeof json_path, "/tmp/sq-e2e-bench-%ld.json", (long)getpid());
    unlink(json_path);
    snprintf(cmd, sizeof cmd, "'%s' bench --device cpu --weights '%s/tests/fixtures/pipeline/tiny' --resolution 64 "
             "--steps 1 --warmup 0 --group-size 32 --what all --json '%s' 2>&1", argv[1], argv[2], json_path);
    int rc = run(cmd, &out);
    printf("%s", out ? out : "");
    TU_CHECK(rc == 0, "bench --weights tiny exits 0 (got %d)", rc);
    free(out);
    char *js = slurp(json_path);
    TU_CHECK(js != NULL, "bench wrote %s", json_path);
    if (js) {
        printf("%s", js);
        TU_CHECK(strstr(js, "\"timer\": \"wall\""), "the CPU times with the host clock");
        TU_CHECK(number_after(js, "\"mmdit\"", "hidden") == 32, "hidden size of the tiny model (32), not a preset's");
        TU_CHECK(number_after(js, "\"mmdit\"", "layers") == 2, "2 layers, the tiny model's");
        TU_CHECK(number_after(js, "\"mmdit\"", "group") == 32, "quantised at --group-size 32");
        TU_CHECK(number_after(js, "\"mmdit\"", "trainable_scales") > 0, "the dense model was quantised to int4");
        TU_CHECK(number_after(js, "\"mmdit\"", "tflop_per_forward") > 0, "FLOP count from the loaded config");
        TU_CHECK(number_after(js, "\"forward_ms\"", "median") > 0 && number_after(js, "\"forward_ms\"", "min") > 0,
                 "positive forward times");
        TU_CHECK(number_after(js, "\"qzo_step_ms\"", "median") > 0, "positive QZO step time");
        TU_CHECK(strstr(js, "\"weights\": \"pipeline\""), "the pipeline's VAE, not a synthetic one");
        TU_CHECK(number_after(js, "\"vae\"", "encode_ms") > 0 && number_after(js, "\"vae\"", "decode_ms") > 0,
                 "positive VAE times");
        TU_CHECK(number_after(js, "\"text\"", "encode_ms") > 0 && number_after(js, "\"text\"", "prompts_per_s") > 0,
                 "positive text-encoder times");
        TU_CHECK(number_after(js, "\"text\"", "tokens") == 333, "77 CLIP + 256 T5 tokens of context");
        TU_CHECK(strstr(js, "\"ok\": true"), "ok: true");
        free(js);
    }
    unlink(json_path);

    const char *bad = "/nonexistent/sq-bench-weights";
    snprintf(cmd, sizeof cmd, "'%s' bench --device cpu --config medium --weights %s --resolution 64 --steps 1 2>&1",
             argv[1], bad);
    rc = run(cmd, &out);
    printf("%s", out ? out : "");
    TU_CHECK(rc != 0, "a bad --weights path fails");
    if (out) {
        const char *e = strstr(out, "error:");
        const char *nl = e ? strchr(e, '\n') : NULL, *named = e ? strstr(e, bad) : NULL;
        TU_CHECK(named && nl && named < nl, "the error's line names the path");
        TU_CHECK(e && strstr(e + 1, "error:") == NULL, "one error line");
        TU_CHECK(strstr(out, "--preset medium is ignored"), "--config (--preset) beside --weights is reported as ignored");
        free(out);
    }
    // --what text with synthetic weights has no tokenizers to use
    snprintf(cmd, sizeof cmd, "'%s' bench --device cpu --what text --steps 1 2>&1", argv[1]);
    rc = run(cmd, &out);
    printf("%s", out ? out : "");
    TU_CHECK(rc != 0 && out && strstr(out, "needs --encoders DIR"), "synthetic --what text without --encoders is refused");
    free(out);
    return tu_finish("test_bench");
}
