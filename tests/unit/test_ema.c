// tests/unit/test_ema.c: the EMA of the scales (--ema) on the CPU.
//   1. sq_ema_update over 300 steps of moving scales follows the straightforward
//      float64 recurrence e <- beta e + (1 - beta) s within fp32 rounding, for several
//      beta; each value lies between the old EMA and the scale; an EMA equal to its
//      scales stays bit-identical to them;
//   2. the checkpoint carries it: EMA tensors ("ema.<name>") and sd_qzo.ema /
//      sd_qzo.train metadata round-trip exactly; the EMA tensors do not count as
//      layers; sq_checkpoint_load_ema fills only the layers that have one; a
//      checkpoint without EMA still loads, and asking it for the EMA is one clear
//      line; inconsistent EMA tensors or metadata are refused naming the file.
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/quant.h"
#include "qzo/checkpoint.h"
#include "tests/test_util.h"

static void test_arithmetic(void) {
    enum { N = 4096, STEPS = 300 };
    static float s[N], e[N], prev[N];
    static double ref[N];
    const float betas[] = {0.5f, 0.9f, 0.99f, 0.999f};
    for (size_t b = 0; b < sizeof betas / sizeof betas[0]; b++) {
        float beta = betas[b];
        uint64_t rs = 17 + b;
        tu_fill_uniform(s, N, &rs, 1e-3f, 2e-2f);   // scale-sized values
        for (int i = 0; i < N; i++) {
            e[i] = s[i] * tu_uniform(&rs, 0.5f, 1.5f);   // an EMA that differs from its scales
            ref[i] = e[i];
        }
        sq_tensor te = sq_tensor_view(e, SQ_F32, SQ_CPU, 2, SQ_SHAPE(64, N / 64));
        sq_tensor ts = sq_tensor_view(s, SQ_F32, SQ_CPU, 2, SQ_SHAPE(64, N / 64));
        double worst = 0;
        int outside = 0;
        for (int k = 0; k < STEPS; k++) {
            for (int i = 0; i < N; i++) s[i] *= 1.0f + tu_uniform(&rs, -0.02f, 0.02f);   // the scales move
            memcpy(prev, e, sizeof e);
            sq_ema_update(&te, &ts, beta);
            for (int i = 0; i < N; i++) {
                ref[i] = (double)beta * ref[i] + (1.0 - (double)beta) * (double)s[i];
                double lo = prev[i] < s[i] ? prev[i] : s[i], hi = prev[i] < s[i] ? s[i] : prev[i];
                outside += e[i] < lo || e[i] > hi;
                double rel = fabs((double)e[i] - ref[i]) / ref[i];
                if (rel > worst) worst = rel;
            }
        }
        printf("EMA beta %g, %d steps of %d scales: max rel err vs float64 %.2e\n", (double)beta, STEPS, N, worst);
        TU_CHECK(worst < 1e-5, "beta %g: EMA off the float64 recurrence by %.3g (rel)", (double)beta, worst);
        TU_CHECK(outside == 0, "beta %g: %d EMA values left [min(e, s), max(e, s)]", (double)beta, outside);
        // an EMA equal to its scales stays equal, bit for bit
        memcpy(e, s, sizeof s);
        for (int k = 0; k < 50; k++) sq_ema_update(&te, &ts, beta);
        TU_CHECK(!memcmp(e, s, sizeof s), "beta %g: an EMA equal to unchanged scales drifted", (double)beta);
    }
}

static const char *HASH = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void info_init(sq_checkpoint_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->base_sha256, sizeof info->base_sha256, "%s", HASH);
    info->group_size = 32;
    sq_qzo_config_defaults(&info->config);
    sq_qzo_state_init(&info->state);
    info->state.step = 7;
}

static bool refused(const char *path, const char *needle) {
    sq_checkpoint_info info;
    int rc = sq_checkpoint_read_file(path, &info);
    const char *m = sq_error_message();
    bool ok = rc == SQ_FAIL && strstr(m, path) && strstr(m, needle) && !strchr(m, '\n');
    if (!ok) printf("  (%s: rc %d, '%s')\n", path, rc, rc == SQ_FAIL ? m : "");
    return ok;
}

