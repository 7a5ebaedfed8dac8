#!/usr/bin/env bash
# demo/run.sh: README command 1. Installs the Debian packages sd-qzo needs (when
# missing), builds sd-qzo for the CPU, and QZO-fine-tunes the built-in demo model
# (demo/model) on demo/finetune, a colour it has never seen ("vermilion"), with the
# settings of demo/train.toml: previews before and after, a fixed-noise validation
# loss on the held-out demo/val, a checkpoint, and demo-run/report.html.
# A few minutes on 2 CPU cores; no GPU and no download needed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages="gcc g++ meson ninja-build pkg-config libcjson-dev libstb-dev libsentencepiece-dev libwebp-dev"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends $missing
fi

# The demo runs on the CPU: build without CUDA (nvcc for four GPU architectures
# would take longer than the training itself).
if [ ! -f build-cpu/build.ninja ]; then
    meson setup build-cpu -Dcuda=disabled >/dev/null
fi
ninja -C build-cpu app/sd-qzo >/dev/null
echo "built build-cpu/app/sd-qzo"

# --overwrite: running the demo again starts afresh (the encoder cache in
# demo-run/cache is kept and reused)
build-cpu/app/sd-qzo train --config demo/train.toml --overwrite "$@"
echo
echo "open demo-run/report.html for the loss curves and the previews before and after"
