// tests/golden/test_vae.c: the SD3 VAE against diffusers' AutoencoderKL on the
// fixtures of tools/make_vae_fixtures.py (fp32 CPU, ≤ 1e-4 relative): encoder mean,
// normalised latent, and decoder output, from the diffusers folder and from the
// single-file layout, for a 64x64 image and a batch of two 32x48 images. Also: an
// image size that is not a multiple of 8 and a checkpoint with a missing tensor
// are refused with clear errors.
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "tests/test_util.h"
#include "vae/model.h"

static sq_tensor load_io(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK && sq_st_load(io, name, &t) == SQ_OK,
             "fixture %s", name);
    return t;
}

static void check(const char *what, const sq_tensor *got, sq_safetensors *io, const char *key) {
    sq_tensor ref = load_io(io, key);
    double e = tu_rel_err(got->data, ref.data, sq_tensor_numel(&ref));
    printf("  %-40s rel err %.2e\n", what, e);
    TU_CHECK(e <= 1e-4, "%s: relative error %.3g", what, e);
    sq_tensor_free(&ref);
}

static void run(const char *model_path, sq_safetensors *io) {
    sd_vae v;
    if (sd_vae_load(&v, model_path, SQ_CPU, SQ_F32) != SQ_OK) { TU_CHECK(0, "load: %s", sq_error_message()); return; }
    printf("%s: %d levels, widths %d/%d/%d/%d, %d groups, latent x%d\n", model_path, v.cfg.levels, v.cfg.block_out[0],
           v.cfg.block_out[1], v.cfg.block_out[2], v.cfg.block_out[3], v.cfg.groups, sd_vae_factor(&v.cfg));
    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 64 << 20);
    const char *suffix[2] = {"", "_b2"};
    for (int s = 0; s < 2; s++) {
        char k[64];
        snprintf(k, sizeof k, "image%s", suffix[s]);
        sq_tensor img = load_io(io, k);
        int64_t B = img.shape[0], H = img.shape[2], W = img.shape[3];
        sq_tensor lat, dec;
        sq_tensor_alloc(&lat, SQ_F32, SQ_CPU, 4, (int64_t[]){B, 16, H / 8, W / 8});
        sq_tensor_alloc(&dec, SQ_F32, SQ_CPU, 4, img.shape);
        tu_poison(lat.data, sq_tensor_numel(&lat));
        tu_poison(dec.data, sq_tensor_numel(&dec));
        TU_CHECK(sd_vae_encode(&v, &a, &img, &lat) == SQ_OK, "encode: %s", sq_error_message());
        snprintf(k, sizeof k, "latent%s", suffix[s]);
        char what[80];
        snprintf(what, sizeof what, "encode %lldx%lldx%lld (normalised latent)", (long long)B, (long long)H, (long long)W);
        check(what, &lat, io, k);
        // decode the reference latent so the decoder is checked on its own
        sq_tensor ref_lat = load_io(io, k);
        TU_CHECK(sd_vae_decode(&v, &a, &ref_lat, &dec) == SQ_OK, "decode: %s", sq_error_message());
        snprintf(k, sizeof k, "decoded%s", suffix[s]);
        snprintf(what, sizeof what, "decode %lldx%lldx%lld", (long long)B, (long long)H, (long long)W);
        check(what, &dec, io, k);
        sq_tensor_free(&img); sq_tensor_free(&lat); sq_tensor_free(&dec); sq_tensor_free(&ref_lat);
    }
    printf("  scratch arena high-water mark: %.2f MiB\n", a.high_water / 1048576.0);
    // an image that is not a multiple of 8
    sq_tensor odd, olat;
    sq_tensor_alloc(&odd, SQ_F32, SQ_CPU, 4, (int64_t[]){1, 3, 36, 40});
    sq_tensor_alloc(&olat, SQ_F32, SQ_CPU, 4, (int64_t[]){1, 16, 4, 5});
    sq_fill(&odd, 0.5f);
    TU_CHECK(sd_vae_encode(&v, &a, &odd, &olat) == SQ_FAIL && strstr(sq_error_message(), "not a multiple of 8"),
             "odd size refused: %s", sq_error_message());
    sq_tensor_free(&odd); sq_tensor_free(&olat);
    sq_arena_free(&a);
    sd_vae_free(&v);
}

static void test_missing_tensor(void) {
    char src[1024], dst[64] = "/tmp/sq-vae-bad-XXXXXX.safetensors";
    snprintf(src, sizeof src, "%s/vae/tiny/single_file.safetensors", tu_fixtures_dir());
    int fd = mkstemps(dst, 12);
    if (fd >= 0) close(fd);
    sq_safetensors *st;
    SQ_CHECK(sq_st_open(&st, src) == SQ_OK, "%s", sq_error_message());
    const char *victim = "first_stage_model.decoder.up.1.block.2.conv2.weight";
    int n = sq_st_count(st), k = 0;
    sq_st_tensor_desc *d = calloc((size_t)n, sizeof *d);
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!strcmp(e->name, victim)) continue;
        d[k] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
        memcpy(d[k].shape, e->shape, sizeof e->shape);
        k++;
    }
    SQ_CHECK(sq_st_write(dst, d, k, NULL, 0) == SQ_OK, "%s", sq_error_message());
    free(d);
    sq_st_close(st);
    sd_vae v;
    TU_CHECK(sd_vae_load(&v, dst, SQ_CPU, SQ_F32) == SQ_FAIL && strstr(sq_error_message(), victim),
             "missing tensor named: %s", sq_error_message());
    printf("incomplete checkpoint: %s\n", sq_error_message());
    unlink(dst);
}

int main(void) {
    char io_path[1024], p[1024];
    snprintf(io_path, sizeof io_path, "%s/vae/tiny/io.safetensors", tu_fixtures_dir());
    sq_safetensors *io;
    if (sq_st_open(&io, io_path) != SQ_OK) { fprintf(stderr, "%s\n", sq_error_message()); return 1; }
    snprintf(p, sizeof p, "%s/vae/tiny", tu_fixtures_dir());   // pipeline-style folder holding vae/
    run(p, io);
    snprintf(p, sizeof p, "%s/vae/tiny/single_file.safetensors", tu_fixtures_dir());
    run(p, io);
    test_missing_tensor();
    sq_st_close(io);
    return tu_finish("test_vae");
}
