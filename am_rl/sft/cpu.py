"""verl's SFT trainer (``verl.trainer.sft_trainer``) on a CPU host, launched as on a cluster: torchrun, one rank.

What it needs beyond a recipe (``recipes/sft_tiny_cpu.yaml``): am_rl's CPU platform in the process
(``VERL_USE_EXTERNAL_MODULES`` imports it inside ``import verl``, ``VERL_PLATFORM=cpu`` selects it, and its
process-group shim replaces verl's ``cpu:gloo,cpu:gloo`` backend with plain gloo, and its FSDP engine for device
``cpu``, ``am_rl.trainer.cpu_engine``, computes the loss's log-probs without verl's per-token row loop: 8 steps of
the pipeline's SFT took 29 s with it and 347 s with verl's own engine, same loss and grad norm to the last digit).
The same variables the RL recipe sets for every Ray process (``recipes/platform/cpu.yaml``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from am_rl.config.load import RECIPES_DIR
from am_rl.trainer.platform_cpu import PLATFORM_NAME
from am_rl.trainer.run import PLUGINS_MODULE

REPO_ROOT = Path(__file__).resolve().parents[2]


def cpu_environment() -> dict[str, str]:
    """This process's environment plus what verl's SFT trainer needs on the CPU platform."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "VERL_USE_EXTERNAL_MODULES": PLUGINS_MODULE, "VERL_PLATFORM": PLATFORM_NAME,
            "PYTHONPATH": path}  # fmt: skip


def sft_command(config_name: str, overrides: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "verl.trainer.sft_trainer", "--config-path", str(RECIPES_DIR), "--config-name", config_name,
        *overrides,
    ]  # fmt: skip


def latest_hf_model(checkpoint_dir: Path) -> Path:
    """The Hugging Face model of the latest checkpoint verl's SFT trainer wrote (``checkpoint.save_contents`` with
    ``hf_model``): what vLLM serves and RL starts from."""
    tracker = checkpoint_dir / "latest_checkpointed_iteration.txt"
    if not tracker.exists():
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}: verl's SFT trainer wrote no {tracker.name}")
    hf = checkpoint_dir / f"global_step_{tracker.read_text().strip()}" / "huggingface"
    if not (hf / "model.safetensors").exists():
        raise FileNotFoundError(f"{hf} has no model.safetensors: does the recipe save hf_model?")
    return hf


def run_sft_cpu(checkpoint_dir: Path, overrides: Sequence[str], config_name: str = "sft_tiny_cpu") -> Path:
    """Train with verl's SFT trainer into ``checkpoint_dir`` (resumes there); returns the Hugging Face model."""
    cmd = sft_command(config_name, [f"trainer.default_local_dir={checkpoint_dir}", *overrides])
    subprocess.run(cmd, check=True, env=cpu_environment())
    return latest_hf_model(checkpoint_dir)
