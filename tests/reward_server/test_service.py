"""The HTTP contract end to end: real server, embedded Redis, worker processes, Math-Verify."""

import json
import time

import pytest

from reward_server.limits import InputLimits

MATH_OK = {"reward_type": "math", "response": r"<think>hmm</think> so \boxed{\frac{1}{2}}", "ground_truth": "0.5"}
MATH_BAD = {"reward_type": "math", "response": r"\boxed{3}", "ground_truth": "0.5"}


def test_healthz_lists_workers(client):
    deadline = time.monotonic() + 60  # healthy means one worker is up; the second may still be importing
    while len((body := client.get("/healthz").json())["workers"]) < 2:
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert body["status"] == "ok" and len(body["workers"]) == 2 and body["queue_depth"] >= 0


def test_score_math(client):
    r = client.post("/score", json=MATH_OK)
    assert r.status_code == 200, r.text
    assert r.json()["score"] == 1.0 and r.json()["status"] == "ok"
    assert client.post("/score", json=MATH_BAD).json()["score"] == 0.0
    no_box = client.post("/score", json={**MATH_OK, "response": "0.5"}).json()
    assert no_box["score"] == 0.0 and no_box["details"]["reason"] == "no_boxed_answer"


def test_batch_keeps_order_and_dedups(client):
    items = [{"reward_type": "math", "response": rf"\boxed{{{i % 7}}}", "ground_truth": str(i % 3)} for i in range(40)]
    r = client.post("/score_batch", json={"items": items})
    assert r.status_code == 200, r.text
    scores = [res["score"] for res in r.json()["results"]]
    assert scores == [1.0 if i % 7 == i % 3 else 0.0 for i in range(40)]


def test_cache_hit_on_repeat(client):
    item = {"reward_type": "math", "response": rf"\boxed{{{time.time_ns()}}}", "ground_truth": "1"}
    first = client.post("/score", json=item).json()
    second = client.post("/score", json=item).json()
    assert first["cached"] is False and second["cached"] is True and second["score"] == first["score"] == 0.0
    assert 'reward_cache_hits_total{reward_type="math"}' in client.get("/metrics").text


