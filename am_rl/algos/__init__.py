"""Algorithms. Importing this package registers ``am_grpo`` (advantage estimator) and ``am_ppo_clip`` (policy loss)
in verl's registries."""

from am_rl.algos.am_grpo import AMGRPOConfig, compute_am_grpo_advantage, overlong_mask
from am_rl.algos.policy_loss import compute_am_ppo_clip_loss, max_logprob_gap

__all__ = ["AMGRPOConfig", "compute_am_grpo_advantage", "compute_am_ppo_clip_loss", "max_logprob_gap", "overlong_mask"]
