"""One global balancer against K balancer shards, on the simulator: does splitting the instances cost makespan?

Run: ``python -m bench.sim_shards`` (from the repository root). Each seed draws one GRPO step (``--prompts`` x 16
samples, max 32k, every request sent at the step's start, the trainer's seeded shuffle) and runs it on a cold
cluster under: round robin and ``makespan`` as one global balancer (with and without migration), and K ``makespan``
shards (:class:`bench.sim.shards.ShardedBalancers`: instance k in shard k % K, migration only within a shard) with
the client spreading samples per sample or per prompt group. Sharded / global makespan is the figure of merit
(issue #17's target: within 2% at 512 instances); sharded without migration against global without migration
separates what the split costs routing from what it costs migration (a shard cannot move a sequence out of its
instances). Also reported: CPU seconds per planning round, global against the slowest shard. Rows are written after
every seed, so an interrupted run keeps what it finished. Writes ``bench/results/lb_sim_shards.json`` and ``.md``.
Simulated, never measured on engines.
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
from bench.sim.calibration import DEFAULT_SPEED
from bench.sim.engine import SimConfig, simulate
from bench.sim.shards import ShardedBalancers, TimedPlans
from bench.sim.workload import WorkloadSpec, make_workload
from load_balancer.policies import MakespanPolicy, RoundRobinPolicy
from load_balancer.policy import RoutingPolicy

log = logging.getLogger(__name__)
RESULTS = Path(__file__).parent / "results"
GLOBAL = "global_makespan"


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    make: Callable[[], RoutingPolicy]
    migrate: bool  # the balancers' migration switch
    shards: int = 1


def contenders(sharded: list[str], no_migration_shards: list[int]) -> list[Contender]:
    """The global references, then each ``K:spread`` of ``sharded``, then K shards without migration (and the global
    balancer without migration, when any are asked for)."""
    out = [
        Contender("global_round_robin", lambda: TimedPlans(RoundRobinPolicy()), migrate=False),
        Contender(GLOBAL, lambda: TimedPlans(MakespanPolicy()), migrate=True),
    ]
    if no_migration_shards:
        out.append(Contender(f"{GLOBAL}_no_migration", lambda: TimedPlans(MakespanPolicy()), migrate=False))
    for spec in sharded:
        k, spread = int(spec.split(":")[0]), spec.split(":")[1]
        out.append(
            Contender(
                f"x{k}_{spread}", lambda k=k, s=spread: ShardedBalancers(k, MakespanPolicy, s), migrate=True, shards=k
            )
        )
    for k in no_migration_shards:
        out.append(
            Contender(
                f"x{k}_sample_no_migration",
                lambda k=k: ShardedBalancers(k, MakespanPolicy, "sample"),
                migrate=False,
                shards=k,
            )
        )
    return out


def run_seed(seed: int, n_instances: int, spec: WorkloadSpec, config: SimConfig, field: list[Contender]) -> dict:
    workload = make_workload(seed, spec)
    order = np.random.default_rng(seed + 1_000_003).permutation(workload.n)  # the trainer's seeded shuffle
    bound = lower_bound(workload, n_instances, DEFAULT_SPEED)
    row: dict = {"seed": seed, "lower_bound_s": bound.makespan_s, "runs": {}}
    for c in field:
        policy = c.make()
        started = time.monotonic()
        run_config = dataclasses.replace(config, migrate=c.migrate)
        result = simulate(workload, n_instances, policy, order, DEFAULT_SPEED, run_config)
        row["runs"][c.name] = {
            "shards": c.shards,
            "migrate": c.migrate,
            "makespan_s": result.makespan_s,
            "migrations": result.migrations,
            "reprefill_tokens": result.reprefill_tokens,
            "plan_cpu_s_mean": float(np.mean(policy.plan_wall_s)) if policy.plan_wall_s else 0.0,
            "plan_cpu_s_all_shards_mean": float(np.mean(policy.plan_total_s)) if policy.plan_total_s else 0.0,
            "sim_wall_s": time.monotonic() - started,
        }
    return row


def summarize(rows: list[dict]) -> dict:
    def makespans(name: str) -> np.ndarray:
        return np.array([r["runs"][name]["makespan_s"] for r in rows])

    bound = np.array([r["lower_bound_s"] for r in rows])
    glob = makespans(GLOBAL)
    glob_no_mig = makespans(f"{GLOBAL}_no_migration") if f"{GLOBAL}_no_migration" in rows[0]["runs"] else None
    out: dict = {"seeds": len(rows), "contenders": {}}
    for name, first in rows[0]["runs"].items():
        ms = makespans(name)
        vs_global = ms / glob
        entry = {
            "shards": first["shards"],
            "migrate": first["migrate"],
            "makespan_s_mean": float(ms.mean()),
            "vs_lower_bound_mean": float(np.mean(ms / bound)),
            "vs_global_mean": float(vs_global.mean()),
            "vs_global_worst": float(vs_global.max()),
            "seeds_within_2pct_of_global": int(np.sum(vs_global <= 1.02)),
            "migrations_mean": float(np.mean([r["runs"][name]["migrations"] for r in rows])),
            "plan_cpu_s_per_round_slowest_shard": float(np.mean([r["runs"][name]["plan_cpu_s_mean"] for r in rows])),
            "plan_cpu_s_per_round_all_shards": float(
                np.mean([r["runs"][name]["plan_cpu_s_all_shards_mean"] for r in rows])
            ),
        }
        if not first["migrate"] and glob_no_mig is not None:
            entry["vs_global_no_migration_mean"] = float(np.mean(ms / glob_no_mig))
        out["contenders"][name] = entry
    return out


def markdown(report: dict) -> str:
    lines = [
        "# One global balancer vs K balancer shards (simulator)",
        "",
        "Simulated, not measured on engines (bench/sim_shards.py). One GRPO step per seed from a cold balancer,"
        " every request sent at the step's start; shards own instances k % K and migrate only among them; the"
        " client spreads per sample (round robin in the shuffled order) or per prompt group. Plan CPU: CPU seconds of"
        " one planning round (every 2 s), the global policy's against the slowest shard's (shards plan in parallel"
        " processes), on this shared box.",
        "",
    ]
    for m, part in report["instances"].items():
        s = part["summary"]
        lines += [
            f"## {m.split(',')[0]} instances, {part['prompts']} prompts x 16 samples"
            f" (max {part['workload']['max_tokens']} tokens, median {part['workload']['median_output']:.0f}),"
            f" {s['seeds']} seeds",
            "",
            "| contender | shards | migrate | makespan s | / lower bound | / global (mean) | / global (worst)"
            " | seeds within 2% | / global without migration | migrations | plan CPU s per round (slowest shard) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, e in s["contenders"].items():
            no_mig = e.get("vs_global_no_migration_mean")
            lines.append(
                f"| {name} | {e['shards']} | {'yes' if e['migrate'] else 'no'} | {e['makespan_s_mean']:.0f}"
                f" | {e['vs_lower_bound_mean']:.3f} | {e['vs_global_mean']:.4f} | {e['vs_global_worst']:.4f}"
                f" | {e['seeds_within_2pct_of_global']}/{s['seeds']} | {'' if no_mig is None else f'{no_mig:.4f}'}"
                f" | {e['migrations_mean']:.0f} | {e['plan_cpu_s_per_round_slowest_shard']:.3f} |"
            )
        lines.append("")
    lines += [f"- {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


def merge(parts: list[Path], out: Path, notes: list[str]) -> None:
    """One report from runs side by side in separate processes (other instance counts, or other seeds of one)."""
    reports = [json.loads(p.read_text()) for p in parts]
    merged = {**reports[0], "instances": {}, "run_time_s": {}, "notes": notes}
    for p, r in zip(parts, reports):
        for m, part in r["instances"].items():
            # The same instance count with other step sizes or lengths is another entry.
            scale = part["workload"]["max_tokens"] / WorkloadSpec().max_tokens
            m = m if part["prompts"] == WorkloadSpec().n_prompts else f"{m}, {part['prompts']} prompts"
            m = m if scale == 1.0 else f"{m}, lengths x{scale:g}"
            if m in merged["instances"]:
                merged["instances"][m]["rows"] += part["rows"]
            else:
                merged["instances"][m] = part
        merged["run_time_s"][p.name] = r["run_time_s"]
    for part in merged["instances"].values():
        part["rows"].sort(key=lambda row: row["seed"])
        part["summary"] = summarize(part["rows"])
    write(merged, out)
    print(markdown(merged))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[64, 512])
    parser.add_argument(
        "--prompts",
        type=int,
        nargs="+",
        default=[256, 256],
        help="prompts per step for each --instances entry (16 samples each)",
    )
    parser.add_argument(
        "--length-scale",
        type=float,
        nargs="+",
        default=[1.0, 1.0],
        help="for each --instances entry, output lengths (median and max_tokens) times this: the"
        " global policy's planning costs O(instances^2) per round, and rounds grow with the step's"
        " length",
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument(
        "--sharded",
        nargs="+",
        default=[f"{k}:{s}" for k in (2, 4, 8) for s in ("sample", "group")],
        help="sharded contenders as K:spread (spread: bench.sim.shards.ShardClient.SPREADS)",
    )
    parser.add_argument(
        "--no-migration-shards",
        type=int,
        nargs="*",
        default=[8],
        help="shard counts also run without migration (separates routing from migration scope)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "lb_sim_shards.json")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="instead of simulating, join these reports (runs of other --instances) into --out",
    )
    parser.add_argument("--note", action="append", default=[], help="with --merge: a line for the report (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.merge:
        merge(args.merge, args.out, args.note)
        return
    field = contenders(args.sharded, args.no_migration_shards)
    config, started = SimConfig(), time.monotonic()
    report: dict = {
        "what": "simulator (bench/sim), calibrated to the AM-Thinking-v1 report; not a measurement of engines",
        "sim_config": dataclasses.asdict(config),
        "instances": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for m, prompts, scale in zip(args.instances, args.prompts, args.length_scale, strict=True):
        base = WorkloadSpec()
        spec = WorkloadSpec(
            n_prompts=prompts, max_tokens=int(base.max_tokens * scale), median_output=base.median_output * scale
        )
        rows: list[dict] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(run_seed(seed, m, spec, config, field))
            log.info(
                "%d instances, seed %d: %s",
                m,
                seed,
                {name: round(run["makespan_s"]) for name, run in rows[-1]["runs"].items()},
            )
            report["instances"][str(m)] = {
                "prompts": prompts,
                "workload": dataclasses.asdict(spec),
                "summary": summarize(rows),
                "rows": rows,
            }
            report["run_time_s"] = time.monotonic() - started
            write(report, args.out)
    print(markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {report['run_time_s']:.0f} s")


if __name__ == "__main__":
    main()