static void test_checkpoint(const char *dir) {
    float a[6], b[4], ea[6], back_a[6], back_b[4], back_ea[6];
    uint64_t rs = 3;
    tu_fill_uniform(a, 6, &rs, 0.001f, 0.02f);
    tu_fill_uniform(b, 4, &rs, 0.001f, 0.02f);
    tu_fill_uniform(ea, 6, &rs, 0.001f, 0.02f);
    sq_tensor ta = sq_tensor_view(a, SQ_F32, SQ_CPU, 2, SQ_SHAPE(2, 3)), tb = sq_tensor_view(b, SQ_F32, SQ_CPU, 2, SQ_SHAPE(4, 1));
    sq_tensor tea = sq_tensor_view(ea, SQ_F32, SQ_CPU, 2, SQ_SHAPE(2, 3));
    sq_named_scales layers[2] = {{"l0.weight.scales", &ta}, {"l1.weight.scales", &tb}};
    sq_named_scales ema[1] = {{SQ_CHECKPOINT_EMA_PREFIX "l0.weight.scales", &tea}};   // l1 frozen: no EMA
    sq_checkpoint_info info;
    info_init(&info);
    snprintf(info.train_blocks, sizeof info.train_blocks, "0-11,20");
    snprintf(info.train_layers, sizeof info.train_layers, "attn,adaln");
    info.trained_scales = 6;
    info.ema_beta = 0.999f;
    info.ema_updates = 6;
    char path[300], plain[300];
    snprintf(path, sizeof path, "%s/ema.safetensors", dir);
    snprintf(plain, sizeof plain, "%s/plain.safetensors", dir);
    TU_CHECK(sq_checkpoint_save_with_ema(path, layers, 2, ema, 1, &info) == SQ_OK, "save: %s", sq_error_message());

    sq_checkpoint_info r;
    TU_CHECK(sq_checkpoint_read_file(path, &r) == SQ_OK, "read: %s", sq_error_message());
    TU_CHECK(r.ema_beta == 0.999f && r.ema_updates == 6 && r.ema_tensors == 1 && !strcmp(r.train_blocks, "0-11,20") &&
                 !strcmp(r.train_layers, "attn,adaln") && r.trained_scales == 6 && r.state.step == 7,
             "EMA and selection metadata round trip (beta %g, updates %lld, tensors %d, blocks '%s', layers '%s')",
             (double)r.ema_beta, (long long)r.ema_updates, r.ema_tensors, r.train_blocks, r.train_layers);
    tu_poison(back_a, 6);
    tu_poison(back_b, 4);
    tu_poison(back_ea, 6);
    sq_tensor ba = sq_tensor_view(back_a, SQ_F32, SQ_CPU, 2, SQ_SHAPE(2, 3)), bb = sq_tensor_view(back_b, SQ_F32, SQ_CPU, 2, SQ_SHAPE(4, 1));
    sq_named_scales into[2] = {{"l0.weight.scales", &ba}, {"l1.weight.scales", &bb}};
    TU_CHECK(sq_checkpoint_load(path, into, 2, HASH, &r) == SQ_OK, "load with EMA tensors beside: %s", sq_error_message());
    free(r.loss_history);
    TU_CHECK(!memcmp(back_a, a, sizeof a) && !memcmp(back_b, b, sizeof b), "the scales load exactly");
    bool got[2] = {false, true};
    TU_CHECK(sq_checkpoint_load_ema(path, into, 2, got) == SQ_OK, "load EMA: %s", sq_error_message());
    TU_CHECK(got[0] && !got[1], "only the trained layer has an EMA");
    TU_CHECK(!memcmp(back_a, ea, sizeof ea) && !memcmp(back_b, b, sizeof b), "the EMA replaces l0 exactly; l1 keeps its scales");

    // a checkpoint without EMA (and without sd_qzo.train: an older one) still loads
    TU_CHECK(sq_checkpoint_save(plain, layers, 2, &(sq_checkpoint_info){.group_size = 32, .config = info.config,
                                                                         .state = info.state}) == SQ_OK,
             "save plain: %s", sq_error_message());
    tu_poison(back_a, 6);
    TU_CHECK(sq_checkpoint_load(plain, into, 2, NULL, &r) == SQ_OK && r.ema_beta == 0 && r.ema_tensors == 0 &&
                 !r.train_blocks[0] && !memcmp(back_a, a, sizeof a),
             "a checkpoint without EMA loads: %s", sq_error_message());
    free(r.loss_history);
    TU_CHECK(sq_checkpoint_load_ema(plain, into, 2, NULL) == SQ_FAIL && strstr(sq_error_message(), "no EMA") &&
                 strstr(sq_error_message(), plain) && strstr(sq_error_message(), "without --ema"),
             "asking a checkpoint without EMA for it is one clear line: %s", sq_error_message());

    // inconsistent files, written by hand
    sq_st_tensor_desc d[3] = {{.name = "l0.weight.scales", .dtype = SQ_F32, .ndim = 2, .shape = {2, 3}, .data = a},
                              {.name = "l1.weight.scales", .dtype = SQ_F32, .ndim = 2, .shape = {4, 1}, .data = b},
                              {.name = "ema.l0.weight.scales", .dtype = SQ_F32, .ndim = 2, .shape = {2, 3}, .data = ea}};
    sq_safetensors *st;
    SQ_CHECK(sq_st_open(&st, path) == SQ_OK, "%s", sq_error_message());
    sq_st_kv meta[16];
    int nm = sq_st_metadata_count(st);
    char *vals[16];
    for (int i = 0; i < nm && i < 16; i++) {
        meta[i].key = strdup(sq_st_metadata_key(st, i));
        vals[i] = strdup(sq_st_metadata(st, meta[i].key));
        meta[i].value = vals[i];
    }
    sq_st_close(st);
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    int ema_key = -1;
    for (int i = 0; i < nm; i++)
        if (!strcmp(meta[i].key, "sd_qzo.ema")) ema_key = i;
    SQ_CHECK(ema_key >= 0, "sd_qzo.ema written");
    // EMA tensors, no sd_qzo.ema
    sq_st_kv m2[16];
    int n2 = 0;
    for (int i = 0; i < nm; i++)
        if (i != ema_key) m2[n2++] = meta[i];
    SQ_CHECK(sq_st_write(bad, d, 3, m2, n2) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(refused(bad, "no sd_qzo.ema"), "EMA tensors without sd_qzo.ema are refused");
    // an EMA tensor whose scales are missing
    sq_st_tensor_desc d2[2] = {d[1], d[2]};
    SQ_CHECK(sq_st_write(bad, d2, 2, meta, nm) == SQ_OK, "%s", sq_error_message());
    TU_CHECK(refused(bad, "no scales of its shape"), "an EMA tensor without its scales is refused");
    // beta out of range; a tensor count that disagrees
    const char *bad_ema[] = {"{\"beta\":\"1\",\"updates\":\"6\",\"tensors\":\"1\"}", "{\"beta\":\"0.9\",\"updates\":\"6\",\"tensors\":\"2\"}",
                             "{\"beta\":\"0.9\",\"updates\":\"-1\",\"tensors\":\"1\"}", "[1]"};
    const char *needles[] = {"beta", "counts 2 EMA tensors", "updates", "not a JSON object"};
    for (int k = 0; k < 4; k++) {
        meta[ema_key].value = bad_ema[k];
        SQ_CHECK(sq_st_write(bad, d, 3, meta, nm) == SQ_OK, "%s", sq_error_message());
        TU_CHECK(refused(bad, needles[k]), "sd_qzo.ema %s is refused", bad_ema[k]);
    }
    meta[ema_key].value = vals[ema_key];
    for (int i = 0; i < nm; i++) {
        free((char *)meta[i].key);
        free(vals[i]);
    }
    unlink(bad);
    unlink(path);
    unlink(plain);
}

int main(void) {
    char dir[64] = "/tmp/sq-ema-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_arithmetic();
    test_checkpoint(dir);
    rmdir(dir);
    return tu_finish("test_ema");
}
