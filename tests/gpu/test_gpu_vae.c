// tests/gpu/test_gpu_vae.c: the SD3 VAE on CUDA against the diffusers fixtures:
// in f32 (how sd-qzo runs the frozen VAE) within 2e-2 relative error — in practice
// ~1e-6 — and in bf16, whose error is printed and bounded loosely (0.1): a random
// tiny VAE piles up bf16 rounding over ~30 layers. Skips (exit 77) without a GPU.
#include <stdlib.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "tests/gpu/gpu_start.h"
#include "tests/test_util.h"
#include "vae/model.h"

static sq_dtype g_dt;

static sq_tensor dev_tensor(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, g_dt, SQ_CUDA, e->ndim, e->shape) == SQ_OK && sq_st_load(io, name, &t) == SQ_OK,
             "fixture %s", name);
    return t;
}

static void compare(const char *what, const sq_tensor *got, sq_safetensors *io, const char *key) {
    const sq_st_entry *e = sq_st_find(io, key);
    int64_t n = sq_tensor_numel(got);
    float *g = malloc((size_t)n * sizeof(float)), *r = malloc((size_t)n * sizeof(float));
    sq_tensor_to_host_f32(g, got);
    sq_convert_to_f32(r, e->data, e->dtype, n);
    double err = tu_rel_err(g, r, n);
    double tol = g_dt == SQ_F32 ? 2e-2 : 0.1;
    printf("  %-28s CUDA %s vs diffusers: rel err %.2e\n", what, sq_dtype_name(g_dt), err);
    TU_CHECK(err <= tol, "%s: relative error %.3g > %g", what, err, tol);
    free(g);
    free(r);
}

int main(void) {
    sq_device dev;
    int start = tu_gpu_start(&dev);
    if (start) return start;
    char p[1024], io_path[1024];
    snprintf(p, sizeof p, "%s/vae/tiny", tu_fixtures_dir());
    snprintf(io_path, sizeof io_path, "%s/vae/tiny/io.safetensors", tu_fixtures_dir());
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    for (int round = 0; round < 2; round++) {
        g_dt = round ? SQ_BF16 : SQ_F32;
        sd_vae v;
        SQ_CHECK(sd_vae_load(&v, p, SQ_CUDA, g_dt) == SQ_OK, "%s", sq_error_message());
        sq_arena a;
        SQ_CHECK(sq_arena_init(&a, SQ_CUDA, 64 << 20) == SQ_OK, "%s", sq_error_message());
        const char *sfx[2] = {"", "_b2"};
        for (int s = 0; s < 2; s++) {
            char k[32], k2[32], k3[32];
            snprintf(k, sizeof k, "image%s", sfx[s]);
            snprintf(k2, sizeof k2, "latent%s", sfx[s]);
            snprintf(k3, sizeof k3, "decoded%s", sfx[s]);
            sq_tensor img = dev_tensor(io, k), ref_lat = dev_tensor(io, k2), lat, dec;
            sq_tensor_alloc(&lat, g_dt, SQ_CUDA, 4, ref_lat.shape);
            sq_tensor_alloc(&dec, g_dt, SQ_CUDA, 4, img.shape);
            TU_CHECK(sd_vae_encode(&v, &a, &img, &lat) == SQ_OK, "encode: %s", sq_error_message());
            compare(k2, &lat, io, k2);
            TU_CHECK(sd_vae_decode(&v, &a, &ref_lat, &dec) == SQ_OK, "decode: %s", sq_error_message());
            compare(k3, &dec, io, k3);
            sq_tensor_free(&img); sq_tensor_free(&ref_lat); sq_tensor_free(&lat); sq_tensor_free(&dec);
        }
        sq_arena_free(&a);
        sd_vae_free(&v);
    }
    sq_st_close(io);
    return tu_finish("test_gpu_vae");
}
