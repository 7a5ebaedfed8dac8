// text_encoders/unicode.h: the Unicode properties the CLIP tokenizer needs, as the
// reference (transformers' fast CLIPTokenizer, i.e. the tokenizers library) applies
// them: NFC, Oniguruma's \s, \p{L}, \p{N}, and per-code-point lower-casing. The data
// is generated from the reference by tools/make_unicode_tables.py
// (unicode_tables.h); code points outside it behave as unassigned ones do there.
#ifndef SD_UNICODE_H
#define SD_UNICODE_H

#include <stddef.h>
#include <stdint.h>

int sd_uc_is_space(uint32_t c);   // \s (what Replace(r"\s+", " ") replaces)
int sd_uc_is_letter(uint32_t c);  // \p{L}
int sd_uc_is_number(uint32_t c);  // \p{N}

// Lowercase() of one code point (Rust's char::to_lowercase: no final-sigma rule):
// writes 1 to 3 code points to out and returns how many.
int sd_uc_lower(uint32_t c, uint32_t out[3]);

// NFC of cp[0..n) into out, which must hold SD_UC_NFC_MAX_GROWTH * n code points
// (a canonical decomposition is at most 4 long, and composing only shrinks).
// Returns the output length.
#define SD_UC_NFC_MAX_GROWTH 4
size_t sd_uc_nfc(const uint32_t *cp, size_t n, uint32_t *out);

#endif
