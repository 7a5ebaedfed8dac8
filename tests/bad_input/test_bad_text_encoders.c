// tests/bad_input/test_bad_text_encoders.c: a broken SD3 text-encoder setup must be
// refused by sd_text_encoders_load / sd_clip_load with one line naming the file
// (or tensor) and the problem, never a crash or a leak (this suite also runs under
// ASan + UBSan). Each case copies the tiny pipeline's encoder and tokenizer folders
// to a temporary folder, breaks one thing, loads, and restores it.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "text_encoders/conditioning.h"

static char src[1024], dst[256];

static const char *const files[] = {
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors", "text_encoder_3/config.json", "text_encoder_3/model.safetensors",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
    "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/special_tokens_map.json", "tokenizer_3/spiece.model", "tokenizer_3/tokenizer_config.json",
    "transformer/config.json",
};

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    SQ_CHECK(f, "cannot write %s", path);
    if (n) SQ_CHECK(fwrite(data, 1, n, f) == n, "short write %s", path);
    fclose(f);
}

// (re)creates the clean copy of every file
static void restore(void) {
    static const char *const dirs[] = {"text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
                                       "tokenizer_2", "tokenizer_3", "transformer"};
    char p[1400], q[1400];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dst, dirs[i]);
        mkdir(p, 0755);
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *data;
        size_t n;
        snprintf(p, sizeof p, "%s/%s", src, files[i]);
        snprintf(q, sizeof q, "%s/%s", dst, files[i]);
        SQ_CHECK(sq_read_file(p, &data, &n) == SQ_OK, "%s", sq_error_message());
        write_file(q, data, n);
        free(data);
    }
}

static void path_of(char *out, size_t size, const char *rel) { snprintf(out, size, "%s/%s", dst, rel); }

