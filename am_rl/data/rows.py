"""verl's parquet row schema, the checks every pipeline stage runs on a row, and parquet I/O.

A row (one training query) as verl's RLHFDataset reads it::

    data_source   str         picks the reward type (am_rl.rewards.routing table)
    prompt        list[dict]  chat messages [{"role", "content"}, ...]
    ability       str         math | code | instruction_following | chat
    reward_model  dict        {"style": "rule" | "model", "ground_truth": str}
    extra_info    dict        {"index": int, "row_id": str, "prompt": str, ...}

Ground truths are strings: the math answer, or the JSON text of the code / IFEval truth in the reward service's
formats (reward_server.types), which the trainer's reward router parses back. ``extra_info.row_id`` ("<source>:<n>")
follows a row through every stage, so each report names rows the same way; ``extra_info.prompt`` is the bare user
question: what IFEval/RM judges see, and what cleaning compares (the shared system prompt and suffix would make
every pair of short questions look alike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import TypeAdapter, ValidationError

from am_rl.rewards.routing import RewardRouter
from reward_server.types import CodeTruth, IFEvalTruth

ABILITY = {"math": "math", "code": "code", "ifeval": "instruction_following", "rm": "chat"}
STYLE = {"math": "rule", "code": "rule", "ifeval": "rule", "rm": "model"}
_CODE_TRUTH: TypeAdapter = TypeAdapter(CodeTruth)


class RowError(ValueError):
    """A row that cannot be used; the message says which field and why (it goes into the stage's report)."""


@dataclass(frozen=True)
class DroppedRow:
    """One row a stage did not pass on, and why: every report is a list of these plus counts."""

    row_id: str  # extra_info.row_id, or "<file>:<line>" before ingest assigned one
    stage: str  # ingest | clean | select | stage2
    reason: str  # a short key: bad_row, url, image, exact_duplicate, near_duplicate, contaminated, ...
    detail: str = ""  # the evidence: the failing field, the matched URL, the row it duplicates, the eval n-gram


def parse_truth(reward_type: str, ground_truth: Any) -> Any:
    """The ground truth validated against the reward service's type for `reward_type` (JSON strings parsed)."""
    if reward_type in ("code", "ifeval") and isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError as e:
            raise RowError(f"reward_model.ground_truth: not valid JSON for {reward_type} ({e})") from None
    try:
        if reward_type == "code":
            return _CODE_TRUTH.validate_python(ground_truth)
        if reward_type == "ifeval":
            return IFEvalTruth.model_validate(ground_truth)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RowError(f"reward_model.ground_truth: invalid {reward_type} truth at {where or '<root>'}: {first['msg']}")
    if reward_type == "math" and not (isinstance(ground_truth, str) and ground_truth.strip()):
        raise RowError("reward_model.ground_truth: math needs a non-empty answer string")
    return ground_truth


def truth_text(reward_type: str, truth: Any) -> str:
    """How a validated ground truth is stored in the parquet column."""
    if reward_type in ("code", "ifeval"):
        return truth.model_dump_json(exclude_none=False)
    if reward_type == "math":
        return truth.strip()
    return "" if truth is None else (truth if isinstance(truth, str) else json.dumps(truth))


def check_row(row: dict, router: RewardRouter, need_row_id: bool = True) -> str:
    """Raise RowError unless `row` is a usable verl row; returns its reward type. Ingest checks rows before it
    assigns their ids (`need_row_id=False`)."""
    for key in ("data_source", "prompt", "reward_model") + (("extra_info",) if need_row_id else ()):
        if row.get(key) is None:
            raise RowError(f"missing field {key!r}")
    try:
        reward_type = router.reward_type(row["data_source"])
    except ValueError as e:
        raise RowError(str(e)) from None
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt or not all(_is_message(m) for m in prompt):
        raise RowError("prompt: expected a non-empty list of {role, content} messages")
    if not any(m["role"] == "user" and m["content"].strip() for m in prompt):
        raise RowError("prompt: no non-empty user message")
    if not isinstance(row["reward_model"], dict) or "ground_truth" not in row["reward_model"]:
        raise RowError("missing field 'reward_model.ground_truth'")
    if need_row_id and (not isinstance(row["extra_info"], dict) or not row["extra_info"].get("row_id")):
        raise RowError("missing field 'extra_info.row_id'")
    parse_truth(reward_type, row["reward_model"]["ground_truth"])
    return reward_type


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def row_id(row: dict, fallback: str) -> str:
    info = row.get("extra_info")
    return str(info["row_id"]) if isinstance(info, dict) and info.get("row_id") else fallback


def question_text(row: dict) -> str:
    """The bare question (extra_info.prompt), else the last user message."""
    info = row.get("extra_info") or {}
    if isinstance(info.get("prompt"), str):
        return info["prompt"]
    users = [m["content"] for m in row.get("prompt") or [] if _is_message(m) and m["role"] == "user"]
    return users[-1] if users else ""


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a verl-schema parquet file as plain Python dicts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such parquet file: {path}")
    return [_drop_null_keys(r) for r in pq.read_table(path).to_pylist()]


def _drop_null_keys(row: dict) -> dict:
    # Parquet gives every row every struct field (None where a row had none): keep rows as they were written.
    info = row.get("extra_info")
    if isinstance(info, dict):
        row["extra_info"] = {k: v for k, v in info.items() if v is not None}
    return row


def write_rows(rows: Iterable[dict], path: str | Path) -> int:
    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise RowError(f"refusing to write an empty dataset to {path}: every row was dropped (see the report)")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return len(rows)


def valid_rows(rows: list[dict], router: RewardRouter, report, source: str = "row") -> list[tuple[dict, str]]:
    """(row, reward_type) for the rows that pass check_row; the others go into `report` as bad rows."""
    good = []
    for n, row in enumerate(rows, start=1):
        try:
            good.append((row, check_row(row, router)))
        except RowError as e:
            report.drop(row_id(row, f"{source}:{n}"), "bad_row", str(e))
    return good
