"""Trainer side against a real reward service: batch client, routing, the scorer, verl's am_remote loop manager."""

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
from reward_server.launcher import free_port, reward_service

CODE_TRUTH = {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "2 3", "output": "5"}]}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    log = tmp_path_factory.mktemp("rs") / "server.log"
    with reward_service(log, settings={"code_test_timeout_s": 3.0}, extra_args=("--max-body-mb", "1")) as (url, _):
        yield url


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
    client = RewardClient(RewardClientConfig(url=service, chunk_size=7, max_concurrency=3))
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


async def test_rejected_batch_is_a_request_error_without_retries(service):
    client = RewardClient(RewardClientConfig(url=service, retries=3, backoff_s=5.0))
    t0 = time.monotonic()
    with pytest.raises(RewardRequestError, match="413"):
        await client.score_batch([{"reward_type": "math", "response": "x" * 2_000_000, "ground_truth": "1"}])
    assert time.monotonic() - t0 < 5


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
