"""The Python peer of `trainer train --config assets/configs/toy.toml`: TRL's GRPOTrainer with a
PEFT TinyLoRA adapter on the bundled toy model, timed per GRPO step.

    python bench/trl_grpo.py [--steps N] [--threads T] [--out DIR] [--json FILE]

Run by bench/trl.sh, which sets up the virtual environment (TRL, PEFT, transformers, torch on
the CPU). The recipe is toy.toml's: the toy model and its train problems in order (no shuffle),
the paper's prompt in the Qwen2.5 chat template, verl's strict `#### N` reward, u = 13 floats
fully tied (weight_tying = 1.0) over frozen rank-32 factors on q/k/v/o/gate/up/down, 16 prompts
x 8 samples per step, completions up to 96 tokens sampled at temperature 1 (top-p 1, no top-k),
no KL (beta = 0), DAPO token-mean loss, clip 0.2 / 0.4, one update per rollout batch, AdamW
lr 0.003 (weight decay 0.01, gradient norm clip 1.0), floor(0.05 x steps) warm-up steps then
constant, f32, no evaluation, no checkpoints. Never part of the tests.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "assets" / "toy"

# crates/formats/src/gsm8k.rs and chat.rs
PROMPT_SUFFIX = "Let's think step by step and output the final answer after \"####\"."
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
STRICT_WINDOW = 300


def chat_prompt(question: str) -> str:
    """`tinylora::gsm8k::prompt`: the question, a space, the suffix, in the Qwen2.5 template."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question} {PROMPT_SUFFIX}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def leading_number(s: str) -> str:
    """The longest prefix matching `\\-?[0-9\\.\\,]+`, or ''."""
    start = 1 if s.startswith("-") else 0
    end = start
    while end < len(s) and (s[end].isascii() and s[end].isdigit() or s[end] in ".,"):
        end += 1
    return s[:end] if end > start else ""


def hash_number(text: str, last: bool):
    """The first (or last) `#### <number>` of `text`, as `hash_number` in gsm8k.rs."""
    found, rest = None, text
    while (at := rest.find("#### ")) >= 0:
        number = leading_number(rest[at + 5 :])
        if number:
            found = number
            if not last:
                return found
        rest = rest[at + 5 :]
    return found


def normalise(answer: str) -> str:
    return answer.replace(",", "").replace("$", "")


def parse_gold(solution: str):
    n = hash_number(solution, last=False)
    return None if n is None else normalise(n)


def strict_reward_one(response: str, gold: str) -> float:
    """verl's strict rule: the last `#### N` in the last 300 characters equals the gold string."""
    n = hash_number(response[-STRICT_WINDOW:], last=True)
    return 1.0 if n is not None and normalise(n) == gold else 0.0


def strict_reward(completions, gold, **_):
    return [strict_reward_one(c, g) for c, g in zip(completions, gold)]


