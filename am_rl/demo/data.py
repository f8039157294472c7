"""Arithmetic problems as verl RL parquet files (the CPU demo's and the GPU smoke run's data), generated, no downloads.

    python -m am_rl.demo.data OUT_DIR [--train N] [--val N]   # writes OUT_DIR/train.parquet, val.parquet

Training rows are drawn from the train split only (``am_rl.data.arithmetic.is_held_out``). The validation file holds
distinct held-out problems (data source ``arithmetic_held_out``: never trained on, by RL or the warm-up) and distinct
train problems (``arithmetic_train``), so verl's validation reports both accuracies side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from am_rl.data.arithmetic import ArithmeticTask, Problem, eval_problems, sample_problems

# The task when none is given (the GPU smoke run's data): a op b, operands 0..5, + - *, 15% held out.
SMOKE_TASK = ArithmeticTask(max_operand=5, held_out_percent=15)

# Data sources, all routed to the reward service's math verifier (am_rl.rewards.routing: "*arithmetic*").
TRAIN_SOURCE, HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE = "arithmetic", "arithmetic_held_out", "arithmetic_train"


def verl_rows(problems: list[Problem], data_source: str) -> list[dict]:
    """Rows in verl's RL dataset schema (data_source, chat prompt, ability, reward_model, extra_info)."""
    return [
        {
            "data_source": data_source,
            "prompt": p.messages(),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": p.answer},
            "extra_info": {"index": i, "question": p.question},
        }
        for i, p in enumerate(problems)
    ]


def write_arithmetic_data(
    out_dir: Path, task: ArithmeticTask = SMOKE_TASK, train: int = 64, val: int = 16, train_eval: int = 0
) -> tuple[Path, Path]:
    """(train.parquet, val.parquet) in ``out_dir``: ``train`` draws from the train split; ``val`` distinct held-out
    problems and ``train_eval`` distinct train problems."""
    train_split, val_split = ("train", "held_out") if task.held_out_percent else ("all", "all")
    train_rows = verl_rows(sample_problems(train, 0, task, train_split), TRAIN_SOURCE)
    val_rows = verl_rows(eval_problems(val, 1, task, val_split), HELD_OUT_SOURCE)
    if train_eval:
        val_rows += verl_rows(eval_problems(train_eval, 2, task, train_split), TRAIN_EVAL_SOURCE)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.parquet", out_dir / "val.parquet"
    for path, rows in zip(paths, (train_rows, val_rows), strict=True):
        pd.DataFrame(rows).to_parquet(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m am_rl.demo.data", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--val", type=int, default=16)
    a = p.parse_args()
    for path in write_arithmetic_data(a.out_dir, train=a.train, val=a.val):
        print(path)


if __name__ == "__main__":
    main()
