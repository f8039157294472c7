"""The server client sends each sample's expected length, learnt from earlier samples of the same prompt, to the
balancer (real HTTP on loopback: client → real balancer → load generator, a synthetic vLLM-shaped server), which
uses it and never passes it on to the engine."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from am_rl.config.load import compose
from am_rl.rollout.client import RolloutClient
from am_rl.trainer.server_client import BalancerServerClient
from load_balancer.config import BalancerConfig
from load_balancer.hints import HINT_FIELD
from load_balancer.loadgen import LoadGenSettings, build_loadgen_app
from load_balancer.server import BalancerServer, ThreadedServer


@pytest.fixture
def stack():
    engine = ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=5000))).start()
    lb = BalancerServer(BalancerConfig(port=0, instances=[engine.url])).start()
    yield engine, lb
    lb.stop()
    engine.stop()


def accepted_hints(lb) -> float:
    text = httpx.get(f"{lb.url}/metrics", timeout=10).text
    found = re.search(r'lb_length_hints_total\{outcome="accepted"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def generate_all(client, calls):
    async def run():
        return [await client.generate("req", prompt_ids=p, sampling_params={"max_tokens": n}) for p, n in calls]

    return asyncio.run(run())


def test_second_epoch_of_a_prompt_carries_the_first_ones_length(stack, monkeypatch):
    engine, lb = stack
    hints, original = [], RolloutClient.generate

    async def spy(self, request):
        hints.append(request.expected_tokens)
        return await original(self, request)

    monkeypatch.setattr(RolloutClient, "generate", spy)
    client = BalancerServerClient(compose("demo_cpu"), balancer_url=lb.url)
    outs = generate_all(client, [([1, 2, 3], 8), ([1, 2, 3], 12), ([4, 5], 6), ([1, 2, 3], 4)])
    assert [len(o.token_ids) for o in outs] == [8, 12, 6, 4]
    # 1st: unseen; 2nd: the first sample's 8; 3rd: another prompt; 4th: mean(8, 12) = 10 capped by max_tokens 4
    assert hints == [None, 8, None, 4]
    assert accepted_hints(lb) == 2.0
    sent = httpx.get(f"{engine.url}/stats", timeout=10).json()["requests"]
    assert len(sent) == 4 and not any(HINT_FIELD in body for body in sent)


def test_hints_can_be_switched_off(stack):
    _, lb = stack
    client = BalancerServerClient(compose("demo_cpu"), balancer_url=lb.url, length_hints=False)
    generate_all(client, [([1, 2, 3], 8), ([1, 2, 3], 8)])
    assert accepted_hints(lb) == 0.0
