"""Checkpoints of the CPU loop: ``<default_local_dir>/global_step_<N>/`` (verl's layout) with the model, the
optimizer state, the metrics so far and the resolved config."""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from am_rl.cpu.actor import Actor

_STEP_DIR = re.compile(r"global_step_(\d+)$")


def save_checkpoint(out_dir: Path, step: int, actor: Actor, cfg: DictConfig, history: list, evals: list) -> Path:
    directory = out_dir / f"global_step_{step}"
    actor.save(directory)
    (directory / "state.json").write_text(json.dumps({"step": step, "history": history, "evals": evals}))
    OmegaConf.save(cfg, directory / "config.yaml", resolve=True)
    return directory


def find_resume_dir(resume: str | None, out_dir: Path) -> Path | None:
    """``resume``: None (fresh start), "auto" (latest checkpoint in out_dir, if any), or a checkpoint directory."""
    if resume is None:
        return None
    if resume == "auto":
        steps = [(int(m.group(1)), p) for p in out_dir.glob("global_step_*") if (m := _STEP_DIR.search(p.name))]
        complete = [(s, p) for s, p in steps if (p / "state.json").exists()]
        return max(complete)[1] if complete else None
    path = Path(resume)
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"trainer.resume={resume}: no checkpoint there (state.json missing)")
    return path


def load_checkpoint(directory: Path, actor: Actor) -> tuple[int, list, list]:
    actor.load(directory)
    state = json.loads((directory / "state.json").read_text())
    return state["step"], state["history"], state["evals"]
