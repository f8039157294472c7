"""A reward worker: pops jobs from Redis, scores them in a hard-killable child, pushes one reply per job.

    AM_RL_REWARD_REDIS_URL=redis://:PASSWORD@host:6379/0 python -m reward_server.worker [--settings-json '{...}']

Survives Redis outages (it waits and reconnects, keeping a finished result until it can be delivered) and
reaps dead workers' in-flight jobs back onto the queue.
"""

import argparse
import logging
import os
import signal
import socket
import time
import uuid

import redis

from reward_server import keys
from reward_server.config import WorkerSettings
from reward_server.executor import Executor
from reward_server.redis_url import REDIS_URL_ENV, redis_url_from_env
from reward_server.types import Job, JobReply, ScoreResult
from reward_server.verifiers import build_verifiers

logger = logging.getLogger(__name__)

POP_TIMEOUT_S = 1.0
REAP_EVERY_S = 2.0
BACKOFF_MAX_S = 2.0


class Worker:
    def __init__(self, redis_url: str, settings: WorkerSettings):
        self.settings = settings
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=POP_TIMEOUT_S + 5, socket_connect_timeout=2)
        self.executor = Executor(build_verifiers(settings))
        self._stop = False
        self._last_beat = 0.0
        self._last_reap = 0.0

    def stop(self, *_) -> None:
        self._stop = True

    def run(self) -> None:
        logger.info("worker %s started", self.id)
        backoff = 0.1
        try:
            while not self._stop:
                try:
                    self._heartbeat()
                    self._reap()
                    raw = self.redis.blmove(keys.JOBS, keys.processing(self.id), POP_TIMEOUT_S, "LEFT", "RIGHT")
                    backoff = 0.1
                except redis.RedisError as e:
                    logger.warning("worker %s: redis unavailable (%s); retrying in %.1fs", self.id, e, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                if raw is not None:
                    self._handle(raw)
        finally:
            self.executor.close()
            try:
                self.redis.zrem(keys.WORKERS, self.id)
            except redis.RedisError:
                pass
            logger.info("worker %s stopped", self.id)

    def _heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_beat > self.settings.heartbeat_ttl_s / 4:
            self.redis.zadd(keys.WORKERS, {self.id: now})
            self._last_beat = now

    def _tick(self) -> None:
        try:
            self._heartbeat()
        except redis.RedisError:
            pass  # the job keeps running; delivery waits for Redis in _deliver

    def _reap(self) -> None:
        now = time.time()
        if now - self._last_reap < REAP_EVERY_S:
            return
        self._last_reap = now
        for dead in self.redis.zrangebyscore(keys.WORKERS, "-inf", now - self.settings.heartbeat_ttl_s):
            dead = dead.decode()
            moved = 0
            while self.redis.lmove(keys.processing(dead), keys.JOBS, "RIGHT", "LEFT") is not None:
                moved += 1
            self.redis.zrem(keys.WORKERS, dead)
            logger.warning("worker %s reaped dead worker %s: %d job(s) requeued", self.id, dead, moved)

    def _handle(self, raw: bytes) -> None:
        try:
            job = Job.model_validate_json(raw)
        except ValueError:  # not ours (another version, manual push): drop it rather than crash on it forever
            logger.error("worker %s: dropping malformed job %r", self.id, raw[:200])
            self._with_redis(lambda: self.redis.lrem(keys.processing(self.id), 1, raw))
            return
        attempts = self._with_redis(lambda: self._count_attempt(job.id))
        if attempts > self.settings.max_attempts:
            result = ScoreResult(
                status="error", score=None, error=f"job {job.id} lost {attempts - 1} workers mid-run; giving up"
            )
        else:
            cache_key = keys.cache(job.item, self.settings)
            cached = self._with_redis(lambda: self.redis.get(cache_key))
            if cached is not None:
                result = ScoreResult.model_validate_json(cached).model_copy(update={"cached": True})
            else:
                result = self.executor.run(job.item, self._tick)
        self._with_redis(lambda: self._deliver(job, raw, result))

    def _count_attempt(self, job_id: str) -> int:
        pipe = self.redis.pipeline()
        pipe.incr(keys.attempts(job_id))
        pipe.expire(keys.attempts(job_id), keys.REPLY_TTL_S)
        return pipe.execute()[0]

    def _deliver(self, job: Job, raw: bytes, result: ScoreResult) -> None:
        reply = JobReply(job_id=job.id, result=result, worker_id=self.id)
        pipe = self.redis.pipeline(transaction=True)
        if should_cache(result):
            pipe.set(keys.cache(job.item, self.settings), result.model_dump_json(), ex=self.settings.cache_ttl_s)
        pipe.rpush(job.reply_to, reply.model_dump_json())
        pipe.expire(job.reply_to, keys.REPLY_TTL_S)
        pipe.lrem(keys.processing(self.id), 1, raw)
        pipe.delete(keys.attempts(job.id))
        pipe.execute()

    def _with_redis(self, fn):
        """Retry `fn` until Redis answers: a finished result is never dropped because Redis blinked."""
        backoff = 0.1
        while True:
            try:
                return fn()
            except redis.RedisError as e:
                if self._stop:
                    raise
                logger.warning("worker %s: redis error (%s); retrying in %.1fs", self.id, e, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)


def should_cache(result: ScoreResult) -> bool:
    """Only verdicts about the response: not errors (ours), not hard-killed verifiers (a timeout can be the
    machine's overload as much as the response's fault), not verdicts that hit a wall-clock limit."""
    return result.status == "ok" and result.cacheable and not result.cached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="reward_server worker")
    parser.add_argument(
        "--redis-url",
        default=redis_url_from_env(),
        help=f"default: ${REDIS_URL_ENV}, which keeps a password off the command line",
    )
    parser.add_argument("--settings-json", default="{}", help="WorkerSettings fields as JSON")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error(f"no Redis: pass --redis-url or set {REDIS_URL_ENV}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(args.redis_url, WorkerSettings.model_validate_json(args.settings_json))
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()


if __name__ == "__main__":
    main()
