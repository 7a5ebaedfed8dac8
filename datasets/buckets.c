// datasets/buckets.c: bucket sizes for a resolution, nearest-aspect assignment, and
// the deterministic per-epoch batch order (see buckets.h for the rules).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "datasets/buckets.h"
#include "datasets/rng.h"

static int cmp_bucket(const void *a, const void *b) {
    const sd_bucket *x = a, *y = b;
    // Aspect ascending: x.w / x.h < y.w / y.h  <=>  x.w * y.h < y.w * x.h (exact).
    long long l = (long long)x->width * y->height, r = (long long)y->width * x->height;
    if (l != r) return l < r ? -1 : 1;
    return x->width - y->width;
}

static void add_unique(sd_bucket *b, int *n, int w, int h) {
    for (int i = 0; i < *n; i++)
        if (b[i].width == w && b[i].height == h) return;
    b[*n].width = w;
    b[*n].height = h;
    (*n)++;
}

static bool resolution_ok(int resolution) { return resolution >= 64 && resolution <= 8192 && resolution % 64 == 0; }

int sd_buckets_make(sd_bucket_set *out, int resolution, bool enabled) {
    memset(out, 0, sizeof(*out));
    if (!resolution_ok(resolution))
        return sq_errorf("resolution %d: must be a multiple of 64 between 64 and 8192", resolution);
    const long long area = (long long)resolution * resolution;
    // At most one bucket per width and one per height, each side up to 4R / 64.
    int cap = 2 * (4 * resolution / 64) + 2;
    sd_bucket *b = sq_calloc((size_t)cap, sizeof(sd_bucket));
    if (!b) return SQ_FAIL;
    int n = 0;
    if (!enabled) {
        add_unique(b, &n, resolution, resolution);
    } else {
        for (int side = 64; side <= 4 * resolution; side += 64) {
            int other = (int)(area / side / 64 * 64);   // largest multiple of 64 with side * other <= R^2
            if (other < 64) break;
            // Aspect within [1/4, 4]: 4 * min >= max.
            int lo = side < other ? side : other, hi = side < other ? other : side;
            if (4LL * lo < hi) continue;
            add_unique(b, &n, side, other);   // for this width, the tallest height
            add_unique(b, &n, other, side);   // for this height, the widest width
        }
    }
    qsort(b, (size_t)n, sizeof(sd_bucket), cmp_bucket);
    out->buckets = b;
    out->count = n;
    return SQ_OK;
}

// The longest side of any bucket of (R, enabled).
static int max_bucket_side(int resolution, bool enabled) {
    sd_bucket_set s;
    if (sd_buckets_make(&s, resolution, enabled) != SQ_OK) return -1;
    int m = 0;
    for (int i = 0; i < s.count; i++) {
        if (s.buckets[i].width > m) m = s.buckets[i].width;
        if (s.buckets[i].height > m) m = s.buckets[i].height;
    }
    sd_buckets_free(&s);
    return m;
}

// Largest side in pixels the position table allows (0: no limit known).
static int max_pixels(const sd_size_limits *lim) {
    return lim && lim->pos_embed_max_size > 0 ? lim->pos_embed_max_size * lim->patch_size * lim->vae_factor : 0;
}

int sd_check_resolution(int resolution, bool buckets, const sd_size_limits *lim) {
    if (!resolution_ok(resolution))
        return sq_errorf("--resolution must be a positive multiple of 64 up to 8192, not %d", resolution);
    if (!lim) return SQ_OK;
    int step = lim->vae_factor * lim->patch_size;
    if (step > 0 && resolution % step)
        return sq_errorf("--resolution %d is not a multiple of %d (VAE factor %d x patch size %d)", resolution, step,
                         lim->vae_factor, lim->patch_size);
    int limit = max_pixels(lim), side = max_bucket_side(resolution, buckets);
    if (!limit || side <= limit) return SQ_OK;
    // the largest resolution whose buckets all fit, to say what to use instead
    int best = 0;
    for (int r = 64; r <= 8192 && max_bucket_side(r, buckets) <= limit; r += 64) best = r;
    const char *who = lim->origin ? lim->origin : "this transformer";
    if (buckets && side > resolution)
        return sq_errorf("--resolution %d with buckets: the 4:1 bucket is %d pixels long, %d patches, and %s has "
                         "pos_embed_max_size %d (images up to %d pixels a side); use --resolution %d or less, or "
                         "--no-buckets", resolution, side, side / step, who, lim->pos_embed_max_size, limit, best);
    return sq_errorf("--resolution %d is too large for %s: %d patches per side, its pos_embed_max_size is %d "
                     "(use --resolution %d or less)", resolution, who, side / step, lim->pos_embed_max_size, best);
}

