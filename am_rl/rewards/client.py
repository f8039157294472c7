"""Async batch client of the reward service: chunked /score_batch calls with bounded concurrency, retries
with exponential backoff, timeouts, and errors that say which side failed."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
from pydantic import TypeAdapter

from reward_server.types import ScoreBatchResponse, ScoreItem, ScoreResult

logger = logging.getLogger(__name__)

_ITEMS = TypeAdapter(list[ScoreItem])


class RewardServiceError(RuntimeError):
    """The reward service could not score (down, overloaded, infra errors) after all retries."""


class RewardRequestError(ValueError):
    """The service rejected our request (4xx): a bug on the trainer side, retrying cannot help."""


@dataclass
class RewardClientConfig:
    url: str = "http://127.0.0.1:8000"
    chunk_size: int = 256  # items per /score_batch request
    max_concurrency: int = 8  # /score_batch requests in flight at once
    timeout_s: float = 900.0  # per request: a chunk of slow code items can take minutes
    connect_timeout_s: float = 5.0
    retries: int = 4  # extra attempts for a chunk (transport errors, 5xx, per-item infra errors)
    backoff_s: float = 0.5  # first retry delay, doubled per retry
    backoff_max_s: float = 8.0


class RewardClient:
    def __init__(self, config: RewardClientConfig):
        self.config = config
        self.requests_sent = 0  # /score_batch POSTs, retries included: more than chunks means the service struggles

    async def score_batch(self, items: Sequence[ScoreItem | dict[str, Any]]) -> list[ScoreResult]:
        """Score `items` in order; raises RewardServiceError rather than return an unscored item."""
        parsed = _ITEMS.validate_python(list(items))
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
        limits = httpx.Limits(max_connections=cfg.max_concurrency)
        gate = asyncio.Semaphore(cfg.max_concurrency)
        results: list[ScoreResult | None] = [None] * len(parsed)
        async with httpx.AsyncClient(base_url=cfg.url, timeout=timeout, limits=limits) as http:

            async def run_chunk(start: int) -> None:
                async with gate:
                    chunk = parsed[start : start + cfg.chunk_size]
                    for offset, result in enumerate(await self._score_chunk(http, chunk)):
                        results[start + offset] = result

            await asyncio.gather(*(run_chunk(s) for s in range(0, len(parsed), cfg.chunk_size)))
        return results  # type: ignore[return-value]

    async def _score_chunk(self, http: httpx.AsyncClient, chunk: list[ScoreItem]) -> list[ScoreResult]:
        cfg = self.config
        results: list[ScoreResult | None] = [None] * len(chunk)
        todo = list(range(len(chunk)))
        delay = cfg.backoff_s
        last_error = ""
        for attempt in range(cfg.retries + 1):
            if attempt:
                logger.warning(
                    "reward service: retry %d/%d for %d item(s) in %.1fs (%s)",
                    attempt,
                    cfg.retries,
                    len(todo),
                    delay,
                    last_error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, cfg.backoff_max_s)
            body = {"items": [chunk[i].model_dump(mode="json") for i in todo]}
            self.requests_sent += 1
            try:
                response = await http.post("/score_batch", json=body)
            except httpx.TransportError as e:
                last_error = f"{type(e).__name__}: {e} ({cfg.url})"
                continue
            if 400 <= response.status_code < 500:
                raise RewardRequestError(
                    f"reward service rejected the batch ({response.status_code}): {response.text[:2000]}"
                )
            if response.status_code != 200:
                last_error = f"HTTP {response.status_code}: {response.text[:500]}"
                continue
            failed = []
            for i, result in zip(todo, ScoreBatchResponse.model_validate_json(response.content).results):
                if result.status == "error":
                    failed.append(i)
                    last_error = result.error or "infra error"
                else:
                    results[i] = result
            todo = failed
            if not todo:
                return results  # type: ignore[return-value]
        raise RewardServiceError(
            f"reward service at {cfg.url} failed {len(todo)} of {len(chunk)} item(s) after {cfg.retries + 1} attempts: "
            f"{last_error}"
        )
