import pytest

from reward_server.config import WorkerSettings
from reward_server.types import MathItem
from reward_server.verifiers.math import MathVerifier, answer_part, gold_text, last_boxed


@pytest.mark.parametrize(
    "text,boxed",
    [
        (r"so \boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{ {a}+{b} }", " {a}+{b} "),
        (r"\fbox{42} after \boxed{7}", "7"),
        (r"\boxed{7} after \fbox{42}", "42"),
        (r"\boxed{unbalanced", None),
        ("no box", None),
        (r"\boxed 5", None),
    ],
)
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize(
    "truth,text",
    [
        ("3", "$3$"),
        (r"\frac{1}{2}", r"$\frac{1}{2}$"),
        (r"\$25", r"$\$25$"),
        ("$3$", "$3$"),
        (r"\(3\)", r"\(3\)"),
        (r"\[3\]", r"\[3\]"),
        (r"\boxed{3}", r"\boxed{3}"),
        (r"The answer is $\boxed{3}$.", r"The answer is $\boxed{3}$."),
    ],
)
def test_gold_text_wraps_only_bare_golds(truth, text):
    assert gold_text(truth) == text


def test_answer_part_takes_text_after_last_think():
    assert answer_part(r"<think>\boxed{1}</think><think>x</think> \boxed{2}") == r" \boxed{2}"
    assert answer_part("plain") == "plain"


@pytest.mark.parametrize(
    "response,truth,score",
    [
        (r"<think>maybe \boxed{3}</think> The answer is \boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"<think>maybe \boxed{0.5}</think> The answer is \boxed{3}", "0.5", 0.0),
        (r"\boxed{\{1, 2\}}", r"\{1,2\}", 1.0),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
        (r"\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
        (r"\boxed{7}", "8", 0.0),
        ("the answer is 7", "7", 0.0),
        # a gold already in an environment is parsed as given, not wrapped in a second one
        (r"\boxed{5955815}", r"\(5{,}955{,}815\)", 1.0),
        (r"\boxed{97}", r"\(97\mbox{ feet}\)", 1.0),
        (r"\boxed{4, -4}", r"\(\pm4\)", 1.0),
        # a bare gold is read whole, never as its last number
        (r"\boxed{2}", "(1, 2]", 0.0),
        (r"\boxed{2}", r"\pm 2", 0.0),
        (r"\boxed{\frac{1}{4}}", r"10\ \frac{1}{4}", 0.0),
        (r"\boxed{\frac{41}{4}}", r"10\ \frac{1}{4}", 1.0),
        # percents, in every spelling, mean what Math-Verify's grader says: 25% = 25 = 0.25
        (r"\boxed{25 \%}", r"25\%", 1.0),
        (r"\boxed{25}", r"$25\%$", 1.0),
        (r"\boxed{0.25}", r"25\text{ percent}", 1.0),
        (r"\boxed{25\%}", "0.25", 1.0),
        (r"\boxed{26\%}", r"25\%", 0.0),
        (r"\boxed{2.5\%}", "0.25", 0.0),
    ],
)
def test_math_verdicts(response, truth, score):
    verdict = MathVerifier(WorkerSettings()).verify(MathItem(reward_type="math", response=response, ground_truth=truth))
    assert verdict.score == score, verdict.details


def test_oversize_box_rejected_before_math_verify():
    item = MathItem(reward_type="math", response=r"\boxed{" + "1+" * 5000 + "1}", ground_truth="5001")
    verdict = MathVerifier(WorkerSettings()).verify(item)
    assert verdict.score == 0.0 and verdict.details["reason"] == "answer_too_long"


@pytest.mark.parametrize(
    "answer,truth",
    [("9 1", "10"), ("2 3", "5"), ("12  5", "17"), ("2\n3", "5"), ("1 0", "0")],
)
def test_digits_separated_by_whitespace_score_zero(answer, truth):
    """Math-Verify reads such an answer as a sum or product of its numbers ("9 1" = 10: a real demo rollout was
    rewarded for it); we score it wrong, and the deviation table explains the disagreement with Math-Verify."""
    from math_verify import parse, verify

    from bench.differential.math_corpus import MathPair
    from bench.differential.math_reference import explain, judge

    assert verify(parse(f"${truth}$"), parse(f"\\boxed{{{answer}}}"))  # what Math-Verify alone says
    response = f"<think>x</think> <answer>\\boxed{{{answer}}}</answer>"
    verdict = MathVerifier(WorkerSettings()).verify(MathItem(reward_type="math", response=response, ground_truth=truth))
    assert verdict.score == 0.0 and verdict.details["reason"] == "spaced_digits"
    pair = MathPair(index=-1, category="integer", wrapper="bare", kind="equivalent", gold=truth, answer=answer,
                    response=response)  # fmt: skip
    assert explain(judge(pair), "documented") == "spaced_digits"


@pytest.mark.parametrize("answer,truth", [(r"10 \frac{1}{4}", r"\frac{41}{4}"), ("12", "12"), ("(1, 2)", "(1,2)")])
def test_numbers_apart_from_spaced_digits_still_match(answer, truth):
    verdict = MathVerifier(WorkerSettings()).verify(
        MathItem(reward_type="math", response=f"\\boxed{{{answer}}}", ground_truth=truth)
    )
    assert verdict.score == 1.0, verdict.details
