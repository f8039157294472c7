"""Ingest: every input format and convention normalised to verl rows the reward service accepts; bad rows reported."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from am_rl.data.arithmetic import MATH_SUFFIX, SYSTEM_PROMPT
from am_rl.data.ingest import IngestOptions, ingest
from am_rl.data.rows import check_row, read_rows, write_rows
from am_rl.rewards.routing import RewardRouter
from reward_server.types import ScoreItem

SCORE_ITEM = TypeAdapter(ScoreItem)


def write_jsonl(path, rows, raw_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw_lines))
    return path


def score_item(row):
    """What the trainer would send the reward service for this row: it must validate."""
    item = RewardRouter().item(row["data_source"], "resp", row["reward_model"]["ground_truth"], row["extra_info"])
    return SCORE_ITEM.validate_python(item)


def test_flat_math_rows_get_the_demo_prompt_format_and_row_ids(tmp_path):
    records = [{"question": "What is 2+2?", "answer": 4}, {"problem": "1+1?", "answer": "2"}]
    src = write_jsonl(tmp_path / "gsm8k_mini.jsonl", records)
    rows, report = ingest([src], IngestOptions())
    assert report.rows_in == 2 and report.rows_out == 2 and report.dropped == []
    first = rows[0]
    assert first["data_source"] == "gsm8k_mini" and first["ability"] == "math"
    assert first["prompt"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"What is 2+2? {MATH_SUFFIX}"},
    ]
    assert first["reward_model"] == {"style": "rule", "ground_truth": "4"}
    assert first["extra_info"] == {"prompt": "What is 2+2?", "index": 0, "row_id": "gsm8k_mini:1"}
    assert rows[1]["extra_info"]["row_id"] == "gsm8k_mini:2"
    assert score_item(first).reward_type == "math"


def test_code_conventions_become_the_reward_service_format(tmp_path):
    src = write_jsonl(
        tmp_path / "codeset.jsonl",
        [
            {"question": "sum", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})},
            {"question": "add", "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}},
            {"question": "sq", "language": "cpp",
             "test_cases": [{"input": "3\n", "output": "9\n", "testtype": "stdin"}]},
            {"question": "f", "metadata": json.dumps({"func_name": "f"}),
             "test_cases": json.dumps([{"input": "[1, 2]\n5", "output": "8", "testtype": "functional"}])},
        ],
    )
    rows, report = ingest([src], IngestOptions())
    assert report.dropped == [] and len(rows) == 4
    truths = [json.loads(r["reward_model"]["ground_truth"]) for r in rows]
    assert truths[0] == {
        "language": "python", "test_type": "stdin_stdout", "tests": [{"input": "1 2\n", "output": "3\n"}],
    }  # fmt: skip
    assert truths[1] == {
        "language": "python", "test_type": "call", "fn_name": "add", "tests": [{"input": [1, 2], "output": 3}],
    }  # fmt: skip
    assert truths[2]["language"] == "cpp"
    assert truths[3]["tests"] == [{"input": [[1, 2], 5], "output": 8}]
    assert {r["ability"] for r in rows} == {"code"}
    assert all(score_item(r).reward_type == "code" for r in rows)


def test_ifeval_rows_drop_the_datasets_none_kwargs(tmp_path):
    src = write_jsonl(
        tmp_path / "ifeval.jsonl",
        [{"key": 7, "prompt": "Write in lowercase.",
          "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_words"],
          "kwargs": [{"num_words": None}, {"num_words": 10, "relation": "at least", "keyword": None}]}],  # fmt: skip
    )
    rows, report = ingest([src], IngestOptions())
    assert report.dropped == []
    truth = json.loads(rows[0]["reward_model"]["ground_truth"])
    assert truth["kwargs"] == [{}, {"num_words": 10, "relation": "at least"}]
    assert rows[0]["prompt"][-1]["content"] == "Write in lowercase."  # no math suffix on instructions
    item = score_item(rows[0])
    assert item.reward_type == "ifeval" and item.prompt == "Write in lowercase."


def test_bad_rows_are_reported_with_ids_and_the_rest_survive(tmp_path):
    src = write_jsonl(
        tmp_path / "math_mix.jsonl",
        [
            {"question": "ok?", "answer": "1"},
            {"question": "no answer"},
            {"answer": "3"},
            {"question": "x", "answer": "5", "data_source": "weather"},
            {"question": "also ok", "answer": "2", "extra_info": {"row_id": "keep-me"}},
            {"question": "same id", "answer": "2", "extra_info": {"row_id": "keep-me"}},
            [1, 2],
        ],
        raw_lines=('{"question": "broken", ',),
    )
    rows, report = ingest([src], IngestOptions())
    assert [r["extra_info"]["row_id"] for r in rows] == ["math_mix:1", "keep-me"]
    bad = {d.row_id: d.detail for d in report.dropped}
    assert set(bad) == {"math_mix:2", "math_mix:3", "math_mix:4", "keep-me", "math_mix:7", "math_mix:8"}
    assert "missing math ground truth" in bad["math_mix:2"]
    assert "missing question" in bad["math_mix:3"]
    assert "no reward type for data_source 'weather'" in bad["math_mix:4"]
    assert "already used" in bad["keep-me"]
    assert "expected a JSON object" in bad["math_mix:7"]
    assert "not valid JSON" in bad["math_mix:8"]
    assert report.rows_in == 8 and report.rows_out == 2 and {d.reason for d in report.dropped} == {"bad_row"}


def test_parquet_and_save_to_disk_inputs_and_verl_passthrough(tmp_path):
    from datasets import Dataset, DatasetDict

    table = pa.Table.from_pylist([{"question": "What is 1+2?", "answer": "3"}])
    pq.write_table(table, tmp_path / "arithmetic_pq.parquet")
    DatasetDict({"train": Dataset.from_list([{"question": "What is 3+3?", "answer": "6"}] * 2)}).save_to_disk(
        str(tmp_path / "hf_math")
    )
    verl_row = {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": "Q?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "12"},
        "extra_info": {"split": "train", "index": 5},
    }
    src = write_jsonl(tmp_path / "already_verl.jsonl", [verl_row])

    with pytest.raises(ValueError, match="pick one with --split"):
        ingest([tmp_path / "hf_math"], IngestOptions())
    rows, report = ingest([tmp_path / "arithmetic_pq.parquet", src], IngestOptions())
    hf_rows, _ = ingest([tmp_path / "hf_math"], IngestOptions(split="train", data_source="hf_math"))
    assert report.dropped == [] and len(rows) == 2 and len(hf_rows) == 2
    assert rows[1]["prompt"] == verl_row["prompt"]  # passed through untouched
    assert rows[1]["extra_info"]["split"] == "train" and rows[1]["extra_info"]["row_id"] == "already_verl:1"
    assert hf_rows[1]["extra_info"]["row_id"] == "hf_math:2"

    # A round trip through parquet keeps rows usable.
    write_rows(rows + hf_rows, tmp_path / "out.parquet")
    back = read_rows(tmp_path / "out.parquet")
    assert [check_row(r, RewardRouter()) for r in back] == ["math"] * 4
    assert back[0] == rows[0]


def test_unsupported_or_missing_inputs_fail_clearly(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported input"):
        ingest([tmp_path / "x.csv"], IngestOptions())
    with pytest.raises(FileNotFoundError, match="no such input"):
        ingest([tmp_path / "nope.jsonl"], IngestOptions())
