"""Trainer side against a real reward service: batch client, verl compute_score, the am_remote manager."""

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.workers.reward_manager import get_reward_manager_cls

import am_rl.rewards as rewards
from am_rl.models.tiny import TinyModelSpec, train_tokenizer
from am_rl.rewards import (
    RewardClient,
    RewardClientConfig,
    RewardRequestError,
    RewardRouter,
    RewardServiceError,
    compute_score,
    compute_score_batch,
)
from reward_server.launcher import free_port, reward_service

CODE_TRUTH = {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "2 3", "output": "5"}]}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    log = tmp_path_factory.mktemp("rs") / "server.log"
    with reward_service(log, settings={"code_test_timeout_s": 3.0}, extra_args=("--max-body-mb", "1")) as (url, _):
        yield url


def test_client_scores_a_mixed_batch_in_order(service):
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
    results = client.score_batch_sync(items)
    assert [r.score for r in results] == [float(i % 2) for i in range(30)] + [1.0]


async def test_client_works_inside_a_running_loop(service):
    client = RewardClient(RewardClientConfig(url=service))
    item = {"reward_type": "math", "response": r"\boxed{4}", "ground_truth": "4"}
    assert client.score_batch_sync([item])[0].score == 1.0
    assert (await client.score_batch([item]))[0].score == 1.0


def test_service_down_is_a_clear_error_in_bounded_time():
    port = free_port()
    client = RewardClient(RewardClientConfig(url=f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05))
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match=f"127.0.0.1:{port}.*ConnectError"):
        client.score_batch_sync([{"reward_type": "math", "response": "x", "ground_truth": "1"}])
    assert time.monotonic() - t0 < 10


def test_rejected_batch_is_a_request_error_without_retries(service):
    client = RewardClient(RewardClientConfig(url=service, retries=3, backoff_s=5.0))
    t0 = time.monotonic()
    with pytest.raises(RewardRequestError, match="413"):
        client.score_batch_sync([{"reward_type": "math", "response": "x" * 2_000_000, "ground_truth": "1"}])
    assert time.monotonic() - t0 < 5


def test_client_retries_until_the_service_comes_up(tmp_path):
    port = free_port()
    client = RewardClient(
        RewardClientConfig(url=f"http://127.0.0.1:{port}", retries=12, backoff_s=0.5, backoff_max_s=4)
    )
    out: dict = {}

    def call():
        try:
            out["results"] = client.score_batch_sync(
                [{"reward_type": "math", "response": r"\boxed{9}", "ground_truth": "9"}]
            )
        except Exception as e:
            out["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive()  # nothing is listening yet: the client is backing off
    with reward_service(tmp_path / "late.log", port=port, workers=1):
        thread.join(timeout=60)
    assert not thread.is_alive() and "error" not in out, out
    assert out["results"][0].score == 1.0


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


def test_compute_score_verl_signature(service, monkeypatch):
    monkeypatch.setattr("am_rl.rewards.scoring._state", {})
    rewards.configure(url=service, table={"arith*": "math", "cc*": "code"})
    out = compute_score("arith_v1", r"<think>2+2</think>\boxed{4}", "4", extra_info={"split": "train"})
    assert out["score"] == 1.0 and out["reward_type"] == "math"
    batch = compute_score_batch(["arith_v1", "cc"], [r"\boxed{5}", "```python\nprint(6)\n```"], ["4", CODE_TRUTH])
    assert [b["score"] for b in batch] == [0.0, 0.0]


def verl_batch(tokenizer, texts):
    """A DataProto as verl's rollout hands it to reward managers; returns it and each response's length."""
    prompt_len, resp_len = 4, 32
    prompts = torch.ones(len(texts), prompt_len, dtype=torch.long)
    responses = torch.full((len(texts), resp_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(texts), prompt_len + resp_len, dtype=torch.long)
    mask[:, :prompt_len] = 1
    lengths = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:resp_len]
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, prompt_len : prompt_len + len(ids)] = 1
        lengths.append(len(ids))
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["math_dapo", "math_dapo", "codecontests"], dtype=object),
            "reward_model": np.array(
                [{"ground_truth": "12"}, {"ground_truth": "12"}, {"ground_truth": json.dumps(CODE_TRUTH)}], dtype=object
            ),
        },
    ), lengths


TEXTS = [r"so \boxed{12}", r"so \boxed{13}", "```python\nprint(5)\n```"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TinyModelSpec(corpus_size=200))


def test_am_remote_manager_scores_a_verl_batch(service, tokenizer):
    data, lengths = verl_batch(tokenizer, TEXTS)
    responses = data.batch["responses"]
    manager = get_reward_manager_cls("am_remote")(tokenizer, num_examine=1, service_url=service)
    out = manager(data, return_dict=True)
    rewards_t = out["reward_tensor"]
    assert rewards_t.shape == responses.shape
    assert rewards_t[0, lengths[0] - 1] == 1.0 and rewards_t[1, lengths[1] - 1] == 0.0
    assert rewards_t[2, lengths[2] - 1] == 1.0  # CODE_TRUTH's single test has input "2 3" but print(5) is its answer
    assert rewards_t.sum() == 2.0 and out["reward_extra_info"]["acc"] == [1.0, 0.0, 1.0]


async def test_reward_loop_manager_coalesces_a_step_into_one_batch(service, tokenizer):
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls as get_loop_manager_cls

    data, _ = verl_batch(tokenizer, TEXTS)
    config = OmegaConf.create({"reward": {"am_remote": {"url": service, "chunk_size": 64}}})
    manager = get_loop_manager_cls("am_remote")(config, tokenizer)
    outputs = await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data))))
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 1.0]
    assert manager.coalescer.batches_sent == 1
