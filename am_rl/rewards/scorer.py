"""The one trainer-side scorer: verl samples routed by data_source, scored by the remote reward service.

Both users build it the same way: verl's reward loop (am_rl.rewards.loop_manager) from `reward.am_remote` in the
config, difficulty selection (am_rl.data.difficulty) from its --reward-url. What neither is given comes from the
environment, read here and nowhere else: AM_RL_REWARD_URL (Ray's runtime_env sets it in every reward worker),
AM_RL_REWARD_TABLE (a JSON object of data_source glob -> reward_type) and AM_RL_REWARD_API_KEY, the service's key.
The key is never taken from the config: verl prints its config and its runtime_env, so the key travels in the
environment Ray's processes inherit (the trainer sets it before Ray starts; the Slurm scripts before `ray start`).
"""

import json
import os
from typing import Any, Mapping, Sequence

from am_rl.rewards.client import RewardClient, RewardClientConfig
from am_rl.rewards.routing import RewardRouter
from reward_server.auth import api_key_from_env
from reward_server.types import ScoreResult

URL_ENV = "AM_RL_REWARD_URL"
TABLE_ENV = "AM_RL_REWARD_TABLE"


class RewardScorer:
    def __init__(self, url: str | None = None, table: Mapping[str, str] | None = None, **client_options: Any):
        """`client_options` are RewardClientConfig's fields (chunk_size, timeout_s, retries, ...)."""
        if table is None and os.environ.get(TABLE_ENV):
            table = json.loads(os.environ[TABLE_ENV])
        self.router = RewardRouter(table)
        url = url or os.environ.get(URL_ENV) or RewardClientConfig.url
        self.client = RewardClient(RewardClientConfig(url=url, api_key=api_key_from_env(), **client_options))

    def item(self, data_source: str, response: str, ground_truth: Any, extra_info: Mapping | None = None) -> dict:
        """The /score item for one sample; raises ValueError for a data_source the table does not route."""
        return self.router.item(data_source, response, ground_truth, extra_info)

    async def score(self, items: Sequence[dict]) -> list[ScoreResult]:
        """Scores `items` (from `item`) in order; raises RewardServiceError rather than return an unscored one. An
        item over an input limit of the service comes back status "rejected", score 0 (counted in
        `client.rejected`)."""
        return await self.client.score_batch(items)
