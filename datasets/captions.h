// datasets/captions.h: per-epoch caption augmentation. Tag shuffle: the caption is
// split at commas into tags (each trimmed of spaces; empty tags dropped), the first
// keep_tags stay in place, the rest are Fisher-Yates shuffled, and the tags are
// joined again with ", ". Dropout: with probability `dropout` the caption becomes ""
// (the unconditional prompt classifier-free guidance needs), decided after the
// shuffle. All draws come from datasets/rng.h keyed by (seed, epoch, index), so a
// caption is the same however often or in whatever order it is produced.
#ifndef SD_CAPTIONS_H
#define SD_CAPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float dropout;       // probability in [0, 1] of the empty caption
    bool shuffle_tags;   // shuffle comma-separated tags
    int keep_tags;       // leading tags kept in place when shuffling (>= 0)
} sd_caption_opts;

// The augmented caption for item `index` in `epoch`, malloc'ed (free it); NULL on
// out-of-memory with a message. With dropout 0 and no shuffle it is a copy.
char *sd_caption_augment(const char *caption, const sd_caption_opts *opts, uint64_t seed, int epoch, int index);

// Caption and prompt files must be UTF-8: SQ_OK when text[0..n) is valid UTF-8 (no
// overlong forms, surrogates or code points above U+10FFFF), else SQ_FAIL with
// "PATH:LINE: not valid UTF-8 (byte B of the line)".
int sd_text_check_utf8(const char *path, const char *text, size_t n);

#ifdef __cplusplus
}
#endif

#endif
