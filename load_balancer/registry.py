"""Which vLLM instances exist, and what the balancer knows of each (health, load, rates).

The *membership* (the set of URLs) lives in a store: in memory, or in Redis so that a restarted balancer or a
second replica sees the same instances. Everything measured (scrapes, in-flight counts, rates) is local to the
process and rebuilt from live traffic.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from load_balancer.policy import InstanceState

logger = logging.getLogger(__name__)


@dataclass
class Instance:
    url: str
    healthy: bool = True
    draining: bool = False  # deregistered; kept until its in-flight requests are done
    paused: bool = False  # asleep or taking new weights (trainer's weight sync): finishes nothing new, gets nothing
    consecutive_failures: int = 0
    next_health_check: float = 0.0  # monotonic time of the next /health probe while ejected
    backoff_s: float = 0.0
    # last successful /metrics scrape
    last_scrape: float = -math.inf
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    gen_tokens_total: float | None = None  # vllm:generation_tokens_total at last_scrape
    scraped_rate: float | None = None  # tokens/s while busy, from generation_tokens_total (EWMA)
    scraped_now: float | None = None  # tokens/s over the last scrape interval, busy or not: current throughput
    # Seconds per decode step over the last scrape interval (running / tokens per second), only when the interval was
    # clean: the same sequences running at both ends, none waiting, tokens generated. Otherwise None: a prefill stall,
    # an admission or a finish inside the interval makes running / rate no step time at all (a stalled interval gives
    # 0 tokens, and the rate EWMA above, halving per stalled scrape, would give steps of 1e3-1e17 s).
    decode_step_s: float | None = None
    # balancer-side counters
    in_flight: int = 0
    tokens_relayed: int = 0
    migrations_in: int = 0
    migrations_out: int = 0
    relayed: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens) inside the rate window
    # Sum of the tokens in ``relayed``, kept as it changes: every routing decision reads the rate, and the window
    # holds one entry per relayed chunk (~10^5 at full relay speed), too many to sum per request.
    relayed_in_window: int = 0
    last_relayed_at: float = -math.inf  # monotonic time tokens from it last reached a client: proof of life
    last_progress_at: float = -math.inf  # the later of last_relayed_at and the last request placed on it

    def record_relayed(self, tokens: int, now: float) -> None:
        self.tokens_relayed += tokens
        self.last_relayed_at = self.last_progress_at = now
        self.relayed.append((now, tokens))
        self.relayed_in_window += tokens

    def relayed_rate(self, now: float, window_s: float) -> float:
        while self.relayed and self.relayed[0][0] < now - window_s:
            self.relayed_in_window -= self.relayed.popleft()[1]
        return self.relayed_in_window / window_s

    def tokens_per_s(self, now: float, window_s: float) -> float:
        """The rate the instance generated at when last busy: its engine's counter (which also covers traffic that
        bypasses us) when scraped, else what we relayed. An idle instance keeps its last busy rate. Shown on the
        dashboard; no capacity: it scales with the batch the instance ran (policies use ``decode_step_s``)."""
        current = self.throughput(now, window_s)
        return current if self.scraped_rate is None else max(self.scraped_rate, current)

    def throughput(self, now: float, window_s: float) -> float:
        """Tokens/s generated right now (what the dashboard and /metrics show)."""
        relayed = self.relayed_rate(now, window_s)
        return relayed if self.scraped_now is None else max(self.scraped_now, relayed)

    def record_scrape(self, running: int, waiting: int, kv: float, gen_total: float | None, now: float) -> None:
        self.decode_step_s = None
        if gen_total is not None and self.gen_tokens_total is not None and now > self.last_scrape:
            sample = max(0.0, gen_total - self.gen_tokens_total) / (now - self.last_scrape)
            self.scraped_now = sample
            if running == self.running > 0 and waiting == self.waiting == 0 and sample > 0:
                self.decode_step_s = running / sample
            if running > 0 or self.running > 0:
                # A short EWMA: one 250 ms scrape sees few engine steps, so single samples are noisy.
                self.scraped_rate = sample if self.scraped_rate is None else 0.5 * self.scraped_rate + 0.5 * sample
        self.running, self.waiting, self.kv_cache_usage = running, waiting, kv
        self.gen_tokens_total = gen_total
        self.last_scrape = now

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_health_check(self, ok: bool, now: float, backoff_max_s: float) -> bool:
        """Result of a /health probe of an ejected instance; True when it is re-admitted."""
        if ok:
            self.healthy = True
            self.consecutive_failures = 0
            return True
        self.backoff_s = min(2 * self.backoff_s, backoff_max_s)
        self.next_health_check = now + self.backoff_s
        return False

    def routable(self) -> bool:
        return self.healthy and not self.draining and not self.paused

    def state(self, now: float, window_s: float) -> InstanceState:
        return InstanceState(
            url=self.url,
            healthy=self.routable(),
            in_flight=self.in_flight,
            running=self.running,
            waiting=self.waiting,
            kv_cache_usage=self.kv_cache_usage,
            tokens_per_s=self.tokens_per_s(now, window_s),
            scrape_age_s=now - self.last_scrape,
            decode_step_s=self.decode_step_s,
        )


class InstanceStore(Protocol):
    """Where the set of registered URLs lives."""

    async def add(self, url: str) -> None: ...

    async def remove(self, url: str) -> bool: ...

    async def urls(self) -> set[str]: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._urls: set[str] = set()

    async def add(self, url: str) -> None:
        self._urls.add(url)

    async def remove(self, url: str) -> bool:
        present = url in self._urls
        self._urls.discard(url)
        return present

    async def urls(self) -> set[str]:
        return set(self._urls)

    async def close(self) -> None:
        pass


class StoreUnavailable(RuntimeError):
    """The registry's store (Redis) did not answer; the balancer keeps routing to the instances it knows."""


