"""The CPU demo on verl's trainer with two balancer processes (``am_rl.balancer.processes=2``): the launcher starts
two ``python -m load_balancer`` shards, the checkpoint manager registers one engine with each, the agent loop's
client spreads the samples over both, every weight push pauses and resumes each engine at its own shard, and the
shards stop with the run. The launch and its overrides are test_demo_on_verl's; only the balancer differs."""

from __future__ import annotations

import ast
import re
import threading
import time

import httpx
import psutil
import pytest
from test_demo_on_verl import (  # noqa: F401  (reward, no_run_outlives_the_tests: fixtures used here too)
    PROMPTS,
    SAMPLES,
    Launch,
    engine_urls,
    metrics,
    no_run_outlives_the_tests,
    reward,
    watch_versions,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def completions_served(shard_url: str) -> float:
    """The shard's own request counter (lb_requests_total) for completions it answered with 200."""
    text = httpx.get(f"{shard_url}/metrics", timeout=2).text
    found = re.findall(r'^lb_requests_total\{endpoint="([^"]*)",status="200"\} (\S+)$', text, re.M)
    return sum(float(value) for endpoint, value in found if "completions" in endpoint)


def test_two_steps_through_two_balancer_shards(tmp_path, reward):  # noqa: F811
    # No validation: the steps' samples are the only requests, so the shards' counts add up to them exactly.
    launch = Launch(tmp_path, reward, "am_rl.balancer.processes=2", "trainer.total_training_steps=2",
                    "trainer.val_before_train=false", "trainer.test_freq=-1")  # fmt: skip
    versions = watch_versions(launch, engine_urls(launch))
    shards = [launch.wait_for(rf"load balancer shard {i} of 2 at (\S+) \(dashboard: \S+/dashboard\)", 300)[1]
              for i in (1, 2)]  # fmt: skip
    shard_procs = shard_processes(launch)
    assert len(shard_procs) == 2, "the launcher's own balancer processes"
    served = {url: 0.0 for url in shards}

    def watch_shards() -> None:  # the counters live in the shards, which stop with the run
        while launch.proc.poll() is None:
            for url in shards:
                try:
                    served[url] = completions_served(url)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)

    threading.Thread(target=watch_shards, daemon=True).start()
    assert launch.wait() == 0, launch.tail()

    steps = metrics(tmp_path)
    assert {1, 2} <= set(steps), f"steps logged: {sorted(steps)}"
    assert all(steps[s]["response/aborted_ratio"] == 0.0 for s in (1, 2))
    # Both shards relayed samples, by their own /metrics while the run was up.
    assert all(count > 0 for count in served.values()), served
    # At exit each shard's totals: every sample of both steps went through one of them, each shard owned one engine.
    totals = re.findall(r"balancer shard (\d)/2 totals: requests=(\d+) .* per_engine_tokens=(\{.*\})", launch.output)
    assert [shard for shard, _, _ in totals] == ["1", "2"], launch.tail()
    assert sum(int(requests) for _, requests, _ in totals) == 2 * PROMPTS * SAMPLES
    owned = [ast.literal_eval(per_engine) for _, _, per_engine in totals]
    assert [len(o) for o in owned] == [1, 1] and set(owned[0]) | set(owned[1]) == set(versions)
    assert all(tokens > 0 for o in owned for tokens in o.values()), owned
    # Both engines took every push, each paused and resumed at its own shard: the last one is step 2's.
    for url, seen in versions.items():
        assert "step-2" in seen, f"{url} reported {seen}"
    # Nothing the run started is left, the two shard processes included.
    launch.assert_nothing_left()
    assert not any(p.is_running() for p in shard_procs)


def shard_processes(launch: Launch) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(launch.proc.pid).children(recursive=True):
        try:
            if "load_balancer" in p.cmdline() and "--shard" in p.cmdline():
                found.append(p)
        except psutil.Error:
            pass
    return found
