"""Trainer side against a real reward service (with an API key, as on a cluster): batch client, routing, the
scorer, verl's am_remote loop manager, and samples over the service's input limits scored 0 instead of failing."""

import asyncio
import json
import time

import numpy as np
import pytest
import torch
from verl import DataProto

from am_rl.models.tiny import TinyModelSpec, train_tokenizer
from am_rl.rewards import (
    RewardClient,
    RewardClientConfig,
    RewardRequestError,
    RewardRouter,
    RewardScorer,
    RewardServiceError,
)
from reward_server.auth import API_KEY_ENV
from reward_server.launcher import free_port, reward_service

CODE_TRUTH = {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "2 3", "output": "5"}]}
KEY = "trainer-side-test-key"
# A body limit below the response limit, so one item can be too large for a request body by itself.
LIMITS = {"max_body_bytes": 1 << 20, "max_response_bytes": 4 << 20}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    log = tmp_path_factory.mktemp("rs") / "server.log"
    with reward_service(log, settings={"code_test_timeout_s": 3.0}, limits=LIMITS, api_key=KEY) as (url, _):
        yield url


@pytest.fixture(autouse=True)
def api_key_in_env(monkeypatch):
    """The key where the trainer's reward workers find it (RewardScorer reads it; RewardClient is given it)."""
    monkeypatch.setenv(API_KEY_ENV, KEY)


async def test_client_scores_a_mixed_batch_in_order(service):
    items = []
    for i in range(30):
        items.append({"reward_type": "math", "response": rf"\boxed{{{i}}}", "ground_truth": str(i if i % 2 else -1)})
    items.append(
        {
            "reward_type": "code",
            "response": "```python\nprint(sum(map(int, input().split())))\n```",
            "ground_truth": CODE_TRUTH,
        }
    )
    client = RewardClient(RewardClientConfig(url=service, chunk_size=7, max_concurrency=3, api_key=KEY))
    results = await client.score_batch(items)
    assert [r.score for r in results] == [float(i % 2) for i in range(30)] + [1.0]
    assert client.requests_sent == 5  # 31 items in chunks of 7, none retried


async def test_service_down_is_a_clear_error_in_bounded_time():
    port = free_port()
    client = RewardClient(RewardClientConfig(url=f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05))
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match=f"127.0.0.1:{port}.*ConnectError"):
        await client.score_batch([{"reward_type": "math", "response": "x", "ground_truth": "1"}])
    assert time.monotonic() - t0 < 10 and client.requests_sent == 3


async def test_wrong_or_missing_key_is_a_request_error_without_retries(service):
    for key in ("wrong", None):
        client = RewardClient(RewardClientConfig(url=service, retries=3, backoff_s=5.0, api_key=key))
        t0 = time.monotonic()
        with pytest.raises(RewardRequestError, match="refused our API key"):
            await client.score_batch([{"reward_type": "math", "response": r"\boxed{1}", "ground_truth": "1"}])
        assert time.monotonic() - t0 < 5 and client.requests_sent == 1
    assert KEY not in repr(RewardClientConfig(api_key=KEY))  # configs get printed


async def test_samples_over_the_limits_score_zero_and_the_rest_are_scored(service):
    """One ground truth over its limit (rejected in the batch), one item too large for a request body by itself (413
    alone, found by halving), and a chunk whose items fit one by one but not together (halved until they do)."""
    ok = [{"reward_type": "math", "response": rf"\boxed{{{i}}}", "ground_truth": "2"} for i in range(4)]
    over_limit = {"reward_type": "math", "response": r"\boxed{1}", "ground_truth": "1" * 70_000}
    over_body = {"reward_type": "math", "response": "y" * (1 << 20) + r"\boxed{1}", "ground_truth": "1"}
    fits_alone = [
        {"reward_type": "math", "response": "z" * 400_000 + rf"\boxed{{{i}}}", "ground_truth": "1"} for i in range(3)
    ]
    items = ok[:2] + [over_body] + ok[2:] + fits_alone + [over_limit]
    client = RewardClient(RewardClientConfig(url=service, chunk_size=16, api_key=KEY))
    results = await client.score_batch(items)
    assert [r.status for r in results] == ["ok", "ok", "rejected"] + ["ok"] * 5 + ["rejected"]
    assert [r.score for r in results] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert results[2].details["field"] == "body" and str(1 << 20) in results[2].error
    assert results[8].details == {"field": "ground_truth", "limit": 65536, "actual": 70_000, "unit": "bytes"}
    assert client.rejected == {"body": 1, "ground_truth": 1}
    assert client.requests_sent > 1  # the chunk was halved (a request of 1.2 MB does not fit 1 MiB)


async def test_a_service_the_trainer_starts_has_a_key_of_its_own(tmp_path, monkeypatch):
    import os

    import httpx
    from omegaconf import OmegaConf

    from am_rl.trainer.services import started_reward_service

    monkeypatch.delenv(API_KEY_ENV)
    trainer = {"nnodes": 1, "default_local_dir": str(tmp_path)}
    cfg = OmegaConf.create({"trainer": trainer, "am_rl": {"reward": {"workers": 1}}})
    item = {"reward_type": "math", "response": r"\boxed{9}", "ground_truth": "9"}
    with started_reward_service(cfg) as url:
        key = os.environ[API_KEY_ENV]  # where the scorer, and Ray's processes started from here, find it
        assert len(key) >= 32 and httpx.post(f"{url}/score", json=item, timeout=30).status_code == 401
        assert [r.score for r in await RewardScorer(url).score([item])] == [1.0]
    assert API_KEY_ENV not in os.environ
    assert key not in (tmp_path / "logs" / "reward_service.log").read_text()


