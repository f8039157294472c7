"""The streaming proxy against load generators: pass-through, token ids, usage, 4xx, chat, no instance."""

import concurrent.futures
import re

import httpx
from lb_helpers import sse_chunks, without_ids

BODY = {"model": "loadgen", "prompt": "2+2=", "max_tokens": 12, "stream": True}


def test_stream_relays_the_upstream_content_unchanged(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=2000)
    lb = balancer([gen.url])
    for extra in ({}, {"return_token_ids": True}, {"logprobs": 1, "stream_options": {"include_usage": True}}):
        body = BODY | extra
        direct = httpx.post(f"{gen.url}/v1/completions", json=body, timeout=10)
        via = httpx.post(f"{lb.url}/v1/completions", json=body, timeout=10)
        assert via.status_code == 200 and via.headers["content-type"].startswith("text/event-stream")
        assert without_ids(sse_chunks(via.text)) == without_ids(sse_chunks(direct.text))
    # the balancer always asks for token ids upstream (to migrate), and nulls them when the client did not ask
    sent = httpx.get(f"{gen.url}/stats").json()["requests"]
    assert all(r["return_token_ids"] is True for r in sent[1::2])
    assert '"token_ids":null' in via.text and '"prompt_token_ids":null' in via.text


def test_token_id_prompts_and_ids_in_output(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=2000)
    lb = balancer([gen.url])
    body = BODY | {"prompt": [5, 6, 7], "return_token_ids": True}
    chunks = sse_chunks(httpx.post(f"{lb.url}/v1/completions", json=body, timeout=10).text)
    assert chunks[0]["choices"][0]["prompt_token_ids"] == [5, 6, 7]
    assert sum(len(c["choices"][0]["token_ids"]) for c in chunks) == 12


def test_non_streaming_is_passed_through(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=5000)
    lb = balancer([gen.url])
    body = BODY | {"stream": False, "logprobs": 2}
    direct = httpx.post(f"{gen.url}/v1/completions", json=body, timeout=10).json()
    via = httpx.post(f"{lb.url}/v1/completions", json=body, timeout=10)
    assert via.status_code == 200
    got = via.json()
    assert {k: v for k, v in got.items() if k not in ("id", "created")} == {
        k: v for k, v in direct.items() if k not in ("id", "created")
    }
    assert got["usage"]["completion_tokens"] == 12


def test_upstream_4xx_reaches_the_client_unchanged(loadgens, balancer):
    (gen,) = loadgens(1)
    lb = balancer([gen.url])
    for stream in (True, False):
        body = BODY | {"model": "no-such-model", "stream": stream}
        direct = httpx.post(f"{gen.url}/v1/completions", json=body, timeout=10)
        via = httpx.post(f"{lb.url}/v1/completions", json=body, timeout=10)
        assert via.status_code == direct.status_code == 404
        assert via.content == direct.content


def test_chat_completions_and_models(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=2000)
    lb = balancer([gen.url])
    body = {"model": "loadgen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    direct = httpx.post(f"{gen.url}/v1/chat/completions", json=body, timeout=10)
    via = httpx.post(f"{lb.url}/v1/chat/completions", json=body, timeout=10)
    assert without_ids(sse_chunks(via.text)) == without_ids(sse_chunks(direct.text))
    assert httpx.get(f"{lb.url}/v1/models", timeout=10).json()["data"][0]["id"] == "loadgen"


def test_no_instance_is_a_503_json_error(balancer):
    lb = balancer([])
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=10)
    assert r.status_code == 503
    assert "no healthy instance" in r.json()["error"]["message"]
    assert httpx.get(f"{lb.url}/v1/models", timeout=10).status_code == 503


def test_requests_spread_and_metrics_count_them(loadgens, balancer):
    gens = loadgens(2, tokens_per_s=400)
    lb = balancer([g.url for g in gens], policy="least_requests")
    with httpx.Client(timeout=20) as client:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            texts = list(pool.map(lambda _: client.post(f"{lb.url}/v1/completions", json=BODY).text, range(6)))
    assert all(len(sse_chunks(t)) == 12 for t in texts)
    served = [len(httpx.get(f"{g.url}/stats").json()["finished"]) for g in gens]
    assert sorted(served) == [3, 3], served
    metrics = httpx.get(f"{lb.url}/metrics", timeout=10).text
    assert 'lb_requests_total{endpoint="/v1/completions",status="200"} 6.0' in metrics
    assert "lb_tokens_relayed_total 72.0" in metrics
    views = httpx.get(f"{lb.url}/instances", timeout=10).json()
    assert {v["url"] for v in views} == {g.url for g in gens}
    assert all(v["tokens_relayed"] == 36 and v["in_flight"] == 0 and v["healthy"] for v in views)


def test_token_in_token_out_generate_is_relayed_as_is(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=5000)
    lb = balancer([gen.url])
    body = {"model": "loadgen", "token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 6, "temperature": 0}}
    for stream in (False, True):
        direct = httpx.post(f"{gen.url}/inference/v1/generate", json=body | {"stream": stream}, timeout=10)
        via = httpx.post(f"{lb.url}/inference/v1/generate", json=body | {"stream": stream}, timeout=10)
        assert via.status_code == 200
        ids = [t for c in (sse_chunks(via.text) if stream else [via.json()]) for t in c["choices"][0]["token_ids"]]
        assert len(ids) == 6
        blank = re.compile(rb'"request_id":"[^"]*"')
        assert blank.sub(b"", via.content) == blank.sub(b"", direct.content)
    sent = httpx.get(f"{gen.url}/stats").json()["requests"]
    assert "return_token_ids" not in sent[-1]  # relayed untouched
    bad = httpx.post(f"{lb.url}/inference/v1/generate", json={"token_ids": []}, timeout=10)
    assert bad.status_code == 400 and "token_ids" in bad.json()["error"]["message"]
