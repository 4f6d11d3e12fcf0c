#!/usr/bin/env python3
"""Seed inputs of the fuzz targets (run by hand; outputs committed under fuzz/corpus/seed-*).

Valid files and the bad-input corpus' cases, small so that each fuzz execution is cheap:
- safetensors_header: the PEFT no-tie fixture, the first bytes (header + 2 KiB of data) of the
  Qwen2 fixtures in f32/bf16/f16, the tests/bad_inputs safetensors cases;
- gguf: a GGUF with Qwen2 metadata and one small tensor of every supported type, made with the
  `gguf` package (llama.cpp's writer), and the tests/bad_inputs GGUF cases;
- adapter_decode: the bundled example adapter (JSON and compact) and the bad adapter cases;
- gsm8k_answer: model-style responses and GSM8K JSONL lines (real and toy), and the bad cases.

    venv/bin/python fuzz/make_seeds.py
"""
import shutil
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, quants

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
BAD = ROOT / "tests" / "bad_inputs"
rng = np.random.default_rng(11)


def put(target, name, data):
    path = CORPUS / target / f"seed-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors_seeds():
    put("safetensors_header", "peft-no-tie-u2",
        (ROOT / "tests/fixtures/peft/no_tie_u2/adapter_model.safetensors").read_bytes())
    for name, rel in [("tied-f32-head", "qwen2/tied_f32_hub/model.safetensors"),
                      ("untied-bf16-head", "qwen2/untied_bf16_tf5/model.safetensors"),
                      ("f16-shard-head", "qwen2/untied_f16_sharded_hub/model-00002-of-00002.safetensors")]:
        data = (ROOT / "tests/fixtures" / rel).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        put("safetensors_header", name, data[:8 + n + 2048])
    for case in sorted(BAD.glob("safetensors_*")):
        data = (case / "model.safetensors").read_bytes()
        put("safetensors_header", case.name, data[:16384])


def gguf_seeds():
    path = CORPUS / "gguf" / "seed-every-type.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "qwen2")
    for add, value in [(writer.add_context_length, 64), (writer.add_embedding_length, 32),
                       (writer.add_feed_forward_length, 64), (writer.add_block_count, 1),
                       (writer.add_head_count, 4), (writer.add_head_count_kv, 2),
                       (writer.add_rope_freq_base, 10000.0), (writer.add_layer_norm_rms_eps, 1e-6),
                       (writer.add_eos_token_id, 3)]:
        add(value)
    names = {T.F32: "output_norm.weight", T.F16: "token_embd.weight", T.BF16: "blk.0.attn_v.weight",
             T.Q8_0: "blk.0.attn_q.weight", T.Q5_0: "blk.0.attn_k.weight",
             T.Q4_0: "blk.0.attn_output.weight", T.Q4_K: "blk.0.ffn_up.weight",
             T.Q6_K: "blk.0.ffn_down.weight"}
    for kind, name in names.items():
        x = rng.normal(size=(1, 256)).astype(np.float32)
        if kind == T.F32:
            writer.add_tensor(name, x)
        elif kind == T.F16:
            writer.add_tensor(name, x.astype(np.float16))
        elif kind in (T.Q4_K, T.Q6_K):
            # The `gguf` package cannot quantise k-quants: one random block with sane scales.
            block = bytearray(rng.integers(0, 256, {T.Q4_K: 144, T.Q6_K: 210}[kind], dtype=np.uint8))
            at = 0 if kind == T.Q4_K else 208
            block[at:at + 2] = np.float16(0.01).tobytes()
            writer.add_tensor(name, np.frombuffer(bytes(block), dtype=np.uint8).reshape(1, -1),
                              raw_dtype=kind)
        else:
            writer.add_tensor(name, quants.quantize(x, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for case in sorted(BAD.glob("gguf_*.gguf")):
        put("gguf", case.stem, case.read_bytes())


def adapter_seeds():
    for suffix in ("json", "tl1"):
        put("adapter_decode", f"example.{suffix}",
            (ROOT / f"assets/toy/example-adapter.{suffix}").read_bytes())
    for case in sorted(BAD.glob("adapter_*")):
        put("adapter_decode", case.name, case.read_bytes())


def gsm8k_seeds():
    responses = [
        "Tom has 1,000 apples.\nSo 3*4=12 and $5.50 each.\n#### 1,012",
        "The answer is -7.",
        "#### 42\n#### 43",
        "Step 1: 0.5 * 8 = 4\nSo she pays $4.00. ÷ é 😀\n####  7",
        "x" * 310 + "#### 9",
    ]
    for i, text in enumerate(responses):
        put("gsm8k_answer", f"response-{i}", text)
    for name, rel in [("gsm8k-test-lines", "assets/gsm8k/test.jsonl"),
                      ("toy-test-lines", "assets/toy/test.jsonl")]:
        lines = (ROOT / rel).read_text().splitlines()[:2]
        put("gsm8k_answer", name, "\n".join(lines) + "\n")
    for case in sorted(BAD.glob("gsm8k_*.jsonl")):
        put("gsm8k_answer", case.stem, case.read_bytes())


if __name__ == "__main__":
    safetensors_seeds()
    gguf_seeds()
    adapter_seeds()
    gsm8k_seeds()
    for target in sorted(CORPUS.iterdir()):
        files = list(target.iterdir())
        print(f"{target.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
