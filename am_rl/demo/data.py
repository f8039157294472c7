"""Arithmetic problems as verl RL parquet files (the CPU demo's and the GPU smoke run's data), generated, no downloads.

    python -m am_rl.demo.data OUT_DIR [--train N] [--val N]   # writes OUT_DIR/train.parquet, val.parquet

Training rows are drawn from the train split only (``am_rl.data.arithmetic.is_held_out``). The validation file holds
distinct held-out problems (data source ``arithmetic_held_out``: never trained on, by RL or the warm-up) and distinct
train problems (``arithmetic_train``), so verl's validation reports both accuracies side by side.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from am_rl.data.arithmetic import OPS, Problem, eval_problems, sample_problems

# Data sources, all routed to the reward service's math verifier (am_rl.rewards.routing: "*arithmetic*").
TRAIN_SOURCE, HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE = "arithmetic", "arithmetic_held_out", "arithmetic_train"


@dataclass(frozen=True)
class ArithmeticTask:
    """The demo's task and split; the knobs are documented in ``am_rl.config.schema`` (``am_rl.*``)."""

    max_operand: int = 5
    ops: str = OPS
    held_out_percent: int = 15
    max_second_operand: Optional[int] = None


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
    out_dir: Path, task: ArithmeticTask = ArithmeticTask(), train: int = 64, val: int = 16, train_eval: int = 0
) -> tuple[Path, Path]:
    """(train.parquet, val.parquet) in ``out_dir``: ``train`` draws from the train split; ``val`` distinct held-out
    problems and ``train_eval`` distinct train problems."""
    split = (task.max_operand, task.ops)
    extra = {"held_out_percent": task.held_out_percent, "max_second": task.max_second_operand}
    train_split = "train" if task.held_out_percent else "all"
    train_rows = verl_rows(sample_problems(train, 0, *split, split=train_split, **extra), TRAIN_SOURCE)
    val_rows = verl_rows(eval_problems(val, 1, *split, "held_out" if task.held_out_percent else "all", **extra),
                         HELD_OUT_SOURCE)  # fmt: skip
    if train_eval:
        val_rows += verl_rows(eval_problems(train_eval, 2, *split, train_split, **extra), TRAIN_EVAL_SOURCE)
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
