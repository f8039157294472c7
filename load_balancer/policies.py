"""The routing policies: three baselines and ours, ``makespan`` (the default).

All are plain objects behind :class:`load_balancer.policy.RoutingPolicy`: no I/O, time passed in, so the live
balancer and the simulator in ``bench/`` drive the very same objects. Units: tokens, seconds, tokens/s.

Baselines look only at request counts. ``makespan`` (in :mod:`load_balancer.makespan`, re-exported here so that
importing this module registers all four) looks at *work* and moves long sequences off laggards at the tail.
"""

from __future__ import annotations

import random
from typing import Sequence

from load_balancer.makespan import MakespanPolicy
from load_balancer.policy import (
    InstanceEstimate,
    InstanceState,
    Migration,
    RequestInfo,
    RunningRequest,
    healthy_instances,
    register_policy,
)


class StatelessPolicy:
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

    def estimates(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> dict[str, InstanceEstimate]:
        return {}


@register_policy("round_robin")
class RoundRobinPolicy(StatelessPolicy):
    """Cycle through the healthy instances in the order given (skipping unhealthy ones)."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = healthy_instances(instances)
        url = healthy[self._next % len(healthy)].url
        self._next += 1
        return url


@register_policy("least_requests")
class LeastRequestsPolicy(StatelessPolicy):
    """Fewest in-flight requests wins; ties rotate so equal instances fill evenly."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = healthy_instances(instances)
        n = len(healthy)
        start = self._turn % n
        self._turn += 1
        best = min(range(n), key=lambda k: (healthy[k].in_flight, (k - start) % n))
        return healthy[best].url


@register_policy("power_of_two")
class PowerOfTwoPolicy(StatelessPolicy):
    """Sample two distinct healthy instances (seeded), send to the one with fewer in-flight requests."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = healthy_instances(instances)
        if len(healthy) == 1:
            return healthy[0].url
        a, b = self._rng.sample(healthy, 2)
        return (b if b.in_flight < a.in_flight else a).url


__all__ = ["LeastRequestsPolicy", "MakespanPolicy", "PowerOfTwoPolicy", "RoundRobinPolicy", "StatelessPolicy"]
