// datasets/cache.h: the on-disk cache of frozen-encoder outputs (VAE latents, text
// embeddings), so the VAE and the text encoders run once per dataset rather than
// once per step and can be freed before the MMDiT needs the memory.
//
// An entry is a safetensors file <dir>/<key[0:2]>/<key>.safetensors holding the
// named tensors the caller gives (e.g. "latent"; "context", "pooled"), written
// atomically (core/safetensors.h: temp + fsync + rename), with the key in the
// metadata (checked on load). The key is sha256 of everything that changes
// the result, so a stale entry is never found rather than detected:
//   latent key: "latent", sha256 of the image file's bytes, the target (bucket)
//               size, the crop mode and window (centre, or random with its offset:
//               random crops rarely hit, by design), the flip, and the caller's
//               encoder hash (identify the VAE weights, e.g. sha256 of the file).
//   text key:   "text", the exact caption text (after dropout/shuffle) and the
//               encoder hash (identify the text encoders).
//   mask key:   "mask", where the weights come from (a mask file and sha256 of its
//               bytes, or an image's alpha channel and sha256 of the image), the
//               bucket size, crop window, flip and the latent factor: a changed mask
//               file is a new key. No encoder runs, so no encoder hash.
// A present entry that cannot be used (truncated, corrupted, not safetensors, a
// tensor missing or of another shape, a key that does not match) is a miss: a
// warning names the file, the file is removed, and the caller's next store
// rewrites it. Nothing in a bad entry can crash the reader (the safetensors reader
// validates the header and offsets before any read).
#ifndef SD_CACHE_H
#define SD_CACHE_H

#include <stdbool.h>

#include "core/tensor.h"
#include "datasets/transform.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char hex[65];   // sha256 hex of the key parts
} sd_cache_key;

// image_sha256: hex digest of the image file (sd_dataset_image_sha256 or
// sq_sha256_file). The plan gives target size, crop window and flip.
void sd_cache_key_latent(sd_cache_key *key, const char *image_sha256, const sd_crop_plan *plan, sd_crop_mode crop,
                         const char *encoder_hash);
void sd_cache_key_text(sd_cache_key *key, const char *caption, const char *encoder_hash);
// source_sha256: the mask file's digest, or the image's when alpha is true (the
// image's alpha channel is the mask).
void sd_cache_key_mask(sd_cache_key *key, const char *source_sha256, bool alpha, const sd_crop_plan *plan,
                       sd_crop_mode crop, int factor);

typedef struct sd_cache sd_cache;

// Opens (creating it and its parents when needed) the cache directory.
int sd_cache_open(sd_cache **out, const char *dir);
void sd_cache_close(sd_cache *c);

// "<dir>/<k[0:2]>/<k>.safetensors" into buf (size >= strlen(dir) + 90).
void sd_cache_entry_path(const sd_cache *c, const sd_cache_key *key, char *buf, size_t size);

// A named tensor the caller gives (store) or wants filled (load).
typedef struct {
    const char *name;
    sq_tensor *tensor;
} sd_cache_item;

// true when an entry file exists (no validation; use it to decide whether the
// encoders must be loaded at all).
bool sd_cache_exists(const sd_cache *c, const sd_cache_key *key);

// Loads every named tensor into the caller's tensors (allocated, of the expected
// shape, any device and float dtype; converted from the stored dtype). *hit = true
// when all were loaded; false on a plain miss (no file) or on an unusable entry
// (warned about and removed; the caller's tensors may then be partly written).
// Returns SQ_FAIL only for a caller error (e.g. n <= 0).
int sd_cache_load(sd_cache *c, const sd_cache_key *key, const sd_cache_item *items, int n, bool *hit);

// Stores the named tensors (any device; f32/bf16/f16 kept as they are) as the entry
// for key, replacing any old one atomically. SQ_FAIL with a message naming the file
// (disk full, permissions).
int sd_cache_store(sd_cache *c, const sd_cache_key *key, const sd_cache_item *items, int n);

#ifdef __cplusplus
}
#endif

#endif
