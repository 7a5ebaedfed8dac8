// tests/golden/test_mmdit_forward.c: the C MMDiT forward pass against diffusers'
// SD3Transformer2DModel on the fixtures of tools/make_mmdit_fixtures.py: output and
// intermediate activations within 1e-4 relative error (fp32, CPU), for a Large-like
// model (sharded diffusers folder and the single-file layout), a Medium-like model
// with dual attention, and a batch-2 non-square SD3.0-like model (also from bf16
// weights). Also: a checkpoint missing a tensor, or with one mis-shaped, is refused
// with an error naming the key.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "mmdit/model.h"
#include "tests/test_util.h"

static const double TOL = 1e-4;

static sq_tensor load_io(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    SQ_CHECK(e != NULL, "fixture lacks %s", name);
    sq_tensor t;
    SQ_CHECK(sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK, "alloc");
    SQ_CHECK(sq_st_load(io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

static void compare(const char *what, const float *got, sq_safetensors *io, const char *key) {
    sq_tensor ref = load_io(io, key);
    double e = got ? tu_rel_err(got, ref.data, sq_tensor_numel(&ref)) : INFINITY;
    printf("  %-34s rel err %.2e\n", what, e);
    TU_CHECK(e <= TOL, "%s: relative error %.3g > %g", what, e, TOL);
    sq_tensor_free(&ref);
}

static void run_case(const char *cas, const char *model_path, const char *out_key, bool check_trace) {
    char io_path[1024];
    snprintf(io_path, sizeof io_path, "%s/mmdit/%s/io.safetensors", tu_fixtures_dir(), cas);
    sq_safetensors *io;
    if (sq_st_open(&io, io_path) != SQ_OK) { TU_CHECK(0, "%s", sq_error_message()); return; }
    sd_mmdit m;
    if (sd_mmdit_load(&m, model_path, SQ_CPU, SQ_F32) != SQ_OK) {
        TU_CHECK(0, "load %s: %s", model_path, sq_error_message());
        sq_st_close(io);
        return;
    }
    printf("%s (%s):\n  ", cas, model_path);
    sd_mmdit_print_config(&m.cfg, stdout);
    // the config's parameter count must equal the checkpoint's, tensor for tensor
    sq_safetensors *ck;
    char weights[1100];
    snprintf(weights, sizeof weights, "%s/transformer", model_path);
    if (access(weights, F_OK) != 0) snprintf(weights, sizeof weights, "%s", model_path);
    if (sq_st_open(&ck, weights) == SQ_OK) {
        int64_t total = 0;
        for (int i = 0; i < sq_st_count(ck); i++) total += sq_shape_numel(sq_st_at(ck, i)->ndim, sq_st_at(ck, i)->shape);
        TU_CHECK(total == sd_mmdit_config_params(&m.cfg), "parameter count %lld vs checkpoint %lld",
                 (long long)sd_mmdit_config_params(&m.cfg), (long long)total);
        sq_st_close(ck);
    }
    sq_tensor x = load_io(io, "hidden_states"), ctx = load_io(io, "encoder_hidden_states");
    sq_tensor pooled = load_io(io, "pooled_projections"), t = load_io(io, "timestep");
    sq_tensor out;
    sq_tensor_alloc(&out, SQ_F32, SQ_CPU, 4, x.shape);
    tu_poison(out.data, sq_tensor_numel(&out));
    sq_arena arena;
    sq_arena_init(&arena, SQ_CPU, 64 << 20);
    sd_mmdit_trace trace = {0};
    int rc = sd_mmdit_forward(&m, &arena, &x, t.data, &ctx, &pooled, NULL, &out, check_trace ? &trace : NULL);
    TU_CHECK(rc == SQ_OK, "forward: %s", sq_error_message());
    if (rc == SQ_OK) {
        if (check_trace) {
            compare("after patch + position embedding", trace.x_embedded, io, "x_embedded");
            compare("timestep + pooled embedding", trace.temb, io, "temb");
            compare("context embedder", trace.context_embedded, io, "context_embedded");
            compare("block 0 image stream", trace.block0_hidden, io, "block0_hidden");
            if (sq_st_find(io, "block0_context")) compare("block 0 context stream", trace.block0_context, io, "block0_context");
            compare("entering norm_out", trace.final_hidden, io, "final_hidden");
        }
        compare("output", out.data, io, out_key);
        printf("  scratch arena high-water mark: %.2f MiB\n", arena.high_water / 1048576.0);
    }
    sd_mmdit_trace_free(&trace);
    sq_arena_free(&arena);
    sq_tensor_free(&x); sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&t); sq_tensor_free(&out);
    sd_mmdit_free(&m);
    sq_st_close(io);
}

// Writes a copy of the single-file fixture with one tensor dropped or re-shaped.
static void broken_checkpoint(const char *src, const char *dst, const char *victim, bool reshape) {
    sq_safetensors *st;
    SQ_CHECK(sq_st_open(&st, src) == SQ_OK, "%s", sq_error_message());
    int n = sq_st_count(st), k = 0;
    sq_st_tensor_desc *d = calloc((size_t)n, sizeof *d);
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!strcmp(e->name, victim) && !reshape) continue;
        d[k] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
        memcpy(d[k].shape, e->shape, sizeof e->shape);
        if (!strcmp(e->name, victim)) { d[k].ndim = 2; d[k].shape[0] = e->shape[1]; d[k].shape[1] = e->shape[0]; }
        k++;
    }
    SQ_CHECK(sq_st_write(dst, d, k, NULL, 0) == SQ_OK, "%s", sq_error_message());
    free(d);
    sq_st_close(st);
}

static void test_bad_checkpoints(void) {
    char src[1024], dst[64] = "/tmp/sq-mmdit-bad-XXXXXX.safetensors";
    snprintf(src, sizeof src, "%s/mmdit/large_like/single_file.safetensors", tu_fixtures_dir());
    int fd = mkstemps(dst, 12);
    if (fd >= 0) close(fd);
    const char *victim = "model.diffusion_model.joint_blocks.1.x_block.mlp.fc2.weight";
    for (int reshape = 0; reshape < 2; reshape++) {
        broken_checkpoint(src, dst, victim, reshape);
        sd_mmdit m;
        int rc = sd_mmdit_load(&m, dst, SQ_CPU, SQ_F32);
        const char *msg = sq_error_message();
        printf("%s checkpoint: %s\n", reshape ? "mis-shaped" : "incomplete", msg);
        TU_CHECK(rc == SQ_FAIL && strstr(msg, victim) && (!reshape || strstr(msg, "expected [32,128]")),
                 "%s tensor must be reported by key: %s", reshape ? "mis-shaped" : "missing", msg);
    }
    unlink(dst);
}

int main(void) {
    char p[1024];
    snprintf(p, sizeof p, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    run_case("large_like", p, "output", true);
    snprintf(p, sizeof p, "%s/mmdit/large_like/single_file.safetensors", tu_fixtures_dir());
    run_case("large_like", p, "output", true);
    snprintf(p, sizeof p, "%s/mmdit/medium_like", tu_fixtures_dir());   // a pipeline-style parent folder
    run_case("medium_like", p, "output", true);
    snprintf(p, sizeof p, "%s/mmdit/nonsquare_b2/transformer", tu_fixtures_dir());
    run_case("nonsquare_b2", p, "output", true);
    snprintf(p, sizeof p, "%s/mmdit/nonsquare_b2/transformer_bf16", tu_fixtures_dir());
    run_case("nonsquare_b2", p, "output_bf16weights", false);
    test_bad_checkpoints();
    return tu_finish("test_mmdit_forward");
}
