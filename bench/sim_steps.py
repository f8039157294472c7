"""Routing across a training run, on the simulator: consecutive rollout steps through one balancer.

Run: ``python -m bench.sim_steps --jobs 2`` (from the repository root; ~25 min on 2 cores). Every step of a run goes
through ONE policy object and one set of the balancer's instance records (:class:`bench.sim.engine.SimCluster`),
with a weight-sync pause between steps, as a real balancer lives across a run. In both arrival modes (every request
at the step's start, and capped in flight as the trainer's clients cap it) it compares, per step: round robin (also
warm); ``makespan`` without and with the trainer's noisy length hints (each warm, and from a cold start on the same
step); each without migration (routing alone); the policy's old length probe (the median running sibling, not the
longest); the longest-first oracle that knows every sample's length; and the same oracle knowing only each prompt's
true mean length (the best a per-prompt prior could tell it). Our client ranks each step's requests as one burst
(am_rl.rollout.admission), so with hints the first requests it sends are the longest expected. Prints the
per-step tables, writes ``bench/results/lb_sim_steps.json`` and ``.md``. Simulated, never measured on engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np

from bench.sim.bounds import lower_bound
from bench.sim.calibration import DEFAULT_SPEED
from bench.sim.engine import SimConfig, SimResult, simulate, simulate_steps
from bench.sim.static import LongestFirstOracle
from bench.sim.workload import PriorSpec, Workload, WorkloadSpec, make_workload, with_priors
from load_balancer.policies import MakespanPolicy, RoundRobinPolicy
from load_balancer.policy import RoutingPolicy

log = logging.getLogger(__name__)
RESULTS = Path(__file__).parent / "results"
# The schema's default client cap (am_rl/config/schema.py: 256 per agent-loop worker) times the GPU recipes' 8
# workers: half a 4,096-sample step in flight. recipes/base/common.yaml raises it to 512 per worker (all in flight),
# which is the other mode.
CAPPED_IN_FLIGHT = 2_048


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    make: Callable[[], RoutingPolicy] | None  # None: the longest-first oracle, built per step from its workload
    migrate: bool  # the balancer's migration switch
    cold_reference: bool  # also run each step from a cold start (only meaningful for policies that carry state)
    priors: bool = False  # requests carry the trainer's length hint (bench.sim.workload.with_priors)
    # Arrival order at the client: "shuffled", the trainer's seeded shuffle; "longest_first", by true length (the
    # oracle's); "prompt_mean_first", by the true mean length of the request's prompt (the prompt-mean oracle's).
    # A static oracle (make None) also places by what its dispatch knows: each sample's length, or its prompt's mean.
    dispatch: str = "shuffled"
    # With the cap, which waiting request the trainer's client starts next (SimConfig.admission): "client", our
    # client's AdmissionOrder; "arrival", first come first served (a plain client, ours before AdmissionOrder).
    admission: str = "client"
    capped_only: bool = False  # identical to another contender when every request is in flight: not run then


CONTENDERS = (
    # The baseline system: a round-robin balancer behind a plain first-come-first-served client
    Contender("round_robin", RoundRobinPolicy, migrate=True, cold_reference=False, admission="arrival"),
    Contender("makespan", MakespanPolicy, migrate=True, cold_reference=True),
    Contender("makespan_arrival_order", MakespanPolicy, migrate=True, cold_reference=False, admission="arrival",
              capped_only=True),
    Contender("makespan_no_migration", MakespanPolicy, migrate=False, cold_reference=False),
    Contender("makespan_priors", MakespanPolicy, migrate=True, cold_reference=True, priors=True),
    Contender("makespan_priors_no_migration", MakespanPolicy, migrate=False, cold_reference=False, priors=True),
    # No hints; the median running sibling of each prompt as its length probe (the policy's default until session 11,
    # now the longest-running one)
    Contender("makespan_live_median", lambda: MakespanPolicy(live_quantile=0.5), migrate=True, cold_reference=False),
    Contender("oracle_longest_first", None, migrate=False, cold_reference=False, dispatch="longest_first",
              admission="arrival"),
    # The best any per-prompt prior could tell a static placement: each prompt's true mean length (the trainer's
    # hints are a noisy, drifted estimate of it). The oracle above knows each sample's own draw, which no prior has.
    Contender("oracle_prompt_mean", None, migrate=False, cold_reference=False, dispatch="prompt_mean_first",
              admission="arrival"),
)
OURS, OURS_PRIORS, BASELINE, ORACLE = "makespan", "makespan_priors", "round_robin", "oracle_longest_first"
PROMPT_ORACLE = "oracle_prompt_mean"
PRIOR_SPEC = PriorSpec()


def step_workloads(seed: int, steps: int, spec: WorkloadSpec) -> tuple[list[Workload], list[np.ndarray]]:
    """Each step's own draw of prompts and lengths, and the trainer's seeded shuffle of it."""
    workloads = [make_workload(seed * 100 + s, spec) for s in range(steps)]
    orders = [np.random.default_rng(seed * 100 + s + 1_000_003).permutation(w.n) for s, w in enumerate(workloads)]
    return workloads, orders


def oracle_view(c: Contender, workload: Workload) -> Workload:
    """What a static oracle knows of ``workload``: every sample's length, or (prompt_mean_first) only each prompt's
    true mean length, given to all its samples."""
    if c.dispatch != "prompt_mean_first":
        return workload
    sums = np.bincount(workload.prompt_of, weights=workload.output_tokens)
    means = sums / np.bincount(workload.prompt_of)
    return dataclasses.replace(workload, output_tokens=np.round(means[workload.prompt_of]).astype(np.int64))


def dispatch_order(c: Contender, workload: Workload, shuffled: np.ndarray) -> np.ndarray:
    if c.dispatch == "shuffled":
        return shuffled
    known = oracle_view(c, workload).output_tokens
    return shuffled[np.argsort(-known[shuffled], kind="stable")]  # ties keep the shuffle


def run_seed(seed: int, steps: int, n_instances: int, spec: WorkloadSpec, config: SimConfig, pause_s: float) -> dict:
    """Every contender over ``steps`` steps of one seed; makespans in simulated seconds, per step."""
    cpu_started = time.process_time()
    plain, shuffles = step_workloads(seed, steps, spec)
    hinted = [with_priors(w, seed * 100 + s, PRIOR_SPEC) for s, w in enumerate(plain)]
    row: dict = {"seed": seed, "lower_bound_s": [lower_bound(w, n_instances).makespan_s for w in plain], "runs": {}}

    def summary(r: SimResult) -> dict:
        return {"makespan_s": r.makespan_s, "migrations": r.migrations, "max_engine_waiting": r.max_engine_waiting}

    for c in CONTENDERS:
        if c.capped_only and config.max_in_flight is None:
            continue
        run_config = dataclasses.replace(config, migrate=c.migrate, admission=c.admission)
        workloads = hinted if c.priors else plain
        orders = [dispatch_order(c, w, o) for w, o in zip(hinted, shuffles)]
        if c.make is None:  # static: nothing carries across steps
            warm = [simulate(w, n_instances, LongestFirstOracle(oracle_view(c, w), n_instances), o, DEFAULT_SPEED,
                             run_config) for w, o in zip(workloads, orders)]  # fmt: skip
        else:
            warm = simulate_steps(workloads, n_instances, c.make(), orders, DEFAULT_SPEED, run_config, pause_s)
        row["runs"][c.name] = {"warm": [summary(r) for r in warm]}
        if c.cold_reference:  # step 0 is cold already
            cold = [warm[0]] + [simulate(w, n_instances, c.make(), o, DEFAULT_SPEED, run_config)
                                for w, o in zip(workloads[1:], orders[1:])]
            row["runs"][c.name]["cold"] = [summary(r) for r in cold]
    row["cpu_s"] = time.process_time() - cpu_started
    return row


def _cut(rows: list[dict], name: str, than: str, s: int) -> dict:
    """How much shorter ``name``'s step ``s`` is than ``than``'s: mean, worst, seeds shorter, 2 standard errors."""
    a = np.array([r["runs"][name]["warm"][s]["makespan_s"] for r in rows])
    b = np.array([r["runs"][than]["warm"][s]["makespan_s"] for r in rows])
    cut = 1.0 - a / b
    return {"mean": float(cut.mean()), "worst": float(cut.min()), "seeds_shorter": int(np.sum(cut > 0)),
            "two_se": float(2.0 * cut.std(ddof=1) / np.sqrt(len(cut))) if len(cut) > 1 else 0.0}


def summarize(rows: list[dict], steps: int) -> dict:
    """Per step: mean makespan of each contender, each against round robin, and warm against cold."""
    def makespans(name: str, kind: str = "warm") -> np.ndarray:  # (seeds, steps)
        return np.array([[s["makespan_s"] for s in r["runs"][name][kind]] for r in rows])

    bound = np.array([r["lower_bound_s"] for r in rows])
    out: dict = {"seeds": len(rows), "steps": []}
    for s in range(steps):
        step: dict = {"step": s + 1, "policies": {}}
        for c in contenders(rows):
            warm = makespans(c.name)[:, s]
            entry = {
                "makespan_s_mean": float(warm.mean()),
                "vs_lower_bound_mean": float(np.mean(warm / bound[:, s])),
                "migrations_mean": float(np.mean([r["runs"][c.name]["warm"][s]["migrations"] for r in rows])),
                "max_engine_waiting": int(max(r["runs"][c.name]["warm"][s]["max_engine_waiting"] for r in rows)),
                "shorter_than_round_robin": _cut(rows, c.name, BASELINE, s),
            }
            if c.cold_reference:
                warm_over_cold = warm / makespans(c.name, "cold")[:, s]
                entry["warm_over_cold"] = {"mean": float(warm_over_cold.mean()), "worst": float(warm_over_cold.max())}
            step["policies"][c.name] = entry
        step["priors_vs_oracle"] = _cut(rows, OURS_PRIORS, ORACLE, s)
        step["priors_vs_prompt_oracle"] = _cut(rows, OURS_PRIORS, PROMPT_ORACLE, s)
        step["priors_vs_no_priors"] = _cut(rows, OURS_PRIORS, OURS, s)
        out["steps"].append(step)
    return out


def targets(summary: dict) -> dict:
    """The issue's targets, per step (means over seeds); "measurably": by more than two standard errors."""
    steps = summary["steps"]

    def every(f) -> bool:
        return all(f(st) for st in steps)

    out = {}
    for name in (OURS, OURS_PRIORS):
        out[f"{name}: every step within 1% of cold"] = every(
            lambda st: st["policies"][name]["warm_over_cold"]["mean"] <= 1.01)
        out[f"{name}: every step >= 7% below round robin"] = every(
            lambda st: st["policies"][name]["shorter_than_round_robin"]["mean"] >= 0.07)
    cut = "shorter_than_round_robin"
    out["makespan_priors_no_migration: every step measurably below round robin"] = every(
        lambda st: st["policies"]["makespan_priors_no_migration"][cut]["mean"]
        > st["policies"]["makespan_priors_no_migration"][cut]["two_se"])
    out["makespan_priors: every step <= the longest-first oracle"] = every(
        lambda st: st["priors_vs_oracle"]["mean"] >= 0)
    out["makespan_priors: every step <= the prompt-mean oracle"] = every(
        lambda st: st["priors_vs_prompt_oracle"]["mean"] >= 0)
    return out


