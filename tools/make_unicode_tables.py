#!/usr/bin/env python3
"""Generates text_encoders/unicode_tables.h, the Unicode data behind sd-qzo's CLIP
tokenizer (text_encoders/unicode.c), from the reference itself where it can:

  - whitespace (what the fast tokenizer's normalizer Replace(Regex(r"\\s+"), " ")
    replaces), letters (\\p{L}) and numbers (\\p{N}) of its pre-tokenizer regex:
    asked of the tokenizers library (Oniguruma) code point by code point;
  - lower-casing: normalizers.Lowercase() (Rust's char::to_lowercase) code point by
    code point, so no final-sigma rule and "İ" -> "i" + U+0307, as the reference;
  - NFC: canonical decompositions, combining classes and the primary composites from
    Python's unicodedata, then checked against normalizers.NFC() on every code point
    and on every primary composite's decomposed form (mismatches are listed and make
    the script fail).

Run: /work/venv-rel/bin/python tools/make_unicode_tables.py [--out text_encoders/unicode_tables.h]
(see tools/requirements-tokenizer.txt; sd-qzo never needs Python.)
"""
import argparse
import sys
import unicodedata

import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers

MAX_CP = 0x10FFFF


def code_points():
    for c in range(MAX_CP + 1):
        if 0xD800 <= c <= 0xDFFF:
            continue
        yield c


def ranges(pred):
    out, start, prev = [], None, None
    for c in code_points():
        if pred(c):
            if start is None:
                start = c
            elif c != prev + 1:
                out.append((start, prev))
                start = c
            prev = c
        elif start is not None:
            out.append((start, prev))
            start = None
    if start is not None:
        out.append((start, prev))
    return out


def regex_class(pattern):
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed")
    return lambda c: split.pre_tokenize_str(chr(c)) == []


