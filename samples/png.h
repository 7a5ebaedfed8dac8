// samples/png.h: PNG files of generated images, with the generation settings in a
// text chunk "parameters" written the way AUTOMATIC1111's web UI writes it, so the
// tools artists already use (A1111/Forge "PNG Info", ComfyUI, image browsers)
// show the prompt, seed and settings:
//   <prompt>
//   Negative prompt: <negative>          (only when there is one)
//   Steps: 28, Sampler: Euler (flow), CFG scale: 4.5, Seed: 1, Size: 1024x1024, Model: sd3.5_large
// The pixels are encoded by stb_image_write; the chunk is spliced in after IHDR
// here (with its CRC-32): a tEXt chunk when the text is ASCII, else an iTXt chunk
// (UTF-8), as PIL does for text Latin-1 cannot hold. Files are written atomically
// (temp file, fsync, rename), so a crash never leaves a truncated PNG behind.
#ifndef SD_PNG_H
#define SD_PNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *prompt;
    const char *negative_prompt;  // NULL or "" : no "Negative prompt:" line
    int steps;
    float cfg;
    uint64_t seed;
    int width, height;
    const char *model;            // NULL: omitted
    const char *extra;            // NULL, or more "Key: value, ..." pairs appended as is
} sd_png_params;

// The "parameters" text above, malloc'ed (caller frees). Values holding ',', ':' or
// a newline are JSON-quoted as A1111 does. NULL on out of memory (message set).
char *sd_png_parameters_text(const sd_png_params *p);

// Encodes RGB8 pixels (H,W,3) as PNG, with a text chunk when keyword is non-NULL
// (1-79 printable Latin-1 characters). *out is malloc'ed. SQ_FAIL with a message.
int sd_png_encode(const uint8_t *rgb, int width, int height, const char *keyword, const char *text, uint8_t **out,
                  size_t *len);
// The same, written atomically to path. Errors name the file.
int sd_png_write(const char *path, const uint8_t *rgb, int width, int height, const char *keyword, const char *text);

// CRC-32 (ISO 3309, as PNG chunks use); crc starts at 0 and may be chained.
uint32_t sd_crc32(uint32_t crc, const uint8_t *data, size_t n);

#endif
