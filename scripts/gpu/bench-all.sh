#!/usr/bin/env bash
# scripts/gpu/bench-all.sh: every figure of bench/RESULTS.md in one go on a GPU machine
# (see scripts/gpu/env.sh for what it needs): build + GPU suite, the ncu profile of a
# Large 512² forward, then for each model and resolution PyTorch
# (bench/pytorch_qzo.py) and `sd-qzo bench` on the same GPU with the ratios, then
# whole `sd-qzo train` runs for peak memory. Everything lands in $OUT/bench-all,
# emptied first so no JSON of an earlier run is reused.
# GPU_TESTS=quick runs only the quant/ops/mmdit GPU tests; NO_PROFILE=1 skips the ncu
# profile, NO_TRAIN=1 the train runs; TRAIN_RUNS is passed to bench-train.sh (default
# here: the three runs of the RESULTS table, without large-1024-resident).
set -uo pipefail
. "$(dirname "$0")/env.sh"
res=$OUT/bench-all
rm -rf "$res"; mkdir -p "$res"
OUT=$res scripts/gpu/build-and-test.sh ${GPU_TESTS:-} > "$res/gpu.log" 2>&1
grep -E "^ *[0-9]+/[0-9]+ |Ok:|Fail:" "$res/gpu.log"
. scripts/gpu/env.sh   # picks up dependencies the build unpacked
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -n "${NO_PROFILE:-}" ] || OUT=$res PROFILE_ONLY=1 scripts/gpu/bench-profile.sh large 512 2>&1 | head -16
for a in "large 1024" "large 512" "medium 512"; do
    set -- $a
    echo "== $1 $2²"
    OUT=$res scripts/gpu/compare-pytorch.sh $1 $2 2>&1 | grep -vE "^\s*$" | tail -9
done
if [ -z "${NO_TRAIN:-}" ]; then
    OUT=$res TRAIN_RUNS=${TRAIN_RUNS:-"large-1024 large-512 medium-512"} scripts/gpu/bench-train.sh 2>&1 |
        grep -E "==|steps:|released|scratch 0"
fi
echo "logs and JSON: $res"
