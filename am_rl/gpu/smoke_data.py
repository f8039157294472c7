"""The GPU smoke run's data: arithmetic problems (the CPU demo's) as verl RL parquet files, generated, no downloads.

    python -m am_rl.gpu.smoke_data OUT_DIR [--train N] [--val N]   # writes OUT_DIR/train.parquet, val.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from am_rl.data.arithmetic import make_problems

DATA_SOURCE = "arithmetic"  # routed to the reward service's math verifier (am_rl.rewards.routing)


def arithmetic_rows(count: int, seed: int, max_operand: int = 5) -> list[dict]:
    """``count`` rows in verl's RL dataset schema (data_source, chat prompt, ability, reward_model, extra_info)."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": p.messages(),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": p.answer},
            "extra_info": {"index": i, "question": p.question},
        }
        for i, p in enumerate(make_problems(count, seed=seed, max_operand=max_operand))
    ]


def write_smoke_data(out_dir: Path, train: int = 64, val: int = 16) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.parquet", out_dir / "val.parquet"
    for path, rows in zip(paths, (arithmetic_rows(train, seed=0), arithmetic_rows(val, seed=1)), strict=True):
        pd.DataFrame(rows).to_parquet(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m am_rl.gpu.smoke_data", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--val", type=int, default=16)
    a = p.parse_args()
    for path in write_smoke_data(a.out_dir, a.train, a.val):
        print(path)


if __name__ == "__main__":
    main()
