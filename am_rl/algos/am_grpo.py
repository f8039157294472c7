"""``am_grpo``: GRPO outcome advantage with zero advantage for overlong responses (AM-Thinking-v1, DESIGN.md §2).

A response that hit the length limit was cut before its answer; its score says more about the limit than about
the policy, so it gets advantage exactly 0 on every token and, by default, is left out of its group's baseline.
No KL term belongs with this estimator (see ``am_rl.config.validate``).

Registered in verl's registry, so ``algorithm.adv_estimator=am_grpo`` selects it. verl calls it with
``token_level_rewards``, ``response_mask``, ``index`` and ``config`` (the ``algorithm`` section); the knobs below are
read from ``algorithm.am_grpo`` and verl's own ``algorithm.norm_adv_by_std_in_grpo``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)  # one line per step in verl's driver, whose root logger stays at WARNING


@dataclass(frozen=True)
class AMGRPOConfig:
    """Knobs of ``am_grpo``; in YAML under ``algorithm.am_grpo`` (std switch: ``algorithm.norm_adv_by_std_in_grpo``)."""

    # Divide by the group std (GRPO) or not (Dr.GRPO). Same meaning as verl's norm_adv_by_std_in_grpo.
    norm_adv_by_std: bool = True
    # Added to the std before dividing, as in verl's GRPO.
    epsilon: float = 1e-6
    # A response whose length (response_mask sum) reaches this is overlong. None: the padded response length,
    # i.e. the max response length, so exactly the responses that were cut at max_tokens.
    overlong_threshold: Optional[int] = None
    # Whether overlong responses still count in their group's mean/std. Their own advantage is 0 either way.
    overlong_in_baseline: bool = False

    @classmethod
    def from_algorithm_config(cls, config: Any) -> AMGRPOConfig:
        """Read the knobs from verl's ``algorithm`` config (DictConfig, AlgoConfig, dict, or None)."""
        if config is None:
            return cls()
        section = config.get("am_grpo", None) or {}
        return cls(
            norm_adv_by_std=bool(config.get("norm_adv_by_std_in_grpo", True)),
            epsilon=float(section.get("epsilon", cls.epsilon)),
            overlong_threshold=section.get("overlong_threshold", None),
            overlong_in_baseline=bool(section.get("overlong_in_baseline", False)),
        )


def overlong_mask(
    response_mask: torch.Tensor, threshold: Optional[int] = None, truncated: Optional[Any] = None
) -> torch.Tensor:
    """(bs,) bool: response length (bs, L)-mask sum >= threshold (default L), or flagged truncated."""
    threshold = response_mask.shape[-1] if threshold is None else threshold
    overlong = response_mask.sum(dim=-1) >= threshold  # (bs,)
    if truncated is not None:
        overlong = overlong | torch.as_tensor(np.asarray(truncated, dtype=bool), device=overlong.device)
    return overlong


@register_adv_est("am_grpo")
def compute_am_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Optional[Any] = None,
    truncated: Optional[Any] = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage with overlong → 0.

    Args:
        token_level_rewards: (bs, response_length); the score of a response is its sum.
        response_mask: (bs, response_length), 1 on response tokens.
        index: (bs,) group ids; responses sharing one were sampled from the same prompt.
        config: verl's ``algorithm`` config, or an ``AMGRPOConfig``, or None for defaults.
        truncated: optional (bs,) bools, True where the rollout ended with finish reason ``length``.
        kwargs: other inputs verl passes to estimators (ignored).

    A response's advantage is (score − mean) / (std + eps) over the non-overlong members of its group
    (all members with ``overlong_in_baseline``), std unbiased as in verl. It is 0 when the response is overlong,
    or when its group's baseline has fewer than two members or all of them scored the same.

    Returns:
        (advantages, returns), both (bs, response_length), equal, zero outside ``response_mask``.
    """
    cfg = config if isinstance(config, AMGRPOConfig) else AMGRPOConfig.from_algorithm_config(config)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1).to(torch.float64)  # (bs,)
        overlong = overlong_mask(response_mask, cfg.overlong_threshold, truncated)  # (bs,)
        in_baseline = torch.ones_like(overlong) if cfg.overlong_in_baseline else ~overlong
        _, group = np.unique(np.asarray(index), return_inverse=True)
        group = torch.as_tensor(group.reshape(-1), device=scores.device)  # (bs,) in 0..G-1
        num_groups = int(group.max()) + 1 if len(group) else 0

        def group_sum(x: torch.Tensor) -> torch.Tensor:  # (bs,) -> (G,)
            return torch.zeros(num_groups, dtype=x.dtype, device=x.device).index_add_(0, group, x)

        w = in_baseline.to(scores.dtype)  # (bs,)
        count = group_sum(w)  # (G,)
        mean = group_sum(scores * w) / count.clamp(min=1)  # (G,)
        var = group_sum((scores - mean[group]) ** 2 * w) / (count - 1).clamp(min=1)  # (G,) unbiased
        inf = torch.full((num_groups,), torch.inf, dtype=scores.dtype, device=scores.device)
        low = inf.scatter_reduce(0, group, torch.where(in_baseline, scores, torch.inf), "amin")  # (G,)
        high = (-inf).scatter_reduce(0, group, torch.where(in_baseline, scores, -torch.inf), "amax")  # (G,)
        # No signal without a real baseline: explicit zero rather than a rounding residue divided by eps.
        has_signal = (count >= 2) & (high > low)  # (G,)

        adv = scores - mean[group]  # (bs,)
        if cfg.norm_adv_by_std:
            adv = adv / (var.sqrt()[group] + cfg.epsilon)
        adv = torch.where(has_signal[group] & ~overlong, adv, torch.zeros_like(adv))
        advantages = adv.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask  # (bs, L)
    logger.info(
        "am_grpo: %d of %d samples overlong, max |advantage| among them %g; %d of %d groups with signal",
        int(overlong.sum()),
        len(overlong),
        float(advantages[overlong].abs().max()) if bool(overlong.any()) else 0.0,
        int(has_signal.sum()),
        num_groups,
    )
    return advantages, advantages
