"""Contracts of the routing policies, driven directly through the RoutingPolicy interface (no I/O, time passed in)."""

import dataclasses

import numpy as np
import pytest

from load_balancer.estimates import DrainQueue, Planned, StepTimeFit
from load_balancer.policies import LeastRequestsPolicy, MakespanPolicy, PowerOfTwoPolicy, RoundRobinPolicy
from load_balancer.policy import POLICIES, InstanceState, RequestInfo, RunningRequest, make_policy


def instance(url, healthy=True, in_flight=0, running=0, waiting=0, kv=0.0, rate=0.0, step=None):
    return InstanceState(url, healthy, in_flight, running, waiting, kv, rate, 0.0, step)


def request(i, prompt="p0", max_tokens=32_768, generated=0):
    return RequestInfo(f"r{i}", prompt, 300, max_tokens, generated)


def route(policy, req, instances, now=0.0):
    """choose + on_routed, and count the request in the chosen snapshot's in_flight as the balancer does."""
    url = policy.choose(req, instances, now)
    policy.on_routed(req, url, now)
    k = next(k for k, s in enumerate(instances) if s.url == url)
    instances[k] = dataclasses.replace(instances[k], in_flight=instances[k].in_flight + 1)
    return url


def test_all_four_registered_and_unknown_names_raise():
    assert {"round_robin", "least_requests", "power_of_two", "makespan"} <= set(POLICIES)
    assert isinstance(make_policy("makespan"), MakespanPolicy)
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("fastest")


@pytest.mark.parametrize("name", ["round_robin", "least_requests", "power_of_two", "makespan"])
def test_only_healthy_instances_are_chosen(name):
    policy = make_policy(name)
    instances = [instance(f"u{k}", healthy=k % 3 != 0, in_flight=k) for k in range(7)]
    healthy = {s.url for s in instances if s.healthy}
    chosen = {route(policy, request(i, f"p{i % 5}"), instances) for i in range(60)}
    assert chosen <= healthy
    assert len(chosen) > 1  # and they do spread over more than one
    with pytest.raises(ValueError, match="no healthy instance"):
        policy.choose(request(99), [instance("dead", healthy=False)], 0.0)


@pytest.mark.parametrize("name", ["round_robin", "least_requests", "power_of_two", "makespan"])
def test_same_inputs_same_choices(name):
    def run():
        policy = make_policy(name)
        instances = [instance(f"u{k}", in_flight=k % 2, rate=100.0 * (k + 1)) for k in range(5)]
        return [route(policy, request(i, f"p{i % 3}"), instances, now=i * 0.1) for i in range(40)]

    assert run() == run()


def test_power_of_two_seed_changes_choices_and_picks_the_less_loaded_of_its_pair():
    instances = [instance(f"u{k}", in_flight=10 * k) for k in range(8)]
    a = [PowerOfTwoPolicy(seed=1).choose(request(i), instances, 0.0) for i in range(50)]
    b = [PowerOfTwoPolicy(seed=2).choose(request(i), instances, 0.0) for i in range(50)]
    assert a != b
    # u7 has the most in flight: it can only win a pair against itself, which sampling without replacement forbids
    assert "u7" not in a + b


def test_round_robin_cycles_over_healthy_instances():
    policy = RoundRobinPolicy()
    instances = [instance("a"), instance("b", healthy=False), instance("c"), instance("d")]
    assert [policy.choose(request(i), instances, 0.0) for i in range(7)] == ["a", "c", "d", "a", "c", "d", "a"]


def test_least_requests_picks_the_minimum_in_flight():
    policy = LeastRequestsPolicy()
    instances = [instance("a", in_flight=5), instance("b", in_flight=2), instance("c", in_flight=9)]
    assert all(policy.choose(request(i), instances, 0.0) == "b" for i in range(5))
    # ties rotate instead of always filling the first
    tied = [instance("a", in_flight=1), instance("b", in_flight=1)]
    assert {policy.choose(request(i), tied, 0.0) for i in range(4)} == {"a", "b"}


