"""Writes a Qwen2.5-0.5B-shaped (or 1.5B-shaped) Qwen2 checkpoint with random weights, for
benchmarks only: the real architecture and tensor sizes without downloading a model.

    python bench/make_random_qwen.py --shape 0.5b --dtype bfloat16 --out /tmp/qwen-0.5b-random

Needs torch and transformers (PyPI). The tokenizer is not written: pair it with any Qwen2.5
tokenizer.json (151,643 tokens + specials), e.g. the one ../shared/design.md says how to get.
"""
import argparse

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    # Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-1.5B-Instruct config.json values.
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                         rms_norm_eps=1e-6, eos_token_id=151645, bos_token_id=151643,
                         **SHAPES[args.shape])
    model = Qwen2ForCausalLM(config).to(getattr(torch, args.dtype))
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size="20GB")
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
