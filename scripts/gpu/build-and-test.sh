#!/usr/bin/env bash
# scripts/gpu/build-and-test.sh: on a GPU machine (see scripts/gpu/env.sh for what it
# needs): a fresh CUDA build in $BUILD_DIR, then the gpu suite (or every suite, or
# only the kernel-level GPU tests). The setup/build logs and meson's test log go to $OUT.
# Usage: scripts/gpu/build-and-test.sh [all|quick]
set -uo pipefail
. "$(dirname "$0")/env.sh"
ls "$DEPS_DIR"/*.deb >/dev/null 2>&1 && { scripts/gpu/deps.sh unpack; . scripts/gpu/env.sh; }
nvidia-smi -L || true
rm -rf "$BUILD_DIR"
meson setup "$BUILD_DIR" -Dcuda=enabled ${CUDA_ARCH:+-Dgpu_arch=$CUDA_ARCH} > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
ninja -C "$BUILD_DIR" -j "$JOBS" > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
if [ "${1:-}" = quick ]; then
    meson test -C "$BUILD_DIR" --print-errorlogs gpu_quant gpu_quantize gpu_quantize_file gpu_ops gpu_mmdit
elif [ "${1:-}" = all ]; then
    meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 8
else
    meson test -C "$BUILD_DIR" --print-errorlogs --suite gpu
fi
rc=$?
cp "$BUILD_DIR/meson-logs/testlog.txt" "$OUT/" 2>/dev/null
exit $rc
