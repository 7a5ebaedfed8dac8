#!/usr/bin/env bash
# scripts/gpu/bench-profile.sh: where the time of one MMDiT forward goes, on a GPU
# machine with Nsight Compute (ncu), after scripts/gpu/build-and-test.sh has built
# $BUILD_DIR. ncu times every kernel of one forward after warm-up
# (SQ_PROFILE_CAPTURE=1 marks it; clocks left free, kernels run one at a time), and
# the totals are grouped by kernel (CSV in $OUT). Then the plain bench for the real figures.
# Usage: [PROFILE_ONLY=1] scripts/gpu/bench-profile.sh [config] [resolutions...]
set -uo pipefail
. "$(dirname "$0")/env.sh"
cfg=${1:-large}; shift || true
for res in ${@:-512 1024}; do
    SQ_PROFILE_CAPTURE=1 timeout 400 ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
        --csv --log-file "$OUT/ncu_${cfg}_${res}.csv" \
        "$BIN" bench --preset $cfg --resolution $res --steps 1 --warmup 1 --what mmdit > /dev/null 2>&1
    echo "== $cfg ${res}²: GPU time per kernel, one forward (ncu, kernels serialised)"
    python3 - "$OUT/ncu_${cfg}_${res}.csv" <<'PY'
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = list(csv.DictReader(lines))
tot = collections.Counter(); cnt = collections.Counter()
for r in rows:
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    v = v * {"ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1, "ms": 1}.get(unit, 1e-6)
    name = r["Kernel Name"].split("(")[0].split("<")[0][:60]
    tot[name] += v; cnt[name] += 1
s = sum(tot.values())
print(f"total {s:.1f} ms over {sum(cnt.values())} kernels")
for n, v in tot.most_common(25):
    print(f"{v:9.2f} ms {100*v/s:5.1f}% {cnt[n]:6d}x  {n}")
PY
    [ -n "${PROFILE_ONLY:-}" ] || "$BIN" bench --preset $cfg --resolution $res --steps 3 --warmup 1 --what mmdit 2>&1 | tail -4
done
