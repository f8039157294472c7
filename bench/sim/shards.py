"""K balancer processes (shards) and the trainer's client that spreads samples over them, as one simulated policy.

:class:`ShardedBalancers` stands behind the ``RoutingPolicy`` interface so that :class:`bench.sim.engine.SimCluster`
drives it unchanged, but inside it is K independent policy objects, one per balancer process. Instance ``k`` belongs
to shard ``k % K`` (the launcher assigns engines round robin); a shard sees only its own instances' states and its
own requests, routes within them and plans migrations within them: a shard cannot move a sequence to an instance it
does not know. The client (:class:`ShardClient`) picks the shard of each new request from what a trainer-side client
knows: what it sent where and what has finished. Every planning round the shards plan one after another here; live
they plan concurrently in their own processes, so the round's wall time there is the slowest shard's
(``plan_wall_s``), against the sum for one global balancer. Times are CPU seconds of this thread (the box is
shared).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from load_balancer.policy import InstanceState, Migration, RequestInfo, RoutingPolicy, RunningRequest


class ShardClient:
    """The trainer-side choice of a shard for each new request. ``spread`` is one of:

    - ``sample``: round robin over shards per request, in arrival order (the trainer's shuffled order);
    - ``group``: round robin per prompt group: every sample of one prompt goes to the same shard, so that shard's
      policy sees all siblings (its length estimates learn from finished siblings);
    - ``least_outstanding``: the shard with the fewest requests sent and not yet finished (ties rotate). With every
      request sent at once this equals ``sample``; it differs when the trainer caps requests in flight.
    """

    SPREADS = ("sample", "group", "least_outstanding")

    def __init__(self, n_shards: int, spread: str) -> None:
        if spread not in self.SPREADS:
            raise ValueError(f"unknown spread {spread!r}; known: {self.SPREADS}")
        self.n_shards, self.spread = n_shards, spread
        self.outstanding = [0] * n_shards  # requests sent to each shard and not finished
        self._turn = 0
        self._shard_of_prompt: dict[str, int] = {}

    def pick(self, request: RequestInfo) -> int:
        if self.spread == "group":
            shard = self._shard_of_prompt.get(request.prompt_key)
            if shard is None:
                shard = self._shard_of_prompt[request.prompt_key] = self._next_turn()
        elif self.spread == "least_outstanding":
            start = self._next_turn()
            shard = min(range(self.n_shards), key=lambda s: (self.outstanding[s], (s - start) % self.n_shards))
        else:
            shard = self._next_turn()
        self.outstanding[shard] += 1
        return shard

    def finished(self, shard: int) -> None:
        self.outstanding[shard] -= 1

    def _next_turn(self) -> int:
        shard = self._turn % self.n_shards
        self._turn += 1
        return shard


class ShardedBalancers:
    """``n_shards`` policy objects from ``make_policy``, each owning the instances ``k`` with ``k % n_shards`` equal
    to its index, behind one ``RoutingPolicy`` face for the simulator."""

    def __init__(self, n_shards: int, make_policy: Callable[[], RoutingPolicy], spread: str) -> None:
        self.shards = [make_policy() for _ in range(n_shards)]
        self.client = ShardClient(n_shards, spread)
        self.name = f"{self.shards[0].name}_x{n_shards}_{spread}"
        self._members: list[list[int]] | None = None  # shard -> indices into the instance list (fixed order)
        self._shard_of_url: dict[str, int] = {}
        self._shard_of_request: dict[str, int] = {}
        self.plan_wall_s: list[float] = []  # per planning round: the slowest shard's planning time
        self.plan_total_s: list[float] = []  # per planning round: all shards' planning time summed

    def _split(self, instances: Sequence[InstanceState]) -> list[list[int]]:
        if self._members is None:
            n = len(self.shards)
            self._members = [list(range(s, len(instances), n)) for s in range(n)]
            self._shard_of_url = {st.url: k % n for k, st in enumerate(instances)}
        return self._members

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        members = self._split(instances)
        shard = self.client.pick(request)
        self._shard_of_request[request.request_id] = shard
        return self.shards[shard].choose(request, [instances[k] for k in members[shard]], now)

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        shard = self._shard_of_url[url]
        if self._shard_of_request.get(request.request_id, shard) != shard:
            raise AssertionError(f"request {request.request_id} left its shard: shards only move within themselves")
        self.shards[shard].on_routed(request, url, now)

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None:
        self.shards[self._shard_of_request[request_id]].on_progress(request_id, generated_tokens, now)

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None:
        shard = self._shard_of_request.pop(request_id)
        self.shards[shard].on_finished(request_id, generated_tokens, now)
        self.client.finished(shard)

    def on_failed(self, request_id: str, now: float) -> None:
        shard = self._shard_of_request.pop(request_id)
        self.shards[shard].on_failed(request_id, now)
        self.client.finished(shard)

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        members = self._split(instances)
        by_shard: list[list[RunningRequest]] = [[] for _ in self.shards]
        for rr in running:
            by_shard[self._shard_of_url[rr.url]].append(rr)
        moves, times = [], []
        for shard, policy in enumerate(self.shards):
            started = time.thread_time()
            moves += policy.plan_migrations([instances[k] for k in members[shard]], by_shard[shard], now)
            times.append(time.thread_time() - started)
        self.plan_wall_s.append(max(times))
        self.plan_total_s.append(sum(times))
        return moves


class TimedPlans:
    """One global policy, its planning rounds timed the same way as :class:`ShardedBalancers`' (pass-through)."""

    def __init__(self, inner: RoutingPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.plan_wall_s: list[float] = []
        self.plan_total_s = self.plan_wall_s

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        return self.inner.choose(request, instances, now)

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        self.inner.on_routed(request, url, now)

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None:
        self.inner.on_progress(request_id, generated_tokens, now)

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None:
        self.inner.on_finished(request_id, generated_tokens, now)

    def on_failed(self, request_id: str, now: float) -> None:
        self.inner.on_failed(request_id, now)

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        started = time.thread_time()
        moves = self.inner.plan_migrations(instances, running, now)
        self.plan_wall_s.append(time.thread_time() - started)
        return moves
