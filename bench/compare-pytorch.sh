#!/usr/bin/env bash
# bench/compare-pytorch.sh: on the GPU machine (device tool, carrying .deps, and .whl
# holding the diffusers wheel, see README), after bench/device-run.sh has built
# build-gpu: runs bench/pytorch_qzo.py (diffusers bf16 forward + int4 QZO step in
# torch) and `sd-qzo bench` on the same config, and prints the ratios.
set -uo pipefail
cfg=${1:-large}; res=${2:-1024}; out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
PYTHONUNBUFFERED=1 timeout 300 python3 bench/pytorch_qzo.py --config $cfg --resolution $res --steps 3 --warmup 1 \
    --json "$out/torch_${cfg}_${res}.json" 2>&1 | tail -8
[ -f "$out/sq_${cfg}_${res}.json" ] || timeout 150 build-gpu/app/sd-qzo bench --preset $cfg --resolution $res \
    --steps 3 --warmup 1 --what mmdit --json "$out/sq_${cfg}_${res}.json" | tail -4
python3 - "$out/torch_${cfg}_${res}.json" "$out/sq_${cfg}_${res}.json" <<'PY'
import json, sys
t, s = (json.load(open(p)) for p in sys.argv[1:3])
tf, tq = t["forward_ms"]["median"], t["qzo_step_ms"]["median"]
sf, sq = s["mmdit"]["forward_ms"]["median"], s["mmdit"]["qzo_step_ms"]["median"]
print(f"forward: torch bf16 {tf:.1f} ms, sd-qzo int4 {sf:.1f} ms -> {tf/sf:.2f}x")
print(f"QZO step: torch int4 {tq:.1f} ms, sd-qzo {sq:.1f} ms -> {tq/sq:.2f}x")
PY
