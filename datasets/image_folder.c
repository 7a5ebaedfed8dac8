// datasets/image_folder.c: folder scan (readdir, optional recursion), header checks
// (stbi_info; WebPGetFeatures through datasets/webp.h), and the caption sources:
// --captions, metadata.jsonl/.csv (parsed by datasets/metadata.c), sidecar files (see
// image_folder.h for the rules, the precedence and the error cases). Every message
// names the folder, file or FILE:LINE at fault.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "datasets/third_party/stb_image.h"

#include "core/error.h"
#include "core/log.h"
#include "datasets/captions.h"
#include "datasets/image_folder.h"
#include "datasets/metadata.h"
#include "datasets/transform.h"
#include "datasets/webp.h"

#define MAX_DEPTH 32

typedef enum { KIND_IMAGE, KIND_WEBP } file_kind;

typedef struct {
    char *rel, *path;
    file_kind kind;
    int w, h;
    bool bad;         // skipped (SD_BAD_IMAGE_SKIP)
    char *caption;
    int caption_line; // TAB format: line that gave the caption (0: none yet)
} candidate;

typedef struct {
    candidate *v;
    int n, cap;
} cand_list;

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = sq_malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static char *join_path(const char *a, const char *b) {
    if (!*a) return dup_str(b);
    size_t la = strlen(a), lb = strlen(b);
    char *d = sq_malloc(la + lb + 2);
    if (!d) return NULL;
    memcpy(d, a, la);
    d[la] = '/';
    memcpy(d + la + 1, b, lb + 1);
    return d;
}

static const char *extension(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : "";
}

static void free_cands(cand_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i].rel), free(l->v[i].path), free(l->v[i].caption);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int push_cand(cand_list *l, const char *rel, const char *path, file_kind kind) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        candidate *v = realloc(l->v, (size_t)cap * sizeof(candidate));
        if (!v) return sq_errorf("out of memory listing images");
        l->v = v;
        l->cap = cap;
    }
    candidate *c = &l->v[l->n];
    memset(c, 0, sizeof(*c));
    c->rel = dup_str(rel);
    c->path = dup_str(path);
    c->kind = kind;
    if (!c->rel || !c->path) {
        free(c->rel), free(c->path);
        return SQ_FAIL;
    }
    l->n++;
    return SQ_OK;
}

// Lists dir_path (= root + "/" + rel_dir) into l.
static int walk(cand_list *l, const char *dir_path, const char *rel_dir, bool recursive, int depth) {
    DIR *d = opendir(dir_path);
    if (!d) return sq_error_errno("%s: cannot open image folder", dir_path);
    int rc = SQ_OK;
    struct dirent *e;
    while (rc == SQ_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;   // ".", "..", hidden files and folders
        char *path = join_path(dir_path, e->d_name);
        char *rel = join_path(rel_dir, e->d_name);
        struct stat st;
        if (!path || !rel) {
            rc = SQ_FAIL;
        } else if (stat(path, &st) != 0) {
            sq_log_warn("%s: cannot stat (%s), ignored", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (recursive) {
                if (depth >= MAX_DEPTH)
                    rc = sq_errorf("%s: folders nested deeper than %d levels (a symlink loop?)", path, MAX_DEPTH);
                else
                    rc = walk(l, path, rel, recursive, depth + 1);
            }
        } else if (S_ISREG(st.st_mode)) {
            const char *ext = extension(e->d_name);
            if (!strcasecmp(ext, "png") || !strcasecmp(ext, "jpg") || !strcasecmp(ext, "jpeg") ||
                !strcasecmp(ext, "bmp"))
                rc = push_cand(l, rel, path, KIND_IMAGE);
            else if (!strcasecmp(ext, "webp"))
                rc = push_cand(l, rel, path, KIND_WEBP);
        }
        free(path);
        free(rel);
    }
    closedir(d);
    return rc;
}

static int cmp_cand(const void *a, const void *b) {
    return strcmp(((const candidate *)a)->rel, ((const candidate *)b)->rel);
}

// Header (and optionally full) check of one image; SQ_FAIL with the reason.
static int check_image(candidate *c, bool full) {
    if (c->kind == KIND_WEBP) {
        sd_webp_info wi;
        if (sd_webp_read_info(c->path, &wi) != SQ_OK) return SQ_FAIL;   // also checks size and length
        c->w = wi.width;
        c->h = wi.height;
        if (wi.animated) sq_log_warn("%s: animated WebP; only its first frame is used", c->path);
    } else {
        int n;
        if (sd_image_check_complete(c->path) != SQ_OK) return SQ_FAIL;   // before stb_image parses anything
        if (!stbi_info(c->path, &c->w, &c->h, &n)) {
            const char *why = stbi_failure_reason();
            return sq_errorf("%s: not a decodable PNG/JPEG/BMP image (%s)", c->path, why ? why : "unknown reason");
        }
        if (sd_image_check_size(c->path, c->w, c->h) != SQ_OK) return SQ_FAIL;
    }
    if (full) {   // the loader's own decode, with all of its checks
        int w, h;
        uint8_t *px;
        if (sd_image_decode_rgb(c->path, &px, &w, &h) != SQ_OK) return SQ_FAIL;
        free(px);
        if (w != c->w || h != c->h)
            return sq_errorf("%s: decodes to %dx%d but its header says %dx%d", c->path, w, h, c->w, c->h);
    }
    return SQ_OK;
}

// Whole file into a NUL-terminated buffer. errno is kept for the caller (ENOENT).
static int read_text(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        sq_error_errno("%s: cannot open", path);
        errno = e;   // the .txt caption reader tells a missing file (ENOENT) apart
        return SQ_FAIL;
    }
    size_t cap = 4096, n = 0;
    char *buf = sq_malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return sq_errorf("%s: out of memory reading it", path);
    if (err) {
        free(buf);
        return sq_errorf("%s: read error", path);
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        free(buf);
        return sq_errorf("%s: contains a NUL byte (not a text file)", path);
    }
    // UTF-8 byte order mark.
    if (n >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF) {
        memmove(buf, buf + 3, n - 2);
        n -= 3;
    }
    if (sd_text_check_utf8(path, buf, n) != SQ_OK) {
        free(buf);
        return SQ_FAIL;
    }
    *out = buf;
    *len = n;
    return SQ_OK;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) *--e = '\0';
    return s;
}

