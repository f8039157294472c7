"""The train / held-out split of the synthetic arithmetic (am_rl.data.arithmetic), against a plain reference."""

import hashlib
import random

import pytest

from am_rl.data.arithmetic import (
    ArithmeticTask,
    all_problems,
    eval_problems,
    expression,
    is_held_out,
    make_problems,
    make_split,
    problem_of,
    sample_problems,
)


def task(max_operand, ops, percent=0, max_second=None, operands=2):
    return ArithmeticTask(max_operand, ops, max_second, operands, percent)


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
    train, held_out = make_split(task(max_operand, ops, percent, max_second))
    expected = reference_held_out(max_operand, ops, percent, max_second)
    assert {expression(p) for p in held_out} == expected
    assert all(is_held_out(expression(p), percent) for p in held_out)
    assert not any(is_held_out(expression(p), percent) for p in train)
    everything = [expression(p) for p in all_problems(task(max_operand, ops, percent, max_second))]
    assert sorted(expression(p) for p in train + held_out) == sorted(everything)
    seconds = max_operand + 1 if max_second is None else max_second + 1
    assert len(set(everything)) == len(everything) == len(ops) * (max_operand + 1) * seconds
    # A pure function of the expression: roughly the asked share, and nothing left to chance.
    assert abs(len(held_out) / len(everything) - percent / 100) < 0.1
    assert make_split(task(max_operand, ops, percent, max_second)) == (train, held_out)


def test_the_rule_is_pinned():
    # Changing the rule silently would change what "held out" means in every recorded result.
    _, held_out = make_split(task(9, "+-*", 40))
    assert [expression(p) for p in held_out[:8]] == ["0+0", "0+2", "0+8", "1+0", "1+3", "1+4", "1+5", "1+6"]
    assert len(held_out) == 131


def test_a_larger_share_holds_out_a_superset():
    small = {expression(p) for p in make_split(task(9, "+-*", 20))[1]}
    large = {expression(p) for p in make_split(task(9, "+-*", 40))[1]}
    assert small < large


def test_training_draws_never_reach_held_out_problems():
    held = reference_held_out(9, "+-*", 40)
    train_draws = sample_problems(5000, 1, task(9, "+-*", 40), "train")
    drawn = {expression(p) for p in train_draws}
    assert not drawn & held
    assert len(drawn) == 300 - len(held)  # and every train problem is reachable
    held_draws = sample_problems(500, 1, task(9, "+-*", 40), "held_out")
    assert {expression(p) for p in held_draws} <= held
    # Without a split the stream is the one the demo always drew (make_problems), draw for draw.
    assert sample_problems(50, 3, task(5, "+-*")) == make_problems(50, 3, task(5, "+-*"))


def test_evaluation_sets_are_fixed_distinct_and_in_their_split():
    held = reference_held_out(9, "+-*", 40)
    val = eval_problems(128, 10_000, task(9, "+-*", 40), "held_out")
    assert len({expression(p) for p in val}) == 128 and {expression(p) for p in val} <= held
    assert eval_problems(128, 10_000, task(9, "+-*", 40), "held_out") == val
    train = eval_problems(128, 20_000, task(9, "+-*", 40), "train")
    assert not {expression(p) for p in train} & held
    with pytest.raises(ValueError, match="has only 131"):
        eval_problems(132, 0, task(9, "+-*", 40), "held_out")
    for p in val:
        a, op, b = expression(p).partition("+") if "+" in expression(p) else (None, None, None)
        if a is not None:
            assert p.answer == str(int(a) + int(b))


def test_warm_up_batches_hold_only_train_problems():
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

    cfg = WarmupConfig(steps=1, batch_size=400, lr=1e-3, seed=0, task=task(99, "+", 15, max_second=9))
    tok = RecordingTokenizer()
    sft_batch(tok, random.Random(0), cfg)
    held = reference_held_out(99, "+", 15, 9)
    assert len(tok.questions) == 400 and not set(tok.questions) & held
    assert all(int(q.split("+")[1]) <= 9 for q in tok.questions)


def test_two_operand_problems_keep_their_format_and_stream():
    # The tokenizer and every recorded result were made from this format and this draw order (a, b, op).
    p = problem_of((17, 25), "+")
    assert (p.question, p.answer) == ("What is 17+25?", "42")
    assert p.solution == "<think>17+25=42</think> <answer>\\boxed{42}</answer>"
    rng = random.Random(5)
    a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-*")
    assert make_problems(1, 5)[0] == problem_of((a, b), op)


def reference_chains(max_operand: int, ops: str, percent: int) -> dict[str, int]:
    """Every three-operand chain a o b p c with its value (+ and - associate left, so Python's eval is the
    left-to-right value), and whether it is held out, computed from the hex digest."""
    chains = {}
    for o in ops:
        for q in ops:
            for a in range(max_operand + 1):
                for b in range(max_operand + 1):
                    for c in range(max_operand + 1):
                        expr = f"{a}{o}{b}{q}{c}"
                        held = int(hashlib.sha256(expr.encode("ascii")).hexdigest(), 16) % 100 < percent
                        chains[expr] = (eval(expr), held)
    return chains


def test_chains_are_evaluated_step_by_step_and_split_like_single_operations():
    chains = reference_chains(5, "+-", 25)
    train, held_out = make_split(task(5, "+-", 25, operands=3))
    assert {expression(p) for p in held_out} == {e for e, (_, held) in chains.items() if held}
    assert len(train) + len(held_out) == len(chains) == 4 * 6**3
    for p in train + held_out:
        value, _ = chains[expression(p)]
        assert p.answer == str(value)
        a, o, b, q, c = expression(p)
        first = eval(f"{a}{o}{b}")
        assert p.solution == f"<think>{a}{o}{b}={first} {first}{q}{c}={value}</think> <answer>\\boxed{{{value}}}</answer>"
    draws = sample_problems(10_000, 0, task(5, "+-", 25, operands=3), "train")
    assert {expression(p) for p in draws} == {expression(p) for p in train}


def test_chains_refuse_multiplication_and_mismatched_operators():
    with pytest.raises(ValueError, match="left to right"):
        problem_of((2, 3, 4), "+*")
    with pytest.raises(ValueError, match="3 numbers need 2 operators"):
        problem_of((2, 3, 4), "+")
