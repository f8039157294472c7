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
    logits = model(input_ids=input_ids, attention_mask=attention).logits.float()  # (B, T, V)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (B, T, V)
    # Token at position t is predicted by the logits at t-1; gather the response tokens' predictions.
    out = torch.zeros(len(prompts), max_resp, dtype=logp.dtype)
    rows = []
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        pos = torch.arange(len(p) - 1, len(p) - 1 + len(r))  # (len(r),)
        rows.append(logp[i, pos, torch.tensor(list(r), dtype=torch.long)])
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out * response_mask, response_mask