// Splits buf in place into lines (CR of CRLF removed). *lines points into buf.
static int split_lines(char *buf, size_t len, char ***lines, int *n) {
    int cap = 1;
    for (size_t i = 0; i < len; i++) cap += buf[i] == '\n';
    *lines = sq_calloc((size_t)cap, sizeof(char *));
    if (!*lines) return SQ_FAIL;
    *n = 0;
    char *p = buf;
    for (;;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[l - 1] = '\0';
        if (nl || *p) (*lines)[(*n)++] = p;   // no empty line after the final newline
        if (!nl) break;
        p = nl + 1;
    }
    return SQ_OK;
}

static bool is_blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r') return false;
    return true;
}

static candidate *find_rel(cand_list *l, const char *rel) {
    candidate key = {.rel = (char *)rel};
    return bsearch(&key, l->v, (size_t)l->n, sizeof(candidate), cmp_cand);
}

// The caption of image `name` (relative to dir) from FILE:LINE: unknown names and
// second captions are errors.
static int assign_caption(cand_list *l, const char *file, int line, const char *name, const char *cap,
                          const char *dir, bool recursive) {
    if (!strncmp(name, "./", 2)) name += 2;
    candidate *c = find_rel(l, name);
    if (!c)
        return sq_errorf("%s:%d: unknown image '%s' (not found in %s%s)", file, line, name, dir,
                         strchr(name, '/') && !recursive ? "; images in subfolders need --recursive" : "");
    if (c->caption_line)
        return sq_errorf("%s:%d: second caption for '%s' (first on line %d)", file, line, name, c->caption_line);
    c->caption = dup_str(cap);
    if (!c->caption) return SQ_FAIL;
    c->caption_line = line;
    return SQ_OK;
}

// After named captions: every image that decodes has one.
static int check_all_captioned(const cand_list *l, const char *file) {
    for (int i = 0; i < l->n; i++)
        if (!l->v[i].bad && !l->v[i].caption_line) return sq_errorf("%s: no caption for image '%s'", file, l->v[i].rel);
    return SQ_OK;
}

static int captions_tab(cand_list *l, const char *file, char **lines, int n, const char *dir, bool recursive) {
    for (int i = 0; i < n; i++) {
        char *line = lines[i];
        if (is_blank(line)) continue;
        char *tab = strchr(line, '\t');
        if (!tab) return sq_errorf("%s:%d: no TAB between file name and caption (TAB format, as other lines)", file, i + 1);
        *tab = '\0';
        if (assign_caption(l, file, i + 1, trim(line), trim(tab + 1), dir, recursive) != SQ_OK) return SQ_FAIL;
    }
    return check_all_captioned(l, file);
}

