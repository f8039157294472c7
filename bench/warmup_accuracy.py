"""Accuracy of the demo's SFT warm-up alone, before any RL: train and held-out pass@1 of the warmed-up tiny model.

    python -m bench.warmup_accuracy --operands 4 --max-operand 5 --steps 200 225 250

For each warm-up length, builds (or reuses) the cached warm model exactly as the demo does (``am_rl.demo.warmup``,
keyed by its config) and samples it in-process with transformers at the demo's evaluation settings (T 0.6, top-p 0.95,
4 samples per problem) on distinct train and held-out problems of the same split the demo uses. This is how a
warm-up length is picked so that RL starts where most GRPO groups have signal (bench/results/heldout_research.md).
Appends one row per length to ``bench/results/warmup_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from am_rl.data.arithmetic import ArithmeticTask, Problem, eval_problems
from am_rl.demo.warmup import WarmupConfig, ensure_warm_model
from am_rl.models.tiny import ensure_tiny_model
from reward_server.verifiers.math import answer_part, last_boxed

RESULTS = Path(__file__).resolve().parent / "results" / "warmup_accuracy.json"
SAMPLES, TEMPERATURE, TOP_P = 4, 0.6, 0.95  # the demo recipe's rollout.val_kwargs
BATCH = 256  # sequences per generate call


def pass_at_1(model_dir: Path, problems: list[Problem], max_new_tokens: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [tokenizer.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True) for p in problems]
    prompts = [p for p in prompts for _ in range(SAMPLES)]
    answers = [p.answer for p in problems for _ in range(SAMPLES)]
    torch.manual_seed(0)
    correct = 0
    for i in range(0, len(prompts), BATCH):
        batch = tokenizer(prompts[i : i + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=TEMPERATURE, top_p=TOP_P,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        for j, ids in enumerate(out[:, batch["input_ids"].shape[1] :]):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            correct += last_boxed(answer_part(text)) == answers[i + j]
    return correct / len(prompts)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.warmup_accuracy", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", required=True, help="warm-up lengths to build and evaluate")
    p.add_argument("--operands", type=int, default=4)
    p.add_argument("--max-operand", type=int, default=5)
    p.add_argument("--ops", default="+-")
    p.add_argument("--held-out-percent", type=int, default=25)
    p.add_argument("--problems", type=int, default=128, help="distinct problems per split")
    p.add_argument("--max-new-tokens", type=int, default=64, help="the recipe's data.max_response_length")
    # the schema's am_rl.warmup defaults: a different value is a different cached model
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    a = p.parse_args()

    task = ArithmeticTask(a.max_operand, a.ops, None, a.operands, a.held_out_percent)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for steps in a.steps:
        start = time.monotonic()
        model_dir = ensure_warm_model(ensure_tiny_model(), WarmupConfig(steps, a.batch_size, a.lr, 0, task))
        warmup_s = time.monotonic() - start
        row = {
            "task": {"max_operand": a.max_operand, "ops": a.ops, "operands": a.operands,
                     "held_out_percent": a.held_out_percent},
            "warmup": {"steps": steps, "batch_size": a.batch_size, "lr": a.lr, "model": model_dir.name},
            "train": pass_at_1(model_dir, eval_problems(a.problems, 2, task, "train"), a.max_new_tokens),
            "held_out": pass_at_1(model_dir, eval_problems(a.problems, 1, task, "held_out"), a.max_new_tokens),
            "problems_per_split": a.problems,
            "warmup_s": round(warmup_s, 1),  # 0-ish when the model was cached already
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
