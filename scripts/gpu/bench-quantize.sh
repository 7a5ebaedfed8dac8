#!/usr/bin/env bash
# scripts/gpu/bench-quantize.sh: the time to the first step with a real download:
# `sd-qzo bench --what quantize` writes a dense bf16 SD3.5 Large transformer of the
# real shapes (16.3 GB in 4 shards) under $WORK and times `sd-qzo quantize` on it on
# all CPU threads and on the GPU, checking that both int4 files are identical. Uses
# the CUDA build in $BUILD_DIR (made by build-and-test.sh; built here, without
# tests, when it is missing). Needs about 26 GB free under $WORK. Prints the
# machine, then seconds, MB/s and peak host memory per device; the log and the JSON
# land in $OUT. About 1-2 minutes on a 16-core H100 machine once built.
# Usage: scripts/gpu/bench-quantize.sh [large|medium]
set -uo pipefail
. "$(dirname "$0")/env.sh"
ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 && [ ! -d "$DEPS_ROOT/usr" ] && { scripts/gpu/deps.sh unpack; . scripts/gpu/env.sh; }
if [ ! -x "$BIN" ]; then
    meson setup "$BUILD_DIR" -Dcuda=enabled ${CUDA_ARCH:+-Dgpu_arch=$CUDA_ARCH} > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
    ninja -C "$BUILD_DIR" -j "$JOBS" app/sd-qzo > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
fi
preset=${1:-large}
echo "machine: $(nproc) CPU threads ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
df -h "$WORK" | tail -1
TMPDIR=$WORK timeout 540 "$BIN" bench --what quantize --preset "$preset" --device auto \
    --json "$OUT/bench_quantize_$preset.json" 2>&1 | tee "$OUT/bench_quantize_$preset.log" |
    grep -v '^quantize (MB)\|^writing the synthetic' | tail -30
rc=${PIPESTATUS[0]}
# the progress lines, every ~10%: what a user sees (MB/s as it goes)
grep '^quantize (MB)' "$OUT/bench_quantize_$preset.log" | tail -4
exit "$rc"
