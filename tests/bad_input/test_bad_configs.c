// tests/bad_input/test_bad_configs.c: config.json values that are the wrong JSON type
// or make no sense (zero, negative, huge, out of range) must be refused with one line
// naming the file and the key: the VAE's and the transformer's configs, and the
// typed getters' sq_config_check. (Text-encoder configs: test_bad_text_encoders.)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "mmdit/config.h"
#include "tests/test_util.h"
#include "vae/model.h"

static char dir[256], path[512];

static void write_text(const char *text) {
    FILE *f = fopen(path, "w");
    SQ_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void check_refused(const char *what, int rc, const char *key_text) {
    const char *msg = sq_error_message();
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    TU_CHECK(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    TU_CHECK(strstr(msg, key_text) != NULL, "%s: message lacks \"%s\": %s", what, key_text, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-40s -> %s\n", what, msg);
}

#define VAE_BASE "\"block_out_channels\": [8, 16], \"latent_channels\": 16, \"use_quant_conv\": false, " \
                 "\"use_post_quant_conv\": false"

static void vae_refused(const char *what, const char *extra, const char *key_text) {
    char text[1024];
    snprintf(text, sizeof text, "{" VAE_BASE ", %s}", extra);
    write_text(text);
    sd_vae_config c;
    sq_error_clear();
    check_refused(what, sd_vae_config_load(&c, path), key_text);
}

#define MMDIT_BASE "\"caption_projection_dim\": 32, \"num_attention_heads\": 2, " \
                   "\"joint_attention_dim\": 96, \"pooled_projection_dim\": 40, \"pos_embed_max_size\": 16"

// extra holds attention_head_dim unless it starts with it (a key given twice would read the first)
static void mmdit_refused(const char *what, const char *extra, const char *key_text) {
    char text[1024];
    if (strncmp(extra, "\"attention_head_dim\"", 20)) {
        snprintf(text, sizeof text, "{" MMDIT_BASE ", \"attention_head_dim\": 16, %s}", extra);
        write_text(text);
        sd_mmdit_config c;
        sq_error_clear();
        check_refused(what, sd_mmdit_config_load(&c, path), key_text);
        return;
    }
    snprintf(text, sizeof text, "{" MMDIT_BASE ", %s}", extra);
    write_text(text);
    sd_mmdit_config c;
    sq_error_clear();
    check_refused(what, sd_mmdit_config_load(&c, path), key_text);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/sq-bad-config-XXXXXX");
    SQ_CHECK(mkdtemp(dir), "mkdtemp");
    snprintf(path, sizeof path, "%s/config.json", dir);

    // the clean configs load (so every refusal below is caused by its one change)
    sd_vae_config vc;
    write_text("{" VAE_BASE ", \"norm_num_groups\": 4}");
    TU_CHECK(sd_vae_config_load(&vc, path) == SQ_OK && vc.groups == 4, "clean VAE config: %s", sq_error_message());
    sd_mmdit_config mc;
    write_text("{" MMDIT_BASE ", \"attention_head_dim\": 16, \"num_layers\": 2, \"dual_attention_layers\": [1]}");
    TU_CHECK(sd_mmdit_config_load(&mc, path) == SQ_OK && mc.num_layers == 2 && mc.dual[1], "clean MMDiT config: %s",
             sq_error_message());

    vae_refused("VAE norm_num_groups 0", "\"norm_num_groups\": 0", "'norm_num_groups' is 0");
    vae_refused("VAE norm_num_groups 3 (does not divide)", "\"norm_num_groups\": 3", "norm_num_groups 3");
    vae_refused("VAE layers_per_block -1", "\"layers_per_block\": -1", "'layers_per_block' is -1");
    vae_refused("VAE in_channels \"3\"", "\"norm_num_groups\": 4, \"in_channels\": \"3\"", "'in_channels' is not an integer");
    vae_refused("VAE scaling_factor \"abc\"", "\"norm_num_groups\": 4, \"scaling_factor\": \"abc\"",
                "'scaling_factor' is not a number");
    vae_refused("VAE scaling_factor 0", "\"norm_num_groups\": 4, \"scaling_factor\": 0", "'scaling_factor' is 0");
    vae_refused("VAE mid_block_add_attention 1", "\"norm_num_groups\": 4, \"mid_block_add_attention\": 1",
                "'mid_block_add_attention' is not true or false");

    mmdit_refused("MMDiT num_layers 100000", "\"num_layers\": 100000", "'num_layers' is 100000");
    mmdit_refused("MMDiT num_layers -4", "\"num_layers\": -4", "'num_layers' is -4");
    mmdit_refused("MMDiT num_layers \"4\"", "\"num_layers\": \"4\"", "'num_layers' is not an integer");
    mmdit_refused("MMDiT num_layers 2.5", "\"num_layers\": 2.5", "'num_layers' is not an integer");
    mmdit_refused("MMDiT attention_head_dim 0", "\"attention_head_dim\": 0, \"num_layers\": 2", "'attention_head_dim' is 0");
    mmdit_refused("MMDiT patch_size 4294967298", "\"num_layers\": 2, \"patch_size\": 4294967298", "'patch_size' is 4294967298");
    mmdit_refused("MMDiT dual_attention_layers [2] of 2 layers", "\"num_layers\": 2, \"dual_attention_layers\": [2]",
                  "'dual_attention_layers' entry 2");
    mmdit_refused("MMDiT dual_attention_layers [-1]", "\"num_layers\": 2, \"dual_attention_layers\": [-1]",
                  "'dual_attention_layers' entry -1");
    mmdit_refused("MMDiT dual_attention_layers \"0\"", "\"num_layers\": 2, \"dual_attention_layers\": \"0\"",
                  "'dual_attention_layers' is not an array");
    mmdit_refused("MMDiT qk_norm 1", "\"num_layers\": 2, \"qk_norm\": 1", "'qk_norm' is not a string");

    // the getters: a wrong type makes the *_or forms return the default and sq_config_check fail
    write_text("{\"a\": \"7\", \"b\": 1, \"c\": null}");
    sq_config *j;
    TU_CHECK(sq_config_load(&j, path) == SQ_OK, "load: %s", sq_error_message());
    TU_CHECK(sq_config_int_or(j, "c", 5) == 5 && sq_config_check(j) == SQ_OK, "null is absent, not an error");
    TU_CHECK(sq_config_int_or(j, "a", 5) == 5, "wrong type gives the default");
    TU_CHECK(sq_config_bool_or(j, "b", false) == false, "a number is not a bool");
    sq_error_clear();
    check_refused("getters: \"a\" read as an integer", sq_config_check(j), "'a' is not an integer");
    int v = 0;
    check_refused("sq_config_int_range above the limit", sq_config_int_range(j, "b", 0, 2, 9, &v), "'b' is 1, outside 2..9");
    TU_CHECK(sq_config_int_range(j, "missing", 4, 2, 9, &v) == SQ_OK && v == 4, "absent key: the default");
    sq_config_free(j);

    unlink(path);
    rmdir(dir);
    return tu_finish("test_bad_configs");
}
