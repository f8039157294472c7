"""Trainer side of the reward service: async batch client, verl compute_score, and the "am_remote" verl
reward manager (registered on import)."""

from am_rl.rewards.client import RewardClient, RewardClientConfig, RewardRequestError, RewardServiceError
from am_rl.rewards.scoring import compute_score, compute_score_batch, configure
from am_rl.rewards.manager import RemoteServiceRewardManager
from am_rl.rewards.routing import DEFAULT_TABLE, RewardRouter

__all__ = [
    "DEFAULT_TABLE", "RemoteServiceRewardManager", "RewardClient", "RewardClientConfig", "RewardRequestError",
    "RewardRouter", "RewardServiceError", "compute_score", "compute_score_batch", "configure",
]
