"""Trainer side of the reward service: the async batch client, data_source routing, the one scorer built from
both, and verl's reward-loop manager "am_remote" (registered in verl's reward loop on import)."""

from am_rl.rewards.client import RewardClient, RewardClientConfig, RewardRequestError, RewardServiceError
from am_rl.rewards.loop_manager import RemoteServiceLoopRewardManager
from am_rl.rewards.routing import DEFAULT_TABLE, RewardRouter
from am_rl.rewards.scorer import RewardScorer

__all__ = [
    "DEFAULT_TABLE",
    "RemoteServiceLoopRewardManager",
    "RewardClient",
    "RewardClientConfig",
    "RewardRequestError",
    "RewardRouter",
    "RewardScorer",
    "RewardServiceError",
]
