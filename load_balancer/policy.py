"""The routing-policy interface shared by the live balancer and the simulator (bench/).

A policy is a plain object with no I/O: the caller passes in what it knows of each instance and the current time,
and tells the policy what happened afterwards. The same policy object therefore runs unchanged inside the
FastAPI service (time = ``time.monotonic()``) and inside the discrete-event simulator (time = simulated clock).

Call order for one request: ``choose`` → ``on_routed`` → ``on_progress``* → ``on_finished`` (or ``on_failed``);
``plan_migrations`` is called periodically, independently of any one request, and only while the caller's
migration switch is on (``BalancerConfig.migrate``, mirrored by the simulator's ``SimConfig.migrate``). After the
caller executes a ``Migration`` (or fails a request over), it reports where the request now runs with ``on_routed``
for the same ``request_id`` (``generated_tokens`` set to what was relayed so far); policies treat that as a move,
not a new request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class RequestInfo:
    """What the balancer knows of a request when it routes it."""

    request_id: str
    prompt_key: str  # hash of the prompt; siblings (the n samples of one prompt) share it
    prompt_tokens: int  # prompt length in tokens (estimated when the prompt is text)
    max_tokens: int  # the request's output cap
    generated_tokens: int = 0  # > 0 when a migrated/failed-over request continues elsewhere
    # The client's expected total output length (the request field ``am_rl_expected_tokens``, see
    # load_balancer.hints); None when the request carries none or the balancer ignored a malformed one.
    expected_tokens: int | None = None


@dataclass(frozen=True)
class InstanceState:
    """A snapshot of one instance, built by the caller from its own counters and the last /metrics scrape."""

    url: str
    healthy: bool
    in_flight: int  # requests the balancer has routed there and not seen finish
    running: int  # vllm:num_requests_running (last scrape)
    waiting: int  # vllm:num_requests_waiting (last scrape)
    kv_cache_usage: float  # vllm:kv_cache_usage_perc, 0..1 (last scrape)
    # Measured generation rate of the whole instance (0 when unknown yet). No capacity: it grows with the batch.
    tokens_per_s: float
    scrape_age_s: float  # seconds since the last successful scrape (inf when never)
    decode_step_s: float | None = None  # seconds per decode step in the last scrape interval (None unless clean:
    # see load_balancer.registry.Instance.decode_step_s)


@dataclass(frozen=True)
class RunningRequest:
    """A request in flight, as the balancer tracks it (input to migration planning)."""

    request: RequestInfo
    url: str  # instance it runs on now
    generated_tokens: int  # tokens relayed so far (across earlier instances too)
    started_at: float  # when it was first routed


@dataclass(frozen=True)
class Migration:
    """Move ``request_id`` from ``source`` to ``target``: abort there, continue from prompt + generated ids."""

    request_id: str
    source: str
    target: str


@dataclass(frozen=True)
class InstanceEstimate:
    """What a policy expects of one instance now, in the model it routes on (the dashboard shows it)."""

    remaining_tokens: float  # output tokens its requests in flight are still expected to generate
    drain_s: float  # seconds until it has finished them


class RoutingPolicy(Protocol):
    name: str

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        """Return the url of one healthy instance from ``instances`` (never empty, all healthy)."""
        ...

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None: ...

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None: ...

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None: ...

    def on_failed(self, request_id: str, now: float) -> None: ...

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        """Called periodically by the balancer; return the moves to make now ([] for policies that never move)."""
        ...

    def estimates(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> dict[str, InstanceEstimate]:
        """Per instance url, what the policy expects of it now, from the same model it routes on; no side effects.
        {} for policies without a model of work (count-based baselines)."""
        ...


def healthy_instances(instances: Sequence[InstanceState]) -> list[InstanceState]:
    """The healthy ones among ``instances``; raises when there are none (a policy cannot route anywhere)."""
    healthy = [s for s in instances if s.healthy]
    if not healthy:
        raise ValueError("no healthy instance to route to")
    return healthy


POLICIES: dict[str, Callable[[], RoutingPolicy]] = {}


def register_policy(name: str):
    """Class decorator: make a policy constructible by name (``--policy NAME``); clashing names raise."""

    def decorator(cls):
        if name in POLICIES:
            raise ValueError(f"routing policy {name!r} is already registered by {POLICIES[name]}")
        cls.name = name
        POLICIES[name] = cls
        return cls

    return decorator


def make_policy(name: str, **options) -> RoutingPolicy:
    """``options`` go to the policy's constructor (e.g. ``--policy-option min_gain_s=2``)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown routing policy {name!r}; known: {sorted(POLICIES)}") from None
    return cls(**options)
