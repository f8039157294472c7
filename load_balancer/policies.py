"""The routing policies: three baselines and ours, ``makespan`` (the default).

All are plain objects behind :class:`load_balancer.policy.RoutingPolicy`: no I/O, time passed in, so the live
balancer and the simulator in ``bench/`` drive the very same objects. Units: tokens, seconds, tokens/s.

Baselines look only at request counts. ``makespan`` looks at *work*: the remaining output tokens of what each
instance runs, over the rate it measurably decodes at, and moves long sequences off laggards at the tail.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from load_balancer.policy import InstanceState, Migration, RequestInfo, RunningRequest, register_policy


def _healthy(instances: Sequence[InstanceState]) -> list[InstanceState]:
    healthy = [s for s in instances if s.healthy]
    if not healthy:
        raise ValueError("no healthy instance to route to")
    return healthy


class _Stateless:
    """No-op lifecycle hooks for the count-based baselines (they read everything they need from the snapshot)."""

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        pass

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None:
        pass

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None:
        pass

    def on_failed(self, request_id: str, now: float) -> None:
        pass

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        return []


@register_policy("round_robin")
class RoundRobinPolicy(_Stateless):
    """Cycle through the healthy instances in the order given (skipping unhealthy ones)."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = _healthy(instances)
        url = healthy[self._next % len(healthy)].url
        self._next += 1
        return url


@register_policy("least_requests")
class LeastRequestsPolicy(_Stateless):
    """Fewest in-flight requests wins; ties rotate so equal instances fill evenly."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = _healthy(instances)
        n = len(healthy)
        start = self._turn % n
        self._turn += 1
        best = min(range(n), key=lambda k: (healthy[k].in_flight, (k - start) % n))
        return healthy[best].url


@register_policy("power_of_two")
class PowerOfTwoPolicy(_Stateless):
    """Sample two distinct healthy instances (seeded), send to the one with fewer in-flight requests."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = _healthy(instances)
        if len(healthy) == 1:
            return healthy[0].url
        a, b = self._rng.sample(healthy, 2)
        return (b if b.in_flight < a.in_flight else a).url


@dataclass
class _Tracked:
    """What ``makespan`` remembers of one request in flight."""

    request: RequestInfo
    url: str
    generated: int  # output tokens so far, across every instance it ran on
    migrations: int = 0
    moved_at: float = -math.inf


@dataclass
class _InstanceLoad:
    """Expected remaining work on one instance, kept incrementally between full refreshes."""

    work: float = 0.0  # sum of expected remaining tokens of the requests routed there
    by_prompt: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # prompt_key -> their work
    variance: float = 0.0  # sum over prompts of by_prompt**2: siblings' lengths move together


