#!/usr/bin/env python3
"""Reference event file for core/tensorboard.c, written by the tensorboard package.

tensorboard's own TF-free writer (tensorboard.summary.writer.event_file_writer.
EventFileWriter: the file_version event, TFRecord framing with masked CRC32C) writes
the events below with fixed wall times, the Event / Summary messages built from
tensorboard.compat.proto as torch.utils.tensorboard's SummaryWriter builds them
(scalars as simple_value, images as Summary.Image with PNG bytes). Writes into
tests/fixtures/tensorboard/:

  image.png          a 3x2 RGB PNG (made here with zlib), the image event's payload
  reference.tfevents the event file; tests/unit/test_tensorboard.c writes the same
                     events with sq_tb_* and must produce it byte for byte

Events (the C test lists the same ones; keep both in step):
  file_version "brain.Event:2", wall time WALL0, writer "tensorboard.summary.writer.event_file_writer"
  then SCALARS (wall time, step, tag, value), the image, and a SessionLog START.

Run: venv/bin/python tools/make_tensorboard_fixtures.py   (pip install -r tools/requirements-tensorboard.txt)
"""
import os
import shutil
import struct
import tempfile
import types
import zlib

import tensorboard.summary.writer.event_file_writer as efw
from tensorboard.compat.proto import event_pb2, summary_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "tensorboard")

WALL0 = 1700000000.25
SCALARS = [
    # wall time, step, tag, value: step 0 (left out of the encoding), a negative value, an exact 0
    # (a oneof member: still written), a step needing a 6-byte varint, a long tag
    (1700000001.5, 0, "val/loss", 0.5),
    (1700000002.125, 1, "train/loss", 0.123456789),
    (1700000002.125, 1, "train/d", -3.25e-3),
    (1700000002.125, 1, "train/d_clipped", 0.0),
    (1700000003.0, 300, "train/lr", 1e-5),
    (1700000004.0, 123456789012, "train/perturbation_rel/attn_qkv", 7.5e-4),
]
IMAGE = (1700000005.5, 4, "previews")   # wall time, step, tag
SESSION_START = (1700000006.0, 3)        # wall time, step


def png_rgb(w, h, pixels):
    """A plain PNG (8-bit RGB, filter 0 on every row)."""
    raw = b"".join(b"\x00" + bytes(pixels[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    os.makedirs(OUT, exist_ok=True)
    w, h = 3, 2
    png = png_rgb(w, h, [220, 30, 40, 0, 255, 0, 10, 20, 30, 255, 255, 255, 0, 0, 0, 128, 64, 32])
    with open(os.path.join(OUT, "image.png"), "wb") as f:
        f.write(png)

    tmp = tempfile.mkdtemp()
    try:
        # the writer stamps its file_version event with time.time(): fix it
        efw.time = types.SimpleNamespace(time=lambda: WALL0)
        writer = efw.EventFileWriter(tmp)
        for wall, step, tag, value in SCALARS:
            s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=s))
        wall, step, tag = IMAGE
        img = summary_pb2.Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=png)
        s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=img)])
        writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=s))
        wall, step = SESSION_START
        writer.add_event(event_pb2.Event(wall_time=wall, step=step,
                                         session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        writer.close()
        (name,) = os.listdir(tmp)
        assert name.startswith("events.out.tfevents.1700000000."), name
        shutil.copyfile(os.path.join(tmp, name), os.path.join(OUT, "reference.tfevents"))
    finally:
        shutil.rmtree(tmp)
    print("wrote", os.path.join(OUT, "reference.tfevents"), os.path.getsize(os.path.join(OUT, "reference.tfevents")),
          "bytes")


if __name__ == "__main__":
    main()
