// text_encoders/clip_tokenizer.c: CLIP's byte-level BPE tokenizer as transformers'
// fast CLIPTokenizer computes it (the tokenizers library; what diffusers uses, and
// transformers 5's only CLIPTokenizer), which agrees with OpenAI's CLIP tokenizer:
//   1. split the raw text on special/added tokens (bos, eos, unk, pad and the
//      tokenizer_config's added_tokens_decoder), leftmost-longest, like the
//      added-token trie; those map straight to their ids;
//   2. the normalizer on each other chunk: NFC, every run of \s to one space,
//      lower-case (code point by code point: no final sigma, "İ" -> "i" U+0307);
//      nothing is dropped, and CJK ideographs are not split apart ("東京" stays one
//      word, unlike the slow tokenizer's BasicTokenizer);
//   3. the CLIP regex <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
//      [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ cuts words (ByteLevel's GPT-2 regex then
//      splits only the two literals, into "<|", the word, "|>"); each word's UTF-8
//      bytes are mapped through GPT-2's bytes_to_unicode, "</w>" joins its last
//      symbol, and merges.txt pairs are applied lowest rank first;
//   4. bos + first max_len-2 tokens + eos, padded with the pad id.
// The Unicode data (text_encoders/unicode.c) is generated from the tokenizers
// library itself by tools/make_unicode_tables.py.
// Limit: non-special added tokens that the reference would match after
// normalisation are matched on the raw text, case-sensitively.
#include "text_encoders/clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "text_encoders/unicode.h"

// transformers keeps merges.txt lines [1, 49152-256-2+1): the header is line 0.
#define CLIP_MAX_MERGES (49152 - 256 - 2)
#define MAX_SPECIALS 64

// ---------------------------------------------------------------------------
// string -> int32 hash table (open addressing, FNV-1a), for vocab and merge ranks

typedef struct { char *key; uint32_t len; int32_t val; } ht_entry;
typedef struct { ht_entry *e; size_t cap, n; } ht;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

static int ht_init(ht *t, size_t expected) {
    size_t cap = 64;
    while (cap < expected * 2) cap *= 2;
    t->e = sq_calloc(cap, sizeof *t->e);
    if (!t->e) return SQ_FAIL;
    t->cap = cap;
    t->n = 0;
    return SQ_OK;
}

static void ht_free(ht *t) {
    if (!t->e) return;
    for (size_t i = 0; i < t->cap; i++) free(t->e[i].key);
    free(t->e);
    t->e = NULL;
}

static ht_entry *ht_slot(const ht *t, const char *k, size_t n) {
    size_t i = (size_t)fnv1a(k, n) & (t->cap - 1);
    for (;;) {
        ht_entry *e = &t->e[i];
        if (!e->key || (e->len == n && memcmp(e->key, k, n) == 0)) return e;
        i = (i + 1) & (t->cap - 1);
    }
}

// Inserts or overwrites (Python dicts keep the last value of a repeated key).
static int ht_put(ht *t, const char *k, size_t n, int32_t v) {
    ht_entry *e = ht_slot(t, k, n);
    if (!e->key) {
        if ((t->n + 1) * 2 > t->cap) {  // keep the load under 1/2: grow and re-insert
            ht old = *t;
            if (ht_init(t, old.cap) != SQ_OK) { *t = old; return SQ_FAIL; }
            for (size_t i = 0; i < old.cap; i++)
                if (old.e[i].key) { *ht_slot(t, old.e[i].key, old.e[i].len) = old.e[i]; t->n++; }
            free(old.e);
            e = ht_slot(t, k, n);
        }
        e->key = sq_malloc(n + 1);
        if (!e->key) return SQ_FAIL;
        memcpy(e->key, k, n);
        e->key[n] = 0;
        e->len = (uint32_t)n;
        t->n++;
    }
    e->val = v;
    return SQ_OK;
}

static int ht_get(const ht *t, const char *k, size_t n, int32_t *v) {
    const ht_entry *e = ht_slot(t, k, n);
    if (!e->key) return 0;
    *v = e->val;
    return 1;
}

// ---------------------------------------------------------------------------

typedef struct { char *s; size_t len; int32_t id; } special_tok;

