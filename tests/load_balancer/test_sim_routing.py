"""The routing simulator: calibration anchors, the lower bound's soundness, bookkeeping, and small-scale sanity."""

import dataclasses

import numpy as np
import pytest

from bench.sim.bounds import lower_bound
from bench.sim.calibration import ANCHOR_TOLERANCE, ANCHORS, DEFAULT_SPEED
from bench.sim.engine import simulate
from bench.sim.static import LongestFirstOracle, VerlChunks
from bench.sim.workload import WorkloadSpec, make_workload
from load_balancer.policies import LeastRequestsPolicy, MakespanPolicy, PowerOfTwoPolicy, RoundRobinPolicy
from load_balancer.policy import Migration


@pytest.mark.parametrize("anchor", ANCHORS, ids=lambda a: a.name)
def test_speed_model_reproduces_the_report_anchors(anchor):
    speed = DEFAULT_SPEED.per_seq_tokens_per_s(anchor.batch, anchor.context)
    assert speed == pytest.approx(anchor.tokens_per_s_per_seq, rel=ANCHOR_TOLERANCE)


def test_sixteen_at_32k_is_about_460_tokens_per_s_in_total():
    assert 16 * DEFAULT_SPEED.per_seq_tokens_per_s(16, 32_768) == pytest.approx(460, rel=ANCHOR_TOLERANCE)


def test_per_sequence_speed_falls_with_batch_and_context():
    speeds = [[DEFAULT_SPEED.per_seq_tokens_per_s(b, c) for c in (1_024, 8_192, 32_768)] for b in (1, 4, 16, 64)]
    assert np.all(np.diff(speeds, axis=0) < 0) and np.all(np.diff(speeds, axis=1) < 0)


def test_workload_is_long_tailed_with_prompt_difficulty():
    w = make_workload(0)
    assert w.n == 256 * 16 and w.output_tokens.max() == w.max_tokens == 32_768
    per_prompt = w.output_tokens.reshape(256, 16)
    truncated = per_prompt == w.max_tokens
    assert 0.005 < truncated.mean() < 0.1
    # truncation concentrates in hard prompts: the prompts with any truncated sample hold most of them
    assert truncated[truncated.any(axis=1)].mean() > 5 * truncated.mean()
    assert np.mean(w.output_tokens) < 0.5 * np.percentile(w.output_tokens, 99)
    assert np.array_equal(make_workload(0).output_tokens, w.output_tokens)


SMALL = WorkloadSpec(n_prompts=6, n_samples=4, max_tokens=2_048, median_output=400.0)


def small_contenders(w, m, seed):
    return [
        (VerlChunks(w.n), np.arange(w.n)),
        (RoundRobinPolicy(), np.random.default_rng(seed).permutation(w.n)),
        (LeastRequestsPolicy(), np.random.default_rng(seed).permutation(w.n)),
        (PowerOfTwoPolicy(seed), np.random.default_rng(seed).permutation(w.n)),
        (MakespanPolicy(migrate=False), np.random.default_rng(seed).permutation(w.n)),
        (MakespanPolicy(min_gain_s=0.0, cooldown_s=5.0), np.random.default_rng(seed).permutation(w.n)),
        (LongestFirstOracle(w, m), np.arange(w.n)),
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("m", [1, 2, 5])
def test_lower_bound_is_below_every_policy_and_the_oracle(seed, m):
    w = make_workload(100 + seed, SMALL)
    bound = lower_bound(w, m)
    for policy, order in small_contenders(w, m, seed):
        result = simulate(w, m, policy, order)
        assert bound.makespan_s <= result.makespan_s, policy.name
        assert bound.longest_sequence_s > 0 and bound.capacity_s > 0


def test_every_request_finishes_once_and_makespan_is_the_last_finish():
    w = make_workload(1, SMALL)
    finished = []

    class Recording(RoundRobinPolicy):
        def choose(self, request, instances, now):
            assert all(s.healthy and s.scrape_age_s == pytest.approx(0.25) for s in instances)
            return super().choose(request, instances, now)

        def on_finished(self, request_id, generated_tokens, now):
            finished.append((request_id, generated_tokens, now))

    result = simulate(w, 3, Recording(), np.arange(w.n))
    assert sorted(r for r, _, _ in finished) == sorted(f"r{i}" for i in range(w.n))
    assert {r: g for r, g, _ in finished} == {f"r{i}": int(w.output_tokens[i]) for i in range(w.n)}
    assert result.makespan_s == pytest.approx(max(t for _, _, t in finished))


def test_migration_costs_a_reprefill_and_loses_no_tokens():
    """A policy that moves every sequence once, at t = 2 s: outputs stay whole, and the move is not free."""
    w = make_workload(2, SMALL)

    class MoveAllOnce(RoundRobinPolicy):
        def plan_migrations(self, instances, running, now):
            if now != 2.0:
                return []
            urls = [s.url for s in instances]
            return [Migration(rr.request.request_id, rr.url, urls[(urls.index(rr.url) + 1) % len(urls)])
                    for rr in running]

    still = simulate(w, 2, RoundRobinPolicy(), np.arange(w.n))
    moved = simulate(w, 2, MoveAllOnce(), np.arange(w.n))
    assert moved.migrations > 0 and moved.reprefill_tokens >= moved.migrations * w.prompt_tokens.min()
    assert moved.makespan_s > still.makespan_s >= lower_bound(w, 2).makespan_s
    assert np.all(np.isfinite(moved.finish_s))


def test_kv_overflow_preempts_and_still_finishes():
    w = make_workload(3, SMALL)
    tiny_kv = dataclasses.replace(DEFAULT_SPEED, kv_capacity_tokens=6_000)
    result = simulate(w, 1, RoundRobinPolicy(), np.arange(w.n), tiny_kv)
    assert result.preemptions > 0 and np.all(np.isfinite(result.finish_s))
    assert result.makespan_s >= lower_bound(w, 1, tiny_kv).makespan_s


@pytest.mark.parametrize("seed", [0, 1])
def test_makespan_beats_verl_style_at_small_scale(seed):
    """8 instances, 64 requests each as in the full benchmark (32 prompts x 16 samples, up to 32k tokens)."""
    w = make_workload(seed, WorkloadSpec(n_prompts=32))
    m = 8
    verl = simulate(w, m, VerlChunks(w.n), np.arange(w.n))
    ours = simulate(w, m, MakespanPolicy(), np.random.default_rng(seed).permutation(w.n))
    assert ours.makespan_s < 0.95 * verl.makespan_s
    assert ours.makespan_s >= lower_bound(w, m).makespan_s
