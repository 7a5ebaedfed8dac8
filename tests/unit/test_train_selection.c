// tests/unit/test_train_selection.c: --train-blocks / --train-layers
// (qzo/train_selection.h) and frozen layers in QZO, on the tiny Large-like MMDiT
// fixture (3 joint blocks, int4 group 32, CPU fp32):
//   1. the specs parse into the blocks and layer types they name (ranges, lists, the
//      finer type names, "all"), and every bad spec is refused with one line naming
//      the flag and the spec;
//   2. applying a selection freezes exactly the layers it leaves out, counts the
//      trained scales, keeps every layer's global scale index, and a block the model
//      lacks is refused;
//   3. a frozen layer is evaluated unperturbed: L+ with a subset trained equals, bit
//      for bit, the unperturbed loss of a model whose trained layers' scales were
//      perturbed by hand (z at their global index) and whose frozen layers were not;
//   4. QZO steps over the trained list leave every frozen layer's scales bit-identical
//      and move every trained layer, and the first update of each trained scale is
//      exactly sq_updated_scale with z at its global index, so a run of every block
//      and a run of a subset draw the same z for the layers they share.
#include <string.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/rng.h"
#include "mmdit/quantize.h"
#include "qzo/flow_loss.h"
#include "qzo/qzo.h"
#include "qzo/train_selection.h"
#include "qzo/trained_scales.h"
#include "tests/test_util.h"

static const int GROUP = 32;

static void test_parse(void) {
    sd_train_selection s;
    TU_CHECK(sd_train_selection_parse("0-3,7", "attn,adaln", &s) == SQ_OK, "parse: %s", sq_error_message());
    bool want_blocks = !s.all_blocks && s.max_block == 7 && s.block[0] && s.block[3] && !s.block[4] && !s.block[6] && s.block[7] &&
                       !s.block[8];
    TU_CHECK(want_blocks, "0-3,7 names blocks 0, 1, 2, 3 and 7");
    TU_CHECK(s.kinds == ((1u << SD_QK_ATTN_QKV) | (1u << SD_QK_ATTN_OUT) | (1u << SD_QK_ADALN)),
             "attn,adaln names attention q/k/v, attention out and adaLN (0x%x)", s.kinds);
    TU_CHECK(sd_train_selection_has(&s, 2, SD_QK_ATTN_OUT) && !sd_train_selection_has(&s, 2, SD_QK_MLP_IN) &&
                 !sd_train_selection_has(&s, 5, SD_QK_ADALN),
             "has(): block and type both");
    TU_CHECK(sd_train_selection_parse("all", "all", &s) == SQ_OK && sd_train_selection_is_all(&s), "all, all");
    TU_CHECK(sd_train_selection_parse("", NULL, &s) == SQ_OK && sd_train_selection_is_all(&s), "empty specs read as all");
    TU_CHECK(sd_train_selection_parse("5", "mlp_out", &s) == SQ_OK && s.max_block == 5 && s.block[5] && !s.block[4] &&
                 s.kinds == (1u << SD_QK_MLP_OUT),
             "a single block and a fine type");
    sd_train_selection a, b;
    TU_CHECK(sd_train_selection_parse("0-3", "attn", &a) == SQ_OK && sd_train_selection_parse("3,0,1-2", "attn_out,attn_qkv", &b) == SQ_OK &&
                 sd_train_selection_equal(&a, &b),
             "the same selection written two ways is equal");
    TU_CHECK(sd_train_selection_parse("0-2", "attn", &b) == SQ_OK && !sd_train_selection_equal(&a, &b), "0-3 is not 0-2");
    TU_CHECK(sd_train_selection_parse("0-3", "mlp", &b) == SQ_OK && !sd_train_selection_equal(&a, &b), "attn is not mlp");

    static const char *bad_blocks[] = {"1-", "-1", "a", "3-1", "1,,2", "1,", ",1", "256", "0-300", "0-11 ,20", "1.5", " 1", "+1", "1-2-3"};
    for (size_t i = 0; i < sizeof bad_blocks / sizeof bad_blocks[0]; i++) {
        int rc = sd_train_selection_parse(bad_blocks[i], "all", &s);
        const char *m = sq_error_message();
        TU_CHECK(rc == SQ_FAIL && strstr(m, "--train-blocks") && strstr(m, bad_blocks[i]) && !strchr(m, '\n'),
                 "--train-blocks '%s' is refused with one line naming it: %s", bad_blocks[i], rc == SQ_FAIL ? m : "(accepted)");
    }
    static const char *bad_layers[] = {"attention", "attn,", "ATTN", "mlp,,adaln", "qkv", " attn"};
    for (size_t i = 0; i < sizeof bad_layers / sizeof bad_layers[0]; i++) {
        int rc = sd_train_selection_parse("all", bad_layers[i], &s);
        const char *m = sq_error_message();
        TU_CHECK(rc == SQ_FAIL && strstr(m, "--train-layers") && strstr(m, "attn, mlp, adaln") && !strchr(m, '\n'),
                 "--train-layers '%s' is refused with one line listing the types: %s", bad_layers[i],
                 rc == SQ_FAIL ? m : "(accepted)");
    }
}

