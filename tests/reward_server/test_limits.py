"""Input limits against a real service (small limits, so the inputs stay small): every kind of oversized input gets
413 naming its field and limit, a batch scores everything but its oversized items, and a burst of oversized uploads
leaves the service healthy, its memory flat and its workers alive."""

import json
import socket
import threading
import time

import httpx
import psutil
import pytest

from reward_server.launcher import reward_service

LIMITS = {
    "max_body_bytes": 256 * 1024,
    "max_batch_items": 8,
    "max_response_bytes": 4096,
    "max_prompt_bytes": 2048,
    "max_ground_truth_bytes": 1024,
    "max_tests_per_item": 4,
    "max_test_case_bytes": 2048,
}
MATH = {"reward_type": "math", "response": r"so \boxed{7}", "ground_truth": "7"}
STDIO = {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "2", "output": "4"}]}
CODE = {"reward_type": "code", "response": "```python\nprint(int(input()) * 2)\n```", "ground_truth": STDIO}
IFEVAL = {
    "reward_type": "ifeval",
    "prompt": "Answer without commas.",
    "response": "yes indeed",
    "ground_truth": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    log = tmp_path_factory.mktemp("rs-limits") / "server.log"
    with reward_service(log, workers=1, limits=LIMITS, settings={"code_test_timeout_s": 3.0}) as (url, proc):
        yield url, proc


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service[0], timeout=60) as c:
        yield c


def call_truth(n_tests=1, output="x"):
    tests = [{"input": [1], "output": output} for _ in range(n_tests)]
    return {"language": "python", "test_type": "call", "fn_name": "f", "tests": tests}


