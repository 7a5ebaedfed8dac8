// datasets/metadata.h: the Hugging Face `imagefolder` caption files, parsed into
// (file name, caption, line) rows. The folder scan (image_folder.c) finds them and
// matches the rows to the images; this file only knows the two text formats.
//
// metadata.jsonl: one JSON object per line, e.g.
//     {"file_name": "sub/a.png", "text": "a red square"}
//   Blank lines are skipped. "file_name" (a string) names the image relative to the
//   folder that holds the metadata file ('/'-separated; a leading "./" is dropped).
//   The caption key is the first of "text", "caption", "prompt" that the first entry
//   has, and every entry must then have that key, with a string value. Other keys
//   are ignored.
// metadata.csv: RFC 4180, comma-separated, with a header row naming the columns: a
//   "file_name" column and a caption column, the first of "text", "caption",
//   "prompt" present (other columns are ignored; header names are trimmed of
//   spaces). A field may be quoted with '"': inside it commas and line breaks are
//   data and '""' is one '"'. Every record must have as many fields as the header.
//   Records end with LF or CRLF; empty lines are skipped.
//
// Both: the text is UTF-8 (a leading BOM is dropped); a caption is trimmed of
// surrounding white space and its line breaks become spaces (as for <stem>.txt
// captions). Every error is one line "PATH:LINE: problem" (LINE counted from 1, the
// line where the entry or record starts), or "PATH: problem" for a file-wide one.
#ifndef SD_METADATA_H
#define SD_METADATA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *file_name;   // as written, less a leading "./"
    char *caption;     // trimmed, line breaks replaced by spaces
    int line;          // where the entry starts (1-based)
} sd_metadata_row;

typedef struct {
    sd_metadata_row *rows;
    int count;
    const char *caption_key;   // "text", "caption" or "prompt" (static storage)
} sd_metadata;

// Parse text[0..n) (it need not be NUL-terminated). `path` is for messages only.
// SQ_OK with at least one row; SQ_FAIL with the message above (and *out empty):
// invalid UTF-8, invalid JSON, a line that is not an object, no "file_name" or
// caption key, a value that is not a string, no entries (jsonl); no header, no
// file_name or caption column, a record with the wrong number of fields, an
// unterminated quote, text after a closing quote, no records (csv).
int sd_metadata_parse_jsonl(sd_metadata *out, const char *path, const char *text, size_t n);
int sd_metadata_parse_csv(sd_metadata *out, const char *path, const char *text, size_t n);
void sd_metadata_free(sd_metadata *m);

#ifdef __cplusplus
}
#endif

#endif
