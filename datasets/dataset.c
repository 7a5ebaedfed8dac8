// datasets/dataset.c: ties the folder scan, buckets, crops, captions and cache keys
// together behind the iteration API of dataset.h.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "datasets/dataset.h"
#include "datasets/rng.h"

struct sd_dataset {
    sd_dataset_opts opts;
    char *captions_file, *images_dir, *caption_ext;   // copies: opts' strings belong to the caller
    sd_image_folder folder;
    sd_bucket_set buckets;
    int *item_bucket;
    char (*sha)[65];                    // memoised file hashes ("" until computed)
    sd_mask_source *mask_src;           // per image (all SD_MASK_SRC_NONE without masks)
    char **mask_path;                   // per image: its mask file, or NULL
    char (*mask_sha)[65];               // memoised mask file hashes
    int masked;                         // images whose source is not SD_MASK_SRC_NONE
};

void sd_dataset_opts_default(sd_dataset_opts *o) {
    memset(o, 0, sizeof(*o));
    o->resolution = 1024;
    o->buckets = true;
    o->crop = SD_CROP_CENTER;
    o->batch_size = 1;
}

int sd_dataset_open(sd_dataset **out, const sd_dataset_opts *opts) {
    *out = NULL;
    if (opts->batch_size < 1) return sq_errorf("batch size %d: must be at least 1", opts->batch_size);
    if (!(opts->captions.dropout >= 0.0f && opts->captions.dropout <= 1.0f))
        return sq_errorf("caption dropout %g: must be between 0 and 1", (double)opts->captions.dropout);
    if (opts->captions.keep_tags < 0) return sq_errorf("keep tags %d: must be >= 0", opts->captions.keep_tags);
    sd_dataset *ds = sq_calloc(1, sizeof(*ds));
    if (!ds) return SQ_FAIL;
    ds->opts = *opts;
    ds->images_dir = opts->folder.images_dir ? strdup(opts->folder.images_dir) : NULL;
    ds->captions_file = opts->folder.captions_file ? strdup(opts->folder.captions_file) : NULL;
    ds->opts.folder.images_dir = ds->images_dir;
    ds->opts.folder.captions_file = ds->captions_file;
    ds->caption_ext = opts->folder.caption_ext ? strdup(opts->folder.caption_ext) : NULL;
    ds->opts.folder.caption_ext = ds->caption_ext;
    ds->opts.masks.dir = NULL;   // only read by sd_masks_resolve, during this call
    if (sd_buckets_make(&ds->buckets, opts->resolution, opts->buckets) ||
        sd_image_folder_scan(&ds->folder, &ds->opts.folder)) {
        sd_dataset_close(ds);
        return SQ_FAIL;
    }
    int n = ds->folder.count;
    ds->item_bucket = sq_calloc((size_t)n, sizeof(int));
    ds->sha = sq_calloc((size_t)n, sizeof(*ds->sha));
    ds->mask_src = sq_calloc((size_t)n, sizeof(*ds->mask_src));
    ds->mask_path = sq_calloc((size_t)n, sizeof(*ds->mask_path));
    ds->mask_sha = sq_calloc((size_t)n, sizeof(*ds->mask_sha));
    if (!ds->item_bucket || !ds->sha || !ds->mask_src || !ds->mask_path || !ds->mask_sha ||
        sd_masks_resolve(&opts->masks, ds->folder.entries, n, ds->mask_src, ds->mask_path) != SQ_OK) {
        sd_dataset_close(ds);
        return SQ_FAIL;
    }
    for (int i = 0; i < n; i++) ds->masked += ds->mask_src[i] != SD_MASK_SRC_NONE;
    if (opts->masks.mode != SD_MASKS_NONE)
        sq_log_info("loss masks (%s%s): %d of %d images masked, the others weigh 1", opts->masks.mode == SD_MASKS_DIR ? "" : "alpha channel",
                    opts->masks.mode == SD_MASKS_DIR ? opts->masks.dir : "", ds->masked, n);
    int used = 0;
    int *per = sq_calloc((size_t)ds->buckets.count, sizeof(int));
    for (int i = 0; i < n; i++) {
        ds->item_bucket[i] = sd_bucket_nearest(&ds->buckets, ds->folder.entries[i].width, ds->folder.entries[i].height);
        if (per && per[ds->item_bucket[i]]++ == 0) used++;
    }
    free(per);
    sq_log_info("dataset %s: %d images (%d skipped), %d of %d buckets used at resolution %d", ds->images_dir, n,
                ds->folder.skipped, used, ds->buckets.count, opts->resolution);
    *out = ds;
    return SQ_OK;
}

