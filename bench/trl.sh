#!/usr/bin/env bash
# TRL's GRPOTrainer with PEFT's TinyLoRA beside `trainer train`, same recipe, same threads.
#
#   bash bench/trl.sh [STEPS] [THREADS]
#
# The recipe is the bundled default, `trainer train --config assets/configs/toy.toml` (the toy
# model, 16 prompts x 8 samples, completions up to 96 tokens, u = 13 fully tied over rank-32
# factors, lr 0.003, no KL), run for STEPS GRPO steps (default 6) with no evaluation on both
# sides; bench/trl_grpo.py is the Python peer and says what maps to what. Prints the median
# seconds per step of each over steps 2..STEPS (the first is warm-up), trainer's rollout/update
# split beside TRL's (generation + reward vs the rest) and the ratio. THREADS (default nproc)
# goes to torch.set_num_threads / OMP_NUM_THREADS and to RAYON_NUM_THREADS.
#
# Sets up once, under $TRL_DIR (default ~/.cache/tinylora/trl), a virtual environment with pinned
# torch (CPU use only), transformers, TRL, PEFT from PyPI. PyPI's Linux torch wheel is a CUDA build
# whose dependencies (cuDNN, cuBLAS, NCCL, ... and triton: 2.8 GB of downloads) only a GPU uses; we
# install the wheel with --no-deps plus its pure-Python dependencies and the 2 MB CUDA runtime,
# and stand in for the other CUDA libraries with stubs (functions that return an error, built
# with cc from the symbols torch imports) so that torch loads; torch then reports no GPU and runs
# on the CPU. `trainer` is `${CARGO_TARGET_DIR:-~/.cache/tinylora/target}/release/trainer`,
# built with `cargo build --release -p trainer` only if missing. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
threads=${2:-$(nproc)}
work=${TRL_DIR:-$HOME/.cache/tinylora/trl}
venv="$work/venv"
py="$venv/bin/python"
target=${CARGO_TARGET_DIR:-$HOME/.cache/tinylora/target}
trainer="$target/release/trainer"
[ "$steps" -ge 2 ] || { echo "STEPS must be at least 2 (the first step is warm-up)" >&2; exit 2; }

# torch without its CUDA dependencies, and the pure-Python packages it needs.
torch_pins="torch==2.15.0 nvidia-cuda-runtime==13.2.86 filelock==4.3.2 typing-extensions==4.16.0
  setuptools==84.2.1 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 jinja2==3.1.6 MarkupSafe==3.0.4
  fsspec==2026.9.0 numpy==2.4.6"
# What `pip install trl==1.16.0 peft==0.21.2 transformers==5.24.0` resolves to, less torch's own
# dependencies (installed with --no-deps, or pip would bring the CUDA libraries back).
stack_pins="trl==1.16.0 peft==0.21.2 transformers==5.24.0 accelerate==1.16.0 datasets==5.2.0
  tokenizers==0.23.3 safetensors==0.8.0 huggingface_hub==2.4.0 hf-xet==1.8.0 PyYAML==6.0.4
  Pygments==2.21.0 annotated-doc==0.0.7 annotated-types==0.8.0 anyio==4.16.0 click==8.5.1
  dill==0.4.1 h11==0.16.0 httpcore2==2.16.2 httpx2==2.16.2 idna==3.20 markdown-it-py==4.3.0
  mdurl==0.1.2 multiprocess==0.70.19 packaging==26.4 pandas==3.1.1 psutil==7.2.2 pyarrow==26.0.1
  pydantic==2.14.4 pydantic_core==2.50.5 python-dateutil==4.0.0 regex==2026.11.19 rich==15.0.0
  shellingham==1.5.4 tqdm==4.70.1 truststore==0.10.5 typer==0.29.2 typing-inspection==0.4.5
  tzdata==2026.6 xxhash==4.1.0"
stamp="$venv/.tinylora-pins"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$torch_pins $stack_pins" ]; then
  started=$(date +%s)
  rm -rf "$venv"
  mkdir -p "$work"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $torch_pins
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $stack_pins
  # Stubs for the CUDA libraries torch links against, next to the real CUDA runtime (a folder on
  # the RPATH of every torch library): each exports the functions torch imports from it, under
  # the symbol versions torch asks for, and returns an error code; never the driver (libcuda).
  "$py" - <<'PY'
import pathlib, re, subprocess, sysconfig, tempfile

site = pathlib.Path(sysconfig.get_paths()["purelib"])
torch_dir, stub_dir = site / "torch", site / "nvidia" / "cu13" / "lib"
libs = [p for p in sorted(torch_dir.glob("lib/*.so")) + sorted(torch_dir.glob("_C*.so"))
        if p.name != "libcaffe2_nvrtc.so"]  # loaded only to compile kernels for a GPU
run = lambda *a: subprocess.run(a, capture_output=True, text=True, check=True).stdout
missing = {m for lib in libs for m in re.findall(r"(\S+) => not found", run("ldd", lib))}
missing.discard("libcuda.so.1")  # the driver, which cudart opens by itself: never a stub
prefixes = {"cuFile": "libcufile.so.0", "cusparseLt": "libcusparseLt.so.0", "nccl": "libnccl.so.2",
            "nvshmem": "libnvshmem_host.so.3"}  # libraries whose symbols carry no version
