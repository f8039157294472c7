"""Benchmark 3: proxy overhead — streamed tokens/s and time to first token through one balancer process vs the
same streams read directly from a load generator (a synthetic vLLM-shaped streaming server, not an engine).

Three processes: the load generator, the balancer (``python -m load_balancer``), and this client. Both paths are
measured side by side in one run, for one token per SSE chunk (vLLM's default) and for chunked streaming
(``stream_interval``, DESIGN.md §6). Target: >= 30,000 tokens/s through one balancer, <= 2 ms added p50 TTFT.

    python bench/lb_overhead.py [--streams 64] [--seconds 8] [--out bench/results/lb_overhead.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
USAGE = re.compile(rb'"completion_tokens":(\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def process(argv: list[str], url: str, log_path: Path, timeout_s: float = 60.0):
    """Run ``argv`` in its own session (killed with its children at exit) once ``url`` answers 200."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {proc.returncode} (log: {log_path})")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not come up (log: {log_path})")
            time.sleep(0.1)
        yield proc
    finally:
        with suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


async def throughput(base: str, streams: int, seconds: float, max_tokens: int, interval: int) -> dict:
    """``streams`` clients each looping streaming requests for ``seconds``; tokens counted from the usage chunk,
    time to first token (first body bytes) per request."""
    body = {"model": "loadgen", "prompt": "bench", "max_tokens": max_tokens, "stream": True,
            "stream_interval": interval, "stream_options": {"include_usage": True}}  # fmt: skip
    tokens = 0
    requests = 0
    ttfts: list[float] = []
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.monotonic() + seconds

        async def worker():
            nonlocal tokens, requests
            while time.monotonic() < deadline:
                # 16 samples per prompt, as in GRPO rollout (the makespan policy keeps per-prompt length stats)
                body["prompt"] = f"bench prompt {requests // 16}"
                tail = b""
                t0 = time.perf_counter()
                async with client.stream("POST", f"{base}/v1/completions", json=body) as r:
                    async for data in r.aiter_raw():
                        if not tail:
                            ttfts.append(time.perf_counter() - t0)
                        tail = (tail + data)[-400:]
                match = USAGE.search(tail)
                if r.status_code != 200 or match is None:
                    raise RuntimeError(f"bad stream from {base}: {r.status_code} {tail[-200:]!r}")
                tokens += int(match.group(1))
                requests += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(streams)))
        elapsed = time.monotonic() - started
    return {"tokens": tokens, "requests": requests, "seconds": elapsed, "tokens_per_s": tokens / elapsed,
            "ttft_p50_ms": statistics.median(ttfts) * 1000}  # fmt: skip


async def ttft(bases: dict[str, str], n: int) -> dict[str, list[float]]:
    """Sequential one-token streams, alternating the paths so both see the same machine load."""
    out: dict[str, list[float]] = {name: [] for name in bases}
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(n):
            body = {"model": "loadgen", "prompt": f"ttft prompt {i // 16}", "max_tokens": 1, "stream": True}
            for name, base in bases.items():
                t0 = time.perf_counter()
                async with client.stream("POST", f"{base}/v1/completions", json=body) as r:
                    chunks = r.aiter_raw()
                    await anext(chunks)
                    if i >= 5:  # the first few warm connections and caches up
                        out[name].append(time.perf_counter() - t0)
                    async for _ in chunks:
                        pass
    return out


