"""The result cache: keyed by everything that decides a verdict, and holding only verdicts about the response
(never our errors, hard-killed verifiers or wall-clock kills, which an overloaded machine can cause)."""

import threading
import time
import uuid

import pytest
import redis

from reward_server import keys
from reward_server.config import WorkerSettings
from reward_server.embedded_redis import EmbeddedRedis
from reward_server.executor import Executor
from reward_server.types import CodeItem, IFEvalItem, Job, JobReply, MathItem, RMItem, ScoreResult
from reward_server.verifiers import build_verifiers
from reward_server.verifiers import math as math_verifier
from reward_server.worker import Worker, should_cache


def code_item(code: str, output: str = "1") -> CodeItem:
    truth = {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "", "output": output}]}
    response = f"```python\n{code}\n```"
    return CodeItem.model_validate({"reward_type": "code", "response": response, "ground_truth": truth})


ITEMS = {
    "math": MathItem(reward_type="math", response=r"\boxed{2}", ground_truth="2"),
    "code": code_item("print(1)"),
    "ifeval": IFEvalItem.model_validate(
        {
            "reward_type": "ifeval",
            "response": "hello",
            "prompt": "say hello",
            "ground_truth": {"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
        }
    ),
    "rm": RMItem(reward_type="rm", response="hi", prompt="greet me"),
}
CHANGED = {"rm_backend": "http", "rm_url": "http://127.0.0.1:1/score", "rm_api": "openai", "rm_model": "judge-2"}


def changed(settings: WorkerSettings, field: str) -> WorkerSettings:
    value = getattr(settings, field)
    new = CHANGED.get(field, value + 1 if isinstance(value, (int, float)) else None)
    assert new is not None and new != value, field
    return settings.model_copy(update={field: new})


def test_every_worker_setting_is_classified_once():
    verdict = [name for names in keys.VERDICT_SETTINGS.values() for name in names]
    assert set(keys.VERDICT_SETTINGS) == set(keys.VERIFIER_VERSIONS) == set(ITEMS)
    assert not set(verdict) & set(keys.NOT_VERDICT_SETTINGS)
    assert set(verdict) | set(keys.NOT_VERDICT_SETTINGS) == set(WorkerSettings.model_fields)


@pytest.mark.parametrize("field", sorted({f for names in keys.VERDICT_SETTINGS.values() for f in names}))
def test_a_verdict_setting_changes_the_keys_of_its_types_only(field):
    base = WorkerSettings()
    other = changed(base, field)
    for reward_type, item in ITEMS.items():
        differs = keys.cache(item, base) != keys.cache(item, other)
        assert differs == (field in keys.VERDICT_SETTINGS[reward_type]), (reward_type, field)


@pytest.mark.parametrize("field", keys.NOT_VERDICT_SETTINGS)
def test_plumbing_settings_leave_every_key_alone(field):
    base = WorkerSettings()
    other = changed(base, field)
    assert all(keys.cache(item, base) == keys.cache(item, other) for item in ITEMS.values())


def test_bumping_a_verifier_version_changes_only_that_types_keys(monkeypatch):
    settings = WorkerSettings()
    before = {t: keys.cache(item, settings) for t, item in ITEMS.items()}
    monkeypatch.setitem(keys.VERIFIER_VERSIONS, "code", keys.VERIFIER_VERSIONS["code"] + "-next")
    after = {t: keys.cache(item, settings) for t, item in ITEMS.items()}
    assert [t for t in ITEMS if before[t] != after[t]] == ["code"]


def test_key_still_separates_response_and_reference():
    settings, item = WorkerSettings(), ITEMS["math"]
    assert keys.cache(item, settings) != keys.cache(item.model_copy(update={"response": r"\boxed{3}"}), settings)
    assert keys.cache(item, settings) != keys.cache(item.model_copy(update={"ground_truth": "3"}), settings)
    assert keys.cache(item, settings) != keys.cache(item.model_copy(update={"prompt": "p"}), settings)


@pytest.mark.parametrize(
    "result, cache",
    [
        (ScoreResult(status="ok", score=1.0), True),
        (ScoreResult(status="ok", score=0.0), True),
        (ScoreResult(status="ok", score=0.0, cacheable=False), False),
        (ScoreResult(status="ok", score=1.0, cached=True), False),
        (ScoreResult(status="timeout", score=0.0), False),
        (ScoreResult(status="error", score=None, error="verifier process died"), False),
    ],
)
def test_only_verdicts_about_the_response_are_cached(result, cache):
    assert should_cache(result) is cache


@pytest.fixture(scope="module")
def redis_url():
    with EmbeddedRedis() as server:
        yield server.url


def score_through_a_worker(redis_url: str, settings: WorkerSettings, item, hard_timeout_s: float | None = None):
    """One job through a real worker (real executor, sandbox and Redis); returns (result, cached in Redis?)."""
    worker = Worker(redis_url, settings)
    if hard_timeout_s is not None:  # the executor's backstop fires before the verifier's own limits
        worker.executor.close()
        verifiers = build_verifiers(settings)
        verifiers[item.reward_type].hard_timeout_s = lambda _item: hard_timeout_s
        worker.executor = Executor(verifiers)
    client = redis.Redis.from_url(redis_url)
    request_id = uuid.uuid4().hex
    job = Job(id=f"{request_id}-0", reply_to=keys.reply(request_id), item=item, enqueued_at=time.time())
    client.rpush(keys.JOBS, job.model_dump_json())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        popped = client.blpop([job.reply_to], timeout=60)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert popped is not None, "no reply from the worker"
    result = JobReply.model_validate_json(popped[1]).result
    return result, bool(client.exists(keys.cache(item, settings)))


def test_a_verdict_is_cached_under_the_workers_own_settings(redis_url):
    settings = WorkerSettings(code_test_timeout_s=2.0)
    item = code_item(f"print(1)  # {uuid.uuid4().hex}")
    result, cached = score_through_a_worker(redis_url, settings, item)
    assert result.status == "ok" and result.score == 1.0 and cached
    assert not redis.Redis.from_url(redis_url).exists(keys.cache(item, WorkerSettings()))


def test_a_wall_clock_kill_is_returned_but_not_cached(redis_url):
    settings = WorkerSettings(code_test_timeout_s=1.0)
    item = code_item(f"import time\ntime.sleep(30)  # {uuid.uuid4().hex}")
    result, cached = score_through_a_worker(redis_url, settings, item)
    assert result.status == "ok" and result.score == 0.0 and result.details["reason"] == "wall_timeout"
    assert result.cacheable is False and not cached


def test_a_hard_killed_verifier_is_not_cached(redis_url):
    settings = WorkerSettings(code_test_timeout_s=30.0)
    item = code_item(f"import time\ntime.sleep(60)  # {uuid.uuid4().hex}")
    result, cached = score_through_a_worker(redis_url, settings, item, hard_timeout_s=1.0)
    assert result.status == "timeout" and not cached


def test_an_infra_error_is_not_cached(redis_url):
    settings = WorkerSettings(code_tmpfs_mb=0)  # bwrap refuses this sandbox: our failure, not the program's
    result, cached = score_through_a_worker(redis_url, settings, code_item(f"print(1)  # {uuid.uuid4().hex}"))
    assert result.status == "error" and result.score is None and not cached


def test_a_math_verification_as_long_as_math_verifys_own_timeout_is_not_cacheable(monkeypatch):
    """Math-Verify swallows its own timeouts; any verification lasting one of them may have been cut short by a
    busy machine. With the timeout at zero every verification lasts that long."""
    verifier = math_verifier.MathVerifier(WorkerSettings())
    assert verifier.verify(ITEMS["math"]).cacheable
    monkeypatch.setattr(math_verifier, "_MV_TIMEOUT_S", 0)
    verdict = verifier.verify(ITEMS["math"])
    assert verdict.score == 1.0 and not verdict.cacheable
