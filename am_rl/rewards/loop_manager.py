"""verl reward-loop manager "am_remote" (verl.experimental.reward_loop, what verl 0.9's trainer runs).

verl's reward loop calls `run_single` once per sample, all samples of a step concurrently; the coalescer turns
those calls into a few /score_batch requests. Select it with `reward.reward_manager.name=am_remote` once
am_rl.rewards is imported (am_rl's entry point does), or without that import through verl's importlib source:
`reward.reward_manager.source=importlib reward.reward_manager.module.path=<this file>
reward.reward_manager.name=RemoteServiceLoopRewardManager`. Options come from `reward.am_remote` in the config
({url, table, chunk_size, ...}: am_rl.rewards.scorer.RewardScorer's arguments).
"""

import asyncio
import logging

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from am_rl.rewards.scorer import RewardScorer
from reward_server.types import ScoreResult

logger = logging.getLogger(__name__)

COALESCE_WINDOW_S = 0.02  # how long the first waiting sample holds the door for the rest of the step
COALESCE_MAX = 4096


class Coalescer:
    """Gathers items submitted close together into one scorer.score call."""

    def __init__(self, scorer: RewardScorer):
        self.scorer = scorer
        self.batches_sent = 0
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._flush_task: asyncio.Task | None = None

    async def score(self, item: dict) -> ScoreResult:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= COALESCE_MAX:
            self._flush_now()
        elif self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(COALESCE_WINDOW_S)
        self._flush_task = None
        self._flush_now()

    def _flush_now(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            asyncio.create_task(self._send(batch))

    async def _send(self, batch: list[tuple[dict, asyncio.Future]]) -> None:
        self.batches_sent += 1
        try:
            results = await self.scorer.score([item for item, _ in batch])
        except Exception as e:  # every waiting sample sees the service's error
            logger.error("reward batch %d (%d samples) failed: %s", self.batches_sent, len(batch), e)
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        logger.info(
            "reward batch %d: %d samples; %d /score_batch requests so far; samples over the service's input limits "
            "so far, by field: %s",
            self.batches_sent,
            len(batch),
            self.scorer.client.requests_sent,
            dict(self.scorer.client.rejected),
        )
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


@register("am_remote")
class RemoteServiceLoopRewardManager(RewardManagerBase):
    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        self.scorer = RewardScorer(**(config.get("reward", {}).get("am_remote", None) or {}))
        self.coalescer = Coalescer(self.scorer)

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1]  # for multi-sequence outputs verl scores the last sequence
        response_ids = item.batch["responses"]  # (response_length,)
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        text = self.tokenizer.decode(response_ids[:valid], skip_special_tokens=True)
        request = self.scorer.item(
            item.non_tensor_batch["data_source"],
            text,
            item.non_tensor_batch["reward_model"]["ground_truth"],
            item.non_tensor_batch.get("extra_info", None),
        )
        result = await self.coalescer.score(request)
        # reward_rejected: 1 for a sample over an input limit of the service (scored 0); verl keeps it per sample
        # in the batch, its rollout dumps and its validation metrics.
        return {
            "reward_score": result.score,
            "reward_extra_info": {
                "acc": result.score,
                "reward_cached": result.cached,
                "reward_rejected": float(result.status == "rejected"),
            },
        }
