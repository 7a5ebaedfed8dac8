#!/usr/bin/env python3
"""A real captioned image set for sd-qzo's learning experiments: the colour emoji of Noto Color Emoji.

Needs two Debian packages and one Python package:
  fonts-noto-color-emoji  /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf (CBDT/CBLC colour PNG bitmaps)
  unicode-data            /usr/share/unicode/emoji/emoji-test.txt (groups, subgroups, CLDR short names)
  fontTools (pip: fonttools), and Pillow
  apt-get install fonts-noto-color-emoji unicode-data && pip install fonttools pillow

Every fully-qualified emoji of emoji-test.txt (single code points and sequences: ZWJ sequences,
skin tones, flags, keycaps) whose glyph the font has is looked up through the font's cmap and its
GSUB ligatures (FE0F stripped when the font's sequence lacks it), its PNG bitmap is taken from the
CBDT table, composited on white, padded to a square and box-downsampled to --size (default 64),
RGB. Captions are "an emoji of <name>" (lowercase, accents folded to ASCII); --caption-style
name+subgroup appends ", <subgroup>" (e.g. "an emoji of dog face, animal-mammal").

Splits (each a folder of PNGs + captions.txt, "file<TAB>caption" as sd-qzo's datasets read):
  pretrain/        every group except "Animals & Nature" and "Food & Drink", less control/
  control/val/     a held-out slice (--control-frac, default 5%) of those groups, never in pretrain/
  animals/train, animals/val    "Animals & Nature", 80/20 (--val-frac)
  food/train, food/val          "Food & Drink", 80/20
The split of an emoji is decided by SHA-1 of its base name (skin-tone qualifiers removed), so all
skin-tone variants of one emoji land in the same split and the split never changes between runs.
Also writes all.tsv (file, split, group, subgroup, code points, caption) and prints counts.

Run: python tools/make_emoji_dataset.py --out /tmp/emoji [--size 64] [--limit N (testing)]
"""
import argparse
import hashlib
import io
import os
import re
import shutil
import sys
import unicodedata

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
FINETUNE_GROUPS = {"Animals & Nature": "animals", "Food & Drink": "food"}


