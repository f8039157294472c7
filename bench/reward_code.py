"""Code: sandboxed test executions/s vs the same programs in a bare subprocess, then p50/p99 latency of a
4,096-item mixed batch through the service and its cache-hit speedup. One run, side by side.

    PYTHONPATH=. python bench/reward_code.py [--runs 160] [--items 4096] [--workers 2]

Two program shapes for the ratio: "startup" (print(a+b): the sandbox's fixed cost dominates) and "compute"
(about 20 ms of work per test here, closer to real test cases), each with 1, 4 and 16 tests per item. The code
verifier keeps one sandbox for all Python items (each run from a clean state), so its start-up is paid once;
the bare side starts one subprocess per test, as a bare judge would.
"""

import argparse
import asyncio
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from bench.reward_common import API_KEY, machine, math_items, percentile, score_each, write
from reward_server.config import WorkerSettings
from reward_server.launcher import reward_service
from reward_server.types import CodeItem
from reward_server.verifiers.code import PYTHON, CodeVerifier

PROGRAMS = {
    "startup": ("a, b = map(int, input().split())\nprint(a + b)", "20 22\n", "42"),
    "compute": ("n = int(input())\nprint(sum(i * i % 7 for i in range(n)))", "400000\n", "800001"),
}
TESTS_PER_ITEM = (1, 4, 16)  # one sandbox serves all tests of an item: its start-up is shared by this many


