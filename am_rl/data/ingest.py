"""Ingest: local JSONL / Parquet / `datasets.save_to_disk` folders -> verl-schema rows (am_rl.data.rows).

Input rows are either already in verl's schema (``prompt`` a message list plus ``reward_model``; validated and
passed through) or flat records, normalised here:

- question: the first string among ``prompt``, ``question``, ``problem``, ``query``, ``instruction``;
- math truth: ``ground_truth`` or ``answer``;
- code truth: ``ground_truth`` in the reward service's format (reward_server.types.CodeTruth), or APPS/TACO
  ``input_output`` ({inputs, outputs, fn_name?}), or LiveCodeBench-style ``test_cases`` / ``public_test_cases``
  ([{input, output, testtype: stdin | functional}], fn_name from ``fn_name`` or ``metadata.func_name``);
  the language from ``language`` (default python);
- IFEval truth: ``ground_truth``, or Google IFEval's top-level ``instruction_id_list`` + ``kwargs`` (the
  dataset's None-valued kwargs are dropped);
- RM (general chat): optional reference in ``ground_truth`` / ``reference`` / ``answer``.

The reward type comes from data_source through the trainer's routing table, so a row ingested here is scored by the
same verifier in training. Rows that cannot be normalised are reported with their id, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from am_rl.data.arithmetic import MATH_SUFFIX, SYSTEM_PROMPT
from am_rl.data.report import StageReport
from am_rl.data.rows import ABILITY, STYLE, RowError, check_row, parse_truth, row_id, truth_text
from am_rl.rewards.routing import RewardRouter

QUESTION_KEYS = ("prompt", "question", "problem", "query", "instruction")


@dataclass(frozen=True)
class IngestOptions:
    data_source: str | None = None  # for rows without a data_source column; None: the input file's stem
    system_prompt: str = SYSTEM_PROMPT  # first message of every prompt ("" for none); the report's format
    math_suffix: str = MATH_SUFFIX  # appended to math questions that do not already end with it ("" for none)
    renames: tuple[tuple[str, str], ...] = ()  # (our key, the input's key), e.g. ("question", "title")
    split: str | None = None  # which split of a saved DatasetDict


def read_records(path: Path, split: str | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based record number, record) pairs; a JSONL line that does not parse is yielded as a RowError."""
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(path))
        if isinstance(dataset, DatasetDict):
            if split is None or split not in dataset:
                raise ValueError(f"{path} holds splits {list(dataset)}: pick one with --split")
            dataset = dataset[split]
        for i, record in enumerate(dataset, start=1):
            yield i, record
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, record in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, record
    elif path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, RowError(f"line is not valid JSON ({e})")
    else:
        raise ValueError(f"{path}: unsupported input (expected .jsonl, .json lines, .parquet or a save_to_disk folder)")


