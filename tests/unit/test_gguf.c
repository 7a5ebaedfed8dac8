// tests/unit/test_gguf.c: core/gguf.h and mmdit/gguf_base.h against the gguf Python
// package (fixtures of tools/make_gguf_fixtures.py in tests/fixtures/gguf/):
// 1. blocks.gguf: version, alignment 64, key/values, dims, and every type sd-qzo
//    reads (F32, F16, BF16, Q4_0, Q8_0, Q4_K) dequantised as gguf.quants.dequantize;
// 2. our writer: a file with Q4_0/F16/F32 tensors and key/values reads back byte
//    for byte; a short or overlong append leaves no file behind;
// 3. the tiny MMDiT as a Q4_0 GGUF opens as an int4 base at group 32 whose
//    scales ⊙ codes are the values the fixture computed with mmdit/gguf_base.h's
//    rule (exactly: codes q - 8, scale d, negative d kept), with the same count of
//    negative-scale blocks; as a Q8_0 GGUF it
//    opens as a dense base holding gguf's dequantised values.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/gguf.h"
#include "core/safetensors.h"
#include "kernels/quant.h"
#include "mmdit/base_model.h"
#include "mmdit/gguf_base.h"
#include "tests/test_util.h"

static void test_blocks(void) {
    char p[1024], e[1024];
    snprintf(p, sizeof p, "%s/gguf/blocks.gguf", tu_fixtures_dir());
    snprintf(e, sizeof e, "%s/gguf/blocks_expected.safetensors", tu_fixtures_dir());
    sq_gguf *g;
    sq_safetensors *ex;
    TU_CHECK(sq_gguf_open(&g, p) == SQ_OK, "open: %s", sq_error_message());
    TU_CHECK(sq_st_open(&ex, e) == SQ_OK, "open expected: %s", sq_error_message());
    if (!g || !ex) return;
    TU_CHECK(sq_gguf_version(g) == 3 && sq_gguf_alignment(g) == 64, "version %u alignment %u", sq_gguf_version(g),
             sq_gguf_alignment(g));
    const char *arch = sq_gguf_get_string(g, "general.architecture");
    TU_CHECK(arch && !strcmp(arch, "sd3"), "architecture %s", arch ? arch : "(null)");
    int64_t num = 0;
    TU_CHECK(sq_gguf_get_int(g, "sd_qzo.number", &num) && num == 12345, "int kv %lld", (long long)num);
    TU_CHECK(!sq_gguf_get_int(g, "sd_qzo.test", &num) && !sq_gguf_get_string(g, "nope"), "kv types");
    const sq_gguf_tensor *t3 = sq_gguf_find(g, "t.3d");
    TU_CHECK(t3 && t3->n_dims == 3 && t3->ne[0] == 32 && t3->ne[1] == 3 && t3->ne[2] == 2, "3-D dims");
    const char *names[] = {"t.f32", "t.f16", "t.bf16", "t.q4_0", "t.q8_0", "t.q4_k", "t.3d"};
    const uint32_t types[] = {SQ_GGML_F32, SQ_GGML_F16, SQ_GGML_BF16, SQ_GGML_Q4_0, SQ_GGML_Q8_0, SQ_GGML_Q4_K, SQ_GGML_F32};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const sq_gguf_tensor *t = sq_gguf_find(g, names[i]);
        const sq_st_entry *x = sq_st_find(ex, names[i]);
        TU_CHECK(t && x, "tensor %s present", names[i]);
        if (!t || !x) continue;
        TU_CHECK(t->type == types[i], "%s type %s", names[i], sq_ggml_type_name(t->type));
        TU_CHECK(((uintptr_t)t->data - (uintptr_t)sq_gguf_tensor_at(g, 0)->data) % 64 == 0, "%s aligned", names[i]);
        int64_t n = (int64_t)(x->nbytes / 4);
        float *got = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
        tu_poison(got, n);
        sq_convert_to_f32(want, x->data, SQ_F32, n);
        TU_CHECK(sq_ggml_dequantize(t->type, t->data, n, got) == SQ_OK, "dequantise %s", names[i]);
        double err = tu_rel_err(got, want, n);
        bool nonzero = false;
        for (int64_t j = 0; j < n; j++) nonzero |= want[j] != 0;
        TU_CHECK(nonzero && err <= 1e-6, "%s: rel err %.3g vs gguf.quants.dequantize", names[i], err);
        free(got);
        free(want);
    }
    sq_st_close(ex);
    sq_gguf_close(g);
}