def executions_per_s(code: str, stdin: str, expected: str, tests_per_item: int, executions: int) -> dict:
    """Test executions/s through a fresh code verifier (whose one sandbox, started by the first item, serves
    every item) vs one bare subprocess per test; wall clock and CPU time (ours plus every child's: the
    load-independent cost, since on a busy machine each extra process hand-off also waits for a time slice)."""
    verifier = CodeVerifier(WorkerSettings())
    item = CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"```python\n{code}\n```",
            "ground_truth": {
                "language": "python",
                "test_type": "stdin_stdout",
                "tests": [{"input": stdin, "output": expected}] * tests_per_item,
            },
        }
    )
    items = max(1, executions // tests_per_item)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "solution.py"
        path.write_text(code)
        boxed_s = bare_s = boxed_cpu = bare_self = bare_children = 0.0
        children_at_start = cpu_s(resource.RUSAGE_CHILDREN)
        # Interleaved, so that both see the same load on a shared machine.
        for _ in tqdm(range(items), desc=f"{tests_per_item} test(s)/item", leave=False):
            t0, self0 = time.perf_counter(), cpu_s(resource.RUSAGE_SELF)
            verdict = verifier.verify(item)
            t1, self1, children1 = time.perf_counter(), cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
            for _ in range(tests_per_item):
                # A session of its own, like each sandboxed run: with the kernel's autogroup scheduling a new
                # session gets its own CPU share, which would otherwise favour the sandboxed side on a busy box.
                out = subprocess.run(
                    [PYTHON, "-I", str(path)],
                    input=stdin.encode(),
                    capture_output=True,
                    timeout=30,
                    start_new_session=True,
                )
                assert out.stdout.decode().strip() == expected, out
            boxed_s, bare_s = boxed_s + t1 - t0, bare_s + time.perf_counter() - t1
            boxed_cpu += self1 - self0
            bare_self += cpu_s(resource.RUSAGE_SELF) - self1
            bare_children += cpu_s(resource.RUSAGE_CHILDREN) - children1
            assert verdict.score == 1.0, verdict.details
        verifier.close()  # the sandbox's processes are reaped now: their CPU time lands in RUSAGE_CHILDREN
        boxed_cpu += cpu_s(resource.RUSAGE_CHILDREN) - children_at_start - bare_children
    n, bare_cpu = items * tests_per_item, bare_self + bare_children
    return {
        "tests_per_item": tests_per_item,
        "test_executions": n,
        "sandboxed_per_s": round(n / boxed_s, 1),
        "bare_subprocess_per_s": round(n / bare_s, 1),
        "ratio": round(bare_s / boxed_s, 3),
        "sandboxed_cpu_ms_per_test": round(1000 * boxed_cpu / n, 2),
        "bare_cpu_ms_per_test": round(1000 * bare_cpu / n, 2),
        "cpu_ratio": round(bare_cpu / boxed_cpu, 3),
    }


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def mixed_items(n: int) -> list[dict]:
    """About half math, 45% python stdin/stdout (two tests), 4% python call-style, 1% C++ (unique programs)."""
    n_cpp, n_call = max(1, n // 100), max(1, n // 25)
    n_py = int(n * 0.45)
    items = math_items(n - n_cpp - n_call - n_py, seed=1)
    for i in range(n_py):
        wrong = i % 3 == 0
        code = f"a, b = map(int, input().split())\nprint(a + b + {1 if wrong else 0})  # {i}"
        items.append(
            {
                "reward_type": "code",
                "response": f"```python\n{code}\n```",
                "ground_truth": {
                    "language": "python",
                    "test_type": "stdin_stdout",
                    "tests": [{"input": f"{i} 1", "output": str(i + 1)}, {"input": f"2 {i}", "output": str(i + 2)}],
                },
            }
        )
    for i in range(n_call):
        code = f"class Solution:\n    def f(self, xs):\n        return sorted(xs)[::-1]  # {i}"
        items.append(
            {
                "reward_type": "code",
                "response": f"```python\n{code}\n```",
                "ground_truth": {
                    "language": "python",
                    "test_type": "call",
                    "fn_name": "f",
                    "tests": [{"input": [[i, 3, 1]], "output": sorted([i, 3, 1])[::-1]}],
                },
            }
        )
    for i in range(n_cpp):
        code = f'#include <cstdio>\nint main(){{long a,b;scanf("%ld %ld",&a,&b);printf("%ld\\n",a*b+{i});}}'
        items.append(
            {
                "reward_type": "code",
                "response": f"```cpp\n{code}\n```",
                "ground_truth": {
                    "language": "cpp",
                    "test_type": "stdin_stdout",
                    "tests": [{"input": "6 7", "output": str(42 + i)}],
                },
            }
        )
    return items


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=160, help="test executions per ratio row (each side)")
    p.add_argument("--items", type=int, default=4096, help="mixed-batch size; 0 skips the batch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    load_before = os.getloadavg()
    ratio = {
        name: [executions_per_s(code, stdin, out, k, args.runs) for k in TESTS_PER_ITEM]
        for name, (code, stdin, out) in PROGRAMS.items()
    }
    for name, rows in ratio.items():
        for r in rows:
            print(
                f"{name}, {r['tests_per_item']} test(s)/item: sandboxed {r['sandboxed_per_s']}/s vs bare "
                f"{r['bare_subprocess_per_s']}/s, ratio {r['ratio']}; CPU/test {r['sandboxed_cpu_ms_per_test']} vs "
                f"{r['bare_cpu_ms_per_test']} ms, ratio {r['cpu_ratio']}"
            )
    load_after_ratio = os.getloadavg()
    if args.items == 0:
        write_results(ratio, None, load_before, load_after_ratio)
        return
    items = mixed_items(args.items)
    with (
        tempfile.TemporaryDirectory() as tmp,
        reward_service(Path(tmp) / "server.log", workers=args.workers, api_key=API_KEY) as (url, _),
    ):
        lat, results, wall = asyncio.run(score_each(url, items, args.concurrency))
        errors = [r for r in results if r.get("status") not in ("ok", "timeout")]
        assert not errors, errors[:3]
        lat_c, results_c, wall_c = asyncio.run(score_each(url, items, args.concurrency))
        assert [r["score"] for r in results_c] == [r["score"] for r in results] and all(r["cached"] for r in results_c)
    batch = {
        "items": len(items),
        "by_type": {t: sum(1 for it in items if it["reward_type"] == t) for t in ("math", "code")},
        "cpp_items": sum(1 for it in items if it["reward_type"] == "code" and it["ground_truth"]["language"] == "cpp"),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "wall_s": round(wall, 1),
        "items_per_s": round(len(items) / wall, 1),
        "p50_s": round(percentile(lat, 0.5), 3),
        "p99_s": round(percentile(lat, 0.99), 3),
        "mean_score": round(sum(r["score"] for r in results) / len(results), 3),
        "cached_wall_s": round(wall_c, 2),
        "cached_p50_s": round(percentile(lat_c, 0.5), 4),
        "cached_p99_s": round(percentile(lat_c, 0.99), 4),
        "cache_hit_speedup": round(wall / wall_c, 1),
    }
    print(
        f"mixed batch of {len(items)}: {wall:.1f}s, p50 {batch['p50_s']}s, p99 {batch['p99_s']}s; "
        f"cached {wall_c:.2f}s ({batch['cache_hit_speedup']}x)"
    )
    write_results(ratio, batch, load_before, load_after_ratio)


def write_results(ratio: dict, batch: dict | None, load_before, load_after_ratio) -> None:
    write(
        "reward_code",
        {
            "benchmark": "code: sandboxed vs bare test executions/s; mixed-batch latency through the service",
            "executions": ratio,
            "target_ratio": 0.6,
            "mixed_batch": batch,
            "machine": machine(),
            "load_avg_before_ratio": load_before,
            "load_avg_after_ratio": load_after_ratio,
        },
    )


if __name__ == "__main__":
    main()
