"""Run the CPU shape end to end: model (+ warm-up), services, GRPO loop, artefacts."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from omegaconf import DictConfig

from am_rl.cpu.services import start_services
from am_rl.cpu.trainer import GRPOTrainer
from am_rl.cpu.warmup import WarmupConfig, ensure_warm_model
from am_rl.data.problems import ProblemSampler, load_problems
from am_rl.models.tiny import ensure_tiny_model

logger = logging.getLogger(__name__)


def resolve_model(cfg: DictConfig) -> Path:
    if cfg.actor_rollout_ref.model.path:
        return Path(cfg.actor_rollout_ref.model.path)
    base = ensure_tiny_model()
    w = cfg.am_rl.warmup
    if w.steps == 0:
        return base
    return ensure_warm_model(
        base,
        WarmupConfig(steps=w.steps, batch_size=w.batch_size, lr=w.lr, max_operand=cfg.am_rl.max_operand, seed=w.seed),
    )


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(cfg: DictConfig) -> dict:
    # SIGTERM (Slurm, `kill`) unwinds like Ctrl-C, so every child process is stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # data.train_files (a verl-schema parquet from `python -m am_rl.data`) replaces the synthetic arithmetic stream;
    # loaded before the services start, so a bad file fails in seconds.
    train_files = cfg.data.get("train_files")
    sampler = None
    if train_files:
        problems = load_problems(train_files, reward_type=cfg.am_rl.reward.reward_type)
        sampler = ProblemSampler(problems, cfg.data.train_batch_size, cfg.trainer.seed)
    model_dir = resolve_model(cfg)
    out_dir = Path(cfg.trainer.default_local_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with start_services(cfg, model_dir, out_dir / "logs") as endpoints:
        summary = asyncio.run(GRPOTrainer(cfg, model_dir, endpoints, problems=sampler).fit())
    logger.info(
        "done: held-out accuracy %.3f -> %.3f over %d steps; curve %s",
        summary["initial_val_accuracy"],
        summary["final_val_accuracy"],
        summary["steps"],
        out_dir / "learning_curve.png",
    )
    return summary
