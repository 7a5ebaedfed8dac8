#!/usr/bin/env bash
# scripts/gpu/deps.sh: cJSON and stb for a GPU machine that has CUDA, cuDNN,
# sentencepiece, meson and ninja but not these two packages, and no package registry.
#   on a Debian/Ubuntu machine with apt:  scripts/gpu/deps.sh download
#                                         -> $DEPS_DIR/*.deb (default .deps/, ignored by git);
#                                         copy the folder along with the checkout
#   on the GPU machine:                   scripts/gpu/deps.sh unpack
#                                         -> $DEPS_ROOT; scripts/gpu/env.sh then points
#                                         pkg-config, the compiler and the loader there
# (scripts/gpu/build-and-test.sh unpacks by itself when $DEPS_DIR holds .deb files.)
set -euo pipefail
. "$(dirname "$0")/env.sh"
case "${1:-}" in
download)
    mkdir -p "$DEPS_DIR" && cd "$DEPS_DIR"
    apt-get download libcjson1 libcjson-dev libstb0 libstb-dev
    ls -l
    ;;
unpack|env)
    for f in "$DEPS_DIR"/*.deb; do
        if [ -e "$f" ]; then dpkg -x "$f" "$DEPS_ROOT"; fi
    done
    ;;
*)
    echo "usage: scripts/gpu/deps.sh download | unpack" >&2; exit 2 ;;
esac
