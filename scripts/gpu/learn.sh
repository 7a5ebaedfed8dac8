#!/usr/bin/env bash
# tools/device-learn.sh: runs one of the learning-experiment scripts (tools/make_emoji_model.py,
# bench/first_order.py, bench/make_fo_data.py) on the GPU machine, which has torch + transformers
# but not diffusers: the wheels in .whl/ (git-ignored, carried) go into /tmp/pylib first. Fetch
# them here once (the same set as tools/device-make-demo.sh; peft is optional, first_order.py
# falls back to its own LoRA):
#   venv/bin/python -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#       lazy-importer==0.1.0 zipp==4.1.2
# The emoji data set is made here (CPU, ~25 s; it needs Debian's fonts-noto-color-emoji and
# unicode-data, which the GPU machine lacks) and carried:
#   venv/bin/python tools/make_emoji_dataset.py --out data/emoji64
# Usage (device tool, carrying .whl and data/emoji64):
#   tools/device-learn.sh python3 tools/make_emoji_model.py --data data/emoji64 --out /tmp/emoji --device cuda
#   (then tar the output into $OUT: see TAR below)
# With TAR=DIR set, DIR is packed into $OUT/$(basename DIR).tar.gz afterwards (the device returns
# few files), and DIR/*.txt, DIR/*.png, DIR/*.jsonl are copied beside it.
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pylib .whl/*.whl
export PYTHONPATH=/tmp/pylib${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L || true
rc=0
"$@" 2>&1 | tee "$out/run.log" || rc=$?
if [ -n "${TAR:-}" ] && [ -d "$TAR" ]; then
    cp "$TAR"/*.txt "$TAR"/*.png "$TAR"/*.jsonl "$out/" 2>/dev/null || true
    tar -C "$(dirname "$TAR")" -czf "$out/$(basename "$TAR").tar.gz" "$(basename "$TAR")"
fi
ls -la "$out"
exit "$rc"
