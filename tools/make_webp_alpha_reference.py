#!/usr/bin/env python3
"""tools/make_webp_alpha_reference.py: the alpha channel Pillow decodes from the WebP
fixtures that have one (tests/fixtures/webp/alpha_*.webp, made by
make_webp_fixtures.py), the reference that `train --alpha-mask` reads through libwebp
is checked against (tests/unit/test_datasets.c, loss masks).

Writes NAME.alpha beside each NAME.webp: raw bytes, rows top to bottom, W*H.

    python3 -m venv /work/venv-mask && /work/venv-mask/bin/pip install pillow
    /work/venv-mask/bin/python tools/make_webp_alpha_reference.py tests/fixtures/webp
"""
import os
import sys

from PIL import Image

NAMES = ["alpha_lossless", "alpha_lossy"]


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/webp"
    for name in NAMES:
        with Image.open(os.path.join(d, name + ".webp")) as im:
            rgba = im.convert("RGBA")
            a = rgba.getchannel("A").tobytes()
        assert len(a) == rgba.width * rgba.height
        assert len(set(a)) > 1, name + ": the alpha channel should not be flat"
        with open(os.path.join(d, name + ".alpha"), "wb") as f:
            f.write(a)
        print(name, rgba.width, rgba.height, "alpha range", min(a), max(a))


if __name__ == "__main__":
    main()
