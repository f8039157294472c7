"""What a pipeline stage did: rows in, rows out, and every dropped row with its id and reason, as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from am_rl.data.rows import DroppedRow


@dataclass
class StageReport:
    stage: str
    rows_in: int = 0
    rows_out: int = 0
    # filter name -> rows left after it, in the order the filters ran (the counts at every filter)
    after: dict[str, int] = field(default_factory=dict)
    dropped: list[DroppedRow] = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # stage-specific numbers (pass-rate histogram, mix shortfalls, ...)

    def drop(self, row_id: str, reason: str, detail: str = "") -> None:
        self.dropped.append(DroppedRow(row_id=row_id, stage=self.stage, reason=reason, detail=detail))

    def reasons(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dropped))

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "after": self.after,
            "dropped_by_reason": self.reasons(),
            "notes": self.notes,
            "dropped": [asdict(d) for d in self.dropped],
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def summary(self) -> str:
        steps = " -> ".join(f"{name} {n}" for name, n in self.after.items())
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons().items())) or "none"
        return f"{self.stage}: {self.rows_in} in -> {steps or ''} -> {self.rows_out} out (dropped: {reasons})"


def report_path(output: str | Path) -> Path:
    """The report written beside an output file: data/x.parquet -> data/x.report.json."""
    output = Path(output)
    return output.with_name(output.name.split(".")[0] + ".report.json")
