// core/tensorboard.c: see core/tensorboard.h.
#include "core/tensorboard.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

// ---- CRC-32C ----

// Bytewise table of the reflected Castagnoli polynomial, built on first use
// (256 entries; event records are small, so no slicing-by-8).
static uint32_t crc_table[256];
static bool crc_table_ready;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_table_ready = true;
}

uint32_t sq_crc32c(uint32_t crc, const void *data, size_t n) {
    if (!crc_table_ready) crc_init();
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

uint32_t sq_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

// ---- protobuf encoding ----

void sq_pb_free(sq_pb *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void put(sq_pb *b, const void *p, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->oom = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

void sq_pb_varint(sq_pb *b, uint64_t v) {
    uint8_t buf[10];
    int n = 0;
    do {
        buf[n] = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) buf[n] |= 0x80;
        n++;
    } while (v);
    put(b, buf, (size_t)n);
}

static void key(sq_pb *b, int field, int wire) { sq_pb_varint(b, ((uint64_t)field << 3) | (uint64_t)wire); }

static void put_le(sq_pb *b, uint64_t v, int bytes) {
    uint8_t buf[8];
    for (int i = 0; i < bytes; i++) buf[i] = (uint8_t)(v >> (8 * i));
    put(b, buf, (size_t)bytes);
}

// proto3 leaves a singular scalar field out when it holds its default value; an
// int64 is sign-extended to 10 bytes when negative, so the cast keeps that.
void sq_pb_uint(sq_pb *b, int field, uint64_t v) {
    if (v == 0) return;
    key(b, field, 0);
    sq_pb_varint(b, v);
}

void sq_pb_double(sq_pb *b, int field, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (bits == 0) return;   // +0.0 is the default; -0.0 has a bit set and is written, as protobuf does
    key(b, field, 1);
    put_le(b, bits, 8);
}

void sq_pb_float(sq_pb *b, int field, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    key(b, field, 5);
    put_le(b, bits, 4);
}

void sq_pb_bytes(sq_pb *b, int field, const void *p, size_t n) {
    key(b, field, 2);
    sq_pb_varint(b, n);
    put(b, p, n);
}

void sq_pb_string(sq_pb *b, int field, const char *s) {
    if (s && s[0]) sq_pb_bytes(b, field, s, strlen(s));
}

// A nested message: its encoding, then the field around it.
static void message(sq_pb *b, int field, sq_pb *inner) {
    if (inner->oom) b->oom = true;
    else sq_pb_bytes(b, field, inner->data, inner->len);
    sq_pb_free(inner);
}

// ---- events ----

enum { EV_WALL_TIME = 1, EV_STEP = 2, EV_FILE_VERSION = 3, EV_SUMMARY = 5, EV_SESSION_LOG = 7, EV_SOURCE_METADATA = 10 };
enum { VALUE_TAG = 1, VALUE_SIMPLE = 2, VALUE_IMAGE = 4 };
enum { IMAGE_HEIGHT = 1, IMAGE_WIDTH = 2, IMAGE_COLORSPACE = 3, IMAGE_ENCODED = 4 };

static void event_head(sq_pb *out, double wall_time, int64_t step) {
    sq_pb_double(out, EV_WALL_TIME, wall_time);
    sq_pb_uint(out, EV_STEP, (uint64_t)step);
}

// Summary { value: [v] }, as field 5 of the event.
static void summary_of(sq_pb *out, sq_pb *value) {
    sq_pb summary = {0};
    message(&summary, 1, value);
    message(out, EV_SUMMARY, &summary);
}

void sq_tb_event_file_version(sq_pb *out, double wall_time, const char *writer) {
    event_head(out, wall_time, 0);
    sq_pb_string(out, EV_FILE_VERSION, "brain.Event:2");
    if (writer && writer[0]) {
        sq_pb meta = {0};
        sq_pb_string(&meta, 1, writer);
        message(out, EV_SOURCE_METADATA, &meta);
    }
}

void sq_tb_event_scalar(sq_pb *out, double wall_time, int64_t step, const char *tag, float value) {
    event_head(out, wall_time, step);
    sq_pb v = {0};
    sq_pb_string(&v, VALUE_TAG, tag);
    sq_pb_float(&v, VALUE_SIMPLE, value);
    summary_of(out, &v);
}

void sq_tb_event_image(sq_pb *out, double wall_time, int64_t step, const char *tag, int width, int height,
                       const uint8_t *png, size_t png_len) {
    event_head(out, wall_time, step);
    sq_pb img = {0}, v = {0};
    sq_pb_uint(&img, IMAGE_HEIGHT, (uint64_t)(int64_t)height);
    sq_pb_uint(&img, IMAGE_WIDTH, (uint64_t)(int64_t)width);
    sq_pb_uint(&img, IMAGE_COLORSPACE, 3);   // RGB
    sq_pb_bytes(&img, IMAGE_ENCODED, png, png_len);
    sq_pb_string(&v, VALUE_TAG, tag);
    message(&v, VALUE_IMAGE, &img);
    summary_of(out, &v);
}

// A SessionLog START at step k tells TensorBoard's reader that a run restarted:
// it drops the events it has already read at steps >= k, which a resumed run
// writes again (those of steps after the checkpoint it resumed from).
void sq_tb_event_session_start(sq_pb *out, double wall_time, int64_t step) {
    event_head(out, wall_time, step);
    sq_pb log = {0};
    sq_pb_uint(&log, 1, 1);   // status START
    message(out, EV_SESSION_LOG, &log);
}

void sq_tb_record(sq_pb *out, const uint8_t *data, size_t n) {
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint8_t crc[4];
    uint32_t c = sq_crc32c_mask(sq_crc32c(0, len, 8));
    for (int i = 0; i < 4; i++) crc[i] = (uint8_t)(c >> (8 * i));
    put(out, len, 8);
    put(out, crc, 4);
    put(out, data, n);
    c = sq_crc32c_mask(sq_crc32c(0, data, n));
    for (int i = 0; i < 4; i++) crc[i] = (uint8_t)(c >> (8 * i));
    put(out, crc, 4);
}

// ---- the writer ----

double sq_tb_wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int sq_tb_write_event(sq_tb_writer *w, const sq_pb *event) {
    if (event->oom) return sq_errorf("out of host memory writing %s", w->path);
    sq_pb rec = {0};
    sq_tb_record(&rec, event->data, event->len);
    if (rec.oom) {
        sq_pb_free(&rec);
        return sq_errorf("out of host memory writing %s", w->path);
    }
    bool ok = fwrite(rec.data, 1, rec.len, w->f) == rec.len && fflush(w->f) == 0;
    sq_pb_free(&rec);
    return ok ? SQ_OK : sq_error_errno("cannot write %s", w->path);
}

int sq_tb_open_path(sq_tb_writer *w, const char *path, double wall_time, const char *writer) {
    memset(w, 0, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->f = fopen(path, "wb");
    if (!w->f) return sq_error_errno("cannot create %s", path);
    sq_pb ev = {0};
    sq_tb_event_file_version(&ev, wall_time, writer);
    int rc = sq_tb_write_event(w, &ev);
    sq_pb_free(&ev);
    if (rc != SQ_OK) sq_tb_close(w);
    return rc;
}

// The largest <seconds> among dir's events.out.tfevents.<seconds>.* files (-1: none).
static long long newest_event_file(const char *dir) {
    static const char prefix[] = "events.out.tfevents.";
    long long newest = -1;
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, sizeof prefix - 1)) continue;
        long long s = strtoll(e->d_name + sizeof prefix - 1, NULL, 10);
        if (s > newest) newest = s;
    }
    closedir(d);
    return newest;
}

