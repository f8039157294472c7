"""The step timeline's recorder, driven with explicit times against a real registry (the test plays the proxy: it
writes the instance counters the timeline reads), then once through a real balancer and load generators."""

import concurrent.futures

import httpx
import lb_test_policies  # noqa: F401  (registers test_move_after)
import pytest

from load_balancer.config import TimelineConfig
from load_balancer.registry import MemoryStore, Registry
from load_balancer.timeline import Timeline

A, B = "http://a:1", "http://b:1"


@pytest.fixture
def registry():
    reg = Registry(MemoryStore(), window_s=5.0)
    for url in (A, B):
        reg._admit(url)
    return reg


def move(timeline: Timeline, url: str, delta: int, now: float) -> None:
    """What the proxy does when it places (+1) or releases (-1) a request: tell the registry, then the timeline."""
    for _ in range(abs(delta)):
        timeline.registry.placed(url, now) if delta > 0 else timeline.registry.left(url)
    timeline.observe(url, now)


def relay(timeline: Timeline, url: str, tokens: int) -> None:
    timeline.registry.instances[url].tokens_relayed += tokens


def test_a_pause_ends_the_step_at_its_last_request_and_the_next_request_opens_another(registry):
    tl = Timeline(TimelineConfig(), registry)
    move(tl, A, +1, 10.0)
    move(tl, B, +1, 10.5)
    move(tl, A, -1, 11.0)
    move(tl, B, -1, 12.0)  # nothing in flight: the end, if nothing follows
    move(tl, A, +1, 12.5)  # a second wave of the same rollout
    move(tl, A, -1, 14.0)
    tl.on_pause(20.0)  # the trainer's weight sync, long after
    move(tl, B, +1, 30.0)
    (first,), second = tl.closed, tl.current
    assert (first.index, first.closed_by, first.started_at, first.ended_at) == (1, "pause", 10.0, 14.0)
    assert first.makespan(99.0) == 4.0
    assert first.lanes[A].points == [(0.0, 1), (1.0, 0), (2.5, 1), (4.0, 0)]
    assert first.lanes[B].points == [(0.0, 0), (0.5, 1), (2.0, 0)]
    assert first.totals == [(0.0, 1), (0.5, 2), (1.0, 1), (2.0, 0), (2.5, 1), (4.0, 0)]
    assert (second.index, second.started_at, second.ended_at) == (2, 30.0, None)
    assert second.lanes[B].points == [(0.0, 1)] and second.lanes[A].points == [(0.0, 0)]


def test_a_pause_while_sequences_run_does_not_end_the_step(registry):
    tl = Timeline(TimelineConfig(), registry)
    move(tl, A, +1, 0.0)
    tl.on_pause(1.0)
    assert tl.current is not None and not tl.closed
    move(tl, A, -1, 2.0)
    tl.on_pause(2.5)
    assert tl.closed[0].ended_at == 2.0


def test_without_a_pause_the_step_ends_after_the_idle_gap(registry):
    tl = Timeline(TimelineConfig(idle_gap_s=3.0), registry)
    move(tl, A, +1, 0.0)
    move(tl, A, -1, 1.0)
    tl.tick(3.9)
    assert tl.current is not None  # 2.9 s idle: could still be a gap between waves
    move(tl, B, +1, 3.9)
    move(tl, B, -1, 5.0)
    tl.tick(7.9)
    assert tl.current is not None
    tl.tick(8.0)
    (step,) = tl.closed
    assert (step.closed_by, step.started_at, step.ended_at, tl.current) == ("idle", 0.0, 5.0, None)
    tl.tick(20.0)  # no step, nothing happens
    assert len(tl.closed) == 1


def test_moves_are_recorded_in_the_open_step_only(registry):
    tl = Timeline(TimelineConfig(), registry)
    tl.on_move(0.5, A, B, True, 40)  # no step open: not part of any
    move(tl, A, +1, 1.0)
    tl.on_move(2.0, A, B, True, 120)
    tl.on_move(2.5, B, A, False, 7)
    move(tl, A, -1, 3.0)
    tl.on_pause(3.0)
    view = tl.snapshot(now=4.0).steps[0]
    assert [(m.t_s, m.source, m.target, m.migrated, m.tokens) for m in view.moves] == [
        (1.0, A, B, True, 120),
        (1.5, B, A, False, 7),
    ]


def test_memory_is_bounded_in_steps_points_and_moves(registry):
    cfg = TimelineConfig(steps=3, max_points=64, max_moves=5)
    tl = Timeline(cfg, registry)
    t = 0.0
    for _ in range(10):
        for k in range(1000):  # 1000 requests, each placed and released: 2000 changes per lane
            move(tl, A, +1, t)
            if k == 500:  # one moment of 7 in flight must survive compaction
                for _ in range(6):
                    move(tl, A, +1, t)
                for _ in range(6):
                    move(tl, A, -1, t + 0.0005)
            move(tl, A, -1, t + 0.001)
            t += 0.01
        for _ in range(8):
            tl.on_move(t - 1, A, B, True, 1)
        tl.on_pause(t)
    assert [s.index for s in tl.closed] == [8, 9, 10]
    for step in tl.closed:
        assert len(step.lanes[A].points) <= cfg.max_points and len(step.totals) <= cfg.max_points
        assert max(n for _, n in step.lanes[A].points) == 7
        assert max(n for _, n in step.totals) == 7
        assert (len(step.moves), step.moves_dropped) == (5, 3)
        assert step.requests == 0  # only the proxy's on_finished counts requests; none here