static int captions_plain(cand_list *l, const char *file, char **lines, int n, const char *dir) {
    while (n > 0 && is_blank(lines[n - 1])) n--;   // blank lines at the end
    if (n != l->n)
        return sq_errorf("%s: %d caption lines but %d images in %s (one caption per line in sorted file-name order, "
                         "or 'file<TAB>caption' lines)", file, n, l->n, dir);
    for (int i = 0; i < n; i++) {
        l->v[i].caption = dup_str(trim(lines[i]));
        if (!l->v[i].caption) return SQ_FAIL;
    }
    return SQ_OK;
}

static int captions_from_file(cand_list *l, const char *file, const char *dir, bool recursive) {
    char *buf, **lines = NULL;
    size_t len;
    int n;
    if (read_text(file, &buf, &len)) return sq_error_context("captions");
    if (split_lines(buf, len, &lines, &n)) {
        free(buf);
        return SQ_FAIL;
    }
    bool tab_format = false;
    for (int i = 0; i < n && !tab_format; i++) tab_format = strchr(lines[i], '\t') != NULL;
    int rc = tab_format ? captions_tab(l, file, lines, n, dir, recursive) : captions_plain(l, file, lines, n, dir);
    free(lines);
    free(buf);
    return rc;
}

// metadata.jsonl or metadata.csv in the images folder (Hugging Face imagefolder).
static int captions_from_metadata(cand_list *l, const char *file, bool csv, const char *dir, bool recursive) {
    char *buf;
    size_t len;
    if (read_text(file, &buf, &len)) return sq_error_context("captions");
    sd_metadata m;
    int rc = csv ? sd_metadata_parse_csv(&m, file, buf, len) : sd_metadata_parse_jsonl(&m, file, buf, len);
    free(buf);
    if (rc != SQ_OK) return SQ_FAIL;
    for (int i = 0; i < m.count && rc == SQ_OK; i++)
        rc = assign_caption(l, file, m.rows[i].line, m.rows[i].file_name, m.rows[i].caption, dir, recursive);
    if (rc == SQ_OK) rc = check_all_captioned(l, file);
    if (rc == SQ_OK)
        sq_log_info("captions: %s (%d entries, caption %s \"%s\")", file, m.count, csv ? "column" : "key", m.caption_key);
    sd_metadata_free(&m);
    return rc;
}

// <stem><ext> beside each image (ext ".txt" by default): lines joined with a space, trimmed.
static int captions_from_txt(cand_list *l, const char *ext, sd_missing_caption_mode missing) {
    for (int i = 0; i < l->n; i++) {
        candidate *c = &l->v[i];
        if (c->bad) continue;
        const char *dot = strrchr(c->path, '.');
        size_t stem = (size_t)(dot - c->path), n_ext = strlen(ext);
        char *txt = sq_malloc(stem + n_ext + 1);
        if (!txt) return SQ_FAIL;
        memcpy(txt, c->path, stem);
        memcpy(txt + stem, ext, n_ext + 1);
        char *buf;
        size_t len;
        errno = 0;
        if (read_text(txt, &buf, &len)) {
            if (errno == ENOENT) {
                if (missing == SD_CAPTION_MISSING_EMPTY) {
                    sq_log_warn("%s: missing caption file for %s, using an empty caption", txt, c->rel);
                    c->caption = dup_str("");
                    free(txt);
                    if (!c->caption) return SQ_FAIL;
                    continue;
                }
                sq_errorf("%s: missing caption file for image %s (give --captions FILE, a metadata.jsonl or "
                          "metadata.csv in the folder, or a %s beside each image)", txt, c->rel, ext);
            }
            free(txt);
            return SQ_FAIL;
        }
        for (size_t k = 0; k < len; k++)
            if (buf[k] == '\n' || buf[k] == '\r') buf[k] = ' ';
        c->caption = dup_str(trim(buf));
        free(buf);
        free(txt);
        if (!c->caption) return SQ_FAIL;
    }
    return SQ_OK;
}