void sd_dataset_close(sd_dataset *ds) {
    if (!ds) return;
    for (int i = 0; ds->mask_path && i < ds->folder.count; i++) free(ds->mask_path[i]);   // before the folder's count goes
    sd_image_folder_free(&ds->folder);
    sd_buckets_free(&ds->buckets);
    free(ds->item_bucket);
    free(ds->sha);
    free(ds->mask_path);
    free(ds->mask_src);
    free(ds->mask_sha);
    free(ds->images_dir);
    free(ds->captions_file);
    free(ds->caption_ext);
    free(ds);
}

int sd_dataset_count(const sd_dataset *ds) { return ds->folder.count; }

const sd_image_entry *sd_dataset_entry(const sd_dataset *ds, int index) {
    return index >= 0 && index < ds->folder.count ? &ds->folder.entries[index] : NULL;
}

int sd_dataset_epoch(const sd_dataset *ds, int epoch, sd_epoch_plan *plan) {
    if (epoch < 0) return sq_errorf("epoch %d: must be >= 0", epoch);
    return sd_epoch_plan_make(plan, ds->item_bucket, ds->folder.count, ds->buckets.count, ds->opts.batch_size,
                              ds->opts.drop_last, ds->opts.seed, epoch);
}

int sd_dataset_describe_item(const sd_dataset *ds, int index, int epoch, sd_dataset_item *item) {
    memset(item, 0, sizeof(*item));
    if (index < 0 || index >= ds->folder.count)
        return sq_errorf("dataset item %d: out of range (%d images)", index, ds->folder.count);
    if (epoch < 0) return sq_errorf("epoch %d: must be >= 0", epoch);
    const sd_image_entry *e = &ds->folder.entries[index];
    const sd_bucket *b = &ds->buckets.buckets[ds->item_bucket[index]];
    const uint64_t seed = ds->opts.seed;
    bool flip = ds->opts.random_flip && sd_rng_uniform(seed, SD_RNG_FLIP, epoch, index, 0) < 0.5f;
    sd_crop_plan_make(&item->plan, e->width, e->height, b->width, b->height, ds->opts.crop,
                      sd_rng_uniform(seed, SD_RNG_CROP, epoch, index, 0), sd_rng_uniform(seed, SD_RNG_CROP, epoch, index, 1),
                      flip);
    item->index = index;
    item->epoch = epoch;
    item->width = b->width;
    item->height = b->height;
    item->path = e->path;
    item->caption = sd_caption_augment(e->caption, &ds->opts.captions, seed, epoch, index);
    if (!item->caption) return sq_error_context("%s", e->path);
    return SQ_OK;
}

int sd_dataset_load_pixels(const sd_dataset *ds, sd_dataset_item *item) {
    (void)ds;
    sq_tensor_free(&item->image);
    return sd_transform_load(item->path, &item->plan, &item->image);
}

int sd_dataset_load_item(const sd_dataset *ds, int index, int epoch, sd_dataset_item *item) {
    if (sd_dataset_describe_item(ds, index, epoch, item)) return SQ_FAIL;
    if (sd_dataset_load_pixels(ds, item)) {
        sd_dataset_item_free(item);
        return SQ_FAIL;
    }
    return SQ_OK;
}

