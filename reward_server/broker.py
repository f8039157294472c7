"""Server side of the queue: cache lookup, dedup, enqueue, and waiting for exactly one reply per job.

If Redis goes away while a batch waits, the broker keeps retrying for `redis_grace_s`; once Redis is back, or
whenever the request's in-flight marker has vanished (a Redis that restarted empty between two of our calls,
which the client library's own reconnects hide from us), it re-enqueues every job still unanswered. Duplicates
are harmless: replies are keyed by job id and the first one wins.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aredis
from redis.exceptions import RedisError

from reward_server import keys, metrics
from reward_server.config import WorkerSettings
from reward_server.redis_url import redacted
from reward_server.types import Job, JobReply, ScoreItem, ScoreResult

logger = logging.getLogger(__name__)

DRAIN = 512  # replies popped per round trip once one has arrived


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached: the service answers 503 and recovers by itself when Redis is back."""


@dataclass
class BrokerSettings:
    redis_url: str  # may carry a password: shown only through `redacted`
    request_timeout_s: float = 900.0  # a batch still unanswered after this gets per-item errors
    redis_grace_s: float = 30.0  # how long a waiting batch rides out a Redis outage before giving up
    no_worker_grace_s: float = 30.0  # pending jobs and no live worker for this long: answer with errors
    heartbeat_ttl_s: float = 10.0
    worker: WorkerSettings = field(default_factory=WorkerSettings)  # what the workers judge with (cache keys)


@dataclass
class _Pending:
    jobs: dict[str, Job]  # job id -> job, not yet answered
    results: dict[str, ScoreResult] = field(default_factory=dict)


class Broker:
    def __init__(self, settings: BrokerSettings):
        self.settings = settings
        self.where = redacted(settings.redis_url)  # for errors and logs
        self.redis = aredis.Redis.from_url(
            settings.redis_url, socket_timeout=10, socket_connect_timeout=2, health_check_interval=5
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except RedisError as e:
            raise RedisUnavailable(f"redis unreachable at {self.where}: {e}") from e

    async def queue_depth(self) -> int:
        return await self.redis.llen(keys.JOBS)

    async def live_workers(self) -> list[str]:
        since = time.time() - self.settings.heartbeat_ttl_s
        return [w.decode() for w in await self.redis.zrangebyscore(keys.WORKERS, since, "+inf")]

    async def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        t0 = time.monotonic()
        cache_keys = [keys.cache(it, self.settings.worker) for it in items]
        try:
            cached = await self.redis.mget(cache_keys) if cache_keys else []
        except RedisError as e:
            raise RedisUnavailable(f"redis unreachable at {self.where}: {e}") from e
        request_id = uuid.uuid4().hex
        by_key: dict[str, Job] = {}  # identical items in one batch share a job
        results: list[ScoreResult | None] = [None] * len(items)
        for i, (item, key, hit) in enumerate(zip(items, cache_keys, cached)):
            if hit is not None:
                results[i] = ScoreResult.model_validate_json(hit).model_copy(update={"cached": True})
                metrics.CACHE_HITS.labels(item.reward_type).inc()
            elif key not in by_key:
                by_key[key] = Job(
                    id=f"{request_id}-{len(by_key)}",
                    reply_to=keys.reply(request_id),
                    item=item,
                    enqueued_at=time.time(),
                )
        pending = _Pending(jobs={job.id: job for job in by_key.values()})
        if pending.jobs:
            await self._enqueue(list(pending.jobs.values()), request_id)
            await self._wait(pending, request_id, t0)
        for i, (item, key) in enumerate(zip(items, cache_keys)):
            if results[i] is None:
                results[i] = pending.results[by_key[key].id]
            metrics.observe(item.reward_type, results[i], time.monotonic() - t0)
        return results

    async def _enqueue(self, jobs: list[Job], request_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.inflight(request_id), 1, ex=int(self.settings.request_timeout_s) + 60)
                for job in jobs:
                    pipe.rpush(keys.JOBS, job.model_dump_json())
                await pipe.execute()
        except RedisError as e:
            raise RedisUnavailable(f"redis unreachable at {self.where}: {e}") from e

    async def _wait(self, pending: _Pending, request_id: str, t0: float) -> None:
        reply_key = keys.reply(request_id)
        deadline = t0 + self.settings.request_timeout_s
        outage_since: float | None = None
        idle_since: float | None = None
        while pending.jobs:
            now = time.monotonic()
            if now > deadline:
                self._fail_all(pending, f"no reply within {self.settings.request_timeout_s:.0f}s")
                break
            try:
                popped = await self.redis.blpop([reply_key], timeout=1)
                raws = [popped[1]] if popped else []
                if popped:
                    raws += await self.redis.lpop(reply_key, DRAIN) or []
                if outage_since is not None:
                    logger.warning(
                        "redis back after %.1fs; re-enqueueing %d job(s)", now - outage_since, len(pending.jobs)
                    )
                    outage_since = None
                    await self._enqueue(list(pending.jobs.values()), request_id)
                if not raws:
                    if not await self.redis.exists(keys.inflight(request_id)):
                        logger.warning(
                            "redis lost request %s's data; re-enqueueing %d job(s)", request_id, len(pending.jobs)
                        )
                        await self._enqueue(list(pending.jobs.values()), request_id)
                    idle_since = await self._check_workers(pending, idle_since)
            except (RedisError, RedisUnavailable) as e:
                if outage_since is None:
                    outage_since = now
                    logger.warning("redis lost mid-batch (%s); %d job(s) waiting", e, len(pending.jobs))
                if now - outage_since > self.settings.redis_grace_s:
                    raise RedisUnavailable(
                        f"redis unreachable at {self.where} for {now - outage_since:.0f}s mid-batch: {e}"
                    ) from e
                await asyncio.sleep(0.2)
                continue
            for raw in raws:
                reply = JobReply.model_validate_json(raw)
                if pending.jobs.pop(reply.job_id, None) is not None:
                    pending.results[reply.job_id] = reply.result
        try:
            await self.redis.delete(keys.inflight(request_id), reply_key)
        except RedisError:
            pass  # both expire by themselves

    async def _check_workers(self, pending: _Pending, idle_since: float | None) -> float | None:
        if await self.live_workers():
            return None
        now = time.monotonic()
        idle_since = idle_since or now
        if now - idle_since > self.settings.no_worker_grace_s:
            self._fail_all(pending, f"no live reward worker for {now - idle_since:.0f}s")
        return idle_since

    @staticmethod
    def _fail_all(pending: _Pending, why: str) -> None:
        logger.error("%s; failing %d job(s)", why, len(pending.jobs))
        for job_id in list(pending.jobs):
            pending.results[job_id] = ScoreResult(status="error", score=None, error=why)
        pending.jobs.clear()
