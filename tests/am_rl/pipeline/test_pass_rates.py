"""Stage-1 pass rates from verl's rollout dump: prompts decoded as verl decodes them find their rows, one record per
GRPO group in step order, and a prompt of no row (or two rows with one prompt) is an error, not a silent miss."""

import json

import pytest

from am_rl.data.arithmetic import ArithmeticTask, make_split
from am_rl.demo.data import verl_rows
from am_rl.pipeline.pass_rates import group_records


@pytest.fixture
def rows():
    problems = make_split(ArithmeticTask(5, "+-*", held_out_percent=25))[0][:3]
    out = verl_rows(problems, "arithmetic")
    for i, row in enumerate(out):
        row["extra_info"]["row_id"] = f"arithmetic:{i}"
    return out


def verl_prompt(tokenizer, row) -> str:
    """What verl's ``_log_rollout_data`` writes as ``input``: the left-padded prompt ids, decoded without specials."""
    ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
    return tokenizer.decode([tokenizer.pad_token_id] * 5 + ids, skip_special_tokens=True)


def dump(path, step, samples):
    path.mkdir(exist_ok=True)
    (path / f"{step}.jsonl").write_text(
        "".join(json.dumps({"input": i, "output": "x", "gts": "1", "score": s, "step": step}) + "\n" for i, s in samples)
    )


def test_one_record_per_group_in_step_order(tiny_model, rows, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    a, b = verl_prompt(tok, rows[0]), verl_prompt(tok, rows[1])
    dump(tmp_path, 10, [(a, 1.0), (b, 0.0), (a, 1.0), (b, 1.0)])
    dump(tmp_path, 2, [(a, 0.0), (a, 1.0)])
    records = group_records(tmp_path, rows, tok)
    assert records == [
        {"row_id": "arithmetic:0", "k": 2, "passes": 1, "step": 2},
        {"row_id": "arithmetic:0", "k": 2, "passes": 2, "step": 10},
        {"row_id": "arithmetic:1", "k": 2, "passes": 1, "step": 10},
    ]


def test_unknown_prompts_and_ambiguous_rows_are_errors(tiny_model, rows, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    dump(tmp_path / "d", 1, [("system\nnot a row\nassistant\n", 1.0)])
    with pytest.raises(ValueError, match="matches no stage-1 row"):
        group_records(tmp_path / "d", rows, tok)
    twin = {**rows[0], "extra_info": {**rows[0]["extra_info"], "row_id": "arithmetic:twin"}}
    with pytest.raises(ValueError, match="same prompt"):
        group_records(tmp_path / "d", rows + [twin], tok)
    with pytest.raises(FileNotFoundError, match="no rollout dump"):
        group_records(tmp_path / "empty", rows, tok)
