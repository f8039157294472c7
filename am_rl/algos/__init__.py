"""Algorithms. Importing this package registers ``am_grpo`` in verl's advantage-estimator registry."""

from am_rl.algos.am_grpo import AMGRPOConfig, compute_am_grpo_advantage, overlong_mask

__all__ = ["AMGRPOConfig", "compute_am_grpo_advantage", "overlong_mask"]
