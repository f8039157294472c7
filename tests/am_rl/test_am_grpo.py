import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos

import am_rl  # noqa: F401  (registers am_grpo)
from am_rl.algos import AMGRPOConfig, compute_am_grpo_advantage


def reference_advantages(scores, lengths, index, max_len, cfg: AMGRPOConfig, truncated=None):
    """Plain-loop reference: per-sample scalar advantage, written straight from the definition."""
    threshold = max_len if cfg.overlong_threshold is None else cfg.overlong_threshold
    n = len(scores)
    overlong = [lengths[i] >= threshold or (truncated is not None and bool(truncated[i])) for i in range(n)]
    out = []
    for i in range(n):
        if overlong[i]:
            out.append(0.0)
            continue
        members = [j for j in range(n) if index[j] == index[i] and (cfg.overlong_in_baseline or not overlong[j])]
        vals = [float(scores[j]) for j in members]
        if len(vals) < 2 or max(vals) == min(vals):
            out.append(0.0)
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        a = float(scores[i]) - mean
        out.append(a / (std + cfg.epsilon) if cfg.norm_adv_by_std else a)
    return out


def make_batch(rng, bs, max_len, num_groups, binary=True):
    lengths = rng.integers(1, max_len + 1, size=bs)
    mask = torch.zeros(bs, max_len)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    scores = rng.integers(0, 2, size=bs).astype(np.float32) if binary else rng.normal(size=bs).astype(np.float32)
    rewards = torch.zeros(bs, max_len)
    rewards[torch.arange(bs), torch.as_tensor(lengths - 1)] = torch.as_tensor(scores)  # verl: score on last token
    index = np.array([f"g{g}" for g in rng.integers(0, num_groups, size=bs)], dtype=object)
    return rewards, mask, index, scores, lengths


CONFIGS = [
    AMGRPOConfig(),
    AMGRPOConfig(overlong_in_baseline=True),
    AMGRPOConfig(norm_adv_by_std=False),
    AMGRPOConfig(overlong_threshold=6),
    AMGRPOConfig(overlong_threshold=6, overlong_in_baseline=True, norm_adv_by_std=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("binary", [True, False])
def test_matches_plain_loop_reference_on_random_data(cfg, seed, binary):
    rng = np.random.default_rng(seed)
    bs, max_len = 64, 8
    rewards, mask, index, scores, lengths = make_batch(rng, bs, max_len, num_groups=10, binary=binary)
    truncated = rng.random(bs) < 0.1
    adv, ret = compute_am_grpo_advantage(rewards, mask, index, config=cfg, truncated=truncated)
    expected = torch.tensor(reference_advantages(scores, lengths, index, max_len, cfg, truncated), dtype=torch.float32)
    assert torch.equal(adv, ret)
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv, expected.unsqueeze(-1) * mask, rtol=1e-5, atol=1e-5)


def test_equals_verl_grpo_when_nothing_is_overlong():
    rng = np.random.default_rng(0)
    bs, max_len = 128, 16
    rewards, mask, index, _, _ = make_batch(rng, bs, max_len, num_groups=8, binary=False)
    mask[:, -1] = 0  # nobody reaches the max length
    rewards = rewards * mask
    ours, _ = compute_am_grpo_advantage(rewards, mask, index, config=AMGRPOConfig())
    verl, _ = core_algos.compute_grpo_outcome_advantage(rewards.clone(), mask, index)
    torch.testing.assert_close(ours, verl, rtol=1e-5, atol=1e-5)


def test_overlong_response_gets_exactly_zero_and_leaves_baseline():
    # Group of 4: two overlong (length == max_len == 4). Baseline = the two others only.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float32)
    rewards = torch.zeros(4, 4)
    rewards[:, 0] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    index = np.array(["a"] * 4, dtype=object)
    adv, _ = compute_am_grpo_advantage(rewards, mask, index)
    assert torch.all(adv[0] == 0) and torch.all(adv[3] == 0)
    s = 1 / math.sqrt(0.5)  # scores {1, 0}: mean .5, unbiased std sqrt(.5)
    torch.testing.assert_close(adv[1, :2], torch.full((2,), 0.5 * s / (1 + 1e-6 * s)), rtol=1e-5, atol=1e-6)
    assert torch.all(adv[1, 2:] == 0)  # zero outside the response mask


def test_truncated_flag_marks_overlong_below_threshold():
    mask = torch.ones(3, 10)
    mask[:, 5:] = 0
    rewards = torch.zeros(3, 10)
    rewards[:, 0] = torch.tensor([1.0, 0.0, 1.0])
    index = np.array([0, 0, 0])
    adv, _ = compute_am_grpo_advantage(rewards, mask, index, truncated=[False, False, True])
    assert torch.all(adv[2] == 0)
    assert adv[0, 0] > 0 > adv[1, 0]


@pytest.mark.parametrize(
    "scores,lengths",
    [
        ([1.0], [2]),  # one member
        ([0.3, 0.3, 0.3], [2, 3, 1]),  # all equal (0.3 is not exact in binary: no residue / eps blow-up)
        ([1.0, 0.0, 0.0], [4, 4, 2]),  # after excluding the overlong, one member left
        ([1.0, 0.0], [4, 4]),  # everyone overlong: empty baseline
    ],
)
def test_degenerate_groups_get_zero_never_nan(scores, lengths):
    n, max_len = len(scores), 4
    mask = torch.zeros(n, max_len)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    rewards = torch.zeros(n, max_len)
    rewards[:, 0] = torch.tensor(scores)
    adv, _ = compute_am_grpo_advantage(rewards, mask, np.array(["x"] * n, dtype=object))
    assert torch.all(adv == 0)


def test_empty_batch():
    adv, _ = compute_am_grpo_advantage(torch.zeros(0, 4), torch.zeros(0, 4), np.array([], dtype=object))
    assert adv.shape == (0, 4)


def test_registered_in_verl_and_reads_algorithm_config():
    fn = core_algos.get_adv_estimator_fn("am_grpo")
    assert fn is compute_am_grpo_advantage
    algorithm = OmegaConf.create(
        {"adv_estimator": "am_grpo", "norm_adv_by_std_in_grpo": False, "am_grpo": {"overlong_threshold": 3}}
    )
    cfg = AMGRPOConfig.from_algorithm_config(algorithm)
    assert cfg == AMGRPOConfig(norm_adv_by_std=False, overlong_threshold=3)
    # Called the way verl's compute_advantage calls non-GRPO estimators.
    mask = torch.ones(2, 4)
    mask[1, 3:] = 0
    rewards = torch.zeros(2, 4)
    rewards[0, 0] = 1.0
    adv, _ = fn(token_level_rewards=rewards, response_mask=mask, config=algorithm, index=np.array([1, 1]))
    assert torch.all(adv == 0)  # both reach threshold 3: both overlong