async def test_client_retries_until_the_service_comes_up(tmp_path):
    port = free_port()
    client = RewardClient(
        RewardClientConfig(url=f"http://127.0.0.1:{port}", retries=12, backoff_s=0.5, backoff_max_s=4)
    )
    item = {"reward_type": "math", "response": r"\boxed{9}", "ground_truth": "9"}
    call = asyncio.create_task(client.score_batch([item]))
    await asyncio.sleep(1.0)
    assert not call.done()  # nothing is listening yet: the client is backing off
    with reward_service(tmp_path / "late.log", port=port, workers=1):
        results = await asyncio.wait_for(call, timeout=60)
    assert results[0].score == 1.0


def test_router_table():
    router = RewardRouter()
    assert router.reward_type("openai/gsm8k") == "math"
    assert router.reward_type("livecodebench_v5") == "code"
    assert router.reward_type("google/IFEval") == "ifeval"
    with pytest.raises(ValueError, match="no reward type for data_source 'weather'"):
        router.reward_type("weather")
    assert RewardRouter({"weather": "rm"}).reward_type("weather") == "rm"
    with pytest.raises(ValueError, match="unknown reward types"):
        RewardRouter({"x": "vibes"})
    item = router.item("code_contests", "```python\n```", json.dumps(CODE_TRUTH), {"prompt": np.array(["hi"])})
    assert item["ground_truth"] == CODE_TRUTH and item["prompt"] == '["hi"]'


async def test_scorer_routes_and_scores_with_url_and_table_from_the_environment(service, monkeypatch):
    monkeypatch.setenv("AM_RL_REWARD_URL", service)  # what Ray's runtime_env gives every reward worker
    monkeypatch.setenv("AM_RL_REWARD_TABLE", json.dumps({"arith*": "math", "cc*": "code"}))
    scorer = RewardScorer()
    items = [
        scorer.item("arith_v1", r"<think>2+2</think>\boxed{4}", "4", {"split": "train"}),
        scorer.item("arith_v1", r"\boxed{5}", "4"),
        scorer.item("cc", "```python\nprint(6)\n```", json.dumps(CODE_TRUTH)),
    ]
    assert [r.score for r in await scorer.score(items)] == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="no reward type for data_source 'openai/gsm8k'"):
        scorer.item("openai/gsm8k", "x", "1")  # the environment's table replaces the default one
    given = RewardScorer("http://127.0.0.1:9", {"x*": "rm"}, retries=0)
    assert given.client.config.url == "http://127.0.0.1:9" and given.client.config.retries == 0
    assert given.router.table == {"x*": "rm"}


def verl_batch(tokenizer, texts):
    """A DataProto as verl's rollout hands it to reward managers."""
    prompt_len, resp_len = 4, 32
    prompts = torch.ones(len(texts), prompt_len, dtype=torch.long)
    responses = torch.full((len(texts), resp_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(texts), prompt_len + resp_len, dtype=torch.long)
    mask[:, :prompt_len] = 1
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:resp_len]
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, prompt_len : prompt_len + len(ids)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["math_dapo", "math_dapo", "codecontests"], dtype=object),
            "reward_model": np.array(
                [{"ground_truth": "12"}, {"ground_truth": "12"}, {"ground_truth": json.dumps(CODE_TRUTH)}], dtype=object
            ),
        },
    )


TEXTS = [r"so \boxed{12}", r"so \boxed{13}", "```python\nprint(5)\n```"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TinyModelSpec(corpus_size=200))


def loop_manager(tokenizer, **options):
    """The reward-loop manager as verl's reward loop builds it, options under `reward.am_remote`."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    return get_reward_manager_cls("am_remote")(OmegaConf.create({"reward": {"am_remote": options}}), tokenizer)


async def run_step(manager, data):
    """Every sample of a step through run_single at once, as verl's reward loop calls it; errors returned."""
    samples = (manager.run_single(data[i : i + 1]) for i in range(len(data)))
    return await asyncio.gather(*samples, return_exceptions=True)


async def test_reward_loop_manager_coalesces_a_step_into_one_batch(service, tokenizer):
    data = verl_batch(tokenizer, TEXTS)
    manager = loop_manager(tokenizer, url=service, chunk_size=64)
    outputs = await run_step(manager, data)
    assert not [o for o in outputs if isinstance(o, BaseException)], outputs
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 1.0]  # print(5) is CODE_TRUTH's answer to "2 3"
    assert [o["reward_extra_info"]["acc"] for o in outputs] == [1.0, 0.0, 1.0]
    assert [o["reward_extra_info"]["reward_rejected"] for o in outputs] == [0.0, 0.0, 0.0]
    assert manager.coalescer.batches_sent == 1 and manager.scorer.client.requests_sent == 1
    await run_step(manager, data)  # the next step is a batch of its own
    assert manager.coalescer.batches_sent == 2


async def test_reward_loop_manager_error_reaches_every_waiting_sample(tokenizer):
    data = verl_batch(tokenizer, TEXTS)
    port = free_port()
    manager = loop_manager(tokenizer, url=f"http://127.0.0.1:{port}", retries=1, backoff_s=0.05)
    outputs = await run_step(manager, data)
    assert all(isinstance(o, RewardServiceError) and f"127.0.0.1:{port}" in str(o) for o in outputs), outputs
    assert manager.coalescer.batches_sent == 1 and manager.scorer.client.requests_sent == 2
