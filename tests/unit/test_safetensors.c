// tests/unit/test_safetensors.c: safetensors writer + reader round trips: every
// dtype incl. a 0-element tensor and Q4 written as bytes, metadata, byte-identical
// data; a sharded checkpoint through its index.json and through its directory; the
// streaming writer; atomicity (a failed write leaves the old file and no temp file);
// sq_st_load's conversion and shape check; tensors at odd byte offsets; config getters.
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

static char dir[256];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static int count_tmp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_round_trip(void) {
    uint64_t rs = 1;
    float f32[2 * 3 * 4];
    uint16_t bf16[5], f16[7];
    int8_t i8[9];
    uint8_t u8[3], q4[6];
    int32_t i32[2];
    int64_t i64[3];
    double f64[2];
    tu_fill_uniform(f32, 24, &rs, -1, 1);
    for (int i = 0; i < 5; i++) bf16[i] = sq_f32_to_bf16(tu_uniform(&rs, -5, 5));
    for (int i = 0; i < 7; i++) f16[i] = sq_f32_to_f16(tu_uniform(&rs, -5, 5));
    for (int i = 0; i < 9; i++) i8[i] = (int8_t)(tu_next(&rs) & 0xff);
    for (int i = 0; i < 3; i++) u8[i] = (uint8_t)(tu_next(&rs) & 0xff);
    for (int i = 0; i < 6; i++) q4[i] = (uint8_t)(tu_next(&rs) & 0xff);
    i32[0] = -7; i32[1] = 1 << 30;
    i64[0] = -1; i64[1] = 1ll << 40; i64[2] = 3;
    f64[0] = 3.141592653589793; f64[1] = -1e300;
    sq_st_tensor_desc t[] = {
        {"a.f32", SQ_F32, 3, {2, 3, 4}, f32}, {"b.bf16", SQ_BF16, 1, {5}, bf16}, {"c.f16", SQ_F16, 2, {7, 1}, f16},
        {"d.i8", SQ_I8, 2, {3, 3}, i8},       {"e.u8", SQ_U8, 1, {3}, u8},       {"f.empty", SQ_F32, 2, {0, 5}, NULL},
        {"g.q4", SQ_Q4, 2, {2, 6}, q4},       {"h.i32", SQ_I32, 1, {2}, i32},    {"i.i64", SQ_I64, 1, {3}, i64},
        {"j.f64", SQ_F64, 0, {0}, f64},
    };
    t[9].ndim = 1; t[9].shape[0] = 2;
    sq_st_kv meta[] = {{"format", "pt"}, {"note", "round trip"}};
    char path[512];
    path_in(path, sizeof path, "rt.safetensors");
    TU_CHECK(sq_st_write(path, t, 10, meta, 2) == SQ_OK, "write: %s", sq_error_message());
    struct stat sb;
    stat(path, &sb);
    uint8_t hdr[8];
    FILE *f = fopen(path, "rb");
    TU_CHECK(fread(hdr, 1, 8, f) == 8, "read header length");
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | hdr[i];
    TU_CHECK(hlen % 8 == 0, "header padded to 8 bytes (%llu)", (unsigned long long)hlen);
    sq_safetensors *st;
    TU_CHECK(sq_st_open(&st, path) == SQ_OK, "open: %s", sq_error_message());
    TU_CHECK(sq_st_count(st) == 10, "10 tensors");
    TU_CHECK(!strcmp(sq_st_metadata(st, "note"), "round trip") && sq_st_metadata(st, "nope") == NULL, "metadata");
    const void *want[] = {f32, bf16, f16, i8, u8, NULL, q4, i32, i64, f64};
    for (int i = 0; i < 10; i++) {
        const sq_st_entry *e = sq_st_find(st, t[i].name);
        TU_CHECK(e != NULL, "find %s", t[i].name);
        if (!e) continue;
        sq_dtype expect_dt = t[i].dtype == SQ_Q4 ? SQ_U8 : t[i].dtype;
        TU_CHECK(e->dtype == expect_dt && e->ndim == t[i].ndim, "%s dtype/ndim", t[i].name);
        size_t bytes = t[i].dtype == SQ_Q4 ? 6 : sq_dtype_bytes(t[i].dtype, sq_shape_numel(t[i].ndim, t[i].shape));
        TU_CHECK(e->nbytes == bytes, "%s size %zu vs %zu", t[i].name, e->nbytes, bytes);
        if (want[i]) TU_CHECK(!memcmp(e->data, want[i], bytes), "%s bytes identical", t[i].name);
    }
    TU_CHECK(sq_st_find(st, "g.q4")->shape[1] == 3, "Q4 written as U8 bytes along the last dim");
    TU_CHECK(!strcmp(sq_st_at(st, 0)->name, "a.f32") && !strcmp(sq_st_at(st, 9)->name, "j.f64"), "sorted by name");
    // sq_st_load: bf16 -> f32, shape checks
    float back[5];
    sq_tensor dst = sq_tensor_view(back, SQ_F32, SQ_CPU, 1, SQ_SHAPE(5));
    TU_CHECK(sq_st_load(st, "b.bf16", &dst) == SQ_OK, "load bf16 as f32");
    int bad = 0;
    for (int i = 0; i < 5; i++) bad += back[i] != sq_bf16_to_f32(bf16[i]);
    TU_CHECK(bad == 0, "bf16 widened exactly");
    sq_tensor wrong = sq_tensor_view(back, SQ_F32, SQ_CPU, 1, SQ_SHAPE(4));
    TU_CHECK(sq_st_load(st, "b.bf16", &wrong) == SQ_FAIL && strstr(sq_error_message(), "b.bf16") &&
                 strstr(sq_error_message(), "[5]"), "shape mismatch names the tensor: %s", sq_error_message());
    TU_CHECK(sq_st_load(st, "zzz", &wrong) == SQ_FAIL && strstr(sq_error_message(), "zzz"), "missing tensor named");
    sq_st_close(st);

    // atomicity: an aborted streaming write leaves the old file as it was
    sq_st_tensor_desc one = {"x", SQ_F32, 1, {4}, f32};
    sq_st_writer *w;
    TU_CHECK(sq_st_writer_begin(&w, path, &one, 1, NULL, 0) == SQ_OK, "begin");
    TU_CHECK(sq_st_writer_append(w, f32, 8) == SQ_OK, "partial append");
    TU_CHECK(sq_st_writer_commit(w) == SQ_FAIL && strstr(sq_error_message(), "nothing saved"), "short commit fails");
    struct stat sb2;
    stat(path, &sb2);
    TU_CHECK(sb2.st_size == sb.st_size && count_tmp_files() == 0, "old file intact, no temp file left");
    TU_CHECK(sq_st_writer_begin(&w, path, &one, 1, NULL, 0) == SQ_OK, "begin 2");
    TU_CHECK(sq_st_writer_append(w, f32, 20) == SQ_FAIL, "too many bytes refused");
    TU_CHECK(count_tmp_files() == 0, "no temp file after an over-long append");
    // streaming in pieces
    TU_CHECK(sq_st_writer_begin(&w, path, &one, 1, NULL, 0) == SQ_OK, "begin 3");
    TU_CHECK(sq_st_writer_append(w, f32, 4) == SQ_OK && sq_st_writer_append(w, f32 + 1, 12) == SQ_OK, "appends");
    TU_CHECK(sq_st_writer_commit(w) == SQ_OK, "commit: %s", sq_error_message());
    TU_CHECK(sq_st_open(&st, path) == SQ_OK && sq_st_count(st) == 1 && !memcmp(sq_st_find(st, "x")->data, f32, 16),
             "streamed file reads back");
    sq_st_close(st);
}

