"""Routing benchmark on the simulator: makespan of one GRPO rollout step under each policy, against a lower bound.

Run: ``python -m bench.sim_routing`` (from the repository root). Prints ratios, writes ``bench/results/lb_sim.json``
and ``bench/results/lb_sim.md``. Every figure comes from the discrete-event simulator in ``bench/sim`` (calibrated
to the AM-Thinking-v1 report's speed figures), never from real engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.sim.bounds import lower_bound
from bench.sim.calibration import ANCHORS, DEFAULT_SPEED
from bench.sim.clairvoyant import KnownLengthsMakespan
from bench.sim.diagnose import Recorder, diagnose
from bench.sim.engine import SimConfig, simulate
from bench.sim.static import LongestFirstOracle, VerlChunks
from bench.sim.workload import Workload, WorkloadSpec, make_workload
from load_balancer.policies import LeastRequestsPolicy, MakespanPolicy, PowerOfTwoPolicy, RoundRobinPolicy
from load_balancer.policy import RoutingPolicy

log = logging.getLogger(__name__)
RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    make: Callable[[Workload, int, int], RoutingPolicy]  # (workload, instances, seed) -> a fresh policy
    shuffled: bool  # arrival order: the trainer's seeded shuffle, or verl's contiguous sibling order
    migrate: bool = True  # the simulated balancer's migration switch (SimConfig.migrate)


CONTENDERS = (
    Contender("verl_chunks", lambda w, m, s: VerlChunks(w.n), shuffled=False),
    Contender("round_robin", lambda w, m, s: RoundRobinPolicy(), shuffled=True),
    Contender("least_requests", lambda w, m, s: LeastRequestsPolicy(), shuffled=True),
    Contender("power_of_two", lambda w, m, s: PowerOfTwoPolicy(seed=s), shuffled=True),
    Contender("makespan_no_migration", lambda w, m, s: MakespanPolicy(), shuffled=True, migrate=False),
    Contender("makespan", lambda w, m, s: MakespanPolicy(), shuffled=True),
    Contender("oracle_longest_first", lambda w, m, s: LongestFirstOracle(w, m), shuffled=True),
    Contender("makespan_known_lengths", lambda w, m, s: KnownLengthsMakespan(w), shuffled=True),
)
BASELINES = ("round_robin", "least_requests", "power_of_two")  # the live count-based policies ours must beat
OURS = "makespan"
REFERENCES = ("oracle_longest_first", "makespan_known_lengths")  # know every length in advance: not live policies


def run_seed(seed: int, n_instances: int, spec: WorkloadSpec, config: SimConfig) -> dict:
    """Every contender on one workload draw; makespans in simulated seconds."""
    workload = make_workload(seed, spec)
    shuffle = np.random.default_rng(seed + 1_000_003).permutation(workload.n)  # the trainer's seeded shuffle
    bound = lower_bound(workload, n_instances, DEFAULT_SPEED)
    row: dict = {
        "seed": seed,
        "lower_bound_s": bound.makespan_s,
        "bound_longest_sequence_s": bound.longest_sequence_s,
        "bound_capacity_s": bound.capacity_s,
        "total_output_tokens": int(workload.output_tokens.sum()),
        "truncated_fraction": float(np.mean(workload.output_tokens >= workload.max_tokens)),
        "runs": {},
    }
    for c in CONTENDERS:
        order = shuffle if c.shuffled else np.arange(workload.n)
        recorder = Recorder(c.make(workload, n_instances, seed))
        run_config = dataclasses.replace(config, migrate=c.migrate)
        result = simulate(workload, n_instances, recorder, order, DEFAULT_SPEED, run_config)
        finishes = result.instance_finish_s[result.instance_finish_s > 0]
        row["runs"][c.name] = {
            "makespan_s": result.makespan_s,
            "slowest_over_median_instance": float(finishes.max() / np.median(finishes)),
            "migrations": result.migrations,
            "reprefill_tokens": result.reprefill_tokens,
            "preemptions": result.preemptions,
            "diagnosis": diagnose(workload, result, recorder, DEFAULT_SPEED),
        }
    return row


def diagnosis_means(diagnoses: list[dict]) -> dict:
    """Mean over seeds of the per-run diagnosis (bench/sim/diagnose.py), worst for the engines' queueing."""
    return {
        "last_finisher_slowdown_mean": float(np.mean([d["last_finisher"]["slowdown"] for d in diagnoses])),
        "tail_slowdown_mean": float(np.mean([d["tail_slowdown_mean"] for d in diagnoses])),
        "instance_finish_p10_over_max_mean": float(
            np.mean([d["instance_finish_s"]["p10"] / d["instance_finish_s"]["max"] for d in diagnoses])),
        "reprefill_s_mean": float(np.mean([d["reprefill_s"] for d in diagnoses])),
        "max_engine_waiting": int(max(d["max_engine_waiting"] for d in diagnoses)),
        "preemptions_mean": float(np.mean([d["preemptions"] for d in diagnoses])),
    }