int sq_tb_open(sq_tb_writer *w, const char *dir, const char *writer) {
    double now = sq_tb_wall_time();
    long long secs = (long long)now, newest = newest_event_file(dir);
    if (secs <= newest) secs = newest + 1;
    char host[256] = "localhost", path[1200];
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    // the name TensorBoard's own writer gives (the last part is a per-process counter)
    snprintf(path, sizeof path, "%s/events.out.tfevents.%010lld.%s.%d.0", dir, secs, host, (int)getpid());
    return sq_tb_open_path(w, path, now, writer);
}

int sq_tb_scalar(sq_tb_writer *w, double wall_time, int64_t step, const char *tag, float value) {
    sq_pb ev = {0};
    sq_tb_event_scalar(&ev, wall_time, step, tag, value);
    int rc = sq_tb_write_event(w, &ev);
    sq_pb_free(&ev);
    return rc;
}

int sq_tb_image(sq_tb_writer *w, double wall_time, int64_t step, const char *tag, int width, int height,
                const uint8_t *png, size_t png_len) {
    sq_pb ev = {0};
    sq_tb_event_image(&ev, wall_time, step, tag, width, height, png, png_len);
    int rc = sq_tb_write_event(w, &ev);
    sq_pb_free(&ev);
    return rc;
}

int sq_tb_session_start(sq_tb_writer *w, double wall_time, int64_t step) {
    sq_pb ev = {0};
    sq_tb_event_session_start(&ev, wall_time, step);
    int rc = sq_tb_write_event(w, &ev);
    sq_pb_free(&ev);
    return rc;
}

void sq_tb_close(sq_tb_writer *w) {
    if (w->f) fclose(w->f);
    memset(w, 0, sizeof *w);
}
