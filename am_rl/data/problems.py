"""verl-schema parquet rows as the CPU demo's problems, and a per-step batch sampler for its loop.

The demo's loop needs from a problem only ``messages()`` (the chat prompt) and ``answer`` (scored with the recipe's
``am_rl.reward.reward_type``), the interface of ``am_rl.data.arithmetic.Problem``. Batches are drawn epoch by epoch
without replacement, as a pure function of (seed, step), so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from am_rl.data.report import StageReport
from am_rl.data.rows import read_rows, valid_rows
from am_rl.rewards.routing import RewardRouter


@dataclass(frozen=True)
class DatasetProblem:
    row_id: str  # extra_info.row_id, the id every pipeline report uses
    data_source: str
    prompt: tuple[tuple[str, str], ...]  # (role, content) of each chat message, as stored in the parquet
    answer: str  # reward_model.ground_truth

    def messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.prompt]


def load_problems(paths: str | Path | Sequence[str | Path], reward_type: str = "math") -> list[DatasetProblem]:
    """Every row of the parquet file(s) as a problem. Raises ValueError naming the rows that are malformed or that
    the demo could not score (another reward type than `reward_type`)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    router = RewardRouter()
    report = StageReport("load")
    problems = []
    for path in paths:
        for row, rt in valid_rows(read_rows(path), router, report, source=Path(path).stem):
            if rt != reward_type:
                report.drop(row["extra_info"]["row_id"], "wrong_reward_type", f"{rt} (the run scores {reward_type})")
                continue
            problems.append(
                DatasetProblem(
                    row_id=row["extra_info"]["row_id"],
                    data_source=row["data_source"],
                    prompt=tuple((m["role"], m["content"]) for m in row["prompt"]),
                    answer=row["reward_model"]["ground_truth"],
                )
            )
    if report.dropped:
        shown = "; ".join(f"{d.row_id}: {d.reason} {d.detail}" for d in report.dropped[:5])
        raise ValueError(f"{len(report.dropped)} row(s) of {[str(p) for p in paths]} cannot be trained on: {shown}")
    if not problems:
        raise ValueError(f"no rows in {[str(p) for p in paths]}")
    return problems


class ProblemSampler:
    """``sampler(step)`` -> the batch of training step ``step`` (1-based), like GRPOTrainer.train_problems."""

    def __init__(self, problems: Sequence[DatasetProblem], batch_size: int, seed: int):
        if not problems or batch_size < 1:
            raise ValueError(f"need problems and batch_size >= 1, got {len(problems)} problems, batch {batch_size}")
        self.problems = list(problems)
        self.batch_size = batch_size
        self.seed = seed

    def __call__(self, step: int) -> list[DatasetProblem]:
        n = len(self.problems)
        batch = []
        for i in range((step - 1) * self.batch_size, step * self.batch_size):
            epoch, position = divmod(i, n)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            batch.append(self.problems[order[position]])
        return batch
