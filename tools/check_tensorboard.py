#!/usr/bin/env python3
"""Reads a `sd-qzo train --tensorboard` run folder the way TensorBoard does.

Loads OUT with the tensorboard package's EventAccumulator (every event file in the
folder, in name order, purging the steps a SessionLog START says were redone by a
resumed run) and prints each tag with its number of values and its steps, then
each image tag with its steps and sizes. Exits 1 when the folder holds no event
file or TensorBoard finds no scalar in it.

Run: venv/bin/python tools/check_tensorboard.py OUT   (pip install -r tools/requirements-tensorboard.txt)
"""
import glob
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def steps_text(steps):
    if len(steps) > 12:
        return "%s ... %s" % (" ".join(map(str, steps[:6])), " ".join(map(str, steps[-3:])))
    return " ".join(map(str, steps))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_tensorboard.py OUT")
    out = sys.argv[1]
    files = sorted(glob.glob(os.path.join(out, "events.out.tfevents.*")))
    if not files:
        print("%s: no events.out.tfevents.* file" % out)
        return 1
    for f in files:
        print("event file %s (%d bytes)" % (os.path.basename(f), os.path.getsize(f)))
    acc = EventAccumulator(out, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    print("file_version %s" % acc.file_version)
    for tag in sorted(tags["scalars"]):
        ev = acc.Scalars(tag)
        steps = [e.step for e in ev]
        print("scalar %-34s %4d values, last %-12.6g steps %s" % (tag, len(ev), ev[-1].value, steps_text(steps)))
    for tag in sorted(tags["images"]):
        ev = acc.Images(tag)
        print("image  %-34s %4d images, steps %s, %dx%d PNG (%d bytes last)" %
              (tag, len(ev), steps_text([e.step for e in ev]), ev[-1].width, ev[-1].height,
               len(ev[-1].encoded_image_string)))
    if not tags["scalars"]:
        print("no scalars")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
