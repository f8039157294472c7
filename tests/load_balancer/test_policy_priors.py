"""``makespan`` with the client's length hints (RequestInfo.expected_tokens), against straightforward references of
its length estimate and routing cost, and in scenes where the hint must change the decision."""

import dataclasses
import math

import numpy as np
import pytest

from load_balancer.policies import MakespanPolicy
from load_balancer.policy import InstanceState, RequestInfo, RunningRequest


THETA = np.array([0.0165, 5e-5, 3.5e-8])  # t0, a, c of the linear step model the scenes follow


def instance(url, running=0, step=None):
    return InstanceState(url, True, running, running, 0, 0.0, 0.0, 0.0, step)


def info(rid, prompt, hint=None, generated=0, max_tokens=32_768):
    return RequestInfo(rid, prompt, 300, max_tokens, generated, expected_tokens=hint)


def reference_remaining(p: MakespanPolicy, req: RequestInfo, generated: int, finished, live) -> float:
    """The documented estimate, spelled out: prior (hint or generic) shrunk with finished siblings, the running
    siblings' probe, the request's own progress, capped; minus what it generated."""
    if req.expected_tokens is not None:
        prior, weight = req.expected_tokens, p.hint_weight
    else:
        prior, weight = p.prior_fraction * req.max_tokens, p.prior_weight
    estimate = (weight * prior + sum(finished)) / (weight + len(finished))
    if live:
        live = sorted(live)
        estimate = max(estimate, (1 + p.lindy) * live[min(len(live) - 1, int(p.live_quantile * len(live)))])
    estimate = max(estimate, (1 + p.lindy) * generated)
    return max(1.0, min(req.max_tokens, estimate) - generated)


@pytest.mark.parametrize("live_quantile", [0.5, 1.0])
def test_length_estimate_matches_the_reference(live_quantile):
    rng = np.random.default_rng(3)
    policy = MakespanPolicy(live_quantile=live_quantile)
    hints = {f"p{k}": (int(rng.integers(100, 30_000)) if k % 3 else None) for k in range(12)}
    finished: dict[str, list[int]] = {key: [] for key in hints}
    live: dict[str, dict[str, int]] = {key: {} for key in hints}
    n = 0
    for key, hint in hints.items():
        for _ in range(int(rng.integers(1, 8))):
            rid, n = f"r{n}", n + 1
            policy.on_routed(info(rid, key, hint), "a", 0.0)
            if rng.random() < 0.3:
                length = int(rng.integers(10, 32_768))
                policy.on_finished(rid, length, 1.0)
                finished[key].append(length)
            else:
                live[key][rid] = int(rng.integers(0, 20_000))
                policy.on_progress(rid, live[key][rid], 1.0)
    asked = [(info(rid, key, hints[key], g), g) for key in hints for rid, g in live[key].items()]
    asked += [(info("new", key, hints[key]), 0) for key in hints]  # a sibling not yet routed
    got = policy.expected_remaining_many([a for a, _ in asked], [g for _, g in asked])
    want = [reference_remaining(policy, a, g, finished[a.prompt_key], list(live[a.prompt_key].values()))
            for a, g in asked]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def reference_costs(policy: MakespanPolicy, placed, states, extra, extra_key, extra_hinted) -> list[float]:
    """Projected finish from scratch: work + risk * sqrt(sum over prompts of (uncertain work)^2), uncertain work =
    remaining, or ``hint_risk`` x remaining for hinted requests; the new request counted in."""
    out = []
    for s in states:
        work, by_prompt = extra, {extra_key: (policy.hint_risk if extra_hinted else 1.0) * extra}
        for req, url in placed:
            if url == s.url:
                r = policy.expected_remaining(req, req.generated_tokens)
                work += r
                u = policy.hint_risk if req.expected_tokens is not None else 1.0
                by_prompt[req.prompt_key] = by_prompt.get(req.prompt_key, 0.0) + u * r
        out.append(work + policy.risk * math.sqrt(sum(w * w for w in by_prompt.values())))
    return out


