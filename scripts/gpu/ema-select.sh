#!/usr/bin/env bash
# scripts/gpu/ema-select.sh: --ema and --train-blocks / --train-layers on the GPU (see
# env.sh), on the built-in demo (demo/model, demo/train.toml) after a build by
# build-and-test.sh (BUILD_DIR): a 40-step CUDA run with the EMA on blocks 0-1's
# attention and adaLN layers, resumed halfway, then `sample --ema` and `export --ema`.
# Checks: each command exits 0, the memory line states the EMA, the trainable-scale
# count is printed, log.jsonl holds val_loss_ema, and the resumed run's checkpoint
# (EMA included) equals an uninterrupted one's bit for bit (cmp). Logs go to $OUT.
# Usage: scripts/gpu/ema-select.sh
set -euo pipefail
. "$(dirname "$0")/env.sh"
nvidia-smi -L || true
R=$WORK/ema-select
rm -rf "$R"
mkdir -p "$R"
common=(--config demo/train.toml --device cuda --cache-dir "$R/cache" --sample-every 0 --val-every 10
        --ema 0.95 --train-blocks 0-1 --train-layers attn,adaln)
"$BIN" train "${common[@]}" --output "$R/full" --steps 40 2>&1 | tee "$OUT/ema-full.log"
"$BIN" train "${common[@]}" --output "$R/half" --steps 20 2>&1 | tee "$OUT/ema-half.log"
"$BIN" train "${common[@]}" --output "$R/half" --steps 40 --resume "$R/half/checkpoint.safetensors" 2>&1 |
    tee "$OUT/ema-resume.log"
grep -q "EMA of the .* trained scales .* MiB" "$OUT/ema-full.log"
grep -q "trainable scales: " "$OUT/ema-full.log"
grep -q '"val_loss_ema": [0-9]' "$R/full/log.jsonl"
cmp "$R/full/checkpoint.safetensors" "$R/half/checkpoint.safetensors" &&
    echo "resumed checkpoint equals the uninterrupted one (EMA included)"
"$BIN" sample --model demo/model --scales "$R/full/checkpoint.safetensors" --ema --prompt "a vermilion circle" \
    --steps 20 --cfg 4 --width 64 --height 64 --t5-max-length 32 --device cuda --out "$R/samples" 2>&1 |
    tee "$OUT/ema-sample.log"
"$BIN" export --model demo/model --scales "$R/full/checkpoint.safetensors" --ema --out "$R/export" 2>&1 |
    tee "$OUT/ema-export.log"
cp "$R/full/log.jsonl" "$OUT/ema-log.jsonl"
cp "$R/full/report.html" "$OUT/ema-report.html"
cp "$R/samples/grid.png" "$OUT/ema-samples.png"
echo "ema-select: all checks passed"