def summarize(rows: list[dict]) -> dict:
    """Mean and worst over seeds of every ratio the targets are stated in."""
    def makespans(name: str) -> np.ndarray:
        return np.array([r["runs"][name]["makespan_s"] for r in rows])

    bound = np.array([r["lower_bound_s"] for r in rows])
    ours = makespans(OURS)
    verl = makespans("verl_chunks")
    best_mean_baseline = min(BASELINES, key=lambda b: makespans(b).mean())
    per_seed_best = np.min([makespans(b) for b in BASELINES], axis=0)
    per_policy = {}
    for c in CONTENDERS:
        ratio = makespans(c.name) / bound
        per_policy[c.name] = {
            "makespan_s_mean": float(makespans(c.name).mean()),
            "vs_lower_bound_mean": float(ratio.mean()),
            "vs_lower_bound_worst": float(ratio.max()),
            "migrations_mean": float(np.mean([r["runs"][c.name]["migrations"] for r in rows])),
            "reprefill_tokens_mean": float(np.mean([r["runs"][c.name]["reprefill_tokens"] for r in rows])),
            **diagnosis_means([r["runs"][c.name]["diagnosis"] for r in rows]),
        }

    def shorter(than: np.ndarray) -> dict:
        cut = 1.0 - ours / than  # fraction of the other's makespan that ours saves
        return {"mean": float(cut.mean()), "worst": float(cut.min())}

    return {
        "seeds": len(rows),
        "policies": per_policy,
        "ours_shorter_than_verl": shorter(verl),
        "best_baseline_by_mean": best_mean_baseline,
        "ours_shorter_than_best_baseline": shorter(makespans(best_mean_baseline)),
        "ours_shorter_than_per_seed_best_baseline": shorter(per_seed_best),
        "oracle_shorter_than_best_baseline": {
            "mean": float(np.mean(1.0 - makespans("oracle_longest_first") / makespans(best_mean_baseline)))
        },
        "bound_longest_sequence_decides": float(np.mean(
            [r["bound_longest_sequence_s"] >= r["bound_capacity_s"] for r in rows])),
        "bound_capacity_over_longest_mean": float(np.mean(
            [r["bound_capacity_s"] / r["bound_longest_sequence_s"] for r in rows])),
        "known_lengths_shorter_than_best_baseline": {
            "mean": float(np.mean(1.0 - makespans("makespan_known_lengths") / makespans(best_mean_baseline)))
        },
        "crowding_verl_slowest_over_median_instance": {
            "mean": float(np.mean([r["runs"]["verl_chunks"]["slowest_over_median_instance"] for r in rows])),
        },
        "crowding_verl_over_shuffled_round_robin": {
            "mean": float(np.mean(verl / makespans("round_robin"))),
            "worst": float(np.max(verl / makespans("round_robin"))),
        },
    }


def targets(summary: dict) -> dict:
    """The issue's targets, judged on worst and mean over seeds."""
    ours = summary["policies"][OURS]
    return {
        "ours_within_1.15x_lower_bound_mean": ours["vs_lower_bound_mean"] <= 1.15,
        "ours_within_1.15x_lower_bound_worst": ours["vs_lower_bound_worst"] <= 1.15,
        "ours_25pct_shorter_than_verl_mean": summary["ours_shorter_than_verl"]["mean"] >= 0.25,
        "ours_25pct_shorter_than_verl_worst": summary["ours_shorter_than_verl"]["worst"] >= 0.25,
        "ours_10pct_shorter_than_best_baseline_mean": summary["ours_shorter_than_best_baseline"]["mean"] >= 0.10,
        "ours_10pct_shorter_than_best_baseline_worst": summary["ours_shorter_than_best_baseline"]["worst"] >= 0.10,
    }


