#!/usr/bin/env bash
# bench/device-final.sh: the whole bench/RESULTS.md table in one device call (carry
# .deps and .whl): build + GPU suite, then for each model and resolution PyTorch
# (bench/pytorch_qzo.py) and `sd-qzo bench` on the same GPU with the ratios, then
# whole `sd-qzo train` runs for peak memory. Logs and JSON are tarred into $OUT.
# GPU_TESTS=quick runs only the quant/ops/mmdit GPU tests; NO_PROFILE=1 skips the ncu
# profile, NO_TRAIN=1 the train runs.
set -uo pipefail
export PATH=/usr/local/cuda/bin:$PATH
out=${OUT:-/tmp}; rm -rf /tmp/final; mkdir -p /tmp/final   # no stale JSON from an earlier call on a warm machine
OUT=/tmp/final tools/device-gpu-tests.sh ${GPU_TESTS:-} > /tmp/final/gpu.log 2>&1
grep -E "^ *[0-9]+/[0-9]+ |Ok:|Fail:" /tmp/final/gpu.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -n "${NO_PROFILE:-}" ] || OUT=/tmp/final PROFILE_ONLY=1 bench/device-profile.sh large 512 2>&1 | head -16
for a in "large 1024" "large 512" "medium 512"; do
    set -- $a
    echo "== $1 $2²"
    OUT=/tmp/final bench/compare-pytorch.sh $1 $2 2>&1 | grep -vE "^\s*$" | tail -9
done
if [ -z "${NO_TRAIN:-}" ]; then
    sed -i 's/^run large-1024-resident/#&/' bench/device-train.sh
    OUT=/tmp/final bench/device-train.sh 2>&1 | grep -E "==|steps:|released|scratch 0"
fi
tar -C /tmp/final -czf "$out/final.tgz" .
