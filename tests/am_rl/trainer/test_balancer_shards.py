"""Balancer shards as the trainer starts them (``am_rl.balancer.processes``): real ``python -m load_balancer``
processes on loopback in front of load generators (synthetic vLLM-shaped servers, not engines), driven through the
control calls the checkpoint manager makes and through the rollout client of the agent loop."""

from __future__ import annotations

import ast
import asyncio
import re
from types import SimpleNamespace

import httpx
import pytest
from free_ports import free_port_pair

from am_rl.rollout import RolloutClient, RolloutRequest
from am_rl.rollout.shards import ShardedRolloutClient
from am_rl.trainer.balancer_control import API_KEY_ENV, BalancerControlError, ShardedBalancerControl, control_for
from am_rl.trainer.balancer_shards import started_shards
from load_balancer.loadgen import MODEL, LoadGenSettings, build_loadgen_app
from load_balancer.server import ThreadedServer

KEY = "shard-test-key"


@pytest.fixture(scope="module")
def engines():
    servers = [ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=2000))).start() for _ in range(5)]
    yield [s.url for s in servers], servers
    for s in servers:
        s.stop()


def instances(url: str) -> dict[str, dict]:
    views = httpx.get(f"{url}/instances", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    return {v["url"]: v for v in views}


def test_shards_own_their_engines_and_the_control_calls_reach_the_owner(engines, tmp_path, monkeypatch, capsys):
    urls, servers = engines
    monkeypatch.setenv(API_KEY_ENV, KEY)  # the shards inherit it, as from the trainer's environment
    section = SimpleNamespace(processes=2, host="127.0.0.1", port=free_port_pair(), policy="makespan", migrate=True)
    with started_shards(section, "127.0.0.1", urls[:3], tmp_path) as shard_urls:
        assert len(shard_urls) == 2
        # Engines given at start: round robin.
        assert set(instances(shard_urls[0])) == {urls[0], urls[2]} and set(instances(shard_urls[1])) == {urls[1]}
        assert httpx.get(f"{shard_urls[0]}/instances", timeout=10).status_code == 401  # the key reached the shards
        for i, url in enumerate(shard_urls, 1):  # each dashboard says which shard it is
            data = httpx.get(f"{url}/dashboard/data", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
            assert (data["shard"], data["shards"]) == (i, 2)
            # ...and knows its peer, so any shard shows the whole run: all three engines
            whole = httpx.get(f"{url}/dashboard/all", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
            assert whole["shard_of"] == {urls[0]: 1, urls[2]: 1, urls[1]: 2} and whole["unreachable"] == {}
        assert (tmp_path / "balancer_shard1.log").exists() and (tmp_path / "balancer_shard2.log").exists()

        control = control_for(",".join(shard_urls), api_key=KEY)
        assert isinstance(control, ShardedBalancerControl)
        control.register(urls)  # the checkpoint manager registers every engine: new ones go to the emptier shard
        assert [set(instances(u)) for u in shard_urls] == [{urls[0], urls[2], urls[4]}, {urls[1], urls[3]}]
        assert control.registered() == set(urls)
        control.register(urls)  # registering again moves nothing
        assert [set(instances(u)) for u in shard_urls] == [{urls[0], urls[2], urls[4]}, {urls[1], urls[3]}]

        control.set_paused(urls, True)  # a weight sync: every engine paused on its own shard (no 404 elsewhere)
        assert all(v["paused"] for u in shard_urls for v in instances(u).values())
        control.set_paused(urls, False)
        assert not any(v["paused"] for u in shard_urls for v in instances(u).values())

        control.deregister([urls[3]])
        assert urls[3] not in control.registered()
        control.deregister([urls[3]], missing_ok=True)
        with pytest.raises(BalancerControlError, match="no balancer shard"):
            control.deregister([urls[3]])

        class Shard(RolloutClient):  # the sharded client's gate ranks and admits; a shard's own must not hold again
            async def generate(self, *args, **kwargs):
                raise AssertionError("a shard's gated generate was used")

        async def rollout():
            async with ShardedRolloutClient(shard_urls, MODEL, api_key=KEY, client_cls=Shard) as client:
                requests = [RolloutRequest(f"q{i}", [1, 2, i], max_tokens=20) for i in range(12)]
                return await client.generate_all(requests)

        results, stats = asyncio.run(rollout())
        assert stats.generated_tokens == 12 * 20 and stats.retries == 0
        served = [len(s.app.state.loadgen.requests) for s in servers]
        assert sum(served) == 12 and served[3] == 0  # the deregistered engine got nothing
        relayed = [sum(v["tokens_relayed"] for v in instances(u).values()) for u in shard_urls]
        assert relayed == [6 * 20, 6 * 20]  # spread evenly over the shards
    # On exit each shard's totals are printed, read from it before it stopped.
    totals = r"balancer shard (\d)/2 totals: requests=(\d+) tokens_relayed=(\d+) .* per_engine_tokens=(\{.*\})"
    lines = re.findall(totals, capsys.readouterr().out)
    assert [(shard, int(n), int(tokens)) for shard, n, tokens, _ in lines] == [("1", 6, 120), ("2", 6, 120)]
    assert set(ast.literal_eval(lines[0][3])) == {urls[0], urls[2], urls[4]}


def test_port_zero_puts_every_shard_on_a_free_port(tmp_path):
    section = SimpleNamespace(processes=2, host="127.0.0.1", port=0, policy="round_robin", migrate=False)
    with started_shards(section, "127.0.0.1", [], tmp_path) as shard_urls:
        ports = {int(url.rsplit(":", 1)[1]) for url in shard_urls}
        assert len(ports) == 2 and 0 not in ports
        for i, url in enumerate(shard_urls, 1):
            assert httpx.get(f"{url}/dashboard/data", timeout=10).json()["shard"] == i
    for url in shard_urls:  # stopped on the way out
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
