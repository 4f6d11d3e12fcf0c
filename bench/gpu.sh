#!/usr/bin/env bash
# Reproduces the BENCHMARKS.md table on one NVIDIA GPU (wgpu over Vulkan), in a few minutes.
# The GPU machine has no Rust toolchain and no internet: build here, then carry the bundle.
#
#   bash bench/gpu.sh pack      # here: release build + bench/gpu-bundle/ (trainer, libvulkan)
#   bash bench/gpu.sh run       # on the GPU machine, from the repository root
#
# `run` writes a random Qwen2.5-0.5B-shaped model, measures wgpu (and the CPU for reference),
# and prints the table, then the same as one JSON object per backend (and wgpu with the
# weights quantised to Q8_0 blocks, and a bf16 copy whose matrices stay 16-bit on the GPU).
# Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=bench/gpu-bundle

case "${1:-}" in
  pack)
    cargo build --release -p trainer
    mkdir -p "$BUNDLE"
    cp "${CARGO_TARGET_DIR:-target}/release/trainer" "$BUNDLE/"
    cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$BUNDLE/"
    du -sh "$BUNDLE"
    ;;
  run)
    export LD_LIBRARY_PATH="$PWD/$BUNDLE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "no Vulkan ICD files found: wgpu will not see the GPU"
    model=$(mktemp -d)/q05
    "$BUNDLE/trainer" random-model --shape 0.5b --out "$model"
    "$BUNDLE/trainer" devices --backend wgpu
    "$BUNDLE/trainer" bench --model "$model" --backends wgpu,cpu --prompt-len 256 \
      --decode-tokens 32 --batches 1,8 --adapter | tee "${OUT:-/tmp}/bench-gpu.md"
    # The same per backend as JSON (weight memory, largest buffer, kernels per token).
    "$BUNDLE/trainer" bench --model "$model" --backends wgpu,cpu --prompt-len 256 \
      --decode-tokens 32 --batches 1,8 --json | tee "${OUT:-/tmp}/bench-gpu.jsonl"
    # Quantised to Q8_0 at load: the GPU multiplies the blocks (the GGUF path's kernels).
    "$BUNDLE/trainer" bench --model "$model" --backends wgpu --weights q8 --prompt-len 256 \
      --decode-tokens 32 --batches 1,8 --json | tee -a "${OUT:-/tmp}/bench-gpu.jsonl"
    # bf16, as Qwen's checkpoints are published: 2 bytes a matrix value on the GPU.
    "$BUNDLE/trainer" random-model --shape 0.5b --dtype bf16 --out "$model-bf16"
    "$BUNDLE/trainer" bench --model "$model-bf16" --backends wgpu --prompt-len 256 \
      --decode-tokens 32 --batches 1,8 --json | tee -a "${OUT:-/tmp}/bench-gpu.jsonl"
    ;;
  *)
    echo "usage: bash bench/gpu.sh pack|run" >&2
    exit 2
    ;;
esac
