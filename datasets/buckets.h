// datasets/buckets.h: aspect-ratio buckets and the per-epoch batch order.
//
// Buckets for resolution R (a multiple of 64, 64..8192): every size w x h with both
// sides multiples of 64, w * h <= R * R and 1/4 <= w / h <= 4 that is maximal in
// one side (for each width the tallest height allowed, and for each height the
// widest width), deduplicated, sorted by aspect w / h ascending. R = 1024 gives
// 512x2048 ... 1024x1024 ... 2048x512; the set is symmetric under w <-> h.
// With buckets disabled there is one bucket, R x R (every image centre- or
// random-cropped to a square).
// An image goes to the bucket whose aspect is nearest its own in log space
// (|log(w/h) - log(bw/bh)|; a tie goes to the larger area, then the wider bucket).
//
// Epoch order, a pure function of (seed, epoch) and the item -> bucket map (so a
// run resumed at epoch e sees the same batches): within each bucket the items (in
// index order) are Fisher-Yates shuffled, cut into batches of batch_size (the last
// partial batch of a bucket is kept, or dropped with drop_last), and the list of
// all batches is shuffled again so buckets interleave. Every batch holds items of
// one bucket only, so its images stack into one {B, 3, h, w} tensor.
#ifndef SD_BUCKETS_H
#define SD_BUCKETS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width, height;
} sd_bucket;

typedef struct {
    sd_bucket *buckets;   // sorted by width / height ascending
    int count;
} sd_bucket_set;

// SQ_FAIL with a message if R is not a multiple of 64 in [64, 8192].
int sd_buckets_make(sd_bucket_set *out, int resolution, bool enabled);

// What a model allows of an image's size: sides that are multiples of
// vae_factor x patch_size pixels, and at most pos_embed_max_size patches a side (the
// MMDiT's position table; 0: unknown, not checked). SD3.5 Large: 8, 2, 192, so
// images up to 3072 pixels a side.
typedef struct {
    int vae_factor, patch_size, pos_embed_max_size;
    const char *origin;  // the transformer config these come from, named in messages (may be NULL)
} sd_size_limits;

// The one check of a training resolution, made by every command before any work:
// R a multiple of 64 in [64, 8192], and every bucket of (R, buckets) within the
// model's limits (lim NULL: only the first part). With buckets the 4:1 bucket's long
// side (about 2R) is what meets the position table first, so a resolution whose
// square fits can still be refused. SQ_FAIL with one line naming the flag and the
// largest resolution that fits.
int sd_check_resolution(int resolution, bool buckets, const sd_size_limits *lim);
// The same for one width x height image (`sd-qzo sample --width/--height`).
int sd_check_image_size(int width, int height, const sd_size_limits *lim);
void sd_buckets_free(sd_bucket_set *s);
// Index of the bucket nearest the aspect of a w x h image (w, h >= 1).
int sd_bucket_nearest(const sd_bucket_set *s, int w, int h);

typedef struct {
    int bucket;      // index into the bucket set
    int count;       // 1..batch_size
    int *items;      // dataset indices (points into the plan's storage)
} sd_batch;

typedef struct {
    sd_batch *batches;
    int count;
    int *storage;
} sd_epoch_plan;

// item_bucket[i] is the bucket of item i (0 <= . < n_buckets). An epoch with no full
// batch under drop_last has count 0 (not an error; the caller decides).
int sd_epoch_plan_make(sd_epoch_plan *out, const int *item_bucket, int n_items, int n_buckets, int batch_size,
                       bool drop_last, uint64_t seed, int epoch);
void sd_epoch_plan_free(sd_epoch_plan *p);

#ifdef __cplusplus
}
#endif

#endif
