"""Stage-2 builder: drop queries solved k/k in stage 1 (last record wins), mix in chat / IF sets in proportion."""

import json

import pytest

from am_rl.data.rows import write_rows
from am_rl.data.stage2 import MixSpec, build_stage2


def write_log(path, records, raw=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in raw))
    return path


def test_solved_queries_dropped_and_mixes_added_in_proportion(tmp_path, make_rows):
    stage1 = make_rows([{"question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(10)])
    chat = make_rows([{"question": f"Tell me about topic {i}."} for i in range(20)], source="general_chat")
    write_rows(chat, tmp_path / "chat.parquet")
    ifeval = make_rows(
        [{"prompt": f"Write {i} words in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
          "kwargs": [{}]} for i in range(3)],
        source="ifeval_set",
    )  # fmt: skip
    write_rows(ifeval, tmp_path / "if.parquet")
    log = write_log(
        tmp_path / "stage1_log.jsonl",
        [
            {"row_id": "arithmetic:1", "k": 16, "passes": 16},  # solved: dropped
            {"row_id": "arithmetic:2", "k": 16, "passes": 16},
            {"row_id": "arithmetic:2", "k": 16, "passes": 15},  # ... but the later record says not solved: kept
            {"row_id": "arithmetic:3", "k": 16, "passes": 3},
            {"row_id": "arithmetic:4", "k": 16, "passes": 3},
            {"row_id": "arithmetic:4", "k": 16, "passes": 16},  # solved at the end: dropped
            {"row_id": "arithmetic:5", "k": 0, "passes": 0},  # passed through unsampled: no evidence, kept
            {"row_id": "arithmetic:6", "k": 4, "passes": 5},  # impossible: reported
        ],
        raw=("not json",),
    )
    mixes = (MixSpec(tmp_path / "chat.parquet", ratio=0.5), MixSpec(tmp_path / "if.parquet", count=5))
    out, report = build_stage2(
        stage1, [log], mixes, seed=1
    )
    assert report.after == {"valid": 10, "unsolved": 8, "+chat": 12, "+if": 15}
    assert report.notes["mix_shortfall"] == {str(tmp_path / "if.parquet"): {"wanted": 5, "available": 3}}
    why = {d.row_id: d.reason for d in report.dropped}
    assert why == {
        "arithmetic:1": "solved_in_stage1", "arithmetic:4": "solved_in_stage1",
        "stage1_log.jsonl:8": "bad_log_record", "stage1_log.jsonl:9": "bad_log_record",
    }  # fmt: skip
    sources = [r["data_source"] for r in out]
    assert sources.count("arithmetic") == 8 and sources.count("general_chat") == 4 and sources.count("ifeval_set") == 3
    assert [r["extra_info"]["index"] for r in out] == list(range(15))
    assert sources != sorted(sources, key=["arithmetic", "general_chat", "ifeval_set"].index)  # shuffled
    again, _ = build_stage2(
        stage1, [log], mixes, seed=1
    )
    assert again == out  # seeded


def test_mix_spec_needs_exactly_one_amount(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        MixSpec(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="exactly one"):
        MixSpec(tmp_path / "x.parquet", ratio=0.1, count=3)