def test_makespan_prefers_less_projected_work():
    policy = MakespanPolicy()
    instances = [instance("a", rate=500.0), instance("b", rate=500.0)]
    # a runs two requests that have already produced long outputs (so are expected to run long); b runs one fresh one
    for i, url, generated in [(0, "a", 20_000), (1, "a", 20_000), (2, "b", 0)]:
        policy.on_routed(request(i, f"q{i}", generated=generated), url, 0.0)
    policy.on_progress("r0", 20_000, 1.0)
    assert policy.choose(request(9, "new"), instances, 2.0) == "b"


def test_makespan_prefers_the_faster_instance_for_equal_work():
    """Speed is learnt from clean step times (3x longer on "slow" at the same load), one observation per scrape."""
    policy = MakespanPolicy()
    for i, url in enumerate(["slow", "fast"]):
        policy.on_routed(request(i, f"q{i}"), url, 0.0)
    for tick in range(40):
        now = 0.25 * tick
        instances = [instance("slow", running=1, step=0.06), instance("fast", running=1, step=0.02)]
        policy.plan_migrations(instances, [], now)
    assert policy.fit.slowness("slow") > 1.5 * policy.fit.slowness("fast")
    assert policy.choose(request(5, "new"), instances, 10.0) == "fast"


def test_makespan_routes_on_work_not_on_measured_tokens_per_s():
    """The warm-step regression: measured rates left over from the previous step's tail (one instance ended with
    many sequences, the others with one) are no capacity; a fresh step's requests spread evenly regardless."""
    policy = MakespanPolicy()
    instances = [instance(f"u{k}", rate=300.0 if k == 0 else 30.0) for k in range(4)]
    chosen = [route(policy, request(i, f"p{i // 4}"), instances) for i in range(64)]
    assert sorted(chosen.count(f"u{k}") for k in range(4)) == [16, 16, 16, 16]


def test_makespan_spreads_siblings_of_one_prompt():
    policy = MakespanPolicy()
    instances = [instance(f"u{k}") for k in range(4)]
    # one unrelated request per instance, then 4 siblings: they must land on 4 different instances
    for k in range(4):
        route(policy, request(k, f"other{k}"), instances)
    siblings = [route(policy, request(10 + j, "hard"), instances) for j in range(4)]
    assert sorted(siblings) == ["u0", "u1", "u2", "u3"]


def test_makespan_learns_a_prompt_is_long_from_finished_siblings():
    policy = MakespanPolicy()
    for i in range(4):
        policy.on_routed(request(i, "hard"), "a", 0.0)
        policy.on_routed(request(10 + i, "easy"), "a", 0.0)
    for i in range(2):
        policy.on_finished(f"r{i}", 30_000, 100.0)
        policy.on_finished(f"r{10 + i}", 500, 10.0)
    fresh = MakespanPolicy().expected_remaining(request(99, "unseen"), 0)
    hard, easy = policy.expected_remaining(request(2, "hard"), 0), policy.expected_remaining(request(12, "easy"), 0)
    assert easy < fresh / 1.5 and hard > fresh * 2 and hard > 4 * easy


def laggard_scene(n_long_on_a: int, n_long_on_b: int, generated: int = 16_000):
    """Instances a and b with long-running requests (and c idle); snapshots consistent with the step-time model."""
    policy = MakespanPolicy()
    running = []
    for i in range(n_long_on_a + n_long_on_b):
        url = "a" if i < n_long_on_a else "b"
        req = request(i, f"p{i}")
        policy.on_routed(req, url, 0.0)
        running.append(RunningRequest(req, url, generated, 0.0))

    def state(url, count):
        step = 0.017 + 0.00005 * count + 3.5e-8 * count * (generated + 300)
        return instance(url, in_flight=count, running=count, step=step if count else None)

    return policy, [state("a", n_long_on_a), state("b", n_long_on_b), state("c", 0)], running


def test_migration_moves_from_the_laggard_to_spare_capacity():
    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    moves = policy.plan_migrations(instances, running, now=100.0)
    assert moves, "a holds 12 long sequences while c is idle: something must move"
    assert all(m.source == "a" and m.target in {"b", "c"} for m in moves)
    assert len({m.request_id for m in moves}) == len(moves)
    assert len(moves) < 12  # it balances, it does not just empty a