def decompose_canonical(c):
    d = unicodedata.decomposition(chr(c))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="text_encoders/unicode_tables.h")
    args = ap.parse_args()

    ws = normalizers.Replace(Regex(r"\s"), " ")
    ws_ranges = ranges(lambda c: ws.normalize_str(chr(c)) == " ")
    letter_ranges = ranges(regex_class(r"\p{L}"))
    number_ranges = ranges(regex_class(r"\p{N}"))

    low = normalizers.Lowercase()
    lower1, lowerN = [], []
    for c in code_points():
        s = low.normalize_str(chr(c))
        if s == chr(c):
            continue
        if len(s) == 1:
            lower1.append((c, ord(s)))
        else:
            lowerN.append((c, [ord(x) for x in s]))
    assert all(len(v) <= 3 for _, v in lowerN)

    ccc_ranges = []
    for c in code_points():
        k = unicodedata.combining(chr(c))
        if k:
            if ccc_ranges and ccc_ranges[-1][1] == c - 1 and ccc_ranges[-1][2] == k:
                ccc_ranges[-1][1] = c
            else:
                ccc_ranges.append([c, c, k])
    decomp = []
    compose = []
    for c in code_points():
        if 0xAC00 <= c <= 0xD7A3:
            continue  # Hangul syllables: algorithmic in unicode.c
        d = decompose_canonical(c)
        if d is None:
            continue
        assert len(d) <= 2
        decomp.append((c, d[0], d[1] if len(d) == 2 else 0))
        # a primary composite: a two-code-point decomposition that NFC recomposes
        if len(d) == 2 and unicodedata.normalize("NFC", chr(d[0]) + chr(d[1])) == chr(c):
            compose.append((d[0], d[1], c))
    compose.sort()

    # Check the NFC data against the reference: every single code point, and the
    # decomposed form of every primary composite.
    nfc = normalizers.NFC()
    bad = []
    for c in code_points():
        want = nfc.normalize_str(chr(c))
        if want != unicodedata.normalize("NFC", chr(c)):
            bad.append(f"U+{c:04X}: tokenizers {want!r} unicodedata {unicodedata.normalize('NFC', chr(c))!r}")
    for a, b, c in compose:
        want = nfc.normalize_str(chr(a) + chr(b))
        if want != chr(c):
            bad.append(f"U+{a:04X} U+{b:04X}: tokenizers {want!r}, unicodedata U+{c:04X}")
    if bad:
        print(f"{len(bad)} NFC disagreements between tokenizers and unicodedata {unicodedata.unidata_version}:")
        for line in bad[:50]:
            print("  " + line)
        # Characters the reference's (older) Unicode data does not know stay as they
        # are there: drop their decompositions and compositions so the C code agrees.
        unknown = set()
        for c in code_points():
            if nfc.normalize_str(chr(c)) == chr(c) and unicodedata.normalize("NFC", chr(c)) != chr(c):
                unknown.add(c)
        decomp = [d for d in decomp if d[0] not in unknown]
        kept = [p for p in compose if p[2] not in unknown and nfc.normalize_str(chr(p[0]) + chr(p[1])) == chr(p[2])]
        dropped = set(p[2] for p in compose) - set(p[2] for p in kept)
        compose = kept
        decomp = [d for d in decomp if d[0] not in dropped]  # the reference keeps those as they are
        still = [c for c in code_points() if c not in unknown and nfc.normalize_str(chr(c)) != unicodedata.normalize("NFC", chr(c))]
        if still:
            sys.exit(f"unresolved NFC disagreements: {[hex(c) for c in still[:20]]}")

    def rows(items, fmt, per=6):
        cells = [fmt(x) for x in items]
        return "\n".join("    " + " ".join(cells[i:i + per]) for i in range(0, len(cells), per))

    r2 = lambda r: f"{{0x{r[0]:X}, 0x{r[1]:X}}},"
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(f"""// text_encoders/unicode_tables.h: GENERATED by tools/make_unicode_tables.py (tokenizers
// {tokenizers.__version__}, Python unicodedata {unicodedata.unidata_version}); do not edit. Included only by
// text_encoders/unicode.c. Sorted tables for binary search.

typedef struct {{ uint32_t lo, hi; }} uc_range;
typedef struct {{ uint32_t lo, hi; uint8_t ccc; }} uc_ccc_range;
typedef struct {{ uint32_t cp, to; }} uc_map1;
typedef struct {{ uint32_t cp, to[3]; }} uc_mapn;
typedef struct {{ uint32_t cp, a, b; }} uc_decomp;   // b == 0: a singleton
typedef struct {{ uint32_t a, b, cp; }} uc_compose;  // sorted by (a, b)

// Oniguruma's \\s as the normalizer's Replace(Regex(r"\\s+"), " ") applies it
static const uc_range uc_ws[] = {{
{rows(ws_ranges, r2)}
}};
// \\p{{L}}
static const uc_range uc_letter[] = {{
{rows(letter_ranges, r2)}
}};
// \\p{{N}}
static const uc_range uc_number[] = {{
{rows(number_ranges, r2)}
}};
// Lowercase(): one code point to one
static const uc_map1 uc_lower1[] = {{
{rows(lower1, lambda m: f"{{0x{m[0]:X}, 0x{m[1]:X}}},")}
}};
// Lowercase(): one code point to several
static const uc_mapn uc_lowern[] = {{
{rows(lowerN, lambda m: "{0x%X, {%s}}," % (m[0], ", ".join(f"0x{x:X}" for x in m[1] + [0] * (3 - len(m[1])))), 3)}
}};
// canonical combining classes (non-zero)
static const uc_ccc_range uc_ccc[] = {{
{rows(ccc_ranges, lambda r: f"{{0x{r[0]:X}, 0x{r[1]:X}, {r[2]}}},", 4)}
}};
// canonical decompositions, one level (applied recursively)
static const uc_decomp uc_decomps[] = {{
{rows(decomp, lambda d: f"{{0x{d[0]:X}, 0x{d[1]:X}, 0x{d[2]:X}}},", 4)}
}};
// primary composites
static const uc_compose uc_composes[] = {{
{rows(compose, lambda d: f"{{0x{d[0]:X}, 0x{d[1]:X}, 0x{d[2]:X}}},", 4)}
}};
""")
    print(f"{len(ws_ranges)} ws, {len(letter_ranges)} letter, {len(number_ranges)} number ranges; "
          f"{len(lower1)}+{len(lowerN)} lower; {len(ccc_ranges)} ccc, {len(decomp)} decomp, {len(compose)} compose -> {args.out}")


if __name__ == "__main__":
    main()