static void expect_refused(const char *what, const char *must_contain, const char *must_contain2) {
    sd_text_encoders te;
    sd_text_options opt;
    sd_text_options_defaults(&opt);
    opt.t5_max_length = 32;
    sq_error_clear();
    int rc = sd_text_encoders_load(&te, dst, SQ_CPU, SQ_F32, &opt);
    const char *msg = sq_error_message();
    TU_CHECK(rc == SQ_FAIL, "%s: accepted", what);
    TU_CHECK(strstr(msg, must_contain) != NULL, "%s: message does not name '%s': %s", what, must_contain, msg);
    TU_CHECK(!must_contain2 || strstr(msg, must_contain2), "%s: message lacks '%s': %s", what, must_contain2, msg);
    TU_CHECK(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    printf("%-38s -> %s\n", what, msg);
    if (rc == SQ_OK) sd_text_encoders_free(&te);
    restore();
}

static void remove_file(const char *rel) {
    char p[1400];
    path_of(p, sizeof p, rel);
    unlink(p);
}

static void overwrite(const char *rel, const char *text) {
    char p[1400];
    path_of(p, sizeof p, rel);
    write_file(p, text, strlen(text));
}

// keeps the first half of a file
static void truncate_half(const char *rel) {
    char p[1400];
    path_of(p, sizeof p, rel);
    struct stat st;
    SQ_CHECK(stat(p, &st) == 0 && truncate(p, st.st_size / 2) == 0, "truncate %s", p);
}

// rewrites a safetensors file without one tensor
static void drop_tensor(const char *rel, const char *victim) {
    char p[1400], s[1400];
    snprintf(s, sizeof s, "%s/%s", src, rel);
    path_of(p, sizeof p, rel);
    sq_safetensors *st;
    SQ_CHECK(sq_st_open(&st, s) == SQ_OK, "%s", sq_error_message());
    int n = sq_st_count(st), k = 0;
    sq_st_tensor_desc *d = calloc((size_t)n, sizeof *d);
    for (int i = 0; i < n; i++) {
        const sq_st_entry *e = sq_st_at(st, i);
        if (!strcmp(e->name, victim)) continue;
        d[k] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
        memcpy(d[k].shape, e->shape, sizeof e->shape);
        k++;
    }
    SQ_CHECK(sq_st_write(p, d, k, NULL, 0) == SQ_OK, "%s", sq_error_message());
    free(d);
    sq_st_close(st);
}

static void rmdir_all(void) {
    char p[1400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        path_of(p, sizeof p, files[i]);
        unlink(p);
    }
    static const char *const dirs[] = {"text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
                                       "tokenizer_2", "tokenizer_3", "transformer"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        path_of(p, sizeof p, dirs[i]);
        rmdir(p);
    }
    rmdir(dst);
}

int main(void) {
    snprintf(src, sizeof src, "%s/pipeline/tiny", tu_fixtures_dir());
    snprintf(dst, sizeof dst, "/tmp/sq-bad-text-XXXXXX");
    SQ_CHECK(mkdtemp(dst), "mkdtemp");
    restore();

    // the clean copy loads (so every refusal below is caused by its one change)
    sd_text_encoders te;
    sd_text_options opt;
    sd_text_options_defaults(&opt);
    opt.t5_max_length = 32;
    TU_CHECK(sd_text_encoders_load(&te, dst, SQ_CPU, SQ_F32, &opt) == SQ_OK, "clean copy: %s", sq_error_message());
    sd_text_encoders_free(&te);

    // tokenizers
    remove_file("tokenizer/vocab.json");
    expect_refused("CLIP-L vocab.json missing", "tokenizer/vocab.json", NULL);
    overwrite("tokenizer/vocab.json", "{\"a\": 1, \"b\":");
    expect_refused("CLIP-L vocab.json corrupt", "tokenizer/vocab.json", NULL);
    remove_file("tokenizer_2/merges.txt");
    expect_refused("CLIP-G merges.txt missing", "tokenizer_2/merges.txt", NULL);
    remove_file("tokenizer_3/spiece.model");
    expect_refused("T5 spiece.model missing", "tokenizer_3", NULL);
    overwrite("tokenizer_3/spiece.model", "this is not a sentencepiece model");
    expect_refused("T5 spiece.model corrupt", "spiece.model", NULL);

    // encoder folders and weights
    remove_file("text_encoder/config.json");
    expect_refused("CLIP-L config.json missing", "text_encoder/config.json", NULL);
    overwrite("text_encoder/config.json", "{\"hidden_size\": 32,");
    expect_refused("CLIP-L config.json corrupt", "text_encoder/config.json", NULL);
    overwrite("text_encoder_2/config.json",
              "{\"vocab_size\": 814, \"hidden_size\": 48, \"intermediate_size\": 96, \"num_hidden_layers\": 3,"
              " \"num_attention_heads\": 3, \"max_position_embeddings\": 77, \"projection_dim\": 24,"
              " \"hidden_act\": \"relu\"}");
    expect_refused("CLIP-G hidden_act relu", "text_encoder_2/config.json", "relu");
    // config values: a wrong JSON type or an out-of-range number names the file and the key
    overwrite("text_encoder_2/config.json",
              "{\"vocab_size\": 814, \"hidden_size\": 48, \"intermediate_size\": 96, \"num_hidden_layers\": \"3\","
              " \"num_attention_heads\": 3, \"max_position_embeddings\": 77, \"projection_dim\": 24}");
    expect_refused("CLIP-G num_hidden_layers \"3\"", "text_encoder_2/config.json", "'num_hidden_layers' is not an integer");
    overwrite("text_encoder_2/config.json",
              "{\"vocab_size\": 814, \"hidden_size\": 48, \"intermediate_size\": 96, \"num_hidden_layers\": 100000,"
              " \"num_attention_heads\": 3, \"max_position_embeddings\": 77, \"projection_dim\": 24}");
    expect_refused("CLIP-G num_hidden_layers 100000", "text_encoder_2/config.json", "'num_hidden_layers' is 100000");
    overwrite("text_encoder_2/config.json",
              "{\"vocab_size\": 814, \"hidden_size\": 48, \"intermediate_size\": 96, \"num_hidden_layers\": 3,"
              " \"num_attention_heads\": 3, \"max_position_embeddings\": 77, \"projection_dim\": 24,"
              " \"layer_norm_eps\": \"abc\"}");
    expect_refused("CLIP-G layer_norm_eps \"abc\"", "text_encoder_2/config.json", "'layer_norm_eps' is not a number");
    overwrite("text_encoder_3/config.json", "{\"d_model\": 0}");
    expect_refused("T5 d_model 0", "text_encoder_3/config.json", "'d_model' is 0");
    overwrite("text_encoder_3/config.json", "{\"num_heads\": -4}");
    expect_refused("T5 num_heads -4", "text_encoder_3/config.json", "'num_heads' is -4");
    overwrite("text_encoder_3/config.json", "{\"layer_norm_epsilon\": \"abc\"}");
    expect_refused("T5 layer_norm_epsilon \"abc\"", "text_encoder_3/config.json", "'layer_norm_epsilon' is not a number");
    overwrite("text_encoder/config.json",
              "{\"vocab_size\": 814, \"hidden_size\": 64, \"intermediate_size\": 64, \"num_hidden_layers\": 2,"
              " \"num_attention_heads\": 2, \"max_position_embeddings\": 77, \"projection_dim\": 16}");
    expect_refused("CLIP-L config width mismatch", "token_embedding", "shape");
    truncate_half("text_encoder_2/model.safetensors");
    expect_refused("CLIP-G weights truncated", "text_encoder_2: model.safetensors", NULL);
    drop_tensor("text_encoder/model.safetensors", "text_model.encoder.layers.1.mlp.fc2.weight");
    expect_refused("CLIP-L tensor missing", "text_model.encoder.layers.1.mlp.fc2.weight", "missing");
    drop_tensor("text_encoder_2/model.safetensors", "text_projection.weight");
    expect_refused("CLIP-G projection missing", "text_projection.weight", NULL);
    char p[1400];
    path_of(p, sizeof p, "text_encoder_3/config.json");
    unlink(p);
    path_of(p, sizeof p, "text_encoder_3/model.safetensors");
    unlink(p);
    path_of(p, sizeof p, "text_encoder_3");
    rmdir(p);
    expect_refused("T5 folder missing", "text_encoder_3", "--no-t5");

    // ...unless model_index.json says the pipeline was saved without T5, as diffusers
    // writes it: then it runs without T5, as diffusers does
    path_of(p, sizeof p, "model_index.json");
    const char *index = "{\"_class_name\": \"StableDiffusion3Pipeline\", \"text_encoder_3\": [null, null]}";
    write_file(p, index, strlen(index));
    TU_CHECK(sd_text_encoders_load(&te, dst, SQ_CPU, SQ_F32, &opt) == SQ_OK && !te.has_t5,
             "a pipeline saved without T5 loads without it: %s", sq_error_message());
    sd_text_encoders_free(&te);
    unlink(p);

    // single files: not a CLIP file, and a width that says neither L nor G
    sd_clip m;
    path_of(p, sizeof p, "text_encoder_3/model.safetensors");
    TU_CHECK(sd_clip_load(&m, p, SD_CLIP_L, SQ_CPU, SQ_F32) == SQ_FAIL && strstr(sq_error_message(), "not a CLIP"),
             "T5 file as CLIP refused: %s", sq_error_message());
    printf("%-38s -> %s\n", "T5 weights as a CLIP single file", sq_error_message());
    snprintf(p, sizeof p, "%s/clip/clip_l.safetensors", tu_fixtures_dir());
    TU_CHECK(sd_clip_load(&m, p, SD_CLIP_AUTO, SQ_CPU, SQ_F32) == SQ_FAIL && strstr(sq_error_message(), "say which"),
             "unknown width refused: %s", sq_error_message());
    printf("%-38s -> %s\n", "tiny single file, kind AUTO", sq_error_message());
    // num_attention_heads metadata that is not a whole integer in [1, width]
    static const char *const heads[] = {"12abc", "99999999999", "0", ""};
    for (int h = 0; h < 4; h++) {
        sq_safetensors *cs;
        SQ_CHECK(sq_st_open(&cs, p) == SQ_OK, "%s", sq_error_message());
        int n = sq_st_count(cs);
        sq_st_tensor_desc *d = calloc((size_t)n, sizeof *d);
        for (int i = 0; i < n; i++) {
            const sq_st_entry *e = sq_st_at(cs, i);
            d[i] = (sq_st_tensor_desc){.name = e->name, .dtype = e->dtype, .ndim = e->ndim, .data = e->data};
            memcpy(d[i].shape, e->shape, sizeof e->shape);
        }
        char hp[1400];
        path_of(hp, sizeof hp, "clip_heads.safetensors");
        sq_st_kv kv[1] = {{"num_attention_heads", heads[h]}};
        SQ_CHECK(sq_st_write(hp, d, n, kv, 1) == SQ_OK, "%s", sq_error_message());
        free(d);
        sq_st_close(cs);
        TU_CHECK(sd_clip_load(&m, hp, SD_CLIP_L, SQ_CPU, SQ_F32) == SQ_FAIL &&
                     strstr(sq_error_message(), "clip_heads.safetensors") && strstr(sq_error_message(), "num_attention_heads"),
                 "num_attention_heads '%s' refused naming the file and key: %s", heads[h], sq_error_message());
        printf("%-38s -> %s\n", "num_attention_heads metadata", sq_error_message());
        unlink(hp);
    }
    TU_CHECK(sd_text_encoders_load_files(&te, p, "/nonexistent/clip_g.safetensors", NULL, src, SQ_CPU, SQ_F32, NULL) ==
                 SQ_FAIL && strstr(sq_error_message(), "/nonexistent/clip_g.safetensors"),
             "missing clip_g refused: %s", sq_error_message());
    printf("%-38s -> %s\n", "clip_g.safetensors missing", sq_error_message());

    rmdir_all();
    return tu_finish("test_bad_text_encoders");
}
