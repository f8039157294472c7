"""Rollout client: single-sample generation requests to an OpenAI-compatible endpoint (the load balancer)."""

from am_rl.rollout.client import RolloutClient, RolloutError, RolloutRejected
from am_rl.rollout.types import RolloutRequest, RolloutResult, RolloutStats

__all__ = ["RolloutClient", "RolloutError", "RolloutRejected", "RolloutRequest", "RolloutResult", "RolloutStats"]
