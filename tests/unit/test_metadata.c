// tests/unit/test_metadata.c: the Hugging Face imagefolder caption files and the
// caption sources' precedence. The metadata.jsonl and metadata.csv parsers on
// hand-written texts (keys and columns, quoting, line breaks inside quotes, CRLF,
// BOM, escapes, line numbers); then folder scans: metadata.jsonl with an image in a
// subfolder, metadata.csv, --captions over metadata over sidecar files, --captions
// naming a .jsonl/.csv (read as metadata), and
// --caption-ext (.caption beside each image). The error cases are in
// tests/bad_input/test_bad_formats.c.
#include <stdbool.h>
#include <string.h>

#include "core/error.h"
#include "datasets/image_folder.h"
#include "datasets/metadata.h"
#include "tests/dataset_test_util.h"
#include "tests/test_util.h"

static void expect_rows(const char *what, const sd_metadata *m, const char *key, int n, const char *const *names,
                        const char *const *caps, const int *lines) {
    TU_CHECK(m->count == n, "%s: %d rows, want %d", what, m->count, n);
    TU_CHECK(m->caption_key && !strcmp(m->caption_key, key), "%s: caption key %s, want %s", what,
             m->caption_key ? m->caption_key : "(none)", key);
    for (int i = 0; i < n && i < m->count; i++) {
        TU_CHECK(!strcmp(m->rows[i].file_name, names[i]), "%s row %d: file_name '%s', want '%s'", what, i,
                 m->rows[i].file_name, names[i]);
        TU_CHECK(!strcmp(m->rows[i].caption, caps[i]), "%s row %d: caption '%s', want '%s'", what, i, m->rows[i].caption,
                 caps[i]);
        TU_CHECK(m->rows[i].line == lines[i], "%s row %d: line %d, want %d", what, i, m->rows[i].line, lines[i]);
    }
}

static void test_jsonl(void) {
    sd_metadata m;
    // BOM, CRLF, a blank line, "./", an escape, a line break and spaces in a caption,
    // other keys ignored, key order free.
    const char *t = "\xEF\xBB\xBF{\"file_name\": \"a.png\", \"text\": \"a red square\"}\r\n"
                    "\n"
                    "{\"text\": \"  caf\\u00e9,\\nnight \", \"file_name\": \"./sub/b.webp\", \"score\": 3}\n"
                    "   \n"
                    "{\"file_name\":\"c d.jpg\",\"text\":\"\",\"caption\":\"ignored\"}";
    int rc = sd_metadata_parse_jsonl(&m, "m.jsonl", t, strlen(t));
    TU_CHECK(rc == SQ_OK, "jsonl: %s", sq_error_message());
    const char *names[] = {"a.png", "sub/b.webp", "c d.jpg"};
    const char *caps[] = {"a red square", "caf\xC3\xA9, night", ""};
    const int lines[] = {1, 3, 5};
    if (rc == SQ_OK) expect_rows("jsonl", &m, "text", 3, names, caps, lines);
    sd_metadata_free(&m);
    TU_CHECK(m.count == 0 && m.rows == NULL, "free empties the struct");

    // "caption" chosen over "prompt" by the first entry; the text need not end in a newline
    const char *t2 = "{\"file_name\": \"x.png\", \"prompt\": \"p\", \"caption\": \"c\"}\n{\"file_name\": \"y.png\", \"caption\": \"c2\"}";
    rc = sd_metadata_parse_jsonl(&m, "m.jsonl", t2, strlen(t2));
    TU_CHECK(rc == SQ_OK, "jsonl caption key: %s", sq_error_message());
    const char *n2[] = {"x.png", "y.png"}, *c2[] = {"c", "c2"};
    const int l2[] = {1, 2};
    if (rc == SQ_OK) expect_rows("jsonl caption key", &m, "caption", 2, n2, c2, l2);
    sd_metadata_free(&m);

    const char *t3 = "{\"file_name\": \"x.png\", \"prompt\": \"only a prompt\"}\n";
    rc = sd_metadata_parse_jsonl(&m, "m.jsonl", t3, strlen(t3));
    const char *n3[] = {"x.png"}, *c3[] = {"only a prompt"};
    const int l3[] = {1};
    TU_CHECK(rc == SQ_OK, "jsonl prompt key: %s", sq_error_message());
    if (rc == SQ_OK) expect_rows("jsonl prompt key", &m, "prompt", 1, n3, c3, l3);
    sd_metadata_free(&m);

    // text[0..n) is honoured: a length that stops before the second line
    rc = sd_metadata_parse_jsonl(&m, "m.jsonl", t2, strchr(t2, '\n') - t2);
    TU_CHECK(rc == SQ_OK && m.count == 1, "jsonl: the length bounds the text (%d rows)", m.count);
    sd_metadata_free(&m);
}

