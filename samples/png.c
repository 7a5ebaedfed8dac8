// samples/png.c: PNG encoding (stb_image_write) plus the A1111-style "parameters"
// text chunk spliced in after IHDR, and the atomic file write. See png.h.
#include "samples/png.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb_image_write.h>

#include "core/error.h"

uint32_t sd_crc32(uint32_t crc, const uint8_t *data, size_t n) {
    static uint32_t table[256];
    static bool ready = false;   // benign race: every thread writes the same values
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

// ---- the parameters text ----

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = true; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
// A1111's quote(): plain when the value holds no ',', ':' or newline, else JSON.
static void sb_value(strbuf *b, const char *v) {
    if (!strpbrk(v, ",:\n")) { sb_put(b, v, strlen(v)); return; }
    sb_put(b, "\"", 1);
    for (const char *c = v; *c; c++) {
        if (*c == '"' || *c == '\\') { sb_put(b, "\\", 1); sb_put(b, c, 1); }
        else if (*c == '\n') sb_put(b, "\\n", 2);
        else sb_put(b, c, 1);
    }
    sb_put(b, "\"", 1);
}

// %g without exponent noise: 4.5 -> "4.5", 7 -> "7"
static void sb_float(strbuf *b, float x) { sb_printf(b, "%g", (double)x); }

char *sd_png_parameters_text(const sd_png_params *p) {
    strbuf b = {0};
    sb_put(&b, "", 0);
    const char *prompt = p->prompt ? p->prompt : "";
    sb_put(&b, prompt, strlen(prompt));
    if (p->negative_prompt && p->negative_prompt[0]) {
        sb_put(&b, "\nNegative prompt: ", 18);
        sb_put(&b, p->negative_prompt, strlen(p->negative_prompt));
    }
    sb_printf(&b, "\nSteps: %d, Sampler: Euler (flow), CFG scale: ", p->steps);
    sb_float(&b, p->cfg);
    sb_printf(&b, ", Seed: %" PRIu64 ", Size: %dx%d", p->seed, p->width, p->height);
    if (p->model && p->model[0]) {
        sb_put(&b, ", Model: ", 9);
        sb_value(&b, p->model);
    }
    if (p->extra && p->extra[0]) {
        sb_put(&b, ", ", 2);
        sb_put(&b, p->extra, strlen(p->extra));
    }
    if (b.oom) {
        free(b.s);
        sq_errorf("out of host memory");
        return NULL;
    }
    return b.s;
}

// ---- encoding ----

typedef struct {
    uint8_t *data;
    size_t len, cap;
    bool oom;
} bytebuf;

static void bb_put(bytebuf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2 + 1024;
        uint8_t *p = realloc(b->data, cap);
        if (!p) { b->oom = true; return; }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}
static void stb_sink(void *ctx, void *data, int size) { bb_put(ctx, data, (size_t)size); }

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

// Chunk bytes: length, type, data (keyword NUL [iTXt header] text), CRC over type + data.
static int text_chunk(bytebuf *c, const char *keyword, const char *text) {
    size_t kl = strlen(keyword), tl = strlen(text);
    if (kl < 1 || kl > 79) return sq_errorf("png: text keyword '%s' must be 1 to 79 characters", keyword);
    for (const char *k = keyword; *k; k++)
        if ((unsigned char)*k < 32 || (unsigned char)*k > 126 || (k == keyword && *k == ' '))
            return sq_errorf("png: text keyword '%s' has a character PNG does not allow", keyword);
    bool itxt = !is_ascii(text);
    // iTXt: keyword NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL
    size_t n = kl + 1 + (itxt ? 4 : 0) + tl;
    if (n > 0x7fffffff) return sq_errorf("png: text of %zu bytes is too long for a chunk", tl);
    uint8_t hdr[8];
    put_be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, itxt ? "iTXt" : "tEXt", 4);
    bb_put(c, hdr, 8);
    bb_put(c, keyword, kl + 1);
    if (itxt) bb_put(c, "\0\0\0\0", 4);
    bb_put(c, text, tl);
    if (c->oom) return sq_errorf("out of host memory");
    uint8_t crc[4];
    put_be32(crc, sd_crc32(0, c->data + 4, 4 + n));
    bb_put(c, crc, 4);
    return c->oom ? sq_errorf("out of host memory") : SQ_OK;
}

int sd_png_encode(const uint8_t *rgb, int width, int height, const char *keyword, const char *text, uint8_t **out,
                  size_t *len) {
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > (1 << 24) / 3 || height > (1 << 24))
        return sq_errorf("png: image size %dx%d out of range", width, height);
    bytebuf png = {0}, chunk = {0};
    if (!stbi_write_png_to_func(stb_sink, &png, width, height, 3, rgb, width * 3) || png.oom) {
        free(png.data);
        return sq_errorf("png: encoding a %dx%d image failed (out of memory?)", width, height);
    }
    // stb writes the 8-byte signature then IHDR (length 13): 8 + 4 + 4 + 13 + 4 = 33 bytes
    const size_t after_ihdr = 33;
    if (png.len < after_ihdr || memcmp(png.data + 12, "IHDR", 4) != 0) {
        free(png.data);
        return sq_errorf("png: unexpected encoder output (no IHDR first)");
    }
    if (keyword) {
        if (text_chunk(&chunk, keyword, text ? text : "") != SQ_OK) {
            free(png.data);
            free(chunk.data);
            return SQ_FAIL;
        }
        uint8_t *all = malloc(png.len + chunk.len);
        if (!all) {
            free(png.data);
            free(chunk.data);
            return sq_errorf("out of host memory");
        }
        memcpy(all, png.data, after_ihdr);
        memcpy(all + after_ihdr, chunk.data, chunk.len);
        memcpy(all + after_ihdr + chunk.len, png.data + after_ihdr, png.len - after_ihdr);
        *len = png.len + chunk.len;
        free(png.data);
        free(chunk.data);
        *out = all;
        return SQ_OK;
    }
    *out = png.data;
    *len = png.len;
    return SQ_OK;
}

int sd_png_write(const char *path, const uint8_t *rgb, int width, int height, const char *keyword, const char *text) {
    uint8_t *data;
    size_t len;
    if (sd_png_encode(rgb, width, height, keyword, text, &data, &len) != SQ_OK) return sq_error_context("%s", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) { free(data); return sq_errorf("out of host memory"); }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int rc = SQ_FAIL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { sq_error_errno("%s: cannot create the temporary file %s", path, tmp); goto done; }
    size_t off = 0;
    while (off < len) {
        ssize_t k = write(fd, data + off, len - off);
        if (k <= 0) { sq_error_errno("%s: write failed", tmp); close(fd); unlink(tmp); goto done; }
        off += (size_t)k;
    }
    if (fsync(fd) != 0) { sq_error_errno("%s: fsync failed", tmp); close(fd); unlink(tmp); goto done; }
    if (close(fd) != 0) { sq_error_errno("%s: close failed", tmp); unlink(tmp); goto done; }
    if (rename(tmp, path) != 0) { sq_error_errno("%s: cannot rename into place", path); unlink(tmp); goto done; }
    rc = SQ_OK;
done:
    free(tmp);
    free(data);
    return rc;
}