// Safetensors does not align tensor data: a 1-byte U8 tensor first puts the BF16, F16
// and F32 tensors after it at odd file offsets. They must convert exactly (the reads
// go through memcpy; the sanitizer build would flag a misaligned typed load).
static void test_odd_offsets(void) {
    const char *hdr = "{\"a.pad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"b.bf16\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[1,7]},"
                      "\"c.f16\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[7,13]},"
                      "\"d.f32\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[13,21]}}";
    char header[512];
    size_t hlen = strlen(hdr);
    memcpy(header, hdr, hlen);
    while ((8 + hlen) % 8) header[hlen++] = ' ';   // data starts 8-aligned, so offset 1 is odd
    const float want_b[3] = {1.5f, -2.0f, 3.25f}, want_c[3] = {0.5f, -0.25f, 1024.0f}, want_f[2] = {3.14159f, -1e-3f};
    uint8_t data[21];
    data[0] = 7;
    for (int i = 0; i < 3; i++) {
        uint16_t b = sq_f32_to_bf16(want_b[i]), h = sq_f32_to_f16(want_c[i]);
        data[1 + 2 * i] = (uint8_t)(b & 0xff); data[2 + 2 * i] = (uint8_t)(b >> 8);
        data[7 + 2 * i] = (uint8_t)(h & 0xff); data[8 + 2 * i] = (uint8_t)(h >> 8);
    }
    memcpy(data + 13, want_f, 8);
    char path[512];
    path_in(path, sizeof path, "odd.safetensors");
    FILE *f = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, hlen, f);
    fwrite(data, 1, sizeof data, f);
    fclose(f);
    sq_safetensors *st;
    TU_CHECK(sq_st_open(&st, path) == SQ_OK, "open odd-offset file: %s", sq_error_message());
    if (!st) return;
    TU_CHECK(((uintptr_t)sq_st_find(st, "b.bf16")->data & 1) == 1, "the bf16 tensor really is at an odd address");
    float back[3];
    sq_tensor b = sq_tensor_view(back, SQ_F32, SQ_CPU, 1, SQ_SHAPE(3));
    TU_CHECK(sq_st_load(st, "b.bf16", &b) == SQ_OK && back[0] == want_b[0] && back[1] == want_b[1] &&
                 back[2] == want_b[2], "odd-offset bf16 converts exactly");
    TU_CHECK(sq_st_load(st, "c.f16", &b) == SQ_OK && back[0] == want_c[0] && back[1] == want_c[1] &&
                 back[2] == want_c[2], "odd-offset f16 converts exactly");
    sq_tensor ff = sq_tensor_view(back, SQ_F32, SQ_CPU, 1, SQ_SHAPE(2));
    TU_CHECK(sq_st_load(st, "d.f32", &ff) == SQ_OK && back[0] == want_f[0] && back[1] == want_f[1],
             "odd-offset f32 read exactly");
    float direct[3];
    TU_CHECK(sq_convert_to_f32(direct, sq_st_find(st, "c.f16")->data, SQ_F16, 3) == 0 && direct[2] == want_c[2],
             "sq_convert_to_f32 on the odd address");
    uint8_t out[7];
    TU_CHECK(sq_convert_from_f32(out + 1, SQ_BF16, want_b, 3) == 0 && !memcmp(out + 1, data + 1, 6),
             "sq_convert_from_f32 to an odd address");
    sq_st_close(st);
}

