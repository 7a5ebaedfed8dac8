// tests/unit/test_quantize_file.c: `sd-qzo quantize`'s streaming quantiser
// (mmdit/quantize_file.c) on the large-like MMDiT fixture, diffusers folder and
// single file, on the device named by argv[1] ("cpu", or "cuda": the GPU suite runs
// it so, and it skips with 77 without a GPU):
// - every int4 layer's codes and scales are those of the old reference quantiser
//   (tests/quant_ref.h) on the widened weights, bit for bit;
// - every other tensor is copied byte for byte;
// - the source hash patched into the header after streaming equals
//   sd_base_source_sha256 of the source;
// - a stale file at the output path (poison) is replaced;
// - the stats report the bytes read and a peak resident set;
// - releasing an entry's pages keeps its bytes: re-read from a mapped file, and
//   left alone in a set made from heap memory (sq_st_from_entries, as a GGUF base).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "mmdit/base_model.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "tests/quant_ref.h"
#include "tests/test_util.h"

static void check_file(const char *src, bool single_file, const char *out, int group) {
    sq_safetensors *s = NULL, *q = NULL;
    if (sq_st_open(&s, src) != SQ_OK || sq_st_open(&q, out) != SQ_OK) {
        TU_CHECK(0, "open: %s", sq_error_message());
        sq_st_close(s);
        return;
    }
    char hex[65];
    sd_base_source_sha256(s, single_file, hex);
    const char *rec = sq_st_metadata(q, "sd_qzo.source_sha256");
    TU_CHECK(rec && !strcmp(rec, hex), "%s: recorded source hash %s, want %s", out, rec ? rec : "(none)", hex);
    int quantised = 0, copied = 0, bad = 0;
    for (int i = 0; i < sq_st_count(s); i++) {
        const sq_st_entry *e = sq_st_at(s, i);
        if (!sd_base_keep_tensor(e->name, single_file)) continue;
        sd_qlayer_kind kind;
        char name[512];
        if (sd_mmdit_should_quantize(e->name, e->ndim, e->shape, group, &kind)) {
            int64_t nout = e->shape[0], k = e->shape[1], n = nout * k;
            float *w = malloc(sizeof(float) * (size_t)n), *sc = malloc(sizeof(float) * (size_t)(n / group));
            uint8_t *c = malloc((size_t)n / 2);
            if (!w || !sc || !c) { TU_CHECK(0, "allocation"); free(w); free(sc); free(c); break; }
            sq_convert_to_f32(w, e->data, e->dtype, n);
            ref_quantize_q4(w, nout, k, group, c, sc);
            snprintf(name, sizeof name, "%s%s", e->name, SD_Q4_CODES_SUFFIX);
            const sq_st_entry *qc = sq_st_find(q, name);
            snprintf(name, sizeof name, "%s%s", e->name, SD_Q4_SCALES_SUFFIX);
            const sq_st_entry *qs = sq_st_find(q, name);
            bool same = qc && qs && qc->nbytes == (size_t)n / 2 && qs->nbytes == sizeof(float) * (size_t)(n / group) &&
                        !memcmp(qc->data, c, qc->nbytes) && !memcmp(qs->data, sc, qs->nbytes);
            TU_CHECK(same, "%s: %s codes/scales differ from the reference quantiser", out, e->name);
            bad += !same;
            quantised++;
            free(w);
            free(sc);
            free(c);
        } else {
            const sq_st_entry *o = sq_st_find(q, e->name);
            bool same = o && o->nbytes == e->nbytes && !memcmp(o->data, e->data, e->nbytes);
            TU_CHECK(same, "%s: %s not copied as it was", out, e->name);
            bad += !same;
            copied++;
        }
    }
    printf("%s: %d int4 layers bit-identical to the reference, %d tensors copied, source hash %.16s… (%d bad)\n", out,
           quantised, copied, hex, bad);
    TU_CHECK(quantised > 0 && copied > 0, "the fixture has both kinds of tensor");
    sq_st_close(s);
    sq_st_close(q);
}

