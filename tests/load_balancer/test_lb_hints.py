"""The expected-length hint (``am_rl_expected_tokens``): real HTTP through the balancer app on loopback to a load
generator (a synthetic vLLM-shaped server). Good hints reach the policy and never the engine; bad ones are dropped
and counted, never an error."""

import re

import httpx
import lb_test_policies  # noqa: F401  (registers test_record)
import pytest
from lb_helpers import sse_chunks

from load_balancer.hints import HINT_FIELD, HintOutcome, take_hint

BODY = {"model": "loadgen", "prompt": "hello", "max_tokens": 12, "stream": True}


def hint_counts(lb) -> dict[str, float]:
    text = httpx.get(f"{lb.url}/metrics", timeout=10).text
    return {m[0]: float(m[1]) for m in re.findall(r'lb_length_hints_total\{outcome="(\w+)"\} (\S+)', text)}


def test_hints_reach_the_policy_bad_ones_are_counted_and_none_reach_the_engine(loadgens, balancer):
    (gen,) = loadgens(1, tokens_per_s=5000)
    lb = balancer([gen.url], policy="test_record")
    sent = [8, 3.6, None, -5, 0, 13, "400", True, [4], {"n": 1}, None]  # None in the list: the field is absent
    with httpx.Client(timeout=20) as client:
        for k, hint in enumerate(sent):
            body = BODY | {"prompt": f"p{k}"} | ({} if hint is None else {HINT_FIELD: hint})
            r = client.post(f"{lb.url}/v1/completions", json=body)
            assert r.status_code == 200, (hint, r.text)
            assert len(sse_chunks(r.text)) == 12
        r = client.post(f"{lb.url}/v1/chat/completions", json={
            "model": "loadgen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, HINT_FIELD: 7})
        assert r.status_code == 200, r.text
        r = client.post(f"{lb.url}/inference/v1/generate", json={
            "model": "loadgen", "token_ids": [5, 6], "sampling_params": {"max_tokens": 6}, HINT_FIELD: 9})
        assert r.status_code == 200, r.text  # 9 > the sampling_params' max_tokens: ignored
    seen = [info.expected_tokens for info in lb.balancer.policy.seen]
    assert seen == [8, 4, None, None, None, None, None, None, None, None, None, 7, None]
    upstream = httpx.get(f"{gen.url}/stats", timeout=10).json()["requests"]
    assert len(upstream) == len(sent) + 2 and not any(HINT_FIELD in b for b in upstream)
    assert hint_counts(lb) == {"accepted": 3.0, "not_positive": 2.0, "over_max_tokens": 2.0, "not_a_number": 4.0}


def test_a_moved_request_keeps_its_hint(loadgens, balancer):
    a, b = loadgens(2, tokens_per_s=200)
    lb = balancer([a.url, b.url], policy="test_record", policy_options={"after": 5}, migration_interval_s=0.05)
    r = httpx.post(f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 40, HINT_FIELD: 30}, timeout=30)
    assert r.status_code == 200 and len(sse_chunks(r.text)) == 40
    routed = lb.balancer.policy.routed
    assert [url for _, url in routed] == [a.url, b.url]  # placed on a, then moved to b
    assert [(info.expected_tokens, info.generated_tokens >= 5) for info, _ in routed] == [(30, False), (30, True)]
    continued = httpx.get(f"{b.url}/stats", timeout=10).json()["requests"]
    assert len(continued) == 1 and HINT_FIELD not in continued[0]


@pytest.mark.parametrize(
    ("value", "cap", "expected"),
    [
        (100, 200, (100, HintOutcome.ACCEPTED)),
        (200, 200, (200, HintOutcome.ACCEPTED)),
        (99.6, None, (100, HintOutcome.ACCEPTED)),  # no cap on the request: any positive number
        (201, 200, (None, HintOutcome.OVER_MAX_TOKENS)),
        (-1, 200, (None, HintOutcome.NOT_POSITIVE)),
        (0.4, 200, (None, HintOutcome.NOT_POSITIVE)),
        ("100", 200, (None, HintOutcome.NOT_A_NUMBER)),
        (False, 200, (None, HintOutcome.NOT_A_NUMBER)),
        (None, 200, (None, HintOutcome.NOT_A_NUMBER)),  # present but null
        (float("inf"), None, (None, HintOutcome.NOT_A_NUMBER)),
    ],
)
def test_take_hint_removes_the_field_and_judges_it(value, cap, expected):
    body = {"prompt": "x", HINT_FIELD: value}
    assert take_hint(body, cap) == expected
    assert body == {"prompt": "x"}


def test_no_field_no_outcome():
    body = {"prompt": "x"}
    assert take_hint(body, 10) == (None, None) and body == {"prompt": "x"}