class RedisStore:
    """A Redis set of URLs; every call has a socket timeout so a gone Redis is an error, not a hang."""

    def __init__(self, url: str, key: str, timeout_s: float = 2.0) -> None:
        import redis.asyncio

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.asyncio.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._key = key

    async def _run(self, what: str, call):
        try:
            return await call
        except self._errors as e:
            raise StoreUnavailable(f"registry store (Redis) failed to {what}: {e!r}") from e

    async def add(self, url: str) -> None:
        await self._run("add an instance", self._redis.sadd(self._key, url))

    async def remove(self, url: str) -> bool:
        return bool(await self._run("remove an instance", self._redis.srem(self._key, url)))

    async def urls(self) -> set[str]:
        return set(await self._run("list instances", self._redis.smembers(self._key)))

    async def close(self) -> None:
        await self._redis.aclose()


class Registry:
    """The live view: one ``Instance`` per registered URL, plus deregistered ones still draining.

    The one writer of every ``Instance``: the proxy reports traffic (placed, left, relayed, moved, succeeded), the
    scraper reports scrapes and health checks, either reports failures, and ``eject`` is the one place an instance
    is ejected (after ``eject_after_failures`` failures, or when it is hung).

    Ejection stops new work; it does not move the streams already there: an instance whose scrapes time out on a
    loaded host is usually slow, not dead, and moving all of its streams at once re-prefills them elsewhere for
    nothing (a step's start, when every stream is still in prefill, looks exactly like that). Streams leave an
    instance when their own connection breaks, or when the instance is *hung*: requests in flight and no token
    relayed, nor any request placed, for ``hung_after_s``. Then ``on_hung`` listeners (the proxy) move its streams.
    """

    def __init__(
        self,
        store: InstanceStore,
        window_s: float,
        eject_after_failures: int = 3,  # load_balancer.config.BalancerConfig documents these three
        readmit_backoff_s: float = 0.5,
        readmit_backoff_max_s: float = 30.0,
        hung_after_s: float = 60.0,
    ) -> None:
        self.store = store
        self.window_s = window_s
        self.eject_after_failures = eject_after_failures
        self.readmit_backoff_s = readmit_backoff_s
        self.readmit_backoff_max_s = readmit_backoff_max_s
        self.hung_after_s = hung_after_s
        self.instances: dict[str, Instance] = {}
        self.on_eject: list[Callable[[str, str], None]] = []  # called with (url, why) once per ejection
        self.on_hung: list[Callable[[str, str], None]] = []  # called with (url, why) when its streams must move

    async def add(self, url: str) -> Instance:
        await self.store.add(url)
        return self._admit(url)

    async def remove(self, url: str) -> bool:
        removed = await self.store.remove(url)
        inst = self.instances.get(url)
        if inst is not None:
            inst.draining = True
            self.drop_drained()
        return removed or inst is not None

    async def sync(self) -> None:
        """Follow the store: instances added or removed by another replica (or before a restart) appear here."""
        urls = await self.store.urls()
        for url in urls:
            self._admit(url)
        for url, inst in self.instances.items():
            if url not in urls and not inst.draining:
                logger.info("instance %s left the shared registry; draining it", url)
                inst.draining = True
        self.drop_drained()

    def _admit(self, url: str) -> Instance:
        inst = self.instances.get(url)
        if inst is None:
            inst = self.instances[url] = Instance(url)
            logger.info("instance %s registered", url)
        inst.draining = False
        return inst

    def set_paused(self, urls: list[str] | None, paused: bool) -> list[str]:
        """Pause (or resume) routing to ``urls`` (None: every instance); returns the URLs changed.

        Raises ``KeyError`` naming the first URL that is not registered, before changing any."""
        targets = list(self.instances) if urls is None else urls
        for url in targets:
            if url not in self.instances:
                raise KeyError(url)
        for url in targets:
            if self.instances[url].paused != paused:
                logger.info("instance %s %s", url, "paused" if paused else "resumed")
            self.instances[url].paused = paused
        return targets

    def any_paused(self) -> bool:
        """True when some healthy instance is only paused: a request can wait for it to come back."""
        return any(i.paused and i.healthy and not i.draining for i in self.instances.values())

    def drop_drained(self) -> None:
        for url in [u for u, i in self.instances.items() if i.draining and i.in_flight == 0]:
            del self.instances[url]
            logger.info("instance %s removed", url)

    # ---- traffic, reported by the proxy --------------------------------------------------------------------------

    def placed(self, url: str, now: float) -> None:
        """A request attempt was sent to ``url``."""
        inst = self.instances[url]
        inst.in_flight += 1
        inst.last_progress_at = now

    def left(self, url: str) -> None:
        """A request attempt on ``url`` ended (finished, failed, or moved away); a drained instance goes."""
        inst = self.instances.get(url)
        if inst is not None:
            inst.in_flight -= 1
            self.drop_drained()

    def relayed(self, url: str | None, tokens: int, now: float) -> None:
        inst = self.instances.get(url) if url is not None else None
        if inst is not None:
            inst.record_relayed(tokens, now)

    def moved(self, source: str, target: str) -> None:
        """The migration loop moved a running request from ``source`` to ``target``."""
        if source in self.instances:
            self.instances[source].migrations_out += 1
        if target in self.instances:
            self.instances[target].migrations_in += 1

    # ---- health, reported by the proxy (traffic) and the scraper ------------------------------------------------

    def succeeded(self, url: str | None) -> None:
        inst = self.instances.get(url) if url is not None else None
        if inst is not None:
            inst.record_success()

    def failed(self, url: str | None, why: str, now: float) -> bool:
        """A request or scrape of ``url`` failed; True when this failure ejects it."""
        inst = self.instances.get(url) if url is not None else None
        if inst is None:
            return False
        inst.consecutive_failures += 1
        if inst.consecutive_failures < self.eject_after_failures:
            return False
        return self.eject(url, f"{inst.consecutive_failures} failures, the last: {why}", now)

    def eject(self, url: str, why: str, now: float) -> bool:
        """Route nothing new to ``url`` until its /health answers again; True when it was not ejected already."""
        inst = self.instances.get(url)
        if inst is None or not inst.healthy:
            return False
        inst.healthy = False
        inst.backoff_s = self.readmit_backoff_s
        inst.next_health_check = now + self.readmit_backoff_s
        logger.warning("instance %s ejected (%s)", url, why)
        for listener in self.on_eject:
            listener(url, why)
        return True

    def check_hung(self, now: float) -> list[str]:
        """Eject every hung instance (see the class docstring) and tell ``on_hung``; returns their urls."""
        hung = [i for i in self.instances.values() if i.in_flight > 0 and now - i.last_progress_at > self.hung_after_s]
        for inst in hung:
            why = f"no token relayed for {now - inst.last_progress_at:.0f} s with {inst.in_flight} request(s) in flight"
            inst.last_progress_at = now  # its streams are on their way out: do not repeat this every round
            self.eject(inst.url, why, now)
            for listener in self.on_hung:
                listener(inst.url, why)
        return [inst.url for inst in hung]

    def scraped(self, url: str, running: int, waiting: int, kv: float, gen_total: float | None, now: float) -> None:
        inst = self.instances.get(url)
        if inst is not None:
            inst.record_success()
            inst.record_scrape(running, waiting, kv, gen_total, now)

    def health_checked(self, url: str, ok: bool, now: float) -> bool:
        """An ejected instance's /health answered (``ok``) or not; True when it is re-admitted."""
        inst = self.instances.get(url)
        if inst is None:
            return False
        if inst.record_health_check(ok, now, self.readmit_backoff_max_s):
            logger.info("instance %s answers /health again; re-admitted", url)
            return True
        logger.debug("instance %s still down; next check in %.1fs", url, inst.backoff_s)
        return False

    # ---- views ------------------------------------------------------------------------------------------------

    def states(self, now: float | None = None) -> list[InstanceState]:
        now = time.monotonic() if now is None else now
        return [inst.state(now, self.window_s) for inst in self.instances.values()]

    def routable_states(self, now: float, exclude: set[str] = frozenset()) -> list[InstanceState]:
        return [
            inst.state(now, self.window_s)
            for inst in self.instances.values()
            if inst.routable() and inst.url not in exclude
        ]