# (item, field, limit, actual size, unit): one per kind of input, each just over its limit.
OVERSIZED = {
    "response": ({**MATH, "response": "é" * 2049}, "response", 4096, 4098, "bytes"),  # bytes, not characters
    "prompt": ({**IFEVAL, "prompt": "p" * 2049}, "prompt", 2048, 2049, "bytes"),
    "math truth": ({**MATH, "ground_truth": "1" * 1025}, "ground_truth", 1024, 1025, "bytes"),
    "ifeval truth": (
        {**IFEVAL, "ground_truth": {"instruction_id_list": ["keywords:existence"],
                                    "kwargs": [{"keywords": ["k" * 990]}]}},
        "ground_truth", 1024, None, "bytes",
    ),
    "rm reference": (
        {"reward_type": "rm", "prompt": "q", "response": "a", "ground_truth": {"reference": "r" * 1024}},
        "ground_truth", 1024, None, "bytes",
    ),
    "code fields": (
        {**CODE, "ground_truth": call_truth() | {"fn_name": "f" * 1100}}, "ground_truth", 1024, None, "bytes",
    ),
    "tests per item": (
        {**CODE, "ground_truth": {**STDIO, "tests": STDIO["tests"] * 5}}, "ground_truth.tests", 4, 5, "tests",
    ),
    "stdio test": (
        {**CODE, "ground_truth": {**STDIO, "tests": [*STDIO["tests"], {"input": "1" * 1025, "output": "2" * 1024}]}},
        "ground_truth.tests[1]", 2048, 2049, "bytes",
    ),
    "call test": (
        {**CODE, "ground_truth": call_truth(output="y" * 2100)}, "ground_truth.tests[0]", 2048, None, "bytes",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(OVERSIZED))
def test_each_oversized_input_is_413_naming_field_and_limit(client, kind):
    item, field, limit, actual, unit = OVERSIZED[kind]
    r = client.post("/score", json=item)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["detail"]["field"] == field and body["detail"]["limit"] == limit and body["detail"]["unit"] == unit
    assert body["detail"]["actual"] > limit and (actual is None or body["detail"]["actual"] == actual)
    assert field in body["error"] and str(limit) in body["error"]


def test_inputs_exactly_at_their_limits_are_scored(client):
    at_limits = [
        {**MATH, "response": "é" * 2043 + " " + r"\boxed{7}"},  # 4086 + 1 + 9 bytes
        {**IFEVAL, "prompt": "p" * 2048},
        {**CODE, "ground_truth": {**STDIO, "tests": STDIO["tests"] * 4}},
        {**CODE, "ground_truth": {**STDIO, "tests": [{"input": "2" + " " * 1023, "output": "4" + " " * 1023}]}},
    ]
    assert len(at_limits[0]["response"].encode()) == 4096
    r = client.post("/score_batch", json={"items": at_limits})
    assert r.status_code == 200, r.text
    assert [(x["status"], x["score"]) for x in r.json()["results"]] == [("ok", 1.0)] * 4


def test_batch_with_oversized_items_scores_the_others(client):
    oversized = [OVERSIZED["response"][0], OVERSIZED["stdio test"][0]]
    good = [{**MATH, "response": rf"\boxed{{{i}}}", "ground_truth": "3"} for i in range(5)] + [CODE]
    items = good[:2] + oversized[:1] + good[2:5] + oversized[1:] + good[5:]
    r = client.post("/score_batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["ok"] * 2 + ["rejected"] + ["ok"] * 3 + ["rejected", "ok"]
    assert [x["score"] for x in results] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert results[2]["details"] == {"field": "response", "limit": 4096, "actual": 4098, "unit": "bytes"}
    assert results[6]["details"]["field"] == "ground_truth.tests[1]" and "limit is 2048" in results[6]["error"]
    again = client.post("/score_batch", json={"items": oversized}).json()["results"]
    assert all(x["status"] == "rejected" and not x["cached"] for x in again)  # a refusal is never cached
    metrics = client.get("/metrics").text
    assert 'reward_rejected_total{field="response"}' in metrics and 'field="ground_truth.tests"' in metrics


def test_too_many_items_or_bytes_refuse_the_whole_batch(client):
    r = client.post("/score_batch", json={"items": [MATH] * 9})
    assert r.status_code == 413 and r.json()["detail"] == {"field": "items", "limit": 8, "actual": 9, "unit": "items"}
    items = [{**MATH, "response": "x" * 4000 + str(i)} for i in range(8)]  # each under its limit, 8 x 4 KB = 32 KB
    assert client.post("/score_batch", json={"items": items}).status_code == 200
    big = json.dumps({"items": [{**MATH, "response": "x" * 300_000}]})
    r = client.post("/score_batch", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == {"field": "body", "limit": 256 * 1024, "actual": None,
                                                           "unit": "bytes"}  # fmt: skip


def raw_upload(url: str, declared: int | None, send_bytes: int) -> int:
    """POST /score_batch over a plain socket, declaring `declared` bytes (None: chunked) and sending at most
    `send_bytes` of them; returns the status code the service answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        length = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
        head = f"POST /score_batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
        s.sendall(head.encode())
        piece = b'{"items": [' + b" " * (64 * 1024 - 11)
        sent = 0
        try:
            while sent < send_bytes:
                s.sendall(piece if declared is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service answered and closed before we were done: what it answered is below
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_burst_of_oversized_uploads_leaves_the_service_healthy(client, service):
    url, proc = service
    server = psutil.Process(proc.pid)
    workers_before = sorted(client.get("/healthz").json()["workers"])
    rss_before = server.memory_info().rss
    # 48 uploads at once: 16 declaring 1 GiB, 16 chunked ones sending 1 MiB (4x the limit) with no length
    # declared, 16 declaring exactly what they send, 1 MiB: ~1 GiB x 16 offered, ~32 MiB actually sent.
    plans = [(1 << 30, 64 * 1024)] * 16 + [(None, 1 << 20)] * 16 + [(1 << 20, 1 << 20)] * 16
    statuses: list[int] = []
    lock = threading.Lock()

    def one(plan):
        status = raw_upload(url, *plan)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one, args=(plan,)) for plan in plans]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(statuses) == len(plans) and set(statuses) == {413}, statuses
    assert time.monotonic() - t0 < 60
    grown = server.memory_info().rss - rss_before
    assert grown < 32 * 1024 * 1024, f"service RSS grew {grown / 2**20:.1f} MiB over a burst of oversized uploads"
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and sorted(health["workers"]) == workers_before  # no worker lost or replaced
    assert client.post("/score", json=MATH).json()["score"] == 1.0