@register_policy("makespan")
class MakespanPolicy:
    """Route to the earliest projected finish; migrate the longest-remaining sequences off laggards.

    Remaining output of a request = its expected total length minus what it generated, where the expected total is
    the mean length its finished siblings reached (shrunk toward the mean of all finished requests; before any
    finished, ``prior_fraction * max_tokens``), raised to ``(1 + lindy) * generated`` for requests that are already
    long (a long-tailed length that has run far is likely to run further), and capped by ``max_tokens``.

    Projected finish of an instance = (work + ``risk`` * sqrt(variance)) / rate * (KV / queueing penalty). The
    variance term treats the remaining lengths of one prompt's siblings as fully correlated (a hard prompt's samples
    are all long) and different prompts as independent, so piling siblings onto one instance costs more than
    spreading them: that is what keeps a hard prompt's 16 samples off a single "crowded" instance.
    """

    def __init__(
        self,
        *,
        migrate: bool = True,
        prior_fraction: float = 0.25,  # expected length / max_tokens before anything has finished
        prior_weight: float = 2.0,  # pseudo-count of the global mean when estimating a prompt's mean length
        lindy: float = 0.5,  # a request that has generated g tokens is expected to generate >= lindy * g more
        risk: float = 1.0,  # weight of the standard deviation of an instance's work in its projected finish
        kv_soft: float = 0.90,  # KV-cache usage above which new work will queue or be preempted
        refresh_s: float = 1.0,  # recompute every instance's expected work at most this often
        plan_interval_s: float = 2.0,  # migration planning runs at most this often
        min_gain: float = 0.10,  # a move must shorten max(source, target) finish by this fraction...
        min_gain_s: float = 10.0,  # ...and by this many seconds (hysteresis: no ping-pong on noise)
        cooldown_s: float = 60.0,  # a moved request stays put at least this long
        max_migrations_per_request: int = 2,
        max_moves_per_plan: int = 16,
        prefill_tokens_per_s: float = 10_000.0,  # re-prefill speed assumed when costing a move
    ) -> None:
        self.migrate = migrate
        self.prior_fraction = prior_fraction
        self.prior_weight = prior_weight
        self.lindy = lindy
        self.risk = risk
        self.kv_soft = kv_soft
        self.refresh_s = refresh_s
        self.plan_interval_s = plan_interval_s
        self.min_gain = min_gain
        self.min_gain_s = min_gain_s
        self.cooldown_s = cooldown_s
        self.max_migrations_per_request = max_migrations_per_request
        self.max_moves_per_plan = max_moves_per_plan
        self.prefill_tokens_per_s = prefill_tokens_per_s

        self._tracked: dict[str, _Tracked] = {}
        self._by_url: dict[str, set[str]] = defaultdict(set)
        self._load: dict[str, _InstanceLoad] = defaultdict(_InstanceLoad)
        self._finished_by_prompt: dict[str, list[int]] = defaultdict(list)
        self._finished_sum = 0
        self._finished_count = 0
        self._refreshed_at = -math.inf
        self._planned_at = -math.inf
        self._best_seq_rate = 0.0  # fastest per-sequence tokens/s seen on any instance

    # --- length estimates -------------------------------------------------------------------------------------

    def expected_total(self, request: RequestInfo) -> float:
        """Expected output length (tokens) of ``request`` from what its siblings and all finished requests reached."""
        if self._finished_count:
            prior = self._finished_sum / self._finished_count
        else:
            prior = self.prior_fraction * request.max_tokens
        done = self._finished_by_prompt.get(request.prompt_key, ())
        return (self.prior_weight * prior + sum(done)) / (self.prior_weight + len(done))

    def expected_remaining(self, request: RequestInfo, generated: int) -> float:
        """Expected output tokens still to come, at least 1 while the request runs."""
        total = max(self.expected_total(request), (1.0 + self.lindy) * generated)
        return max(1.0, min(float(request.max_tokens), total) - generated)

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def _add(self, t: _Tracked) -> None:
        r = self.expected_remaining(t.request, t.generated)
        load = self._load[t.url]
        key = t.request.prompt_key
        w = load.by_prompt[key]
        load.variance += 2.0 * w * r + r * r
        load.by_prompt[key] = w + r
        load.work += r
        self._by_url[t.url].add(t.request.request_id)

    def _refresh(self, now: float) -> None:
        """Recompute every instance's work from current estimates (they drift as siblings finish and requests grow)."""
        self._load = defaultdict(_InstanceLoad)
        self._by_url = defaultdict(set)
        for t in self._tracked.values():
            self._add(t)
        self._refreshed_at = now

    def _drop(self, request_id: str) -> _Tracked | None:
        t = self._tracked.pop(request_id, None)
        if t is not None:
            self._by_url[t.url].discard(request_id)
            # Aggregates for the old url are stale until the next refresh; force one.
            self._refreshed_at = -math.inf
        return t

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        """Record a new request, or (same request_id) a migration / failover that continued it on ``url``."""
        previous = self._tracked.get(request.request_id)
        if previous is not None:
            self._drop(request.request_id)
            previous.url = url
            previous.generated = max(previous.generated, request.generated_tokens)
            self._tracked[request.request_id] = previous
        else:
            self._tracked[request.request_id] = _Tracked(request, url, request.generated_tokens)
        if self._refreshed_at != -math.inf:
            self._add(self._tracked[request.request_id])

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None:
        t = self._tracked.get(request_id)
        if t is not None:
            t.generated = max(t.generated, generated_tokens)

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None:
        t = self._drop(request_id)
        if t is None:
            return
        self._finished_by_prompt[t.request.prompt_key].append(generated_tokens)
        self._finished_sum += generated_tokens
        self._finished_count += 1

    def on_failed(self, request_id: str, now: float) -> None:
        self._drop(request_id)

    # --- routing ----------------------------------------------------------------------------------------------

    def _rates(self, instances: Sequence[InstanceState]) -> dict[str, float]:
        """Measured tokens/s per instance; unknown ones get the mean of the known (all equal when none is known)."""
        known = [s.tokens_per_s for s in instances if s.tokens_per_s > 0]
        fallback = sum(known) / len(known) if known else 1.0
        for s in instances:
            if s.tokens_per_s > 0 and s.running > 0:
                self._best_seq_rate = max(self._best_seq_rate, s.tokens_per_s / s.running)
        return {s.url: (s.tokens_per_s if s.tokens_per_s > 0 else fallback) for s in instances}

    def _penalty(self, s: InstanceState) -> float:
        """>1 when the instance is saturated: a full KV cache or a waiting queue means new work will not start now."""
        kv_excess = max(0.0, s.kv_cache_usage - self.kv_soft) / (1.0 - self.kv_soft)
        return 1.0 + kv_excess + s.waiting / max(1, s.running)

    def projected_finish(self, s: InstanceState, rate: float, extra: float = 0.0, extra_key: str | None = None) -> float:
        """Seconds until ``s`` drains its expected work, plus ``extra`` tokens of prompt ``extra_key`` if given."""
        load = self._load[s.url]
        work = load.work + extra
        variance = load.variance
        if extra and extra_key is not None:
            variance += 2.0 * load.by_prompt.get(extra_key, 0.0) * extra + extra * extra
        return (work + self.risk * math.sqrt(variance)) / rate * self._penalty(s)

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = _healthy(instances)
        if now - self._refreshed_at >= self.refresh_s:
            self._refresh(now)
        rates = self._rates(healthy)
        r = self.expected_remaining(request, request.generated_tokens)
        best = min(
            range(len(healthy)),
            key=lambda k: (self.projected_finish(healthy[k], rates[healthy[k].url], r, request.prompt_key), k),
        )
        return healthy[best].url

    # --- migration --------------------------------------------------------------------------------------------

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        """Move the longest-remaining sequences from the instance that will finish last to the one with most room.

        Drain time of an instance = max(longest remaining / per-sequence rate, total remaining / instance rate).
        A move is made only if it shortens max(source, target) drain time, re-prefill included, by ``min_gain``
        and ``min_gain_s``; moved requests stay put for ``cooldown_s`` and move at most
        ``max_migrations_per_request`` times, so the plan does not oscillate.
        """
        if not self.migrate or now - self._planned_at < self.plan_interval_s:
            return []
        self._planned_at = now
        healthy = [s for s in instances if s.healthy]
        if len(healthy) < 2:
            return []
        rates = self._rates(healthy)
        state = {s.url: s for s in healthy}
        # url -> [(remaining tokens, request)] from the caller's authoritative view of what runs where
        queues: dict[str, list[tuple[float, RunningRequest]]] = {s.url: [] for s in healthy}
        for rr in running:
            if rr.url in queues:
                t = self._tracked.get(rr.request.request_id)
                if t is not None:
                    t.generated = max(t.generated, rr.generated_tokens)
                queues[rr.url].append((self.expected_remaining(rr.request, rr.generated_tokens), rr))

        def seq_rate(url: str, count: int) -> float:
            """Per-sequence tokens/s on ``url`` if it ran ``count`` sequences."""
            s = state[url]
            if s.running > 0 and s.tokens_per_s > 0:
                return rates[url] / max(count, 1) if count > s.running else s.tokens_per_s / s.running
            return self._best_seq_rate or rates[url]

        def drain(url: str) -> float:
            q = queues[url]
            if not q:
                return 0.0
            longest = max(r for r, _ in q)
            total = sum(r for r, _ in q)
            return max(longest / seq_rate(url, len(q)), total / rates[url]) * self._penalty(state[url])

        drains = {url: drain(url) for url in queues}
        moves: list[Migration] = []
        moved_to: set[str] = set()
        while len(moves) < self.max_moves_per_plan:
            source = max(drains, key=lambda u: (drains[u], u))
            target = min(drains, key=lambda u: (drains[u], u))
            if source == target or source in moved_to:
                break
            candidates = sorted(
                (
                    (r, rr)
                    for r, rr in queues[source]
                    if self._movable(rr.request.request_id, now)
                ),
                key=lambda x: (-x[0], x[1].request.request_id),
            )
            if not candidates:
                break
            r, rr = candidates[0]
            before = drains[source]
            queues[source].remove((r, rr))
            queues[target].append((r, rr))
            reprefill_s = (rr.request.prompt_tokens + rr.generated_tokens) / self.prefill_tokens_per_s
            after = max(drain(source), drain(target) + reprefill_s)
            if before - after < max(self.min_gain * before, self.min_gain_s):
                queues[target].remove((r, rr))
                queues[source].append((r, rr))
                break
            drains[source], drains[target] = drain(source), drain(target) + reprefill_s
            moves.append(Migration(rr.request.request_id, source, target))
            moved_to.add(target)
            self._mark_moved(rr.request.request_id, now)
        return moves

    def _movable(self, request_id: str, now: float) -> bool:
        t = self._tracked.get(request_id)
        if t is None:
            return True
        return t.migrations < self.max_migrations_per_request and now - t.moved_at >= self.cooldown_s

    def _mark_moved(self, request_id: str, now: float) -> None:
        t = self._tracked.get(request_id)
        if t is not None:
            t.migrations += 1
            t.moved_at = now
