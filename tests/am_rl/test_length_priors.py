"""The trainer-side length prior store (am_rl.rollout.priors): what it answers, what it forgets."""

import pytest

from am_rl.rollout.priors import LengthPriors


def test_unseen_prompt_has_no_prior():
    assert LengthPriors().expected([1, 2, 3], max_tokens=100) is None


def test_prior_is_the_mean_of_the_recorded_lengths_of_the_same_prompt():
    priors = LengthPriors()
    for length in (100, 200, 400):
        priors.record([1, 2, 3], length)
    priors.record([1, 2, 4], 5000)  # another prompt: not mixed in
    assert priors.expected([1, 2, 3], max_tokens=10_000) == round(700 / 3)
    assert priors.expected([1, 2, 4], max_tokens=10_000) == 5000
    assert priors.expected((1, 2, 3), max_tokens=10_000) == round(700 / 3)  # the ids, not the container, are the key


def test_only_the_newest_lengths_count():
    priors = LengthPriors(per_prompt=2)
    for length in (10_000, 100, 300):
        priors.record([7], length)
    assert priors.expected([7], max_tokens=20_000) == 200


def test_prior_is_capped_by_the_requests_max_tokens():
    priors = LengthPriors()
    priors.record([7], 900)
    assert priors.expected([7], max_tokens=500) == 500
    priors.record([8], 0)  # an empty response: still a positive hint, the balancer ignores < 1
    assert priors.expected([8], max_tokens=500) == 1


def test_least_recently_used_prompts_are_forgotten_first():
    priors = LengthPriors(max_prompts=2)
    priors.record([1], 10)
    priors.record([2], 20)
    priors.record([1], 30)  # [1] is now the most recent
    priors.record([3], 40)
    assert len(priors) == 2
    assert priors.expected([2], 100) is None and priors.expected([1], 100) == 20 and priors.expected([3], 100) == 40


@pytest.mark.parametrize("options", [{"per_prompt": 0}, {"max_prompts": 0}])
def test_bad_sizes_raise(options):
    with pytest.raises(ValueError):
        LengthPriors(**options)
