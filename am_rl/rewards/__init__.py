"""Trainer side of the reward service: async batch client, verl compute_score, and the "am_remote" verl
reward managers (registered on import in both of verl's registries: the batch reward managers and the reward
loop)."""

from am_rl.rewards.client import RewardClient, RewardClientConfig, RewardRequestError, RewardServiceError
from am_rl.rewards.loop_manager import RemoteServiceLoopRewardManager
from am_rl.rewards.manager import RemoteServiceRewardManager
from am_rl.rewards.routing import DEFAULT_TABLE, RewardRouter
from am_rl.rewards.scoring import compute_score, compute_score_batch, configure

__all__ = [
    "DEFAULT_TABLE",
    "RemoteServiceLoopRewardManager",
    "RemoteServiceRewardManager",
    "RewardClient",
    "RewardClientConfig",
    "RewardRequestError",
    "RewardRouter",
    "RewardServiceError",
    "compute_score",
    "compute_score_batch",
    "configure",
]
