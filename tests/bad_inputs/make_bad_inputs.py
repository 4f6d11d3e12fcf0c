"""Writes the bad-input corpus in this folder: broken models, tokenizers, adapters and data,
each a case in cases.json with the command to run and the error it must give.

    python3 tests/bad_inputs/make_bad_inputs.py     # standard library only

The corpus is committed; `crates/trainer/tests/bad_inputs.rs` runs every case through the real
`trainer` binary and checks that it exits non-zero, names the file and the problem, and does
not panic. Cases derive from tests/fixtures/qwen2/tied_f32_hub and assets/toy.
"""
import base64
import hashlib
import json
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIXTURE = ROOT / "tests/fixtures/qwen2/tied_f32_hub"
TOY = ROOT / "assets/toy"
CASES = []


def case(name, args, expect, why):
    """`args` use {dir} for this folder (tests/bad_inputs) and {root} for the repository root;
    an argument `@FILE` stands for the contents of FILE."""
    CASES.append({"name": name, "args": args, "expect": expect, "why": why})


def model_dir(name, weights=None, config=None, tokenizer=None):
    d = HERE / name
    d.mkdir(exist_ok=True)
    if config is None:
        shutil.copy(FIXTURE / "config.json", d / "config.json")
    else:
        (d / "config.json").write_text(config)
    if weights is not None:
        (d / "model.safetensors").write_bytes(weights)
    if tokenizer is not None:
        (d / "tokenizer.json").write_text(tokenizer)
    return d


def safetensors(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def gguf(magic=b"GGUF", version=3, type_id=0, offset=0, data=16, n_tensors=1):
    """One metadata string and one tensor `output_norm.weight` [4] of `type_id` at `offset`."""
    b = magic + struct.pack("<IQQ", version, n_tensors, 1)
    key = b"general.architecture"
    b += struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, 5) + b"qwen2"
    name = b"output_norm.weight"
    b += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, 4, type_id, offset)
    b += b"\0" * (-len(b) % 32) + b"\0" * data
    return b


def compact_link(adapter):
    """The `tl1.` form of an adapter JSON (the record of crates/formats/src/adapter/file.rs;
    checked against the toy model's example link below)."""
    c = adapter["config"]
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert c["tying"]["kind"] == "ratio" and c["convention"]["kind"] == "peft"
    record = b"TL" + struct.pack("<BBHHB", 1, c["r"], c["u"], len(adapter["v"]),
                                 sum(1 << i for i, t in enumerate(targets) if t in c["targets"]))
    record += b"\x01" + struct.pack("<d", c["tying"]["weight_tying"]) + b"\x00" + struct.pack("<Q", c["seed"])
    record += bytes.fromhex(adapter["base_fingerprint"][:16]) + bytes.fromhex(adapter["basis_hash"][:16])
    record += b"".join(struct.pack("<f", x) for v in adapter["v"] for x in v)
    record += hashlib.sha256(record).digest()[:4]
    return "tl1." + base64.urlsafe_b64encode(record).decode().rstrip("=")