struct sd_clip_tokenizer {
    ht vocab;   // byte-encoded token -> id
    ht ranks;   // "first second" -> merge rank
    int32_t bos, eos, unk, pad;
    special_tok specials[MAX_SPECIALS];  // split out of the raw text before anything else
    int n_specials;
    char byte_sym[256][3];  // bytes_to_unicode, as UTF-8 (1 or 2 bytes + NUL)
};

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to
// U+0100.. in byte order, so every byte is a visible, non-space symbol.
static void init_byte_symbols(sd_clip_tokenizer *t) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        unsigned cp = keep ? (unsigned)b : 256u + (unsigned)n++;
        char *o = t->byte_sym[b];
        if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
        else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
    }
}

// ---------------------------------------------------------------------------
// UTF-8

// One code point from UTF-8; a malformed byte gives U+FFFD, as Python's
// decode(errors="replace") would (sd-qzo's callers refuse text that is not UTF-8).
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned char b = s[*i];
    int len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || *i + (size_t)len > n) { (*i)++; return 0xFFFD; }
    uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (int k = 1; k < len; k++) {
        if ((s[*i + (size_t)k] & 0xC0) != 0x80) { (*i)++; return 0xFFFD; }
        c = (c << 6) | (s[*i + (size_t)k] & 0x3Fu);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { (*i)++; return 0xFFFD; }
    *i += (size_t)len;
    return c;
}

static size_t utf8_put(uint32_t c, char *o) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3F)); o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

// ---------------------------------------------------------------------------
// Tokenizing

typedef struct {
    int32_t *ids;
    int n, cap;  // cap: the last index content may use (max_len-1 leaves room for eos)
} emitter;

static int emit(emitter *e, int32_t id) {
    if (e->n < e->cap) e->ids[e->n++] = id;
    return e->n >= e->cap;  // 1: full, stop
}

// Scratch buffers reused across words of one call.
typedef struct {
    char *s;         // the byte-encoded word + "</w>"
    size_t *start;   // symbol start offsets; symbol i is [start[i], start[i+1]) and the last ends at len
    char *key;       // "first second"
    size_t cap_bytes, cap_syms;
} bpe_scratch;

static int scratch_reserve(bpe_scratch *w, size_t bytes, size_t syms) {
    if (bytes > w->cap_bytes) {
        char *s = realloc(w->s, bytes), *k = s ? realloc(w->key, bytes + 1) : NULL;
        if (s) w->s = s;
        if (k) w->key = k;
        if (!s || !k) return sq_errorf("out of host memory tokenizing");
        w->cap_bytes = bytes;
    }
    if (syms > w->cap_syms) {
        size_t *p = realloc(w->start, (syms + 1) * sizeof *p);
        if (!p) return sq_errorf("out of host memory tokenizing");
        w->start = p;
        w->cap_syms = syms;
    }
    return SQ_OK;
}

// BPE on one pre-tokenised word (its UTF-8 bytes); emits ids. Returns 1 when the
// output is full, 0 to go on, SQ_FAIL on error.
static int bpe_word(const sd_clip_tokenizer *t, bpe_scratch *w, const char *word, size_t n, emitter *e) {
    if (scratch_reserve(w, 2 * n + 5, n) != SQ_OK) return SQ_FAIL;
    size_t len = 0, nsym = n;
    for (size_t i = 0; i < n; i++) {
        const char *sym = t->byte_sym[(unsigned char)word[i]];
        w->start[i] = len;
        size_t l = strlen(sym);
        memcpy(w->s + len, sym, l);
        len += l;
    }
    memcpy(w->s + len, "</w>", 4);
    len += 4;
    size_t *st = w->start;
    while (nsym > 1) {
        st[nsym] = len;  // sentinel: the end of the last symbol
        int32_t best = INT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < nsym; i++) {
            size_t la = st[i + 1] - st[i], lb = st[i + 2] - st[i + 1];
            memcpy(w->key, w->s + st[i], la);
            w->key[la] = ' ';
            memcpy(w->key + la + 1, w->s + st[i + 1], lb);
            int32_t r;
            if (ht_get(&t->ranks, w->key, la + 1 + lb, &r) && r < best) { best = r; bi = i; }
        }
        if (best == INT32_MAX) break;
        // Merge every occurrence of the best pair, left to right, as the reference does.
        const char *fa = w->s + st[bi], *fb = w->s + st[bi + 1];
        size_t la = st[bi + 1] - st[bi], lb = st[bi + 2] - st[bi + 1];
        size_t out = 0;
        for (size_t i = 0; i < nsym;) {
            st[out++] = st[i];
            if (i + 1 < nsym && st[i + 1] - st[i] == la && st[i + 2] - st[i + 1] == lb &&
                memcmp(w->s + st[i], fa, la) == 0 && memcmp(w->s + st[i + 1], fb, lb) == 0)
                i += 2;
            else
                i += 1;
        }
        nsym = out;
    }
    st[nsym] = len;
    for (size_t i = 0; i < nsym; i++) {
        int32_t id;
        if (!ht_get(&t->vocab, w->s + st[i], st[i + 1] - st[i], &id)) id = t->unk;
        if (emit(e, id)) return 1;
    }
    return 0;
}