@pytest.mark.parametrize("hint_risk", [0.0, 0.5, 1.0])
def test_routing_cost_matches_the_reference_incrementally_and_after_a_refresh(hint_risk):
    rng = np.random.default_rng(5)
    policy = MakespanPolicy(hint_risk=hint_risk)
    states = [instance(u) for u in "abcd"]
    placed = []
    hints = {f"p{k}": int(rng.integers(50, 20_000)) if k < 5 else None for k in range(9)}  # siblings share theirs
    for k in range(40):  # routed through choose, so the loads are kept incrementally after the first refresh
        req = info(f"r{k}", f"p{k % 9}", hints[f"p{k % 9}"])
        url = policy.choose(req, states, 0.0)
        policy.on_routed(req, url, 0.0)
        placed.append((req, url))
    for hinted, probe in ((True, info("x", "p2", hints["p2"])), (False, info("y", "p7")), (False, info("z", "fresh"))):
        r = policy.expected_remaining(probe, 0)
        want = reference_costs(policy, placed, states, r, probe.prompt_key, hinted)
        got = policy.projected_finish(states, r, probe.prompt_key, hint_risk if hinted else 1.0)
        np.testing.assert_allclose(got, want, rtol=1e-9)
        policy._refresh(now=5.0)
        np.testing.assert_allclose(policy.projected_finish(states, r, probe.prompt_key, hint_risk if hinted else 1.0),
                                   want, rtol=1e-9)


def scene(hinted: bool):
    """a runs one request, b three (all fresh); with hints a's is long (20k) and b's short (2k each)."""
    policy = MakespanPolicy()
    for rid, url, hint in [("a0", "a", 20_000), ("b0", "b", 2_000), ("b1", "b", 2_000), ("b2", "b", 2_000)]:
        policy.on_routed(info(rid, f"p-{rid}", hint if hinted else None), url, 0.0)
    return policy


def test_a_hint_steers_routing_away_from_an_instance_with_long_work():
    states = [instance("a", running=1), instance("b", running=3)]
    assert scene(hinted=False).choose(info("n", "new"), states, 1.0) == "a"  # without hints: fewer requests wins
    assert scene(hinted=True).choose(info("n", "new", 10_000), states, 1.0) == "b"  # 6k of work beats 20k


def test_migration_plans_from_what_the_step_shows_not_from_hints():
    """a holds 12 requests at 1,000 tokens each, b and c are idle; one of a's is hinted to run to 30k. Hints place
    requests; moves follow progress and siblings only (a hinted-long request that is in fact short drew moves at the
    tail: MakespanPolicy's docstring)."""

    def plan(hint):
        policy = MakespanPolicy()
        running = []
        for k in range(12):
            req = info(f"r{k:02d}", f"p{k}", hint if k == 7 else None, generated=1_000)
            policy.on_routed(req, "a", 0.0)
            running.append(RunningRequest(req, "a", 1_000, 0.0))
        for _ in range(5):  # scrapes of a linear step model, so the drain model knows what sharing costs
            batch = np.array([1.0, 8.0, 32.0, 64.0])
            ctx = batch * np.array([4_000.0, 10_000.0, 20_000.0, 30_000.0])
            policy.fit.observe(["w", "x", "y", "z"], batch, ctx, THETA[0] + THETA[1] * batch + THETA[2] * ctx)
        step = THETA[0] + THETA[1] * 12 + THETA[2] * 12 * 1_300
        states = [dataclasses.replace(instance("a", running=12, step=step), in_flight=12), instance("b"), instance("c")]
        return policy.plan_migrations(states, running, now=100.0)

    unhinted = plan(hint=None)
    assert unhinted, "the scene must call for moves"
    assert plan(hint=30_000) == unhinted
    assert "r07" not in {m.request_id for m in unhinted[:1]}  # nothing in the step singles r07 out
