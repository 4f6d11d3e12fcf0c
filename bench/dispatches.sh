#!/usr/bin/env bash
# Kernel launches per decoded token on wgpu, counted by cubecl's own profiler (one
# `| duration | kernel` line per launch), as the difference between two greedy generations of
# A and B new tokens from the same prompt.
#
#   bench/dispatches.sh TRAINER MODEL [A B]     # e.g. target/release/trainer assets/toy 2 10
set -euo pipefail
trainer=${1:?usage: bench/dispatches.sh TRAINER MODEL [A B]}
model=${2:?usage: bench/dispatches.sh TRAINER MODEL [A B]}
a=${3:-2}
b=${4:-10}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
count() {
  CUBECL_DEBUG_LOG="$dir/$1.log" CUBECL_DEBUG_OPTION=profile \
    "$trainer" generate --model "$model" --backend wgpu --ids 5,17,42,99,7,23,61,8 \
    --max-new-tokens "$1" --json > "$dir/$1.json"
  tokens=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['tokens']))" "$dir/$1.json")
  [ "$tokens" = "$1" ] || { echo "generation of $1 tokens stopped at $tokens" >&2; exit 1; }
  # One `| DURATION | KERNEL` line per launch; the summary table's lines have more columns.
  grep -cE '^\| [^|]+ \| [^|]+$' "$dir/$1.log" || true
}
ca=$(count "$a")
cb=$(count "$b")
echo "launches: $ca for $a tokens, $cb for $b tokens"
python3 -c "print(f'dispatches per decoded token: {($cb - $ca) / ($b - $a):.1f}')"
