// text_encoders/unicode.c: Unicode for the CLIP tokenizer (see unicode.h): binary
// searches over the generated tables of unicode_tables.h, and NFC as UAX #15 defines
// it (full canonical decomposition, canonical ordering, canonical composition), with
// Hangul syllables done arithmetically.
#include "text_encoders/unicode.h"

#include "text_encoders/unicode_tables.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int in_ranges(uint32_t c, const uc_range *r, size_t n) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid].lo) hi = mid;
        else if (c > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int sd_uc_is_space(uint32_t c) { return in_ranges(c, uc_ws, COUNT(uc_ws)); }
int sd_uc_is_letter(uint32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return in_ranges(c, uc_letter, COUNT(uc_letter));
}
int sd_uc_is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    return in_ranges(c, uc_number, COUNT(uc_number));
}

int sd_uc_lower(uint32_t c, uint32_t out[3]) {
    if (c < 0x80) { out[0] = (c >= 'A' && c <= 'Z') ? c + 32 : c; return 1; }
    size_t lo = 0, hi = COUNT(uc_lower1);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < uc_lower1[mid].cp) hi = mid;
        else if (c > uc_lower1[mid].cp) lo = mid + 1;
        else { out[0] = uc_lower1[mid].to; return 1; }
    }
    for (size_t i = 0; i < COUNT(uc_lowern); i++)
        if (uc_lowern[i].cp == c) {
            int n = 0;
            while (n < 3 && uc_lowern[i].to[n]) { out[n] = uc_lowern[i].to[n]; n++; }
            return n;
        }
    out[0] = c;
    return 1;
}

static uint8_t ccc(uint32_t c) {
    if (c < 0x300) return 0;
    size_t lo = 0, hi = COUNT(uc_ccc);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < uc_ccc[mid].lo) hi = mid;
        else if (c > uc_ccc[mid].hi) lo = mid + 1;
        else return uc_ccc[mid].ccc;
    }
    return 0;
}

// Hangul (UAX #15 / Unicode ch. 3.12)
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21,
       T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static size_t decompose(uint32_t c, uint32_t *out) {
    if (c >= S_BASE && c < S_BASE + S_COUNT) {
        uint32_t s = c - S_BASE, t = s % T_COUNT;
        out[0] = L_BASE + s / N_COUNT;
        out[1] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (t == 0) return 2;
        out[2] = T_BASE + t;
        return 3;
    }
    if (c >= 0xC0) {
        size_t lo = 0, hi = COUNT(uc_decomps);
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c < uc_decomps[mid].cp) hi = mid;
            else if (c > uc_decomps[mid].cp) lo = mid + 1;
            else {
                size_t k = decompose(uc_decomps[mid].a, out);
                if (uc_decomps[mid].b) k += decompose(uc_decomps[mid].b, out + k);
                return k;
            }
        }
    }
    out[0] = c;
    return 1;
}

// The primary composite of (a, b), or 0.
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = COUNT(uc_composes);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uc_compose *p = &uc_composes[mid];
        if (a < p->a || (a == p->a && b < p->b)) hi = mid;
        else if (a > p->a || b > p->b) lo = mid + 1;
        else return p->cp;
    }
    return 0;
}

size_t sd_uc_nfc(const uint32_t *cp, size_t n, uint32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += decompose(cp[i], out + m);
    // canonical ordering: a stable sort of each run of non-starters by class
    for (size_t i = 1; i < m; i++) {
        uint32_t c = out[i];
        uint8_t k = ccc(c);
        if (k == 0) continue;
        size_t j = i;
        while (j > 0 && ccc(out[j - 1]) > k) { out[j] = out[j - 1]; j--; }
        out[j] = c;
    }
    if (m == 0) return 0;
    // canonical composition: a character combines with the last starter unless a
    // character between them has a class >= its own (blocked)
    size_t starter = 0, w = 1;
    int last = ccc(out[0]) ? 256 : 0;  // a leading non-starter composes with nothing
    for (size_t i = 1; i < m; i++) {
        uint32_t c = out[i];
        int k = ccc(c);
        uint32_t comp = (last < k || last == 0) ? compose(out[starter], c) : 0;
        if (comp) {
            out[starter] = comp;
            continue;
        }
        if (k == 0) starter = w;
        last = k;
        out[w++] = c;
    }
    return w;
}