static int starts_with_cps(const uint32_t *c, size_t n, const char *lit) {
    size_t l = strlen(lit);
    if (l > n) return 0;
    for (size_t i = 0; i < l; i++)
        if (c[i] != (uint32_t)(unsigned char)lit[i]) return 0;
    return 1;
}

enum { C_SEP, C_LETTER, C_NUMBER, C_OTHER };

static int cls(uint32_t c) {
    if (c == ' ') return C_SEP;
    if (sd_uc_is_letter(c)) return C_LETTER;
    if (sd_uc_is_number(c)) return C_NUMBER;
    return C_OTHER;
}

static int bpe_cps(const sd_clip_tokenizer *t, bpe_scratch *w, const uint32_t *cp, size_t n, char *word, emitter *e) {
    size_t wl = 0;
    for (size_t q = 0; q < n; q++) wl += utf8_put(cp[q], word + wl);
    return bpe_word(t, w, word, wl, e);
}

// One chunk of text between added tokens: the normalizer (NFC, \s+ -> " ",
// lower-case), the pre-tokenizer (the CLIP regex, then ByteLevel's GPT-2 regex,
// which only ever splits a literal <|startoftext|> / <|endoftext|> further), BPE.
static int tokenize_chunk(const sd_clip_tokenizer *t, bpe_scratch *w, const char *text, size_t n, emitter *e) {
    if (n == 0) return 0;
    // n bytes hold at most n code points; NFC grows them at most 4x, lower-casing 3x
    uint32_t *raw = sq_malloc((n + 1) * sizeof *raw);
    uint32_t *nfc = raw ? sq_malloc((SD_UC_NFC_MAX_GROWTH * n + 1) * sizeof *nfc) : NULL;
    uint32_t *cp = nfc ? sq_malloc((3 * SD_UC_NFC_MAX_GROWTH * n + 1) * sizeof *cp) : NULL;
    char *word = cp ? sq_malloc(4 * 3 * SD_UC_NFC_MAX_GROWTH * n + 1) : NULL;
    if (!word) { free(cp); free(nfc); free(raw); return SQ_FAIL; }
    size_t nr = 0;
    for (size_t i = 0; i < n;) raw[nr++] = utf8_next((const unsigned char *)text, n, &i);
    size_t nn = sd_uc_nfc(raw, nr, nfc), m = 0;
    for (size_t i = 0; i < nn; i++) {
        if (sd_uc_is_space(nfc[i])) { cp[m++] = ' '; continue; }
        m += (size_t)sd_uc_lower(nfc[i], cp + m);
    }
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    static const char *const literals[] = {"<|startoftext|>", "<|endoftext|>"};
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0;) {
        int k = cls(cp[i]);
        if (k == C_SEP) { i++; continue; }
        size_t j = i + 1;
        int found = 0;
        for (size_t q = 0; q < 2 && !found; q++)
            if (starts_with_cps(cp + i, m - i, literals[q])) {
                // GPT-2's regex splits it into "<|", the word, "|>", each its own BPE word
                size_t l = strlen(literals[q]);
                rc = bpe_cps(t, w, cp + i, 2, word, e);
                if (rc == 0) rc = bpe_cps(t, w, cp + i + 2, l - 4, word, e);
                if (rc == 0) rc = bpe_cps(t, w, cp + i + l - 2, 2, word, e);
                j = i + l;
                found = 1;
            }
        if (!found) {
            for (size_t q = 0; q < sizeof contractions / sizeof *contractions && !found; q++)
                if (starts_with_cps(cp + i, m - i, contractions[q])) { j = i + strlen(contractions[q]); found = 1; }
            if (!found && k != C_NUMBER)  // letters run; other (not space/letter/number) runs; numbers are single
                while (j < m && cls(cp[j]) == k) j++;
            rc = bpe_cps(t, w, cp + i, j - i, word, e);
        }
        i = j;
    }
    free(word);
    free(cp);
    free(nfc);
    free(raw);
    return rc;
}

