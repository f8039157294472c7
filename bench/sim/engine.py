"""The simulator's event loop: vLLM instances decoding under a routing policy, in fixed ticks of simulated time.

Each tick (``dt_s``, also the metrics scrape interval) runs, in order: arrivals routed through ``policy.choose``; the
policy's migrations executed (abort at the source, re-prefill prompt + generated tokens at the destination);
progress reported; vLLM-style FCFS admission per instance (``max_num_seqs``, KV capacity); the instances advance
``dt_s`` (prefill first, then decode steps timed by :class:`SpeedModel`); finished requests reported; sequences
preempted (recompute, newest first) where the KV cache overflows; a scrape taken. Policies see the scrape taken one
tick earlier (``metrics_staleness_s``) plus the balancer's own fresh in-flight counts, exactly the inputs the live
balancer has. Within a tick, each instance's step time is taken at the tick's midpoint context, which is exact for
the linear growth of context; finishing sequences hold their slot to the end of the tick (a slight pessimism).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass

import numpy as np

from bench.sim.calibration import DEFAULT_SPEED, SpeedModel
from bench.sim.workload import Workload
from load_balancer.policy import InstanceState, RequestInfo, RoutingPolicy, RunningRequest

PENDING, WAITING, PREFILL, RUNNING, DONE = range(5)


@dataclass(frozen=True)
class SimConfig:
    dt_s: float = 0.25  # tick length and scrape interval, simulated seconds
    progress_interval_s: float = 1.0  # how often on_progress is reported for every request in flight
    migrate: bool = True  # the balancer's migration switch (load_balancer.config.BalancerConfig.migrate)
    plan_interval_s: float = 1.0  # with migrate on, how often the balancer asks the policy for migrations
    max_time_s: float = 200_000.0  # safety stop; a run that reaches it raises


@dataclass(frozen=True)
class SimResult:
    makespan_s: float  # last finish
    finish_s: np.ndarray  # (n,) finish time per request
    instance_finish_s: np.ndarray  # (m,) last finish among requests that finished on each instance (0 if none)
    migrations: int
    reprefill_tokens: int  # prompt + generated tokens re-read at migration destinations
    preemptions: int


def urls_for(n_instances: int) -> list[str]:
    return [f"sim://instance-{k}" for k in range(n_instances)]


def request_infos(workload: Workload) -> list[RequestInfo]:
    """What the balancer knows of each request: ids, prompt key and length, max_tokens; never the output length."""
    return [
        RequestInfo(f"r{i}", f"p{int(workload.prompt_of[i])}", int(workload.prompt_tokens[i]), workload.max_tokens)
        for i in range(workload.n)
    ]


class _RunningView(SequenceABC):
    """The requests in flight as ``RunningRequest``s, built only when a policy reads them."""

    def __init__(self, idx, infos, urls, inst, gen, started):
        self._idx, self._infos, self._urls, self._inst, self._gen, self._started = idx, infos, urls, inst, gen, started

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        i = int(self._idx[k])
        return RunningRequest(self._infos[i], self._urls[self._inst[i]], int(self._gen[i]), float(self._started[i]))


def simulate(
    workload: Workload,
    n_instances: int,
    policy: RoutingPolicy,
    arrival_order: np.ndarray,
    speed: SpeedModel = DEFAULT_SPEED,
    config: SimConfig = SimConfig(),
) -> SimResult:
    """Run one rollout step: every request arrives at time 0 in ``arrival_order`` (a permutation of 0..n-1)."""
    n, m, dt = workload.n, n_instances, config.dt_s
    urls = urls_for(m)
    index_of = {u: k for k, u in enumerate(urls)}
    infos = request_infos(workload)
    prompt = workload.prompt_tokens.astype(np.float64)
    target = workload.output_tokens.astype(np.float64)

    inst = np.full(n, -1, dtype=np.int64)
    phase = np.full(n, PENDING, dtype=np.int8)
    gen = np.zeros(n)  # output tokens so far (fractional within a tick)
    prefill_left = np.zeros(n)  # seconds of prefill still owed before decoding
    queued_at = np.zeros(n)  # FCFS order key in the instance's waiting queue
    admitted_at = np.zeros(n)  # admission order, for newest-first preemption
    started = np.zeros(n)  # when each request was first routed (RunningRequest.started_at)
    finish = np.full(n, np.nan)
    in_flight = np.zeros(m, dtype=np.int64)
    counter = 0.0  # monotone key for queue and admission order
    migrations = reprefill_tokens = preemptions = 0

    # The scrape visible to the policy (taken one tick ago); all zeros before the first one.
    seen_running = np.zeros(m, dtype=np.int64)
    seen_waiting = np.zeros(m, dtype=np.int64)
    seen_kv = np.zeros(m)
    seen_rate = np.zeros(m)

    def snapshot() -> list[InstanceState]:
        return [
            InstanceState(
                urls[k], True, int(in_flight[k]), int(seen_running[k]), int(seen_waiting[k]),
                float(seen_kv[k]), float(seen_rate[k]), dt,
            )
            for k in range(m)
        ]

    def enqueue(i: int, k: int) -> None:
        nonlocal counter
        counter += 1.0
        inst[i], phase[i], queued_at[i] = k, WAITING, counter

    now = 0.0
    next_progress = config.progress_interval_s
    next_plan = config.plan_interval_s
    while True:
        # Arrivals: the whole step's requests at time 0, routed one by one in arrival order.
        if now == 0.0:
            states = snapshot()
            for i in arrival_order:
                url = policy.choose(infos[i], states, now)
                k = index_of[url]
                policy.on_routed(infos[i], url, now)
                enqueue(int(i), k)
                started[i] = now
                in_flight[k] += 1
                states[k] = dataclasses.replace(states[k], in_flight=int(in_flight[k]))

        plans = []
        if config.migrate and now >= next_plan:
            next_plan += config.plan_interval_s
            live = np.flatnonzero((phase >= WAITING) & (phase <= RUNNING))
            plans = policy.plan_migrations(snapshot(), _RunningView(live, infos, urls, inst, gen, started), now)
        for move in plans:
            i = int(move.request_id[1:])
            src, dst = index_of[move.source], index_of[move.target]
            if inst[i] != src or not WAITING <= phase[i] <= RUNNING or src == dst:
                continue  # stale plan: the request already finished or moved
            gen[i] = np.floor(gen[i])  # the balancer relays whole tokens; continue from those
            enqueue(i, dst)
            in_flight[src] -= 1
            in_flight[dst] += 1
            migrations += 1
            reprefill_tokens += int(prompt[i] + gen[i])
            policy.on_routed(dataclasses.replace(infos[i], generated_tokens=int(gen[i])), move.target, now)

        if now >= next_progress:
            next_progress += config.progress_interval_s
            for i in np.flatnonzero(phase == RUNNING):
                policy.on_progress(infos[i].request_id, int(gen[i]), now)

        # Admission: vLLM admits its waiting queue in FCFS order while a slot and KV room for the context remain.
        resident = (phase == PREFILL) | (phase == RUNNING)
        used = np.bincount(inst[resident], weights=prompt[resident] + gen[resident], minlength=m)
        slots = np.bincount(inst[resident], minlength=m)
        waiting = np.flatnonzero(phase == WAITING)
        waiting = waiting[np.lexsort((queued_at[waiting], inst[waiting]))]
        for queue in np.split(waiting, np.flatnonzero(np.diff(inst[waiting])) + 1) if len(waiting) else ():
            k = inst[queue[0]]
            for i in queue:
                need = prompt[i] + gen[i]
                if slots[k] >= speed.max_num_seqs or used[k] + need > speed.kv_capacity_tokens:
                    break  # the head of the queue does not fit: nothing behind it is admitted either
                counter += 1.0
                phase[i], admitted_at[i], prefill_left[i] = PREFILL, counter, speed.prefill_s(need)
                slots[k] += 1
                used[k] += need

        # Prefill first (FIFO by admission), then decode with the time left in the tick.
        busy = np.zeros(m)
        pre = np.flatnonzero(phase == PREFILL)
        for i in pre[np.lexsort((admitted_at[pre], inst[pre]))]:
            k = inst[i]
            spend = min(dt - busy[k], prefill_left[i])
            busy[k] += spend
            prefill_left[i] -= spend
            if prefill_left[i] <= 1e-12:
                phase[i] = RUNNING

        run = np.flatnonzero(phase == RUNNING)
        tokens_this_tick = np.zeros(m)
        if len(run):
            k_of = inst[run]
            ctx = prompt[run] + gen[run]
            batch = np.bincount(k_of, minlength=m)
            total = np.bincount(k_of, weights=ctx, minlength=m)
            peak = np.zeros(m)
            np.maximum.at(peak, k_of, ctx)
            decode_s = dt - busy
            steps = decode_s / speed.step_s(batch, total, peak)
            step = speed.step_s(batch, total + batch * steps / 2.0, peak + steps / 2.0)  # midpoint of the tick
            advance = (decode_s / step)[k_of]
            left = target[run] - gen[run]
            done = advance >= left
            made = np.minimum(advance, left)
            gen[run] += made
            tokens_this_tick = np.bincount(k_of, weights=made, minlength=m)
            fin = run[done]
            fin_time = now + busy[k_of[done]] + left[done] * step[k_of[done]]
            finish[fin] = fin_time
            phase[fin] = DONE
            np.subtract.at(in_flight, inst[fin], 1)
            for j in np.argsort(fin_time, kind="stable"):
                policy.on_finished(infos[fin[j]].request_id, int(target[fin[j]]), float(fin_time[j]))

        # Preemption: where contexts outgrew the KV cache, send the newest admitted back to the front of the queue.
        resident = (phase == PREFILL) | (phase == RUNNING)
        used = np.bincount(inst[resident], weights=prompt[resident] + gen[resident], minlength=m)
        for k in np.flatnonzero(used > speed.kv_capacity_tokens):
            victims = np.flatnonzero(resident & (inst == k))
            for i in victims[np.argsort(-admitted_at[victims])]:
                if used[k] <= speed.kv_capacity_tokens:
                    break
                used[k] -= prompt[i] + gen[i]
                phase[i], queued_at[i] = WAITING, -admitted_at[i]
                preemptions += 1

        now += dt
        resident = (phase == PREFILL) | (phase == RUNNING)
        seen_running = np.bincount(inst[resident], minlength=m)
        seen_waiting = np.bincount(inst[phase == WAITING], minlength=m)
        kv_used = np.bincount(inst[resident], weights=prompt[resident] + gen[resident], minlength=m)
        seen_kv = kv_used / speed.kv_capacity_tokens
        seen_rate = tokens_this_tick / dt

        if not np.any(phase != DONE):
            break
        if now > config.max_time_s:
            raise RuntimeError(f"simulation of {policy.name} did not finish within {config.max_time_s} s")

    instance_finish = np.zeros(m)
    np.maximum.at(instance_finish, inst, finish)
    return SimResult(float(finish.max()), finish, instance_finish, migrations, reprefill_tokens, preemptions)
