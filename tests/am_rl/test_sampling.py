import math
from collections import Counter

import numpy as np
import pytest

from am_rl.sampling import inverse_permutation, repeat_and_shuffle, step_permutation


def siblings_per_instance(uids_in_dispatch_order, k):
    """(uid, instance) -> number of siblings there, when requests go round-robin to k instances."""
    counts = Counter((uid, i % k) for i, uid in enumerate(uids_in_dispatch_order))
    return counts


@pytest.mark.parametrize("b,n", [(1, 1), (3, 4), (256, 16), (7, 1)])
def test_restore_after_shuffle_is_identity(b, n):
    prompts = [f"prompt {i}" for i in range(b)]
    plan = repeat_and_shuffle(prompts, n=n, seed=123, step=5)
    restored = plan.restore(plan.requests)
    assert [(r.prompt_index, r.sample_index) for r in restored] == [(i, k) for i in range(b) for k in range(n)]
    assert [r.prompt for r in restored] == [p for p in prompts for _ in range(n)]


def test_every_uid_appears_n_times_and_requests_are_single_samples():
    plan = repeat_and_shuffle(list(range(50)), n=16, seed=0, step=0)
    counts = Counter(r.uid for r in plan.requests)
    assert len(counts) == 50 and set(counts.values()) == {16}
    assert len({(r.uid, r.sample_index) for r in plan.requests}) == 50 * 16


def test_permutation_reproducible_from_seed_and_step_and_differs_between_steps():
    a = step_permutation(4096, seed=7, step=3)
    assert np.array_equal(a, step_permutation(4096, seed=7, step=3))
    assert not np.array_equal(a, step_permutation(4096, seed=7, step=4))
    assert not np.array_equal(a, step_permutation(4096, seed=8, step=3))
    assert sorted(a.tolist()) == list(range(4096))


def test_inverse_permutation_matches_argsort():
    perm = step_permutation(1000, seed=1, step=1)
    assert np.array_equal(inverse_permutation(perm), np.argsort(perm))


def test_restore_rejects_wrong_length():
    plan = repeat_and_shuffle(["a", "b"], n=2, seed=0, step=0)
    with pytest.raises(ValueError, match="expected 4 results"):
        plan.restore([1, 2, 3])


@pytest.mark.parametrize("bad", [dict(n=0), dict(uids=["x", "x"]), dict(uids=["only one"])])
def test_bad_arguments_raise(bad):
    kwargs = dict(n=2, seed=0, step=0) | bad
    with pytest.raises(ValueError):
        repeat_and_shuffle(["a", "b"], **kwargs)


@pytest.mark.parametrize("k", [4, 8, 64])
def test_shuffle_spreads_siblings_over_instances(k):
    b, n = 256, 16
    plan = repeat_and_shuffle(list(range(b)), n=n, seed=0, step=0)
    shuffled = siblings_per_instance([r.uid for r in plan.requests], k)
    # verl's layout: copies contiguous, the expanded batch cut into k contiguous chunks.
    contiguous = [f"{i}" for i in range(b) for _ in range(n)]
    chunk = len(contiguous) // k
    verl_like = Counter((uid, j // chunk) for j, uid in enumerate(contiguous))

    assert max(verl_like.values()) == n
    per_prompt_max = Counter()
    for (uid, _), c in shuffled.items():
        per_prompt_max[uid] = max(per_prompt_max[uid], c)
    # Balls into bins: n siblings over k instances crowd at most about n/k + sqrt(2 (n/k) ln k) on one of them.
    expected_max = n / k + math.sqrt(2 * (n / k) * math.log(k))
    assert np.mean(list(per_prompt_max.values())) <= expected_max + 1
    assert max(per_prompt_max.values()) < n
