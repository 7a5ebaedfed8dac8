#!/usr/bin/env bash
# scripts/gpu/tensorboard.sh: `train --tensorboard` on CUDA: the built-in demo
# (demo/train.toml) for a few steps on the GPU, so the event file also holds the
# GPU-only tag gpu/memory_gib, with validation, previews and checkpoints every few
# steps; then resumed for a few more (a second event file). Builds $BUILD_DIR first
# when it has no sd-qzo. Copies the run's event files, log and report (not the
# cache or the checkpoint) to $OUT/tb-demo and the console output to
# $OUT/tb-demo.log; read them where the tensorboard package is installed with
#   venv/bin/python tools/check_tensorboard.py <that folder>/tb-demo
# Usage: scripts/gpu/tensorboard.sh [steps, default 12]
set -uo pipefail
. "$(dirname "$0")/env.sh"
ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 && { scripts/gpu/deps.sh unpack; . scripts/gpu/env.sh; }
steps=${1:-12}
if [ ! -x "$BIN" ]; then
    meson setup "$BUILD_DIR" -Dcuda=enabled ${CUDA_ARCH:+-Dgpu_arch=$CUDA_ARCH} > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
    ninja -C "$BUILD_DIR" -j "$JOBS" > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
fi
run="$WORK/tb-demo"
rm -rf "$run" "$OUT/tb-demo"
flags=(--config demo/train.toml --device cuda --tensorboard --output "$run" --val-every 4 --sample-every 6
       --save-every 6 --sample-steps 8)
rc=0
"$BIN" train "${flags[@]}" --steps "$steps" > "$OUT/tb-demo.log" 2>&1 || rc=$?
[ "$rc" = 0 ] && { "$BIN" train "${flags[@]}" --steps $((steps + 4)) --resume "$run/checkpoint.safetensors" >> "$OUT/tb-demo.log" 2>&1 || rc=$?; }
mkdir -p "$OUT/tb-demo"
cp "$run"/events.out.tfevents.* "$run"/log.jsonl "$run"/report.html "$OUT/tb-demo/" 2>/dev/null
grep -E "TensorBoard|Time:|training: " "$OUT/tb-demo.log" | tail -8
ls -la "$OUT/tb-demo"
exit "$rc"
