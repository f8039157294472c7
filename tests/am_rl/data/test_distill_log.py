"""The distill log: records survive a reopen, a torn last line is cut, damage and changed settings are refused."""

import json

import pytest

from am_rl.data.distill_log import DistillLog, ResponseRecord, ScoreRecord

SETTINGS = {"max_tokens": 64, "temperature": 0.6, "top_p": 0.95}


def test_records_survive_reopen_and_a_torn_tail_is_cut(tmp_path):
    path = tmp_path / "log.jsonl"
    log = DistillLog(path, SETTINGS)
    r = ResponseRecord("math:1", "a", 0, "<think>x</think>", 10, 5, "stop")
    log.add_response(r)
    log.add_score(ScoreRecord("math:1", "a", 0, 1.0, "5", 3.5))
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"kind": "response", "row_id": "math:1", "te')  # killed mid-write
    again = DistillLog(path, SETTINGS)
    assert again.torn_lines == 1 and path.read_bytes() == whole
    assert again.responses == {("math:1", "a", 0): r}
    assert again.scores[("math:1", "a", 0)].perplexity == 3.5
    again.add_response(ResponseRecord("math:1", "a", 1, "y", 10, 1, "length"))
    again.close()
    assert len(DistillLog(path, SETTINGS).responses) == 2


def test_other_settings_and_damaged_lines_are_refused(tmp_path):
    path = tmp_path / "log.jsonl"
    DistillLog(path, SETTINGS).close()
    with pytest.raises(ValueError, match="sampling settings"):
        DistillLog(path, {**SETTINGS, "temperature": 1.0})
    with open(path, "a") as f:
        f.write("not json\n" + json.dumps({"kind": "score", "row_id": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl:2: damaged"):
        DistillLog(path, SETTINGS)
