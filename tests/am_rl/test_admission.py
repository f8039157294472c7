"""LongestFirstGate: who starts when the rollout client is at its in-flight cap (the client using it over real HTTP
is tested in test_rollout_client.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from am_rl.rollout.admission import AdmissionOrder, LongestFirstGate


def reference_order(hints: list[int | None]) -> list[int]:
    """Unhinted in arrival order, then hinted longest first, ties in arrival order."""
    unhinted = [i for i, h in enumerate(hints) if h is None]
    hinted = sorted((i for i, h in enumerate(hints) if h is not None), key=lambda i: (-hints[i], i))
    return unhinted + hinted


async def settle() -> None:
    """Let the gate admit the burst that arrived (it waits settle_s, 20 ms, after the last arrival) and those admitted
    run."""
    await asyncio.sleep(0.1)


async def admission_order(limit: int, hints: list[int | None]) -> tuple[list[int], int]:
    """Fill the gate with ``limit`` holders, queue one waiter per hint, then let every holder finish one at a time."""
    gate = LongestFirstGate(limit)
    order: list[int] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.slot(None):
            await release.wait()

    async def waiter(i: int, hint: int | None) -> None:
        async with gate.slot(hint):
            order.append(i)
            await asyncio.sleep(0)

    holders = [asyncio.create_task(holder()) for _ in range(limit)]
    await settle()
    assert gate.held == limit
    waiters = []
    for i, hint in enumerate(hints):
        waiters.append(asyncio.create_task(waiter(i, hint)))
        await asyncio.sleep(0)  # arrival order is creation order
    assert order == [], "nobody may start while every slot is held"
    release.set()
    await asyncio.gather(*holders, *waiters)
    return order, gate.held


@pytest.mark.parametrize("seed", range(5))
def test_waiters_start_unhinted_first_then_longest_first(seed):
    rng = random.Random(seed)
    hints = [None if rng.random() < 0.2 else rng.choice([16, 64, 64, 300, 1024, 4096]) for _ in range(40)]
    order, held = asyncio.run(admission_order(limit=3, hints=hints))
    assert order == reference_order(hints)
    assert held == 0


def test_without_hints_it_is_first_come_first_served():
    order, _ = asyncio.run(admission_order(limit=2, hints=[None] * 10))
    assert order == list(range(10))


def test_a_cancelled_waiter_never_takes_a_slot_and_frees_none():
    async def scenario() -> tuple[list[str], int]:
        gate = LongestFirstGate(1)
        started: list[str] = []
        release = asyncio.Event()

        async def job(name: str, hint: int | None, wait: bool) -> None:
            async with gate.slot(hint):
                started.append(name)
                if wait:
                    await release.wait()

        first = asyncio.create_task(job("first", None, True))
        await settle()
        doomed = asyncio.create_task(job("doomed", 1000, False))
        later = asyncio.create_task(job("later", 10, False))
        await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.sleep(0)
        assert gate.held == 1
        release.set()
        await asyncio.gather(first, later)
        assert doomed.cancelled()
        return started, gate.held

    started, held = asyncio.run(scenario())
    assert started == ["first", "later"] and held == 0


def test_a_waiter_cancelled_as_its_slot_arrives_passes_the_slot_on():
    async def scenario() -> tuple[list[str], int]:
        gate = LongestFirstGate(1)
        started: list[str] = []

        async def job(name: str) -> None:
            async with gate.slot(None):
                started.append(name)

        async with gate.slot(None):
            handed = asyncio.create_task(job("handed"))
            nxt = asyncio.create_task(job("next"))
            await asyncio.sleep(0)
        # The slot was handed to `handed` on exit; it is cancelled before it ever runs.
        handed.cancel()
        await asyncio.gather(handed, nxt, return_exceptions=True)
        return started, gate.held

    started, held = asyncio.run(scenario())
    assert started == ["next"] and held == 0


def test_limit_below_one_and_a_settle_beyond_its_maximum_are_refused():
    with pytest.raises(ValueError, match="in-flight limit must be >= 1"):
        LongestFirstGate(0)
    with pytest.raises(ValueError, match="settle_s <= max_settle_s"):
        LongestFirstGate(4, settle_s=2.0, max_settle_s=1.0)


def reference_pop_order(events: list[tuple], quantile: float) -> list[str]:
    """The documented order, spelled out over an event list: ("add", item, group, hint), ("start", group, sample,
    hint), ("progress", group, sample, tokens), ("end", group), ("pop",). At a pop: unstarted unhinted groups first,
    then by max(hint, the quantile of the started samples' lengths), ties to the group whose head came first."""
    waiting: list[tuple[int, str, str]] = []  # (arrival, item, group)
    hints: dict[str, int | None] = {}
    lengths: dict[str, dict[str, int]] = {}
    active: dict[str, int] = {}
    popped = []
    for arrival, event in enumerate(events):
        kind = event[0]
        if kind == "add":
            _, item, group, hint = event
            waiting.append((arrival, item, group))
            hints[group] = hints.get(group) if hints.get(group) is not None else hint
        elif kind == "start":
            _, group, sample, hint = event
            hints[group] = hints.get(group) if hints.get(group) is not None else hint
            lengths.setdefault(group, {}).setdefault(sample, 0)
            active[group] = active.get(group, 0) + 1
        elif kind == "progress":
            _, group, sample, tokens = event
            if group in lengths:
                lengths[group][sample] = max(lengths[group].get(sample, 0), tokens)
        elif kind == "end":
            active[event[1]] -= 1
        else:

            def rank(entry):
                arrival, _, group = entry
                head = min(a for a, _, g in waiting if g == group)
                seen = sorted(lengths.get(group, {}).values())
                if not seen:
                    return (2, 0.0, -head) if hints.get(group) is None else (1, hints[group], -head)
                shown = seen[min(len(seen) - 1, int(quantile * len(seen)))]
                return (1, max(shown, hints.get(group) or 0), -head, -arrival)

            best = max(waiting, key=rank)
            waiting.remove(best)
            popped.append(best[1])
        for group in [g for g, n in active.items() if n <= 0 and not any(w[2] == g for w in waiting)]:
            del active[group]
            lengths.pop(group, None)
            hints.pop(group, None)
    return popped


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantile", [0.5, 0.75, 1.0])
def test_admission_order_matches_the_reference(seed, quantile):
    rng = random.Random(seed)
    groups = [f"g{k}" for k in range(6)]
    group_hint = {g: (None if rng.random() < 0.5 else rng.choice([50, 400, 3000])) for g in groups}
    events: list[tuple] = []
    running: list[tuple[str, str]] = []
    n_waiting = 0
    for step in range(300):
        roll = rng.random()
        if roll < 0.3:
            g = rng.choice(groups)
            events.append(("add", f"i{step}", g, group_hint[g]))
            n_waiting += 1
        elif roll < 0.45 and n_waiting:
            events.append(("pop",))
            n_waiting -= 1
        elif roll < 0.6:
            g = rng.choice(groups)
            running.append((g, f"s{step}"))
            events.append(("start", g, f"s{step}", group_hint[g]))
        elif roll < 0.9 and running:
            g, s = rng.choice(running)
            events.append(("progress", g, s, rng.randrange(0, 5000)))
        elif running:
            g, s = running.pop(rng.randrange(len(running)))
            events.append(("end", g))
    order = AdmissionOrder(quantile)
    popped = []
    for event in events:
        kind, *args = event
        if kind == "add":
            order.add(*args)
        elif kind == "start":
            order.started(*args)
        elif kind == "progress":
            order.progress(*args)
        elif kind == "end":
            order.ended(*args)
        else:
            popped.append(order.pop()[0])
    assert popped == reference_pop_order(events, quantile)
    assert len(popped) > 20


def test_a_probe_of_every_group_starts_first_then_the_longest_running_group():
    order = AdmissionOrder()
    for k in range(3):
        for group in ("easy", "hard"):
            order.add(f"{group}{k}", group, None)
    probes = [order.pop()[0], order.pop()[0]]
    assert probes == ["easy0", "hard0"]  # one sample of each group before any second one
    order.started("easy", "easy0")
    order.started("hard", "hard0")
    order.progress("easy", "easy0", 40)
    order.progress("hard", "hard0", 900)
    assert [order.pop()[0], order.pop()[0]] == ["hard1", "hard2"]  # the hard prompt's samples run long: first
    assert order.pop()[0] == "easy1"
    with pytest.raises(IndexError):
        AdmissionOrder().pop()


def test_a_long_running_group_overtakes_earlier_arrivals_at_the_gate():
    async def scenario() -> list[str]:
        gate = LongestFirstGate(2)
        started: list[str] = []
        release = {name: asyncio.Event() for name in ("long0", "short0", "long1", "long2", "short1", "short2")}

        async def sample(name: str) -> None:
            group = name.rstrip("012")
            async with gate.slot(None, group, name):
                started.append(name)
                if name == "long0":
                    gate.order.progress(group, name, 500)  # it has streamed 500 tokens by the time others wait
                await release[name].wait()

        tasks = []
        for name in ("long0", "short0", "short1", "short2", "long1", "long2"):  # arrival order
            tasks.append(asyncio.create_task(sample(name)))
            await asyncio.sleep(0)
        gate.order.progress("short", "short0", 3)
        for name in ("short0", "long0", "long1", "short1", "long2", "short2"):  # each end frees one slot
            release[name].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert gate.held == 0
        return started

    assert asyncio.run(scenario()) == ["long0", "short0", "long1", "long2", "short1", "short2"]


async def burst_start_order(limit: int, samples: list[tuple[str, str, int | None]]) -> tuple[list[str], list[str]]:
    """Hand ``samples`` (name, group, hint) to a fresh gate in one burst, as ``generate_all`` does (one task each, no
    yield between them). Returns who held the ``limit`` slots first, and the whole start order."""
    gate = LongestFirstGate(limit)
    started: list[str] = []
    release = asyncio.Event()

    async def sample(name: str, group: str, hint: int | None) -> None:
        async with gate.slot(hint, group, name):
            started.append(name)
            await release.wait()

    tasks = [asyncio.create_task(sample(*s)) for s in samples]
    await settle()
    first = list(started)
    release.set()
    await asyncio.gather(*tasks)
    assert gate.held == 0
    return first, started


@pytest.mark.parametrize("seed", range(3))
def test_a_burst_is_ranked_whole_not_admitted_as_it_arrives(seed):
    rng = random.Random(seed)
    hints = [rng.choice([16, 64, 300, 1024, 4096, 9000]) for _ in range(24)]
    samples = [(str(i), f"g{i}", h) for i, h in enumerate(hints)]
    first, order = asyncio.run(burst_start_order(4, samples))
    expected = [str(i) for i in reference_order(hints)]
    assert first == expected[:4], "the slots go to the burst's longest hints, not to its first arrivals"
    assert order == expected


def test_a_burst_without_hints_starts_one_probe_per_group_first():
    samples = [(f"{g}{k}", g, None) for g in "abc" for k in range(3)]  # arrival: a0 a1 a2 b0 ...
    first, order = asyncio.run(burst_start_order(3, samples))
    assert first == ["a0", "b0", "c0"]
    assert sorted(order) == sorted(name for name, _, _ in samples)


def test_a_burst_that_trickles_in_is_still_ranked_whole():
    """verl's agent loop tokenizes each sample in a thread pool before it calls the client: a step's samples arrive
    a millisecond or so apart, never in one loop iteration. The gate waits for the burst to go quiet (settle_s)."""

    async def scenario(hints: list[int]) -> list[str]:
        gate = LongestFirstGate(4)
        started: list[str] = []
        release = asyncio.Event()

        async def sample(name: str, hint: int) -> None:
            async with gate.slot(hint, name, name):
                started.append(name)
                await release.wait()

        tasks = []
        for i, hint in enumerate(hints):
            tasks.append(asyncio.create_task(sample(str(i), hint)))
            await asyncio.sleep(0.002)
        await settle()
        first = list(started)
        release.set()
        await asyncio.gather(*tasks)
        return first

    rng = random.Random(7)
    hints = [rng.choice([16, 64, 300, 1024, 4096, 9000, 20000]) for _ in range(30)]
    assert asyncio.run(scenario(hints)) == [str(i) for i in reference_order(hints)[:4]]


def test_a_burst_that_never_goes_quiet_is_admitted_after_max_settle_s():
    async def scenario() -> tuple[float, list[int], list[int]]:
        gate = LongestFirstGate(2, settle_s=0.05, max_settle_s=0.2)
        loop = asyncio.get_running_loop()
        arrived: list[tuple[float, int]] = []
        admitted: list[tuple[float, int]] = []
        done = asyncio.Event()

        async def sample(hint: int) -> None:
            async with gate.slot(hint):
                admitted.append((loop.time(), hint))
                await done.wait()

        tasks = []
        began = loop.time()
        for hint in range(1, 60):  # one arrival every 10 ms for 0.6 s, each longer than the last
            arrived.append((loop.time(), hint))
            tasks.append(asyncio.create_task(sample(hint)))
            await asyncio.sleep(0.01)
        done.set()
        await asyncio.gather(*tasks)
        at = admitted[0][0]
        return at - began, [h for _, h in admitted[:2]], [h for t, h in arrived if t < at]

    waited, first, before = asyncio.run(scenario())
    assert 0.2 <= waited < 0.45, waited  # not held for the whole 0.6 s burst, nor admitted at once
    assert sorted(first) == sorted(before)[-2:]  # the two longest of what had arrived by then
