"""The pipeline's numbers: wall time per stage and the held-out accuracy of the model each stage leaves, as JSON and a
short Markdown table beside it (``bench/results/pipeline.json`` / ``.md`` for the committed full run)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from am_rl.demo.data import HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE
from am_rl.pipeline.config import PipelineConfig

# Whose accuracy a stage's result holds: the stages that leave a new model.
MODEL_OF_STAGE = {
    "distill": "teacher",
    "sft": "SFT student",
    "stage1": "after RL stage 1",
    "stage2": "after RL stage 2",
}


def markdown(payload: dict) -> str:
    lines = [
        "| stage | wall s | model | held-out accuracy | train-fact accuracy |",
        "|---|---:|---|---:|---:|",
    ]
    for name, stage in payload["stages"].items():
        acc = stage["accuracy"]
        held, train = (f"{acc[s]:.3f}" if s in acc else "" for s in (HELD_OUT_SOURCE, TRAIN_EVAL_SOURCE))
        lines.append(f"| {name} | {stage['wall_s']:.1f} | {MODEL_OF_STAGE.get(name, '')} | {held} | {train} |")
    lines.append(f"| **total** | {payload['total_wall_s']:.1f} | | | |")
    reused = [name for name, stage in payload["stages"].items() if stage["cached"]]
    if reused:
        lines.append(f"\nWall times are each stage's own run; this invocation reused: {', '.join(reused)}.")
    return "\n".join(lines)


def write_results(cfg: PipelineConfig, results: dict, wall_s: float) -> dict:
    """Write ``cfg.results`` (or ``<run_dir>/pipeline.json``) and its .md; returns the payload and the table."""
    stages = {name: dataclasses.asdict(r) for name, r in results.items()}
    payload = {
        "what": "make pipeline: teacher -> distill -> SFT (verl) -> select -> RL stage 1 -> stage 2 (verl), tiny "
        "Qwen2 on arithmetic, CPU; accuracy = mean pass rate over eval_k samples at temperature 0.6, top-p 0.95",
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg())},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        # every stage's wall time when it ran: the cost from a fresh run directory, whatever this invocation reused
        "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
        "invocation_wall_s": round(wall_s, 1),  # this invocation (cached stages cost ~0)
        "stage_wall_s": {name: s["wall_s"] for name, s in stages.items()},
        "held_out_accuracy": {MODEL_OF_STAGE[n]: s["accuracy"][HELD_OUT_SOURCE] for n, s in stages.items()
                              if n in MODEL_OF_STAGE},  # fmt: skip
        "train_accuracy": {MODEL_OF_STAGE[n]: s["accuracy"][TRAIN_EVAL_SOURCE] for n, s in stages.items()
                           if n in MODEL_OF_STAGE},  # fmt: skip
        "stages": stages,
    }
    path = Path(cfg.results) if cfg.results else Path(cfg.run_dir) / "pipeline.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(payload)
    path.with_suffix(".md").write_text(f"# make pipeline\n\n{payload['what']}.\n\n{table}\n")
    return {**payload, "table": table}
