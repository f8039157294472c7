"""Helpers for the GPU-shape tests: the composed smoke config, verl batches, and a local stand-in for Ray actors."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from verl import DataProto

from am_rl.config.load import compose


def smoke_config(model: Path, data_dir: Path, balancer_url: str | None = None, overrides=()) -> DictConfig:
    cfg = compose(
        "gpu_smoke",
        [
            f"actor_rollout_ref.model.path={model}",
            f"data.train_files={data_dir / 'train.parquet'}",
            f"data.val_files={data_dir / 'val.parquet'}",
            *overrides,
        ],
    )
    OmegaConf.set_struct(cfg, False)
    if balancer_url:
        cfg.am_rl.balancer.url = balancer_url
    OmegaConf.resolve(cfg)
    return cfg


def rollout_batch(cfg: DictConfig, tokenizer: Any, step: int) -> DataProto:
    """What verl's trainer hands the agent-loop manager: a step's prompts with uids, repeated n times interleaved."""
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.dataset.rl_dataset import collate_fn

    dataset = create_rl_dataset(cfg.data.train_files, cfg.data, tokenizer, None, is_train=True)
    rows = collate_fn([dataset[i] for i in range(cfg.data.train_batch_size)])
    batch = DataProto.from_single_dict(rows)
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
    gen = batch.select(non_tensor_batch_keys=list(batch.non_tensor_batch.keys()))
    gen.batch = None
    gen.meta_info["global_steps"] = step
    return gen.repeat(repeat_times=cfg.actor_rollout_ref.rollout.n, interleave=True)


class LocalActor:
    """Stands in for a Ray actor handle around a local object: ``handle.method.remote(...)`` returns the coroutine
    (Ray's ObjectRef is awaitable the same way). Records the uids each call received."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.received: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.target, name)
        actor = self

        class Remote:
            @staticmethod
            def remote(batch: DataProto, *args, **kwargs):
                actor.received.append(list(batch.non_tensor_batch["uid"]))
                return method(batch, *args, **kwargs)

        return Remote()
