"""The CPU FSDP engine's padded-path log-probs: the same numbers and gradients as verl's own branch of
``prepare_model_outputs`` (its row loop), and picked by verl's engine registry on the cpu platform."""

from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits_v2
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from am_rl.trainer import cpu_engine
from am_rl.trainer.cpu_engine import CPUFSDPEngineWithLMHead, token_logprobs

VOCAB = 37


def test_token_logprobs_match_verls_row_loop():
    torch.manual_seed(0)
    logits, labels = torch.randn(50, VOCAB, dtype=torch.float64), torch.randint(0, VOCAB, (50,))
    torch.testing.assert_close(token_logprobs(logits, labels), logprobs_from_logits_v2(logits, labels))


def micro_batch(lengths: list[int], **flags) -> TensorDict:
    """A micro-batch as verl's engine sees it: nested (bsz, j1) input ids and positions, flags as non-tensor data."""
    ids = [torch.randint(0, VOCAB, (n,)) for n in lengths]
    td = TensorDict(
        {
            "input_ids": torch.nested.as_nested_tensor(ids, layout=torch.jagged),
            "position_ids": torch.nested.as_nested_tensor([torch.arange(n) for n in lengths], layout=torch.jagged),
        },
        batch_size=[len(lengths)],
    )
    tu.assign_non_tensor(td, **({"use_remove_padding": False, "use_fused_kernels": False} | flags))
    return td


def engine_stub() -> SimpleNamespace:
    """The attributes ``prepare_model_outputs`` reads from the engine (no model, no process group)."""
    return SimpleNamespace(
        use_ulysses_sp=False,
        compute_entropy_from_logits=entropy_from_logits,
        engine_config=SimpleNamespace(entropy_checkpointing=False, entropy_from_logits_with_chunking=False),
    )


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("calculate_entropy", [False, True])
def test_padded_path_matches_verl(temperature: float, calculate_entropy: bool):
    torch.manual_seed(1)
    lengths = [5, 9, 3, 9]
    batch = micro_batch(lengths, calculate_entropy=calculate_entropy)
    ids = batch["input_ids"]
    output_args = {
        "temperature_is_one": temperature == 1.0,
        "temperature": torch.full((len(lengths),), temperature),
        "input_ids_rmpad_rolled": torch.roll(ids.values(), shifts=-1, dims=0),
    }
    base = torch.randn(len(lengths), max(lengths), VOCAB)
    outputs = {}
    for name, cls in (("ours", CPUFSDPEngineWithLMHead), ("verl", FSDPEngineWithLMHead)):
        logits = base.clone().requires_grad_(True)
        stub = engine_stub()
        stub._handles = CPUFSDPEngineWithLMHead._handles.__get__(stub)
        out = cls.prepare_model_outputs(stub, SimpleNamespace(logits=logits), output_args, batch, None)
        loss = out["log_probs"].values().sum() + (out["entropy"].values().sum() if calculate_entropy else 0)
        loss.backward()
        outputs[name] = (out, logits.grad)
    (ours, our_grad), (verl, verl_grad) = outputs["ours"], outputs["verl"]
    assert ours["log_probs"].values().shape == (sum(lengths),)
    torch.testing.assert_close(ours["log_probs"].offsets(), verl["log_probs"].offsets())
    torch.testing.assert_close(ours["log_probs"].values(), verl["log_probs"].values())
    assert ("entropy" in ours) == calculate_entropy
    if calculate_entropy:
        torch.testing.assert_close(ours["entropy"].values(), verl["entropy"].values())
    torch.testing.assert_close(our_grad, verl_grad)
    assert our_grad[0, 5:].abs().sum() == 0 and our_grad[2, 3:].abs().sum() == 0  # padding gets no gradient


def test_other_paths_are_left_to_verl():
    stub = engine_stub()
    assert CPUFSDPEngineWithLMHead._handles(stub, micro_batch([4]))
    assert not CPUFSDPEngineWithLMHead._handles(stub, micro_batch([4], use_remove_padding=True))
    assert not CPUFSDPEngineWithLMHead._handles(stub, micro_batch([4], distillation_use_topk=True))
    assert not CPUFSDPEngineWithLMHead._handles(stub, micro_batch([4], calculate_sum_pi_squared=True))


def test_registered_for_the_cpu_device(monkeypatch):
    cpu_engine.register()
    cpu_engine.register()  # a second import path in the same process must not trip verl's duplicate-key assert
    monkeypatch.setenv("VERL_ENGINE_DEVICE", "cpu")
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is CPUFSDPEngineWithLMHead
    assert EngineRegistry.get_engine_cls("value_model", "fsdp2").__name__ == "FSDPEngineWithValueHead"
