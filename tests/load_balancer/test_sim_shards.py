"""Balancer shards on the routing simulator: each shard routes and migrates only among its own instances, the
client's spread is what it says, and the bookkeeping returns to zero."""

import numpy as np
import pytest
from lb_test_policies import MoveAfterPolicy

from bench.sim.diagnose import Recorder
from bench.sim.engine import SimConfig, request_index, simulate
from bench.sim.shards import ShardClient, ShardedBalancers
from bench.sim.workload import WorkloadSpec, make_workload
from load_balancer.policies import MakespanPolicy
from load_balancer.policy import RequestInfo

SMALL = WorkloadSpec(n_prompts=12, n_samples=8, max_tokens=2_048, median_output=400.0)


class WhereRouted(Recorder):
    """Every url each request was placed on, first placement and moves alike."""

    def __init__(self, inner):
        super().__init__(inner)
        self.placements: dict[str, list[str]] = {}

    def on_routed(self, request, url, now):
        self.placements.setdefault(request.request_id, []).append(url)
        super().on_routed(request, url, now)


@pytest.mark.parametrize("spread", ["sample", "group"])
def test_requests_stay_in_their_shard_and_the_spread_holds(spread):
    workload = make_workload(1, SMALL)
    sharded = ShardedBalancers(3, MakespanPolicy, spread)
    recorder = WhereRouted(sharded)
    result = simulate(workload, 12, recorder, np.random.default_rng(2).permutation(workload.n))
    assert np.all(np.isfinite(result.finish_s))
    shard_of = {f"sim://instance-{k}": k % 3 for k in range(12)}
    shards_of_prompt: dict[int, set[int]] = {}
    per_shard = np.zeros(3, dtype=int)
    for rid, urls in recorder.placements.items():
        assert len({shard_of[u] for u in urls}) == 1, f"{rid} moved across shards: {urls}"
        per_shard[shard_of[urls[0]]] += 1
        shards_of_prompt.setdefault(int(workload.prompt_of[request_index(rid)]), set()).add(shard_of[urls[0]])
    if spread == "sample":
        assert per_shard.tolist() == [32, 32, 32]  # 96 requests dealt round robin
    else:
        assert all(len(s) == 1 for s in shards_of_prompt.values())  # siblings share a shard
        assert per_shard.tolist() == [32, 32, 32]  # 12 prompts of 8, dealt round robin by prompt
    assert sharded.client.outstanding == [0, 0, 0] and not sharded._shard_of_request
    assert len(sharded.plan_wall_s) > 0 and all(w <= t for w, t in zip(sharded.plan_wall_s, sharded.plan_total_s))


def test_a_shard_moves_sequences_only_among_its_own_instances():
    # Per shard: everything to its first instance, each request moved to its last once it has 20 tokens.
    workload = make_workload(1, SMALL)
    recorder = WhereRouted(ShardedBalancers(2, MoveAfterPolicy, "sample"))
    # Arrival order kept (not the client's AdmissionOrder), so request i is the i-th the client spreads: shard i % 2
    result = simulate(workload, 6, recorder, np.arange(workload.n), config=SimConfig(admission="arrival"))
    assert result.migrations > 0.9 * workload.n  # all but the few that finished before a planning round
    for rid, urls in recorder.placements.items():
        first, last = (["sim://instance-0", "sim://instance-4"], ["sim://instance-1", "sim://instance-5"])[
            request_index(rid) % 2
        ]
        assert urls in ([first], [first, last])


def test_least_outstanding_goes_where_fewest_are_unfinished():
    client = ShardClient(3, "least_outstanding")
    info = RequestInfo("r", "p", 10, 100)
    assert [client.pick(info) for _ in range(4)] == [0, 1, 2, 0]  # equal counts: the turn rotates
    client.finished(2)
    assert client.pick(info) == 2 and client.outstanding == [2, 1, 1]
    client.finished(0)
    client.finished(0)
    assert client.pick(info) == 0
    with pytest.raises(ValueError, match="unknown spread"):
        ShardClient(2, "random")
