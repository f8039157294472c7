"""Stage-1 pass rates from verl's rollout dump: what the stage-2 builder reads (``python -m am_rl.data stage2 --logs``).

With ``trainer.rollout_data_dir`` set, verl writes every training sample of step N to ``<dir>/N.jsonl`` with its
decoded prompt (special tokens skipped), its score and the step. The samples of one prompt in one step are its GRPO
group; each group becomes one record ``{row_id, k, passes, step}``, the row found by decoding each row's prompt the
way verl does. Later steps come later in the file, so the stage-2 builder's "last record wins" measures the latest
stage-1 policy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def prompt_texts(rows: list[dict], tokenizer) -> dict[str, str]:
    """decoded prompt (as verl dumps it) -> row_id."""
    out: dict[str, str] = {}
    for row in rows:
        ids = tokenizer.apply_chat_template(list(row["prompt"]), add_generation_prompt=True, tokenize=True,
                                            return_dict=False)  # fmt: skip
        text = tokenizer.decode(ids, skip_special_tokens=True)
        rid = row["extra_info"]["row_id"]
        if out.setdefault(text, rid) != rid:
            raise ValueError(f"rows {out[text]} and {rid} have the same prompt: their pass rates cannot be told apart")
    return out


def group_records(dump_dir: Path, rows: list[dict], tokenizer, pass_score: float = 1.0) -> list[dict]:
    """One pass-rate record per (step, prompt) of the dump, steps in order."""
    by_text = prompt_texts(rows, tokenizer)
    records = []
    for path in sorted(dump_dir.glob("*.jsonl"), key=lambda p: int(p.stem)):
        groups: dict[str, list[float]] = defaultdict(list)
        for line in path.read_text().splitlines():
            if line.strip():
                sample = json.loads(line)
                groups[sample["input"]].append(float(sample["score"]))
        for text, scores in groups.items():
            if text not in by_text:
                raise ValueError(f"{path}: a sample's prompt matches no stage-1 row: {text[:200]!r}")
            passes = sum(s >= pass_score for s in scores)
            records.append({"row_id": by_text[text], "k": len(scores), "passes": passes, "step": int(path.stem)})
    if not records:
        raise FileNotFoundError(f"no rollout dump in {dump_dir} (trainer.rollout_data_dir)")
    return records


def write_records(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
