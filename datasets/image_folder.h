// datasets/image_folder.h: finds the training images of a folder and their
// captions. Scanning only reads image headers (stbi_info; for WebP libwebp's
// WebPGetFeatures on the file's first KiB), so it is quick and a broken dataset
// fails before any model is loaded.
//
// Images: *.png, *.jpg, *.jpeg, *.bmp, *.webp (extension case-insensitive) directly
// in the folder, or in every subfolder with `recursive`. Hidden files/folders (name
// starting with '.') are ignored, other extensions too. WebP may be lossy, lossless,
// with alpha (dropped, as for PNG) or animated (its first frame is used, with a
// warning at scan time); see datasets/webp.h. Entries are sorted by their path relative to the folder ('/'-separated, bytewise
// strcmp), which is the order of everything else (plain caption lines, indices).
// Not honoured: JPEG EXIF orientation (stb_image ignores it; rotate such files).
//
// Captions come from the first of these that applies (precedence, highest first):
//  A. captions_file (--captions), in format 1 or 2 below, or format 4 when its name
//     ends in .jsonl or .csv (file_name then relative to images_dir); a metadata
//     file in the folder is then not read (an info line says so);
//  B. metadata.jsonl or metadata.csv in the top level of images_dir (the Hugging
//     Face imagefolder convention, format 4); both at once is an error;
//  C. sidecar files (format 3), <stem><caption_ext>.
// Formats:
//  1. captions_file with `relative/path.png<TAB>caption` lines, in any order. Every
//     image needs exactly one line; blank lines are ignored; an unknown file name,
//     a duplicate, or a line without a TAB is an error naming FILE:LINE; an image
//     with no line is an error naming the image.
//  2. captions_file with one caption per line and no TAB anywhere: line i is the
//     caption of image i in sorted order (counted before undecodable images are
//     skipped). Blank lines at the end of the file are ignored; a blank line before
//     the end is an empty caption. The number of lines must equal the number of
//     images, else an error giving both counts.
//     The format is auto-detected: any line containing a TAB means format 1.
//  3. `<stem>.txt` beside each image (kohya/SimpleTuner convention: foo.png ->
//     foo.txt; caption_ext ".caption" gives foo.caption, kohya's other spelling),
//     its lines joined with a space and trimmed. A missing file is an error naming
//     it, or (SD_CAPTION_MISSING_EMPTY) an empty caption with a warning.
//  4. metadata.jsonl / metadata.csv (datasets/metadata.h has the syntax): one entry
//     per image, file_name relative to images_dir (so "sub/a.png" for an image in a
//     subfolder, which is only scanned with `recursive`). As in format 1, every
//     image needs exactly one entry, and an unknown file name or a second entry for
//     an image is an error naming FILE:LINE; entries for images skipped as
//     undecodable are allowed.
// Caption files are UTF-8; a leading BOM and CR of CRLF line ends are dropped.
#ifndef SD_IMAGE_FOLDER_H
#define SD_IMAGE_FOLDER_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SD_BAD_IMAGE_FAIL = 0,   // an undecodable / unsupported image is an error (default)
    SD_BAD_IMAGE_SKIP,       // ... is left out of the dataset with a warning naming it
} sd_bad_image_mode;

typedef enum {
    SD_CAPTION_MISSING_FAIL = 0,   // missing <stem>.txt is an error (default)
    SD_CAPTION_MISSING_EMPTY,      // ... gives an empty caption and a warning
} sd_missing_caption_mode;

typedef struct {
    const char *images_dir;        // required
    const char *captions_file;     // NULL: metadata.jsonl/.csv in images_dir, else sidecar files
    const char *caption_ext;       // sidecar extension, ".txt" when NULL or ""; the dot is optional
    bool recursive;                // descend into subfolders
    sd_bad_image_mode bad_images;
    sd_missing_caption_mode missing_caption;
    // false: only the header is read at scan time (dimensions, format); true: every
    // image is fully decoded once at scan time, which also catches truncated data
    // (slower: a full decode per image).
    bool full_decode_check;
} sd_image_folder_opts;

typedef struct {
    char *rel_path;    // relative to images_dir, '/'-separated
    char *path;        // images_dir + "/" + rel_path
    int width, height; // pixels, from the file header
    char *caption;     // raw caption (dropout/tag shuffle happen later, per epoch)
} sd_image_entry;

typedef struct {
    sd_image_entry *entries;   // sorted by rel_path
    int count;                 // >= 1 after a successful scan
    int skipped;               // undecodable images left out (SD_BAD_IMAGE_SKIP)
} sd_image_folder;

// Scans the folder and reads the captions. SQ_OK, or SQ_FAIL with a one-line
// message naming the folder/file/line: missing or unreadable folder, no images,
// undecodable image (fail mode), or any caption error above. On failure *out is
// left empty (nothing to free). Warnings go to the log (core/log.h).
int sd_image_folder_scan(sd_image_folder *out, const sd_image_folder_opts *opts);
void sd_image_folder_free(sd_image_folder *f);

#ifdef __cplusplus
}
#endif

#endif
