"""Math throughput: items/s through the reward service vs raw in-process Math-Verify, same items, one run.

    PYTHONPATH=. python bench/reward_math.py [--items 2000] [--workers 2]

The raw baseline is our math verifier's own code path (last box + Math-Verify parse/verify) called in this
process; the service adds HTTP, Redis, the worker queue and the hard-killable verifier processes.
"""

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from bench.reward_common import API_KEY, AUTH, machine, math_items, write
from reward_server.config import WorkerSettings
from reward_server.launcher import reward_service
from reward_server.types import MathItem
from reward_server.verifiers.math import MathVerifier


def raw_items_per_s(items: list[dict]) -> tuple[float, list[float]]:
    verifier = MathVerifier(WorkerSettings())
    parsed = [MathItem.model_validate(it) for it in items]
    verifier.verify(parsed[0])  # warm imports and caches, as a long-lived worker would be
    t0 = time.perf_counter()
    scores = [verifier.verify(it).score for it in parsed]
    return len(items) / (time.perf_counter() - t0), scores


def service_items_per_s(url: str, items: list[dict], chunk: int) -> tuple[float, list[float]]:
    with httpx.Client(base_url=url, timeout=900, headers=AUTH) as http:
        t0 = time.perf_counter()
        scores = []
        for start in range(0, len(items), chunk):
            response = http.post("/score_batch", json={"items": items[start : start + chunk]})
            response.raise_for_status()
            scores += [r["score"] for r in response.json()["results"]]
        return len(items) / (time.perf_counter() - t0), scores


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk", type=int, default=512)
    args = p.parse_args()
    items = math_items(args.items)
    warm = math_items(64, seed=99)
    # The machine is shared: raw is measured before and after the service runs, and the ratios use the mean.
    raw_before, raw_scores = raw_items_per_s(items)
    print(f"raw in-process Math-Verify: {raw_before:.1f} items/s")
    runs = {}
    for workers in args.workers:
        with (
            tempfile.TemporaryDirectory() as tmp,
            reward_service(Path(tmp) / "server.log", workers=workers, api_key=API_KEY) as (url, _),
        ):
            service_items_per_s(url, warm, args.chunk)  # workers import and warm up
            rate, scores = service_items_per_s(url, items, args.chunk)
            cached_rate, cached_scores = service_items_per_s(url, items, args.chunk)
            assert cached_scores == scores, "a cache hit changed a score"
        # Math-Verify's own 3 s parse/verify alarms can fire on a starved CPU, so a few verdicts may differ.
        disagree = sum(a != b for a, b in zip(scores, raw_scores, strict=True))
        runs[workers] = (rate, cached_rate, disagree)
    raw_after, _ = raw_items_per_s(items)
    raw_rate = (raw_before + raw_after) / 2
    service = {}
    for workers, (rate, cached_rate, disagree) in runs.items():
        service[workers] = {
            "verdicts_differing_from_raw": disagree,
            "items_per_s": round(rate, 1),
            "ratio_vs_raw": round(rate / raw_rate, 3),
            "cached_items_per_s": round(cached_rate, 1),
            "cache_hit_speedup": round(cached_rate / rate, 1),
        }
        print(
            f"service, {workers} worker(s): {rate:.1f} items/s, ratio {rate / raw_rate:.2f} vs raw {raw_rate:.1f}; "
            f"cached {cached_rate:.1f} items/s ({cached_rate / rate:.1f}x)"
        )
    write(
        "reward_math",
        {
            "benchmark": "math items/s: reward service vs raw in-process Math-Verify (same items, same run)",
            "items": len(items),
            "correct_fraction": sum(raw_scores) / len(raw_scores),
            "raw_in_process_items_per_s": round(raw_rate, 1),
            "raw_in_process_before_after": [round(raw_before, 1), round(raw_after, 1)],
            "service_by_workers": service,
            "target_ratio": 0.7,
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
