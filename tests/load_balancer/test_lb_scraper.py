"""The /metrics scraper: vLLM's numbers reach the registry, a slow instance never blocks routing, failing
instances are ejected and re-admitted once healthy again."""

import concurrent.futures
import threading
import time

import httpx
from lb_helpers import metric_value, sse_chunks

from load_balancer.scraper import parse_vllm_metrics

BODY = {"model": "loadgen", "prompt": "p", "max_tokens": 40, "stream": True}


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_parse_sums_engines_and_reads_the_counter():
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0"} 3.0\nvllm:num_requests_running{engine="1"} 2.0\n'
        "# TYPE vllm:generation_tokens counter\n"
        'vllm:generation_tokens_total{engine="0"} 100.0\nvllm:generation_tokens_created{engine="0"} 17.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.25\n"
    )
    assert parse_vllm_metrics(text) == {"running": 5.0, "gen": 100.0, "kv": 0.25}


def test_scrapes_feed_running_and_rate(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=100)
    lb = balancer([gen.url])
    body = BODY | {"max_tokens": 200}  # 2 s each
    with httpx.Client(timeout=20) as client, concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, f"{lb.url}/v1/completions", json=body) for _ in range(4)]

        def busy():
            (v,) = httpx.get(f"{lb.url}/instances").json()
            return v if v["running"] == 4 and v["tokens_per_s"] > 100 and v["in_flight"] == 4 else None

        view = wait_for(busy, 5, "the scrape to see 4 running requests")
        assert 0 < view["remaining_tokens"] < 800 and view["last_scrape_age_s"] < 1.0
        assert view["drain_s"] is not None and view["drain_s"] > 0
        assert all(len(sse_chunks(f.result().text)) == 200 for f in futures)


def test_a_slow_metrics_endpoint_never_blocks_routing(loadgens, balancer):
    slow, fast = loadgens(2, tokens_per_s=2000)
    # `slow` stays in rotation (no ejection) while each of its scrapes hangs for the whole 30 s timeout: a balancer
    # that waited on a scrape before routing would need ~30 s for the requests below, one that does not, well
    # under a second (the 10 s bound leaves room for a loaded machine).
    lb = balancer([slow.url, fast.url], policy="round_robin", scrape_timeout_s=30.0, eject_after_failures=100)
    httpx.post(f"{slow.url}/control", json={"metrics_delay_s": 60.0})
    wait_for(lambda: slow.url in lb.balancer.scraper._pending, 10, "a scrape of the slow instance to be pending")
    started = time.monotonic()
    for _ in range(6):
        r = httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2}, timeout=30)
        assert len(sse_chunks(r.text)) == 2
    assert time.monotonic() - started < 10.0
    assert len(httpx.get(f"{slow.url}/stats").json()["finished"]) == 3
    time.sleep(1.0)  # four scrape intervals
    views = {v["url"]: v for v in httpx.get(f"{lb.url}/instances").json()}
    # scrapes run per instance: `fast` keeps being scraped while `slow`'s scrape hangs (its last one grows old)
    assert views[fast.url]["last_scrape_age_s"] < views[slow.url]["last_scrape_age_s"]
    assert views[slow.url]["last_scrape_age_s"] > 1.0


def test_an_instance_that_streams_is_not_ejected_for_slow_scrapes(loadgens, balancer):
    """/metrics timing out while the instance's tokens keep arriving is a slow API server, not a dead one: its
    streams stay where they are. Once nothing proves it alive, the same timeouts eject it."""
    (gen,) = loadgens(1, tokens_per_s=100)
    lb = balancer([gen.url], scrape_timeout_s=0.3, eject_after_failures=2, readmit_backoff_s=30.0)
    httpx.post(f"{gen.url}/control", json={"metrics_delay_s": 5.0})
    failures = f'lb_scrape_failures_total{{instance="{gen.url}"}}'
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 300}, timeout=30)  # 3 s of streaming
    assert len(sse_chunks(r.text)) == 300
    assert metric_value(lb.url, "lb_ejections_total") == 0 and metric_value(lb.url, "lb_failovers_total") == 0
    assert metric_value(lb.url, failures) >= 4, "the scrapes did not time out: the scenario did not happen"
    wait_for(lambda: not httpx.get(f"{lb.url}/instances").json()[0]["healthy"], 10, "ejection once idle")


