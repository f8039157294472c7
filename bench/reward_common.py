"""Shared pieces of the reward benchmarks: synthetic items, timed HTTP scoring, result files."""

import asyncio
import json
import os
import platform
import random
import secrets
import time
from pathlib import Path

import httpx

from reward_server.auth import headers

RESULTS = Path(__file__).resolve().parent / "results"
API_KEY = secrets.token_urlsafe(32)  # the benchmarks' services require a key, as a cluster's do (AUTH sends it)
AUTH = headers(API_KEY)


def math_items(n: int, seed: int = 0) -> list[dict]:
    """Varied, unique math items (fractions, roots, expressions, sets), about half of them correct."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        kind = i % 4
        if kind == 0:
            truth, answer = (
                f"\\frac{{{a}}}{{{b}}}",
                f"{a / b:.6f}" if rng.random() < 0.5 else f"\\frac{{{a}}}{{{b + 1}}}",
            )
        elif kind == 1:
            truth, answer = (
                f"{a}\\sqrt{{{b}}}",
                f"\\sqrt{{{a * a * b}}}" if rng.random() < 0.5 else f"{a + 1}\\sqrt{{{b}}}",
            )
        elif kind == 2:
            truth, answer = f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2" if rng.random() < 0.5 else f"(x+{a + 1})^2"
        else:
            truth, answer = f"\\{{{a}, {b}\\}}", f"\\{{{b}, {a}\\}}" if rng.random() < 0.5 else f"\\{{{a}, {b + 1}\\}}"
        response = f"<think>step {i}: try \\boxed{{0}}</think> Therefore the answer is \\boxed{{{answer}}}."
        items.append({"reward_type": "math", "response": response, "ground_truth": truth})
    return items


async def score_each(url: str, items: list[dict], concurrency: int) -> tuple[list[float], list[dict], float]:
    """POST every item to /score with bounded concurrency; per-item latencies (s), results, total wall (s)."""
    gate = asyncio.Semaphore(concurrency)
    latencies = [0.0] * len(items)
    results: list[dict] = [{}] * len(items)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits, headers=AUTH) as http:

        async def one(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                r = await http.post("/score", json=items[i])
                latencies[i] = time.perf_counter() - t0
                results[i] = r.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(items))))
        return latencies, results, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path
