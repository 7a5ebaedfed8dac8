// tests/bad_input/test_bad_gguf.c: malformed GGUF files (core/gguf.h) and GGUFs
// that are not an SD3.5 MMDiT (mmdit/gguf_base.h) must be refused with one clear
// line naming the file, never a crash or a read past the mapping (this suite also
// runs under ASan + UBSan). Files are built byte by byte, or cut from the good
// fixture tests/fixtures/gguf/tiny_q4_0.gguf. With the sd-qzo binary as argv[1],
// `sd-qzo export --model BAD.gguf` also exits non-zero with one error line and
// leaves the output folder uncreated.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"
#include "mmdit/gguf_base.h"
#include "tests/test_util.h"

static char dir[256];

typedef struct {
    uint8_t b[4096];
    size_t n;
} bytes;

static void u32(bytes *x, uint32_t v) { for (int i = 0; i < 4; i++) x->b[x->n++] = (uint8_t)(v >> (8 * i)); }
static void u64(bytes *x, uint64_t v) { for (int i = 0; i < 8; i++) x->b[x->n++] = (uint8_t)(v >> (8 * i)); }
static void str(bytes *x, const char *s) {
    u64(x, strlen(s));
    memcpy(x->b + x->n, s, strlen(s));
    x->n += strlen(s);
}
static void head(bytes *x, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    x->n = 0;
    memcpy(x->b, "GGUF", 4);
    x->n = 4;
    u32(x, version);
    u64(x, n_t);
    u64(x, n_kv);
}
// one 1-D F32 tensor info (name "t", ne0 elements, at offset)
static void info(bytes *x, const char *name, uint32_t type, uint64_t ne0, uint64_t offset) {
    str(x, name);
    u32(x, 1);
    u64(x, ne0);
    u32(x, type);
    u64(x, offset);
}
static void pad_data(bytes *x, size_t data) {
    while (x->n % 32) x->b[x->n++] = 0;
    for (size_t i = 0; i < data; i++) x->b[x->n++] = (uint8_t)(i * 7 + 1);
}

