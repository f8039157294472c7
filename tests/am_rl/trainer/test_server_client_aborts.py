"""A sample cut by an abort (a pause for a weight sync, an engine death the balancer could not continue) is never
handed to verl as complete: the server client resends it as a token-exact continuation, and gives up with an error
after a bounded number of aborts. The upstream is a vLLM-shaped streaming server on loopback that aborts on cue."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from am_rl.config.load import compose
from am_rl.rollout.client import RolloutError
from am_rl.trainer.server_client import MAX_ABORT_RESENDS, BalancerServerClient
from load_balancer.loadgen import next_token
from load_balancer.server import ThreadedServer

MODEL = "am_rl-policy"


def greedy(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(next_token(seq))
    return seq[len(prompt) :]


def aborting_engine(aborts: int, tokens_before_abort: int = 3) -> tuple[FastAPI, list[dict]]:
    """Answers the first ``aborts`` requests with a few tokens and finish reason ``abort``, then completes."""
    app, seen = FastAPI(), []

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": MODEL}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        seen.append(body)
        aborted = len(seen) <= aborts
        n = min(tokens_before_abort, body["max_tokens"]) if aborted else body["max_tokens"]
        ids = greedy(body["prompt"], n)

        async def events():
            for i, t in enumerate(ids):
                last = i == len(ids) - 1
                reason = ("abort" if aborted else "length") if last else None
                choice = {"token_ids": [t], "logprobs": {"token_logprobs": [-0.5]}, "finish_reason": reason}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app, seen


def run_generate(aborts: int, prompt: list[int], max_tokens: int, dead_shard_first: bool = False):
    app, seen = aborting_engine(aborts)
    server = ThreadedServer(app).start()
    cfg = compose("demo_cpu")
    try:
        with socket.socket() as s:  # a port nothing listens on: a balancer shard that died
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        url = f"{dead},{server.url}" if dead_shard_first else server.url
        client = BalancerServerClient(cfg, balancer_url=url)
        sampling = {"max_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0}
        return asyncio.run(client.generate("req", prompt_ids=prompt, sampling_params=sampling)), seen
    finally:
        server.stop()


def test_an_aborted_sample_is_continued_token_exact_not_trained_as_complete():
    prompt = [11, 12, 13]
    out, seen = run_generate(aborts=2, prompt=prompt, max_tokens=10)
    assert out.token_ids == greedy(prompt, 10), "the continuation is the uninterrupted sample"
    assert len(out.log_probs) == 10 and out.stop_reason == "completed"
    assert out.extra_fields["finish_reason"] == "length" and out.extra_fields["resends"] == 2
    assert [len(b["prompt"]) for b in seen] == [3, 6, 9] and [b["max_tokens"] for b in seen] == [10, 7, 4]


def test_a_sample_aborted_every_time_fails_the_step_with_the_reason():
    with pytest.raises(RolloutError, match=f"aborted {MAX_ABORT_RESENDS + 1} times"):
        run_generate(aborts=100, prompt=[5, 6], max_tokens=20)


def test_balancer_shards_one_dead_the_sample_is_continued_on_the_live_one():
    prompt = [21, 22]
    out, seen = run_generate(aborts=1, prompt=prompt, max_tokens=12, dead_shard_first=True)
    assert out.token_ids == greedy(prompt, 12) and len(out.log_probs) == 12
    assert out.extra_fields["resends"] == 1  # the abort; the dead shard is skipped, not resent to
    assert [len(b["prompt"]) for b in seen] == [2, 5] and [b["max_tokens"] for b in seen] == [12, 9]
