"""The simulator's event loop: vLLM instances decoding under a routing policy, in fixed ticks of simulated time.

:class:`SimCluster` is the instances and the balancer's records of them (the live balancer's own
:class:`load_balancer.registry.Instance`, fed by simulated scrapes and relays); it lives across steps as a real
balancer lives across a training run, so whatever a policy or the records carry from one step into the next is
exercised. Each tick (``dt_s``, also the metrics scrape interval) of a step runs, in order: arrivals routed through
``policy.choose`` (all at the step's start, or as the trainer's in-flight cap lets them in); the policy's migrations
executed (abort at the source, re-prefill prompt + generated tokens at the destination); progress reported; vLLM-style
FCFS admission per instance (``max_num_seqs``, KV capacity); the instances advance ``dt_s`` (prefill first, then
decode steps timed by :class:`SpeedModel`); finished requests reported; sequences preempted (recompute, newest first)
where the KV cache overflows; a scrape recorded. Policies see the records as of the last scrape plus the balancer's
own fresh in-flight counts, exactly the inputs the live balancer has. Within a tick, each instance's step time is
taken at the tick's midpoint context, which is exact for the linear growth of context; finishing sequences hold their
slot to the end of the tick (a slight pessimism).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass

import numpy as np

from bench.sim.calibration import DEFAULT_SPEED, SpeedModel
from bench.sim.workload import Workload
from load_balancer.config import BalancerConfig
from load_balancer.policy import InstanceState, RequestInfo, RoutingPolicy, RunningRequest
from load_balancer.registry import Instance

PENDING, WAITING, PREFILL, RUNNING, DONE = range(5)
_BALANCER = BalancerConfig()


@dataclass(frozen=True)
class SimConfig:
    dt_s: float = 0.25  # tick length and scrape interval, simulated seconds
    progress_interval_s: float = 1.0  # how often on_progress is reported for every request in flight
    migrate: bool = True  # the balancer's migration switch (load_balancer.config.BalancerConfig.migrate)
    plan_interval_s: float = _BALANCER.migration_interval_s  # with migrate on, how often the policy is asked to plan
    rate_window_s: float = _BALANCER.rate_window_s  # the records' relayed-rate window
    # The trainer's cap on requests in flight (its clients' concurrency); None: every request of a step arrives at
    # the step's start. With a cap, the next request arrives at the first tick after one finishes.
    max_in_flight: int | None = None
    # Which request the client sends next: "client", the trainer's client (am_rl.rollout.admission's AdmissionOrder
    # over the whole step, told each request's progress every progress_interval_s); "arrival", the arrival order as
    # given (first come, first served: the client before AdmissionOrder, and the oracle's fixed order).
    admission: str = "client"
    max_time_s: float = 200_000.0  # safety stop per step; a step that reaches it raises


@dataclass(frozen=True)
class SimResult:
    makespan_s: float  # last finish, from the step's start
    finish_s: np.ndarray  # (n,) finish time per request, from the step's start
    instance_finish_s: np.ndarray  # (m,) last finish among requests that finished on each instance (0 if none)
    migrations: int
    reprefill_tokens: int  # prompt + generated tokens re-read at migration destinations
    preemptions: int
    max_engine_waiting: int  # longest engine waiting queue in any scrape of the step


def urls_for(n_instances: int) -> list[str]:
    return [f"sim://instance-{k}" for k in range(n_instances)]


def request_id(step: int, i: int) -> str:
    """The id of request ``i`` of step ``step``: unique across a run, as the trainer's ids are."""
    return f"s{step}-r{i}"


def request_index(rid: str) -> int:
    """Inverse of :func:`request_id` within a step: the request's index in its workload."""
    return int(rid.rsplit("-r", 1)[1])


def step_of(rid: str) -> int:
    """Inverse of :func:`request_id`: the step the request belongs to."""
    return int(rid[1:].split("-r", 1)[0])


def request_infos(workload: Workload, step: int = 0) -> list[RequestInfo]:
    """What the balancer knows of each request: ids, prompt key and length, max_tokens, the client's hint when the
    workload has hints (``Workload.expected_tokens``); never the output length.
    Prompt keys are per step: a step draws new prompts, so nothing the policy learnt of a prompt carries over."""
    hints = [None] * workload.n if workload.expected_tokens is None else workload.expected_tokens.tolist()
    return [
        RequestInfo(request_id(step, i), f"s{step}-p{int(workload.prompt_of[i])}", int(workload.prompt_tokens[i]),
                    workload.max_tokens, expected_tokens=hints[i])
        for i in range(workload.n)
    ]