syms = {so: {} for so in missing}  # soname -> {version node or None: {symbol}}
for lib in libs:
    owner, file = {}, None  # version node -> the library torch expects it from
    for line in run("readelf", "-V", "-W", lib).splitlines():
        if m := re.search(r"File: (\S+)", line):
            file = m.group(1)
        elif (m := re.search(r"Name: (\S+)", line)) and file in missing:
            owner[m.group(1)] = file
            syms[file].setdefault(m.group(1), set())
    for line in run("objdump", "-T", lib).splitlines():
        parts = line.split()
        if "*UND*" not in parts:
            continue
        ver, name = parts[-2].strip("()"), parts[-1]
        if ver in owner:
            syms[owner[ver]][ver].add(name)
        elif ver == "Base":
            so = next((so for p, so in prefixes.items() if name.startswith(p)), None)
            if so in missing:
                syms[so].setdefault(None, set()).add(name)
stub_dir.mkdir(parents=True, exist_ok=True)
for so, by_ver in sorted(syms.items()):
    target = stub_dir / so
    if target.exists():
        continue
    work = pathlib.Path(tempfile.mkdtemp())
    names = sorted(set().union(*by_ver.values())) if by_ver else []
    (work / "stub.c").write_text("".join(f"long {n}(void) {{ return 999; }}\n" for n in names)
                                 + "int tinylora_cuda_stub = 1;\n")
    args = ["cc", "-shared", "-fPIC", "-w", "-o", target, f"-Wl,-soname,{so}", work / "stub.c"]
    unversioned = by_ver.pop(None, set())
    if by_ver:
        nodes = sorted(by_ver)
        by_ver[nodes[0]] |= unversioned
        (work / "map").write_text("".join(
            f"{v} {{ global: {' '.join(n + ';' for n in sorted(by_ver[v]))} }};\n" for v in nodes))
        args.append(f"-Wl,--version-script={work / 'map'}")
    subprocess.run(args, check=True)
    print(f"  stub {target.relative_to(site)}: {len(names)} functions")
PY
  "$py" -c '
import torch
a = torch.arange(6.0).reshape(2, 3)
assert (a @ a.T).tolist() == [[5.0, 14.0], [14.0, 50.0]], "torch matmul"
assert not torch.cuda.is_available()
print(f"torch {torch.__version__} on the CPU: ok")'
  echo "$torch_pins $stack_pins" >"$stamp"
  echo "set-up: $(( $(date +%s) - started )) s, $(du -sh "$venv" | cut -f1) in $venv"
fi

if [ ! -x "$trainer" ]; then
  CARGO_TARGET_DIR="$target" cargo build --release -p trainer
fi

out=$(mktemp -d /tmp/tinylora-trl-bench.XXXXXX)
echo "## trainer train (RAYON_NUM_THREADS=$threads, $steps steps) -> $out/trainer"
RAYON_NUM_THREADS=$threads "$trainer" train --config assets/configs/toy.toml \
  --set run.max_steps="$steps" --set run.eval_every=0 --set 'data.eval=""' \
  --set run.checkpoint_every=0 --out "$out/trainer"

echo "## TRL GRPOTrainer + PEFT TinyLoRA ($threads threads, $steps steps)"
OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads TOKENIZERS_PARALLELISM=false \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONWARNINGS=ignore::FutureWarning \
  "$py" bench/trl_grpo.py --steps "$steps" --threads "$threads" --out "$out/trl" \
  --json "$out/trl.json"

echo
python3 - "$out" "$threads" <<'PY'
import json, statistics, sys
out, threads = sys.argv[1], sys.argv[2]
trl = json.load(open(f"{out}/trl.json"))
rows = [json.loads(l) for l in open(f"{out}/trainer/metrics.jsonl")]
rows = [r for r in rows if r.get("split") == "train"]
timed = rows[1:]
med = lambda k: statistics.median(r[k] for r in timed)
ours = {"step": med("step_time_s"), "rollout": med("rollout_time_s"), "update": med("update_time_s"),
        "len": statistics.fmean(r["completion_len_mean"] for r in rows)}
v = trl["versions"]
print(f"GRPO step on the toy recipe, {threads} threads, median of steps 2..{len(rows)} "
      f"(TRL {v['trl']}, PEFT {v['peft']}, transformers {v['transformers']}, torch {v['torch']})")
print()
print("| | TRL + PEFT | trainer | TRL / trainer |")
print("|---|---|---|---|")
print(f"| s/step | {trl['median_step_s']:.2f} | {ours['step']:.2f} | {trl['median_step_s'] / ours['step']:.2f} |")
print(f"| rollout (generation + reward) | {trl['median_rollout_s']:.2f} | {ours['rollout']:.2f} | "
      f"{trl['median_rollout_s'] / ours['rollout']:.2f} |")
print(f"| update (log-probs + loss + backward + AdamW) | {trl['median_update_s']:.2f} | {ours['update']:.2f} | "
      f"{trl['median_update_s'] / ours['update']:.2f} |")
print(f"| mean completion length (tokens, all steps) | {trl['completion_len_mean']:.1f} | {ours['len']:.1f} | |")
PY