def test_wall_clock_kill_is_never_served_from_cache(client):
    """A test killed at its wall limit may owe that to a busy machine: scored again, never a cache hit."""
    code = f"import time\ntime.sleep(60)  # {time.time_ns()}"
    item = {
        "reward_type": "code",
        "response": f"```python\n{code}\n```",
        "ground_truth": {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "", "output": "1"}]},
    }
    for _ in range(2):
        body = client.post("/score", json=item).json()
        assert body["score"] == 0.0 and body["details"]["reason"] == "wall_timeout", body
        assert body["cached"] is False and body["cacheable"] is False


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (json.dumps({"reward_type": "poetry", "response": "x", "ground_truth": "1"}).encode(), "application/json"),
        (json.dumps({"reward_type": "math", "ground_truth": "1"}).encode(), "application/json"),
        (json.dumps({"reward_type": "math", "response": 5, "ground_truth": "1"}).encode(), "application/json"),
        (json.dumps({"reward_type": "math", "response": "x", "ground_truth": {"a": 1}}).encode(), "application/json"),
        (
            json.dumps(
                {
                    "reward_type": "code",
                    "response": "x",
                    "ground_truth": {
                        "language": "rust",
                        "test_type": "stdin_stdout",
                        "tests": [{"input": "", "output": ""}],
                    },
                }
            ).encode(),
            "application/json",
        ),
        (
            json.dumps(
                {
                    "reward_type": "code",
                    "response": "x",
                    "ground_truth": {
                        "language": "python",
                        "test_type": "call",
                        "fn_name": "f; import os",
                        "tests": [{"input": [], "output": 1}],
                    },
                }
            ).encode(),
            "application/json",
        ),
        (
            json.dumps(
                {
                    "reward_type": "ifeval",
                    "response": "x",
                    "ground_truth": {"instruction_id_list": ["a"], "kwargs": [{}]},
                }
            ).encode(),
            "application/json",
        ),
        (json.dumps({**MATH_OK, "extra": 1}).encode(), "application/json"),
        (b"", "application/json"),
        (b"reward_type=math", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_score_requests_get_json_4xx(client, body, content_type):
    r = client.post("/score", content=body, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_malformed_batch_item_names_its_index(client):
    r = client.post("/score_batch", json={"items": [MATH_OK, {"reward_type": "math", "response": "x"}]})
    assert r.status_code == 422
    assert any(err["loc"][:3] == ["body", "items", 1] for err in r.json()["detail"])
    assert client.post("/score_batch", json={"itemz": []}).status_code == 422


def test_oversize_body_is_413(client):
    big = json.dumps({**MATH_OK, "response": "x" * (65 * 1024 * 1024)})
    r = client.post("/score", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_oversize_chunked_body_is_413(client):
    def chunks():
        yield b'{"reward_type": "math", "response": "'
        for _ in range(70):
            yield b"x" * (1024 * 1024)
        yield b'", "ground_truth": "1"}'

    r = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    "answer",
    [
        "2^{2^{2^{2^{2^{2^{2^{2^{2^{2}}}}}}}}}",  # power tower: exact evaluation never ends
        "9^{9^{9^{9}}}!",
        "(" * 400 + "1" + ")" * 400,  # deep nesting
        r"\frac{" * 150 + "1" + "}{2}" * 150,
    ],
)
def test_pathological_math_returns_zero_within_seconds(client, answer):
    t0 = time.monotonic()
    r = client.post("/score", json={"reward_type": "math", "response": rf"\boxed{{{answer}}}", "ground_truth": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["score"] == 0.0
    assert time.monotonic() - t0 < 15


def test_response_at_the_size_limit_scores_fast(client):
    tail = r" \boxed{4}"
    response = "a" * (InputLimits().max_response_bytes - len(tail)) + tail
    t0 = time.monotonic()
    r = client.post("/score", json={"reward_type": "math", "response": response, "ground_truth": "4"})
    assert r.json()["score"] == 1.0 and time.monotonic() - t0 < 15


def test_hung_verifier_is_killed_and_worker_replaced(client):
    before = client.get("/metrics").text
    tower = "9^{9^{9^{9^{9^{9}}}}}"
    r = client.post(
        "/score", json={"reward_type": "math", "response": rf"\boxed{{{tower}}}", "ground_truth": tower + "+1"}
    )
    result = r.json()
    assert result["score"] == 0.0
    if result["status"] == "timeout":
        assert 'reward_timeouts_total{reward_type="math"}' in client.get("/metrics").text
    assert client.post("/score", json=MATH_OK).json()["score"] == 1.0  # the replacement verifier serves
    assert "reward_jobs_total" in before


def test_metrics_exposes_the_contract(client):
    client.post("/score", json=MATH_OK)
    text = client.get("/metrics").text
    for name in (
        "reward_jobs_total",
        "reward_item_latency_seconds",
        "reward_queue_depth",
        "reward_cache_hits_total",
        "reward_timeouts_total",
        "reward_sandbox_kills_total",
        "reward_live_workers",
    ):
        assert name in text
    assert 'reward_jobs_total{outcome="correct",reward_type="math"}' in text


def test_code_through_service(client):
    item = {
        "reward_type": "code",
        "response": "```python\nprint(int(input())*2)\n```",
        "ground_truth": {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "21", "output": "42"}]},
    }
    assert client.post("/score", json=item).json()["score"] == 1.0
    item["response"] = "```python\nprint(int(input())*3)\n```"
    assert client.post("/score", json=item).json()["score"] == 0.0


def test_unknown_route_and_method_are_json_4xx(client):
    assert client.get("/nope").status_code == 404
    r = client.get("/score")
    assert r.status_code == 405 and r.json()


def test_ifeval_through_service(client):
    truth = {
        "instruction_id_list": ["punctuation:no_comma", "detectable_format:title"],
        "kwargs": [{}, {"keywords": None}],
    }
    item = {
        "reward_type": "ifeval",
        "prompt": "Write a titled haiku without commas.",
        "ground_truth": truth,
        "response": "<<Dawn>>\nsoft light on the lake",
    }
    assert client.post("/score", json=item).json()["score"] == 1.0
    assert client.post("/score", json={**item, "response": "<<Dawn>>\nsoft, light"}).json()["score"] == 0.0
