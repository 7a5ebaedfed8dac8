// datasets/metadata.c: the metadata.jsonl (cJSON, one object per line) and
// metadata.csv (a small RFC 4180 reader) caption files; rules in metadata.h.
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "datasets/captions.h"
#include "datasets/metadata.h"

// The caption key or column: the first of these that the first entry has.
static const char *const caption_keys[] = {"text", "caption", "prompt"};
#define N_CAPTION_KEYS 3

typedef struct {
    char *d;
    size_t n, cap;
} strbuf;

static int sb_put(strbuf *b, char c) {
    if (b->n + 1 >= b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        char *d = realloc(b->d, cap);
        if (!d) return sq_errorf("out of memory reading captions");
        b->d = d;
        b->cap = cap;
    }
    b->d[b->n++] = c;
    b->d[b->n] = '\0';
    return SQ_OK;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = sq_malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

// A copy of s, trimmed, with CRLF, CR and LF each turned into one space.
static char *clean_caption(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    char *d = sq_malloc(n + 1), *o = d;
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') continue;
        *o++ = s[i] == '\r' || s[i] == '\n' ? ' ' : s[i];
    }
    *o = '\0';
    return d;
}

void sd_metadata_free(sd_metadata *m) {
    for (int i = 0; i < m->count; i++) free(m->rows[i].file_name), free(m->rows[i].caption);
    free(m->rows);
    memset(m, 0, sizeof *m);
}

static int push_row(sd_metadata *m, int *cap, const char *name, const char *caption, int line) {
    if (m->count == *cap) {
        int c = *cap ? 2 * *cap : 64;
        sd_metadata_row *r = realloc(m->rows, (size_t)c * sizeof *r);
        if (!r) return sq_errorf("out of memory reading captions");
        m->rows = r;
        *cap = c;
    }
    if (!strncmp(name, "./", 2)) name += 2;
    sd_metadata_row *r = &m->rows[m->count];
    r->file_name = dup_str(name);
    r->caption = clean_caption(caption);
    r->line = line;
    if (!r->file_name || !r->caption) {
        free(r->file_name), free(r->caption);
        return SQ_FAIL;
    }
    m->count++;
    return SQ_OK;
}

// NUL-terminated copy of text[0..n) without a leading BOM, checked for UTF-8 and NULs.
static char *prepare(const char *path, const char *text, size_t n) {
    if (n >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) {
        text += 3;
        n -= 3;
    }
    if (memchr(text, '\0', n)) {
        sq_errorf("%s: contains a NUL byte (not a text file)", path);
        return NULL;
    }
    if (sd_text_check_utf8(path, text, n) != SQ_OK) return NULL;
    char *s = sq_malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, text, n);
    s[n] = '\0';
    return s;
}

static bool blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r') return false;
    return true;
}

// One line's object -> a row; the caption key is fixed by the first entry.
static int jsonl_entry(sd_metadata *m, int *cap, const char *path, int line, const char *s) {
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithOpts(s, &end, 1);
    if (!o) {
        const char *at = cJSON_GetErrorPtr();
        long col = at && at >= s ? (long)(at - s) + 1 : 0;
        return sq_errorf("%s:%d: invalid JSON (near byte %ld of the line; each line must be one JSON object)", path,
                         line, col);
    }
    int rc = SQ_OK;
    const cJSON *fn = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "file_name") : NULL;
    if (!cJSON_IsObject(o)) {
        rc = sq_errorf("%s:%d: not a JSON object (each line must be {\"file_name\": ..., \"text\": ...})", path, line);
    } else if (!fn) {
        rc = sq_errorf("%s:%d: no \"file_name\" key", path, line);
    } else if (!cJSON_IsString(fn)) {
        rc = sq_errorf("%s:%d: \"file_name\" is not a string", path, line);
    } else {
        if (!m->caption_key)
            for (int k = 0; k < N_CAPTION_KEYS && !m->caption_key; k++)
                if (cJSON_GetObjectItemCaseSensitive(o, caption_keys[k])) m->caption_key = caption_keys[k];
        const cJSON *t = m->caption_key ? cJSON_GetObjectItemCaseSensitive(o, m->caption_key) : NULL;
        if (!m->caption_key)
            rc = sq_errorf("%s:%d: no caption key (\"text\", \"caption\" or \"prompt\")", path, line);
        else if (!t)
            rc = sq_errorf("%s:%d: no \"%s\" key (the caption key of this file, from its first entry on line %d)", path,
                           line, m->caption_key, m->rows[0].line);
        else if (!cJSON_IsString(t))
            rc = sq_errorf("%s:%d: \"%s\" is not a string", path, line, m->caption_key);
        else
            rc = push_row(m, cap, fn->valuestring, t->valuestring, line);
    }
    cJSON_Delete(o);
    return rc;
}

int sd_metadata_parse_jsonl(sd_metadata *out, const char *path, const char *text, size_t n) {
    memset(out, 0, sizeof *out);
    char *buf = prepare(path, text, n);
    if (!buf) return SQ_FAIL;
    int cap = 0, rc = SQ_OK, line = 0;
    for (char *p = buf; rc == SQ_OK && p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        line++;
        if (!blank(p)) rc = jsonl_entry(out, &cap, path, line, p);
        p = nl ? nl + 1 : NULL;
    }
    free(buf);
    if (rc == SQ_OK && out->count == 0) rc = sq_errorf("%s: no entries", path);
    if (rc != SQ_OK) sd_metadata_free(out);
    return rc;
}

