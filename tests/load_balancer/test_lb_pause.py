"""Pause/resume routing per instance (the trainer's weight sync): paused instances get nothing new, requests wait
for a resume instead of failing, bad bodies and unknown URLs get clear errors."""

import threading
import time

import httpx

from lb_helpers import metric_value

BODY = {"model": "loadgen", "prompt": "x", "max_tokens": 2}


def routed(lb_url: str, url: str) -> float:
    try:
        return metric_value(lb_url, f'lb_routing_decisions_total{{instance="{url}"}}')
    except KeyError:
        return 0.0


def test_paused_instance_gets_no_new_requests(loadgens, balancer):
    a, b = loadgens(2)
    lb = balancer([a.url, b.url])
    r = httpx.post(f"{lb.url}/instances/pause", json={"urls": [a.url + "/"]}, timeout=10)
    assert r.status_code == 200 and r.json() == {"urls": [a.url], "paused": True}
    views = {v["url"]: v for v in httpx.get(f"{lb.url}/instances", timeout=10).json()}
    assert views[a.url]["paused"] and not views[b.url]["paused"]
    for _ in range(6):
        assert httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=30).status_code == 200
    assert routed(lb.url, a.url) == 0 and routed(lb.url, b.url) == 6
    assert httpx.post(f"{lb.url}/instances/resume", json={"urls": [a.url]}, timeout=10).json()["paused"] is False
    for _ in range(12):
        httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=30)
    assert routed(lb.url, a.url) > 0


def test_request_waits_while_everything_is_paused_and_runs_after_resume(loadgens, balancer):
    (a,) = loadgens(1)
    lb = balancer([a.url], no_instance_wait_s=0.2)
    r = httpx.post(f"{lb.url}/instances/pause", timeout=10)  # no body: every instance
    assert r.json() == {"urls": [a.url], "paused": True}
    resumed_at: list[float] = []

    def resume_later() -> None:
        time.sleep(1.0)  # longer than no_instance_wait_s: only the pause keeps the request waiting
        resumed_at.append(time.monotonic())
        httpx.post(f"{lb.url}/instances/resume", json={}, timeout=10)

    thread = threading.Thread(target=resume_later)
    thread.start()
    response = httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=60)
    done = time.monotonic()
    thread.join()
    assert response.status_code == 200, response.text
    assert resumed_at and done >= resumed_at[0]


def test_paused_wait_is_bounded(loadgens, balancer):
    (a,) = loadgens(1)
    lb = balancer([a.url], no_instance_wait_s=0.1, paused_wait_s=0.3)
    httpx.post(f"{lb.url}/instances/pause", json={"urls": None}, timeout=10)
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=30)
    assert r.status_code == 503 and "no healthy instance" in r.json()["error"]["message"]


def test_pause_errors(loadgens, balancer):
    (a,) = loadgens(1)
    lb = balancer([a.url])
    missing = httpx.post(f"{lb.url}/instances/pause", json={"urls": [a.url, "http://10.9.9.9:1"]}, timeout=10)
    assert missing.status_code == 404 and "10.9.9.9" in missing.json()["error"]["message"]
    assert not httpx.get(f"{lb.url}/instances", timeout=10).json()[0]["paused"]  # nothing changed
    for body in ({"urls": ["ftp://x:1"]}, {"urls": "http://h:1"}, {"url": a.url}, [1]):
        r = httpx.post(f"{lb.url}/instances/pause", json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
