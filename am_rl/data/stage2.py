"""Stage-2 data (DESIGN.md §2): the stage-1 queries minus those the model solved k/k in stage 1, plus general-chat
and instruction-following sets mixed in given proportions.

Stage-1 logs are JSONL pass-rate records, one per query and rollout group: ``{"row_id": str, "k": int,
"passes": int, ...}`` -- the lines `select` writes, and what a training run logs per group. When a query has
several records (it was seen in several epochs), the last one counts: it measures the latest stage-1 policy.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from am_rl.data.report import StageReport
from am_rl.data.rows import read_rows, valid_rows
from am_rl.rewards.routing import RewardRouter


@dataclass(frozen=True)
class MixSpec:
    """A set to add: a verl-schema parquet (the output of ingest/clean) and how many of its rows to take."""

    path: Path
    ratio: float | None = None  # rows to add = round(ratio * stage-1 rows kept), e.g. 0.5
    count: int | None = None  # or an absolute number of rows

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.count is None):
            raise ValueError(f"mix {self.path}: give exactly one of ratio or count")
        if (self.ratio is not None and self.ratio < 0) or (self.count is not None and self.count < 0):
            raise ValueError(f"mix {self.path}: ratio/count must be >= 0")


def read_solved_counts(paths: list[Path], report: StageReport) -> dict[str, tuple[int, int]]:
    """row_id -> (passes, k) from the last record of each query; malformed records are reported."""
    latest: dict[str, tuple[int, int]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(tqdm(f, desc=f"stage2: read {Path(path).name}", unit="record"), start=1):
                if not line.strip():
                    continue
                where = f"{Path(path).name}:{number}"
                try:
                    record = json.loads(line)
                    rid, k, passes = record["row_id"], record["k"], record["passes"]
                    if not isinstance(k, int) or not isinstance(passes, int) or not 0 <= passes <= k:
                        raise ValueError(f"need integers 0 <= passes <= k, got passes={passes!r} k={k!r}")
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    report.drop(where, "bad_log_record", f"{type(e).__name__}: {e}")
                    continue
                if k > 0:  # k == 0: a record of a row that was passed through, not sampled
                    latest[str(rid)] = (passes, k)
    return latest


def build_stage2(
    stage1_rows: list[dict],
    log_paths: list[Path],
    mixes: tuple[MixSpec, ...] = (),
    seed: int = 0,
    router: RewardRouter | None = None,
) -> tuple[list[dict], StageReport]:
    router = router or RewardRouter()
    report = StageReport("stage2", rows_in=len(stage1_rows))
    rows = [row for row, _ in valid_rows(stage1_rows, router, report, source="stage1")]
    report.after["valid"] = len(rows)
    solved = read_solved_counts(log_paths, report)
    kept = []
    for row in rows:
        rid = row["extra_info"]["row_id"]
        passes, k = solved.get(rid, (0, 0))
        if k and passes == k:
            report.drop(rid, "solved_in_stage1", f"passed {passes}/{k}")
        else:
            kept.append(row)
    report.notes["stage1_rows_without_log_record"] = sum(r["extra_info"]["row_id"] not in solved for r in rows)
    report.after["unsolved"] = len(kept)

    rng = random.Random(seed)
    taken_ids = {r["extra_info"]["row_id"] for r in kept}
    base = len(kept)
    for mix in mixes:
        pool = [r for r, _ in valid_rows(read_rows(mix.path), router, report, source=Path(mix.path).stem)]
        fresh = []
        for r in pool:
            if r["extra_info"]["row_id"] in taken_ids:
                report.drop(r["extra_info"]["row_id"], "bad_row", f"row_id already used; skipped from {mix.path}")
            else:
                fresh.append(r)
        want = mix.count if mix.count is not None else round(mix.ratio * base)
        take = rng.sample(fresh, min(want, len(fresh)))
        if len(take) < want:
            report.notes.setdefault("mix_shortfall", {})[str(mix.path)] = {"wanted": want, "available": len(fresh)}
        taken_ids.update(r["extra_info"]["row_id"] for r in take)
        kept += take
        report.after[f"+{Path(mix.path).stem}"] = len(kept)

    rng.shuffle(kept)
    out = [{**r, "extra_info": {**r["extra_info"], "index": i}} for i, r in enumerate(kept)]
    report.rows_out = len(out)
    return out, report
