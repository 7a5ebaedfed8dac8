#!/usr/bin/env bash
# scripts/gpu/learn.sh: runs one command of the learning benchmark (tools/make_emoji_model.py,
# bench/first_order.py, bench/make_fo_data.py, bench/learning_sweep.sh) on a GPU machine
# (see env.sh). Those scripts need PyTorch with CUDA, transformers, safetensors and
# diffusers; on a machine without a package index put the diffusers wheels in $WHEELS_DIR:
#   python3 -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#       lazy-importer==0.1.0 zipp==4.1.2
# The emoji data set needs Debian's fonts-noto-color-emoji and unicode-data and fontTools;
# make it where those are (about 25 s) and copy it along:
#   python3 tools/make_emoji_dataset.py --out data/emoji64
# Usage: scripts/gpu/learn.sh COMMAND...   e.g.
#   TAR=$WORK/emoji scripts/gpu/learn.sh python3 tools/make_emoji_model.py --data data/emoji64 \
#       --out $WORK/emoji --device cuda
# With TAR=DIR set, DIR is packed into $OUT/$(basename DIR).tar.gz afterwards, and its
# *.txt, *.png and *.jsonl files are copied beside it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
sq_python_wheels
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L || true
rc=0
"$@" 2>&1 | tee "$OUT/learn.log" || rc=$?
if [ -n "${TAR:-}" ] && [ -d "$TAR" ]; then
    cp "$TAR"/*.txt "$TAR"/*.png "$TAR"/*.jsonl "$OUT/" 2>/dev/null || true
    tar -C "$(dirname "$TAR")" -czf "$OUT/$(basename "$TAR").tar.gz" "$(basename "$TAR")"
fi
exit "$rc"
