"""Response filters against straightforward references, and each filter's drop reason on a planted response."""

import random

import pytest

from am_rl.data.filters import Drop, FilterOptions, check_response, longest_repeat, perplexity, structure_problem

PROMPT = [{"role": "system", "content": "Think, then answer."}, {"role": "user", "content": "What is 2+3?"}]
GOOD = "<think>2+3=5</think> <answer>\\boxed{5}</answer>"


def reference_longest_repeat(units, max_ngram):
    """Every start and phrase length, counting back-to-back copies one by one."""
    best = (1, 0, 0)
    for n in range(1, max_ngram + 1):
        for start in range(len(units)):
            phrase = units[start : start + n]
            if len(phrase) < n:
                break
            copies = 1
            while units[start + copies * n : start + (copies + 1) * n] == phrase:
                copies += 1
            if copies > best[0]:
                best = (copies, n, start)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_longest_repeat_matches_the_reference(seed):
    rng = random.Random(seed)
    units = [rng.choice("abc") for _ in range(rng.randint(0, 40))]
    if seed % 3 == 0:  # plant a long run
        at = rng.randint(0, len(units))
        units[at:at] = list("xyz") * rng.randint(2, 6)
    copies, n, start = longest_repeat(units, 6)
    ref = reference_longest_repeat(units, 6)
    assert copies == ref[0]
    if copies > 1:  # the phrase found really repeats `copies` times from `start`
        assert units[start : start + n] * copies == units[start : start + n * copies]


def test_longest_repeat_examples():
    assert longest_repeat("a b a b a b c".split(), 4)[:2] == (3, 2)
    assert longest_repeat("the the the the".split(), 4)[:2] == (4, 1)
    assert longest_repeat([], 4) == (1, 0, 0)
    assert longest_repeat("a b c d".split(), 4)[0] == 1


def test_perplexity_is_exp_of_mean_nll():
    assert perplexity([0.0, 0.0]) == 1.0
    assert perplexity([-1.0, -3.0]) == pytest.approx(2.718281828 ** 2)
    with pytest.raises(ValueError):
        perplexity([])


@pytest.mark.parametrize(
    "text, problem",
    [
        (GOOD, None),
        ("  <think>x</think>\n<answer>4</answer>\n", None),
        ("<answer>\\boxed{5}</answer>", "expected one <think>"),
        ("<think>2+3=5</think>", "not <think>"),
        ("<think>2+3=5</think> <answer> </answer>", "empty answer part"),
        ("<think> </think> <answer>5</answer>", "empty think part"),
        ("<think>a</think><think>b</think><answer>5</answer>", "expected one <think>"),
        ("preamble <think>a</think><answer>5</answer>", "not <think>"),
        ("<think>a</think><answer>5</answer> and more", "not <think>"),
    ],
)
def test_structure(text, problem):
    found = structure_problem(text, PROMPT)
    assert (found is None) if problem is None else (problem in found)


def test_structure_without_answer_tags_and_last_turn():
    assert structure_problem("<think>a</think> The answer is 5.", PROMPT, answer_tags=False) is None
    assert "empty answer" in structure_problem("<think>a</think>  ", PROMPT, answer_tags=False)
    multi = [*PROMPT, {"role": "assistant", "content": GOOD}]
    assert "ends with an assistant turn" in structure_problem(GOOD, multi)


def check(text, finish="stop", length=100, ppl=2.0, **kw):
    return check_response(text, PROMPT, finish, length, ppl, FilterOptions(**kw))


def test_each_filter_drops_for_its_reason_and_can_be_switched_off():
    repeated = "<think> " + "let me check again. " * 10 + "</think> <answer>5</answer>"
    assert check(GOOD, max_perplexity=10.0) is None
    assert check(GOOD, finish="length") == Drop("truncated", "hit max_tokens")
    assert check(GOOD, finish="length", drop_truncated=False) is None
    assert check("no tags", max_perplexity=10.0).reason == "structure"
    assert check("no tags", structure=False) is None
    drop = check(repeated)
    assert drop.reason == "repetition" and "10 times" in drop.detail and "let me check again." in drop.detail
    assert check(repeated, repetition_min_copies=None) is None
    assert check(repeated, repetition_min_copies=11) is None
    assert check(GOOD, length=40000).reason == "length"
    assert check(GOOD, length=40000, max_length=None) is None
    assert check(GOOD, ppl=50.0, max_perplexity=10.0) == Drop("perplexity", "50.00 > 10.0")
    with pytest.raises(ValueError, match="not measured"):
        check(GOOD, ppl=None, max_perplexity=10.0)


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="repetition_min_copies"):
        FilterOptions(repetition_min_copies=1)
    with pytest.raises(ValueError, match="max_perplexity"):
        FilterOptions(max_perplexity=0.5)
