"""The step timeline behind the dashboard: per instance, how many sequences it ran when; where each step's tail was;
which sequences moved; and each step's makespan against a lower bound. The last few steps only (a ring buffer).

A *step* is one rollout phase of the trainer: a burst of requests. It opens when a request is placed on an instance
while no step is open. It closes once nothing is in flight and then either the trainer pauses routing (its weight sync
calls ``POST /instances/pause`` after every rollout, so that is the reliable boundary) or nothing is placed for
``idle_gap_s`` (for clients that never pause). Its end is the moment the last request left, so neither the pause nor
the idle wait counts in its makespan. A request placed before the step closed belongs to it: in-flight touches 0
inside a step when the trainer dispatches in waves, and between a failover's two attempts.

**Lower bound** (``lower_bound_s``): the step's generated tokens divided by the sum over instances of the highest
rate each one sustained over ``rate_window_s`` within the step — the makespan had every instance run all step at its
own best observed pace. Each instance's best is at least its average, so makespan / bound >= 1 always, and how far
above 1 it is says how much of the capacity the instances showed was left idle, mostly in the tail. It is measured, not
proven: an instance that never ran a full batch shows a peak below what it could do, which makes the bound looser.

**Tail** (``tail_start_s``): the end of the step during which at most ``max(1, tail_fraction x peak)`` sequences were
in flight (peak = the step's most sequences in flight at once): the long sequences everyone waits for.

Nothing here writes an instance's counters: occupancy and relayed tokens are read from the registry when the proxy
reports that they changed (``observe``) and every ``sample_interval_s`` (``tick``); moves and pauses are recorded as
events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from load_balancer.config import TimelineConfig
from load_balancer.registry import Registry
from load_balancer.types import LaneView, MoveView, StepView, TimelineSnapshot

logger = logging.getLogger(__name__)


def compact(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Half as many change points: each pair becomes one at the first's time with the larger count. The last point
    stays as it is: it says what runs now (or that the step ended idle)."""
    body = points[:-1]
    merged = [(body[i][0], max(p[1] for p in body[i : i + 2])) for i in range(0, len(body), 2)] + points[-1:]
    return [p for k, p in enumerate(merged) if k == 0 or p[1] != merged[k - 1][1]]


def record(points: list[tuple[float, int]], t: float, n: int, max_points: int) -> list[tuple[float, int]]:
    """``points`` with the count ``n`` from ``t`` on (a change point only when the count changed)."""
    if points and points[-1][1] == n:
        return points
    if points and points[-1][0] == t:
        points[-1] = (t, n)
    else:
        points.append((t, n))
    return compact(points) if len(points) > max_points else points


@dataclass
class Move:
    at: float  # monotonic time the sequence left its source
    source: str
    target: str
    migrated: bool  # True: moved by the migration loop; False: failed over after its instance broke
    tokens: int  # tokens it had generated before the move


@dataclass
class Lane:
    """One instance within one step."""

    tokens_at_start: int  # the instance's tokens_relayed when the step (or its lane) began
    points: list[tuple[float, int]] = field(default_factory=list)  # (s since step start, in flight from then on)
    tokens: int = 0  # relayed within the step, as of the last reading
    peak_rate: float = 0.0  # tokens/s, best over rate_window_s
    window: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic time, tokens) readings

    @property
    def in_flight(self) -> int:
        return self.points[-1][1] if self.points else 0

    def read_tokens(self, tokens_relayed: int, now: float, window_s: float) -> None:
        self.tokens = tokens_relayed - self.tokens_at_start
        self.window.append((now, self.tokens))
        while len(self.window) > 1 and self.window[1][0] <= now - window_s:
            self.window.popleft()
        first_at, first_tokens = self.window[0]
        if now - first_at >= window_s:
            self.peak_rate = max(self.peak_rate, (self.tokens - first_tokens) / (now - first_at))


@dataclass
class Step:
    index: int
    started_at: float  # monotonic
    lanes: dict[str, Lane] = field(default_factory=dict)
    totals: list[tuple[float, int]] = field(default_factory=list)  # (s since start, in flight on all instances)
    moves: list[Move] = field(default_factory=list)
    moves_dropped: int = 0
    running: int = 0  # sequences in flight on all its lanes now, kept as they change (a sum per event is O(instances))
    requests: int = 0  # requests that ended (answered or failed) while the step was open
    idle_since: float | None = None  # monotonic time in-flight last fell to 0; the step's end if nothing follows
    ended_at: float | None = None
    closed_by: str | None = None  # "pause" or "idle"

    def makespan(self, now: float) -> float:
        return (self.ended_at if self.ended_at is not None else now) - self.started_at

    def lower_bound(self, now: float) -> float | None:
        span = self.makespan(now)
        tokens = sum(lane.tokens for lane in self.lanes.values())
        # An instance's peak is at least its average: this keeps the bound <= makespan in steps shorter than the window
        rates = sum(max(lane.peak_rate, lane.tokens / span if span > 0 else 0.0) for lane in self.lanes.values())
        return min(span, tokens / rates) if tokens > 0 and rates > 0 else None  # min: rounding, when peaks are averages

    def tail_start(self, tail_fraction: float) -> float | None:
        """Seconds after the start at which the tail began: after the last time more than the tail's limit were in
        flight. None while the step is still above it, or never was (one sequence alone is no tail)."""
        limit = max(1, int(tail_fraction * max((n for _, n in self.totals), default=0)))
        start, above = None, False
        for t, n in self.totals:
            if n > limit:
                start, above = None, True
            elif start is None and above:
                start = t
        return start