def parse_emoji_test(path):
    """[(codepoints tuple, group, subgroup, name)] of the fully-qualified entries, in file order."""
    out, group, sub = [], None, None
    line_re = re.compile(r"^([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                sub = line.split(":", 1)[1].strip()
            else:
                m = line_re.match(line)
                if m:
                    cps = tuple(int(c, 16) for c in m.group(1).split())
                    out.append((cps, group, sub, m.group(2).strip()))
    return out


def ascii_name(name):
    """Lowercase ASCII: accents folded (piñata -> pinata), typographic quotes made plain."""
    name = name.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'")
    name = unicodedata.normalize("NFKD", name)
    name = "".join(c for c in name if not unicodedata.combining(c))
    name = name.encode("ascii", "ignore").decode("ascii")
    return " ".join(name.lower().split())


def base_name(name):
    """The name without skin-tone qualifiers: 'waving hand: dark skin tone' -> 'waving hand',
    'kiss: woman, man, dark skin tone' -> 'kiss: woman, man'."""
    if ":" not in name:
        return name
    head, tail = name.split(":", 1)
    parts = [p.strip() for p in tail.split(",") if "skin tone" not in p]
    return head + (": " + ", ".join(parts) if parts else "")


def frac_of(key, salt):
    """Deterministic number in [0, 1) from a string."""
    h = hashlib.sha1((salt + "\0" + key).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


class EmojiFont:
    def __init__(self, path):
        from fontTools.ttLib import TTFont
        self.font = TTFont(path, lazy=False)
        self.cmap = self.font.getBestCmap()
        self.ligs = {}   # (glyph, glyph, ...) -> ligature glyph
        if "GSUB" in self.font:
            for lookup in self.font["GSUB"].table.LookupList.Lookup:
                for st in lookup.SubTable:
                    if lookup.LookupType == 7:      # extension: unwrap
                        st = st.ExtSubTable
                    if getattr(st, "LookupType", lookup.LookupType) != 4:
                        continue
                    for first, ligs in st.ligatures.items():
                        for lg in ligs:
                            self.ligs.setdefault((first,) + tuple(lg.Component), lg.LigGlyph)
        cbdt = self.font["CBDT"]
        # the largest strike (Noto: one, 109 ppem, 136x128 PNGs)
        self.strike = max(cbdt.strikeData, key=len)

    def glyph_for(self, cps):
        for seq in (cps, tuple(c for c in cps if c != 0xFE0F)):
            if not seq:
                continue
            if any(c not in self.cmap for c in seq):
                continue
            gl = tuple(self.cmap[c] for c in seq)
            if len(gl) == 1:
                return gl[0]
            if gl in self.ligs:
                return self.ligs[gl]
        return None

    def png(self, glyph):
        g = self.strike.get(glyph)
        if g is None:
            return None
        if hasattr(g, "ensureDecompiled"):
            g.ensureDecompiled()
        data = getattr(g, "imageData", None)
        return data if data and data[:8] == b"\x89PNG\r\n\x1a\n" else None


def render(png_bytes, size):
    """RGBA PNG -> RGB size x size on white, the glyph centred on a square canvas, box-filtered."""
    from PIL import Image
    im = Image.open(io.BytesIO(png_bytes)).convert("RGBA")
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    return canvas.convert("RGB").resize((size, size), Image.BOX)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (64 or 128 for the emoji model)")
    ap.add_argument("--font", default=FONT)
    ap.add_argument("--emoji-test", default=EMOJI_TEST)
    ap.add_argument("--caption-style", choices=["name", "name+subgroup"], default="name")
    ap.add_argument("--val-frac", type=float, default=0.2, help="of animals and food, by name hash")
    ap.add_argument("--control-frac", type=float, default=0.05, help="of the pretraining groups, held out")
    ap.add_argument("--limit", type=int, default=0, help="keep only every k-th emoji so that about N remain (tests)")
    a = ap.parse_args()
    for p in (a.font, a.emoji_test):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: apt-get install fonts-noto-color-emoji unicode-data")

    entries = parse_emoji_test(a.emoji_test)
    n_all = len(entries)
    font = EmojiFont(a.font)
    if a.limit and a.limit < len(entries):
        step = len(entries) / a.limit
        entries = [entries[int(i * step)] for i in range(a.limit)]

    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    rows, missing, counts = [], [], {}
    files = {}
    for cps, group, sub, name in entries:
        glyph = font.glyph_for(cps)
        png = font.png(glyph) if glyph else None
        if png is None:
            missing.append(name)
            continue
        nm = ascii_name(name)
        key = base_name(nm)
        if group in FINETUNE_GROUPS:
            split = FINETUNE_GROUPS[group] + ("/val" if frac_of(key, "val") < a.val_frac else "/train")
        elif frac_of(key, "control") < a.control_frac:
            split = "control/val"
        else:
            split = "pretrain"
        cap = "an emoji of " + nm + (", " + sub if a.caption_style == "name+subgroup" else "")
        fname = "-".join(f"{c:04x}" for c in cps if c != 0xFE0F) + ".png"
        d = os.path.join(a.out, split)
        os.makedirs(d, exist_ok=True)
        render(png, a.size).save(os.path.join(d, fname), optimize=False)
        files.setdefault(split, []).append((fname, cap))
        rows.append((fname, split, group, sub, " ".join(f"{c:04X}" for c in cps), cap))
        counts[split] = counts.get(split, 0) + 1
    for split, items in files.items():
        with open(os.path.join(a.out, split, "captions.txt"), "w") as f:
            for fname, cap in items:
                f.write(f"{fname}\t{cap}\n")
    with open(os.path.join(a.out, "all.tsv"), "w") as f:
        f.write("file\tsplit\tgroup\tsubgroup\tcodepoints\tcaption\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print(f"{n_all} fully-qualified emoji in {a.emoji_test}" + (f", {len(entries)} kept (--limit)" if a.limit else "")
          + f"; {len(rows)} rendered at {a.size}x{a.size}, "
          f"{len(missing)} without a glyph in the font" + (f" (e.g. {missing[:3]})" if missing else ""))
    for split in ["pretrain", "control/val", "animals/train", "animals/val", "food/train", "food/val"]:
        print(f"  {split:14s} {counts.get(split, 0):5d}")
    print(f"e.g. {rows[0][0]}: '{rows[0][5]}'" if rows else "nothing rendered")


if __name__ == "__main__":
    main()
