"""Teachers side by side ("Not All Correct Answers Are Equal"): per teacher and data source, how many responses
verified, how long they are, how surprising the scoring model finds them (the responses the local filters keep: only
those are scored), and how many were kept; as the report's `teachers` table and as a PNG beside it."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from am_rl.data.curation import Sample
from am_rl.data.grades import percentiles


def compare_teachers(samples: dict[str, list[Sample]], sources: dict[str, str], kept_ids: set[str]) -> list[dict]:
    """One entry per (teacher, data source), teachers in the order they first appear."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for rid, ss in samples.items():
        for s in ss:
            groups.setdefault((s.record.teacher, sources[rid]), []).append(s)
    table = []
    for (teacher, source), ss in groups.items():
        scored = [s for s in ss if s.score is not None]
        verified = [s for s in scored if s.verified]
        ppl = [s.score.perplexity for s in scored if s.score.perplexity and math.isfinite(s.score.perplexity)]
        table.append({
            "teacher": teacher,
            "data_source": source,
            "responses": len(ss),
            "rejected": len(ss) - len(scored),
            "verified_rate": len(verified) / len(scored) if scored and any(s.verified is not None for s in scored)
            else None,
            "truncated": sum(s.record.finish_reason == "length" for s in ss),
            "response_tokens": percentiles([s.record.response_tokens for s in scored]),
            "verified_response_tokens": percentiles([s.record.response_tokens for s in verified]),
            "perplexity": percentiles(ppl),
            "filtered": dict(Counter(s.drop.reason for s in scored if s.drop)),
            "kept": sum(s.id in kept_ids for s in ss),
        })  # fmt: skip
    return table


def plot_teachers(samples: dict[str, list[Sample]], table: list[dict], path: str | Path) -> Path:
    """Three panels: verified rate per teacher and source, response lengths per teacher, perplexity per teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = list(dict.fromkeys(row["teacher"] for row in table))
    sources = list(dict.fromkeys(row["data_source"] for row in table))
    by_teacher = {t: [s for ss in samples.values() for s in ss if s.record.teacher == t and s.score] for t in teachers}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / max(len(teachers), 1)
    for i, t in enumerate(teachers):
        rates = [next((r["verified_rate"] for r in table if r["teacher"] == t and r["data_source"] == s), None)
                 for s in sources]  # fmt: skip
        xs = [x + i * width for x in range(len(sources))]
        axes[0].bar(xs, [r or 0.0 for r in rates], width, label=t)
        for x, r in zip(xs, rates):  # None: a reward-model source, nothing verified
            axes[0].text(x, (r or 0.0) + 0.01, "n/a" if r is None else f"{r:.2f}", ha="center", fontsize=8)
    axes[0].set_xticks([x + width * (len(teachers) - 1) / 2 for x in range(len(sources))], sources, rotation=20)
    axes[0].set_ylabel("verified rate")
    axes[0].set_ylim(0, 1)
    axes[0].legend()
    axes[0].set_title("verified responses")
    axes[1].boxplot([[s.record.response_tokens for s in by_teacher[t]] or [0] for t in teachers], tick_labels=teachers)
    axes[1].set_ylabel("response tokens")
    axes[1].set_title("response length")
    ppl = [[s.score.perplexity for s in by_teacher[t] if s.score.perplexity and math.isfinite(s.score.perplexity)]
           for t in teachers]  # fmt: skip
    if any(ppl):
        axes[2].boxplot([p or [1.0] for p in ppl], tick_labels=teachers)
        axes[2].set_yscale("log")
        axes[2].set_title("perplexity under the scoring model")
    else:
        axes[2].text(0.5, 0.5, "no scoring model", ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_axis_off()
        axes[2].set_title("perplexity")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