static void test_csv(void) {
    sd_metadata m;
    // header with spaces and an extra column, text column first; quoted comma, quoted
    // CRLF and LF line breaks (line numbers keep counting), "" escape, an empty line,
    // CRLF record ends, an empty unquoted field, no newline at the end.
    const char *t = "\xEF\xBB\xBF text , file_name,score\r\n"
                    "\"a cat, sitting\",a.png,1\r\n"
                    "\r\n"
                    "\"two\r\nlines\nhere\",sub/b.webp,2\n"
                    "\"she said \"\"hi\"\"\",\"./c,d.jpg\",\n"
                    ",e.bmp,\"\"";
    int rc = sd_metadata_parse_csv(&m, "m.csv", t, strlen(t));
    TU_CHECK(rc == SQ_OK, "csv: %s", sq_error_message());
    const char *names[] = {"a.png", "sub/b.webp", "c,d.jpg", "e.bmp"};
    const char *caps[] = {"a cat, sitting", "two lines here", "she said \"hi\"", ""};
    const int lines[] = {2, 4, 7, 8};
    if (rc == SQ_OK) expect_rows("csv", &m, "text", 4, names, caps, lines);
    sd_metadata_free(&m);

    // column precedence: caption over prompt, wherever they stand
    const char *t2 = "prompt,file_name,caption\np1,x.png,c1\n";
    rc = sd_metadata_parse_csv(&m, "m.csv", t2, strlen(t2));
    const char *n2[] = {"x.png"}, *c2[] = {"c1"};
    const int l2[] = {2};
    TU_CHECK(rc == SQ_OK, "csv caption column: %s", sq_error_message());
    if (rc == SQ_OK) expect_rows("csv caption column", &m, "caption", 1, n2, c2, l2);
    sd_metadata_free(&m);
}

static sd_image_folder_opts opts(const char *captions, const char *ext, bool recursive) {
    sd_image_folder_opts o;
    memset(&o, 0, sizeof o);
    o.images_dir = dt_root;
    o.captions_file = captions;
    o.caption_ext = ext;
    o.recursive = recursive;
    return o;
}

static void expect_captions(const char *what, const sd_image_folder_opts *o, int n, const char *const *rel,
                            const char *const *caps) {
    sd_image_folder f;
    int rc = sd_image_folder_scan(&f, o);
    TU_CHECK(rc == SQ_OK, "%s: %s", what, sq_error_message());
    if (rc) return;
    TU_CHECK(f.count == n, "%s: %d images, want %d", what, f.count, n);
    for (int i = 0; i < n && i < f.count; i++)
        TU_CHECK(!strcmp(f.entries[i].rel_path, rel[i]) && !strcmp(f.entries[i].caption, caps[i]),
                 "%s: %s caption '%s', want %s '%s'", what, f.entries[i].rel_path, f.entries[i].caption, rel[i], caps[i]);
    sd_image_folder_free(&f);
}