static void test_release(const char *src_dir) {
    sq_safetensors *s = NULL;
    if (sq_st_open(&s, src_dir) != SQ_OK) { TU_CHECK(0, "open: %s", sq_error_message()); return; }
    const sq_st_entry *e = sq_st_at(s, 0);
    for (int i = 0; i < sq_st_count(s); i++)
        if (sq_st_at(s, i)->nbytes > e->nbytes) e = sq_st_at(s, i);
    uint8_t *copy = malloc(e->nbytes);
    if (copy) {
        memcpy(copy, e->data, e->nbytes);
        sq_st_entry_prefetch(s, e);
        sq_st_entry_release(s, e);
        TU_CHECK(!memcmp(copy, e->data, e->nbytes), "a mapped entry reads back the same after release");
    }
    free(copy);
    sq_st_close(s);
    // heap data behind a set of entries: MADV_DONTNEED would zero it, so release must not touch it
    size_t n = 1 << 20;
    float *heap = malloc(n * sizeof(float));
    if (!heap) return;
    for (size_t i = 0; i < n; i++) heap[i] = (float)i + 0.5f;
    sq_st_entry ent = {.name = "w", .dtype = SQ_F32, .ndim = 1, .shape = {(int64_t)n}, .data = heap, .nbytes = n * 4};
    sq_safetensors *h = NULL;
    if (sq_st_from_entries(&h, "heap", &ent, 1, NULL, 0, NULL, NULL) != SQ_OK) { TU_CHECK(0, "%s", sq_error_message()); free(heap); return; }
    sq_st_entry_release(h, sq_st_at(h, 0));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += heap[i] != (float)i + 0.5f;
    TU_CHECK(bad == 0, "release changed %zu heap values of a from_entries set", bad);
    sq_st_close(h);
    free(heap);
}

int main(int argc, char **argv) {
    bool cuda = argc > 1 && !strcmp(argv[1], "cuda");
    if (cuda && sq_cuda_device_count() == 0) {
        printf("SKIP: no CUDA GPU\n");
        return 77;
    }
    char tmpdir[64] = "/tmp/sq-quantize-file-XXXXXX";
    if (!mkdtemp(tmpdir)) return 1;
    char src_dir[1024], src_single[1024], out[1100];
    snprintf(src_dir, sizeof src_dir, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    snprintf(src_single, sizeof src_single, "%s/mmdit/large_like/single_file.safetensors", tu_fixtures_dir());
    if (!cuda) test_release(src_dir);
    sd_quantize_options o = {.quiet = true, .device = cuda ? SQ_DEVICE_CUDA : SQ_DEVICE_CPU};
    for (int group = 32; group <= 128; group *= 2)
        for (int single = 0; single <= 1; single++) {
            snprintf(out, sizeof out, "%s/q%d_%d.safetensors", tmpdir, group, single);
            FILE *f = fopen(out, "w");   // a stale file the quantiser must replace
            if (f) { fputs("poison", f); fclose(f); }
            sd_quantize_stats st;
            int rc = sd_quantize_checkpoint_ex(single ? src_single : src_dir, out, group, &o, &st);
            TU_CHECK(rc == SQ_OK, "quantize (G=%d, %s): %s", group, single ? "single file" : "folder", sq_error_message());
            if (rc != SQ_OK) continue;
            TU_CHECK(st.on_gpu == cuda && st.bytes_in > 0 && st.peak_rss_bytes > 0 && st.seconds > 0,
                     "stats: on_gpu %d, %lld bytes, peak %lld", st.on_gpu, (long long)st.bytes_in,
                     (long long)st.peak_rss_bytes);
            check_file(single ? src_single : src_dir, single, out, group);
            remove(out);
        }
    rmdir(tmpdir);
    return tu_finish(cuda ? "test_quantize_file (cuda)" : "test_quantize_file (cpu)");
}