typedef struct {
    sd_mmdit m;
    sq_arena a;
    sd_flow_batch fb;
    sq_tensor x0, noise, ctx, pooled;
} model;

static void model_init(model *md) {
    char src[1024], io_path[1100];
    snprintf(src, sizeof src, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    SQ_CHECK(sd_mmdit_load(&md->m, src, SQ_CPU, SQ_F32) == SQ_OK && sd_mmdit_quantize(&md->m, GROUP, NULL) == SQ_OK, "%s",
             sq_error_message());
    snprintf(io_path, sizeof io_path, "%s/mmdit/large_like/io.safetensors", tu_fixtures_dir());
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, io_path) == SQ_OK, "%s", sq_error_message());
    const char *names[3] = {"hidden_states", "encoder_hidden_states", "pooled_projections"};
    sq_tensor *dst[3] = {&md->x0, &md->ctx, &md->pooled};
    for (int i = 0; i < 3; i++) {
        const sq_st_entry *e = sq_st_find(io, names[i]);
        SQ_CHECK(e && sq_tensor_alloc(dst[i], SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK &&
                     sq_st_load(io, names[i], dst[i]) == SQ_OK,
                 "fixture %s: %s", names[i], sq_error_message());
    }
    sq_st_close(io);
    sq_tensor_alloc(&md->noise, SQ_F32, SQ_CPU, 4, md->x0.shape);
    uint64_t rs = 5;
    tu_fill_uniform(md->noise.data, sq_tensor_numel(&md->noise), &rs, -1.7f, 1.7f);
    sq_arena_init(&md->a, SQ_CPU, 16 << 20);
    float sigma[8] = {0.6f, 0.3f, 0.8f, 0.5f, 0.6f, 0.3f, 0.8f, 0.5f};
    SQ_CHECK(sd_flow_batch_init(&md->fb, &md->m, &md->a, &md->x0, &md->noise, sigma, &md->ctx, &md->pooled) == SQ_OK, "%s",
             sq_error_message());
}

static void model_free(model *md) {
    sd_flow_batch_free(&md->fb);
    sq_arena_free(&md->a);
    sq_tensor_free(&md->x0);
    sq_tensor_free(&md->noise);
    sq_tensor_free(&md->ctx);
    sq_tensor_free(&md->pooled);
    sd_mmdit_free(&md->m);
}

static int block_of(const char *name) { return atoi(name + strlen("transformer_blocks.")); }

static double loss_of(model *md, const sq_perturb *p) {
    double l = 0;
    TU_CHECK(sd_flow_loss(&md->fb, p, &l) == SQ_OK, "loss: %s", sq_error_message());
    return l;
}

