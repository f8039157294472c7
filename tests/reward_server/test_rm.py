"""Reward-model scoring: a tiny local 3-label classifier built here, and HTTP judges served on loopback."""

import json
import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from reward_server.config import WorkerSettings
from reward_server.launcher import free_port, reward_service
from reward_server.types import RMItem
from reward_server.verifiers import InfraError
from reward_server.verifiers.rm import RMVerifier


def test_local_hf_backend_scores_mean_of_three_heads(tiny_rm):
    path, model, tokenizer = tiny_rm
    verifier = RMVerifier(WorkerSettings(rm_backend="hf", rm_model=str(path)))
    item = RMItem(reward_type="rm", prompt="What is 2+3?", response="<think>add</think>2+3=5", ground_truth=None)
    verdict = verifier.verify(item)
    with torch.inference_mode():
        enc = tokenizer("What is 2+3?", "2+3=5", return_tensors="pt")
        logits = model(**enc).logits[0]  # (3,)
    assert [verdict.details[k] for k in ("helpfulness", "correctness", "coherence")] == pytest.approx(
        logits.tolist(), abs=1e-5
    )
    assert verdict.score == pytest.approx(logits.mean().item(), abs=1e-5)
    other = verifier.verify(item.model_copy(update={"response": "something else entirely"}))
    assert other.score != verdict.score


def test_missing_model_is_an_infra_error(tmp_path):
    with pytest.raises(InfraError, match="cannot load reward model"):
        RMVerifier(WorkerSettings(rm_backend="hf", rm_model=str(tmp_path / "nope"))).verify(
            RMItem(reward_type="rm", prompt="p", response="r")
        )
    with pytest.raises(InfraError, match="no reward-model backend"):
        RMVerifier(WorkerSettings()).verify(RMItem(reward_type="rm", prompt="p", response="r"))


def judge_app() -> FastAPI:
    app = FastAPI()

    @app.post("/scores")
    async def scores(body: dict):
        response = body["response"]
        if response == "crash":
            return {"helpfulness": "not a number"}
        return {
            "helpfulness": len(response) % 5,
            "correctness": 1.0 if body["reference"] == response else 0.0,
            "coherence": 2.0,
        }

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        text = body["messages"][0]["content"]
        grade = 9 if "[Response]\nexcellent" in text else 3
        content = "Sure: " + json.dumps({"helpfulness": grade, "correctness": grade, "coherence": 6})
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    return app


@pytest.fixture(scope="module")
def judge():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(judge_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_openai_judge_backend(judge):
    verifier = RMVerifier(WorkerSettings(rm_backend="http", rm_api="openai", rm_url=judge + "/v1/chat/completions"))
    good = verifier.verify(RMItem(reward_type="rm", prompt="Say something", response="excellent"))
    bad = verifier.verify(RMItem(reward_type="rm", prompt="Say something", response="meh"))
    assert good.score == pytest.approx((0.9 + 0.9 + 0.6) / 3) and bad.score == pytest.approx((0.3 + 0.3 + 0.6) / 3)


def test_http_scores_backend_through_the_service(judge, tmp_path):
    settings = {"rm_backend": "http", "rm_api": "scores", "rm_url": judge + "/scores", "rm_timeout_s": 5.0}
    with reward_service(tmp_path / "server.log", workers=1, settings=settings) as (url, _):
        item = {"reward_type": "rm", "prompt": "Name a colour", "response": "blue", "ground_truth": "blue"}
        r = httpx.post(url + "/score", json=item, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["score"] == pytest.approx((4 + 1.0 + 2.0) / 3)
        assert r.json()["details"]["helpfulness"] == 4
        broken = httpx.post(url + "/score", json={**item, "response": "crash"}, timeout=60)
        assert broken.status_code == 503 and "reward model endpoint" in broken.json()["error"]
        batch = httpx.post(
            url + "/score_batch", json={"items": [item, {**item, "response": "crash"}]}, timeout=60
        ).json()
        assert batch["results"][0]["status"] == "ok" and batch["results"][1]["status"] == "error"
        assert batch["results"][1]["score"] is None
        missing_prompt = httpx.post(url + "/score", json={k: v for k, v in item.items() if k != "prompt"}, timeout=30)
        assert missing_prompt.status_code == 422


def test_judge_down_is_an_infra_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verifier = RMVerifier(WorkerSettings(rm_backend="http", rm_url=f"http://127.0.0.1:{port}/scores", rm_timeout_s=2))
    with pytest.raises(InfraError, match="ConnectError"):
        verifier.verify(RMItem(reward_type="rm", prompt="p", response="r"))
