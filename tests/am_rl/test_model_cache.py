import threading

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from am_rl.models.tiny import build_once


def test_tiny_model_loads_in_transformers_with_chat_template_and_eos(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.head_dim == 64 and not model.config.tie_word_embeddings
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 5_000_000
    text = tok.apply_chat_template([{"role": "user", "content": "What is 12+7?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE round-trips
    assert [tok.decode([i]) for i in tok("1234", add_special_tokens=False)["input_ids"]] == ["1", "2", "3", "4"]


def test_build_once_builds_once_under_concurrency(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    threads = [threading.Thread(target=build_once, args=(tmp_path / "m", build)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "m" / "config.json").exists()


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path):
    def broken(out):
        (out / "partial.bin").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_once(tmp_path / "m", broken)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
