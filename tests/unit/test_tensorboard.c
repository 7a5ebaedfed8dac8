// tests/unit/test_tensorboard.c: core/tensorboard (the TensorBoard event-file writer).
//   1. CRC-32C against RFC 3720's test vectors and the check value of "123456789",
//      the TFRecord mask against the tensorboard package's masked_crc32c;
//   2. protobuf encodings known by hand (varints, an int64 of -1, a scalar Event as
//      the tensorboard package serialises it, defaults left out);
//   3. the events of tools/make_tensorboard_fixtures.py written with sq_tb_* give
//      tests/fixtures/tensorboard/reference.tfevents (written by the tensorboard
//      package's EventFileWriter) byte for byte, and read back field by field;
//   4. sq_tb_open's file name (TensorBoard's pattern, later than any file already
//      in the folder) and its file_version record; a write error names the file.
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/tensorboard.h"
#include "tests/tensorboard_reader.h"
#include "tests/test_util.h"

static bool bytes_eq(const sq_pb *b, const char *hex) {
    size_t n = strlen(hex) / 2;
    if (b->oom || b->len != n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || b->data[i] != v) return false;
    }
    return true;
}

static void check_crc(void) {
    uint8_t buf[32];
    memset(buf, 0, 32);
    TU_CHECK(sq_crc32c(0, buf, 32) == 0x8A9136AAu, "RFC 3720 B.4: 32 zero bytes");
    memset(buf, 0xFF, 32);
    TU_CHECK(sq_crc32c(0, buf, 32) == 0x62A8AB43u, "RFC 3720 B.4: 32 0xFF bytes");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    TU_CHECK(sq_crc32c(0, buf, 32) == 0x46DD794Eu, "RFC 3720 B.4: 32 incrementing bytes");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    TU_CHECK(sq_crc32c(0, buf, 32) == 0x113FDB5Cu, "RFC 3720 B.4: 32 decrementing bytes");
    TU_CHECK(sq_crc32c(0, "123456789", 9) == 0xE3069283u, "CRC-32C check value");
    TU_CHECK(sq_crc32c(sq_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u, "CRC-32C chained over pieces");
    // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c
    TU_CHECK(sq_crc32c_mask(sq_crc32c(0, "123456789", 9)) == 0xC78AB0E5u, "masked CRC of \"123456789\"");
    TU_CHECK(sq_crc32c_mask(sq_crc32c(0, "", 0)) == 0xA282EAD8u, "masked CRC of nothing");
}

static void check_protobuf(void) {
    struct { uint64_t v; const char *hex; } varints[] = {
        {0, "00"}, {1, "01"}, {127, "7f"}, {128, "8001"}, {300, "ac02"}, {16384, "808001"},
        {UINT64_MAX, "ffffffffffffffffff01"}};
    for (size_t i = 0; i < sizeof varints / sizeof varints[0]; i++) {
        sq_pb b = {0};
        sq_pb_varint(&b, varints[i].v);
        TU_CHECK(bytes_eq(&b, varints[i].hex), "varint %llu is %s", (unsigned long long)varints[i].v, varints[i].hex);
        sq_pb_free(&b);
    }
    sq_pb b = {0};
    // Event(wall_time=1.0, step=1, summary=Summary(value=[Value(tag="a", simple_value=1.0)])).SerializeToString()
    sq_tb_event_scalar(&b, 1.0, 1, "a", 1.0f);
    TU_CHECK(bytes_eq(&b, "09000000000000f03f10012a0a0a080a0161150000803f"), "scalar event as protobuf serialises it");
    sq_pb_free(&b);
    // wall time 0, step 0: proto3 defaults, left out; simple_value 0 is a oneof member, kept
    sq_tb_event_scalar(&b, 0.0, 0, "a", 0.0f);
    TU_CHECK(bytes_eq(&b, "2a0a0a080a01611500000000"), "defaults left out, a zero simple_value kept");
    sq_pb_free(&b);
    sq_pb_uint(&b, 2, (uint64_t)(int64_t)-1);   // Event(step=-1)
    TU_CHECK(bytes_eq(&b, "10ffffffffffffffffff01"), "a negative int64 takes 10 bytes");
    sq_pb_free(&b);
    sq_pb_double(&b, 1, -0.0);
    TU_CHECK(bytes_eq(&b, "090000000000000080"), "-0.0 is not the default and is written");
    sq_pb_free(&b);
    sq_tb_event_session_start(&b, 0.0, 3);
    TU_CHECK(bytes_eq(&b, "10033a020801"), "SessionLog START at step 3");
    sq_pb_free(&b);
    // a record of 1 byte: length, masked CRC of the length, data, masked CRC of the data
    uint8_t one = 0x2a;
    sq_tb_record(&b, &one, 1);
    uint8_t len[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    uint32_t c1 = sq_crc32c_mask(sq_crc32c(0, len, 8)), c2 = sq_crc32c_mask(sq_crc32c(0, &one, 1));
    TU_CHECK(b.len == 17 && !memcmp(b.data, len, 8) && tbr_le(b.data + 8, 4) == c1 && b.data[12] == 0x2a &&
                 tbr_le(b.data + 13, 4) == c2,
             "TFRecord framing");
    sq_pb_free(&b);
}

// The events of tools/make_tensorboard_fixtures.py (keep in step with its lists).
static const double WALL0 = 1700000000.25;
static const struct { double wall; int64_t step; const char *tag; float value; } scalars[] = {
    {1700000001.5, 0, "val/loss", 0.5f},
    {1700000002.125, 1, "train/loss", 0.123456789f},
    {1700000002.125, 1, "train/d", -3.25e-3f},
    {1700000002.125, 1, "train/d_clipped", 0.0f},
    {1700000003.0, 300, "train/lr", 1e-5f},
    {1700000004.0, 123456789012LL, "train/perturbation_rel/attn_qkv", 7.5e-4f},
};
#define N_SCALARS ((int)(sizeof scalars / sizeof scalars[0]))

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void check_reference(const char *dir) {
    char ref[512], png_path[512], path[512];
    snprintf(ref, sizeof ref, "%s/tensorboard/reference.tfevents", tu_fixtures_dir());
    snprintf(png_path, sizeof png_path, "%s/tensorboard/image.png", tu_fixtures_dir());
    size_t png_len = 0, ref_len = 0, our_len = 0;
    uint8_t *png = read_file(png_path, &png_len), *want = read_file(ref, &ref_len);
    TU_CHECK(png && want, "fixtures %s and %s (tools/make_tensorboard_fixtures.py)", png_path, ref);
    if (!png || !want) { free(png); free(want); return; }

    snprintf(path, sizeof path, "%s/ours.tfevents", dir);
    sq_tb_writer w;
    int rc = sq_tb_open_path(&w, path, WALL0, "tensorboard.summary.writer.event_file_writer");
    TU_CHECK(rc == SQ_OK, "open: %s", sq_error_message());
    for (int i = 0; rc == SQ_OK && i < N_SCALARS; i++)
        rc = sq_tb_scalar(&w, scalars[i].wall, scalars[i].step, scalars[i].tag, scalars[i].value);
    if (rc == SQ_OK) rc = sq_tb_image(&w, 1700000005.5, 4, "previews", 3, 2, png, png_len);
    if (rc == SQ_OK) rc = sq_tb_session_start(&w, 1700000006.0, 3);
    TU_CHECK(rc == SQ_OK, "writes: %s", sq_error_message());
    sq_tb_close(&w);
    uint8_t *ours = read_file(path, &our_len);
    size_t first = 0;
    while (ours && first < our_len && first < ref_len && ours[first] == want[first]) first++;
    TU_CHECK(ours && our_len == ref_len && first == ref_len,
             "byte-identical to the tensorboard package's file (%zu vs %zu bytes, first difference at %zu)", our_len,
             ref_len, first);

    // both read back the same, field by field
    tbr_file r;
    TU_CHECK(tbr_read(ref, &r) && !r.bad, "reference parses: %s", r.why);
    TU_CHECK(r.count == N_SCALARS + 3, "reference has %d records", r.count);
    if (r.count == N_SCALARS + 3) {
        TU_CHECK(!strcmp(r.ev[0].file_version, "brain.Event:2") && r.ev[0].wall_time == WALL0 &&
                     !strcmp(r.ev[0].writer, "tensorboard.summary.writer.event_file_writer"),
                 "file_version event first");
        for (int i = 0; i < N_SCALARS; i++) {
            const tbr_event *e = &r.ev[1 + i];
            TU_CHECK(e->has_summary && e->has_simple && !strcmp(e->tag, scalars[i].tag) && e->step == scalars[i].step &&
                         e->wall_time == scalars[i].wall && e->simple_value == scalars[i].value,
                     "scalar %s", scalars[i].tag);
        }
        const tbr_event *im = &r.ev[1 + N_SCALARS];
        TU_CHECK(im->has_image && im->width == 3 && im->height == 2 && im->colorspace == 3 && im->step == 4 &&
                     im->png_len == png_len && !memcmp(im->png, png, png_len) && !strcmp(im->tag, "previews"),
                 "image event");
        TU_CHECK(r.ev[2 + N_SCALARS].session_status == 1 && r.ev[2 + N_SCALARS].step == 3, "SessionLog START");
    }
    tbr_free(&r);

    // a crash mid-record: the reader sees every record before the torn one
    FILE *f = fopen(path, "wb");
    if (f && ours) fwrite(ours, 1, our_len - 5, f);
    if (f) fclose(f);
    TU_CHECK(tbr_read(path, &r) && r.bad && r.count == N_SCALARS + 2, "a torn last record: %d whole ones before it",
             r.count);
    tbr_free(&r);
    if (ours) {   // and a flipped byte fails the data CRC
        ours[30] ^= 1;
        f = fopen(path, "wb");
        if (f) { fwrite(ours, 1, our_len, f); fclose(f); }
        TU_CHECK(tbr_read(path, &r) && r.bad && r.count == 0 && strstr(r.why, "data CRC"), "corruption found: %s", r.why);
        tbr_free(&r);
    }
    free(ours);
    free(png);
    free(want);
}

static void check_open(const char *dir) {
    char path[512];
    // a file of a "later" run already there: the new one must sort after it
    snprintf(path, sizeof path, "%s/events.out.tfevents.4000000000.elsewhere.1.0", dir);
    FILE *f = fopen(path, "wb");
    if (f) fclose(f);
    sq_tb_writer w;
    TU_CHECK(sq_tb_open(&w, dir, "sd-qzo") == SQ_OK, "sq_tb_open: %s", sq_error_message());
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char want[600];
    snprintf(want, sizeof want, "%s/events.out.tfevents.4000000001.%s.%d.0", dir, host, (int)getpid());
    TU_CHECK(!strcmp(w.path, want), "file name %s, want %s", w.path, want);
    double t0 = sq_tb_wall_time();
    TU_CHECK(sq_tb_scalar(&w, t0, 7, "train/loss", 0.25f) == SQ_OK, "scalar");
    // flushed at once: readable before the writer closes
    tbr_file r;
    TU_CHECK(tbr_read(w.path, &r) && !r.bad && r.count == 2, "2 records readable before close");
    if (r.count == 2)
        TU_CHECK(!strcmp(r.ev[0].file_version, "brain.Event:2") && !strcmp(r.ev[0].writer, "sd-qzo") &&
                     fabs(r.ev[0].wall_time - t0) < 60 && r.ev[1].step == 7 && r.ev[1].simple_value == 0.25f,
                 "file_version then the scalar");
    tbr_free(&r);
    sq_tb_close(&w);
    unlink(want);
    unlink(path);

    snprintf(path, sizeof path, "%s/missing/x.tfevents", dir);
    TU_CHECK(sq_tb_open_path(&w, path, 1.0, NULL) == SQ_FAIL && strstr(sq_error_message(), path), "error names the file: %s",
             sq_error_message());
    sq_error_clear();
    if (access("/dev/full", W_OK) == 0) {
        TU_CHECK(sq_tb_open_path(&w, "/dev/full", 1.0, NULL) == SQ_FAIL && strstr(sq_error_message(), "/dev/full"),
                 "a full disk is an error: %s", sq_error_message());
        sq_error_clear();
    }
}

int main(void) {
    char dir[] = "/tmp/sq-tb-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    check_crc();
    check_protobuf();
    check_reference(dir);
    check_open(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/ours.tfevents", dir);
    unlink(path);
    rmdir(dir);
    return tu_finish("tensorboard");
}