static void test_sharded(void) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {7, 8, 9, 10}, c[2] = {11, 12};
    char p1[512], p2[512], idx[512];
    path_in(p1, sizeof p1, "model-00001-of-00002.safetensors");
    path_in(p2, sizeof p2, "model-00002-of-00002.safetensors");
    path_in(idx, sizeof idx, "model.safetensors.index.json");
    sq_st_tensor_desc s1[] = {{"layer.a", SQ_F32, 2, {2, 3}, a}, {"layer.c", SQ_F32, 1, {2}, c}};
    sq_st_tensor_desc s2[] = {{"layer.b", SQ_F32, 1, {4}, b}};
    TU_CHECK(sq_st_write(p1, s1, 2, NULL, 0) == SQ_OK && sq_st_write(p2, s2, 1, NULL, 0) == SQ_OK, "write shards");
    write_text(idx, "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {\"layer.a\": \"model-00001-of-00002.safetensors\","
                    " \"layer.b\": \"model-00002-of-00002.safetensors\", \"layer.c\": \"model-00001-of-00002.safetensors\"}}");
    for (int via_dir = 0; via_dir < 2; via_dir++) {
        sq_safetensors *st;
        TU_CHECK(sq_st_open(&st, via_dir ? dir : idx) == SQ_OK, "open sharded (%s): %s", via_dir ? "dir" : "index",
                 sq_error_message());
        if (!st) continue;
        TU_CHECK(sq_st_count(st) == 3 && sq_st_file_count(st) == 2, "3 tensors in 2 files");
        const sq_st_entry *e = sq_st_find(st, "layer.b");
        TU_CHECK(e && !memcmp(e->data, b, 16), "tensor from the second shard");
        sq_st_close(st);
    }
}

static void test_config(void) {
    char p[512];
    path_in(p, sizeof p, "config.json");
    write_text(p, "{\"num_layers\": 24, \"eps\": 1e-6, \"name\": \"x\", \"flag\": true, \"dual\": [0, 1, 2], "
                  "\"frac\": 2.5, \"nothing\": null}");
    sq_config *c;
    TU_CHECK(sq_config_load(&c, p) == SQ_OK, "load config");
    int64_t v = 0;
    double d = 0;
    TU_CHECK(sq_config_int(c, "num_layers", &v) == SQ_OK && v == 24, "int");
    TU_CHECK(sq_config_double(c, "eps", &d) == SQ_OK && d == 1e-6, "double");
    TU_CHECK(sq_config_int(c, "frac", &v) == SQ_FAIL && strstr(sq_error_message(), "'frac' is not an integer"), "non-integer");
    TU_CHECK(sq_config_int(c, "missing", &v) == SQ_FAIL && strstr(sq_error_message(), "config.json: missing key 'missing'"),
             "missing key names file: %s", sq_error_message());
    TU_CHECK(sq_config_int_or(c, "nothing", 7) == 7 && !sq_config_has(c, "nothing"), "null counts as absent");
    TU_CHECK(sq_config_bool_or(c, "flag", false) && !strcmp(sq_config_string_or(c, "name", "?"), "x"), "bool, string");
    int64_t arr[4];
    int n;
    TU_CHECK(sq_config_int_array(c, "dual", arr, 4, &n) == SQ_OK && n == 3 && arr[2] == 2, "int array");
    TU_CHECK(sq_config_int_array(c, "dual", arr, 2, &n) == SQ_FAIL, "array too long");
    sq_config_free(c);
    write_text(p, "{\"a\": [1, 2,}");
    TU_CHECK(sq_config_load(&c, p) == SQ_FAIL && strstr(sq_error_message(), "not valid JSON"), "bad JSON reported");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/sq-test-st-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_round_trip();
    test_config();
    test_odd_offsets();
    test_sharded();   // last: it leaves shards in dir, which the directory open must see alone
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_safetensors");
}