def test_lower_bound_is_tokens_over_the_sum_of_peak_rates(registry):
    tl = Timeline(TimelineConfig(rate_window_s=1.0), registry)
    move(tl, A, +1, 0.0)
    move(tl, B, +1, 0.0)
    for k in range(1, 9):  # 2 s in 0.25 s ticks: A relays 100 tok/s throughout, B 200 tok/s for its first second
        relay(tl, A, 25)
        if k <= 4:
            relay(tl, B, 50)
        if k == 4:
            move(tl, B, -1, 1.0)
        tl.tick(k * 0.25)
    move(tl, A, -1, 2.0)
    tl.on_pause(2.0)
    step = tl.closed[0]
    assert step.lanes[A].peak_rate == pytest.approx(100) and step.lanes[B].peak_rate == pytest.approx(200)
    view = tl.snapshot(now=5.0).steps[0]
    assert view.tokens == 400 and view.makespan_s == 2.0
    assert view.lower_bound_s == pytest.approx(400 / 300)  # both at their peak: done in 1.33 s instead of 2


def test_the_lower_bound_never_exceeds_the_makespan_of_a_step_shorter_than_the_rate_window(registry):
    tl = Timeline(TimelineConfig(rate_window_s=1.0), registry)
    move(tl, A, +1, 0.0)
    relay(tl, A, 30)
    tl.tick(0.25)
    move(tl, A, -1, 0.3)
    tl.on_pause(0.3)
    view = tl.snapshot(now=1.0).steps[0]
    assert view.lower_bound_s == pytest.approx(0.3)


def test_the_tail_is_where_at_most_the_tail_fraction_of_the_peak_still_runs(registry):
    tl = Timeline(TimelineConfig(tail_fraction=0.25), registry)
    for _ in range(8):
        move(tl, A, +1, 0.0)
    assert tl.current.tail_start(0.25) is None  # all 8 running: no tail yet
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # one finishes per second: 2 left at 6 s (<= 25% of 8)
        move(tl, A, -1, t)
    assert tl.current.tail_start(0.25) == 6.0
    move(tl, A, -1, 9.0)
    move(tl, A, -1, 10.0)
    tl.on_pause(10.0)
    view = tl.snapshot(now=11.0).steps[0]
    assert (view.tail_start_s, view.makespan_s, view.peak_in_flight) == (6.0, 10.0, 8)


def test_one_sequence_alone_is_no_tail(registry):
    tl = Timeline(TimelineConfig(), registry)
    move(tl, A, +1, 0.0)
    move(tl, A, -1, 1.0)
    tl.on_pause(1.0)
    assert tl.snapshot(now=2.0).steps[0].tail_start_s is None


def test_a_real_balancer_records_steps_moves_and_tokens(loadgens, balancer):
    """Through the proxy's hooks: two steps split by the trainer's pause call, a migration as a move between lanes."""
    first, second = loadgens(2, tokens_per_s=400)
    lb = balancer([first.url, second.url], policy="test_move_after", policy_options={"after": 60},
                  migration_interval_s=0.05, connect_timeout_s=15, scrape_timeout_s=5)  # fmt: skip
    body = {"model": "loadgen", "prompt": "x", "max_tokens": 200, "stream": True}
    with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(3) as pool:
        for _ in range(2):
            answers = list(pool.map(lambda _: client.post(f"{lb.url}/v1/completions", json=body), range(3)))
            assert all(a.status_code == 200 for a in answers)
            assert client.post(f"{lb.url}/instances/pause").status_code == 200
            assert client.post(f"{lb.url}/instances/resume").status_code == 200
        steps = [client.get(f"{lb.url}/dashboard/timeline", params={"step": k}).json()["steps"][k - 1] for k in (1, 2)]
    assert [s["index"] for s in steps] == [1, 2] and all(s["closed_by"] == "pause" and s["detailed"] for s in steps)
    for s in steps:
        assert s["requests"] == 3 and s["tokens"] == 600 and s["peak_in_flight"] == 3
        assert {lane["url"] for lane in s["lanes"]} == {first.url, second.url}
        assert [(m["source"], m["target"], m["migrated"]) for m in s["moves"]] == [(first.url, second.url, True)] * 3
        assert s["moves_total"] == 3
        assert all(m["tokens"] >= 60 for m in s["moves"])
        assert 0 < s["lower_bound_s"] <= s["makespan_s"]


def test_lanes_and_moves_are_sent_for_one_step_only(registry):
    tl = Timeline(TimelineConfig(), registry)
    for k in range(3):
        move(tl, A, +1, 10.0 * k)
        tl.on_move(10.0 * k + 1, A, B, True, 5)
        move(tl, A, -1, 10.0 * k + 2)
        tl.on_pause(10.0 * k + 3)
    move(tl, B, +1, 40.0)  # step 4, running
    newest = tl.snapshot(now=41.0).steps
    assert [(s.index, s.detailed, len(s.lanes), len(s.moves), s.moves_total) for s in newest] == [
        (1, False, 0, 0, 1), (2, False, 0, 0, 1), (3, False, 0, 0, 1), (4, True, 2, 0, 0),
    ]  # fmt: skip
    assert newest[-1].open and newest[-1].makespan_s == 1.0
    second = tl.snapshot(detail=2, now=41.0).steps[1]
    assert second.detailed and [lane.url for lane in second.lanes] == [A, B] and second.moves[0].t_s == 1.0
    assert [s.detailed for s in tl.snapshot(detail=99, now=41.0).steps] == [False, False, False, True]