def _first(record: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RowError(f"expected JSON, got {value[:80]!r}") from None
    return value


def code_truth(record: dict) -> Any:
    """The code ground truth in the reward service's format, from whichever convention the record uses."""
    if record.get("ground_truth") is not None:
        return record["ground_truth"]
    language = record.get("language") or "python"
    if record.get("input_output") is not None:
        io = _maybe_json(record["input_output"])
        if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
            raise RowError("input_output: expected {inputs, outputs[, fn_name]}")
        if len(io["inputs"]) != len(io["outputs"]):
            raise RowError(f"input_output: {len(io['inputs'])} inputs but {len(io['outputs'])} outputs")
        if io.get("fn_name"):
            tests = [{"input": i, "output": o} for i, o in zip(io["inputs"], io["outputs"])]
            return {"language": language, "test_type": "call", "fn_name": io["fn_name"], "tests": tests}
        tests = [{"input": _lines(i), "output": _lines(o)} for i, o in zip(io["inputs"], io["outputs"])]
        return {"language": language, "test_type": "stdin_stdout", "tests": tests}
    cases = _first(record, ("test_cases", "public_test_cases"))
    if cases is not None:
        cases = _maybe_json(cases)
        if not isinstance(cases, list) or not cases:
            raise RowError("test_cases: expected a non-empty list")
        kinds = {c.get("testtype", "stdin") for c in cases}
        if kinds == {"stdin"}:
            tests = [{"input": c["input"], "output": c["output"]} for c in cases]
            return {"language": language, "test_type": "stdin_stdout", "tests": tests}
        if kinds == {"functional"}:
            meta = _maybe_json(record.get("metadata") or {})
            fn_name = record.get("fn_name") or meta.get("func_name")
            try:
                # Functional inputs are one JSON argument per line.
                tests = [
                    {"input": [json.loads(a) for a in c["input"].splitlines() if a.strip()],
                     "output": json.loads(c["output"])}
                    for c in cases
                ]  # fmt: skip
            except (json.JSONDecodeError, AttributeError) as e:
                raise RowError(f"test_cases: functional test input/output is not JSON ({e})") from None
            return {"language": language, "test_type": "call", "fn_name": fn_name, "tests": tests}
        raise RowError(f"test_cases: mixed or unknown testtype {sorted(kinds)}")
    raise RowError("missing code ground truth (ground_truth, input_output or test_cases)")


def _lines(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def ifeval_truth(record: dict) -> Any:
    if record.get("ground_truth") is not None:
        return record["ground_truth"]
    if record.get("instruction_id_list") is None or record.get("kwargs") is None:
        raise RowError("missing IFEval ground truth (ground_truth, or instruction_id_list + kwargs)")
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in _maybe_json(record["kwargs"])]
    return {"instruction_id_list": list(record["instruction_id_list"]), "kwargs": kwargs}


def normalise(record: dict, source: str, opts: IngestOptions, router: RewardRouter) -> dict:
    """One verl row from one input record (extra_info.index and row_id are set by the caller)."""
    for ours, theirs in opts.renames:
        if theirs in record:
            record[ours] = record.pop(theirs)
    data_source = record.get("data_source") or opts.data_source or source
    record["data_source"] = data_source
    if isinstance(record.get("prompt"), list):  # already verl-shaped
        record["extra_info"] = dict(record.get("extra_info") or {})
        check_row(record, router, need_row_id=False)
        return record
    try:
        reward_type = router.reward_type(data_source)
    except ValueError as e:
        raise RowError(str(e)) from None
    question = _first(record, QUESTION_KEYS)
    if not isinstance(question, str) or not question.strip():
        raise RowError(f"missing question (one of {', '.join(QUESTION_KEYS)})")
    question = question.strip()
    if reward_type == "math":
        raw = _first(record, ("ground_truth", "answer"))
        raw = str(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw
    elif reward_type == "code":
        raw = code_truth(record)
    elif reward_type == "ifeval":
        raw = ifeval_truth(record)
    else:
        raw = _first(record, ("ground_truth", "reference", "answer"))
    if raw is None and reward_type != "rm":
        raise RowError(f"missing {reward_type} ground truth")
    truth = parse_truth(reward_type, raw)
    user = question
    if reward_type == "math" and opts.math_suffix and not question.endswith(opts.math_suffix):
        user = f"{question} {opts.math_suffix}"
    prompt = ([{"role": "system", "content": opts.system_prompt}] if opts.system_prompt else []) + [
        {"role": "user", "content": user}
    ]
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ABILITY[reward_type],
        "reward_model": {"style": STYLE[reward_type], "ground_truth": truth_text(reward_type, truth)},
        "extra_info": {"prompt": question},
    }


def ingest(
    paths: list[Path], opts: IngestOptions, router: RewardRouter | None = None
) -> tuple[list[dict], StageReport]:
    router = router or RewardRouter()
    report = StageReport("ingest")
    rows: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such input: {path}")
        source = path.stem.split(".")[0]
        for number, record in tqdm(read_records(path, opts.split), desc=f"ingest {path.name}", unit="row"):
            report.rows_in += 1
            rid = row_id(record, f"{source}:{number}") if isinstance(record, dict) else f"{source}:{number}"
            try:
                if isinstance(record, RowError):
                    raise record
                if not isinstance(record, dict):
                    raise RowError(f"expected a JSON object, got {type(record).__name__}")
                if rid in seen:
                    raise RowError(f"row_id {rid!r} already used by an earlier row")
                row = normalise(dict(record), source, opts, router)
            except RowError as e:
                report.drop(rid, "bad_row", str(e))
                continue
            seen.add(rid)
            row["extra_info"] = {**row["extra_info"], "index": len(rows), "row_id": rid}
            rows.append(row)
    report.after["valid"] = len(rows)
    report.rows_out = len(rows)
    return rows, report