class _Waiting:
    """The requests of a step not yet sent, as the trainer's client holds them. All arrive at the step's start, in
    ``arrival_order``. ``client``: in the client's own AdmissionOrder, which ranks the whole burst (its gate admits
    a burst at the end of the loop iteration it arrived in) and is told every sent request's progress; otherwise
    first come, first served, in arrival order."""

    def __init__(self, arrival_order: np.ndarray, infos: list[RequestInfo], group: np.ndarray, client: bool) -> None:
        self._fifo = [int(i) for i in arrival_order][::-1]  # next at the end
        self._group = group
        self._hints = [info.expected_tokens for info in infos]
        self._order = None
        if client:
            # Imported here: the balancer's tests use this simulator and must not import the trainer's package
            # (tests/test_standalone_services.py) when they collect.
            from am_rl.rollout.admission import AdmissionOrder

            self._order = AdmissionOrder()
            for i in self._fifo[::-1]:
                self._order.add(i, int(group[i]), self._hints[i])
            self._fifo = []

    def __bool__(self) -> bool:
        return bool(self._fifo) or (self._order is not None and self._order.waiting > 0)

    def pop(self) -> int:
        if self._order is None:
            return self._fifo.pop()
        i = self._order.pop()[0]
        self._order.started(int(self._group[i]), i, self._hints[i])
        return i

    def progress(self, i: int, generated: int) -> None:
        if self._order is not None:
            self._order.progress(int(self._group[i]), i, generated)

    def ended(self, i: int, generated: int) -> None:
        if self._order is not None:
            self.progress(i, generated)
            self._order.ended(int(self._group[i]))


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


