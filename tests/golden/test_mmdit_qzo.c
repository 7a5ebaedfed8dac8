// tests/golden/test_mmdit_qzo.c: the int4 MMDiT and QZO on it, on the CPU.
// 1. `sd-qzo quantize` output (diffusers and single-file sources) loads to the same
//    model as quantising on load: same codes, scales and scale indices, so the
//    perturbed forward passes agree bit for bit;
// 2. the int4 model stays close to the dense one (quantisation error reported);
// 3. QZO on the rectified-flow loss of a fixed batch lowers the loss over 150 steps
//    (curve printed), and a run checkpointed at step 75 (scales + optimiser state
//    through qzo/checkpoint) and resumed equals the uninterrupted run bit for bit;
// 4. the masked flow loss of a batch of two (loss weights per latent pixel) equals the
//    weighted loss written out here from the same prediction, per sample normalised by
//    its weight sum (docs/QZO.md), and the weights change nothing but the reduction.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "mmdit/quantize.h"
#include "mmdit/quantize_file.h"
#include "qzo/checkpoint.h"
#include "qzo/flow_loss.h"
#include "qzo/qzo.h"
#include "tests/test_util.h"

static const int GROUP = 32;   // the tiny models are 32 wide

typedef struct {
    sq_tensor x, ctx, pooled, t, ref;
} inputs;

static sq_tensor load_io(sq_safetensors *io, const char *name) {
    const sq_st_entry *e = sq_st_find(io, name);
    sq_tensor t;
    SQ_CHECK(e && sq_tensor_alloc(&t, SQ_F32, SQ_CPU, e->ndim, e->shape) == SQ_OK, "fixture %s", name);
    SQ_CHECK(sq_st_load(io, name, &t) == SQ_OK, "%s", sq_error_message());
    return t;
}

static void load_inputs(inputs *in) {
    char p[1024];
    snprintf(p, sizeof p, "%s/mmdit/large_like/io.safetensors", tu_fixtures_dir());
    sq_safetensors *io;
    SQ_CHECK(sq_st_open(&io, p) == SQ_OK, "%s", sq_error_message());
    in->x = load_io(io, "hidden_states");
    in->ctx = load_io(io, "encoder_hidden_states");
    in->pooled = load_io(io, "pooled_projections");
    in->t = load_io(io, "timestep");
    in->ref = load_io(io, "output");
    sq_st_close(io);
}

static float *forward(const sd_mmdit *m, const inputs *in, const sq_perturb *p) {
    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 16 << 20);
    sq_tensor out;
    sq_tensor_alloc(&out, SQ_F32, SQ_CPU, 4, in->x.shape);
    tu_poison(out.data, sq_tensor_numel(&out));
    int rc = sd_mmdit_forward(m, &a, &in->x, in->t.data, &in->ctx, &in->pooled, p, &out, NULL);
    TU_CHECK(rc == SQ_OK, "forward: %s", sq_error_message());
    sq_arena_free(&a);
    return out.data;   // owned by the caller
}