class Timeline:
    """Records steps from the proxy's events and the registry's counters; ``snapshot`` is what the dashboard polls."""

    def __init__(self, cfg: TimelineConfig, registry: Registry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.closed: deque[Step] = deque(maxlen=cfg.steps)
        self.current: Step | None = None
        self.steps_started = 0

    # ---- events (all on the balancer's event loop) ---------------------------------------------------------------

    def observe(self, url: str, now: float) -> None:
        """The proxy changed ``url``'s in-flight count (placed or released a request): read it."""
        inst = self.registry.instances.get(url)
        in_flight = inst.in_flight if inst is not None else 0
        step = self.current
        if step is None:
            if in_flight == 0:
                return
            step = self.open(now)
        lane = step.lanes.get(url) or self.add_lane(step, url, now)
        step.running += in_flight - lane.in_flight
        lane.points = record(lane.points, now - step.started_at, in_flight, self.cfg.max_points)
        step.idle_since = now if step.running == 0 else None
        step.totals = record(step.totals, now - step.started_at, step.running, self.cfg.max_points)

    def on_finished(self) -> None:
        if self.current is not None:
            self.current.requests += 1

    def on_move(self, now: float, source: str, target: str, migrated: bool, tokens: int) -> None:
        step = self.current
        if step is None:
            return
        if len(step.moves) >= self.cfg.max_moves:
            step.moves_dropped += 1
            return
        step.moves.append(Move(now, source, target, migrated, tokens))

    def on_pause(self, now: float) -> None:
        """The trainer paused routing (weight sync): the step ends here if nothing is in flight."""
        step = self.current
        if step is not None and step.running == 0:
            self.close(now, "pause")

    def tick(self, now: float) -> None:
        """Read every lane's relayed tokens (rate peaks); close a step that has been idle for idle_gap_s."""
        step = self.current
        if step is None:
            return
        self.read_tokens(step, now)
        for url in self.registry.instances.keys() - step.lanes.keys():  # registered mid-step
            self.add_lane(step, url, now)
        if step.idle_since is not None and step.running == 0 and now - step.idle_since >= self.cfg.idle_gap_s:
            self.close(now, "idle")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sample_interval_s)
            self.tick(time.monotonic())

    # ---- steps ---------------------------------------------------------------------------------------------------

    def open(self, now: float) -> Step:
        self.steps_started += 1
        step = self.current = Step(index=self.steps_started, started_at=now)
        for url in self.registry.instances:
            self.add_lane(step, url, now)
        return step

    def add_lane(self, step: Step, url: str, now: float) -> Lane:
        inst = self.registry.instances.get(url)
        lane = step.lanes[url] = Lane(tokens_at_start=inst.tokens_relayed if inst is not None else 0)
        lane.window.append((now, 0))
        lane.points = [(now - step.started_at, inst.in_flight if inst is not None else 0)]
        step.running += lane.in_flight
        return lane

    def close(self, now: float, why: str) -> None:
        step = self.current
        if step is None:
            return
        self.read_tokens(step, now)
        step.ended_at = step.idle_since if step.idle_since is not None else now
        step.closed_by = why
        self.closed.append(step)
        self.current = None
        logger.info(
            "step %d ended (%s): makespan %.2f s, %d requests, %d moves",
            step.index, why, step.makespan(now), step.requests, len(step.moves) + step.moves_dropped,
        )  # fmt: skip

    def read_tokens(self, step: Step, now: float) -> None:
        for url, lane in step.lanes.items():
            inst = self.registry.instances.get(url)
            if inst is not None:  # a removed instance keeps its last reading
                lane.read_tokens(inst.tokens_relayed, now, self.cfg.rate_window_s)

    # ---- the dashboard's view ------------------------------------------------------------------------------------

    def snapshot(self, detail: int | None = None, now: float | None = None) -> TimelineSnapshot:
        """Every kept step's numbers; lanes and moves of step ``detail`` only (the newest when None or gone): at 512
        instances one step's lanes are ~10^5 points, too many to send for every step twice a second."""
        now = time.monotonic() if now is None else now
        wall = time.time() - now  # monotonic -> wall clock
        steps = [*self.closed, *([self.current] if self.current is not None else [])]
        if detail not in {step.index for step in steps}:
            detail = steps[-1].index if steps else None
        return TimelineSnapshot(
            now=now + wall,
            tail_fraction=self.cfg.tail_fraction,
            steps=[self.view(step, now, wall, step.index == detail) for step in steps],
        )

    def view(self, step: Step, now: float, wall: float, detailed: bool) -> StepView:
        start = step.started_at
        return StepView(
            index=step.index,
            started_at=start + wall,
            open=step.ended_at is None,
            closed_by=step.closed_by,
            makespan_s=step.makespan(now),
            lower_bound_s=step.lower_bound(now),
            tail_start_s=step.tail_start(self.cfg.tail_fraction),
            requests=step.requests,
            tokens=sum(lane.tokens for lane in step.lanes.values()),
            peak_in_flight=max((n for _, n in step.totals), default=0),
            moves_total=len(step.moves) + step.moves_dropped,
            detailed=detailed,
            lanes=[
                LaneView(url=url, points=list(lane.points), tokens=lane.tokens, peak_tokens_per_s=lane.peak_rate)
                for url, lane in sorted(step.lanes.items())
                if detailed
            ],
            moves=[
                MoveView(t_s=m.at - start, source=m.source, target=m.target, migrated=m.migrated, tokens=m.tokens)
                for m in step.moves
                if detailed
            ],
        )
