"""verl's agent-loop manager with am_rl's dispatch: shuffle → verl's chunked dispatch → restore, every sample
sent to the load balancer. Selected by ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` (a verl
config hook).

Overlong samples and ``am_grpo``: verl calls advantage estimators with ``token_level_rewards``, ``response_mask``,
``index`` and ``config`` only, so a per-sample finish reason cannot be passed to the estimator as an argument. What
does reach it is the response mask, and ``am_grpo`` counts a response as overlong when its mask sum reaches the
padded response width L (= ``rollout.response_length``). That equals "finish reason ``length``" exactly when every
request's max_tokens is L, which the GPU config checks guarantee (``max_model_len`` leaves room for L after the
longest prompt). ``check_truncation`` verifies it on every batch from the finish reasons our client records, and
fails the step if a truncated sample would reach the estimator looking complete.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager
from verl.utils.ray_utils import auto_await

from am_rl.config.validate import ConfigError
from am_rl.trainer.balancer_control import API_KEY_ENV
from am_rl.trainer.server_client import BalancerServerClient
from am_rl.trainer.shuffle import restore_order, shuffle_for_dispatch

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)  # the one line per rollout below, in verl's driver whose root logger stays at WARNING


class TruncationMismatch(RuntimeError):
    """A sample ended with finish reason ``length`` but am_grpo would not see it as overlong."""


@dataclass(frozen=True)
class TruncationCounts:
    truncated: int  # finish reason "length"
    full_width: int  # response fills all L positions (what am_grpo counts as overlong)


def check_truncation(output: DataProto) -> TruncationCounts:
    """Compare the engine's finish reasons with the response lengths am_grpo will read; raise on a truncated sample
    shorter than the response width."""
    mask = output.batch["response_mask"]  # (bs, L)
    lengths = mask.sum(dim=-1).cpu().numpy()  # (bs,)
    width = mask.shape[-1]
    truncated = np.asarray(output.non_tensor_batch["truncated"], dtype=bool)  # (bs,)
    missed = np.flatnonzero(truncated & (lengths < width))
    if len(missed):
        raise TruncationMismatch(
            f"{len(missed)} sample(s) were cut by max_tokens with fewer than response_length={width} tokens "
            f"(rows {missed[:8].tolist()}, lengths {lengths[missed[:8]].tolist()}): am_grpo would score them as "
            "complete. Raise actor_rollout_ref.rollout.max_model_len to >= max_prompt_length + max_response_length."
        )
    return TruncationCounts(truncated=int(truncated.sum()), full_width=int((lengths >= width).sum()))


class AMAgentLoopManager(AgentLoopManager):
    def __init__(self, config: Any, llm_client: Any, teacher_client: Any = None, reward_loop_worker_handles=None):
        section = config.am_rl
        if not section.balancer.url:
            raise ConfigError("am_rl.balancer.url is not set: am_rl.trainer.run starts the balancer and sets it")
        client = BalancerServerClient(
            config,
            balancer_url=section.balancer.url,
            max_concurrency=section.balancer.max_concurrency,
            request_timeout_s=section.balancer.request_timeout_s,
            length_hints=section.balancer.length_hints,
            # A standalone balancer's key (recipes/slurm) is in every Ray process's environment only, never in the
            # config, which verl prints.
            api_key=os.environ.get(API_KEY_ENV) or None,
        )
        super().__init__(config, client, teacher_client, reward_loop_worker_handles)
        self.shuffle = bool(section.shuffle)
        self.shuffle_seed = int(section.shuffle_seed)
        self.rollout_data_dir = config.trainer.get("rollout_data_dir", None)

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        """Shuffle the B·n rows, let verl chunk them over its workers, restore verl's order on the way back."""
        start = time.monotonic()
        step = int(prompts.meta_info.get("global_steps", 0))
        validate = bool(prompts.meta_info.get("validate", False))
        if not self.shuffle:
            output = await super().generate_sequences(prompts)
        else:
            # Validation draws from its own stream, so evaluating never shifts a training step's permutation.
            shuffled, perm = shuffle_for_dispatch(prompts, self.shuffle_seed + (1 << 20) * validate, max(step, 0))
            output = restore_order(await super().generate_sequences(shuffled), perm)
        counts = check_truncation(output)
        log_rollout(prompts.meta_info, output, counts, time.monotonic() - start)
        if self.rollout_data_dir and not validate:
            save_rollout_tokens(self.rollout_data_dir, step, prompts, output)
        return output


def save_rollout_tokens(directory: str, step: int, prompts: DataProto, output: DataProto) -> None:
    """``<trainer.rollout_data_dir>/step_<N>.pt``: per sample, the token ids step N trains on (the left-padded prompt
    and its attention mask, the response and its mask), its score and its group id, so that an update can be checked
    against the samples exactly (tests/am_rl/trainer/test_demo_on_verl.py). Ids as int32 and masks as bool keep it
    about the size of verl's JSONL of the same step.

    verl's JSONL beside it holds decoded text, which does not give these ids back: an engine may sample a split of a
    string that the tokenizer would encode differently. Recomputed from the text, 14% of one chain-task update's
    parameter signs disagreed with verl's update; from these ids, none did (bench/results/heldout_research.md).
    """
    batch = output.batch
    width = batch["prompts"].shape[1]
    record = {
        "prompts": batch["prompts"].to(torch.int32).cpu(),  # (bs, P), left-padded
        "prompt_mask": batch["attention_mask"][:, :width].bool().cpu(),  # (bs, P)
        "responses": batch["responses"].to(torch.int32).cpu(),  # (bs, L)
        "response_mask": batch["response_mask"].bool().cpu(),  # (bs, L)
        "uid": np.asarray(prompts.non_tensor_batch["uid"]).tolist(),  # (bs,) group ids
    }
    if "rm_scores" in batch.keys():
        record["scores"] = batch["rm_scores"].sum(dim=-1).float().cpu()  # (bs,)
    os.makedirs(directory, exist_ok=True)
    torch.save(record, os.path.join(directory, f"step_{step}.pt"))


def log_rollout(meta: dict, output: DataProto, counts: TruncationCounts, seconds: float) -> None:
    """One line per rollout: what verl's console logger spreads over a hundred metrics, the few a user watches."""
    lengths = output.batch["response_mask"].sum(dim=-1).float()  # (bs,)
    scores = output.batch["rm_scores"].sum(dim=-1) if "rm_scores" in output.batch.keys() else None  # (bs,)
    reward = f"reward {scores.mean():.3f}, accuracy {(scores >= 1).float().mean():.3f}, " if scores is not None else ""
    logger.info(
        "%s %s: %d samples in %.1fs (%.0f tok/s), %sresponse length %.1f, %d overlong",
        "validation at step" if meta.get("validate") else "step",
        meta.get("global_steps"),
        len(output),
        seconds,
        float(lengths.sum()) / max(seconds, 1e-9),
        reward,
        float(lengths.mean()),
        counts.truncated,
    )
