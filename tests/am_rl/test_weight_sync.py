import asyncio

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from am_rl.weight_sync import WeightPusher, WeightSyncError

pytestmark = pytest.mark.vllm

PROMPT = [1, 5, 9, 17, 33, 2, 7]


def trainer_logprobs(model, prompt, response):
    """log pi(response token | prefix) under the trainer's model, one per response token."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(-1, torch.tensor(response)[:, None])[:, 0]


def vllm_greedy(url, model_path, prompt, n_tokens=12):
    body = {"model": model_path, "prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True, "logprobs": 0}
    choice = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    return choice["token_ids"], choice["logprobs"]["token_logprobs"]


def test_pushed_weights_give_trainer_logprobs_on_every_server(vllm_servers, tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    before, _ = vllm_greedy(vllm_servers.urls[0], str(tiny_model), PROMPT)

    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    pusher = WeightPusher(vllm_servers.urls)
    try:
        assert asyncio.run(pusher.push(model.state_dict(), version="step-1")) == []
        assert pusher.last_push_s > 0
        responses = []
        for url in vllm_servers.urls:
            assert httpx.get(f"{url}/weight_info", timeout=10).json()["weight_version"] == "step-1"
            ids, vllm_lp = vllm_greedy(url, str(tiny_model), PROMPT)
            ours = trainer_logprobs(model, PROMPT, ids)
            assert torch.max(torch.abs(ours - torch.tensor(vllm_lp))).item() < 1e-3
            # Greedy under the pushed weights: each token is the argmax of the trainer's own distribution.
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([PROMPT + ids])).logits[0]
            assert ids == logits[len(PROMPT) - 1 : -1].argmax(-1).tolist()
            responses.append(ids)
        assert responses[0] == responses[1]
        assert responses[0] != before, "the push did not change what the servers generate"
    finally:
        asyncio.run(pusher.push(original, version="restored"))
        pusher.close()
    assert vllm_greedy(vllm_servers.urls[0], str(tiny_model), PROMPT)[0] == before


def test_a_dead_server_is_dropped_and_the_live_one_still_updated(vllm_servers, tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    pusher = WeightPusher([vllm_servers.urls[0], dead], connect_timeout_s=2.0)
    try:
        assert asyncio.run(pusher.push(model.state_dict(), version="with-a-dead-one")) == [dead]
        assert pusher.urls == [vllm_servers.urls[0]]
        assert httpx.get(f"{vllm_servers.urls[0]}/weight_info", timeout=10).json()["weight_version"] == "with-a-dead-one"
        assert asyncio.run(pusher.push(model.state_dict(), version="after")) == [], "the dead server is not retried"
    finally:
        pusher.close()


def test_push_to_dead_server_names_it(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    pusher = WeightPusher(["http://127.0.0.1:9"])  # discard port: nothing listens
    try:
        with pytest.raises(WeightSyncError, match="127.0.0.1:9"):
            asyncio.run(pusher.push(model.state_dict(), version="x"))
    finally:
        pusher.close()