static void save(const char *name, const void *data, size_t n, char *path) {
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void expect_refused(const char *what, const char *path, const char *must_contain, bool as_base) {
    sq_error_clear();
    int rc;
    if (as_base) {
        sq_safetensors *st = NULL;
        rc = sd_gguf_base_open(path, &st, true, NULL);
        if (st) sq_st_close(st);
    } else {
        sq_gguf *g = NULL;
        rc = sq_gguf_open(&g, path);
        if (g) sq_gguf_close(g);
    }
    const char *msg = sq_error_message();
    const char *base = strrchr(path, '/') + 1;
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    TU_CHECK(strstr(msg, base) != NULL, "%s: message does not name the file: %s", what, msg);
    TU_CHECK(!must_contain || strstr(msg, must_contain), "%s: message lacks '%s': %s", what, must_contain, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-36s -> %s\n", what, msg);
}

static uint8_t *read_fixture(size_t *n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/gguf/tiny_q4_0.gguf", tu_fixtures_dir());
    FILE *f = fopen(p, "rb");
    SQ_CHECK(f, "fixture %s", p);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    SQ_CHECK(fread(b, 1, *n, f) == *n, "read %s", p);
    fclose(f);
    return b;
}

static char cli_case[512];

static void cases(void) {
    char p[512];
    bytes x;
    save("empty.gguf", "", 0, p);
    expect_refused("empty file", p, "too short", false);
    save("magic.gguf", "GGUX\3\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24, p);
    expect_refused("bad magic", p, "not a GGUF file", false);
    strcpy(cli_case, p);
    head(&x, 1, 0, 0);
    save("v1.gguf", x.b, x.n, p);
    expect_refused("version 1", p, "version 1", false);
    head(&x, 4, 0, 0);
    save("v4.gguf", x.b, x.n, p);
    expect_refused("version 4", p, "version 4", false);
    head(&x, 0x03000000u, 0, 0);
    save("be.gguf", x.b, x.n, p);
    expect_refused("big-endian", p, "big-endian", false);
    head(&x, 3, 0, 0);
    save("hdr_cut.gguf", x.b, 12, p);
    expect_refused("header cut short", p, "truncated", false);
    head(&x, 3, 1ull << 60, 0);
    save("n_tensors.gguf", x.b, x.n, p);
    expect_refused("absurd tensor count", p, "cannot fit", false);
    head(&x, 3, 0, 1ull << 60);
    save("n_kv.gguf", x.b, x.n, p);
    expect_refused("absurd key/value count", p, "cannot fit", false);
    head(&x, 3, 0, 1);
    u64(&x, 1ull << 62);
    pad_data(&x, 64);
    save("keylen.gguf", x.b, x.n, p);
    expect_refused("absurd key length", p, "past the end", false);
    head(&x, 3, 0, 1);
    str(&x, "k");
    u32(&x, 8);
    u64(&x, 1ull << 40);
    save("strlen.gguf", x.b, x.n, p);
    expect_refused("absurd string value length", p, "past the end", false);
    head(&x, 3, 0, 1);
    str(&x, "k");
    u32(&x, 9);
    u32(&x, 4);
    u64(&x, 1ull << 61);
    save("arrlen.gguf", x.b, x.n, p);
    expect_refused("absurd array length", p, "past the end", false);
    head(&x, 3, 0, 1);
    str(&x, "k");
    u32(&x, 77);
    save("valtype.gguf", x.b, x.n, p);
    expect_refused("unknown value type", p, "value type 77", false);
    head(&x, 3, 0, 1);
    str(&x, "general.alignment");
    u32(&x, 4);
    u32(&x, 3);
    save("align3.gguf", x.b, x.n, p);
    expect_refused("alignment 3", p, "power of two", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 0, 4, 0);
    pad_data(&x, 8);
    save("oob.gguf", x.b, x.n, p);
    expect_refused("tensor past the data block", p, "outside the data block", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 0, 4, 1ull << 62);
    pad_data(&x, 16);
    save("oob_far.gguf", x.b, x.n, p);
    expect_refused("tensor offset 2^62", p, "outside the data block", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 13, 256, 0);
    pad_data(&x, 176);
    save("q5k.gguf", x.b, x.n, p);
    expect_refused("unsupported type (Q5_K)", p, "ggml type 13", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 99, 4, 0);
    pad_data(&x, 16);
    save("type99.gguf", x.b, x.n, p);
    expect_refused("unknown type 99", p, "ggml type 99", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 0, 1ull << 50, 0);
    pad_data(&x, 16);
    save("dims.gguf", x.b, x.n, p);
    expect_refused("absurd dimension", p, "absurd", false);
    head(&x, 3, 1, 0);
    str(&x, "t");
    u32(&x, 9);
    pad_data(&x, 64);
    save("ndims.gguf", x.b, x.n, p);
    expect_refused("9 dimensions", p, "dimensions", false);
    head(&x, 3, 1, 0);
    info(&x, "t", 2, 48, 0);
    pad_data(&x, 64);
    save("partial_block.gguf", x.b, x.n, p);
    expect_refused("Q4_0 row of 48", p, "block", false);
    head(&x, 3, 2, 0);
    info(&x, "t", 0, 4, 0);
    info(&x, "u", 0, 4, 8);
    pad_data(&x, 64);
    save("misaligned.gguf", x.b, x.n, p);
    expect_refused("misaligned offset", p, "alignment", false);
    head(&x, 3, 2, 0);
    info(&x, "t", 0, 4, 0);
    info(&x, "t", 0, 4, 32);
    pad_data(&x, 64);
    save("dup.gguf", x.b, x.n, p);
    expect_refused("tensor twice", p, "twice", false);
    // well-formed GGUFs that are not an SD3.5 MMDiT
    head(&x, 3, 1, 1);
    str(&x, "general.architecture");
    u32(&x, 8);
    str(&x, "flux");
    info(&x, "t", 0, 4, 0);
    pad_data(&x, 16);
    save("flux.gguf", x.b, x.n, p);
    expect_refused("architecture flux", p, "not sd3", true);
    head(&x, 3, 1, 0);
    info(&x, "pos_embed", 0, 4, 0);
    pad_data(&x, 16);
    save("no_blocks.gguf", x.b, x.n, p);
    expect_refused("no joint blocks", p, "not an SD3.5 MMDiT", true);
    // the good fixture, cut short and with a tensor type changed
    size_t n;
    uint8_t *good = read_fixture(&n);
    save("cut.gguf", good, n / 2, p);
    expect_refused("file cut in half", p, "outside the data block", false);
    save("cut_header.gguf", good, 200, p);
    expect_refused("file cut in the header", p, "truncated", false);
    save("cut_infos.gguf", good, 1500, p);
    expect_refused("file cut in the tensor infos", p, "truncated", false);
    free(good);
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "/tmp/sq_bad_gguf_XXXXXX");
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    cases();
    if (argc > 1) {
        // the command line: one error line, non-zero exit, no output folder made
        char cmd[2048], *out = NULL, outdir[400];
        snprintf(outdir, sizeof outdir, "%s/out", dir);
        snprintf(cmd, sizeof cmd, "'%s' export --model '%s' --scales '%s/export/scales.safetensors' --out '%s' --format gguf 2>&1",
                 argv[1], cli_case, tu_fixtures_dir(), outdir);
        int rc = tu_run(cmd, &out);
        TU_CHECK(rc != 0, "export of a bad GGUF exited 0");
        int lines = 0;
        for (const char *c = out ? out : ""; *c; c++) lines += *c == '\n';
        TU_CHECK(out && strstr(out, "magic.gguf") && lines == 1, "CLI error: %s", out ? out : "(none)");
        struct stat st;
        TU_CHECK(stat(outdir, &st) != 0, "output folder created for a bad base");
        printf("sd-qzo export --model magic.gguf -> %s", out ? out : "\n");
        free(out);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "cleanup");
    return tu_finish("bad_gguf");
}
