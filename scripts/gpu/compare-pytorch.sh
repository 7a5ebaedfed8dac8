#!/usr/bin/env bash
# scripts/gpu/compare-pytorch.sh: PyTorch against sd-qzo on the same GPU, after
# scripts/gpu/build-and-test.sh has built $BUILD_DIR: runs bench/pytorch_qzo.py
# (diffusers bf16 forward + int4 QZO step in torch; needs PyTorch with CUDA and
# diffusers, from the Python environment or from wheels in $WHEELS_DIR) and
# `sd-qzo bench` on the same config, and prints the ratios. JSON in $OUT; an sd-qzo
# JSON already in $OUT is reused (scripts/gpu/bench-all.sh starts from an empty folder).
# Usage: scripts/gpu/compare-pytorch.sh [large|large-turbo|medium] [resolution]
set -uo pipefail
. "$(dirname "$0")/env.sh"
cfg=${1:-large}; res=${2:-1024}
sq_python_wheels || exit 1
PYTHONUNBUFFERED=1 timeout 300 python3 bench/pytorch_qzo.py --config $cfg --resolution $res --steps 3 --warmup 1 \
    --json "$OUT/torch_${cfg}_${res}.json" 2>&1 | tail -8
[ -f "$OUT/sq_${cfg}_${res}.json" ] || timeout 150 "$BIN" bench --preset $cfg --resolution $res \
    --steps 3 --warmup 1 --what mmdit --json "$OUT/sq_${cfg}_${res}.json" | tail -4
python3 - "$OUT/torch_${cfg}_${res}.json" "$OUT/sq_${cfg}_${res}.json" <<'PY'
import json, sys
t, s = (json.load(open(p)) for p in sys.argv[1:3])
tf, tq = t["forward_ms"]["median"], t["qzo_step_ms"]["median"]
sf, sq = s["mmdit"]["forward_ms"]["median"], s["mmdit"]["qzo_step_ms"]["median"]
print(f"forward: torch bf16 {tf:.1f} ms, sd-qzo int4 {sf:.1f} ms -> {tf/sf:.2f}x")
print(f"QZO step: torch int4 {tq:.1f} ms, sd-qzo {sq:.1f} ms -> {tq/sq:.2f}x")
PY
