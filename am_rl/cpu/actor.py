"""The CPU actor: one policy-gradient update per rollout batch with verl's own policy-loss function."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config.optimizer import FSDPOptimizerConfig, build_optimizer

from am_rl.cpu.logprobs import response_logprobs

logger = logging.getLogger(__name__)


class Actor:
    """Holds the policy (a Hugging Face causal LM in fp32) and its optimizer."""

    def __init__(self, model_dir: str | Path, actor_cfg: DictConfig, pad_id: int):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.train()
        self.pad_id = pad_id
        self.cfg = actor_cfg
        # verl's own optimizer factory and config class, so `actor.optim` means here what it means to verl's FSDP
        # actor (optimizer/optimizer_impl, betas, weight_decay, override_optimizer_config).
        optim = omega_conf_to_dataclass(actor_cfg.optim, dataclass_type=FSDPOptimizerConfig)
        self.optimizer = build_optimizer(self.model.parameters(), optim)
        self.policy_loss_fn = get_policy_loss_fn(actor_cfg.policy_loss.loss_mode)
        # The policy-loss functions read clip settings and global_batch_info from verl's ActorConfig; this holds
        # the same keys (single process: no data-parallel batch info).
        self.loss_cfg = OmegaConf.create(
            {
                "clip_ratio": actor_cfg.clip_ratio,
                "clip_ratio_low": actor_cfg.get("clip_ratio_low", None),
                "clip_ratio_high": actor_cfg.get("clip_ratio_high", None),
                "clip_ratio_c": actor_cfg.get("clip_ratio_c", 3.0),
                "policy_loss": OmegaConf.to_container(actor_cfg.policy_loss),
                "global_batch_info": {},
            }
        )

    def update(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        advantages: torch.Tensor,
        rollout_logprobs: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One optimizer step on the whole batch (strict on-policy).

        ``advantages``: (B, R) from the estimator, R = longest response. ``rollout_logprobs`` (B, R): the engines'
        logprobs of the sampled tokens; their largest gap to the trainer's is logged as an on-policy health check.

        The "old" policy is the current one before this step (verl recomputes old_log_prob with the actor; with
        exactly one step per batch that equals the detached log-probs of this forward pass, so the ratio starts at 1
        and clipping never bites).
        """
        self.model.train()
        log_prob, mask = response_logprobs(self.model, prompts, responses, self.pad_id)  # (B, R), (B, R)
        pg_loss, metrics = self.policy_loss_fn(
            old_log_prob=log_prob.detach(),
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask,
            loss_agg_mode=self.cfg.loss_agg_mode,
            config=self.loss_cfg,
        )
        if rollout_logprobs is not None:
            metrics["onpolicy/max_logprob_diff"] = float(((log_prob.detach() - rollout_logprobs).abs() * mask).max())
        self.optimizer.zero_grad()
        pg_loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return {"actor/pg_loss": pg_loss.item(), "actor/grad_norm": grad_norm.item(), **metrics}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / "model", safe_serialization=True)
        torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        state = {}
        for shard in sorted((directory / "model").glob("*.safetensors")):
            state.update(load_file(shard))
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
