"""The CPU demo's loader: verl parquet rows -> problems with the demo's interface; per-step batches."""

import pytest

from am_rl.data.arithmetic import make_problems
from am_rl.data.problems import ProblemSampler, load_problems
from am_rl.data.rows import write_rows


def test_rows_become_problems_with_the_demo_prompt(tmp_path, make_rows):
    reference = make_problems(3, seed=0, max_operand=5)
    rows = make_rows([{"question": p.question, "answer": p.answer} for p in reference])
    write_rows(rows, tmp_path / "stage1.parquet")
    problems = load_problems(tmp_path / "stage1.parquet")
    # Same chat prompt as the synthetic stream the demo's model was warmed up on.
    assert [p.messages() for p in problems] == [p.messages() for p in reference]
    assert [p.answer for p in problems] == [p.answer for p in reference]
    assert [p.row_id for p in problems] == ["arithmetic:1", "arithmetic:2", "arithmetic:3"]


def test_rows_the_demo_cannot_score_are_named(tmp_path, make_rows):
    rows = make_rows([{"question": "What is 1+1?", "answer": "2"}]) + make_rows(
        [{"question": "add", "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}}], source="code_x"
    )
    write_rows(rows, tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match=r"code_x:1: wrong_reward_type code \(the run scores math\)"):
        load_problems(tmp_path / "mixed.parquet")
    broken = {**rows[0], "reward_model": {"style": "rule", "ground_truth": ""}}
    write_rows([broken], tmp_path / "broken.parquet")
    with pytest.raises(ValueError, match="arithmetic:1: bad_row .*non-empty answer"):
        load_problems(tmp_path / "broken.parquet")


def test_sampler_covers_each_epoch_once_and_is_a_function_of_the_step(make_rows):
    problems = list(range(10))
    sampler = ProblemSampler(problems, batch_size=4, seed=3)
    first_epoch = sampler(1) + sampler(2) + sampler(3)[:2]
    assert sorted(first_epoch) == problems
    assert sampler(2) == ProblemSampler(problems, batch_size=4, seed=3)(2)
    assert sampler(1) != ProblemSampler(problems, batch_size=4, seed=4)(1)
    with pytest.raises(ValueError):
        ProblemSampler([], batch_size=4, seed=0)
