"""Where a policy loses time against the lower bound: instrumentation of one simulated rollout step.

:class:`Recorder` wraps any routing policy and passes every call through unchanged, noting what the balancer sees:
each planning round's requests in flight (instance, tokens so far) and the moves it executed (a second
``on_routed`` for a request id). :func:`diagnose` turns that and the run's result into a few
numbers per run: how much slower than alone the sequences that bound the makespan ran, how spread the instances'
finishes are, queueing, and what migration cost in re-prefill. Units: seconds, tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bench.sim.bounds import alone_s
from bench.sim.calibration import DEFAULT_SPEED, SpeedModel
from bench.sim.engine import SimResult, request_id, request_index, step_of
from bench.sim.workload import Workload
from load_balancer.policy import InstanceState, Migration, RequestInfo, RoutingPolicy, RunningRequest


@dataclass
class _Sample:
    now: float
    where: dict[str, tuple[str, int]]  # request_id -> (instance url, tokens so far)


@dataclass
class Recorder:
    """A pass-through ``RoutingPolicy`` that records what the balancer observes of the wrapped one's run."""

    inner: RoutingPolicy
    sample_every_s: float = 10.0  # keep one planning round's view of the requests in flight this often
    samples: list[_Sample] = field(default_factory=list)
    moves: list[tuple[float, str, int]] = field(default_factory=list)  # (time, request_id, tokens re-prefilled)
    _routed: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.inner.name

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        return self.inner.choose(request, instances, now)

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        if request.request_id in self._routed:
            self.moves.append((now, request.request_id, request.prompt_tokens + request.generated_tokens))
        self._routed.add(request.request_id)
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
        if not self.samples or now - self.samples[-1].now >= self.sample_every_s:
            self.samples.append(_Sample(now, {r.request.request_id: (r.url, r.generated_tokens) for r in running}))
        return self.inner.plan_migrations(instances, running, now)


def diagnose(
    workload: Workload,
    result: SimResult,
    recorder: Recorder,
    speed: SpeedModel = DEFAULT_SPEED,
    timeline_points: int = 8,
    step: int = 0,
) -> dict:
    """Numbers that say where ``result`` (the run's step ``step``) lost time.

    ``slowdown`` is a request's finish time over the time it would take alone (bound 1 of :mod:`bench.sim.bounds`);
    the makespan is the last finisher's ``alone * slowdown``. ``last_finisher_timeline`` follows that request:
    tokens so far, the requests sharing its instance and their context tokens (its own included).
    """
    alone = alone_s(workload, speed)
    slowdown = result.finish_s / alone
    last = int(np.argmax(result.finish_s))
    capped = workload.output_tokens >= workload.max_tokens
    tail = capped if capped.any() else workload.output_tokens >= np.percentile(workload.output_tokens, 99)
    finishes = result.instance_finish_s[result.instance_finish_s > 0]
    moves = [(t, r, tokens) for t, r, tokens in recorder.moves if step_of(r) == step]
    reprefill_s = float(sum(speed.prefill_s(tokens) for _, _, tokens in moves))

    timeline = []
    rid = request_id(step, last)
    seen = [s for s in recorder.samples if rid in s.where]
    for s in (seen[k] for k in np.unique(np.linspace(0, len(seen) - 1, timeline_points).astype(int))) if seen else ():
        url, generated = s.where[rid]
        sharing = [r for r, (u, _) in s.where.items() if u == url]
        context = sum(int(workload.prompt_tokens[request_index(r)]) + s.where[r][1] for r in sharing)
        timeline.append({"t_s": s.now, "generated": generated, "sharing": len(sharing), "context_tokens": context})

    return {
        "last_finisher": {
            "output_tokens": int(workload.output_tokens[last]),
            "alone_s": float(alone[last]),
            "finish_s": float(result.finish_s[last]),
            "slowdown": float(slowdown[last]),
            "migrations": sum(1 for _, r, _ in moves if r == rid),
        },
        "tail_requests": int(tail.sum()),  # the truncated ones (or the longest 1% if none is)
        "tail_slowdown_mean": float(slowdown[tail].mean()),
        "instance_finish_s": {q: float(np.percentile(finishes, p)) for q, p in (("p10", 10), ("p50", 50), ("max", 100))},
        "max_engine_waiting": result.max_engine_waiting,
        "preemptions": result.preemptions,
        "migrations": len(moves),
        "reprefill_s": reprefill_s,  # instance time stalled re-prefilling moved requests, summed over instances
        "last_finisher_timeline": timeline,
    }