def test_estimates_are_the_policys_own_model_and_change_nothing():
    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    twin, _, _ = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    for p in (policy, twin):  # both learn the scene's step times from its snapshots
        p.plan_migrations(instances, running, 100.0)
    estimates = policy.estimates(instances, running, now=101.0)
    for s in instances:
        mine = [rr for rr in running if rr.url == s.url]
        expected = sum(policy.expected_remaining(rr.request, rr.generated_tokens) for rr in mine)
        assert estimates[s.url].remaining_tokens == pytest.approx(expected)
    assert estimates["a"].drain_s > estimates["b"].drain_s > estimates["c"].drain_s == 0.0
    # the drain time is the lockstep model migration plans with: a's queue as plan_migrations builds it
    queue = DrainQueue(policy.fit.coefficients() * policy.fit.slowness("a"))
    for rr in (rr for rr in running if rr.url == "a"):
        queue.add(Planned(policy.expected_remaining(rr.request, rr.generated_tokens), 300 + rr.generated_tokens, rr))
    assert estimates["a"].drain_s == pytest.approx(queue.drain_s())
    assert policy.plan_migrations(instances, running, 102.0) == twin.plan_migrations(instances, running, 102.0)


@pytest.mark.parametrize("name", ["round_robin", "least_requests", "power_of_two"])
def test_count_based_policies_have_no_estimates(name):
    _, instances, running = laggard_scene(n_long_on_a=2, n_long_on_b=1)
    assert make_policy(name).estimates(instances, running, 0.0) == {}


def test_no_migration_when_balanced():
    policy, instances, running = laggard_scene(n_long_on_a=3, n_long_on_b=3)
    instances = instances[:2]  # no idle instance; a and b hold the same work
    assert policy.plan_migrations(instances, running, now=100.0) == []


def test_migration_does_not_thrash():
    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    where = {rr.request.request_id: rr.url for rr in running}
    moved_total = []
    for tick in range(30):  # replan every 2 s for a minute, applying each plan as the balancer would
        now = 100.0 + 2.0 * tick
        current = [dataclasses.replace(rr, url=where[rr.request.request_id]) for rr in running]
        counts = {u: sum(1 for v in where.values() if v == u) for u in ("a", "b", "c")}
        snap = [dataclasses.replace(s, in_flight=counts[s.url], running=counts[s.url]) for s in instances]
        for m in policy.plan_migrations(snap, current, now):
            assert where[m.request_id] == m.source
            where[m.request_id] = m.target
            moved_total.append(m.request_id)
            policy.on_routed(request(int(m.request_id[1:]), f"p{m.request_id[1:]}", generated=16_000), m.target, now)
    assert moved_total, "the scene is unbalanced: the first plans must move something"
    # each request moved at most once within the cooldown, and the planning settled instead of bouncing
    assert len(moved_total) == len(set(moved_total))
    assert len(moved_total) <= 12


THETA = np.array([0.0165, 5e-5, 3.5e-8])  # t0, a, c of the linear step model the tests' scenes follow


def test_drain_queue_finish_matches_stepping_the_lockstep_model():
    rng = np.random.default_rng(1)
    remaining = rng.integers(500, 6_000, 8).astype(float)
    context = rng.integers(300, 20_000, 8).astype(float)
    queue = DrainQueue(THETA)
    for k, (r, x) in enumerate(zip(remaining, context)):
        queue.add(Planned(r, x, f"r{k}"))
    queue.stall_s = 2.0
    for r in remaining:
        # reference: one decode step at a time, every request with tokens left adds one token per step
        left, ctx, t = remaining.copy(), context.copy(), queue.stall_s
        for _ in range(int(r)):
            live = left > 0
            t += THETA[0] + THETA[1] * live.sum() + THETA[2] * ctx[live].sum()
            ctx[live] += 1
            left[live] -= 1
        np.testing.assert_allclose(queue.finish_s(r), t, rtol=2e-3)
    assert queue.finish_s(remaining.max()) == pytest.approx(queue.drain_s())