static void test_apply_and_frozen(void) {
    model md;
    model_init(&md);
    int n = sd_mmdit_qlayers(&md.m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)n, sizeof *ls);
    sd_mmdit_qlayers(&md.m, ls, n);
    uint64_t *base_before = calloc((size_t)n, sizeof *base_before);
    for (int i = 0; i < n; i++) base_before[i] = ls[i].linear->index_base;

    // a block the model lacks
    sd_train_selection sel;
    sd_train_selection_count cnt;
    SQ_CHECK(sd_train_selection_parse("1,3", "all", &sel) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(sd_train_selection_apply(&sel, &md.m, &cnt) == SQ_FAIL && strstr(sq_error_message(), "block 3") &&
                 strstr(sq_error_message(), "3 joint blocks"),
             "block 3 of a 3-block model is refused: %s", sq_error_message());

    // all: nothing frozen; the perturbed loss of the whole model, for later
    sq_perturb p = {.seed = 11, .step = 4, .eps = 0.05f, .sign = +1, .relative = 1};
    SQ_CHECK(sd_train_selection_parse("all", "all", &sel) == SQ_OK && sd_train_selection_apply(&sel, &md.m, &cnt) == SQ_OK,
             "%s", sq_error_message());
    TU_CHECK(cnt.layers == cnt.total_layers && cnt.layers == n && cnt.scales == cnt.total_scales, "all trains every layer");
    int64_t total_scales = cnt.total_scales;
    double l_all = loss_of(&md, &p);

    // block 1, attention and adaLN
    SQ_CHECK(sd_train_selection_parse("1", "attn,adaln", &sel) == SQ_OK && sd_train_selection_apply(&sel, &md.m, &cnt) == SQ_OK,
             "%s", sq_error_message());
    int want_layers = 0;
    int64_t want_scales = 0;
    bool flags_ok = true, bases_ok = true;
    for (int i = 0; i < n; i++) {
        bool trains = block_of(ls[i].name) == 1 && ls[i].kind != SD_QK_MLP_IN && ls[i].kind != SD_QK_MLP_OUT;
        flags_ok = flags_ok && ls[i].linear->frozen == !trains;
        bases_ok = bases_ok && ls[i].linear->index_base == base_before[i];
        if (trains) {
            want_layers++;
            want_scales += sq_tensor_numel(&ls[i].linear->scales);
        }
    }
    TU_CHECK(flags_ok, "exactly the layers outside block 1 / attention+adaLN are frozen");
    TU_CHECK(bases_ok, "the selection keeps every layer's global scale index");
    TU_CHECK(want_layers > 0 && want_layers < n && cnt.layers == want_layers && cnt.scales == want_scales &&
                 cnt.total_scales == total_scales && cnt.total_layers == n,
             "count: %d layers / %lld scales trained (want %d / %lld) of %d / %lld", cnt.layers, (long long)cnt.scales,
             want_layers, (long long)want_scales, cnt.total_layers, (long long)cnt.total_scales);
    printf("--train-blocks 1 --train-layers attn,adaln: %d of %d int4 layers, %lld of %lld scales\n", cnt.layers, n,
           (long long)cnt.scales, (long long)cnt.total_scales);

    // 3. L+ with the subset = the unperturbed loss with the trained scales perturbed by hand
    double l_sub = loss_of(&md, &p);
    TU_CHECK(l_sub != l_all, "the subset's perturbed loss differs from the whole model's (%.9g)", l_sub);
    float **saved = calloc((size_t)n, sizeof *saved);
    for (int i = 0; i < n; i++) {
        sq_linear *l = ls[i].linear;
        int64_t k = sq_tensor_numel(&l->scales);
        saved[i] = malloc((size_t)k * sizeof(float));
        memcpy(saved[i], l->scales.data, (size_t)k * sizeof(float));
        if (l->frozen) continue;
        float *s = l->scales.data;
        for (int64_t j = 0; j < k; j++)
            s[j] = sq_perturbed_scale(s[j], sq_rng_normal(p.seed, p.step, l->index_base + (uint64_t)j), p.eps, 1);
    }
    double l_hand = loss_of(&md, NULL);
    TU_CHECK(l_hand == l_sub, "frozen layers are evaluated unperturbed: L+ %.17g, by hand %.17g", l_sub, l_hand);
    for (int i = 0; i < n; i++)
        memcpy(ls[i].linear->scales.data, saved[i], (size_t)sq_tensor_numel(&ls[i].linear->scales) * sizeof(float));

    // 4. QZO steps over the trained list
    sd_scale_list tl;
    SQ_CHECK(sd_scale_list_make_trained(&md.m, "fixture", &tl) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(tl.count == want_layers, "the trained list holds the %d trained layers (%d)", want_layers, tl.count);
    sq_qzo_config c;
    sq_qzo_config_defaults(&c);
    c.queries = 1;
    c.seed = 123;
    c.lr = 0.5f;      // large enough that every trained layer visibly moves in a few steps
    c.eps = 1e-2f;
    sq_qzo_state st;
    sq_qzo_state_init(&st);
    sq_qzo_params params = {tl.scales, tl.index_base, tl.count};
    sq_qzo_step_info info;
    TU_CHECK(sq_qzo_step(&c, &st, &params, sd_flow_loss, &md.fb, &info) == SQ_OK && !info.discarded, "step 0: %s",
             sq_error_message());
    float coeff = c.lr * (float)info.d_clipped / (float)c.queries;
    int64_t exact = 0, checked = 0;
    for (int i = 0; i < n; i++) {
        const sq_linear *l = ls[i].linear;
        if (l->frozen) continue;
        const float *s = l->scales.data;
        for (int64_t j = 0; j < sq_tensor_numel(&l->scales); j++, checked++) {
            // perturbation id 0 (step 0, query 0), z at the index of the whole model
            float z = sq_rng_normal(c.seed, 0, base_before[i] + (uint64_t)j);
            exact += s[j] == sq_updated_scale(saved[i][j], z, coeff, 1);
        }
    }
    TU_CHECK(checked == want_scales && exact == checked,
             "first update = sq_updated_scale with z at the global index: %lld of %lld scales", (long long)exact,
             (long long)checked);
    for (int k = 1; k < 4; k++)
        TU_CHECK(sq_qzo_step(&c, &st, &params, sd_flow_loss, &md.fb, &info) == SQ_OK, "step %d: %s", k, sq_error_message());
    int frozen_same = 0, frozen = 0, trained_moved = 0;
    for (int i = 0; i < n; i++) {
        const sq_linear *l = ls[i].linear;
        bool same = !memcmp(l->scales.data, saved[i], (size_t)sq_tensor_numel(&l->scales) * sizeof(float));
        if (l->frozen) {
            frozen++;
            frozen_same += same;
        } else {
            trained_moved += !same;
        }
    }
    TU_CHECK(frozen == n - want_layers && frozen_same == frozen, "frozen layers bit-identical after 4 steps: %d of %d",
             frozen_same, frozen);
    TU_CHECK(trained_moved == want_layers, "every trained layer moved: %d of %d", trained_moved, want_layers);
    printf("4 QZO steps: %d frozen layers unchanged bit for bit, %d trained layers moved; loss %.6f\n", frozen_same,
           trained_moved, info.loss_mean);

    sd_scale_list_free(&tl);
    for (int i = 0; i < n; i++) free(saved[i]);
    free(saved);
    free(base_before);
    free(ls);
    model_free(&md);
}

int main(void) {
    test_parse();
    test_apply_and_frozen();
    return tu_finish("test_train_selection");
}