static void test_quantized_files(const inputs *in, const char *tmpdir) {
    char src_dir[1024], src_single[1024], q_dir[1100], q_single[1100];
    snprintf(src_dir, sizeof src_dir, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    snprintf(src_single, sizeof src_single, "%s/mmdit/large_like/single_file.safetensors", tu_fixtures_dir());
    snprintf(q_dir, sizeof q_dir, "%s/q_from_diffusers.safetensors", tmpdir);
    snprintf(q_single, sizeof q_single, "%s/q_from_single.safetensors", tmpdir);
    TU_CHECK(sd_quantize_checkpoint(src_dir, q_dir, GROUP, true) == SQ_OK, "quantize folder: %s", sq_error_message());
    TU_CHECK(sd_quantize_checkpoint(src_single, q_single, GROUP, true) == SQ_OK, "quantize single file: %s", sq_error_message());

    sd_mmdit dense, onload, fromfile, fromsingle;
    SQ_CHECK(sd_mmdit_load(&dense, src_dir, SQ_CPU, SQ_F32) == SQ_OK, "%s", sq_error_message());
    SQ_CHECK(sd_mmdit_load(&onload, src_dir, SQ_CPU, SQ_F32) == SQ_OK, "%s", sq_error_message());
    sd_quant_report rep;
    TU_CHECK(sd_mmdit_quantize(&onload, GROUP, &rep) == SQ_OK, "quantize on load: %s", sq_error_message());
    printf("tiny Large-like MMDiT, int4 group %d:\n", GROUP);
    sd_quant_report_print(&rep, stdout);
    TU_CHECK(sd_mmdit_load(&fromfile, q_dir, SQ_CPU, SQ_F32) == SQ_OK, "load quantised file: %s", sq_error_message());
    TU_CHECK(sd_mmdit_load(&fromsingle, q_single, SQ_CPU, SQ_F32) == SQ_OK, "load quantised single file: %s", sq_error_message());
    TU_CHECK(strlen(fromfile.source_sha256) == 64, "quantised file records the source hash");
    TU_CHECK(!strcmp(fromfile.source_sha256, fromsingle.source_sha256) == 0,
             "the two sources hash their own key names, so the hashes differ");

    int n = sd_mmdit_qlayers(&onload, NULL, 0), quantised = 0;
    sd_mmdit_qlayer *la = calloc((size_t)n, sizeof *la), *lb = calloc((size_t)n, sizeof *lb), *lc = calloc((size_t)n, sizeof *lc);
    sd_mmdit_qlayers(&onload, la, n);
    TU_CHECK(sd_mmdit_qlayers(&fromfile, lb, n) == n && sd_mmdit_qlayers(&fromsingle, lc, n) == n, "same layer lists");
    for (int i = 0; i < n; i++) {
        sq_linear *a = la[i].linear, *b = lb[i].linear, *c = lc[i].linear;
        if (!sq_linear_quantized(a)) continue;
        quantised++;
        bool same = sq_linear_quantized(b) && sq_linear_quantized(c) && a->index_base == b->index_base &&
                    a->index_base == c->index_base && !memcmp(a->codes.data, b->codes.data, sq_tensor_nbytes(&a->codes)) &&
                    !memcmp(a->codes.data, c->codes.data, sq_tensor_nbytes(&a->codes)) &&
                    !memcmp(a->scales.data, b->scales.data, sq_tensor_nbytes(&a->scales)) &&
                    !memcmp(a->scales.data, c->scales.data, sq_tensor_nbytes(&a->scales));
        TU_CHECK(same, "layer %s differs between quantise-on-load and the quantised files", la[i].name);
    }
    TU_CHECK(quantised == n, "every joint-block linear is int4 at group %d (%d of %d)", GROUP, quantised, n);
    free(la); free(lb); free(lc);

    sq_perturb p = {.seed = 7, .step = 3, .eps = 1e-3f, .sign = +1};
    float *oa = forward(&onload, in, &p), *ob = forward(&fromfile, in, &p), *oc = forward(&fromsingle, in, &p);
    int64_t numel = sq_tensor_numel(&in->x);
    TU_CHECK(!memcmp(oa, ob, (size_t)numel * 4) && !memcmp(oa, oc, (size_t)numel * 4),
             "perturbed forward differs between the three int4 models");
    float *od = forward(&onload, in, NULL);
    double qerr = tu_rel_err(od, in->ref.data, numel);
    printf("int4 model output vs dense diffusers output: rel err %.3f\n", qerr);
    TU_CHECK(qerr < 0.25, "int4 model too far from the dense one: %g", qerr);
    TU_CHECK(tu_rel_err(oa, od, numel) > 0, "the perturbation changes the output");
    free(oa); free(ob); free(oc); free(od);
    sd_mmdit_free(&dense); sd_mmdit_free(&onload); sd_mmdit_free(&fromfile); sd_mmdit_free(&fromsingle);
}

typedef struct {
    sd_mmdit m;
    sq_arena a;
    sd_flow_batch fb;
    sq_tensor noise;
    sq_tensor **scales;
    uint64_t *bases;
    char (*names)[96];
    int n;
} trainer;

static void trainer_init(trainer *tr, const inputs *in) {
    char src[1024];
    snprintf(src, sizeof src, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    SQ_CHECK(sd_mmdit_load(&tr->m, src, SQ_CPU, SQ_F32) == SQ_OK && sd_mmdit_quantize(&tr->m, GROUP, NULL) == SQ_OK, "%s",
             sq_error_message());
    sq_arena_init(&tr->a, SQ_CPU, 16 << 20);
    sq_tensor_alloc(&tr->noise, SQ_F32, SQ_CPU, 4, in->x.shape);
    uint64_t rs = 99;
    float *nz = tr->noise.data;
    for (int64_t i = 0; i < sq_tensor_numel(&tr->noise); i++) nz[i] = tu_uniform(&rs, -1.7f, 1.7f);
    float sigma = 0.6f;
    SQ_CHECK(sd_flow_batch_init(&tr->fb, &tr->m, &tr->a, &in->x, &tr->noise, &sigma, &in->ctx, &in->pooled) == SQ_OK, "%s",
             sq_error_message());
    int n = sd_mmdit_qlayers(&tr->m, NULL, 0);
    sd_mmdit_qlayer *ls = calloc((size_t)n, sizeof *ls);
    sd_mmdit_qlayers(&tr->m, ls, n);
    tr->scales = calloc((size_t)n, sizeof *tr->scales);
    tr->bases = calloc((size_t)n, sizeof *tr->bases);
    tr->names = calloc((size_t)n, sizeof *tr->names);
    tr->n = n;
    for (int i = 0; i < n; i++) {
        tr->scales[i] = &ls[i].linear->scales;
        tr->bases[i] = ls[i].linear->index_base;
        snprintf(tr->names[i], sizeof tr->names[i], "%.80s.weight.scales", ls[i].name);
    }
    free(ls);
}

static void trainer_free(trainer *tr) {
    sd_flow_batch_free(&tr->fb);
    sq_tensor_free(&tr->noise);
    sq_arena_free(&tr->a);
    sd_mmdit_free(&tr->m);
    free(tr->scales); free(tr->bases); free(tr->names);
}

static double run_steps(trainer *tr, const sq_qzo_config *c, sq_qzo_state *st, int steps, bool print) {
    sq_qzo_params params = {.scales = tr->scales, .index_base = tr->bases, .count = tr->n};
    double loss = 0;
    for (int k = 0; k < steps; k++) {
        sq_qzo_step_info info;
        TU_CHECK(sq_qzo_step(c, st, &params, sd_flow_loss, &tr->fb, &info) == SQ_OK, "qzo step: %s", sq_error_message());
        loss = info.loss_mean;
        if (print && (st->step % 25 == 0 || st->step == 1))
            printf("  step %3lld: loss %.6f  d %+.4f (clipped %+.4f)\n", (long long)st->step, info.loss_mean, info.d_raw, info.d_clipped);
    }
    return loss;
}

static double eval_loss(trainer *tr) {
    double l;
    sd_flow_loss(&tr->fb, NULL, &l);
    return l;
}

static void test_qzo_on_mmdit(const inputs *in, const char *tmpdir) {
    sq_qzo_config c;
    sq_qzo_config_defaults(&c);
    c.relative = 0;   // written for the paper's absolute form and these rates
    c.lr = 1e-4f;
    c.eps = 1e-3f;
    c.clip = 50.0f;
    c.seed = 31337;
    c.queries = 2;
    trainer a;
    trainer_init(&a, in);
    sq_qzo_state st;
    sq_qzo_state_init(&st);
    double l0 = eval_loss(&a);
    printf("QZO on the int4 tiny MMDiT, fixed batch, %d trainable scale tensors; loss before: %.6f\n", a.n, l0);
    run_steps(&a, &c, &st, 150, true);
    double l1 = eval_loss(&a);
    printf("loss after 150 steps: %.6f (%.1f%% lower)\n", l1, 100 * (1 - l1 / l0));
    TU_CHECK(l1 < 0.9 * l0, "150 QZO steps should lower the loss by 10%%: %g -> %g", l0, l1);   // measured: 17%

    // interrupted run: 75 steps, checkpoint, fresh process state, load, 75 more
    trainer b;
    trainer_init(&b, in);
    sq_qzo_state sb;
    sq_qzo_state_init(&sb);
    run_steps(&b, &c, &sb, 75, false);
    char ck[1100];
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", tmpdir);
    sq_named_scales *named = calloc((size_t)b.n, sizeof *named);
    for (int i = 0; i < b.n; i++) named[i] = (sq_named_scales){.name = b.names[i], .scales = b.scales[i]};
    double hist[2] = {1.5, 0.25};
    sq_checkpoint_info info = {.group_size = GROUP, .config = c, .state = sb, .loss_history = hist, .loss_count = 2};
    snprintf(info.base_sha256, sizeof info.base_sha256, "%s", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    TU_CHECK(sq_checkpoint_save(ck, named, b.n, &info) == SQ_OK, "save: %s", sq_error_message());
    trainer_free(&b);
    free(named);

    trainer r;
    trainer_init(&r, in);
    named = calloc((size_t)r.n, sizeof *named);
    for (int i = 0; i < r.n; i++) named[i] = (sq_named_scales){.name = r.names[i], .scales = r.scales[i]};
    sq_checkpoint_info loaded;
    TU_CHECK(sq_checkpoint_load(ck, named, r.n, "ffff", &loaded) == SQ_FAIL && strstr(sq_error_message(), "another base model"),
             "a checkpoint for another base model is refused");
    TU_CHECK(sq_checkpoint_load(ck, named, r.n, info.base_sha256, &loaded) == SQ_OK, "load: %s", sq_error_message());
    TU_CHECK(loaded.state.step == 75 && loaded.loss_count == 2 && loaded.loss_history[1] == 0.25 &&
                 loaded.config.lr == c.lr && loaded.config.seed == c.seed && loaded.group_size == GROUP,
             "checkpoint metadata round trip");
    TU_CHECK(!memcmp(&loaded.state, &sb, sizeof sb), "optimiser state restored exactly");
    run_steps(&r, &loaded.config, &loaded.state, 75, false);
    bool same = true;
    for (int i = 0; i < r.n; i++) same = same && !memcmp(r.scales[i]->data, a.scales[i]->data, sq_tensor_nbytes(a.scales[i]));
    TU_CHECK(same, "resumed run differs from the uninterrupted one");
    printf("resume from the step-75 checkpoint: scales after step 150 %s the uninterrupted run\n", same ? "equal, bit for bit," : "DIFFER from");
    free(loaded.loss_history);
    free(named);
    trainer_free(&r);
    trainer_free(&a);
}

// Two samples along the batch: b0 = t (1,...), b1 = t scaled by k1 (the second sample
// differs from the first, and both share one context).
static sq_tensor batch2(const sq_tensor *t, float k1) {
    int64_t shape[4] = {2, 1, 1, 1}, n = sq_tensor_numel(t);
    for (int d = 1; d < t->ndim; d++) shape[d] = t->shape[d];
    sq_tensor o;
    SQ_CHECK(sq_tensor_alloc(&o, SQ_F32, SQ_CPU, t->ndim, shape) == SQ_OK, "alloc");
    float *dst = o.data;
    const float *src = t->data;
    for (int64_t i = 0; i < n; i++) dst[i] = src[i], dst[n + i] = k1 * src[i];
    return o;
}

static void test_masked_loss(const inputs *in) {
    sd_mmdit m;
    char src[1024];
    snprintf(src, sizeof src, "%s/mmdit/large_like/transformer", tu_fixtures_dir());
    SQ_CHECK(sd_mmdit_load(&m, src, SQ_CPU, SQ_F32) == SQ_OK && sd_mmdit_quantize(&m, GROUP, NULL) == SQ_OK, "%s",
             sq_error_message());
    sq_arena a;
    sq_arena_init(&a, SQ_CPU, 32 << 20);
    sq_tensor x = batch2(&in->x, 0.5f), ctx = batch2(&in->ctx, 1.0f), pooled = batch2(&in->pooled, 1.0f), noise, w;
    const int64_t B = 2, C = x.shape[1], H = x.shape[2], W = x.shape[3], P = H * W;
    sq_tensor_alloc(&noise, SQ_F32, SQ_CPU, 4, x.shape);
    sq_tensor_alloc(&w, SQ_F32, SQ_CPU, 4, SQ_SHAPE(B, 1, H, W));
    uint64_t rs = 5;
    tu_fill_uniform(noise.data, sq_tensor_numel(&noise), &rs, -1.5f, 1.5f);
    float *wf = w.data;
    for (int64_t p = 0; p < P; p++) {
        wf[p] = (p % W) < W / 2 ? 1.0f : 0.0f;                       // sample 0: the left half
        wf[P + p] = p % 5 == 0 ? 0.0f : tu_uniform(&rs, 0.0f, 1.0f);   // sample 1: grey, some 0
    }
    float sigmas[2] = {0.3f, 0.8f};
    sd_flow_batch fb;
    SQ_CHECK(sd_flow_batch_init(&fb, &m, &a, &x, &noise, sigmas, &ctx, &pooled) == SQ_OK, "%s", sq_error_message());
    sq_perturb p = {.seed = 11, .step = 2, .eps = 1e-3f, .sign = -1};
    double plain, masked;
    TU_CHECK(sd_flow_loss(&fb, &p, &plain) == SQ_OK, "%s", sq_error_message());
    float *pred0 = malloc((size_t)sq_tensor_numel(&fb.pred) * sizeof(float));
    memcpy(pred0, fb.pred.data, (size_t)sq_tensor_numel(&fb.pred) * sizeof(float));
    TU_CHECK(plain == sq_mse(&fb.pred, &fb.target), "unweighted loss is the batch mse");
    sq_tensor bad;
    sq_tensor_alloc(&bad, SQ_F32, SQ_CPU, 4, SQ_SHAPE(B, 1, H, W + 1));
    TU_CHECK(sd_flow_batch_set_weights(&fb, &bad) == SQ_FAIL, "weights of another shape are refused");
    sq_error_clear();
    sq_tensor_free(&bad);
    TU_CHECK(sd_flow_batch_set_weights(&fb, &w) == SQ_OK, "%s", sq_error_message());
    tu_poison(fb.pred.data, sq_tensor_numel(&fb.pred));
    TU_CHECK(sd_flow_loss(&fb, &p, &masked) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(!memcmp(pred0, fb.pred.data, (size_t)sq_tensor_numel(&fb.pred) * sizeof(float)),
             "the weights do not change the prediction");
    // the reference: per sample sum w (pred - target)^2 / (C sum w), then the batch mean
    const float *pr = fb.pred.data, *tg = fb.target.data;
    double ref = 0;
    for (int64_t b = 0; b < B; b++) {
        double num = 0, den = 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t q = 0; q < P; q++) {
                double d = (double)pr[(b * C + c) * P + q] - (double)tg[(b * C + c) * P + q];
                num += wf[b * P + q] * d * d;
            }
        for (int64_t q = 0; q < P; q++) den += wf[b * P + q];
        ref += num / ((double)C * den) / (double)B;
    }
    printf("masked flow loss (batch of 2, half and grey masks): %.12f, reference %.12f, unmasked %.12f\n", masked, ref, plain);
    TU_CHECK(fabs(masked - ref) <= 1e-12 * ref, "masked loss %.17g vs reference %.17g", masked, ref);
    TU_CHECK(fabs(masked - plain) > 1e-6 * plain, "the masks change the loss");
    // all weights 1: exactly the unmasked loss's value (up to the summation order)
    for (int64_t i = 0; i < B * P; i++) wf[i] = 1.0f;
    TU_CHECK(sd_flow_loss(&fb, &p, &masked) == SQ_OK && fabs(masked - plain) <= 1e-12 * plain,
             "weights of 1 give the unmasked loss: %.17g vs %.17g", masked, plain);
    free(pred0);
    sd_flow_batch_free(&fb);
    sq_tensor_free(&x); sq_tensor_free(&ctx); sq_tensor_free(&pooled); sq_tensor_free(&noise); sq_tensor_free(&w);
    sq_arena_free(&a);
    sd_mmdit_free(&m);
}

int main(void) {
    char tmpdir[64] = "/tmp/sq-mmdit-qzo-XXXXXX";
    if (!mkdtemp(tmpdir)) return 1;
    inputs in;
    load_inputs(&in);
    test_quantized_files(&in, tmpdir);
    test_masked_loss(&in);
    test_qzo_on_mmdit(&in, tmpdir);
    sq_tensor_free(&in.x);
    sq_tensor_free(&in.ctx);
    sq_tensor_free(&in.pooled);
    sq_tensor_free(&in.t);
    sq_tensor_free(&in.ref);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_finish("test_mmdit_qzo");
}
