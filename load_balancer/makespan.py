"""Our routing policy, ``makespan`` (the default): route on projected finish, migrate off laggards at the tail.

A plain object behind :class:`load_balancer.policy.RoutingPolicy` (no I/O, time passed in), shared by the live
balancer and the simulator in ``bench/``. Units: tokens, seconds, tokens/s.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from load_balancer.estimates import DrainQueue, InstanceLoads, Planned, StepTimeFit, Targets
from load_balancer.policy import (
    InstanceEstimate,
    InstanceState,
    Migration,
    RequestInfo,
    RunningRequest,
    healthy_instances,
    register_policy,
)


@dataclass
class _Tracked:
    """What ``makespan`` remembers of one request in flight."""

    request: RequestInfo
    url: str
    generated: int  # output tokens so far, across every instance it ran on
    migrations: int = 0
    moved_at: float = -math.inf
    load: float = 0.0  # expected remaining tokens it adds to its instance's load (as estimated when added)


@register_policy("makespan")
class MakespanPolicy:
    """Route to the earliest projected finish; migrate the longest-remaining sequences off laggards.

    **Length estimate.** A request's expected total output is the largest of: the mean its finished siblings
    reached, shrunk toward a prior (the client's hint ``RequestInfo.expected_tokens`` with weight ``hint_weight``
    when the request carries one, else ``prior_fraction * max_tokens`` with weight ``prior_weight``), the
    ``live_quantile`` (the longest) of ``(1 + lindy) * generated`` over its running siblings (a hard prompt shows
    itself by its samples running long: the longest-running one is a within-step length probe), and ``(1 + lindy)`` times its own progress (a long-tailed length that has run far
    runs further); capped by ``max_tokens``. Remaining = that minus what it generated. Siblings share one estimate
    per prompt, from the first of them seen in each refresh: the trainer sends them all the same hint.

    **Routing.** Projected finish of an instance = (remaining work + ``risk`` * sqrt(variance)) times its slowness
    (its step time over a typical instance's at the same load, :class:`StepTimeFit`) times a KV / queueing penalty.
    Never the measured tokens/s: that scales with the batch the instance ran (a full instance reads fast, a tail
    instance slow), so routing on it sent a step's requests to the instances whose previous step had ended fullest,
    and mid-step to those already holding the most sequences. The variance treats the remaining lengths of one
    prompt's siblings as fully correlated and different prompts as independent, so piling siblings onto one instance
    costs more than spreading them: that keeps a hard prompt's 16 samples off a single "crowded" instance.

    **Migration.** Sequences on one instance advance in lockstep (one token per step each), so an instance holding
    remaining lengths ``r_j`` at contexts ``x_j`` drains in ``t0 * max r + a * sum r + c * sum(x_j r_j + r_j²/2)``
    seconds, with ``t0, a, c`` fitted online from scrapes (:class:`StepTimeFit`, times the instance's slowness).
    Migration estimates lengths from what this step shows (siblings, progress), never from the client's hints: a hint
    is one noisy number per prompt, good for placing a request that has shown nothing yet, but at the tail a
    hinted-long request that is in fact short looks like a laggard and draws moves. In bench/sim_steps.py hints in
    migration made steps ~1.5% longer than no hints; kept out of it, hinted and unhinted steps are equal. A request
    waiting in an engine's queue is not decoding: an instance with a queue (or a KV cache above ``kv_soft``)
    receives no moves, since a moved request would wait there behind the queue. Planning moves the longest-remaining
    request of the instance that drains last to the instance that would then drain earliest (re-prefill of prompt +
    generated tokens included), while that shortens the later of the two by ``min_gain`` and ``min_gain_s``.
    Then each of the ``spread_fraction * instances`` longest-remaining requests moves to the instance where it would
    finish earliest (its own finish: the others there slow only the steps they share with it), when that beats its
    finish where it is by the same margins; the longer requests already at a target count too, as that target's drain.
    A moved request stays put ``cooldown_s`` and moves at most ``max_migrations_per_request`` times. Whether moves
    happen at all, and how often a plan is asked for, is the balancer's (``BalancerConfig.migrate``,
    ``migration_interval_s``): the policy plans whenever it is asked.
    """

    def __init__(
        self,
        *,
        prior_fraction: float = 0.25,  # expected length / max_tokens before a sibling has finished
        prior_weight: float = 2.0,  # pseudo-count of the prior when averaging finished siblings
        # Pseudo-count of the client's length hint (RequestInfo.expected_tokens) in place of the prior above: a hint
        # summarises earlier epochs' samples of the prompt, so it outweighs the generic prior but still yields to
        # this step's finished siblings (the policy drifts between epochs).
        hint_weight: float = 4.0,
        # Which running sibling's progress shows how long a prompt's samples run: 0.5 the median one; 1.0 the
        # longest-running one, a within-step length probe (Seer, arXiv 2511.14617) for prompts without a hint. 1.0:
        # in bench/sim_steps.py (20 seeds, 3 steps, no hints) its steps were 1.8-2.3% shorter than 0.5's with half a
        # step in flight, and equal (within 0.2%) with all of it.
        live_quantile: float = 1.0,
        # Of a hinted request's expected length, the fraction the risk term treats as a guess (1: as unhinted). The
        # risk term's square root rewards stacking guessed-long requests together, harmless while every guess is
        # the same prior but, with hints, it piled the hinted-long requests onto a few instances: in
        # bench/sim_steps.py even exact hints routed 4% slower than round robin with 1.0.
        hint_risk: float = 0.0,
        lindy: float = 0.5,  # a request that has generated g tokens is expected to generate >= lindy * g more
        max_prompts: int = 65_536,  # prompts whose finished sibling lengths are remembered (oldest forgotten)
        risk: float = 1.0,  # weight of the standard deviation of an instance's work in its projected finish
        kv_soft: float = 0.90,  # KV-cache usage above which new work will queue or be preempted
        refresh_s: float = 1.0,  # recompute every instance's expected work at most this often
        min_gain: float = 0.01,  # a move must shorten max(source, target) drain by this fraction...
        # ...and by this many seconds (hysteresis: no ping-pong on noise). 5 rather than 3 since the spread pass
        # below: together they beat 3 in bench/sim_routing.py (alone, 5 is slightly worse than 3).
        min_gain_s: float = 5.0,
        cooldown_s: float = 60.0,  # a moved request stays put at least this long
        max_migrations_per_request: int = 2,
        max_moves_per_plan: int = 16,
        # The last-draining instance is often not where the step's last finisher runs: estimates cannot tell the
        # eventually-longest requests apart early, so each of this many (per instance) longest-estimated ones is
        # also placed where it would finish earliest. In bench/sim_routing.py (64 instances, 20 seeds) 0.25, 0.5
        # and 1.0 all give ~1.206x the lower bound against 1.215x without the pass; 0.5 bounds the planning work.
        spread_fraction: float = 0.5,
        prefill_tokens_per_s: float = 8_000.0,  # re-prefill speed assumed when costing a move
    ) -> None:
        self.prior_fraction = prior_fraction
        self.prior_weight = prior_weight
        self.hint_weight = hint_weight
        self.live_quantile = live_quantile
        self.hint_risk = hint_risk
        self.lindy = lindy
        self.risk = risk
        self.kv_soft = kv_soft
        self.refresh_s = refresh_s
        self.min_gain = min_gain
        self.min_gain_s = min_gain_s
        self.cooldown_s = cooldown_s
        self.max_migrations_per_request = max_migrations_per_request
        self.max_moves_per_plan = max_moves_per_plan
        self.spread_fraction = spread_fraction
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self.max_prompts = max_prompts
        self.fit = StepTimeFit()

        self._tracked: dict[str, _Tracked] = {}
        self._siblings: dict[str, set[str]] = defaultdict(set)  # prompt_key -> request ids in flight
        self._finished_by_prompt: OrderedDict[str, list[int]] = OrderedDict()
        self._loads = InstanceLoads()
        self._context: dict[str, float] = defaultdict(float)  # url -> prompt + generated tokens of its requests
        self._refreshed_at = -math.inf
        self._observed_scrape: dict[str, float] = {}  # url -> time of its last scrape fed to the fit

    # --- length estimates -------------------------------------------------------------------------------------

    def expected_remaining(self, request: RequestInfo, generated: int) -> float:
        """Expected output tokens still to come (see the class docstring), at least 1 while the request runs."""
        return float(self.expected_remaining_many([request], np.array([generated]))[0])

    def expected_remaining_many(
        self, requests: Sequence[RequestInfo], generated: Sequence[int], hinted: bool = True
    ) -> np.ndarray:
        """(k,) expected remaining tokens of ``requests`` (k,) that have generated ``generated`` (k,) tokens; with
        ``hinted`` False, the client's hints are ignored (migration plans without them, see the class docstring)."""
        per_prompt: dict[str, float] = {}  # prompt_key -> expected total from its siblings
        for request in requests:
            if request.prompt_key not in per_prompt:
                per_prompt[request.prompt_key] = self._prompt_estimate(request, hinted)
        k = len(requests)
        prompt_estimate = np.fromiter((per_prompt[r.prompt_key] for r in requests), np.float64, k)
        cap = np.fromiter((r.max_tokens for r in requests), np.float64, k)
        g = np.asarray(generated, dtype=np.float64)
        estimate = np.maximum(prompt_estimate, (1.0 + self.lindy) * g)
        return np.maximum(1.0, np.minimum(cap, estimate) - g)

    def _prompt_estimate(self, request: RequestInfo, hinted: bool = True) -> float:
        """Expected total length of a sample of ``request``'s prompt, from the client's hint (if ``hinted``) or the
        generic prior, its finished siblings and its running ones."""
        done = self._finished_by_prompt.get(request.prompt_key, ())
        if hinted and request.expected_tokens is not None:
            prior, weight = float(request.expected_tokens), self.hint_weight
        else:
            prior, weight = self.prior_fraction * request.max_tokens, self.prior_weight
        estimate = (weight * prior + sum(done)) / (weight + len(done))
        live = sorted(self._tracked[s].generated for s in self._siblings.get(request.prompt_key, ()))
        if live:
            probe = live[min(len(live) - 1, int(self.live_quantile * len(live)))]
            estimate = max(estimate, (1.0 + self.lindy) * probe)
        return estimate

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def _uncertain(self, request: RequestInfo) -> float:
        """The fraction of ``request``'s expected remaining length that is a guess (see ``hint_risk``)."""
        return 1.0 if request.expected_tokens is None else self.hint_risk

    def _add_load(self, t: _Tracked) -> None:
        r = self.expected_remaining(t.request, t.generated)
        self._loads.add(t.url, t.request.prompt_key, r, self._uncertain(t.request) * r)
        t.load = r

    def _remove_load(self, t: _Tracked) -> None:
        self._loads.remove(t.url, t.request.prompt_key, t.load, self._uncertain(t.request) * t.load)

    def _refresh(self, now: float) -> None:
        """Recompute every instance's work from current estimates (they drift as siblings finish and requests grow)."""
        tracked = list(self._tracked.values())
        remaining = self.expected_remaining_many([t.request for t in tracked], [t.generated for t in tracked])
        uncertain = np.fromiter((self._uncertain(t.request) for t in tracked), np.float64, len(tracked)) * remaining
        self._loads.rebuild([(t.url, t.request.prompt_key) for t in tracked], remaining, uncertain)
        for t, r in zip(tracked, remaining.tolist()):
            t.load = r
        self._refreshed_at = now

    def _drop(self, request_id: str) -> _Tracked | None:
        t = self._tracked.pop(request_id, None)
        if t is not None:
            live = self._siblings[t.request.prompt_key]
            live.discard(request_id)
            if not live:  # a long-lived balancer sees endless prompts: keep only those in flight
                del self._siblings[t.request.prompt_key]
            if math.isfinite(self._refreshed_at):
                self._remove_load(t)
            self._context[t.url] -= t.request.prompt_tokens + t.generated
        return t

    def _advance(self, t: _Tracked, generated: int) -> None:
        """``t`` has generated ``generated`` tokens (reports can arrive late: never move it back)."""
        if generated > t.generated:
            self._context[t.url] += generated - t.generated
            t.generated = generated

    def on_routed(self, request: RequestInfo, url: str, now: float) -> None:
        """Record a new request, or (same request_id) a migration / failover that continued it on ``url``."""
        t = self._drop(request.request_id)
        if t is None:
            t = _Tracked(request, url, request.generated_tokens)
        t.url, t.generated = url, max(t.generated, request.generated_tokens)
        self._tracked[request.request_id] = t
        self._context[url] += request.prompt_tokens + t.generated
        self._siblings[request.prompt_key].add(request.request_id)
        if math.isfinite(self._refreshed_at):
            self._add_load(t)

    def on_progress(self, request_id: str, generated_tokens: int, now: float) -> None:
        t = self._tracked.get(request_id)
        if t is not None:
            self._advance(t, generated_tokens)

    def on_finished(self, request_id: str, generated_tokens: int, now: float) -> None:
        t = self._drop(request_id)
        if t is None:
            return
        key = t.request.prompt_key
        self._finished_by_prompt.setdefault(key, []).append(generated_tokens)
        self._finished_by_prompt.move_to_end(key)
        if len(self._finished_by_prompt) > self.max_prompts:
            self._finished_by_prompt.popitem(last=False)

    def on_failed(self, request_id: str, now: float) -> None:
        self._drop(request_id)

    # --- routing ----------------------------------------------------------------------------------------------

    def _penalty(self, s: InstanceState) -> float:
        """>1 when the instance is saturated: a full KV cache or a waiting queue means new work will not start now."""
        kv_excess = max(0.0, s.kv_cache_usage - self.kv_soft) / (1.0 - self.kv_soft)
        return 1.0 + kv_excess + s.waiting / max(1, s.running)

    def projected_finish(
        self, states: Sequence[InstanceState], extra: float = 0.0, extra_key: str = "", extra_uncertain: float = 1.0
    ) -> np.ndarray:
        """(k,) when each of ``states`` (k,) drains its expected work plus ``extra`` tokens of prompt ``extra_key``
        (``extra_uncertain`` of them a guess), in tokens of a typical instance (only the order between instances
        matters to routing)."""
        loads = self._loads
        rows = np.fromiter((loads.row(s.url) for s in states), np.int64, len(states))
        siblings = loads.by_prompt.get(extra_key)
        same_prompt = np.array([siblings.get(k, 0.0) for k in rows.tolist()]) if siblings else 0.0
        u = extra_uncertain * extra
        variance = loads.variance[rows] + 2.0 * same_prompt * u + u * u
        work = loads.work[rows] + extra + self.risk * np.sqrt(variance)
        penalty = np.fromiter((self._penalty(s) for s in states), np.float64, len(states))
        return work * self.fit.slowness_many([s.url for s in states]) * penalty

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        healthy = healthy_instances(instances)
        self._observe(instances, now)
        if now - self._refreshed_at >= self.refresh_s:
            self._refresh(now)
        r = self.expected_remaining(request, request.generated_tokens)
        costs = self.projected_finish(healthy, r, request.prompt_key, self._uncertain(request))
        return healthy[int(np.argmin(costs))].url

    def _observe(self, instances: Sequence[InstanceState], now: float) -> None:
        """Feed the step-time fit each instance's clean scrape interval once (see ``InstanceState.decode_step_s``)."""
        fresh = [s for s in instances if s.decode_step_s is not None
                 and now - s.scrape_age_s > self._observed_scrape.get(s.url, -math.inf) + 1e-9]
        if not fresh:
            return
        context = self._context
        self.fit.observe([s.url for s in fresh], [s.running for s in fresh], [context.get(s.url, 0.0) for s in fresh],
                         [s.decode_step_s for s in fresh])
        for s in fresh:
            self._observed_scrape[s.url] = now - s.scrape_age_s

    def estimates(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> dict[str, InstanceEstimate]:
        """Each instance's expected remaining tokens and its drain time in the lockstep model migration plans with
        (the step-time fit scaled by the instance's slowness); reads the policy's state, changes none of it."""
        running = [rr for rr in running if rr.request.request_id in self._tracked]
        remaining = self.expected_remaining_many([rr.request for rr in running], [rr.generated_tokens for rr in running],
                                                 hinted=False)  # fmt: skip
        theta = self.fit.coefficients()
        queues = {s.url: DrainQueue(theta * self.fit.slowness(s.url)) for s in instances}
        for rr, r in zip(running, remaining):
            if rr.url in queues:
                queues[rr.url].add(Planned(float(r), rr.request.prompt_tokens + rr.generated_tokens, rr))
        return {
            url: InstanceEstimate(remaining_tokens=sum(it.remaining for it in q.items), drain_s=q.drain_s())
            for url, q in queues.items()
        }

    # --- migration --------------------------------------------------------------------------------------------

    def plan_migrations(
        self, instances: Sequence[InstanceState], running: Sequence[RunningRequest], now: float
    ) -> list[Migration]:
        """Moves that shorten the step's projected finish (see the class docstring); [] most of the time."""
        healthy = {s.url: s for s in instances if s.healthy}
        items: list[Planned] = []
        running = list(running)
        for rr in running:
            t = self._tracked.get(rr.request.request_id)
            if t is not None:
                self._advance(t, rr.generated_tokens)
        self._observe(instances, now)
        remaining = self.expected_remaining_many([rr.request for rr in running], [rr.generated_tokens for rr in running],
                                                 hinted=False)  # fmt: skip
        for rr, r in zip(running, remaining):
            if rr.url in healthy:
                items.append(Planned(float(r), rr.request.prompt_tokens + rr.generated_tokens, rr))
        if len(healthy) < 2:
            return []
        theta = self.fit.coefficients()
        queues = {url: DrainQueue(theta * self.fit.slowness(url)) for url in healthy}
        for item in items:
            queues[item.running.url].add(item)
        free = [url for url, s in healthy.items() if s.waiting == 0 and s.kv_cache_usage <= self.kv_soft]
        targets = Targets(queues, free)
        drain = {url: q.drain_s() for url, q in queues.items()}

        moves: list[Migration] = []
        received: set[str] = set()
        while len(moves) < self.max_moves_per_plan:
            source = max((u for u in drain if u not in received), key=lambda u: (drain[u], u), default=None)
            if source is None:
                break
            before = drain[source]
            movable = sorted((it for it in queues[source].items if self._movable(_request_id(it), now)),
                             key=_longest_first)
            if not movable:
                break
            item = movable[0]  # the longest-remaining request that may move
            r, x = item.remaining, item.context
            target = targets.earliest(source, r, x)
            if target is None:
                break
            after = max(queues[source].drain_without_s(item), queues[target].drain_with_s(r, x) + self._stall_s(x))
            if before - after < max(self.min_gain * before, self.min_gain_s):
                break
            moves.append(self._move(item, source, target, queues, targets, now))
            drain[source], drain[target] = queues[source].drain_s(), queues[target].drain_s()
            received.add(target)
        return moves + self._spread(items, queues, targets, moves, now)

    def _spread(
        self, items: list[Planned], queues: dict[str, DrainQueue], targets: Targets, planned: list[Migration], now: float
    ) -> list[Migration]:
        """Move each of the longest-remaining requests to where it would finish earliest (see the class docstring)."""
        moves: list[Migration] = []
        skip = {m.request_id for m in planned}  # moved by the drain pass already
        longest = sorted(items, key=_longest_first)
        for item in longest[: int(self.spread_fraction * len(queues))]:
            if len(planned) + len(moves) >= self.max_moves_per_plan:
                break
            r, x = item.remaining, item.context
            if _request_id(item) in skip or not self._movable(_request_id(item), now):
                continue
            source = item.running.url
            before = queues[source].finish_s(r)
            target = targets.earliest(source, r, x)
            if target is None:
                continue
            after = queues[target].drain_with_s(r, x) + self._stall_s(x)
            if before - after >= max(self.min_gain * before, self.min_gain_s):
                moves.append(self._move(item, source, target, queues, targets, now))
        return moves

    def _stall_s(self, context: float) -> float:
        """Seconds a target stops decoding while it re-prefills a moved request's ``context`` tokens."""
        return context / self.prefill_tokens_per_s

    def _move(
        self, item: Planned, source: str, target: str, queues: dict[str, DrainQueue], targets: Targets, now: float
    ) -> Migration:
        """Record moving ``item`` from ``source`` to ``target`` in the planning queues and the request's history."""
        queues[source].remove(item)
        queues[target].add(item)
        queues[target].stall_s += self._stall_s(item.context)
        targets.update(source)
        targets.update(target)
        t = self._tracked.get(_request_id(item))
        if t is not None:
            t.migrations, t.moved_at = t.migrations + 1, now
        return Migration(_request_id(item), source, target)

    def _movable(self, request_id: str, now: float) -> bool:
        t = self._tracked.get(request_id)
        return t is None or (t.migrations < self.max_migrations_per_request and now - t.moved_at >= self.cooldown_s)


def _request_id(item: Planned) -> str:
    return item.running.request.request_id


def _longest_first(item: Planned) -> tuple[float, str]:
    """Sort key: the most remaining tokens first; ties by request id, so plans are deterministic."""
    return -item.remaining, _request_id(item)