int sd_clip_tokenize(const sd_clip_tokenizer *t, const char *text, int max_len, int32_t *ids, int *n_real) {
    if (max_len < 2) return sq_errorf("clip tokenizer: max_len %d is below 2 (bos + eos)", max_len);
    if (!text) text = "";
    emitter e = {ids, 0, max_len - 1};
    emit(&e, t->bos);
    bpe_scratch w = {0};
    size_t n = strlen(text), s = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        // leftmost-longest special token at i, as the added-token trie splits
        const special_tok *best = NULL;
        for (int k = 0; k < t->n_specials; k++) {
            const special_tok *sp = &t->specials[k];
            if (sp->len <= n - i && memcmp(text + i, sp->s, sp->len) == 0 && (!best || sp->len > best->len)) best = sp;
        }
        if (!best) { i++; continue; }
        rc = tokenize_chunk(t, &w, text + s, i - s, &e);
        if (rc == 0) rc = emit(&e, best->id);
        i += best->len;
        s = i;
    }
    if (rc == 0) rc = tokenize_chunk(t, &w, text + s, n - s, &e);
    free(w.s);
    free(w.key);
    free(w.start);
    if (rc < 0) return sq_error_context("clip tokenizer");
    ids[e.n++] = t->eos;
    if (n_real) *n_real = e.n;
    for (int i = e.n; i < max_len; i++) ids[i] = t->pad;
    return SQ_OK;
}

// ---------------------------------------------------------------------------
// Loading

static int load_vocab(sd_clip_tokenizer *t, const char *path) {
    char *text;
    if (sq_read_file(path, &text, NULL) != SQ_OK) return SQ_FAIL;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at && at >= text ? (long)(at - text) : -1;
        free(text);
        return sq_errorf("%s: not valid JSON (near byte %ld)", path, pos);
    }
    free(text);
    int rc = SQ_OK;
    if (!cJSON_IsObject(root) || !root->child) { rc = sq_errorf("%s: expected a non-empty JSON object of token ids", path); goto done; }
    if (ht_init(&t->vocab, (size_t)cJSON_GetArraySize(root)) != SQ_OK) { rc = SQ_FAIL; goto done; }
    for (const cJSON *it = root->child; it; it = it->next) {
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it) || v < 0 || v > INT32_MAX || v != floor(v)) {
            rc = sq_errorf("%s: token '%s' has no integer id", path, it->string);
            goto done;
        }
        if (ht_put(&t->vocab, it->string, strlen(it->string), (int32_t)v) != SQ_OK) { rc = SQ_FAIL; goto done; }
    }
done:
    cJSON_Delete(root);
    return rc;
}

static int is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int load_merges(sd_clip_tokenizer *t, const char *path) {
    char *text;
    size_t n;
    if (sq_read_file(path, &text, &n) != SQ_OK) return SQ_FAIL;
    if (memchr(text, 0, n)) { free(text); return sq_errorf("%s: binary data in a merges file", path); }
    // like the reference: strip the file, drop line 0 (the "#version" header)
    char *p = text, *end = text + n;
    while (p < end && is_space_byte(*p)) p++;
    while (end > p && is_space_byte(end[-1])) end--;
    *end = 0;
    char *nl = strchr(p, '\n');
    p = nl ? nl + 1 : end;
    int rc = ht_init(&t->ranks, 50000);
    for (int rank = 0, line = 2; rc == SQ_OK && p < end && rank < CLIP_MAX_MERGES; rank++, line++) {
        nl = strchr(p, '\n');
        char *le = nl ? nl : end;
        // split on whitespace: exactly two symbols, joined by one space in the key
        char *a = p, *ae, *b, *be, *q;
        while (a < le && is_space_byte(*a)) a++;
        for (ae = a; ae < le && !is_space_byte(*ae); ae++) {}
        for (b = ae; b < le && is_space_byte(*b); b++) {}
        for (be = b; be < le && !is_space_byte(*be); be++) {}
        for (q = be; q < le && is_space_byte(*q); q++) {}
        if (ae == a || be == b || q != le) { rc = sq_errorf("%s: line %d is not a 'first second' merge pair", path, line); break; }
        *ae = ' ';
        memmove(ae + 1, b, (size_t)(be - b));
        rc = ht_put(&t->ranks, a, (size_t)(ae + 1 + (be - b) - a), rank);
        p = nl ? nl + 1 : end;
    }
    free(text);
    return rc;
}