class SimCluster:
    """``n_instances`` identical simulated vLLM instances behind one policy object, and the balancer's records."""

    def __init__(
        self, n_instances: int, policy: RoutingPolicy, speed: SpeedModel = DEFAULT_SPEED, config: SimConfig = SimConfig()
    ) -> None:
        self.policy, self.speed, self.config = policy, speed, config
        self.urls = urls_for(n_instances)
        self.records = [Instance(url) for url in self.urls]  # what the balancer knows of each instance
        self.generated_total = np.zeros(n_instances)  # vllm:generation_tokens_total of each instance
        self.now = 0.0
        self.steps = 0
        self.scrape(*np.zeros((4, n_instances)))  # the balancer is up and scraping before the first request

    def snapshot(self) -> list[InstanceState]:
        return [r.state(self.now, self.config.rate_window_s) for r in self.records]

    def scrape(self, running: np.ndarray, waiting: np.ndarray, kv: np.ndarray, made: np.ndarray) -> None:
        """Record one scrape of every instance at ``now``; ``made`` (m,) are the tokens each relayed since the last."""
        self.generated_total += made
        for k, r in enumerate(self.records):
            if made[k] > 0:
                r.record_relayed(int(round(made[k])), self.now)
            r.record_scrape(int(running[k]), int(waiting[k]), float(kv[k]), float(self.generated_total[k]), self.now)

    def pause(self, seconds: float) -> None:
        """Weight sync between steps: the instances sit idle (nothing routed) while the balancer keeps scraping."""
        m = len(self.urls)
        for r in self.records:
            r.paused = True
        end = self.now + seconds
        while self.now < end:
            self.now += self.config.dt_s
            self.scrape(np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m))
        for r in self.records:
            r.paused = False

    def step(self, workload: Workload, arrival_order: np.ndarray) -> SimResult:
        """Run one rollout step: requests arrive in ``arrival_order`` (a permutation of 0..n-1)."""
        policy, speed, config = self.policy, self.speed, self.config
        n, m, dt = workload.n, len(self.urls), config.dt_s
        urls, records = self.urls, self.records
        index_of = {u: k for k, u in enumerate(urls)}
        infos = request_infos(workload, self.steps)
        index_of_request = {info.request_id: i for i, info in enumerate(infos)}
        prompt = workload.prompt_tokens.astype(np.float64)
        target = workload.output_tokens.astype(np.float64)
        cap = n if config.max_in_flight is None else config.max_in_flight
        start = self.now

        inst = np.full(n, -1, dtype=np.int64)
        phase = np.full(n, PENDING, dtype=np.int8)
        gen = np.zeros(n)  # output tokens so far (fractional within a tick)
        prefill_left = np.zeros(n)  # seconds of prefill still owed before decoding
        queued_at = np.zeros(n)  # FCFS order key in the instance's waiting queue
        admitted_at = np.zeros(n)  # admission order, for newest-first preemption
        started = np.zeros(n)  # when each request was first routed (RunningRequest.started_at)
        finish = np.full(n, np.nan)
        counter = 0.0  # monotone key for queue and admission order
        migrations = reprefill_tokens = preemptions = max_waiting = 0
        client = _Waiting(arrival_order, infos, workload.prompt_of, config.admission == "client")
        in_flight = 0

        def enqueue(i: int, k: int) -> None:
            nonlocal counter
            counter += 1.0
            inst[i], phase[i], queued_at[i] = k, WAITING, counter

        next_progress = start + config.progress_interval_s
        next_plan = start + config.plan_interval_s
        while True:
            now = self.now
            if client and in_flight < cap:
                states = self.snapshot()
                while client and in_flight < cap:
                    i = client.pop()
                    url = policy.choose(infos[i], states, now)
                    k = index_of[url]
                    policy.on_routed(infos[i], url, now)
                    enqueue(i, k)
                    started[i] = now
                    records[k].in_flight += 1
                    in_flight += 1
                    states[k] = dataclasses.replace(states[k], in_flight=records[k].in_flight)

            plans = []
            if config.migrate and now >= next_plan:
                next_plan += config.plan_interval_s
                live = np.flatnonzero((phase >= WAITING) & (phase <= RUNNING))
                plans = policy.plan_migrations(self.snapshot(), _RunningView(live, infos, urls, inst, gen, started), now)
            for move in plans:
                i = index_of_request[move.request_id]
                src, dst = index_of[move.source], index_of[move.target]
                if inst[i] != src or not WAITING <= phase[i] <= RUNNING or src == dst:
                    continue  # stale plan: the request already finished or moved
                gen[i] = np.floor(gen[i])  # the balancer relays whole tokens; continue from those
                enqueue(i, dst)
                records[src].in_flight -= 1
                records[dst].in_flight += 1
                migrations += 1
                reprefill_tokens += int(prompt[i] + gen[i])
                policy.on_routed(dataclasses.replace(infos[i], generated_tokens=int(gen[i])), move.target, now)

            if now >= next_progress:
                next_progress += config.progress_interval_s
                for i in np.flatnonzero(phase == RUNNING):
                    policy.on_progress(infos[i].request_id, int(gen[i]), now)
                    client.progress(i, int(gen[i]))

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
                finish[fin] = fin_time - start
                phase[fin] = DONE
                in_flight -= len(fin)
                if len(fin):
                    ended = np.bincount(inst[fin], minlength=m)
                    for k in np.flatnonzero(ended):
                        records[k].in_flight -= int(ended[k])
                for j in np.argsort(fin_time, kind="stable"):
                    policy.on_finished(infos[fin[j]].request_id, int(target[fin[j]]), float(fin_time[j]))
                    client.ended(fin[j], int(target[fin[j]]))

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

            self.now = now + dt
            resident = (phase == PREFILL) | (phase == RUNNING)
            queued = np.bincount(inst[phase == WAITING], minlength=m)
            max_waiting = max(max_waiting, int(queued.max()))
            kv_used = np.bincount(inst[resident], weights=prompt[resident] + gen[resident], minlength=m)
            self.scrape(np.bincount(inst[resident], minlength=m), queued, kv_used / speed.kv_capacity_tokens,
                        tokens_this_tick)

            if not np.any(phase != DONE):
                break
            if self.now - start > config.max_time_s:
                raise RuntimeError(f"simulation of {policy.name} did not finish within {config.max_time_s} s")

        self.steps += 1
        instance_finish = np.zeros(m)
        np.maximum.at(instance_finish, inst, finish)
        return SimResult(float(finish.max()), finish, instance_finish, migrations, reprefill_tokens, preemptions,
                         max_waiting)


def simulate(
    workload: Workload,
    n_instances: int,
    policy: RoutingPolicy,
    arrival_order: np.ndarray,
    speed: SpeedModel = DEFAULT_SPEED,
    config: SimConfig = SimConfig(),
) -> SimResult:
    """One rollout step on a fresh cluster (a cold balancer)."""
    return SimCluster(n_instances, policy, speed, config).step(workload, arrival_order)


def simulate_steps(
    workloads: Sequence[Workload],
    n_instances: int,
    policy: RoutingPolicy,
    arrival_orders: Sequence[np.ndarray],
    speed: SpeedModel = DEFAULT_SPEED,
    config: SimConfig = SimConfig(),
    pause_s: float = 60.0,  # weight sync (and the trainer's update) between steps: instances idle, still scraped
) -> list[SimResult]:
    """Consecutive rollout steps through one policy object and one set of records, as in a training run."""
    cluster = SimCluster(n_instances, policy, speed, config)
    results = []
    for k, (workload, order) in enumerate(zip(workloads, arrival_orders, strict=True)):
        if k:
            cluster.pause(pause_s)
        results.append(cluster.step(workload, order))
    return results
