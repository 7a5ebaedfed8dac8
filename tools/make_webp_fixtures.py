#!/usr/bin/env python3
"""tools/make_webp_fixtures.py: the WebP test images of tests/fixtures/webp/ and the
pixels Pillow decodes them to, the reference that sd-qzo's libwebp path is checked
against (tests/unit/test_webp.c).

Writes, for each NAME below, NAME.webp and NAME.rgb (Pillow's decode converted to RGB,
raw bytes, rows top to bottom, W*H*3), and reference.txt with one line per image:
"NAME WIDTH HEIGHT LOSSLESS ANIMATED ALPHA" (0/1 flags). For an animation the
reference is its first frame as Pillow renders it (composited on the canvas).

    python3 -m venv /work/venv-formats && /work/venv-formats/bin/pip install pillow numpy
    /work/venv-formats/bin/python tools/make_webp_fixtures.py tests/fixtures/webp
"""
import io
import os
import struct
import sys

import numpy as np
from PIL import Image, features


def pattern(w, h, c, seed):
    """Smooth gradients plus a little deterministic noise: lossy codecs keep it
    recognisable, and every byte differs from its neighbours somewhere."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    planes = []
    for k in range(c):
        v = (x * (97 + 31 * k) / max(w - 1, 1) + y * (151 - 40 * k) / max(h - 1, 1) + 40 * k + 13 * seed)
        v = v + rng.integers(-12, 13, size=(h, w))
        planes.append(np.clip(v, 0, 255))
    return np.stack(planes, axis=-1).astype(np.uint8)


def u24(v):
    return struct.pack("<I", v)[:3]


def chunk(tag, payload):
    pad = b"\0" if len(payload) % 2 else b""
    return tag + struct.pack("<I", len(payload)) + payload + pad


def main(out):
    os.makedirs(out, exist_ok=True)
    images = []

    # lossy RGB, odd size (chroma subsampling at the edge)
    im = Image.fromarray(pattern(23, 17, 3, 1), "RGB")
    im.save(f"{out}/lossy.webp", "WEBP", quality=80, method=4)
    images.append(("lossy", 1, 0, 0))

    # lossless RGB with noise: exact pixels
    im = Image.fromarray(pattern(20, 12, 3, 2), "RGB")
    im.save(f"{out}/lossless.webp", "WEBP", lossless=True)
    images.append(("lossless", 1, 0, 0))

    # lossless RGBA with alpha from 0 to 255; exact keeps the colour under alpha 0
    a = pattern(18, 14, 4, 3)
    a[..., 3] = np.tile(np.linspace(0, 255, 18).astype(np.uint8), (14, 1))
    a[:4, :4, 3] = 0
    Image.fromarray(a, "RGBA").save(f"{out}/alpha_lossless.webp", "WEBP", lossless=True, exact=True)
    images.append(("alpha_lossless", 1, 0, 1))

    # lossy RGBA (VP8 + ALPH chunk)
    b = pattern(16, 16, 4, 4)
    b[..., 3] = np.tile(np.linspace(255, 40, 16).astype(np.uint8)[:, None], (1, 16))
    Image.fromarray(b, "RGBA").save(f"{out}/alpha_lossy.webp", "WEBP", quality=85)
    images.append(("alpha_lossy", 1, 0, 1))

    # animation: 3 frames of 16x12 (lossless, so the first frame's reference is exact)
    frames = [Image.fromarray(pattern(16, 12, 3, 10 + k), "RGB") for k in range(3)]
    frames[0].save(f"{out}/animated.webp", "WEBP", save_all=True, append_images=frames[1:], duration=100,
                   loop=0, lossless=True)
    images.append(("animated", 1, 1, 0))

    # animation whose first frame is a sub-rectangle: 8x6 at (4, 2) of a 16x12 canvas,
    # then a full frame. Pillow cannot write such a file, so the chunks are put
    # together here (RIFF / VP8X / ANIM / ANMF, the frames' VP8L bitstreams taken from
    # lossless stills); the reference is Pillow's decode of the first frame, the
    # rectangle on a transparent-black canvas.
    small = Image.fromarray(pattern(8, 6, 3, 5), "RGB")
    full = Image.fromarray(pattern(16, 12, 3, 6), "RGB")
    frames = [(small, 4, 2), (full, 0, 0)]
    anmf = b""
    for im, x, y in frames:
        bio = io.BytesIO()
        im.save(bio, "WEBP", lossless=True)
        data = bio.getvalue()
        assert data[12:16] == b"VP8L", data[12:16]
        vp8l = data[12:]                           # the VP8L chunk, header included
        payload = (u24(x // 2) + u24(y // 2) + u24(im.width - 1) + u24(im.height - 1) + u24(100)
                   + bytes([0x02]) + vp8l)         # 0x02: do not blend, dispose none
        anmf += chunk(b"ANMF", payload)
    body = (b"WEBP" + chunk(b"VP8X", bytes([0x02, 0, 0, 0]) + u24(16 - 1) + u24(12 - 1))
            + chunk(b"ANIM", struct.pack("<IH", 0xFFFFFFFF, 0)) + anmf)
    with open(f"{out}/animated_offset.webp", "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    images.append(("animated_offset", 1, 1, 0))

    lines = []
    for name, _, animated, _ in images:
        with Image.open(f"{out}/{name}.webp") as im:
            im.seek(0)
            lossless = 1 if name in ("lossless", "alpha_lossless", "animated", "animated_offset") else 0
            alpha = 1 if name.startswith("alpha") else 0   # Pillow opens every animation as RGBA
            assert ("A" in im.mode) >= bool(alpha), (name, im.mode)
            n_frames = getattr(im, "n_frames", 1)
            assert (n_frames > 1) == bool(animated), (name, n_frames)
            rgb = np.asarray(im.convert("RGB"))
        h, w, _ = rgb.shape
        rgb.tofile(f"{out}/{name}.rgb")
        lines.append(f"{name} {w} {h} {lossless} {animated} {alpha}")
    with open(f"{out}/reference.txt", "w") as f:
        f.write("# NAME WIDTH HEIGHT LOSSLESS ANIMATED ALPHA  (Pillow %s, libwebp %s)\n"
                % (Image.__version__ if hasattr(Image, "__version__") else "?", features.version("webp")))
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/webp")