def markdown(main: dict, sweep: dict[int, dict], instances: int) -> str:
    s = main["summary"]
    lines = [
        f"# Routing simulator: one GRPO rollout step (256 prompts x 16 samples, max 32k), {instances} instances",
        "",
        f"Simulated, not measured on engines. {s['seeds']} seeds; makespan / lower bound (mean, worst).",
        "",
        "| policy | makespan s (mean) | / lower bound mean | / lower bound worst | migrations | re-prefill tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in s["policies"].items():
        lines.append(
            f"| {name} | {p['makespan_s_mean']:.0f} | {p['vs_lower_bound_mean']:.3f} | {p['vs_lower_bound_worst']:.3f}"
            f" | {p['migrations_mean']:.0f} | {p['reprefill_tokens_mean']:.0f} |"
        )
    lines += [
        "",
        f"- ours shorter than verl-style: mean {s['ours_shorter_than_verl']['mean']:.1%},"
        f" worst {s['ours_shorter_than_verl']['worst']:.1%}",
        f"- ours shorter than the best baseline ({s['best_baseline_by_mean']}): mean"
        f" {s['ours_shorter_than_best_baseline']['mean']:.1%}, worst {s['ours_shorter_than_best_baseline']['worst']:.1%}"
        f" (per-seed best baseline: mean {s['ours_shorter_than_per_seed_best_baseline']['mean']:.1%})",
        f"- the oracle (known lengths, LPT placement, no migration) is"
        f" {s['oracle_shorter_than_best_baseline']['mean']:.1%} shorter than that baseline; ours fed the true lengths"
        f" (makespan_known_lengths) {s['known_lengths_shorter_than_best_baseline']['mean']:.1%}",
        f"- lower bound = max(longest sequence alone, total work / capacity); the first term decides in"
        f" {s['bound_longest_sequence_decides']:.0%} of seeds, the second is {s['bound_capacity_over_longest_mean']:.2f}"
        " of it. Each term is exact in its own regime (a lone sequence; full batches), but not both at once: the"
        " longest sequences cannot run alone while the rest of the work shares their instances.",
        f"- crowding (verl-style): slowest instance / median instance"
        f" {s['crowding_verl_slowest_over_median_instance']['mean']:.2f}; verl-style / shuffled round-robin"
        f" {s['crowding_verl_over_shuffled_round_robin']['mean']:.2f}",
        "",
        "## Where the time goes (bench/sim/diagnose.py; means over seeds)",
        "",
        "Slowdown = finish time / the time the request would take alone on an instance (the bound's first term);"
        " the makespan is the last finisher's. Tail = the requests truncated at max_tokens.",
        "",
        "| policy | last finisher slowdown | tail slowdown | instance finish p10 / max | re-prefill s (all instances)"
        " | max engine queue | preemptions |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in s["policies"].items():
        lines.append(
            f"| {name} | {p['last_finisher_slowdown_mean']:.3f} | {p['tail_slowdown_mean']:.3f}"
            f" | {p['instance_finish_p10_over_max_mean']:.3f} | {p['reprefill_s_mean']:.0f} | {p['max_engine_waiting']}"
            f" | {p['preemptions_mean']:.0f} |"
        )
    ours = main["rows"][0]["runs"][OURS]["diagnosis"]
    last = ours["last_finisher"]
    lines += [
        "",
        f"Ours, seed {main['rows'][0]['seed']}: the last finisher ({last['output_tokens']} tokens, {last['alone_s']:.0f} s"
        f" alone) finished at {last['finish_s']:.0f} s after {last['migrations']} migrations. Its instance over time:",
        "",
        "| t s | its tokens | requests on its instance | their context tokens |",
        "|---|---|---|---|",
        *(f"| {p['t_s']:.0f} | {p['generated']} | {p['sharing']} | {p['context_tokens']} |"
          for p in ours["last_finisher_timeline"]),
        "",
        "## Sweep (mean over its seeds; makespan / lower bound)",
        "",
        "| instances | seeds | " + " | ".join(c.name for c in CONTENDERS) + " | ours vs verl | ours vs best baseline |",
        "|---|---|" + "---|" * len(CONTENDERS) + "---|---|",
    ]
    for m, sw in sorted(sweep.items()):
        cells = " | ".join(f"{sw['policies'][c.name]['vs_lower_bound_mean']:.3f}" for c in CONTENDERS)
        lines.append(
            f"| {m} | {sw['seeds']} | {cells} | {sw['ours_shorter_than_verl']['mean']:.1%}"
            f" | {sw['ours_shorter_than_best_baseline']['mean']:.1%} |"
        )
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in main["targets"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sweep", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--sweep-seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "lb_sim.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, config = WorkloadSpec(), SimConfig()
    started = time.monotonic()

    rows = []
    for seed in range(args.seeds):
        rows.append(run_seed(seed, args.instances, spec, config))
        log.info("seed %d: %s", seed, {k: round(v["makespan_s"]) for k, v in rows[-1]["runs"].items()})
    summary = summarize(rows)
    main_result = {"instances": args.instances, "summary": summary, "targets": targets(summary), "rows": rows}

    sweep = {}
    for m in args.sweep:
        sweep_rows = rows if m == args.instances else [run_seed(s, m, spec, config) for s in range(args.sweep_seeds)]
        sweep[m] = summarize(sweep_rows)
        log.info("sweep %d instances: ours/LB %.3f, ours vs verl %.1f%%, vs best baseline %.1f%%", m,
                 sweep[m]["policies"][OURS]["vs_lower_bound_mean"], 100 * sweep[m]["ours_shorter_than_verl"]["mean"],
                 100 * sweep[m]["ours_shorter_than_best_baseline"]["mean"])

    report = {
        "what": "simulator (bench/sim), calibrated to the AM-Thinking-v1 report; not a measurement of engines",
        "speed_model": dataclasses.asdict(DEFAULT_SPEED),
        "anchors": [dataclasses.asdict(a) | {"model_tokens_per_s_per_seq": DEFAULT_SPEED.per_seq_tokens_per_s(
            a.batch, a.context)} for a in ANCHORS],
        "workload": dataclasses.asdict(spec),
        "sim_config": dataclasses.asdict(config),
        "main": main_result,
        "sweep": {str(m): v for m, v in sweep.items()},
        "run_time_s": time.monotonic() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(main_result, sweep, args.instances))

    print(markdown(main_result, sweep, args.instances))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {report['run_time_s']:.0f} s")


if __name__ == "__main__":
    main()
