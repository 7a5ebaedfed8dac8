// datasets/dataset.h: what the training loop uses. One call opens the folder
// (scan + captions + bucket assignment), one call gives an epoch's batches, one
// call gives an item: its bucket size, crop, flip and final caption, and (if asked)
// the image as a host f32 {3, h, w} tensor in [-1, 1].
//
//   sd_dataset_opts o; sd_dataset_opts_default(&o);
//   o.folder.images_dir = "data/"; o.resolution = 1024; o.batch_size = 2; o.seed = 42;
//   sd_dataset *ds; if (sd_dataset_open(&ds, &o)) { ... sq_error_message() ... }
//   for (int epoch = start; ...) {
//       sd_epoch_plan plan; sd_dataset_epoch(ds, epoch, &plan);
//       for (int b = 0; b < plan.count; b++)              // all items of batch b share
//           for (int j = 0; j < plan.batches[b].count; j++) {   // one bucket size
//               sd_dataset_item it;
//               sd_dataset_describe_item(ds, plan.batches[b].items[j], epoch, &it);
//               ... cache lookup with sd_dataset_latent_key / sd_cache_key_text ...
//               ... on a miss: sd_dataset_load_pixels(ds, &it) then run the VAE ...
//               sd_dataset_item_free(&it);
//           }
//       sd_epoch_plan_free(&plan);
//   }
//
// Determinism: every choice is a function of (seed, epoch, index) (datasets/rng.h),
// so a resumed run, or a repeated call, gives identical batches, crops, flips and
// captions. The dataset is read-only after open except for the memoised file
// hashes (sd_dataset_image_sha256), so calls for different items may run in
// parallel only if the caller serialises sd_dataset_image_sha256.
#ifndef SD_DATASET_H
#define SD_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "datasets/buckets.h"
#include "datasets/cache.h"
#include "datasets/captions.h"
#include "datasets/image_folder.h"
#include "datasets/masks.h"
#include "datasets/transform.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    sd_image_folder_opts folder;   // images_dir is required
    int resolution;                // R: buckets have area <= R^2 (multiple of 64)
    bool buckets;                  // false: every image R x R
    sd_crop_mode crop;             // centre (default) or random window
    bool random_flip;              // mirror each item with probability 1/2 per epoch
    sd_caption_opts captions;      // dropout, tag shuffle
    int batch_size;                // >= 1
    bool drop_last;                // drop each bucket's last partial batch
    uint64_t seed;
    sd_mask_opts masks;            // loss masks (datasets/masks.h); default none
} sd_dataset_opts;

// Defaults: resolution 1024, buckets on, centre crop, no flip, no caption dropout
// or shuffle, batch 1, keep partial batches, seed 0, fail on bad images and on
// missing .txt captions, no full decode check.
void sd_dataset_opts_default(sd_dataset_opts *o);

typedef struct sd_dataset sd_dataset;

// Scans and validates everything (see image_folder.h, buckets.h); logs a one-line
// summary (images, buckets used). SQ_FAIL with a message naming the problem.
int sd_dataset_open(sd_dataset **out, const sd_dataset_opts *opts);
void sd_dataset_close(sd_dataset *ds);

int sd_dataset_count(const sd_dataset *ds);
const sd_image_entry *sd_dataset_entry(const sd_dataset *ds, int index);   // path, size, raw caption

// The batches of one epoch (see buckets.h). Free with sd_epoch_plan_free.
int sd_dataset_epoch(const sd_dataset *ds, int epoch, sd_epoch_plan *plan);

typedef struct {
    int index, epoch;
    int width, height;     // bucket (output) size: the image is {3, height, width}
    sd_crop_plan plan;     // resize, crop window and flip of this item in this epoch
    char *caption;         // final caption (after tag shuffle and dropout), owned
    const char *path;      // the image file (owned by the dataset)
    sq_tensor image;       // host f32 {3, height, width} in [-1, 1]; empty (data NULL)
                           // until sd_dataset_load_pixels / sd_dataset_load_item
} sd_dataset_item;

// Fills everything but the pixels; no file is read. SQ_FAIL on a bad index/epoch.
int sd_dataset_describe_item(const sd_dataset *ds, int index, int epoch, sd_dataset_item *item);
// Decodes and transforms the image of a described item into item->image.
// SQ_FAIL with a message naming the file if it no longer decodes or changed size.
int sd_dataset_load_pixels(const sd_dataset *ds, sd_dataset_item *item);
// describe + load_pixels.
int sd_dataset_load_item(const sd_dataset *ds, int index, int epoch, sd_dataset_item *item);
void sd_dataset_item_free(sd_dataset_item *item);

// sha256 hex of the image file's bytes, computed once and memoised (not
// thread-safe; see above). SQ_FAIL naming the file if it cannot be read.
int sd_dataset_image_sha256(sd_dataset *ds, int index, char out[65]);
// Cache key of the item's latent (file hash + bucket size + crop + flip + encoder).
int sd_dataset_latent_key(sd_dataset *ds, const sd_dataset_item *item, const char *encoder_hash,
                          sd_cache_key *key);

// ---- loss masks (datasets/masks.h; all found and checked by sd_dataset_open) ----
// The mode the dataset was opened with, and how many of its images have a mask
// (the others train with weight 1).
sd_mask_mode sd_dataset_mask_mode(const sd_dataset *ds);
int sd_dataset_masked_count(const sd_dataset *ds);
// Where item index's weights come from; SD_MASK_SRC_NONE: weight 1 everywhere.
sd_mask_source sd_dataset_mask_source(const sd_dataset *ds, int index);
// Cache key of a masked item's mask at latent resolution (`factor`: the VAE's);
// only for items whose source is not SD_MASK_SRC_NONE. SQ_FAIL naming an unreadable file.
int sd_dataset_mask_key(sd_dataset *ds, const sd_dataset_item *item, int factor, sd_cache_key *key);
// The mask of a masked item through the item's crop plan, area-averaged onto the latent
// grid: a new host f32 {1, 1, height/factor, width/factor} in [0, 1] (owned:
// sq_tensor_free it). SQ_FAIL naming the file; also when the mask is 0 over the whole
// crop (nothing left to train on: an error, not a skip).
int sd_dataset_load_mask(const sd_dataset *ds, const sd_dataset_item *item, int factor, sq_tensor *out);

#ifdef __cplusplus
}
#endif

#endif