def cpu_seconds(proc: subprocess.Popen) -> float:
    p = psutil.Process(proc.pid)
    t = p.cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--tokens-per-s", type=float, default=4000.0, help="load generator, per stream")
    ap.add_argument("--intervals", default="1,16", help="tokens per SSE chunk to test")
    ap.add_argument("--ttft-requests", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "lb_overhead.json"))
    a = ap.parse_args()

    gen_port, lb_port = free_port(), free_port()
    gen, lb = f"http://127.0.0.1:{gen_port}", f"http://127.0.0.1:{lb_port}"
    results: dict = {
        "benchmark": "lb_overhead", "load_generator": "load_balancer.loadgen (synthetic, not an engine)",
        "streams": a.streams, "seconds_per_run": a.seconds, "max_tokens": a.max_tokens,
        "generator_tokens_per_s_per_stream": a.tokens_per_s, "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(), "python": platform.python_version(), "runs": [],
    }  # fmt: skip
    gen_cmd = ["-m", "load_balancer.loadgen", "--port", str(gen_port), "--tokens-per-s", str(a.tokens_per_s)]
    lb_cmd = ["-m", "load_balancer", "--port", str(lb_port), "--instance", gen, "--log-level", "warning"]
    logs = Path(tempfile.mkdtemp(prefix="lb-overhead-"))
    print(f"process logs in {logs}")
    with process([sys.executable, *gen_cmd], f"{gen}/health", logs / "loadgen.log"), process(
        [sys.executable, *lb_cmd], f"{lb}/healthz", logs / "balancer.log"
    ) as lb_proc:
        for interval in [int(x) for x in a.intervals.split(",")]:
            direct = asyncio.run(throughput(gen, a.streams, a.seconds, a.max_tokens, interval))
            cpu0 = cpu_seconds(lb_proc)
            via = asyncio.run(throughput(lb, a.streams, a.seconds, a.max_tokens, interval))
            via["balancer_cpu_s"] = cpu_seconds(lb_proc) - cpu0
            via["balancer_cpu_share"] = via["balancer_cpu_s"] / via["seconds"]
            # Load-independent cost: what one balancer core relays when it is not starved by its neighbours.
            via["tokens_per_balancer_cpu_s"] = via["tokens"] / max(via["balancer_cpu_s"], 1e-9)
            ratio = via["tokens_per_s"] / direct["tokens_per_s"]
            results["runs"].append({"stream_interval": interval, "direct": direct, "via_balancer": via, "ratio": ratio})
            print(
                f"stream_interval={interval:>3}: direct {direct['tokens_per_s']:>9.0f} tok/s | via balancer "
                f"{via['tokens_per_s']:>9.0f} tok/s (balancer CPU {via['balancer_cpu_share']:.0%}, "
                f"{via['tokens_per_balancer_cpu_s']:.0f} tok per CPU-s) | ratio {ratio:.2f}",
                flush=True,
            )
        samples = asyncio.run(ttft({"direct": gen, "via_balancer": lb}, a.ttft_requests))
        exposed = httpx.get(f"{lb}/metrics", timeout=10).text
        results["balancer_counters"] = {
            m.group(1): float(m.group(2))
            for m in re.finditer(r"^(lb_(?:retries|failovers|ejections|migrations)_total) (\S+)$", exposed, re.M)
        }
    p50 = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    p90 = {k: statistics.quantiles(v, n=10)[-1] * 1000 for k, v in samples.items()}
    results["ttft_ms"] = {"p50": p50, "p90": p90, "added_p50_ms": p50["via_balancer"] - p50["direct"],
                          "samples": len(samples["direct"])}  # fmt: skip
    best = max(r["via_balancer"]["tokens_per_s"] for r in results["runs"])
    results["load_average_at_end"] = os.getloadavg()
    results["targets"] = {"tokens_per_s_through_balancer": 30000, "added_p50_ttft_ms": 2.0,
                          "best_tokens_per_s_through_balancer": best,
                          "met_throughput": best >= 30000, "met_ttft": results["ttft_ms"]["added_p50_ms"] <= 2.0}  # fmt: skip
    print(f"TTFT p50: direct {p50['direct']:.2f} ms, via balancer {p50['via_balancer']:.2f} ms "
          f"(+{results['ttft_ms']['added_p50_ms']:.2f} ms); p90 {p90['direct']:.2f} / {p90['via_balancer']:.2f} ms")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
