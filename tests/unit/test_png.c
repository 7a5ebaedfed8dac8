// tests/unit/test_png.c: samples/png and samples/grid. A PNG written with the
// A1111 "parameters" chunk reads back bit-exact through stb_image (an independent
// decoder); every chunk's CRC is recomputed with a bitwise CRC-32 (not the table
// the writer uses); the chunk sits after IHDR, is tEXt for ASCII text and iTXt for
// UTF-8, and carries exactly the expected text. Also the parameters text format,
// the grid layout (cells, gaps, empty cells) and the atomic write's errors.
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)   // stb's own warnings; this file's checks are all runtime
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image.h>

#include "core/error.h"
#include "samples/grid.h"
#include "samples/png.h"
#include "tests/test_util.h"

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

// Bit-at-a-time CRC-32, independent of the writer's table.
static uint32_t crc_bitwise(const uint8_t *d, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

// Walks the chunks: checks each CRC, the order (IHDR first, IEND last) and returns
// the text of the first tEXt/iTXt chunk with `keyword` (malloc'ed), its type and position.
static char *find_text(const uint8_t *png, size_t len, const char *keyword, char type[5], int *index) {
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    TU_CHECK(len > 8 && memcmp(png, sig, 8) == 0, "PNG signature");
    size_t off = 8;
    int i = 0;
    char *found = NULL;
    bool saw_iend = false;
    while (off + 12 <= len) {
        uint32_t n = be32(png + off);
        TU_CHECK(off + 12 + n <= len, "chunk %d overruns the file", i);
        if (off + 12 + n > len) break;
        const uint8_t *t = png + off + 4, *d = png + off + 8;
        TU_CHECK(crc_bitwise(t, 4 + n) == be32(d + n), "chunk %d (%.4s) CRC mismatch", i, (const char *)t);
        if (i == 0) TU_CHECK(!memcmp(t, "IHDR", 4), "first chunk is %.4s, not IHDR", (const char *)t);
        if (!memcmp(t, "IEND", 4)) saw_iend = true;
        if ((!memcmp(t, "tEXt", 4) || !memcmp(t, "iTXt", 4)) && !found && n > strlen(keyword) &&
            !memcmp(d, keyword, strlen(keyword) + 1)) {
            size_t k = strlen(keyword) + 1;
            if (!memcmp(t, "iTXt", 4)) {
                TU_CHECK(d[k] == 0 && d[k + 1] == 0, "iTXt: uncompressed");
                k += 2;
                while (k < n && d[k]) k++;   // language tag
                k++;
                while (k < n && d[k]) k++;   // translated keyword
                k++;
            }
            found = malloc(n - k + 1);
            memcpy(found, d + k, n - k);
            found[n - k] = 0;
            memcpy(type, t, 4);
            type[4] = 0;
            *index = i;
        }
        off += 12 + n;
        i++;
    }
    TU_CHECK(saw_iend && off == len, "PNG does not end with IEND exactly");
    return found;
}

static void round_trip(const char *text, const char *want_type) {
    const int W = 37, H = 23;   // odd sizes: no row padding assumptions
    uint8_t *rgb = malloc(W * H * 3);
    uint64_t s = 99;
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(tu_next(&s) >> 56);
    char path[] = "/tmp/sq-png-XXXXXX";
    TU_CHECK(mkdtemp(path) != NULL, "mkdtemp");
    char file[64];
    snprintf(file, sizeof file, "%s/a.png", path);
    TU_CHECK(sd_png_write(file, rgb, W, H, "parameters", text) == SQ_OK, "write: %s", sq_error_message());
    // read back the pixels with stb_image
    int w, h, c;
    uint8_t *back = stbi_load(file, &w, &h, &c, 3);
    TU_CHECK(back && w == W && h == H && c == 3, "stb_image read: %s", back ? "wrong size" : stbi_failure_reason());
    if (back) TU_CHECK(memcmp(back, rgb, W * H * 3) == 0, "pixels differ after the round trip");
    stbi_image_free(back);
    // the chunk
    FILE *f = fopen(file, "rb");
    uint8_t *png = malloc(1 << 16);
    size_t len = fread(png, 1, 1 << 16, f);
    fclose(f);
    char type[5] = "";
    int index = -1;
    char *got = find_text(png, len, "parameters", type, &index);
    TU_CHECK(got && !strcmp(got, text), "text chunk: got '%s'", got ? got : "(none)");
    TU_CHECK(!strcmp(type, want_type), "chunk type %s, want %s", type, want_type);
    TU_CHECK(index == 1, "text chunk at position %d, want 1 (right after IHDR)", index);
    printf("round trip %dx%d, %zu bytes, %s chunk of %zu bytes: ok\n", W, H, len, type, strlen(text));
    // no temp file left beside it
    DIR *dir = opendir(path);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.') entries++;
    closedir(dir);
    TU_CHECK(entries == 1, "%d files in the output folder, want 1", entries);
    unlink(file);
    rmdir(path);
    free(got);
    free(png);
    free(rgb);
}

static void test_parameters_text(void) {
    sd_png_params p = {.prompt = "a cat, on a chair", .negative_prompt = "blurry", .steps = 28, .cfg = 4.5f,
                       .seed = 1, .width = 1024, .height = 768, .model = "sd3.5_large"};
    char *t = sd_png_parameters_text(&p);
    const char *want = "a cat, on a chair\nNegative prompt: blurry\nSteps: 28, Sampler: Euler (flow), CFG scale: 4.5, "
                       "Seed: 1, Size: 1024x768, Model: sd3.5_large";
    TU_CHECK(t && !strcmp(t, want), "parameters text:\n%s", t);
    free(t);
    p.negative_prompt = "";
    p.cfg = 1.0f;
    p.seed = 18446744073709551615ull;
    p.model = "my: model, v2";
    p.extra = "Scales: run1/checkpoint.safetensors";
    t = sd_png_parameters_text(&p);
    want = "a cat, on a chair\nSteps: 28, Sampler: Euler (flow), CFG scale: 1, Seed: 18446744073709551615, "
           "Size: 1024x768, Model: \"my: model, v2\", Scales: run1/checkpoint.safetensors";
    TU_CHECK(t && !strcmp(t, want), "parameters text without negative:\n%s", t);
    free(t);
}

static void test_grid(void) {
    const int w = 3, h = 2, n = 5;
    uint8_t imgs[5][2 * 3 * 3];
    const uint8_t *ptr[5];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < w * h * 3; k++) imgs[i][k] = (uint8_t)(10 * (i + 1) + k % 3);   // channel in the low digit
        ptr[i] = imgs[i];
    }
    uint8_t *g;
    int gw, gh;
    TU_CHECK(sd_grid(ptr, n, w, h, 2, 1, 255, &g, &gw, &gh) == SQ_OK, "grid: %s", sq_error_message());
    // 2 columns, 3 rows, 1-pixel gaps: (2·3 + 1) x (3·2 + 2)
    TU_CHECK(gw == 7 && gh == 8, "grid size %dx%d, want 7x8", gw, gh);
    int bad = 0;
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            int col = x / (w + 1), row = y / (h + 1), cx = x % (w + 1), cy = y % (h + 1), cell = row * 2 + col;
            bool in = cx < w && cy < h && cell < n;
            for (int c = 0; c < 3; c++) {
                int want = in ? 10 * (cell + 1) + c : 255;
                if (g[(y * gw + x) * 3 + c] != want) bad++;
            }
        }
    TU_CHECK(bad == 0, "grid: %d wrong bytes", bad);
    free(g);
    TU_CHECK(sd_grid_default_cols(1) == 1 && sd_grid_default_cols(4) == 2 && sd_grid_default_cols(5) == 3,
             "default columns");
    TU_CHECK(sd_grid(ptr, 0, w, h, 0, 1, 0, &g, &gw, &gh) == SQ_FAIL, "empty grid refused");
}