int sd_check_image_size(int width, int height, const sd_size_limits *lim) {
    int step = lim->vae_factor * lim->patch_size, limit = max_pixels(lim);
    if (width < 1 || height < 1 || width % step || height % step)
        return sq_errorf("--width %d / --height %d must be multiples of %d (VAE factor %d x patch size %d)", width, height,
                         step, lim->vae_factor, lim->patch_size);
    if (limit && (width > limit || height > limit))
        return sq_errorf("--width %d / --height %d: %s has pos_embed_max_size %d (patches a side), so images up to %d "
                         "pixels a side", width, height, lim->origin ? lim->origin : "this transformer",
                         lim->pos_embed_max_size, limit);
    return SQ_OK;
}

void sd_buckets_free(sd_bucket_set *s) {
    free(s->buckets);
    memset(s, 0, sizeof(*s));
}

int sd_bucket_nearest(const sd_bucket_set *s, int w, int h) {
    const double a = log((double)w / (double)h);
    int best = 0;
    double best_d = INFINITY;
    for (int i = 0; i < s->count; i++) {
        const sd_bucket *b = &s->buckets[i];
        double d = fabs(a - log((double)b->width / (double)b->height));
        const sd_bucket *o = &s->buckets[best];
        // Ties (equal within rounding of the logs): larger area, then wider.
        if (d < best_d - 1e-12 ||
            (fabs(d - best_d) <= 1e-12 &&
             ((long long)b->width * b->height > (long long)o->width * o->height ||
              ((long long)b->width * b->height == (long long)o->width * o->height && b->width > o->width)))) {
            best = i;
            best_d = d;
        }
    }
    return best;
}

// Fisher-Yates over v[0..n) with draws from (seed, stream, epoch, key).
static void shuffle(int *v, int n, uint64_t seed, int epoch, int key) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)sd_rng_below(seed, SD_RNG_EPOCH_SHUFFLE, epoch, key, (uint32_t)i, (uint32_t)(i + 1));
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

int sd_epoch_plan_make(sd_epoch_plan *out, const int *item_bucket, int n_items, int n_buckets, int batch_size,
                       bool drop_last, uint64_t seed, int epoch) {
    memset(out, 0, sizeof(*out));
    if (batch_size < 1) return sq_errorf("batch size %d: must be at least 1", batch_size);
    if (n_items < 0 || n_buckets < 1) return sq_errorf("epoch plan: %d items in %d buckets", n_items, n_buckets);
    int *count = sq_calloc((size_t)n_buckets + 1, sizeof(int));
    int *storage = sq_calloc((size_t)n_items + 1, sizeof(int));
    sd_batch *batches = sq_calloc((size_t)n_items + 1, sizeof(sd_batch));
    int *order = sq_calloc((size_t)n_items + 1, sizeof(int));
    if (!count || !storage || !batches || !order) {
        free(count), free(storage), free(batches), free(order);
        return SQ_FAIL;
    }
    for (int i = 0; i < n_items; i++) {
        SQ_CHECK(item_bucket[i] >= 0 && item_bucket[i] < n_buckets, "item %d in bucket %d of %d", i, item_bucket[i],
                 n_buckets);
        count[item_bucket[i]]++;
    }
    // Items of each bucket, in index order, then shuffled with the bucket as key.
    int pos = 0, nb = 0;
    for (int b = 0; b < n_buckets; b++) {
        int *mine = storage + pos;
        int m = 0;
        for (int i = 0; i < n_items; i++)
            if (item_bucket[i] == b) mine[m++] = i;
        shuffle(mine, m, seed, epoch, b);
        for (int s = 0; s < m; s += batch_size) {
            int c = m - s < batch_size ? m - s : batch_size;
            if (c < batch_size && drop_last) break;
            batches[nb].bucket = b;
            batches[nb].count = c;
            batches[nb].items = mine + s;
            nb++;
        }
        pos += m;
    }
    // Then the order of the batches themselves (key -1 keeps it apart from buckets).
    for (int i = 0; i < nb; i++) order[i] = i;
    shuffle(order, nb, seed, epoch, -1);
    sd_batch *sorted = sq_calloc((size_t)nb + 1, sizeof(sd_batch));
    if (!sorted) {
        free(count), free(storage), free(batches), free(order);
        return SQ_FAIL;
    }
    for (int i = 0; i < nb; i++) sorted[i] = batches[order[i]];
    free(count), free(batches), free(order);
    out->batches = sorted;
    out->count = nb;
    out->storage = storage;
    return SQ_OK;
}

void sd_epoch_plan_free(sd_epoch_plan *p) {
    free(p->batches);
    free(p->storage);
    memset(p, 0, sizeof(*p));
}
