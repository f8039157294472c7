import pytest

from reward_server.config import WorkerSettings
from reward_server.types import MathItem
from reward_server.verifiers.math import MathVerifier, answer_part, last_boxed


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
    ],
)
def test_math_verdicts(response, truth, score):
    verdict = MathVerifier(WorkerSettings()).verify(MathItem(reward_type="math", response=response, ground_truth=truth))
    assert verdict.score == score, verdict.details


def test_oversize_box_rejected_before_math_verify():
    item = MathItem(reward_type="math", response=r"\boxed{" + "1+" * 5000 + "1}", ground_truth="5001")
    verdict = MathVerifier(WorkerSettings()).verify(item)
    assert verdict.score == 0.0 and verdict.details["reason"] == "answer_too_long"
