"""``am_ppo_clip``: verl's PPO-clip policy loss, plus the largest per-token log-prob gap between the policy being
updated and the old log-probs it is anchored on (``actor/rollout_logprob_gap_max``).

With ``algorithm.rollout_correction.bypass_mode=true`` verl takes the engines' log-probs as the old log-probs and skips
its own recompute (a forward pass over the whole batch, every step). The update's forward then runs before any
optimizer step of the batch (``am_rl.strict_on_policy``: one mini-batch per step), so the gap is the trainer-vs-engine
gap: whether the samples were drawn from the policy being trained. It is exact where one micro-batch holds the step
(the CPU demo); verl averages a metric over micro-batches, which makes it the mean of their maxima otherwise.

The CPU recipe selects both (fp32 on both sides: ~1e-6). GPU recipes keep verl's recompute, whose own metric
(``training/rollout_probs_diff_max``) compares probabilities; there, engines in bf16 are expected to differ.

Registered in verl's registry on import of am_rl, i.e. in every Ray worker (they import am_rl.trainer.verl_plugins).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, register_policy_loss


def max_logprob_gap(log_prob: torch.Tensor, old_log_prob: torch.Tensor, response_mask: torch.Tensor) -> float:
    """max |log_prob - old_log_prob| over the response tokens (bs, L); 0 for a batch without any."""
    gap = (log_prob.detach() - old_log_prob).abs().masked_fill(~response_mask.bool(), 0.0)
    return float(gap.max()) if gap.numel() else 0.0


@register_policy_loss("am_ppo_clip")
def compute_am_ppo_clip_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[Any] = None,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's ``vanilla`` loss and metrics, unchanged, plus ``actor/rollout_logprob_gap_max``."""
    loss, metrics = compute_policy_loss_vanilla(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )
    metrics["actor/rollout_logprob_gap_max"] = max_logprob_gap(log_prob, old_log_prob, response_mask)
    return loss, metrics