def test_spread_moves_a_crowded_long_request_when_the_laggard_cannot_gain():
    """a: one very long request alone (moving it gains nothing, so the drain pass stops at once); b: a long request
    crowded by 40 shorter ones; c: idle. Only the spread pass moves, and only b's long request, to c."""

    def plan(spread_fraction):
        policy = MakespanPolicy(spread_fraction=spread_fraction)
        for k in range(8):  # the hard prompt's finished samples ran to the cap: its last one is expected to as well
            policy.on_routed(request(100 + k, "hard"), "a", 0.0)
            policy.on_finished(f"r{100 + k}", 32_768, 1.0)
        scene = [("r0", "hard", "a", 4_000), ("r1", "p1", "b", 24_000)] + [
            (f"r{k}", f"p{k}", "b", 6_000) for k in range(2, 42)
        ]
        running = []
        for rid, prompt, url, generated in scene:
            req = request(int(rid[1:]), prompt, generated=generated)
            policy.on_routed(req, url, 0.0)
            running.append(RunningRequest(req, url, generated, 0.0))
        for _ in range(5):  # scrapes of a linear step model, as test_step_time_fit_* feeds
            batch = np.array([1.0, 8.0, 32.0, 64.0])
            ctx = batch * np.array([4_000.0, 10_000.0, 20_000.0, 30_000.0])
            policy.fit.observe(["w", "x", "y", "z"], batch, ctx, THETA[0] + THETA[1] * batch + THETA[2] * ctx)

        def state(url):
            mine = [rr for rr in running if rr.url == url]
            ctx = sum(rr.request.prompt_tokens + rr.generated_tokens for rr in mine)
            step = THETA[0] + THETA[1] * len(mine) + THETA[2] * ctx
            return instance(url, in_flight=len(mine), running=len(mine), step=step if mine else None)

        return policy.plan_migrations([state("a"), state("b"), state("c")], running, now=100.0)

    assert plan(spread_fraction=0.0) == []
    assert [(m.request_id, m.source, m.target) for m in plan(spread_fraction=1.0)] == [("r1", "b", "c")]


def test_step_time_fit_recovers_a_linear_step_model():
    rng = np.random.default_rng(0)
    fit = StepTimeFit()
    for _ in range(20):
        batch = rng.integers(1, 64, 32)
        context = batch * rng.uniform(1_000, 30_000, 32)
        fit.observe([f"u{k}" for k in range(32)], batch, context, 0.0165 + 5e-5 * batch + 3.5e-8 * context)
    np.testing.assert_allclose(fit.coefficients(), [0.0165, 5e-5, 3.5e-8], rtol=0.02)


def test_makespan_releases_per_request_state_when_requests_end():
    policy = MakespanPolicy(max_prompts=3)
    instances = [instance("a"), instance("b")]
    for i in range(20):
        route(policy, request(i, f"p{i // 2}"), instances)
    for i in range(20):
        if i % 2:
            policy.on_failed(f"r{i}", 1.0)
        else:
            policy.on_finished(f"r{i}", 100 * i, 1.0)
    assert not policy._tracked and not policy._siblings
    assert list(policy._finished_by_prompt) == ["p7", "p8", "p9"]  # only the most recent prompts are remembered


@pytest.mark.parametrize("busy", [{"waiting": 5}, {"kv_cache_usage": 0.95}])
def test_no_move_lands_behind_an_engine_queue(busy):
    """c is idle in the balancer's view, but its engine has a queue (or a full KV cache): a request moved there would
    wait behind the queue instead of decoding, so the moves go to b, the only instance that can start them now."""
    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    free = {m.target for m in policy.plan_migrations(instances, running, now=100.0)}
    assert "c" in free  # the reference scene: c is the best target while it can start work

    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    instances[2] = dataclasses.replace(instances[2], **busy)
    moves = policy.plan_migrations(instances, running, now=100.0)
    assert moves and {m.target for m in moves} == {"b"}


def test_the_policy_plans_whenever_the_balancer_asks():
    """One planning cadence, the balancer's (BalancerConfig.migration_interval_s): the policy has no interval of its own
    that would silently turn the balancer's asks into empty plans."""
    with pytest.raises(TypeError):
        MakespanPolicy(plan_interval_s=2.0)
    policy, instances, running = laggard_scene(n_long_on_a=12, n_long_on_b=1)
    assert policy.plan_migrations(instances, running, now=100.0)
    # half a second later a second laggard appears (requests that never moved): the next ask plans again
    for i in range(100, 112):
        req = request(i, f"p{i}")
        policy.on_routed(req, "d", 100.0)
        running.append(RunningRequest(req, "d", 16_000, 0.0))
    instances.append(dataclasses.replace(instances[0], url="d"))
    assert any(m.source == "d" for m in policy.plan_migrations(instances, running, now=100.5))
