"""Per-token log-probabilities of responses under the trainer's model (the π_θ side of the policy loss)."""

from __future__ import annotations

from typing import Sequence

import torch


def pad_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Right-pad prompt+response sequences.

    Returns (input_ids (B, T), attention_mask (B, T), response_mask (B, R), R) where R is the longest response;
    response j of row i sits at positions len(prompt_i) + j.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    max_len, max_resp = max(lengths), max(len(r) for r in responses)
    input_ids = torch.full((len(prompts), max_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), max_len), dtype=torch.long)
    response_mask = torch.zeros((len(prompts), max_resp), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r))
        attention[i, : len(p) + len(r)] = 1
        response_mask[i, : len(r)] = 1
    return input_ids, attention, response_mask, max_resp


def response_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(response token | prefix) for each response token.

    Returns (logprobs (B, R), response_mask (B, R)), zero where the mask is 0. Gradients flow when the caller
    has them enabled.
    """
    input_ids, attention, response_mask, max_resp = pad_batch(prompts, responses, pad_id)
    logits = model(input_ids=input_ids, attention_mask=attention).logits.float() / temperature  # (B, T, V)
    # The token at position t is predicted by the logits at t - 1. One batched gather: indexing row by row makes
    # autograd fill and add a (B, T, V) gradient per row, which took two thirds of an update's time.
    token_logp = logits[:, :-1].gather(-1, input_ids[:, 1:, None])[..., 0] - torch.logsumexp(logits[:, :-1], -1)
    first = torch.tensor([len(p) - 1 for p in prompts])  # position (in token_logp) of each row's first response token
    positions = (first[:, None] + torch.arange(max_resp)[None, :]).clamp(max=token_logp.shape[1] - 1)  # (B, R)
    return token_logp.gather(1, positions) * response_mask, response_mask
