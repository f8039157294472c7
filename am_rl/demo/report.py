"""End-of-run artefacts from verl's metrics: the learning-curve PNG and the JSON summary.

verl's ``file`` logger writes one JSON line per step (``{"step": N, "data": {metric: value}}``); ``am_rl.trainer.run``
points it at a new file under ``<run>/metrics/`` per launch, so a resumed run's files together hold every step (a
step logged twice, before and after a resume, keeps its latest value).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAIN_SCORE = "critic/score/mean"  # verl: mean sequence score of the step's samples
# verl's validation metric per data source: pass@1 averaged over the n samples of each problem
VAL_ACC = re.compile(r"^val-core/(?P<source>[^/]+)/acc/mean@\d+$")


def read_metrics(metrics_dir: Path) -> dict[int, dict[str, float]]:
    """step -> metrics, merged over every launch's file in time order."""
    steps: dict[int, dict[str, float]] = {}
    for path in sorted(metrics_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                steps.setdefault(int(record["step"]), {}).update(record["data"])
    return dict(sorted(steps.items()))


def validation_curves(steps: dict[int, dict[str, float]]) -> dict[str, list[tuple[int, float]]]:
    """data source -> [(step, held-out accuracy)] for every evaluated step."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for step, metrics in steps.items():
        for key, value in metrics.items():
            if m := VAL_ACC.match(key):
                curves.setdefault(m["source"], []).append((step, float(value)))
    return curves


def write_learning_curve(steps: dict[int, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(s, m[TRAIN_SCORE]) for s, m in steps.items() if TRAIN_SCORE in m]
    ax.plot([s for s, _ in train], [v for _, v in train], label="train reward (mean)", alpha=0.7)
    for source, curve in validation_curves(steps).items():
        ax.plot([s for s, _ in curve], [v for _, v in curve], "o-", label=f"{source} accuracy (val_kwargs)")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("am_rl CPU demo on verl's trainer: tiny Qwen2 on arithmetic")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(steps: dict[int, dict[str, float]]) -> dict:
    train_steps = [s for s, m in steps.items() if TRAIN_SCORE in m]
    step_times = [steps[s]["timing_s/step"] for s in train_steps if "timing_s/step" in steps[s]]
    return {
        "steps": max(train_steps, default=0),
        "validation": {
            source: {"initial": curve[0][1], "final": curve[-1][1], "curve": curve}
            for source, curve in validation_curves(steps).items()
        },
        "mean_step_s": sum(step_times) / len(step_times) if step_times else None,
        "history": [{"step": s, **steps[s]} for s in train_steps],
    }


def write_run_report(out_dir: Path) -> dict:
    """``learning_curve.png`` and ``summary.json`` in ``out_dir`` from ``out_dir/metrics``; returns the summary."""
    steps = read_metrics(out_dir / "metrics")
    write_learning_curve(steps, out_dir / "learning_curve.png")
    summary = summarize(steps)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