static void test_writer(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/sq_test_gguf_%ld.gguf", (long)getpid());
    uint8_t q4[2 * 18], f16[64 * 2];
    float f32[5] = {1.5f, -2.25f, 3.0f, 0.125f, -7.0f};
    for (size_t i = 0; i < sizeof q4; i++) q4[i] = (uint8_t)(i * 37 + 11);
    for (size_t i = 0; i < sizeof f16; i++) f16[i] = (uint8_t)(i * 13 + 5);
    q4[1] = 0x3c;   // keep the fp16 scales finite
    q4[19] = 0x3c;
    sq_gguf_tensor_desc d[3] = {{"a.q4", SQ_GGML_Q4_0, 2, {32, 2}},
                                {"b.f16", SQ_GGML_F16, 2, {32, 2}},
                                {"c.f32", SQ_GGML_F32, 1, {5}}};
    sq_gguf_kv kv[2] = {{"general.architecture", SQ_GGUF_STRING, "sd3", 0}, {"general.quantization_version", SQ_GGUF_U32, NULL, 2}};
    sq_gguf_writer *w;
    TU_CHECK(sq_gguf_writer_begin(&w, path, d, 3, kv, 2) == SQ_OK, "begin: %s", sq_error_message());
    TU_CHECK(sq_gguf_writer_append(w, q4, 18) == SQ_OK && sq_gguf_writer_append(w, q4 + 18, 18) == SQ_OK &&
                 sq_gguf_writer_append(w, f16, sizeof f16) == SQ_OK && sq_gguf_writer_append(w, f32, sizeof f32) == SQ_OK,
             "append: %s", sq_error_message());
    TU_CHECK(sq_gguf_writer_commit(w) == SQ_OK, "commit: %s", sq_error_message());
    sq_gguf *g;
    TU_CHECK(sq_gguf_open(&g, path) == SQ_OK, "reopen: %s", sq_error_message());
    if (g) {
        const sq_gguf_tensor *a = sq_gguf_find(g, "a.q4"), *b = sq_gguf_find(g, "b.f16"), *c = sq_gguf_find(g, "c.f32");
        TU_CHECK(a && b && c && !memcmp(a->data, q4, sizeof q4) && !memcmp(b->data, f16, sizeof f16) &&
                     !memcmp(c->data, f32, sizeof f32) && a->ne[1] == 2 && c->n_dims == 1,
                 "round trip of the tensors");
        int64_t qv = 0;
        const char *arch = sq_gguf_get_string(g, "general.architecture");
        TU_CHECK(arch && !strcmp(arch, "sd3") && sq_gguf_get_int(g, "general.quantization_version", &qv) && qv == 2, "round trip of kvs");
        sq_gguf_close(g);
    }
    unlink(path);
    // too few bytes: commit fails and nothing is left
    TU_CHECK(sq_gguf_writer_begin(&w, path, d, 3, kv, 2) == SQ_OK, "begin 2");
    TU_CHECK(sq_gguf_writer_append(w, q4, 18) == SQ_OK, "append 2");
    TU_CHECK(sq_gguf_writer_commit(w) != SQ_OK && strstr(sq_error_message(), "nothing saved"), "short commit refused");
    struct stat st;
    TU_CHECK(stat(path, &st) != 0, "no file after a failed commit");
    TU_CHECK(sq_gguf_writer_begin(&w, path, d, 1, kv, 2) == SQ_OK, "begin 3");
    TU_CHECK(sq_gguf_writer_append(w, q4, sizeof q4 + 1) != SQ_OK, "overlong append refused");
    TU_CHECK(stat(path, &st) != 0, "no file after a failed append");
}

static long long count_negative(const float *x, int64_t n) {
    long long c = 0;
    for (int64_t i = 0; i < n; i++) c += x[i] < 0;
    return c;
}