def main():
    good = (FIXTURE / "model.safetensors").read_bytes()
    model_args = lambda d: ["logits", "--model", f"{{dir}}/{d}", "--ids", "1,2,3"]

    model_dir("safetensors_truncated", weights=good[: len(good) // 2])
    case("safetensors_truncated", model_args("safetensors_truncated"), "do not fit", "cut in half: tensors run past the end")
    model_dir("safetensors_header_too_long", weights=struct.pack("<Q", 2**62) + b"{}")
    case("safetensors_header_too_long", model_args("safetensors_header_too_long"), "header length", "header length field larger than the file")
    model_dir("safetensors_header_not_json", weights=struct.pack("<Q", 8) + b"not json")
    case("safetensors_header_not_json", model_args("safetensors_header_not_json"), "not valid JSON", "garbage header")
    lying = {"model.embed_tokens.weight": {"dtype": "F32", "shape": [512, 64], "data_offsets": [0, 131072]}}
    model_dir("safetensors_lying_offsets", weights=safetensors(lying, b"\0" * 1024))
    case("safetensors_lying_offsets", model_args("safetensors_lying_offsets"), "data_offsets", "offsets point past the data")
    absurd = {"model.embed_tokens.weight": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}
    model_dir("safetensors_absurd_shape", weights=safetensors(absurd, b"\0" * 16))
    case("safetensors_absurd_shape", model_args("safetensors_absurd_shape"), "model.embed_tokens.weight", "a 2^80-element shape: refused, nothing allocated")
    int8 = {"model.embed_tokens.weight": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}
    model_dir("safetensors_unsupported_dtype", weights=safetensors(int8, b"\0" * 4))
    case("safetensors_unsupported_dtype", model_args("safetensors_unsupported_dtype"), "dtype I8 is not supported", "an integer tensor")
    model_dir("safetensors_missing_tensor", weights=safetensors({}, b""))
    case("safetensors_missing_tensor", model_args("safetensors_missing_tensor"), "missing tensor", "a valid file without the model's tensors")

    for name, data, expect in [
        ("gguf_bad_magic.gguf", gguf(magic=b"GGUX"), "bad magic"),
        ("gguf_wrong_version.gguf", gguf(version=7), "version 7"),
        ("gguf_unknown_type.gguf", gguf(type_id=99), "GGML type 99"),
        ("gguf_offset_past_end.gguf", gguf(offset=1 << 40), "past the end"),
        ("gguf_implausible_count.gguf", gguf(n_tensors=2**60), "implausible"),
        ("gguf_truncated.gguf", gguf()[:30], "truncated"),
    ]:
        (HERE / name).write_bytes(data)
        case(name.removesuffix(".gguf"), ["logits", "--model", f"{{dir}}/{name}", "--ids", "1"], expect, name)

    config = json.loads((FIXTURE / "config.json").read_text())
    missing = {k: v for k, v in config.items() if k != "hidden_size"}
    # config.json is read first, so these need no real weights.
    model_dir("config_missing_field", weights=b"", config=json.dumps(missing))
    case("config_missing_field", model_args("config_missing_field"), "hidden_size", "config.json without hidden_size")
    model_dir("config_wrong_type", weights=b"", config=json.dumps({**config, "num_hidden_layers": "two"}))
    case("config_wrong_type", model_args("config_wrong_type"), "num_hidden_layers", "a string where a number belongs")
    model_dir("config_not_json", weights=b"", config="{ this is not json")
    case("config_not_json", model_args("config_not_json"), "config.json", "config.json is not JSON")

    (HERE / "tokenizer_not_tokenizer.json").write_text(json.dumps({"hello": 1}))
    fixture = str(Path("{root}") / FIXTURE.relative_to(ROOT))
    case("tokenizer_not_tokenizer", ["generate", "--model", fixture, "--tokenizer", "{dir}/tokenizer_not_tokenizer.json", "--prompt", "hi"], "tokenizer_not_tokenizer.json", "a JSON file that is not a tokenizer")

    toy_adapter = json.loads((TOY / "example-adapter.json").read_text())
    toy = ["logits", "--model", "{root}/assets/toy", "--ids", "1,2,3", "--adapter"]
    (HERE / "adapter_wrong_base.json").write_text(json.dumps(toy_adapter))
    case("adapter_wrong_base", ["logits", "--model", fixture, "--ids", "1,2,3", "--adapter", "{dir}/adapter_wrong_base.json"], "another base model", "the toy model's adapter on another model")
    text = json.dumps(toy_adapter).replace(str(toy_adapter["v"][0][0]), "1e999", 1)
    (HERE / "adapter_infinite.json").write_text(text)
    case("adapter_infinite", toy + ["{dir}/adapter_infinite.json"], "adapter_infinite.json", "a value that overflows to infinity")
    (HERE / "adapter_unknown_version.json").write_text(json.dumps({**toy_adapter, "version": 99}))
    case("adapter_unknown_version", toy + ["{dir}/adapter_unknown_version.json"], "version 99", "a future format version")
    compact = (TOY / "example-adapter.tl1").read_text().strip()
    flipped = compact[:40] + ("A" if compact[40] != "A" else "B") + compact[41:]
    (HERE / "adapter_corrupted.tl1").write_text(flipped)
    case("adapter_corrupted", toy + ["{dir}/adapter_corrupted.tl1"], "checksum", "one character of the link changed")
    (HERE / "adapter_truncated.tl1").write_text(compact[:60])
    case("adapter_truncated", toy + ["{dir}/adapter_truncated.tl1"], "adapter_truncated.tl1", "the link cut short")
    huge = {**toy_adapter, "config": {**toy_adapter["config"], "r": 64, "u": 65535}, "trainable_parameters": 65535, "v": [[0.0] * 65535]}
    (HERE / "adapter_huge_basis.json").write_text(json.dumps(huge, separators=(",", ":")))
    case("adapter_huge_basis", toy + ["{dir}/adapter_huge_basis.json"], "projection values per module exceeds the limit", "the validator's maxima r = 64, u = 65535 (a 263 KB file asking for 1 GiB of projections per module)")
    assert compact_link(toy_adapter) == compact, "compact_link no longer matches the trainer's encoder"
    (HERE / "adapter_huge_basis.tl1").write_text(compact_link(huge) + "\n")
    case("adapter_huge_basis_link", toy + ["{dir}/adapter_huge_basis.tl1"], "projection values per module exceeds the limit", "the same as a `tl1.` link (the browser test opens it as #adapter=)")

    lines = (TOY / "test.jsonl").read_text().splitlines()[:3]
    (HERE / "gsm8k_broken_line.jsonl").write_text("\n".join([lines[0], '{"question": "no answer"', lines[2]]) + "\n")
    case("weights_q8_with_adapter", toy[:-1] + ["--weights", "q8", "--adapter", "{dir}/adapter_wrong_base.json"], "--weights q8 with an adapter", "an adapter on a base rounded to Q8_0 at load")
    case("weights_unknown", toy[:-1] + ["--weights", "q3"], "unknown weight format", "a weight format that does not exist")
    case("gsm8k_broken_line", ["eval", "--model", "{root}/assets/toy", "--data", "{dir}/gsm8k_broken_line.jsonl", "--limit", "3"], "line 2", "a line that is not JSON")
    (HERE / "gsm8k_no_gold.jsonl").write_text(json.dumps({"question": "How many?", "answer": "no final number"}) + "\n")
    case("gsm8k_no_gold", ["eval", "--model", "{root}/assets/toy", "--data", "{dir}/gsm8k_no_gold.jsonl"], "####", "an answer without `#### N`")

    (HERE / "prompt_too_long.txt").write_text("Tom has 3 apples. " * 200)
    case("prompt_too_long", ["generate", "--model", "{root}/assets/toy", "--prompt", "@{dir}/prompt_too_long.txt", "--max-new-tokens", "8"], "context", "a prompt longer than the toy model's 512 positions")

    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    print(f"{len(CASES)} cases")


if __name__ == "__main__":
    main()
