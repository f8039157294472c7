"""Which waiting sample starts next when the rollout client is at its in-flight cap: the longest expected first.

With every sample of a step in flight at once the balancer sees them all and the order does not matter. When the
client caps what is in flight (``am_rl.balancer.max_concurrency`` below the step's samples), the rest wait here, and
the order they start in sets the step's tail: a long sample started last ends last. Starting the longest expected
first is the classic longest-processing-time-first rule. Expected, from two sources:

- the samples' length hints (``am_rl.rollout.priors``);
- within the step, the group's own samples (siblings share a prompt): a group whose started samples have run long
  is a hard prompt whose waiting samples will run long too. Seer (arXiv 2511.14617) sends one sample per group
  first as a length probe and schedules the rest from what it shows; here every group's first sample starts before
  any group's second (the probe), and then groups go by the ``quantile`` of their started samples' lengths so far
  (finished or not), or their hint if larger. The 0.75 quantile: in the simulator (6 seeds, 2,048 of 4,096 in
  flight, no hints) 0.25 / 0.5 / 0.75 / 1.0 gave -5.8 / -6.6 / -7.7 / -6.0% vs round robin, against -4.9% in
  arrival order; 1.0 (the longest) cannot tell groups apart while all their samples still run.

The gate ranks a whole burst, not only what waits (:class:`LongestFirstGate`): it lets a step's samples arrive
(they trickle in from verl's agent loop) before it starts any, so the first ``limit`` to start are already the
longest expected of the step. ``bench/sim_steps.py`` (20 seeds, 3 steps, 2,048 of 4,096 in flight;
bench/results/lb_sim_steps.md), ``makespan`` against round robin behind a first-come-first-served client: in arrival
order -6.2 to -7.6%, in this order -9.4 to -10.5% without hints and -17.3 to -17.7% with the trainer's noisy hints
(ordering only what waits gave -11.8 to -13.1%).

A sample without a hint whose group has not started goes before every other: it may be the longest. Ties keep
arrival order, so a client whose samples share no prompt and carry no hint is first come, first served, as
``asyncio.Semaphore`` is. Written by hand because asyncio's semaphore admits only in arrival order and
``asyncio.PriorityQueue`` orders items, not waiters, and neither re-ranks them as samples progress.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Hashable


@dataclass
class _Group:
    hint: int | None  # the first hint seen for the group (the trainer gives siblings the same one)
    waiting: deque[tuple[int, Any]] = field(default_factory=deque)  # (arrival, item), arrival order
    lengths: dict[Hashable, int] = field(default_factory=dict)  # started sample -> its output tokens so far
    active: int = 0  # samples started and not ended
    rank: tuple[int, float, int] | None = None  # AdmissionOrder._rank's value, until the group changes


class AdmissionOrder:
    """The order waiting items start in (see the module docstring). No I/O and no clock: the client's gate and the
    simulator (``bench.sim.engine``) drive the same object."""

    def __init__(self, quantile: float = 0.75) -> None:
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        self.quantile = quantile
        self._groups: dict[Hashable, _Group] = {}
        self._arrivals = itertools.count()
        self.waiting = 0

    def _group(self, group: Hashable, hint: int | None) -> _Group:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group(hint)
        elif g.hint is None:
            g.hint = hint
        return g

    def add(self, item: Any, group: Hashable, expected_tokens: int | None) -> None:
        """``item`` (a sample of ``group``) waits to start."""
        g = self._group(group, expected_tokens)
        g.waiting.append((next(self._arrivals), item))
        g.rank = None
        self.waiting += 1

    def shown(self, group: Hashable) -> int | None:
        """The ``quantile`` of ``group``'s started samples' lengths so far; None before one started."""
        g = self._groups.get(group)
        if g is None or not g.lengths:
            return None
        seen = sorted(g.lengths.values())
        return seen[min(len(seen) - 1, int(self.quantile * len(seen)))]

    def _rank(self, key: Hashable) -> tuple[int, float, int]:
        """Larger starts first: (class, expected length, -arrival of the group's first waiting item). Cached per
        group (a burst of thousands of pops would otherwise re-sort every group's lengths each time)."""
        g = self._groups[key]
        if g.rank is None:
            head = -g.waiting[0][0]
            shown = self.shown(key)
            if shown is None:
                g.rank = (2, 0.0, head) if g.hint is None else (1, float(g.hint), head)
            else:
                g.rank = 1, float(max(shown, g.hint or 0)), head
        return g.rank

    def pop(self) -> tuple[Any, Hashable]:
        """The item to start next and its group (raises IndexError when none waits)."""
        if not self.waiting:
            raise IndexError("no item waits")
        key = max((k for k, g in self._groups.items() if g.waiting), key=self._rank)
        g = self._groups[key]
        item = g.waiting.popleft()[1]
        g.rank = None
        self.waiting -= 1
        if not g.waiting and g.active <= 0:  # started() brings it back; a cancelled waiter's group must not linger
            del self._groups[key]
        return item, key

    def started(self, group: Hashable, sample: Hashable, expected_tokens: int | None = None) -> None:
        """``sample`` of ``group`` began generating (whether it waited here or not)."""
        g = self._group(group, expected_tokens)
        g.lengths.setdefault(sample, 0)
        g.active += 1
        g.rank = None

    def progress(self, group: Hashable, sample: Hashable, tokens: int) -> None:
        """``sample`` has generated ``tokens`` output tokens so far (reports of an ended group are ignored)."""
        g = self._groups.get(group)
        if g is not None and tokens > g.lengths.get(sample, 0):
            g.lengths[sample] = tokens
            g.rank = None

    def ended(self, group: Hashable) -> None:
        """A started sample of ``group`` ended; a group with nothing running or waiting is forgotten."""
        g = self._groups.get(group)
        if g is None:
            return
        g.active -= 1
        if g.active <= 0 and not g.waiting:
            del self._groups[group]


class LongestFirstGate:
    """At most ``limit`` holders at a time; waiters enter in :class:`AdmissionOrder`.

    Arrivals are ranked as a burst: while slots are free, an arrival does not take one at once; the gate admits when
    no new arrival has come for ``settle_s``, or ``max_settle_s`` after the burst's first arrival, ranking every
    arrival so far together. A step's samples reach the client as a burst that trickles: verl's agent loop
    tokenizes each sample in a thread pool before it calls the client, so arrivals come a few at a time, well under
    ``settle_s`` apart. The first ``limit`` to start are then the longest expected of the whole step (and a probe of
    every group), not the first ``limit`` to finish tokenizing. Once every slot is held, a freed slot goes to the
    best waiter at once. The cost: every burst starts ``settle_s`` after its last arrival (20 ms against rollout
    steps of seconds to minutes), at most ``max_settle_s`` after its first."""

    def __init__(self, limit: int, settle_s: float = 0.02, max_settle_s: float = 1.0) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be >= 1, got {limit}")
        if not 0.0 <= settle_s <= max_settle_s:
            raise ValueError(f"need 0 <= settle_s <= max_settle_s, got {settle_s} and {max_settle_s}")
        self.limit = limit
        self.settle_s = settle_s
        self.max_settle_s = max_settle_s
        self.held = 0
        self.order = AdmissionOrder()
        self._admission: asyncio.TimerHandle | None = None  # the pending admission of the burst arriving now
        self._burst_began = 0.0

    @asynccontextmanager
    async def slot(
        self, expected_tokens: int | None, group: Hashable | None = None, sample: Hashable | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the ``limit`` slots for the body; wait for it first when all are held. ``group``: the
        sample's siblings' shared key (None: a group of its own); ``sample``: its key for ``order.progress``."""
        group = object() if group is None else group
        sample = object() if sample is None else sample
        await self._acquire(expected_tokens, group, sample)
        try:
            yield
        finally:
            self._release(group)

    async def _acquire(self, expected_tokens: int | None, group: Hashable, sample: Hashable) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.order.add((future, sample, expected_tokens), group, expected_tokens)
        if self.held < self.limit:  # admit when the burst is over: no arrival for settle_s, or max_settle_s in all
            now = loop.time()
            if self._admission is None:
                self._burst_began = now
            else:
                self._admission.cancel()
            delay = min(self.settle_s, max(0.0, self._burst_began + self.max_settle_s - now))
            self._admission = loop.call_later(delay, self._admit_burst)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # the slot was handed over as the waiter was cancelled
                self._release(group)
            raise

    def _admit_burst(self) -> None:
        self._admission = None
        self._admit()

    def _admit(self) -> None:
        """Hand free slots to waiters in the order's order; a sample counts as started (its group probed) from the
        moment it is handed its slot, so the next pick of the same burst already knows it."""
        while self.held < self.limit and self.order.waiting:
            (future, sample, expected_tokens), group = self.order.pop()
            if future.done():  # a cancelled waiter's future is done: skip it
                continue
            self.held += 1
            self.order.started(group, sample, expected_tokens)
            future.set_result(None)

    def _release(self, group: Hashable) -> None:
        self.order.ended(group)
        self.held -= 1
        self._admit()
