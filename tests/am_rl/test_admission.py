"""LongestFirstGate: who starts when the rollout client is at its in-flight cap; and the client using it over real
HTTP (a real balancer in front of load generators, synthetic vLLM-shaped servers)."""

from __future__ import annotations

import asyncio
import random

import pytest

from am_rl.rollout import RolloutClient, RolloutRequest
from am_rl.rollout.admission import LongestFirstGate
from load_balancer.config import BalancerConfig
from load_balancer.loadgen import MODEL, LoadGenSettings, build_loadgen_app
from load_balancer.server import BalancerServer, ThreadedServer


def reference_order(hints: list[int | None]) -> list[int]:
    """Unhinted in arrival order, then hinted longest first, ties in arrival order."""
    unhinted = [i for i, h in enumerate(hints) if h is None]
    hinted = sorted((i for i, h in enumerate(hints) if h is not None), key=lambda i: (-hints[i], i))
    return unhinted + hinted


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
    await asyncio.sleep(0)
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
        await asyncio.sleep(0)
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


def test_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="in-flight limit must be >= 1"):
        LongestFirstGate(0)


@pytest.fixture(scope="module")
def balancer_url():
    engines = [ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=2000))).start() for _ in range(2)]
    lb = BalancerServer(BalancerConfig(port=0, instances=[e.url for e in engines])).start()
    yield lb.url
    lb.stop()
    for e in engines:
        e.stop()


def test_the_client_at_its_cap_starts_the_longest_expected_first(balancer_url):
    hints = [8, None, 30, 2, 30, None, 16, 4]

    async def run() -> list[str]:
        finished: list[str] = []
        async with RolloutClient(balancer_url, MODEL, max_concurrency=1) as client:
            async def one(i: int, hint: int | None) -> None:
                await client.generate(RolloutRequest(f"r{i}", [i + 1, 7], max_tokens=4, expected_tokens=hint))
                finished.append(f"r{i}")

            # r99 takes the one slot first, so every sample below queues behind it.
            tasks = [asyncio.create_task(one(99, None))]
            await asyncio.sleep(0)
            tasks += [asyncio.create_task(one(i, h)) for i, h in enumerate(hints)]
            await asyncio.gather(*tasks)
        return finished

    finished = asyncio.run(run())
    assert finished == ["r99"] + [f"r{i}" for i in reference_order(hints)]