static void test_errors(void) {
    uint8_t px[3] = {1, 2, 3};
    TU_CHECK(sd_png_write("/nonexistent-dir/x.png", px, 1, 1, "parameters", "t") == SQ_FAIL &&
                 strstr(sq_error_message(), "/nonexistent-dir/x.png"), "unwritable path named: %s", sq_error_message());
    printf("unwritable: %s\n", sq_error_message());
    uint8_t *out;
    size_t len;
    TU_CHECK(sd_png_encode(px, 1, 1, "", "t", &out, &len) == SQ_FAIL, "empty keyword refused");
    TU_CHECK(sd_png_encode(px, 0, 1, NULL, NULL, &out, &len) == SQ_FAIL, "zero width refused");
    TU_CHECK(sd_png_encode(px, 1, 1, NULL, NULL, &out, &len) == SQ_OK && len > 33, "no chunk: %s", sq_error_message());
    int w, h, c;
    uint8_t *back = stbi_load_from_memory(out, (int)len, &w, &h, &c, 3);
    TU_CHECK(back && back[0] == 1 && back[1] == 2 && back[2] == 3, "1x1 round trip");
    stbi_image_free(back);
    free(out);
    TU_CHECK(sd_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value");
}

int main(void) {
    round_trip("a photo of a cat sitting on a red chair\nNegative prompt: blurry\nSteps: 28, Sampler: Euler (flow), "
               "CFG scale: 4.5, Seed: 1, Size: 1024x1024, Model: sd3.5_large", "tEXt");
    round_trip("une crème brûlée, 東京の夜景\nSteps: 4, Sampler: Euler (flow), CFG scale: 1, Seed: 7, Size: 16x16", "iTXt");
    test_parameters_text();
    test_grid();
    test_errors();
    return tu_finish("test_png");
}
