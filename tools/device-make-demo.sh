#!/usr/bin/env bash
# tools/device-make-demo.sh: makes the demo model and data (tools/make_demo_model.py) on the
# GPU machine in one shot. The machine has torch + transformers but not diffusers, so the
# wheels in .whl/ (git-ignored) are installed into /tmp/pylib first. Fetch them here once:
#   venv/bin/python -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 \
#       lazy-importer==0.1.0 zipp==4.1.2
# (diffusers 0.42.1 needs huggingface_hub >= 1.32, i.e. the transformers 5 stack the machine has.)
# The demo/ folder comes back as $OUT/demo.tar.gz (the device returns at most 8 files), with
# the log and the sample grid beside it for a quick look.
# Usage (through the device tool, carrying .whl): tools/device-make-demo.sh [extra flags]
# Then here: tar -xzf FILES_AT/demo.tar.gz -C /work/main
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pylib \
    .whl/diffusers-0.42.1-*.whl .whl/importlib_metadata-*.whl .whl/lazy_importer-*.whl .whl/zipp-*.whl
export PYTHONPATH=/tmp/pylib${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L || true
rm -rf /tmp/demo
rc=0
python3 tools/make_demo_model.py --out /tmp/demo --device cuda "$@" 2>&1 | tee "$out/run.log" || rc=$?
cp /tmp/demo/pretrain_log.txt /tmp/demo/pretrained_samples.png "$out/" 2>/dev/null || true
[ "$rc" = 0 ] && tar -C /tmp -czf "$out/demo.tar.gz" demo
ls -la "$out"
exit "$rc"
