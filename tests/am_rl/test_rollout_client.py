"""RolloutClient over real HTTP on loopback: through a real balancer to load generators (synthetic vLLM-shaped
streaming servers, not engines; the real-engine path is covered by tests/am_rl/trainer/test_demo_on_verl.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from test_admission import reference_order

from am_rl.rollout import RolloutClient, RolloutError, RolloutRequest
from am_rl.rollout.priors import prompt_key
from load_balancer.config import BalancerConfig
from load_balancer.loadgen import MODEL, LoadGenSettings, build_loadgen_app, next_token
from load_balancer.server import BalancerServer, ThreadedServer


def greedy(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(next_token(seq))
    return seq[len(prompt) :]


@pytest.fixture(scope="module")
def balancer_url():
    engines = [ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=2000))).start() for _ in range(2)]
    lb = BalancerServer(BalancerConfig(port=0, instances=[e.url for e in engines])).start()
    yield lb.url
    lb.stop()
    for e in engines:
        e.stop()


async def generate(url: str, requests: list[RolloutRequest], **options):
    async with RolloutClient(url, MODEL, **options) as client:
        return await client.generate_all(requests)


def test_batch_comes_back_in_order_with_token_ids_and_logprobs(balancer_url):
    # 100k prompt ids: the first SSE event (it echoes them) is ~690 KB, beyond aiohttp's 512 KiB readline limit
    prompts = [[7, 8, 9], list(range(1, 100_001)), [5] * 10, [300, 2]]
    requests = [RolloutRequest(f"r{i}", p, max_tokens=4 + 3 * i) for i, p in enumerate(prompts * 8)]
    results, stats = asyncio.run(generate(balancer_url, requests, max_concurrency=8))
    assert [r.request_id for r in results] == [q.request_id for q in requests]
    for req, res in zip(requests, results):
        assert res.response_ids == greedy(req.prompt_ids, req.max_tokens)
        assert len(res.logprobs) == len(res.response_ids)
        assert res.finish_reason == "length" and res.truncated
    assert stats.generated_tokens == sum(q.max_tokens for q in requests)
    assert stats.requests == len(requests) and stats.retries == 0


def test_rejected_request_is_an_error_with_the_reason(balancer_url):
    async def wrong_model():
        async with RolloutClient(balancer_url, "no-such-model") as client:
            return await client.generate(RolloutRequest("bad", [1, 2], max_tokens=2))

    with pytest.raises(RolloutError, match=r"rejected: HTTP 404.*no-such-model"):
        asyncio.run(wrong_model())


def test_dead_endpoint_fails_after_the_retries():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    requests = [RolloutRequest("lost", [1, 2], max_tokens=2)]
    with pytest.raises(RolloutError, match=r"failed 3 times before the first token"):
        asyncio.run(generate(dead, requests, max_retries=2, backoff_s=0.01))


def test_the_client_at_its_cap_starts_the_longest_expected_first(balancer_url):
    hints = [8, None, 30, 2, 30, None, 16, 4]

    async def run() -> list[str]:
        finished: list[str] = []
        async with RolloutClient(balancer_url, MODEL, max_concurrency=1) as client:
            async def one(i: int, hint: int | None) -> None:
                await client.generate(RolloutRequest(f"r{i}", [i + 1, 7], max_tokens=4, expected_tokens=hint))
                finished.append(f"r{i}")

            # r99 takes the one slot first, so every sample below queues behind it.
            tasks = [asyncio.create_task(one(99, None))]
            await asyncio.sleep(0)
            tasks += [asyncio.create_task(one(i, h)) for i, h in enumerate(hints)]
            await asyncio.gather(*tasks)
        return finished

    finished = asyncio.run(run())
    assert finished == ["r99"] + [f"r{i}" for i in reference_order(hints)]


def test_a_step_handed_over_at_once_starts_longest_hint_first_from_its_first_request():
    """generate_all hands the client a whole step in one burst: the client ranks all of it before it sends any, so
    even the first request sent is the longest expected (first come, first served would send r0, hint 4, first)."""
    hints = [4, 300, 16, 300, 64, 2]
    engine = ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=5000))).start()
    lb = BalancerServer(BalancerConfig(port=0, instances=[engine.url])).start()
    try:
        requests = [RolloutRequest(f"r{i}", [i + 1, 7], max_tokens=h, expected_tokens=h) for i, h in enumerate(hints)]
        results, _ = asyncio.run(generate(lb.url, requests, max_concurrency=1))
    finally:
        lb.stop()
        engine.stop()
    assert [len(r.response_ids) for r in results] == hints
    sent = [body["max_tokens"] for body in engine.app.state.loadgen.requests]  # the engine's log: the send order
    assert sent == sorted(hints, reverse=True), sent


def test_at_its_cap_the_client_starts_the_siblings_of_a_long_running_sample_first():
    """No hints: what the client reads from a prompt's first sample ranks its waiting siblings."""
    engine = ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=2000))).start()
    lb = BalancerServer(BalancerConfig(port=0, instances=[engine.url])).start()
    state = engine.app.state.loadgen  # its request log is the start order
    long_prompt, short_prompt = [11, 7], [12, 7]
    try:

        async def run() -> None:
            async with RolloutClient(lb.url, MODEL, max_concurrency=2) as client:

                def sample(name: str) -> asyncio.Task:
                    # long0 runs ~4 s, so it still runs when its siblings arrive, however slowly this box reads it
                    prompt, max_tokens = (long_prompt, 2000) if name.startswith("long") else (short_prompt, 4)
                    max_tokens = 8000 if name == "long0" else max_tokens
                    return asyncio.create_task(client.generate(RolloutRequest(name, prompt, max_tokens=max_tokens)))

                tasks = [sample("long0")]
                while (client.admission.shown(prompt_key(long_prompt)) or 0) < 50:  # the client has read 50 tokens
                    assert not tasks[0].done(), "long0 ended before the client saw it stream"
                    await asyncio.sleep(0.01)
                for name in ("short0", "short1", "short2", "long1", "long2"):  # arrival order
                    tasks.append(sample(name))
                    await asyncio.sleep(0)
                await asyncio.gather(*tasks)

        asyncio.run(run())
    finally:
        lb.stop()
        engine.stop()
    lengths = [body["max_tokens"] for body in state.requests]
    # short0 took the free slot; at its end long0 had streamed 50+ tokens against short0's 4: long1, long2 next
    # (first come, first served would start short1, short2 first)
    assert lengths == [8000, 4, 2000, 2000, 4, 4], lengths