// The caption source, in order of precedence (image_folder.h): --captions, then
// metadata.jsonl or metadata.csv in the folder's top level, then sidecar files.
static int read_captions(cand_list *l, const sd_image_folder_opts *o, const char *root) {
    char ext[64] = ".txt";
    if (o->caption_ext && *o->caption_ext) {
        const char *e = o->caption_ext + (o->caption_ext[0] == '.');
        if (!*e || strchr(e, '/') || strlen(e) + 2 > sizeof ext)
            return sq_errorf("caption extension '%s': give a file extension such as .txt or .caption", o->caption_ext);
        snprintf(ext, sizeof ext, ".%s", e);
    }
    char *jsonl = join_path(root, "metadata.jsonl"), *csv = join_path(root, "metadata.csv");
    if (!jsonl || !csv) {
        free(jsonl), free(csv);
        return SQ_FAIL;
    }
    struct stat st;
    bool has_jsonl = stat(jsonl, &st) == 0 && S_ISREG(st.st_mode), has_csv = stat(csv, &st) == 0 && S_ISREG(st.st_mode);
    int rc;
    if (o->captions_file) {
        if (has_jsonl || has_csv)
            sq_log_info("%s is not read: the captions come from %s", has_jsonl ? jsonl : csv, o->captions_file);
        // A .jsonl or .csv given by name is a metadata file (read as a captions file
        // its JSON or CSV lines would become captions).
        const char *e = extension(o->captions_file);
        if (!strcasecmp(e, "jsonl") || !strcasecmp(e, "csv"))
            rc = captions_from_metadata(l, o->captions_file, !strcasecmp(e, "csv"), root, o->recursive);
        else
            rc = captions_from_file(l, o->captions_file, root, o->recursive);
    } else if (has_jsonl && has_csv) {
        rc = sq_errorf("%s: holds both metadata.jsonl and metadata.csv; keep one (or name the captions with --captions)",
                       root);
    } else if (has_jsonl || has_csv) {
        rc = captions_from_metadata(l, has_jsonl ? jsonl : csv, has_csv, root, o->recursive);
    } else {
        rc = captions_from_txt(l, ext, o->missing_caption);
    }
    free(jsonl);
    free(csv);
    return rc;
}

int sd_image_folder_scan(sd_image_folder *out, const sd_image_folder_opts *o) {
    memset(out, 0, sizeof(*out));
    if (!o->images_dir || !*o->images_dir) return sq_errorf("no image folder given");
    const char *dir = o->images_dir;
    struct stat st;
    if (stat(dir, &st) != 0) return sq_error_errno("%s: image folder", dir);
    if (!S_ISDIR(st.st_mode)) return sq_errorf("%s: not a folder (the images must be in a folder)", dir);
    // Strip trailing slashes so paths read "dir/a.png", keeping "/" itself.
    char *root = dup_str(dir);
    if (!root) return SQ_FAIL;
    for (size_t k = strlen(root); k > 1 && root[k - 1] == '/'; k--) root[k - 1] = '\0';

    cand_list l = {0};
    int rc = walk(&l, root, "", o->recursive, 0);
    if (rc == SQ_OK && l.n == 0)
        rc = sq_errorf("%s: no images found (PNG, JPEG, BMP or WebP%s)", root,
                       o->recursive ? ", searched recursively" : "; subfolders are not searched without recursion");
    if (rc == SQ_OK) {
        qsort(l.v, (size_t)l.n, sizeof(candidate), cmp_cand);
        int n_bad = 0;
        for (int i = 0; i < l.n && rc == SQ_OK; i++) {
            if (check_image(&l.v[i], o->full_decode_check) == SQ_OK) continue;
            if (o->bad_images == SD_BAD_IMAGE_FAIL) {
                rc = SQ_FAIL;
            } else {
                sq_log_warn("skipping %s", sq_error_message());
                l.v[i].bad = true;
                n_bad++;
            }
        }
        if (rc == SQ_OK && n_bad == l.n) rc = sq_errorf("%s: none of its %d images can be decoded", root, l.n);
        out->skipped = n_bad;
    }
    if (rc == SQ_OK) rc = read_captions(&l, o, root);
    if (rc == SQ_OK) {
        out->entries = sq_calloc((size_t)(l.n - out->skipped), sizeof(sd_image_entry));
        if (!out->entries) rc = SQ_FAIL;
    }
    if (rc != SQ_OK) {
        free_cands(&l);
        free(root);
        memset(out, 0, sizeof(*out));
        return SQ_FAIL;
    }
    for (int i = 0; i < l.n; i++) {
        candidate *c = &l.v[i];
        if (c->bad) continue;
        sd_image_entry *e = &out->entries[out->count++];
        e->rel_path = c->rel;
        e->path = c->path;
        e->caption = c->caption;
        e->width = c->w;
        e->height = c->h;
        c->rel = c->path = c->caption = NULL;   // moved
    }
    free_cands(&l);
    free(root);
    return SQ_OK;
}

void sd_image_folder_free(sd_image_folder *f) {
    for (int i = 0; i < f->count; i++) free(f->entries[i].rel_path), free(f->entries[i].path), free(f->entries[i].caption);
    free(f->entries);
    memset(f, 0, sizeof(*f));
}
