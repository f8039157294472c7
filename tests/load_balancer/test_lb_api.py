"""Registry endpoints, API-key auth, malformed and oversized bodies, /healthz and /metrics; settings refused at
startup."""

import httpx
import pytest

KEY = "s3cret"


def test_register_list_deregister(loadgens, balancer):
    a, b = loadgens(2)
    lb = balancer([a.url])
    r = httpx.post(f"{lb.url}/instances", json={"url": b.url + "/"}, timeout=10)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["url"] == b.url and view["healthy"] and view["last_scrape_age_s"] is not None
    listed = {v["url"]: v for v in httpx.get(f"{lb.url}/instances", timeout=10).json()}
    assert set(listed) == {a.url, b.url}
    for field in ("in_flight", "waiting", "remaining_tokens", "tokens_per_s", "kv_cache_usage", "last_scrape_age_s"):
        assert field in listed[a.url]
    assert httpx.request("DELETE", f"{lb.url}/instances", json={"url": a.url}, timeout=10).json()["removed"]
    assert [v["url"] for v in httpx.get(f"{lb.url}/instances", timeout=10).json()] == [b.url]
    missing = httpx.request("DELETE", f"{lb.url}/instances", json={"url": a.url}, timeout=10)
    assert missing.status_code == 404 and "not registered" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    "body", [{"url": "ftp://x:1"}, {"url": "http://h:1/v1"}, {"url": 5}, {}, {"url": "http://h:1", "x": 1}, [1]]
)
def test_bad_registration_is_400(balancer, body):
    lb = balancer([])
    r = httpx.post(f"{lb.url}/instances", json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"


def test_api_key_guards_everything_but_healthz(loadgens, balancer):
    (gen,) = loadgens(1)
    lb = balancer([gen.url], api_key=KEY)
    calls = [
        ("POST", "/instances", {"url": gen.url}),
        ("DELETE", "/instances", {"url": gen.url}),
        ("GET", "/instances", None),
        ("POST", "/v1/completions", {"model": "loadgen", "prompt": "x", "max_tokens": 2}),
        ("POST", "/v1/chat/completions", {"model": "loadgen", "messages": [], "max_tokens": 2}),
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
        ("GET", "/dashboard", None),
        ("GET", "/dashboard/data", None),
    ]
    for method, path, body in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.request(method, lb.url + path, json=body, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["error"]["type"] == "AuthenticationError"
    assert httpx.get(f"{lb.url}/healthz", timeout=10).status_code == 200
    ok = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{lb.url}/instances", headers=ok, timeout=10).status_code == 200
    assert httpx.get(f"{lb.url}/instances", headers={"X-API-Key": KEY}, timeout=10).status_code == 200
    assert httpx.get(f"{lb.url}/dashboard/data?api_key={KEY}", timeout=10).status_code == 200
    r = httpx.post(f"{lb.url}/v1/completions", json=calls[3][2], headers=ok, timeout=10)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"model": "loadgen", "prompt": "x", "stream": "yes"}', 400, "stream"),
        (b'{"model": "loadgen", "prompt": "x", "max_tokens": -1}', 400, "max_tokens"),
        (b'{"model": "loadgen", "prompt": {"a": 1}}', 400, "prompt"),
        (b'{"model": "loadgen"}', 400, "prompt is required"),
        (b"\xff\xfe", 400, "not valid JSON"),
    ],
)
def test_malformed_bodies_get_a_json_4xx(loadgens, balancer, raw, status, message):
    (gen,) = loadgens(1)
    lb = balancer([gen.url])
    r = httpx.post(f"{lb.url}/v1/completions", content=raw, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == status and message in r.json()["error"]["message"], r.text
    assert httpx.get(f"{lb.url}/healthz", timeout=10).json()["healthy_instances"] == 1


def test_oversized_body_is_413_with_or_without_content_length(loadgens, balancer):
    (gen,) = loadgens(1)
    lb = balancer([gen.url], max_body_bytes=1000)
    big = b'{"model": "loadgen", "prompt": "' + b"x" * 5000 + b'"}'
    r = httpx.post(f"{lb.url}/v1/completions", content=big, timeout=10)
    assert r.status_code == 413 and r.json()["error"]["type"] == "RequestTooLargeError"

    def chunked():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = httpx.post(f"{lb.url}/v1/completions", content=chunked(), timeout=10)
    assert r.status_code == 413
    assert httpx.get(f"{lb.url}/healthz", timeout=10).status_code == 200


def test_unknown_policy_is_refused(balancer):
    with pytest.raises(ValueError, match="unknown routing policy"):
        balancer([], policy="nope")


def test_migration_has_one_switch_and_its_interval_must_be_positive(capsys):
    from load_balancer.__main__ import parse_args
    from load_balancer.config import BalancerConfig

    assert parse_args([])[0].migrate is True and parse_args(["--no-migrate"])[0].migrate is False
    with pytest.raises(ValueError, match=r"migration_interval_s must be > 0, got 0.*migrate=False \(--no-migrate\)"):
        BalancerConfig(migration_interval_s=0)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--migration-interval", "0"])
    assert exited.value.code == 2 and "migration_interval_s must be > 0" in capsys.readouterr().err