SHORT = {
    "round_robin": "round robin", "makespan": "makespan", "makespan_arrival_order": "makespan, arrival order",
    "makespan_no_migration": "no migration",
    "makespan_priors": "priors", "makespan_priors_no_migration": "priors, no migration",
    "makespan_live_median": "median sibling probe (old default)",
    "oracle_longest_first": "longest-first oracle", "oracle_prompt_mean": "prompt-mean oracle",
}


def contenders(rows: list[dict]) -> list[Contender]:
    """Those of CONTENDERS the rows ran (capped-only ones are not run with every request in flight)."""
    return [c for c in CONTENDERS if c.name in rows[0]["runs"]]


def markdown(report: dict) -> str:
    p = report["priors"]
    lines = [
        f"# Routing simulator across a training run: {report['steps']} consecutive steps through one balancer,"
        f" {report['instances']} instances",
        "",
        f"Simulated, not measured on engines (bench/sim_steps.py). {report['seeds']} seeds"
        f" (0..{report['seeds'] - 1}, per-step means over the seeds done); each step its own workload (256 prompts x 16 samples, max 32k); a"
        f" {report['pause_s']:.0f} s weight-sync pause between steps. *Warm*: the run's one policy object and instance records; *cold*: the same step from a fresh balancer."
        f" *Priors*: each request carries the trainer's hint (am_rl_expected_tokens), the mean of {p['samples']}"
        f" samples of its prompt from an earlier epoch whose lengths were {p['drift']:.2f}x shorter, with per-prompt"
        f" lognormal noise sigma {p['sigma']}. Cost: {report['cpu_s'] / 60:.1f} CPU-minutes of simulation in all,"
        f" {report['cpu_s'] / 120:.1f} min on 2 idle cores."
        + (f" {report['note']}" if report.get("note") else "")
        + ("" if all(len(done) == report["seeds"] for done in report["seeds_done"].values()) else
           f" **Partial: of {report['seeds']} seeds, done per mode: {report['seeds_done']}.**"),
        "",
        "Contenders: " + "; ".join(f"`{c.name}` ({SHORT[c.name]})" for c in CONTENDERS) + ".",
        "Round robin is the baseline system: a round-robin balancer behind a first-come-first-served client. Every"
        " other contender but the oracle and *arrival order* has our client, whose AdmissionOrder ranks each step's"
        " requests as one burst and picks which waiting request starts when the client is at its cap"
        " (am_rl.rollout.admission).",
        "",
    ]
    for mode, part in report["modes"].items():
        summary = part["summary"]
        names = list(summary["steps"][0]["policies"])
        lines += [
            f"## Arrivals: {mode}",
            "",
            "Mean makespan, s (below: shorter than round robin, mean over seeds, and seeds shorter).",
            "",
            "| step | " + " | ".join(SHORT[n] for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for st in summary["steps"]:
            cells = []
            for n in names:
                e = st["policies"][n]
                cut = e["shorter_than_round_robin"]
                seeds = f"{cut['seeds_shorter']}/{summary['seeds']}"
                cells.append(f"{e['makespan_s_mean']:.0f}" if n == BASELINE else
                             f"{e['makespan_s_mean']:.0f} ({cut['mean']:+.1%}, {seeds})")
            lines.append(f"| {st['step']} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| step | makespan warm / cold (mean, worst) | priors warm / cold (mean, worst) | priors vs no priors"
            " (shorter, mean ± 2 se) | priors vs oracle (shorter, mean ± 2 se) | priors vs prompt-mean oracle"
            " (shorter, mean ± 2 se) | max engine queue (makespan, priors) | migrations (makespan, priors) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for st in summary["steps"]:
            m, pr = st["policies"][OURS], st["policies"][OURS_PRIORS]
            vs, vo, vp = st["priors_vs_no_priors"], st["priors_vs_oracle"], st["priors_vs_prompt_oracle"]
            lines.append(
                f"| {st['step']} | {m['warm_over_cold']['mean']:.3f}, {m['warm_over_cold']['worst']:.3f}"
                f" | {pr['warm_over_cold']['mean']:.3f}, {pr['warm_over_cold']['worst']:.3f}"
                f" | {vs['mean']:+.1%} ± {vs['two_se']:.1%} | {vo['mean']:+.1%} ± {vo['two_se']:.1%}"
                f" | {vp['mean']:+.1%} ± {vp['two_se']:.1%}"
                f" | {m['max_engine_waiting']}, {pr['max_engine_waiting']}"
                f" | {m['migrations_mean']:.0f}, {pr['migrations_mean']:.0f} |"
            )
        lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in part["targets"].items()),
                  ""]
    return "\n".join(lines)


def write_report(report: dict, rows: dict[str, list[dict]], configs: dict[str, SimConfig], out: Path) -> None:
    """Summaries of the rows done so far (seeds in order), as JSON and markdown."""
    report["modes"] = {}
    for mode, config in configs.items():
        done = sorted(rows[mode], key=lambda r: r["seed"])
        if done:
            summary = summarize(done, report["steps"])
            report["modes"][mode] = {"sim_config": dataclasses.asdict(config), "summary": summary,
                                     "targets": targets(summary), "rows": done}
    report["seeds_done"] = {mode: sorted(r["seed"] for r in done) for mode, done in rows.items()}
    # CPU seconds of all the simulations: on a shared box the wall time says more about the neighbours' load
    report["cpu_s"] = sum(r["cpu_s"] for part in rows.values() for r in part)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pause-s", type=float, default=60.0)
    parser.add_argument("--capped-in-flight", type=int, default=CAPPED_IN_FLIGHT,
                        help="the client cap of the capped mode (e.g. instances x 64 running: no engine queue)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds simulated in parallel processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "lb_sim_steps.json")
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. how the run was split)")
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed..seeds-1 (split a run)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="a JSON-lines file of finished (mode, seed) rows: read those, append new ones")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, started = WorkloadSpec(), time.monotonic()
    configs = {"all at once": SimConfig(), f"capped at {args.capped_in_flight} in flight": SimConfig(
        max_in_flight=args.capped_in_flight)}
    report: dict = {
        "what": "simulator (bench/sim), calibrated to the AM-Thinking-v1 report; not a measurement of engines",
        "instances": args.instances, "seeds": args.seeds, "steps": args.steps, "pause_s": args.pause_s,
        "workload": dataclasses.asdict(spec), "priors": dataclasses.asdict(PRIOR_SPEC), "jobs": args.jobs,
        "note": args.note,
    }
    rows: dict[str, list[dict]] = {mode: [] for mode in configs}
    if args.resume is not None and args.resume.exists():
        for line in args.resume.read_text().splitlines():
            done = json.loads(line)
            rows[done["mode"]].append(done["row"])
    todo = [(mode, seed) for seed in range(args.first_seed, args.seeds) for mode in configs
            if seed not in {r["seed"] for r in rows[mode]}]  # seed-major: a stopped run has both modes
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_seed, seed, args.steps, args.instances, spec, configs[mode], args.pause_s): mode
                   for mode, seed in todo}
        for future in as_completed(futures):
            mode, row = futures[future], future.result()
            rows[mode].append(row)
            if args.resume is not None:
                with args.resume.open("a") as f:
                    f.write(json.dumps({"mode": mode, "row": row}) + "\n")
            log.info("%s, seed %d (%.0f CPU s): %s", mode, row["seed"], row["cpu_s"], {
                name: [round(s["makespan_s"]) for s in run["warm"]] for name, run in row["runs"].items()})
            report["run_time_s"] = time.monotonic() - started
            write_report(report, rows, configs, args.out)
    report["run_time_s"] = time.monotonic() - started
    write_report(report, rows, configs, args.out)
    print(args.out.with_suffix(".md").read_text())
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {report['run_time_s']:.0f} s")


if __name__ == "__main__":
    main()