static void test_folder(void) {
    char webp[512];
    snprintf(webp, sizeof webp, "%s/webp/lossless.webp", tu_fixtures_dir());
    dt_make_root("meta");
    dt_write_image("a.png", 6, 4, 3, 1);
    dt_mkdir("sub");
    FILE *in = fopen(webp, "rb"), *out = fopen(dt_path("sub/b.webp"), "wb");
    TU_CHECK(in && out, "copy %s", webp);
    if (!in || !out) return;
    char buf[4096];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
    fclose(in);
    fclose(out);
    dt_write_text("a.txt", "sidecar a");
    dt_write_text("sub/b.txt", "sidecar b");
    dt_write_text("a.caption", "kohya a");
    dt_write_text("sub/b.caption", "kohya b");
    const char *rel[] = {"a.png", "sub/b.webp"};

    // no metadata file: sidecars, .txt by default, --caption-ext with or without the dot
    sd_image_folder_opts o = opts(NULL, NULL, true);
    const char *side[] = {"sidecar a", "sidecar b"}, *kohya[] = {"kohya a", "kohya b"};
    expect_captions("sidecar .txt", &o, 2, rel, side);
    o = opts(NULL, ".caption", true);
    expect_captions("--caption-ext .caption", &o, 2, rel, kohya);
    o = opts(NULL, "caption", true);
    expect_captions("--caption-ext caption", &o, 2, rel, kohya);

    // metadata.jsonl beats the sidecars (and --caption-ext, which only names sidecars)
    dt_write_text("metadata.jsonl", "{\"file_name\": \"sub/b.webp\", \"text\": \"jsonl b\"}\n"
                                    "{\"file_name\": \"a.png\", \"text\": \"jsonl a\"}\n");
    const char *jl[] = {"jsonl a", "jsonl b"};
    o = opts(NULL, ".caption", true);
    expect_captions("metadata.jsonl", &o, 2, rel, jl);

    // --captions beats metadata.jsonl
    dt_write_text("caps.tsv", "a.png\ttsv a\nsub/b.webp\ttsv b\n");
    o = opts(dt_path("caps.tsv"), NULL, true);
    const char *tsv[] = {"tsv a", "tsv b"};
    expect_captions("--captions over metadata.jsonl", &o, 2, rel, tsv);

    // --captions naming a .jsonl or .csv (outside the folder) reads it as metadata
    char side_jsonl[512], side_csv[512];
    snprintf(side_jsonl, sizeof side_jsonl, "%s.jsonl", dt_root);
    snprintf(side_csv, sizeof side_csv, "%s.CSV", dt_root);
    FILE *sf = fopen(side_jsonl, "w");
    fputs("{\"file_name\": \"a.png\", \"prompt\": \"given a\"}\n{\"file_name\": \"sub/b.webp\", \"prompt\": \"given b\"}\n", sf);
    fclose(sf);
    sf = fopen(side_csv, "w");
    fputs("file_name,text\nsub/b.webp,csv given b\na.png,csv given a\n", sf);
    fclose(sf);
    const char *given[] = {"given a", "given b"}, *given_csv[] = {"csv given a", "csv given b"};
    o = opts(side_jsonl, NULL, true);
    expect_captions("--captions x.jsonl", &o, 2, rel, given);
    o = opts(side_csv, NULL, true);
    expect_captions("--captions x.CSV", &o, 2, rel, given_csv);
    remove(side_jsonl);
    remove(side_csv);

    // metadata.csv alone
    remove(dt_path("metadata.jsonl"));
    dt_write_text("metadata.csv", "file_name,caption\na.png,\"csv a, quoted\"\nsub/b.webp,csv b\n");
    const char *cv[] = {"csv a, quoted", "csv b"};
    o = opts(NULL, NULL, true);
    expect_captions("metadata.csv", &o, 2, rel, cv);

    // an entry for an image skipped as undecodable is allowed
    dt_write_text("broken.png", "not a png");
    dt_write_text("metadata.csv", "file_name,caption\na.png,csv a\nbroken.png,x\nsub/b.webp,csv b\n");
    o = opts(NULL, NULL, true);
    o.bad_images = SD_BAD_IMAGE_SKIP;
    const char *cv2[] = {"csv a", "csv b"};
    expect_captions("metadata.csv with a skipped image", &o, 2, rel, cv2);
}

int main(void) {
    test_jsonl();
    test_csv();
    test_folder();
    if (tu_failures == 0) dt_cleanup();
    return tu_finish("test_metadata");
}
