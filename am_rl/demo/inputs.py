"""What ``null`` means in the demo recipe: ``actor_rollout_ref.model.path`` → the cached tiny model after its SFT
warm-up; ``data.train_files`` / ``data.val_files`` → arithmetic parquet files written once under the run's directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from am_rl.data.arithmetic import ArithmeticTask
from am_rl.demo.data import write_arithmetic_data
from am_rl.demo.warmup import WarmupConfig, ensure_warm_model
from am_rl.models.tiny import ensure_tiny_model

logger = logging.getLogger(__name__)


def demo_task(cfg: DictConfig) -> ArithmeticTask:
    s = cfg.am_rl
    return ArithmeticTask(s.max_operand, s.ops, s.max_second_operand, s.operands, s.held_out_percent)


def demo_model(cfg: DictConfig) -> Path:
    """The tiny model after its SFT warm-up on the task's train split (built once, cached)."""
    base = ensure_tiny_model()
    w = cfg.am_rl.warmup
    if w.steps == 0:
        return base
    return ensure_warm_model(base, WarmupConfig(w.steps, w.batch_size, w.lr, w.seed, demo_task(cfg)))


def with_demo_inputs(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every null input the demo knows how to make filled in; other values are kept."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    if not cfg.actor_rollout_ref.model.path:
        cfg.actor_rollout_ref.model.path = str(demo_model(cfg))
        logger.info("model: %s", cfg.actor_rollout_ref.model.path)
    if not cfg.data.train_files or not cfg.data.val_files:
        train, val = write_arithmetic_data(
            Path(cfg.trainer.default_local_dir) / "data",
            demo_task(cfg),
            train=cfg.am_rl.train_size,
            val=cfg.am_rl.val_size,
            train_eval=cfg.am_rl.train_eval_size,
        )
        cfg.data.train_files = cfg.data.train_files or str(train)
        cfg.data.val_files = cfg.data.val_files or str(val)
    return cfg