void sd_dataset_item_free(sd_dataset_item *item) {
    free(item->caption);
    sq_tensor_free(&item->image);
    memset(item, 0, sizeof(*item));
}

int sd_dataset_image_sha256(sd_dataset *ds, int index, char out[65]) {
    if (index < 0 || index >= ds->folder.count)
        return sq_errorf("dataset item %d: out of range (%d images)", index, ds->folder.count);
    if (!ds->sha[index][0] && sq_sha256_file(ds->folder.entries[index].path, ds->sha[index])) return SQ_FAIL;
    memcpy(out, ds->sha[index], 65);
    return SQ_OK;
}

int sd_dataset_latent_key(sd_dataset *ds, const sd_dataset_item *item, const char *encoder_hash, sd_cache_key *key) {
    char sha[65];
    if (sd_dataset_image_sha256(ds, item->index, sha)) return SQ_FAIL;
    sd_cache_key_latent(key, sha, &item->plan, ds->opts.crop, encoder_hash);
    return SQ_OK;
}

sd_mask_mode sd_dataset_mask_mode(const sd_dataset *ds) { return ds->opts.masks.mode; }
int sd_dataset_masked_count(const sd_dataset *ds) { return ds->masked; }

sd_mask_source sd_dataset_mask_source(const sd_dataset *ds, int index) {
    return index >= 0 && index < ds->folder.count ? ds->mask_src[index] : SD_MASK_SRC_NONE;
}

int sd_dataset_mask_key(sd_dataset *ds, const sd_dataset_item *item, int factor, sd_cache_key *key) {
    int i = item->index;
    sd_mask_source src = sd_dataset_mask_source(ds, i);
    SQ_CHECK(src != SD_MASK_SRC_NONE, "sd_dataset_mask_key: item %d has no mask", i);
    char sha[65];
    if (src == SD_MASK_SRC_ALPHA) {
        if (sd_dataset_image_sha256(ds, i, sha)) return SQ_FAIL;
    } else {
        if (!ds->mask_sha[i][0] && sq_sha256_file(ds->mask_path[i], ds->mask_sha[i])) return SQ_FAIL;
        memcpy(sha, ds->mask_sha[i], 65);
    }
    sd_cache_key_mask(key, sha, src == SD_MASK_SRC_ALPHA, &item->plan, ds->opts.crop, factor);
    return SQ_OK;
}

int sd_dataset_load_mask(const sd_dataset *ds, const sd_dataset_item *item, int factor, sq_tensor *out) {
    int i = item->index;
    sd_mask_source src = sd_dataset_mask_source(ds, i);
    SQ_CHECK(src != SD_MASK_SRC_NONE, "sd_dataset_load_mask: item %d has no mask", i);
    const char *path = src == SD_MASK_SRC_ALPHA ? item->path : ds->mask_path[i];
    memset(out, 0, sizeof(*out));
    if (sq_tensor_alloc(out, SQ_F32, SQ_CPU, 4, SQ_SHAPE(1, 1, item->height / factor, item->width / factor)))
        return sq_error_context("%s", path);
    if (sd_mask_load(src, path, &item->plan, factor, out->data) != SQ_OK) {
        sq_tensor_free(out);
        return SQ_FAIL;
    }
    double sum = 0;
    const float *w = out->data;
    for (int64_t k = 0; k < sq_tensor_numel(out); k++) sum += w[k];
    if (!(sum > 0)) {
        sq_tensor_free(out);
        return sq_errorf("%s: the %s of %s is 0 over the whole %dx%d crop (window %d,%d of %dx%d%s): nothing to train on; "
                         "fix the mask or leave the image out",
                         path, src == SD_MASK_SRC_ALPHA ? "alpha channel" : "mask", item->path, item->width, item->height,
                         item->plan.crop_x, item->plan.crop_y, item->plan.resized_w, item->plan.resized_h,
                         item->plan.flip ? ", flipped" : "");
    }
    return SQ_OK;
}