def check_reward():
    """The rule table of gsm8k.rs's `strict_rule_table` test."""
    long_tail = "#### 72" + " and more text" * 30
    table = [
        ("so 72 in total.\n#### 72", "72", 1.0),
        ("####72", "72", 0.0),
        ("#### $1,000", "1000", 0.0),
        ("#### 1,000", "1000", 1.0),
        ("#### 72.", "72", 0.0),
        ("#### 72.00", "72", 0.0),
        ("#### -5", "-5", 1.0),
        ("#### 3\n#### 4", "4", 1.0),
        ("#### 3\n#### 4", "3", 0.0),
        ("the answer is 72", "72", 0.0),
        (long_tail, "72", 0.0),
        ("#### 72 apples", "72", 1.0),
    ]
    for text, gold, want in table:
        got = strict_reward_one(text, gold)
        assert got == want, f"strict reward of {text[:40]!r} vs {gold}: {got}, want {want}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="GRPO steps (optimizer updates)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/tinylora-trl-grpo", help="TRL's output_dir (nothing is saved)")
    ap.add_argument("--json", help="write the per-step times and medians here")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import accelerate
    import datasets
    import peft
    import tokenizers
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
    }
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    print(f"torch threads: {torch.get_num_threads()}, cuda available: {torch.cuda.is_available()}", flush=True)
    if not hasattr(peft, "TinyLoraConfig"):
        sys.exit(f"PEFT {peft.__version__} has no TinyLoraConfig: no TinyLoRA peer to run")
    check_reward()

    # The tokenizer exactly as tokenizer.json defines it (AutoTokenizer would pick Qwen2's class
    # from config.json and could rebuild its own pre-tokenizer); checked against `tokenizers`.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TOY / "tokenizer.json"), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    raw = tokenizers.Tokenizer.from_file(str(TOY / "tokenizer.json"))

    rows, dropped = [], 0
    with open(TOY / "train.jsonl") as f:
        for line in f:
            record = json.loads(line)
            prompt = chat_prompt(record["question"])
            ids = tokenizer(prompt)["input_ids"]
            if len(rows) < 4:
                assert ids == raw.encode(prompt).ids, "transformers and tokenizers tokenise differently"
            if len(ids) > 512:  # data.max_prompt_tokens
                dropped += 1
                continue
            rows.append({"prompt": prompt, "gold": parse_gold(record["answer"])})
    prompts_per_step, group = 16, 8
    print(f"{len(rows)} problems ({dropped} prompts longer than 512 tokens dropped)", flush=True)
    # Exactly the problems of `steps` steps, in file order as trainer takes them (data.shuffle =
    # false): one pass, so TRL's epoch count is 1 and max_steps ends the run.
    rows = rows[: prompts_per_step * args.steps]

    model = AutoModelForCausalLM.from_pretrained(str(TOY), dtype=torch.float32)
    # trainer stops on <|im_end|> and <|endoftext|> (tinylora::tokenizer::STOP_TOKENS + config eos)
    stop = sorted({tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")})
    model.generation_config.eos_token_id = stop

    lora = peft.TinyLoraConfig(
        r=32,
        u=13,
        weight_tying=1.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        projection_seed=42,  # adapter.seed
        init_weights=True,  # v = 0, as trainer starts
    )

    config = trl.GRPOConfig(
        output_dir=args.out,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=args.seed,
        max_steps=args.steps,
        num_train_epochs=1,
        per_device_train_batch_size=prompts_per_step * group,  # TRL counts completions
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=group,
        num_iterations=1,  # grpo.ppo_epochs = 1, grpo.mini_batches = 1
        max_completion_length=96,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.4,
        scale_rewards="group",
        learning_rate=3e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=math.floor(0.05 * args.steps),  # trainer: floor(warmup_ratio x steps)
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch",
        shuffle_dataset=False,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    step_times, rollout_times = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.t0)

    class TimedGRPOTrainer(trl.GRPOTrainer):
        # generation + reward + advantages: the part trainer reports as rollout_time_s
        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            rollout_times.append(time.perf_counter() - t0)
            return out

    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=strict_reward,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Timer()],
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    print(f"trainable parameters: {trainable}", flush=True)
    assert trainable == 13, f"expected 13 trainable floats (u = 13, fully tied), got {trainable}"
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    for i, t in enumerate(step_times):
        h = logs[i] if i < len(logs) else {}
        print(
            f"step {i + 1}: {t:.2f} s (rollout {rollout_times[i]:.2f} s), reward "
            f"{h.get('reward', float('nan')):.3f}, completion length "
            f"{h.get('completions/mean_length', float('nan')):.1f}",
            flush=True,
        )
    timed = step_times[1:] if len(step_times) > 1 else step_times
    timed_rollout = rollout_times[1 : len(step_times)] if len(step_times) > 1 else rollout_times
    summary = {
        "versions": versions,
        "threads": torch.get_num_threads(),
        "steps": len(step_times),
        "step_times_s": step_times,
        "rollout_times_s": rollout_times[: len(step_times)],
        "median_step_s": statistics.median(timed),
        "median_rollout_s": statistics.median(timed_rollout),
        "median_update_s": statistics.median(
            [s - r for s, r in zip(step_times[1:] or step_times, timed_rollout)]
        ),
        "completion_len_mean": statistics.fmean(
            h.get("completions/mean_length", float("nan")) for h in logs[: len(step_times)]
        )
        if logs
        else None,
        "reward_mean": [h.get("reward") for h in logs],
    }
    print(
        f"TRL + PEFT: median {summary['median_step_s']:.2f} s/step over steps 2..{len(step_times)} "
        f"(rollout {summary['median_rollout_s']:.2f} s, rest {summary['median_update_s']:.2f} s)",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
