#!/usr/bin/env bash
# scripts/gpu/make-demo.sh: makes the demo model and data (tools/make_demo_model.py) on a
# GPU machine in one go (about 5 minutes on an H100). Needs PyTorch with CUDA,
# transformers, diffusers 0.42.1, sentencepiece, regex and Pillow. A machine without
# diffusers and without a package index can take wheels from $WHEELS_DIR (default
# .whl/, ignored by git), fetched elsewhere with e.g.
#   python3 -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#       lazy-importer==0.1.0 zipp==4.1.2
# (diffusers 0.42.1 needs huggingface_hub >= 1.32, i.e. the transformers 5 stack.)
# Writes $OUT/demo.tar.gz (the new demo/ folder) with the log and the sample grid
# beside it; the checkout's demo/ is left alone. To use the new demo:
#   tar -xzf "$OUT/demo.tar.gz" -C <checkout>
# Usage: scripts/gpu/make-demo.sh [extra flags of tools/make_demo_model.py]
set -euo pipefail
. "$(dirname "$0")/env.sh"
sq_python_wheels
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L || true
rm -rf "$WORK/demo"
rc=0
python3 tools/make_demo_model.py --out "$WORK/demo" --device cuda "$@" 2>&1 | tee "$OUT/run.log" || rc=$?
cp "$WORK/demo/pretrain_log.txt" "$WORK/demo/pretrained_samples.png" "$OUT/" 2>/dev/null || true
[ "$rc" = 0 ] && tar -C "$WORK" -czf "$OUT/demo.tar.gz" demo
ls -la "$OUT"
exit "$rc"