// scales ⊙ codes (or the dense values) of every tensor of the values fixture.
static void check_base(const char *tag, bool int4) {
    char p[1024], v[1024];
    snprintf(p, sizeof p, "%s/gguf/tiny_%s.gguf", tu_fixtures_dir(), tag);
    snprintf(v, sizeof v, "%s/gguf/tiny_%s_values.safetensors", tu_fixtures_dir(), tag);
    sq_safetensors *st, *vals;
    sd_gguf_base_report rep;
    TU_CHECK(sd_gguf_base_open(p, &st, true, &rep) == SQ_OK, "open %s: %s", tag, sq_error_message());
    TU_CHECK(sq_st_open(&vals, v) == SQ_OK, "values: %s", sq_error_message());
    if (!st || !vals) return;
    sd_q4_header h;
    TU_CHECK(sd_q4_header_read(st, p, &h) == SQ_OK && h.quantized == int4 && h.single_file && (!int4 || h.group == 32),
             "%s: header quantized %d group %d", tag, h.quantized, h.group);
    const char *negative = sq_st_metadata(vals, "negative_blocks");
    if (int4) {
        TU_CHECK(negative && rep.negative_blocks == atoll(negative) && rep.negative_blocks > 0 && rep.q4_layers > 0,
                 "%s: %lld blocks with a negative scale, fixture %s", tag, rep.negative_blocks, negative ? negative : "?");
        TU_CHECK(h.source_sha256 && strlen(h.source_sha256) == 64, "source hash");
    }
    int n_q = 0, n_dense = 0;
    long long n_negative = 0;
    for (int i = 0; i < sq_st_count(vals); i++) {
        const sq_st_entry *x = sq_st_at(vals, i);
        int64_t n = sq_shape_numel(x->ndim, x->shape);
        float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        sq_convert_to_f32(want, x->data, SQ_F32, n);
        tu_poison(got, n);
        char qn[400], sn[400];
        snprintf(qn, sizeof qn, "%s.q4", x->name);
        snprintf(sn, sizeof sn, "%s.scales", x->name);
        const sq_st_entry *q = sq_st_find(st, qn), *s = sq_st_find(st, sn), *d = sq_st_find(st, x->name);
        if (q && s) {
            float *sc = malloc(s->nbytes);
            memcpy(sc, s->data, s->nbytes);
            sq_tensor out = sq_tensor_view(got, SQ_F32, SQ_CPU, 2, x->shape);
            sq_tensor codes = sq_tensor_view((void *)q->data, SQ_Q4, SQ_CPU, 2, x->shape);
            sq_tensor scales = sq_tensor_view(sc, SQ_F32, SQ_CPU, 2, s->shape);
            sq_dequant_q4(&out, &codes, &scales, 32, NULL);
            n_negative += count_negative(sc, s->shape[0] * s->shape[1]);
            free(sc);
            n_q++;
        } else if (d) {
            TU_CHECK(sq_shape_numel(d->ndim, d->shape) == n, "%s: size", x->name);
            sq_convert_to_f32(got, d->data, d->dtype, n);
            n_dense++;
        } else {
            TU_CHECK(false, "%s missing from the base", x->name);
        }
        TU_CHECK(!memcmp(got, want, (size_t)n * 4), "%s (%s): values equal the fixture's exactly", x->name, tag);
        free(want);
        free(got);
    }
    TU_CHECK(int4 ? n_q > 0 : n_q == 0, "%s: %d int4 tensors", tag, n_q);
    TU_CHECK(n_negative == (int4 ? rep.negative_blocks : 0), "%s: %lld negative scales, as reported", tag, n_negative);
    TU_CHECK(n_dense > 0, "%s: dense tensors", tag);
    sq_st_close(vals);
    sq_st_close(st);
}

// A version-2 file (same layout as 3 for little-endian files) reads the same.
static void test_version2(void) {
    char p[1024], q[256];
    snprintf(p, sizeof p, "%s/gguf/blocks.gguf", tu_fixtures_dir());
    snprintf(q, sizeof q, "/tmp/sq_test_gguf_v2_%ld.gguf", (long)getpid());
    FILE *f = fopen(p, "rb");
    SQ_CHECK(f, "%s", p);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n);
    SQ_CHECK(fread(b, 1, (size_t)n, f) == (size_t)n, "read");
    fclose(f);
    TU_CHECK(b[4] == 3, "fixture is version 3");
    b[4] = 2;
    f = fopen(q, "wb");
    fwrite(b, 1, (size_t)n, f);
    fclose(f);
    free(b);
    sq_gguf *g;
    TU_CHECK(sq_gguf_open(&g, q) == SQ_OK, "version 2: %s", sq_error_message());
    if (g) {
        TU_CHECK(sq_gguf_version(g) == 2 && sq_gguf_tensor_count(g) == 7 && sq_gguf_find(g, "t.q4_k"), "version 2 contents");
        sq_gguf_close(g);
    }
    unlink(q);
}

int main(void) {
    test_blocks();
    test_version2();
    test_writer();
    check_base("q4_0", true);
    check_base("q8_0", false);
    return tu_finish("gguf");
}
