"""verl reward manager "am_remote": one /score_batch round for a whole step's batch.

Select it with verl's one key `reward_model.reward_manager=am_remote` (importing am_rl.rewards registers it);
service URL and data_source table come from the manager's kwargs or AM_RL_REWARD_URL / AM_RL_REWARD_TABLE.
"""

import json
import logging
import os
from collections import defaultdict
from typing import Any, Mapping

import torch
from verl import DataProto
from verl.workers.reward_manager import register
from verl.workers.reward_manager.abstract import AbstractRewardManager

from am_rl.rewards.client import RewardClient, RewardClientConfig
from am_rl.rewards.routing import RewardRouter

logger = logging.getLogger(__name__)


@register("am_remote")
class RemoteServiceRewardManager(AbstractRewardManager):
    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        service_url: str | None = None,
        reward_table: Mapping[str, str] | None = None,
        **client_options: Any,
    ):
        # compute_score is accepted for verl's constructor contract and unused: the service scores.
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        if reward_table is None and os.environ.get("AM_RL_REWARD_TABLE"):
            reward_table = json.loads(os.environ["AM_RL_REWARD_TABLE"])
        url = service_url or os.environ.get("AM_RL_REWARD_URL", RewardClientConfig.url)
        self.client = RewardClient(RewardClientConfig(url=url, **client_options))
        self.router = RewardRouter(reward_table)

    def __call__(self, data: DataProto, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        from_rm = self._extract_reward_from_rm_scores(data, return_dict)
        if from_rm is not None:
            return from_rm
        prompt_len = data.batch["prompts"].shape[-1]
        valid_lengths = data.batch["attention_mask"][:, prompt_len:].sum(dim=-1)  # (bs,)
        responses = data.batch["responses"]  # (bs, response_length)
        data_sources = data.non_tensor_batch[self.reward_fn_key]
        extra_infos = data.non_tensor_batch.get("extra_info", [None] * len(data))
        items = []
        for i in range(len(data)):
            text = self.tokenizer.decode(responses[i][: int(valid_lengths[i])], skip_special_tokens=True)
            truth = data.non_tensor_batch["reward_model"][i].get("ground_truth")
            items.append(self.router.item(data_sources[i], text, truth, extra_infos[i]))
        results = self.client.score_batch_sync(items)

        reward_tensor = torch.zeros_like(responses, dtype=torch.float32)  # (bs, response_length)
        extra: dict[str, list] = defaultdict(list)
        printed: dict[str, int] = defaultdict(int)
        for i, (item, result) in enumerate(zip(items, results)):
            reward_tensor[i, int(valid_lengths[i]) - 1] = result.score
            extra["acc"].append(result.score)
            extra["reward_cached"].append(result.cached)
            if printed[data_sources[i]] < self.num_examine:
                printed[data_sources[i]] += 1
                logger.info(
                    "[%s] %s score=%s details=%s", data_sources[i], item["reward_type"], result.score, result.details
                )
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": dict(extra)}
        return reward_tensor
