"""The train / held-out split of the synthetic arithmetic (am_rl.data.arithmetic), against a plain reference."""

import hashlib

import pytest

from am_rl.data.arithmetic import (
    all_problems,
    eval_problems,
    expression,
    is_held_out,
    make_split,
    sample_problems,
)


def reference_held_out(max_operand: int, ops: str, percent: int, max_second: int | None = None) -> set[str]:
    """Every expression a op b (0 <= a <= max_operand, 0 <= b <= max_second or max_operand) whose sha256, as a hex
    number, is below percent mod 100."""
    held = set()
    for op in ops:
        for a in range(max_operand + 1):
            for b in range(max_operand + 1 if max_second is None else max_second + 1):
                expr = f"{a}{op}{b}"
                if int(hashlib.sha256(expr.encode("ascii")).hexdigest(), 16) % 100 < percent:
                    held.add(expr)
    return held


@pytest.mark.parametrize(
    ("max_operand", "ops", "percent", "max_second"),
    [(5, "+-*", 25, None), (9, "+-*", 40, None), (99, "+-", 10, None), (99, "+", 15, 9)],
)
def test_split_matches_the_reference_and_partitions_the_task(max_operand, ops, percent, max_second):
    train, held_out = make_split(max_operand, ops, percent, max_second)
    expected = reference_held_out(max_operand, ops, percent, max_second)
    assert {expression(p) for p in held_out} == expected
    assert all(is_held_out(expression(p), percent) for p in held_out)
    assert not any(is_held_out(expression(p), percent) for p in train)
    everything = [expression(p) for p in all_problems(max_operand, ops, max_second)]
    assert sorted(expression(p) for p in train + held_out) == sorted(everything)
    seconds = max_operand + 1 if max_second is None else max_second + 1
    assert len(set(everything)) == len(everything) == len(ops) * (max_operand + 1) * seconds
    # A pure function of the expression: roughly the asked share, and nothing left to chance.
    assert abs(len(held_out) / len(everything) - percent / 100) < 0.1
    assert make_split(max_operand, ops, percent, max_second) == (train, held_out)


def test_the_rule_is_pinned():
    # Changing the rule silently would change what "held out" means in every recorded result.
    _, held_out = make_split(9, "+-*", 40)
    assert [expression(p) for p in held_out[:8]] == ["0+0", "0+2", "0+8", "1+0", "1+3", "1+4", "1+5", "1+6"]
    assert len(held_out) == 131


def test_a_larger_share_holds_out_a_superset():
    small = {expression(p) for p in make_split(9, "+-*", 20)[1]}
    large = {expression(p) for p in make_split(9, "+-*", 40)[1]}
    assert small < large


def test_training_draws_never_reach_held_out_problems():
    held = reference_held_out(9, "+-*", 40)
    train_draws = sample_problems(5000, seed=1, max_operand=9, ops="+-*", split="train", held_out_percent=40)
    drawn = {expression(p) for p in train_draws}
    assert not drawn & held
    assert len(drawn) == 300 - len(held)  # and every train problem is reachable
    held_draws = sample_problems(500, seed=1, max_operand=9, ops="+-*", split="held_out", held_out_percent=40)
    assert {expression(p) for p in held_draws} <= held
    # Without a split the stream is the one the demo always drew (make_problems), draw for draw.
    from am_rl.data.arithmetic import make_problems

    assert sample_problems(50, seed=3, max_operand=5) == make_problems(50, seed=3, max_operand=5)


def test_evaluation_sets_are_fixed_distinct_and_in_their_split():
    held = reference_held_out(9, "+-*", 40)
    val = eval_problems(128, 10_000, 9, "+-*", "held_out", 40)
    assert len({expression(p) for p in val}) == 128 and {expression(p) for p in val} <= held
    assert eval_problems(128, 10_000, 9, "+-*", "held_out", 40) == val
    train = eval_problems(128, 20_000, 9, "+-*", "train", 40)
    assert not {expression(p) for p in train} & held
    with pytest.raises(ValueError, match="has only 131"):
        eval_problems(132, 0, 9, "+-*", "held_out", 40)
    for p in val:
        a, op, b = expression(p).partition("+") if "+" in expression(p) else (None, None, None)
        if a is not None:
            assert p.answer == str(int(a) + int(b))


def test_warm_up_batches_hold_only_train_problems():
    import random

    from am_rl.demo.warmup import WarmupConfig, sft_batch

    class RecordingTokenizer:  # the calls sft_batch makes; remembers which questions went in
        eos_token_id, pad_token_id = 1, 0

        def __init__(self):
            self.questions = []

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            self.questions.append(messages[1]["content"].split("?")[0].removeprefix("What is "))
            return "prompt"

        def __call__(self, text, add_special_tokens):
            return {"input_ids": [2] * len(text)}

    cfg = WarmupConfig(steps=1, batch_size=400, lr=1e-3, max_operand=99, seed=0, ops="+", held_out_percent=15,
                       max_second_operand=9)
    tok = RecordingTokenizer()
    sft_batch(tok, random.Random(0), cfg)
    held = reference_held_out(99, "+", 15, 9)
    assert len(tok.questions) == 400 and not set(tok.questions) & held
    assert all(int(q.split("+")[1]) <= 9 for q in tok.questions)
