// tests/e2e/test_info.c: `sd-qzo info` on a real file written by the safetensors
// writer (and on a diffusers-style folder with config.json): the listing must show
// every tensor with its dtype and shape, and the right totals.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

static char *run(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = calloc(cap, 1);
    size_t r;
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) n += r;
    int status = pclose(p);
    if (status != 0) { free(out); return NULL; }
    return out;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_info SD_QZO_BINARY\n"); return 1; }
    char dir[64] = "/tmp/sq-e2e-info-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char sub[128], path[192], cfg[192], cmd[1024];
    snprintf(sub, sizeof sub, "%s/transformer", dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", sub);
    static float w[64 * 48];
    static uint16_t hb[32];
    uint64_t rs = 3;
    tu_fill_uniform(w, 64 * 48, &rs, -1, 1);
    sq_st_tensor_desc t[] = {{"transformer_blocks.0.attn.to_q.weight", SQ_F32, 2, {64, 48}, w},
                             {"pos_embed.proj.bias", SQ_BF16, 1, {32}, hb}};
    sq_st_kv meta[] = {{"format", "pt"}};
    TU_CHECK(sq_st_write(path, t, 2, meta, 1) == SQ_OK, "write: %s", sq_error_message());
    snprintf(cfg, sizeof cfg, "%s/config.json", sub);
    FILE *f = fopen(cfg, "w");
    fputs("{\"_class_name\": \"SD3Transformer2DModel\", \"num_layers\": 1, \"num_attention_heads\": 2, "
          "\"attention_head_dim\": 16, \"patch_size\": 2, \"in_channels\": 16, \"out_channels\": 16, "
          "\"caption_projection_dim\": 32, \"dual_attention_layers\": [0]}", f);
    fclose(f);

    snprintf(cmd, sizeof cmd, "'%s' info '%s'", argv[1], path);
    char *out = run(cmd);
    TU_CHECK(out != NULL, "sd-qzo info FILE exits 0");
    if (out) {
        printf("%s", out);
        TU_CHECK(strstr(out, "transformer_blocks.0.attn.to_q.weight") && strstr(out, "F32") && strstr(out, "[64, 48]"),
                 "lists the f32 tensor with its shape");
        TU_CHECK(strstr(out, "pos_embed.proj.bias") && strstr(out, "BF16") && strstr(out, "[32]"), "lists the bf16 tensor");
        TU_CHECK(strstr(out, "tensors: 2, parameters: 3104"), "totals: 64*48 + 32 = 3104 parameters");
        TU_CHECK(strstr(out, "bytes: 12352"), "bytes: 64*48*4 + 32*2 = 12352");
        TU_CHECK(strstr(out, "metadata: format"), "metadata keys");
        free(out);
    }
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", argv[1], sub);
    out = run(cmd);
    TU_CHECK(out != NULL, "sd-qzo info DIR exits 0");
    if (out) {
        printf("%s", out);
        TU_CHECK(strstr(out, "SD3Transformer2DModel") && strstr(out, "1 joint blocks, 2 heads x 16 (hidden 32)") &&
                     strstr(out, "dual attention in 1 blocks"), "prints the SD3 transformer config");
        free(out);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return tu_finish("test_info");
}