// ---- CSV ----

typedef struct {
    char **v;
    int n, cap;
} fieldv;

static void fields_clear(fieldv *f) {
    for (int i = 0; i < f->n; i++) free(f->v[i]);
    f->n = 0;
}

static int fields_push(fieldv *f, strbuf *b) {
    if (f->n == f->cap) {
        int c = f->cap ? 2 * f->cap : 8;
        char **v = realloc(f->v, (size_t)c * sizeof *v);
        if (!v) return sq_errorf("out of memory reading captions");
        f->v = v;
        f->cap = c;
    }
    f->v[f->n] = b->d ? b->d : dup_str("");
    if (!f->v[f->n]) return SQ_FAIL;
    f->n++;
    memset(b, 0, sizeof *b);   // the field owns the buffer now
    return SQ_OK;
}

static bool at_line_end(const char *p, const char *end) {
    return p == end || *p == '\n' || (*p == '\r' && (p + 1 == end || p[1] == '\n'));
}

// One record from *pp (which is not at an empty line) into f; *pp moves past its line
// end and *line counts the line breaks passed, those inside quotes included.
static int csv_record(const char *path, const char **pp, const char *end, int *line, fieldv *f) {
    const char *p = *pp;
    const int start = *line;
    strbuf b = {0};
    int rc = SQ_OK;
    for (;;) {
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p == end) {
                    rc = sq_errorf("%s:%d: unterminated quoted field (its closing '\"' is missing)", path, start);
                    break;
                }
                char c = *p++;
                if (c == '"') {
                    if (p < end && *p == '"') p++;   // "" is one quote
                    else break;
                }
                if (c == '\n') (*line)++;
                if ((rc = sb_put(&b, c)) != SQ_OK) break;
            }
            if (rc == SQ_OK && p < end && *p != ',' && !at_line_end(p, end))
                rc = sq_errorf("%s:%d: text after a closing quote (a quoted field must end at a comma or the line's end)",
                               path, *line);
        } else {
            for (; p < end && *p != ',' && !at_line_end(p, end) && rc == SQ_OK; p++) rc = sb_put(&b, *p);
        }
        if (rc == SQ_OK) rc = fields_push(f, &b);
        if (rc != SQ_OK) break;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '\r') p++;
        if (p < end && *p == '\n') {
            p++;
            (*line)++;
        }
        break;
    }
    free(b.d);
    *pp = p;
    return rc;
}

static char *trim_inplace(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

int sd_metadata_parse_csv(sd_metadata *out, const char *path, const char *text, size_t n) {
    memset(out, 0, sizeof *out);
    char *buf = prepare(path, text, n);
    if (!buf) return SQ_FAIL;
    const char *p = buf, *end = buf + strlen(buf);
    fieldv f = {0};
    int cap = 0, rc = SQ_OK, line = 1, n_cols = 0, col_name = -1, col_text = -1, header_line = 0;
    int best_key = N_CAPTION_KEYS;   // index into caption_keys of col_text's name
    while (rc == SQ_OK && p < end) {
        if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) {   // empty line
            p += *p == '\r' ? 2 : 1;
            line++;
            continue;
        }
        int start = line;
        fields_clear(&f);
        if ((rc = csv_record(path, &p, end, &line, &f)) != SQ_OK) break;
        if (!header_line) {
            header_line = start;
            n_cols = f.n;
            for (int i = 0; i < f.n; i++) {
                const char *h = trim_inplace(f.v[i]);
                if (col_name < 0 && !strcmp(h, "file_name")) col_name = i;
                for (int k = 0; k < best_key; k++)
                    if (!strcmp(h, caption_keys[k])) {
                        col_text = i;
                        best_key = k;
                    }
            }
            if (col_text >= 0) out->caption_key = caption_keys[best_key];
            if (col_name < 0)
                rc = sq_errorf("%s:%d: no \"file_name\" column in the header row (a header row naming the columns is "
                               "required)", path, start);
            else if (col_text < 0)
                rc = sq_errorf("%s:%d: no caption column (\"text\", \"caption\" or \"prompt\") in the header row", path,
                               start);
            continue;
        }
        if (f.n != n_cols)
            rc = sq_errorf("%s:%d: %d field%s, but the header row (line %d) has %d columns", path, start, f.n,
                           f.n == 1 ? "" : "s", header_line, n_cols);
        else
            rc = push_row(out, &cap, f.v[col_name], f.v[col_text], start);
    }
    fields_clear(&f);
    free(f.v);
    free(buf);
    if (rc == SQ_OK && !header_line) rc = sq_errorf("%s: empty (a header row and one record per image are expected)", path);
    else if (rc == SQ_OK && out->count == 0) rc = sq_errorf("%s: no records after the header row", path);
    if (rc != SQ_OK) sd_metadata_free(out);
    return rc;
}
