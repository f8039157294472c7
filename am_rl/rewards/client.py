"""Async batch client of the reward service: chunked /score_batch calls with bounded concurrency, retries
with exponential backoff, timeouts, and errors that say which side failed.

A sample over one of the service's input limits costs only itself: the service answers it "rejected" (score 0) in
its batch, and a chunk whose body is too large as a whole (413) is halved until the one item that is too large alone
is known and scored 0 the same way. `RewardClient.rejected` counts them by field."""

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import httpx
from pydantic import TypeAdapter

from reward_server.auth import headers
from reward_server.limits import rejected
from reward_server.types import ErrorBody, LimitExceeded, ScoreBatchResponse, ScoreItem, ScoreResult

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
    # The service's key, sent as `Authorization: Bearer`; RewardScorer takes it from $AM_RL_REWARD_API_KEY. Kept out
    # of repr: configs get printed.
    api_key: str | None = field(default=None, repr=False)


class RewardClient:
    def __init__(self, config: RewardClientConfig):
        self.config = config
        self.requests_sent = 0  # /score_batch POSTs, retries included: more than chunks means the service struggles
        self.rejected: collections.Counter[str] = collections.Counter()  # samples over an input limit, by field

    async def score_batch(self, items: Sequence[ScoreItem | dict[str, Any]]) -> list[ScoreResult]:
        """Score `items` in order; raises RewardServiceError rather than return an unscored item."""
        parsed = _ITEMS.validate_python(list(items))
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
        limits = httpx.Limits(max_connections=cfg.max_concurrency)
        gate = asyncio.Semaphore(cfg.max_concurrency)
        results: list[ScoreResult | None] = [None] * len(parsed)
        auth = headers(cfg.api_key)
        async with httpx.AsyncClient(base_url=cfg.url, timeout=timeout, limits=limits, headers=auth) as http:

            async def run_chunk(start: int) -> None:
                async with gate:
                    chunk = parsed[start : start + cfg.chunk_size]
                    for offset, result in enumerate(await self._score_chunk(http, chunk)):
                        results[start + offset] = result

            await asyncio.gather(*(run_chunk(s) for s in range(0, len(parsed), cfg.chunk_size)))
        fields = collections.Counter(r.details["field"].split("[")[0] for r in results if r.status == "rejected")
        if fields:
            self.rejected.update(fields)
            logger.warning("reward service: %d of %d sample(s) over an input limit, scored 0: %s",
                           fields.total(), len(parsed), dict(fields))  # fmt: skip
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
            if response.status_code == 413:  # too large as a whole: halve it; an item too large alone scores 0
                if len(todo) == 1:
                    results[todo[0]] = _rejected(response)
                else:
                    half = len(todo) // 2
                    for part in (todo[:half], todo[half:]):
                        for i, result in zip(part, await self._score_chunk(http, [chunk[i] for i in part])):
                            results[i] = result
                return results  # type: ignore[return-value]
            if response.status_code == 401:
                raise RewardRequestError(
                    f"reward service at {cfg.url} refused our API key (401): set AM_RL_REWARD_API_KEY to its key"
                )
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


def _rejected(response: httpx.Response) -> ScoreResult:
    """The result of one item the service refused with 413 (its limit named in the body), as a batch answers it."""
    try:
        return rejected(LimitExceeded.model_validate(ErrorBody.model_validate_json(response.content).detail))
    except ValueError:  # a 413 from something in front of the service (a proxy): its body is all we know
        error = f"HTTP 413: {response.text[:500]}"
        return ScoreResult(status="rejected", score=0.0, error=error, details={"field": "body"})
