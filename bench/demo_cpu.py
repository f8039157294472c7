"""Benchmark the CPU demo end to end: held-out accuracy gain and wall time on this machine.

    python -m bench.demo_cpu [hydra overrides...]

Runs ``python -m am_rl.main_grpo --config-name demo_cpu`` with a fresh model cache (so the tiny model's build and
SFT warm-up are timed too), then writes ``bench/results/demo_cpu.json`` and ``bench/results/demo_cpu.png``:
accuracy at the warmed-up start (the baseline) and at the end, wall time, and the share of step time spent in
rollout, reward, update and weight sync. Targets (issue 6): +15 points within 15 minutes.
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
    parts = {k: sum(h[f"timing/{k}_s"] for h in history) for k in ("rollout", "reward", "update", "weight_sync")}
    step_total = sum(parts.values())
    result = {
        "command": " ".join(["python -m am_rl.main_grpo --config-name demo_cpu", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_after": os.getloadavg()},
        "wall_time_s": round(wall_s, 1),
        "steps": summary["steps"],
        "baseline_val_accuracy": summary["initial_val_accuracy"],
        "final_val_accuracy": summary["final_val_accuracy"],
        "gain_points": round(100 * (summary["final_val_accuracy"] - summary["initial_val_accuracy"]), 1),
        "evals": summary["evals"],
        "step_time_share": {k: round(v / step_total, 3) for k, v in parts.items()},
        "mean_step_s": round(step_total / len(history), 2),
        "mean_rollout_tokens_per_s": round(sum(h["rollout/tokens_per_s"] for h in history) / len(history), 1),
        "targets": {"gain_points>=15": None, "wall_time_s<=900": wall_s <= 900},
    }
    result["targets"]["gain_points>=15"] = result["gain_points"] >= 15
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_cpu.json").write_text(json.dumps(result, indent=2))
    shutil.copy(out_dir / "learning_curve.png", RESULTS / "demo_cpu.png")
    print(json.dumps({k: result[k] for k in ("wall_time_s", "baseline_val_accuracy", "final_val_accuracy",
                                            "gain_points", "step_time_share")}, indent=2))
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
