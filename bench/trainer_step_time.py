"""Per-step time of the old hand-written CPU GRPO loop vs verl's RayPPOTrainer.fit on the CPU demo, same batch.

    python bench/trainer_step_time.py [--steps 8] [--order ABBA] [--old 844ef5c] [--new HEAD]

Both loops come from git history: each commit is checked out into a temporary worktree under /tmp (removed at the
end) and run there as ``python -m am_rl.main_grpo --config-name demo_cpu`` with ``PYTHONPATH`` = that worktree,
under ``nice -n 5``, one run at a time (A = old, B = new; ``--order ABBA`` repeats them in the other order to cancel
drift on a shared box). Same batch and sizes for both: 32 prompts x 8 samples, max_response_length 48 (the demo's
defaults, passed explicitly), K training steps, no evaluation or checkpoint inside the timed steps:

- old (am_rl/cpu/trainer.py, ``am_rl.shape=cpu``): ``trainer.test_freq=1000 trainer.save_freq=1000``; it still
  evaluates before step 1 and evaluates + saves after step K, both outside the steps (excluded; the first
  evaluation is reported next to the startup). Per-step numbers from ``summary.json``'s ``history``: the step time is
  ``timing/rollout_s + timing/reward_s + timing/update_s + timing/weight_sync_s`` (the loop logs no total).
- new (verl's RayPPOTrainer, main): ``trainer.test_freq=-1 trainer.save_freq=-1
  trainer.val_before_train=false``. Per-step numbers from ``metrics/*.jsonl`` (``timing_s/step`` and its parts).

Independently of what each loop reports, the benchmark timestamps every output line as it arrives; the interval
between consecutive ``step:N - ...`` console lines is a wall step time measured the same way for both (the new
loop's lines travel through Ray's log monitor, which adds jitter per line but not to the mean over steps 2..K).

Step 1 is skipped (warm-up effects); steps 2..K are summarised. Startup = launch to the start of step 1
(the step-1 line's arrival minus step 1's own time, minus the old loop's initial evaluation, reported separately).

Writes bench/results/trainer_step_time.json (raw per-step numbers + summary) and bench/results/trainer_step_time.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MAIN = HERE.parent  # this checkout: its git history and its two virtualenvs
PYTHON = str(MAIN / ".venv" / "bin" / "python")
VLLM_PYTHON = str(MAIN / ".venv-vllm" / "bin" / "python")
CACHE = Path(os.environ.get("AM_RL_CACHE", Path.home() / ".cache" / "am_rl"))
STEP_LINE = re.compile(r"\bstep:(\d+) - ")
RUN_TIMEOUT_S = 1800

COMMON = ["data.train_batch_size=32", "actor_rollout_ref.rollout.n=8", "data.max_response_length=48"]
LOOPS = {
    "old": {
        "label": "old: am_rl/cpu GRPOTrainer.train_step",
        "overrides": ["am_rl.shape=cpu", "trainer.test_freq=1000", "trainer.save_freq=1000", "trainer.resume=null"],
    },
    "new": {
        "label": "new: verl RayPPOTrainer.fit",
        # the old loop's task (a op b, 0..5; the demo's default since moved to a harder one with a held-out split)
        "overrides": ["trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.val_before_train=false",
                      "am_rl.max_operand=5", "am_rl.max_second_operand=null", "am_rl.ops=+-*", "am_rl.operands=2",
                      "am_rl.warmup.steps=130"],
    },
}
# Comparable parts: (old keys summed, new keys summed).
PARTS = {
    "rollout+reward": (["timing/rollout_s", "timing/reward_s"], ["timing_s/gen", "timing_s/reward"]),
    "update": (["timing/update_s"], ["timing_s/old_log_prob", "timing_s/adv", "timing_s/update_actor"]),
    "weight_sync": (["timing/weight_sync_s"], ["timing_s/update_weights"]),
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(MAIN), *args], check=True, capture_output=True, text=True).stdout.strip()


def cache_entries() -> list[str]:
    models = CACHE / "models"
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


def run_loop(which: str, worktree: Path, steps: int, log_dir: Path) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix=f"steptime-{which}-", dir="/tmp"))
    cmd = ["nice", "-n", "5", PYTHON, "-m", "am_rl.main_grpo", "--config-name", "demo_cpu", *COMMON,
           *LOOPS[which]["overrides"], f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={out_dir}"]
    env = os.environ | {"PYTHONPATH": str(worktree), "AM_RL_VLLM_PYTHON": VLLM_PYTHON, "PYTHONUNBUFFERED": "1"}
    cache_before = cache_entries()
    load_before = os.getloadavg()
    log_path = log_dir / f"{which}-{int(time.time())}.log"
    line_t: dict[int, float] = {}
    print(f"[{time.strftime('%H:%M:%S')}] {which}: {' '.join(cmd[3:])}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=worktree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                now = time.monotonic() - start
                log.write(f"{now:9.3f} {line}")
                m = STEP_LINE.search(line)
                if m and "val/" not in line and int(m.group(1)) not in line_t and int(m.group(1)) >= 1:
                    line_t[int(m.group(1))] = now
                    print(f"  {which} step {m.group(1)} line at {now:.1f}s", flush=True)
                if now > RUN_TIMEOUT_S:
                    raise TimeoutError(f"{which} ran past {RUN_TIMEOUT_S}s")
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    wall = time.monotonic() - start
    if rc != 0:
        tail = log_path.read_text().splitlines()[-60:]
        raise RuntimeError(f"{which} exited {rc}; log {log_path}; last lines:\n" + "\n".join(tail))

    if which == "old":
        summary = json.loads((out_dir / "summary.json").read_text())
        per_step = [{k: v for k, v in h.items() if k == "step" or k.startswith("timing/")} for h in summary["history"]]
        for s in per_step:
            s["step_s"] = sum(s[k] for k in ("timing/rollout_s", "timing/reward_s", "timing/update_s",
                                             "timing/weight_sync_s"))
        initial_eval_s = summary["evals"][0]["timing/eval_s"]
    else:
        per_step = []
        for f in sorted((out_dir / "metrics").glob("*.jsonl")):
            for line in f.read_text().splitlines():
                rec = json.loads(line)
                per_step.append({"step": rec["step"], **{k: v for k, v in rec["data"].items()
                                                         if k.startswith("timing_s/") and "agent_loop" not in k}})
        for s in per_step:
            s["step_s"] = s["timing_s/step"]
        initial_eval_s = 0.0
    per_step.sort(key=lambda s: s["step"])
    for s in per_step:
        keys = PARTS_KEYS[which]
        for part, ks in keys.items():
            s[f"part/{part}"] = sum(s.get(k, 0.0) for k in ks)
        s["part/other"] = s["step_s"] - sum(s[f"part/{p}"] for p in keys)
        s["line_t_s"] = line_t.get(s["step"])
        prev = line_t.get(s["step"] - 1)
        s["wall_interval_s"] = s["line_t_s"] - prev if s["line_t_s"] is not None and prev is not None else None
    first = per_step[0]
    startup = {
        "launch_to_step1_line_s": line_t.get(1),
        "launch_to_step1_start_s": line_t[1] - first["step_s"] - initial_eval_s if 1 in line_t else None,
        "initial_eval_s": initial_eval_s,  # old loop only: its held-out evaluation before step 1
        "step1_s": first["step_s"],
    }
    cache_after = cache_entries()
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "loop": which,
        "wall_s": wall,
        "startup": startup,
        "per_step": per_step,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "cache_built_during_run": sorted(set(cache_after) - set(cache_before)),
        "log": str(log_path),
    }


PARTS_KEYS = {"old": {p: ks[0] for p, ks in PARTS.items()}, "new": {p: ks[1] for p, ks in PARTS.items()}}


def stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "mean": statistics.fmean(xs), "median": statistics.median(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs), "max": max(xs)}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for which in ("old", "new"):
        steps = [s for r in runs if r["loop"] == which for s in r["per_step"] if s["step"] >= 2]
        out[which] = {
            "step_s": stats([s["step_s"] for s in steps]),
            "wall_interval_s": stats([s["wall_interval_s"] for s in steps]),
            **{f"part/{p}": stats([s[f"part/{p}"] for s in steps]) for p in [*PARTS, "other"]},
            "startup_launch_to_step1_start_s": stats([r["startup"]["launch_to_step1_start_s"]
                                                      for r in runs if r["loop"] == which]),
            "initial_eval_s": stats([r["startup"]["initial_eval_s"] for r in runs if r["loop"] == which]),
            "wall_s": stats([r["wall_s"] for r in runs if r["loop"] == which]),
        }
        if which == "new":
            for k in ("timing_s/gen", "timing_s/reward", "timing_s/old_log_prob", "timing_s/adv",
                      "timing_s/update_actor", "timing_s/update_weights"):
                out[which][k] = stats([s.get(k) for s in steps])
        else:
            for k in ("timing/rollout_s", "timing/reward_s", "timing/update_s", "timing/weight_sync_s"):
                out[which][k] = stats([s.get(k) for s in steps])
    ratio = {}
    for metric in ("step_s", "wall_interval_s", *[f"part/{p}" for p in PARTS]):
        o, n = out["old"][metric], out["new"][metric]
        if o.get("n") and n.get("n") and o["mean"] > 0:
            ratio[metric] = {"mean": n["mean"] / o["mean"], "median": n["median"] / o["median"]}
    out["ratio_new_over_old"] = ratio
    # Runs paired in order (AB, BA, ...): each pair ran back to back, so shared-box drift cancels best within it.
    pairs = []
    for a, b in zip(runs[0::2], runs[1::2]):
        if {a["loop"], b["loop"]} != {"old", "new"}:
            continue
        m = {r["loop"]: statistics.fmean(s["step_s"] for s in r["per_step"] if s["step"] >= 2) for r in (a, b)}
        pairs.append({"order": f"{a['loop']},{b['loop']}", "old_step_s": m["old"], "new_step_s": m["new"],
                      "ratio": m["new"] / m["old"],
                      "load_avg_1min_before": {a["loop"]: a["load_avg_before"][0], b["loop"]: b["load_avg_before"][0]}})
    out["pairs"] = pairs
    out["target_ratio_le_1.3"] = bool(pairs) and all(p["ratio"] <= 1.3 for p in pairs) and \
        ratio.get("step_s", {}).get("mean", float("inf")) <= 1.3
    return out


def write_markdown(result: dict, path: Path) -> None:
    s = result["summary"]
    o, n = s["old"], s["new"]
    r = s["ratio_new_over_old"]

    def cell(d: dict) -> str:
        return f"{d['mean']:.2f} / {d['median']:.2f}" if d.get("n") else "n/a"

    rows = [("step (self-reported)", "step_s"), ("step (wall, between step lines)", "wall_interval_s"),
            ("rollout + reward", "part/rollout+reward"), ("update", "part/update"),
            ("weight sync", "part/weight_sync"), ("other (new: step minus parts)", "part/other")]
    lines = [
        "# Trainer step time: old CPU loop vs verl RayPPOTrainer.fit (CPU demo)",
        "",
        f"Old `{result['commits']['old']}` (am_rl/cpu GRPOTrainer) vs new `{result['commits']['new']}` (verl "
        f"RayPPOTrainer on main). Batch: 32 prompts x 8 samples, max_response_length 48, "
        f"{result['steps']} steps per run, steps 2..{result['steps']} summarised; run order "
        f"{' '.join(x['loop'] for x in result['runs'])} (one at a time, `nice -n 5`).",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}, shared with other work "
        f"(load average before/after each run in the JSON).",
        "",
        "Seconds per step, mean / median over steps 2..K of all runs of that loop:",
        "",
        "| | old | new | new/old (mean) |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        ratio = f"{r[key]['mean']:.2f}" if key in r else ""
        lines.append(f"| {label} | {cell(o[key])} | {cell(n[key])} | {ratio} |")
    lines += [
        f"| startup: launch to step 1 start | {cell(o['startup_launch_to_step1_start_s'])} | "
        f"{cell(n['startup_launch_to_step1_start_s'])} | |",
        f"| old: held-out eval before step 1 (excluded) | {cell(o['initial_eval_s'])} | – | |",
        "",
        (f"**Ratio new/old per step (self-reported, mean): {r['step_s']['mean']:.2f}** (median "
         f"{r['step_s']['median']:.2f}; wall-interval mean {r['wall_interval_s']['mean']:.2f}). "
         f"Target <= 1.3 (pooled and in every back-to-back pair): {'met' if s['target_ratio_le_1.3'] else 'NOT met'}."
         if "step_s" in r and "wall_interval_s" in r else "No ratio: only one loop was run."),
        "",
        "Per run (mean step s over steps 2..K, self-reported / wall-interval; startup s):",
        "",
    ]
    for run in result["runs"]:
        st = [x for x in run["per_step"] if x["step"] >= 2]
        wi = [x["wall_interval_s"] for x in st if x["wall_interval_s"] is not None]
        lines.append(f"- {run['loop']}: {statistics.fmean(x['step_s'] for x in st):.2f} / "
                     f"{statistics.fmean(wi) if wi else float('nan'):.2f}; startup "
                     f"{run['startup']['launch_to_step1_start_s']:.1f}; load avg before "
                     f"{run['load_avg_before'][0]:.1f}")
    lines += ["", "Back-to-back pairs (mean step s over steps 2..K; 1-min load average before each run):", ""]
    for p in s.get("pairs", []):
        lines.append(f"- {p['order']}: old {p['old_step_s']:.2f}, new {p['new_step_s']:.2f}, new/old "
                     f"**{p['ratio']:.2f}**; load before old {p['load_avg_1min_before']['old']:.1f}, new "
                     f"{p['load_avg_1min_before']['new']:.1f}")
    if result.get("run_note"):
        lines += ["", "## This run", "", result["run_note"]]
    lines += ["", "## Notes", "", *result["notes"], ""]
    path.write_text("\n".join(lines))


NOTES = [
    "- Part mapping: old `timing/rollout_s + timing/reward_s` vs new `timing_s/gen + timing_s/reward`; in the new "
    "loop rewards are scored inside the agent loop (verl's reward-loop workers calling the reward service per "
    "sample, overlapped with generation), so `timing_s/reward` is ~0 and the scoring sits in `timing_s/gen`. The old "
    "loop scores the whole batch in one call after all rollouts finish.",
    "- Update: the old loop does one forward + backward + optimizer step on the whole batch and takes the 'old' "
    "log-probs as the detached log-probs of that same forward (exact with one step per batch). The new loop takes the "
    "engines' log-probs as old log-probs (`algorithm.rollout_correction.bypass_mode`, fp32 on both sides, the gap "
    "logged every step) and runs `update_actor` through verl's FSDP2 engine in a Ray worker (data moved to/from the "
    "worker as DataProto); `timing_s/old_log_prob` is absent (0) with bypass; `timing_s/adv` is the advantage "
    "computation (inside the old loop's `timing/update_s`).",
    "- Weight sync: the old loop writes one safetensors file and pushes it to both vLLM servers directly. The new "
    "loop goes through verl's checkpoint-engine manager (am_rl's BalancerPausingCheckpointManager): pause routing in "
    "the balancer, gather the actor's weights from the FSDP worker, push to the external engines, resume routing.",
    "- Old step time is the sum of its four logged parts (it logs no total; what is outside them is prompt building "
    "and metric bookkeeping, tiny). New `timing_s/step` is verl's whole step; `other` = step minus the mapped parts "
    "(batch building, balancing, metrics).",
    "- The new loop runs Ray actors (task runner, agent-loop workers, reward-loop worker, FSDP worker) on the same 2 "
    "cores as the two vLLM servers, the balancer and the reward service.",
    "- Startup differs in kind: the new loop starts Ray, its workers and the FSDP engine (the vLLM servers start in "
    "parallel); the old loop starts the servers and loads the model in-process, then evaluates (excluded here).",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--order", default="ABBA", help="A = old, B = new; e.g. AB, BA, ABBA")
    ap.add_argument("--old", default="844ef5c")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="a note on this run (e.g. what else ran on the box), kept in the JSON")
    ap.add_argument("--rerender", action="store_true",
                    help="no runs: recompute the summary and the .md from an existing trainer_step_time.json")
    args = ap.parse_args()
    if args.rerender:
        path = args.results / "trainer_step_time.json"
        result = json.loads(path.read_text())
        result["summary"] = summarise(result["runs"])
        result["notes"] = NOTES
        if args.note:
            result["run_note"] = args.note
        path.write_text(json.dumps(result, indent=2))
        write_markdown(result, args.results / "trainer_step_time.md")
        print((args.results / "trainer_step_time.md").read_text())
        return
    if args.steps < 3:
        sys.exit("--steps must be >= 3 (step 1 is skipped, intervals need step 2..K)")

    commits = {"old": git("rev-parse", "--short", args.old), "new": git("rev-parse", "--short", args.new)}
    tmp = Path(tempfile.mkdtemp(prefix="steptime-", dir="/tmp"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    worktrees: dict[str, Path] = {}
    runs: list[dict] = []
    try:
        for which in ("old", "new"):
            worktrees[which] = tmp / f"wt-{which}"
            git("worktree", "add", "--detach", str(worktrees[which]), commits[which])
        for letter in args.order:
            which = {"A": "old", "B": "new"}[letter]
            runs.append(run_loop(which, worktrees[which], args.steps, log_dir))
            print(json.dumps({"loop": which, "startup": runs[-1]["startup"],
                              "steps": [round(s["step_s"], 2) for s in runs[-1]["per_step"]]}), flush=True)
    finally:
        for wt in worktrees.values():
            subprocess.run(["git", "-C", str(MAIN), "worktree", "remove", "--force", str(wt)], check=False)
        # tmp (the runs' logs) is kept when a run failed, so its log can be read; removed below on success.

    result = {
        "commits": commits,
        "steps": args.steps,
        "order": args.order,
        "command_common": ["python -m am_rl.main_grpo --config-name demo_cpu", *COMMON],
        "overrides": {k: v["overrides"] for k, v in LOOPS.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": runs,
        "summary": summarise(runs),
        "notes": NOTES,
        "run_note": args.note,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "trainer_step_time.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, args.results / "trainer_step_time.md")
    shutil.rmtree(tmp, ignore_errors=True)
    print((args.results / "trainer_step_time.md").read_text())


if __name__ == "__main__":
    main()
