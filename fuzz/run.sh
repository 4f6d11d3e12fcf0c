#!/usr/bin/env bash
# Coverage-guided fuzzing of one target, starting from the committed seeds (fuzz/corpus/TARGET,
# made by fuzz/make_seeds.py); the corpus it grows stays in $FUZZ_DIR/corpus/TARGET for the next run:
#
#     fuzz/run.sh TARGET [SECONDS]      # targets: safetensors_header gguf adapter_decode gsm8k_answer
#
# Crashes are written to $FUZZ_DIR/artifacts/TARGET/ (default $CARGO_TARGET_DIR/fuzz); once
# fixed, copy them into fuzz/regressions/TARGET/ so that `cargo test` replays them.
# cargo fuzz passes nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets a stable toolchain take them.
# No sanitizer (-s none): the parsers have no unsafe code, and it runs several times faster.
set -euo pipefail
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FUZZ_DIR:-${CARGO_TARGET_DIR:-$root/target}/fuzz}
case $target in
  safetensors_header) max_len=16384 ;;
  gguf) max_len=8192 ;;
  adapter_decode | gsm8k_answer) max_len=4096 ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
cd "$root"
RUSTC_BOOTSTRAP=1 cargo fuzz build -s none --features libfuzzer --target-dir "$dir" "$target"
host=$(rustc -vV | sed -n 's/^host: //p')
bin=$dir/$host/release/$target
work=$dir/corpus/$target
mkdir -p "$work" "$dir/artifacts/$target"
"$bin" "$work" "fuzz/corpus/$target" -max_total_time="$seconds" -max_len="$max_len" \
  -artifact_prefix="$dir/artifacts/$target/" -print_final_stats=1