// "pad_token": "!" or {"content": "!", ...}
static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int add_special(sd_clip_tokenizer *t, const char *s, int32_t id, const char *path) {
    for (int k = 0; k < t->n_specials; k++)
        if (strcmp(t->specials[k].s, s) == 0) return SQ_OK;
    if (t->n_specials == MAX_SPECIALS) return sq_errorf("%s: more than %d added tokens", path, MAX_SPECIALS);
    if (!*s) return sq_errorf("%s: empty added token", path);
    char *c = strdup(s);
    if (!c) return sq_errorf("out of host memory");
    t->specials[t->n_specials++] = (special_tok){c, strlen(c), id};
    return SQ_OK;
}

// Reads the special tokens of tokenizer_config.json then special_tokens_map.json
// (the latter wins, as in transformers). names[] starts with the defaults.
static int load_special_config(sd_clip_tokenizer *t, const char *path, char names[4][256], int added) {
    char *text;
    FILE *f = fopen(path, "rb");
    if (!f) return SQ_OK;  // optional file
    fclose(f);
    if (sq_read_file(path, &text, NULL) != SQ_OK) return SQ_FAIL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return sq_errorf("%s: not a valid JSON object", path); }
    static const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int rc = SQ_OK;
    for (int k = 0; k < 4; k++) {
        const char *s = token_content(cJSON_GetObjectItemCaseSensitive(root, keys[k]));
        if (!s) continue;
        if (strlen(s) >= 256) { rc = sq_errorf("%s: %s is too long", path, keys[k]); goto done; }
        strcpy(names[k], s);
    }
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    if (added && cJSON_IsObject(atd)) {
        for (const cJSON *it = atd->child; it; it = it->next) {
            char *endp;
            long id = strtol(it->string, &endp, 10);
            const char *s = token_content(it);
            if (*endp || id < 0 || id > INT32_MAX || !s) { rc = sq_errorf("%s: bad added_tokens_decoder entry '%s'", path, it->string); goto done; }
            if ((rc = add_special(t, s, (int32_t)id, path)) != SQ_OK) goto done;
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

static int resolve(sd_clip_tokenizer *t, const char *name, const char *what, const char *dir, int32_t *id) {
    for (int k = 0; k < t->n_specials; k++)
        if (strcmp(t->specials[k].s, name) == 0) { *id = t->specials[k].id; return SQ_OK; }
    if (!ht_get(&t->vocab, name, strlen(name), id))
        return sq_errorf("%s/vocab.json: %s token '%s' is not in the vocabulary", dir, what, name);
    return add_special(t, name, *id, dir);
}

int sd_clip_tokenizer_load(sd_clip_tokenizer **out, const char *dir) {
    *out = NULL;
    sd_clip_tokenizer *t = sq_calloc(1, sizeof *t);
    if (!t) return SQ_FAIL;
    init_byte_symbols(t);
    size_t pl = strlen(dir) + 32;
    char *path = sq_malloc(pl);
    if (!path) { free(t); return SQ_FAIL; }
    char names[4][256] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
    int rc;
    snprintf(path, pl, "%s/vocab.json", dir);
    if ((rc = load_vocab(t, path)) != SQ_OK) goto fail;
    snprintf(path, pl, "%s/merges.txt", dir);
    if ((rc = load_merges(t, path)) != SQ_OK) goto fail;
    snprintf(path, pl, "%s/tokenizer_config.json", dir);
    if ((rc = load_special_config(t, path, names, 1)) != SQ_OK) goto fail;
    snprintf(path, pl, "%s/special_tokens_map.json", dir);
    if ((rc = load_special_config(t, path, names, 0)) != SQ_OK) goto fail;
    static const char *what[4] = {"bos", "eos", "unk", "pad"};
    int32_t *dst[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int k = 0; k < 4; k++)
        if ((rc = resolve(t, names[k], what[k], dir, dst[k])) != SQ_OK) goto fail;
    free(path);
    *out = t;
    return SQ_OK;
fail:
    free(path);
    sd_clip_tokenizer_free(t);
    return sq_error_context("loading CLIP tokenizer");
}

int32_t sd_clip_tokenizer_bos(const sd_clip_tokenizer *t) { return t->bos; }
int32_t sd_clip_tokenizer_eos(const sd_clip_tokenizer *t) { return t->eos; }
int32_t sd_clip_tokenizer_pad(const sd_clip_tokenizer *t) { return t->pad; }

void sd_clip_tokenizer_free(sd_clip_tokenizer *t) {
    if (!t) return;
    ht_free(&t->vocab);
    ht_free(&t->ranks);
    for (int k = 0; k < t->n_specials; k++) free(t->specials[k].s);
    free(t);
}
