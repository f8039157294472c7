"""Pass rate, coefficient of variation, percentiles and the majority answer against straightforward references."""

import random
import statistics

import pytest

from am_rl.data.grades import cluster_answers, coefficient_of_variation, grade, majority, pass_rate, percentiles


@pytest.mark.parametrize("seed", range(20))
def test_cv_matches_statistics(seed):
    rng = random.Random(seed)
    values = [rng.random() for _ in range(rng.randint(1, 10))]
    assert coefficient_of_variation(values) == pytest.approx(statistics.pstdev(values) / statistics.mean(values))


def test_cv_and_pass_rate_edges():
    assert coefficient_of_variation([0.0, 0.0]) is None
    assert coefficient_of_variation([0.5, 0.5]) == 0.0
    assert pass_rate([True, False, False, True]) == 0.5
    with pytest.raises(ValueError):
        pass_rate([])


def test_grade_over_teachers_and_passes():
    # teacher a: 4/4; teacher b: samples 0,2 (pass 0) fail, 1,3 (pass 1) pass -> pass rates a0 1, a1 1, b0 0, b1 1
    outcomes = {"a": {0: True, 1: True, 2: True, 3: True}, "b": {0: False, 1: True, 2: False, 3: True}}
    g = grade(outcomes, passes=2)
    assert (g.pass_rate, g.samples, g.passes) == (0.75, 8, 6)
    assert g.pass_rate_cv == pytest.approx(statistics.pstdev([1, 1, 0, 1]) / 0.75)
    one = grade(outcomes, passes=1)  # one pass per teacher: rates 1.0 and 0.5
    assert one.pass_rate_cv == pytest.approx(statistics.pstdev([1.0, 0.5]) / 0.75)
    assert grade({"a": {0: False, 1: False}}, passes=1).pass_rate_cv is None


def test_percentiles_nearest_rank():
    assert percentiles(list(range(1, 11))) == {"p10": 1, "p50": 5, "p90": 9, "p100": 10}
    assert percentiles([7]) == {"p10": 7, "p50": 7, "p90": 7, "p100": 7}
    assert percentiles([]) == {}


def test_majority_merges_equivalent_answers():
    answers = ["7", "7", "7", "1/2", "0.5", "\\frac{1}{2}", "3"]
    equal = {("1/2", "0.5"), ("0.5", "\\frac{1}{2}")}
    # without the equivalences "7" wins alone
    assert majority(answers, set()) == ("7", 3)
    # with them the half-class (3 answers) ties "7" (3): the class holding the earliest answer wins
    assert majority(answers, equal)[0] == "7"
    answers.append("1/2")
    top, votes = majority(answers, equal)
    assert top == "1/2" and votes == 4
    assert [len(c) for c in cluster_answers(answers, equal)] == [3, 1, 1]
    assert majority([], set()) is None