def test_failing_instance_is_ejected_then_readmitted(loadgens, balancer):
    flaky, good = loadgens(2, tokens_per_s=2000)
    lb = balancer([flaky.url, good.url], policy="round_robin", readmit_backoff_s=0.2)
    httpx.post(f"{flaky.url}/control", json={"fail_metrics": True, "fail_health": True})

    def view():
        return next(v for v in httpx.get(f"{lb.url}/instances").json() if v["url"] == flaky.url)

    wait_for(lambda: not view()["healthy"], 10, "ejection")
    for _ in range(4):  # everything goes to the healthy instance meanwhile
        httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2}, timeout=10)
    assert len(httpx.get(f"{flaky.url}/stats").json()["finished"]) == 0
    assert "lb_ejections_total 1.0" in httpx.get(f"{lb.url}/metrics").text
    httpx.post(f"{flaky.url}/control", json={"fail_metrics": False, "fail_health": False})
    wait_for(lambda: view()["healthy"], 10, "re-admission")
    for _ in range(4):
        httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2}, timeout=10)
    assert len(httpx.get(f"{flaky.url}/stats").json()["finished"]) >= 1


def test_with_every_instance_ejected_a_request_waits_for_a_readmission(loadgens, balancer):
    """A loaded host makes slow engines miss timeouts and get ejected; a step must not fail for that."""
    (gen,) = loadgens(1, tokens_per_s=2000)
    lb = balancer([gen.url], readmit_backoff_s=0.2, no_instance_wait_s=15.0)
    httpx.post(f"{gen.url}/control", json={"fail_metrics": True, "fail_health": True})
    wait_for(lambda: not httpx.get(f"{lb.url}/instances").json()[0]["healthy"], 10, "ejection")

    healthy_again = {"fail_metrics": False, "fail_health": False}
    recover = threading.Timer(1.0, httpx.post, args=(f"{gen.url}/control",), kwargs={"json": healthy_again})
    recover.start()
    started = time.monotonic()
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2}, timeout=30)
    recover.join()
    assert r.status_code == 200 and len(sse_chunks(r.text)) == 2
    assert time.monotonic() - started >= 1.0  # it waited for the re-admission rather than failing


def test_with_no_readmission_in_time_the_request_gets_a_503(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=2000)
    lb = balancer([gen.url], readmit_backoff_s=0.2, no_instance_wait_s=0.5)
    httpx.post(f"{gen.url}/control", json={"fail_metrics": True, "fail_health": True})
    wait_for(lambda: not httpx.get(f"{lb.url}/instances").json()[0]["healthy"], 10, "ejection")
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2}, timeout=30)
    assert r.status_code == 503 and "no healthy instance" in r.json()["error"]["message"]


def test_a_hung_instance_is_ejected_and_its_streams_continue_elsewhere(loadgens, balancer):
    """An engine that stops producing tokens (and answering /metrics in time) with a request in flight: after
    ``hung_after_s`` without a token the registry ejects it and its stream continues on the other, token-exact."""
    a, b = loadgens(2, tokens_per_s=100)
    lb = balancer([a.url, b.url], policy="round_robin", scrape_timeout_s=0.3, hung_after_s=1.5,
                  readmit_backoff_s=30.0, migrate=False)  # fmt: skip
    body = BODY | {"max_tokens": 300}  # 3 s of streaming
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(httpx.post, f"{lb.url}/v1/completions", json=body, timeout=60)
        hung = wait_for(lambda: running_on(a, b), 10, "the stream to start")
        httpx.post(f"{hung.url}/control", json={"tokens_per_s": 0.01, "metrics_delay_s": 30.0})
        text = "".join(c["choices"][0]["text"] for c in sse_chunks(future.result().text))
    healthy = b if hung is a else a
    reference = httpx.post(f"{healthy.url}/v1/completions", json=body, timeout=60).text
    assert text == "".join(c["choices"][0]["text"] for c in sse_chunks(reference))
    assert metric_value(lb.url, "lb_ejections_total") == 1 and metric_value(lb.url, "lb_failovers_total") == 1


def test_an_instance_ejected_for_failures_keeps_the_streams_it_is_serving(loadgens, balancer):
    """Failed scrapes eject an instance (nothing new goes there) but move none of its streams while they progress:
    on a loaded host a slow API server fails scrapes yet streams on, and moving every stream re-prefills them."""
    a, b = loadgens(2, tokens_per_s=100)
    lb = balancer([a.url, b.url], policy="round_robin", eject_after_failures=2, readmit_backoff_s=30.0, migrate=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(httpx.post, f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 300}, timeout=60)
        busy = wait_for(lambda: running_on(a, b), 10, "the stream to start")
        httpx.post(f"{busy.url}/control", json={"fail_metrics": True})
        wait_for(lambda: metric_value(lb.url, "lb_ejections_total") == 1, 10, "the ejection")
        assert len(sse_chunks(future.result().text)) == 300
    assert metric_value(lb.url, "lb_failovers_total") == 0
    assert len(httpx.get(f"{busy.url}/stats").json()["finished"]) == 1, "the stream finished where it ran"


def running_on(*gens):
    """The load generator that runs a request now, if any."""
    return next((g for g in gens if httpx.get(f"{g.url}/stats").json()["running"]), None)
