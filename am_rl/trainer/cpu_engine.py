"""verl's FSDP language-model engine for the CPU platform, registered under ``device="cpu"`` in verl's engine registry
(``verl.workers.engine.base.EngineRegistry``; verl registers its FSDP engines for cuda/npu only).

One difference from verl's engine: the log-probs of padded (``use_remove_padding=false``) micro-batches are computed
for all tokens at once. Without flash-attention's or torch_npu's cross-entropy kernel, verl falls back to
``verl.utils.torch_functional.logprobs_from_logits_v2``, which loops over the rows of its input one ``logsumexp`` at
a time to bound peak memory on 150k-token vocabularies; the engine hands it one row per token (``total_nnz`` rows:
~11k in the CPU demo's update), so the update ran ~35k small ops and an autograd graph as long, and on the 2-core box
the loop and its backward took ~90% of ``update_actor`` (py-spy, bench/results/trainer_step_time.md). The CPU
demo's vocabulary is 365 tokens: the whole (tokens, vocab) tensor is smaller than one of those rows on a GPU model.

verl's fused-kernel path (``model.use_fused_kernels``, torch backend) would skip the loop too, but it multiplies by
``lm_head.weight`` outside ``lm_head``'s forward, where FSDP2 (which wraps an untied ``lm_head`` on its own) still
holds it as a sharded DTensor: "aten.mm.default got mixed torch.Tensor and DTensor".

Everything else (the remove-padding and fused paths, distillation, sum of squared probabilities) is verl's own.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

DEVICE = "cpu"  # what verl's get_device_name() answers on am_rl's cpu platform (am_rl.trainer.platform_cpu)
BACKENDS = ["fsdp", "fsdp2"]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per row, all rows at once: (n, vocab), (n,) -> (n,). The same formula as verl's
    ``logprobs_from_logits_v2`` for fp32 (gathered logit minus logsumexp)."""
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _flag(micro_batch: TensorDict, key: str, default: Any) -> Any:
    return tu.get_non_tensor_data(data=micro_batch, key=key, default=default)


class CPUFSDPEngineWithLMHead(FSDPEngineWithLMHead):
    def _handles(self, micro_batch: TensorDict) -> bool:
        """The padded, unfused path without extras: the only one whose log-probs go through verl's row loop here."""
        return (
            not _flag(micro_batch, "use_remove_padding", True)
            and not _flag(micro_batch, "use_fused_kernels", False)
            and _flag(micro_batch, "pad_mode", DatasetPadMode.NO_PADDING) == DatasetPadMode.NO_PADDING
            and not _flag(micro_batch, "distillation_use_topk", False)
            and not _flag(micro_batch, "distillation_only", False)
            and not _flag(micro_batch, "calculate_sum_pi_squared", False)
            and not self.use_ulysses_sp
        )

    def prepare_model_outputs(self, output, output_args, micro_batch: TensorDict, logits_processor_func):
        if not self._handles(micro_batch):
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        input_ids = micro_batch["input_ids"]  # nested (bsz, j1): each sequence's prompt + response tokens
        cu_seqlens = input_ids.offsets()  # (bsz + 1,)
        logits = output.logits  # (bsz, max_seq_len, vocab)
        if not output_args.get("temperature_is_one", False):
            temperature = output_args["temperature"].clamp(min=1e-8).to(logits.dtype)  # (bsz,)
            logits = logits / temperature[:, None, None]
        # The valid positions in row-major order: the same (total_nnz,) order as verl's rolled labels.
        valid = torch.arange(logits.shape[1], device=logits.device) < cu_seqlens.diff().unsqueeze(1)  # (bsz, S)
        logits_rmpad = logits[valid]  # (total_nnz, vocab)
        log_probs = token_logprobs(logits_rmpad, output_args["input_ids_rmpad_rolled"])  # (total_nnz,)
        model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(log_probs, cu_seqlens)}
        if _flag(micro_batch, "calculate_entropy", False):
            entropy = self.compute_entropy_from_logits(logits_rmpad)  # (total_nnz,)
            model_output["entropy"] = torch.nested.nested_tensor_from_jagged(entropy, cu_seqlens)
        return model_output


_registered = False


def register() -> None:
    """Put the CPU engines in verl's registry (once per process; verl refuses a second registration of a key). verl
    picks them by the platform's device name."""
    global _registered
    if _registered:
        return
    _registered = True
    EngineRegistry.register(model_type="language_model", backend=BACKENDS, device=DEVICE)(CPUFSDPEngineWithLMHead)
    EngineRegistry.register(model_type="value_model", backend=BACKENDS, device=DEVICE)(FSDPEngineWithValueHead)
