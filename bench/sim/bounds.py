"""A lower bound on any routing policy's makespan under the simulator's speed model (seconds).

Two bounds, each provable from :class:`bench.sim.calibration.SpeedModel` alone, whatever the routing, migration or
batching:

1. **Longest sequence.** Sequence ``i`` needs its prompt prefilled, then ``L_i`` decode steps; the step that takes it
   from context ``x`` to ``x + 1`` lasts at least ``t0 + a + c1 * x`` (batch >= 1, its own context <= the batch's
   peak; ``c1 > c2``). Summing, ``prefill(p_i) + L_i * (t0 + a) + c1 * (p_i * L_i + L_i * (L_i - 1) / 2)``.
2. **Total work over total capacity.** Summed over every step of every instance, ``a * b`` adds up to ``a * W``
   (``W`` = all output tokens) and ``c2 * S`` to ``c2 * sum_i (p_i * L_i + L_i * (L_i - 1) / 2)``, because each
   generated token is decoded once at its own context (migration only adds work). At most ``max_num_seqs``
   sequences share a step, so there are at least ``W / max_num_seqs`` steps of ``t0`` each. Add every prompt's
   prefill; the instances' busy time is at least that sum, and the makespan at least its share per instance.

Each bound is attained in its own regime (a lone sequence; equal sequences filling ``max_num_seqs``), so neither is
too low. Their maximum is loose when both matter: at 64 instances bound 1 decides, and it assumes the truncated
sequences run alone from the start, while the rest of the step's work must share their instances' steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.sim.calibration import DEFAULT_SPEED, SpeedModel
from bench.sim.workload import Workload


@dataclass(frozen=True)
class LowerBound:
    longest_sequence_s: float  # bound 1
    capacity_s: float  # bound 2

    @property
    def makespan_s(self) -> float:
        return max(self.longest_sequence_s, self.capacity_s)


def _context_sums(workload: Workload) -> np.ndarray:
    """(n,) sum over each request's decode steps of its context before the step, tokens."""
    p = workload.prompt_tokens.astype(np.float64)
    length = workload.output_tokens.astype(np.float64)
    return p * length + length * (length - 1.0) / 2.0


def alone_s(workload: Workload, speed: SpeedModel = DEFAULT_SPEED) -> np.ndarray:
    """(n,) bound 1 per request: its prefill and decode alone on an instance, the fastest it can finish (seconds)."""
    length = workload.output_tokens.astype(np.float64)
    prefill = speed.prefill_s(workload.prompt_tokens.astype(np.float64))
    return prefill + length * (speed.t0_s + speed.per_seq_s) + speed.attn_latency_s_per_token * _context_sums(workload)


def lower_bound(workload: Workload, n_instances: int, speed: SpeedModel = DEFAULT_SPEED) -> LowerBound:
    """Both bounds for ``workload`` on ``n_instances`` identical instances."""
    length = workload.output_tokens.astype(np.float64)
    context = _context_sums(workload)
    prefill = speed.prefill_s(workload.prompt_tokens.astype(np.float64))
    per_sequence = alone_s(workload, speed)
    total_tokens = length.sum()
    busy = (
        speed.t0_s * total_tokens / speed.max_num_seqs
        + speed.per_seq_s * total_tokens
        + speed.kv_read_s_per_token * context.sum()
        + prefill.sum()
    )
    return LowerBound(longest_sequence_s=float(per_sequence.max()), capacity_s=float(busy / n_instances))
