"""Rollout over several balancer processes (shards), each owning a subset of the engines (issue #17 item 3).

One balancer process relays ~0.1-0.4M tokens/s (bench/results/lb_relay_scaling.md); 512 engines make ~0.9M. So the
engines are split over K balancer processes and this client spreads the samples over them. Each sample goes to the
shard with the fewest samples this client has sent there and not seen finish (ties rotate): that is all a client
knows, and with every sample sent at once it is a per-sample round robin (bench/results/lb_sim_shards.md compares it
with one global balancer). A shard only moves sequences among its own engines; between shards nothing moves.

A shard that dies mid-step loses no sample: a stream that breaks after some tokens continues on another shard from
the prompt plus the tokens already received (the engines generate it token-exact, as the balancer's own failover
does), and a shard that refuses connections is skipped. A shard that failed gets no new samples for
``down_s``, then is tried again. Each attempt that fails counts; after ``max_failures`` for one sample it fails with
the last reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Sequence

from am_rl.rollout.admission import LongestFirstGate
from am_rl.rollout.client import RolloutClient, RolloutError, RolloutRejected, StreamBroken
from am_rl.rollout.priors import prompt_key
from am_rl.rollout.types import RolloutRequest, RolloutResult, RolloutStats

logger = logging.getLogger(__name__)


class ShardedRolloutClient:
    """``RolloutClient.generate`` over the balancer shards at ``base_urls`` (one URL: a plain single balancer)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        max_concurrency: int = 256,  # in-flight requests from this client, all shards together; the rest wait,
        # longest expected first (am_rl.rollout.admission)
        timeout_s: float = 600.0,  # per attempt, whole generation
        max_failures: int = 6,  # failed attempts (any shard) before a sample fails
        down_s: float = 5.0,  # a shard that failed gets no new samples for this long
        backoff_s: float = 0.5,  # wait before an attempt when every shard has failed recently
        api_key: str | None = None,
        client_cls: type[RolloutClient] = RolloutClient,  # per shard; a subclass may add fields to every body
    ) -> None:
        if not base_urls:
            raise ValueError("no balancer URL to send samples to")
        # Each shard's client fails at once (no retries of its own): another shard is the retry.
        self.shards = [client_cls(url, model, max_concurrency, timeout_s, max_retries=0, api_key=api_key)
                       for url in base_urls]  # fmt: skip
        self.max_failures = max_failures
        self.down_s = down_s
        self.backoff_s = backoff_s
        self.outstanding = [0] * len(self.shards)  # samples sent to each shard and not finished
        self.failovers = 0  # attempts that failed on one shard and went on elsewhere
        self._down_until = [0.0] * len(self.shards)
        self._turn = 0
        self._gate = LongestFirstGate(max_concurrency)  # the same start order as one balancer's client

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()

    async def __aenter__(self) -> ShardedRolloutClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _pick(self) -> int:
        """The live shard with the fewest outstanding samples; when every shard failed recently, all of them."""
        now = time.monotonic()
        n = len(self.shards)
        live = [s for s in range(n) if self._down_until[s] <= now] or list(range(n))
        start = self._turn % n
        self._turn += 1
        return min(live, key=lambda s: (self.outstanding[s], (s - start) % n))

    def _failed(self, shard: int, error: Exception) -> None:
        self._down_until[shard] = time.monotonic() + self.down_s
        self.failovers += 1
        logger.warning("balancer shard %s failed (%s); going on with another", self.shards[shard].base_url, error)

    async def generate(self, req: RolloutRequest, stats: RolloutStats | None = None) -> RolloutResult:
        """One sample, continued across shards if its shard dies; the result reads as one uninterrupted generation."""
        group = prompt_key(req.prompt_ids)
        async with self._gate.slot(req.expected_tokens, group, req.request_id):
            start = time.monotonic()
            tokens: list[int] = []  # from earlier attempts (extended in place: on_tokens reads it)
            logprobs: list[float] = []

            def on_tokens(n: int) -> None:  # this sample's progress, across attempts, for the admission order
                self._gate.order.progress(group, req.request_id, len(tokens) + n)

            attempt = req
            failures = 0
            while True:
                if all(until > time.monotonic() for until in self._down_until):
                    await asyncio.sleep(self.backoff_s)
                shard = self._pick()
                self.outstanding[shard] += 1
                try:
                    result = await self.shards[shard].generate_admitted(attempt, on_tokens)
                except RolloutRejected:
                    raise
                except RolloutError as e:
                    if isinstance(e, StreamBroken):
                        tokens += e.response_ids
                        logprobs += e.logprobs
                    failures += 1
                    if failures >= self.max_failures:
                        raise RolloutError(f"request {req.request_id}: {failures} attempts failed across"
                                           f" {len(self.shards)} balancer shard(s); last: {e}") from e  # fmt: skip
                    self._failed(shard, e)
                    if stats is not None:
                        stats.retries += 1
                    if len(tokens) >= req.max_tokens:  # it broke right after its last token
                        return RolloutResult(req.request_id, list(req.prompt_ids), tokens, logprobs, "length",
                                             time.monotonic() - start)  # fmt: skip
                    hint = req.expected_tokens
                    attempt = dataclasses.replace(
                        req, request_id=f"{req.request_id}~s{failures}", prompt_ids=list(req.prompt_ids) + tokens,
                        max_tokens=req.max_tokens - len(tokens),
                        # the continuation's own output: what the hint expects beyond the tokens already received
                        expected_tokens=hint - len(tokens) if hint is not None and len(tokens) < hint else None,
                    )  # fmt: skip
                    continue
                finally:
                    self.outstanding[shard] -= 1
                return RolloutResult(
                    request_id=req.request_id,
                    prompt_ids=list(req.prompt_ids),
                    response_ids=tokens + result.response_ids,
                    logprobs=logprobs + result.logprobs,
                    finish_reason=result.finish_reason,
                    latency_s=time.monotonic() - start,
                )

    async def generate_all(self, requests: Sequence[RolloutRequest]) -> tuple[list[RolloutResult], RolloutStats]:
        """Every request concurrently; results in the order of ``requests``. Fails if any sample fails."""
        stats = RolloutStats(requests=len(requests))
        start = time.monotonic()
        tasks = [asyncio.create_task(self.generate(r, stats)) for r in requests]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one lost sample breaks its GRPO group: stop the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        stats.wall_s = time.monotonic() - start
        stats.generated_tokens = sum(len(r.response_ids) for r in results)
        stats.latencies_s = [r.latency_s for r in results]
        return list(results), stats
