"""Dry run of an SFT recipe: what verl's SFT trainer would do per step and per epoch, without a GPU.

    python -m am_rl.sft.dry_run --config-name sft_32b [--samples N] [key=value ...]

The recipe is composed as verl's trainer composes it (recipes/ first, then verl's own config package); verl's
optimizer and engine config classes are built from it, and the dataset class it names is imported, so a wrong key
fails here rather than on the cluster. Steps follow verl's data loader: a DistributedSampler and a per-rank batch,
both dropping the remainder. Token counts come from the SFT parquet's `extra_info.tokens` (written by distill);
without the file, `--samples N` gives the steps and the tokens per step are the upper bound (every sample max_length).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq
from omegaconf import DictConfig

from am_rl.config.load import RECIPES_DIR


def compose_sft(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.import_utils import load_extern_object

    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    omega_conf_to_dataclass(cfg.optim)
    omega_conf_to_dataclass(cfg.engine)
    if cfg.data.custom_cls.get("path"):
        load_extern_object(cfg.data.custom_cls.path, cfg.data.custom_cls.name)
    return cfg


@dataclass(frozen=True)
class SFTPlan:
    gpus: int
    dp_size: int  # data-parallel ranks: GPUs / Ulysses sequence-parallel size
    global_batch: int  # samples per optimizer step
    samples: int  # training samples after dropping those over max_length
    dropped_over_max_length: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    tokens_per_step: float  # mean over the data when its token counts are known, else the upper bound
    tokens_measured: bool  # whether tokens_per_step comes from the data
    max_length: int

    def report(self) -> str:
        what = "mean over the data" if self.tokens_measured else "upper bound: every sample max_length"
        return "\n".join([
            f"GPUs {self.gpus} (data-parallel {self.dp_size}), global batch {self.global_batch} samples",
            f"samples {self.samples} ({self.dropped_over_max_length} over max_length {self.max_length} dropped)",
            f"steps per epoch {self.steps_per_epoch}, total steps {self.total_steps}, "
            f"warm-up steps {self.warmup_steps}",
            f"tokens per step {self.tokens_per_step:,.0f} ({what}); per data-parallel rank "
            f"{self.tokens_per_step / self.dp_size:,.0f}",
        ])  # fmt: skip


def sample_tokens(path: str | Path) -> list[int]:
    """Token counts of the SFT parquet's samples (extra_info.tokens, distill's count of prompt + response)."""
    column = pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
    missing = sum(1 for info in column if not info or info.get("tokens") is None)
    if missing:
        raise ValueError(f"{path}: {missing} rows without extra_info.tokens (not written by am_rl.data distill)")
    return [int(info["tokens"]) for info in column]


def plan(cfg: DictConfig, samples: int | None = None) -> SFTPlan:
    gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    sp = cfg.engine.get("ulysses_sequence_parallel_size", 1)
    if gpus % sp:
        raise ValueError(f"{gpus} GPUs do not split into sequence-parallel groups of {sp}")
    dp = gpus // sp
    batch, max_length = cfg.data.train_batch_size, cfg.data.max_length
    if batch % dp:
        raise ValueError(f"data.train_batch_size={batch} is not a multiple of the data-parallel size {dp}")
    train = Path(str(cfg.data.train_files))
    if train.exists():
        tokens = sample_tokens(train)
        kept = [t for t in tokens if t <= max_length]
        dropped = len(tokens) - len(kept)
        n = len(kept)
        per_step = batch * sum(kept) / len(kept) if kept else 0.0
    elif samples is not None:
        n, dropped, per_step = samples, 0, float(batch * max_length)
    else:
        raise FileNotFoundError(
            f"no SFT data at data.train_files={train}: point it at distill's output or give --samples"
        )
    steps = (n // dp) // (batch // dp)  # DistributedSampler(drop_last) per rank, then full per-rank batches only
    total = cfg.trainer.total_training_steps or steps * cfg.trainer.total_epochs
    o = cfg.optim  # verl's FSDP engine: warm-up steps given, else int(ratio x total steps)
    warmup = o.lr_warmup_steps if o.lr_warmup_steps > 0 else int(o.lr_warmup_steps_ratio * total)
    return SFTPlan(gpus, dp, batch, n, dropped, steps, total, warmup, per_step, train.exists(), max_length)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m am_rl.sft.dry_run", description=__doc__.split("\n")[0])
    p.add_argument("--config-name", required=True, help="an SFT recipe in recipes/ (sft_32b, sft_7b_1node)")
    p.add_argument("--samples", type=int, default=None, help="training samples, when data.train_files does not exist")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    args = p.parse_args(argv)
    try:
        cfg = compose_sft(args.config_name, args.overrides)
        result = plan(cfg, args.samples)
    except (FileNotFoundError, ValueError) as e:
        print(f"dry run of {args.config_name}: error: {e}", file=sys.stderr)
        return 2
    o = cfg.optim
    print(f"{args.config_name}: verl SFT trainer, {cfg.model.path}, lr {o.lr} {o.lr_scheduler_type} "
          f"(warm-up ratio {o.lr_warmup_steps_ratio}, min lr ratio {o.min_lr_ratio}), "
          f"{cfg.trainer.total_epochs} epochs")
    print(result.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
