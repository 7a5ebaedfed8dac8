#!/usr/bin/env bash
# tools/device-gpu-tests.sh: run on the GPU machine (through the device tool, carrying
# .deps): unpacks cJSON/stb, builds with CUDA, runs the gpu suite (and, if asked, all
# suites, or only the kernel-level GPU tests), and copies logs to $OUT.
# Usage: tools/device-gpu-tests.sh [all|quick]
set -uo pipefail
tools/device-deps.sh env
export PKG_CONFIG_SYSROOT_DIR=/tmp/deps
export PKG_CONFIG_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/tmp/deps/usr/share/pkgconfig
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu
export C_INCLUDE_PATH=/tmp/deps/usr/include
nvidia-smi -L || true
rm -rf build-gpu
meson setup build-gpu -Dcuda=enabled > "${OUT:-/tmp}/setup.log" 2>&1 || { tail -40 "${OUT:-/tmp}/setup.log"; exit 1; }
ninja -C build-gpu -j 16 > "${OUT:-/tmp}/build.log" 2>&1 || { tail -60 "${OUT:-/tmp}/build.log"; exit 1; }
if [ "${1:-}" = quick ]; then
    meson test -C build-gpu --print-errorlogs gpu_quant gpu_ops gpu_mmdit
elif [ "${1:-}" = all ]; then
    meson test -C build-gpu --print-errorlogs --num-processes 8
else
    meson test -C build-gpu --print-errorlogs --suite gpu
fi
rc=$?
cp build-gpu/meson-logs/testlog.txt "${OUT:-/tmp}/" 2>/dev/null
exit $rc
