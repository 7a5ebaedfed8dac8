# scripts/gpu/env.sh: settings shared by the scripts of scripts/gpu/ (sourced by each
# of them, not run). They build and measure sd-qzo on a GPU machine.
#
# Needs: Linux x86-64 with an NVIDIA GPU (sm_80 or newer) and its driver
# (nvidia-smi), CUDA 12+ (nvcc, cuBLAS, cuBLASLt; cuDNN 9 is used when found),
# meson >= 1.0, ninja, pkg-config, libsentencepiece, cJSON, stb and libwebp (see deps.sh
# for a machine without the last three), Python 3. compare-pytorch.sh, bench-speed.sh and
# make-demo.sh also need PyTorch with CUDA, diffusers, transformers and safetensors;
# bench-profile.sh needs Nsight Compute (ncu).
#
# Every setting below can be given in the environment instead, e.g.
#   OUT=$HOME/sd-qzo-results scripts/gpu/bench.sh
# Scripts never write tracked files: builds go to BUILD_DIR, results to OUT.

SQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$SQ_ROOT" || return 1

: "${BUILD_DIR:=build-gpu}"            # the CUDA build (ignored by git)
: "${OUT:=$SQ_ROOT/out/gpu}"           # results: logs, JSON, CSV (out/ is ignored by git)
: "${WORK:=${TMPDIR:-/tmp}/sd-qzo-gpu}" # scratch: training runs, unpacked demo
: "${DEPS_DIR:=$SQ_ROOT/.deps}"        # .deb files of cJSON/stb/libwebp (deps.sh download; ignored)
: "${DEPS_ROOT:=$WORK/deps}"           # where deps.sh unpacks them
: "${WHEELS_DIR:=$SQ_ROOT/.whl}"       # optional Python wheels (e.g. diffusers) for a machine
                                       # without a package index (ignored)
: "${PY_SITE:=$WORK/site}"             # where those wheels are installed
: "${JOBS:=$(nproc 2>/dev/null || echo 8)}"
: "${CUDA_ARCH:=}"                      # e.g. 90: build the kernels for this GPU only (faster)
BIN=$BUILD_DIR/app/sd-qzo
export OUT WORK
mkdir -p "$OUT" "$WORK"

[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH

# cJSON/stb/libwebp unpacked by deps.sh: make meson and the loader find them.
if [ -d "$DEPS_ROOT/usr" ]; then
    export PKG_CONFIG_SYSROOT_DIR=$DEPS_ROOT
    export PKG_CONFIG_PATH=$DEPS_ROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$DEPS_ROOT/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export LD_LIBRARY_PATH=$DEPS_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LIBRARY_PATH=$DEPS_ROOT/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
    export C_INCLUDE_PATH=$DEPS_ROOT/usr/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
fi

# Installs the wheels of WHEELS_DIR (when there are any) into PY_SITE and puts it on
# PYTHONPATH; without wheels the Python environment is used as it is.
sq_python_wheels() {
    local whl=("$WHEELS_DIR"/*.whl)
    [ -e "${whl[0]}" ] || return 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PY_SITE" "${whl[@]}" || return 1
    export PYTHONPATH=$PY_SITE${PYTHONPATH:+:$PYTHONPATH}
}
