"""End-of-run artefacts: the learning-curve PNG and the JSON summary."""

from __future__ import annotations

import json
from pathlib import Path


def write_learning_curve(history: list[dict], evals: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["reward/mean"] for h in history], label="train reward (mean)", alpha=0.7)
    ax.plot([e["step"] for e in evals], [e["val/accuracy"] for e in evals], "o-", label="held-out accuracy (T=0.6)")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("am_rl CPU demo: tiny Qwen2 on arithmetic")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(history: list[dict], evals: list[dict], extra: dict, path: Path) -> dict:
    summary = {
        "steps": len(history),
        "initial_val_accuracy": evals[0]["val/accuracy"] if evals else None,
        "final_val_accuracy": evals[-1]["val/accuracy"] if evals else None,
        "evals": evals,
        "history": history,
        **extra,
    }
    path.write_text(json.dumps(summary, indent=2))
    return summary
