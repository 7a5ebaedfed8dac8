#!/usr/bin/env bash
# scripts/gpu/deps.sh: cJSON, stb and libwebp (with libwebpdemux) for a GPU machine
# that has CUDA, cuDNN, sentencepiece, meson and ninja but not these packages, and no
# package registry.
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
    pkgs="libcjson1 libcjson-dev libstb0 libstb-dev libwebp-dev libwebp7 libwebpdemux2 libwebpmux3"
    # libwebp >= 1.3 (Ubuntu noble, Debian trixie) moved sharp YUV into libsharpyuv0;
    # Debian bookworm's 1.2.4 has no such package.
    for p in libsharpyuv0 libsharpyuv-dev; do
        if apt-cache show "$p" >/dev/null 2>&1; then pkgs="$pkgs $p"; fi
    done
    # shellcheck disable=SC2086
    apt-get download $pkgs
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
