"""The simulator's speed model of one vLLM instance, and the report's figures it is calibrated to. All in one place.

A decode step of an instance running ``b`` sequences whose contexts (prompt + generated tokens) sum to ``S`` and
peak at ``C`` takes

    step(b, S, C) = t0 + a * b + max(c1 * C, c2 * S)          seconds, and yields one token per sequence.

- ``t0``: fixed cost of a step (reading the weights), paid whatever the batch.
- ``a``: per-sequence cost (sampling, scheduling, the small-batch matmul growth).
- ``c2 * S``: reading every cached KV token of the batch, bandwidth bound; this is how long contexts sharing an
  instance slow each other down.
- ``c1 * C``: one sequence's attention over a long context, latency bound (a lone sequence cannot use the whole
  GPU's bandwidth), which is why even a single 32k sequence runs slower than a short one. ``c1 > c2``.

Prefill (a new prompt, or the prompt + generated ids a migrated sequence re-reads at its destination) takes
``n / prefill_tokens_per_s + prefill_quadratic_s * n**2`` seconds for ``n`` tokens and stalls that instance's
decoding meanwhile (vLLM's chunked prefill spreads the same GPU time over more steps; the total is what counts).

Fit: t0 + a + c1 * 1024 and c1 come from anchors 1 and 2, c2 from anchor 3 with ``a`` set to 0.05 ms; anchor 4 is
then predicted, not fitted (18.2 tok/s against the report's ≈19, -4%): the four figures are not exactly consistent
with any model linear in S, and we would rather miss one by 4% than add a free parameter to hit it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Anchor:
    """One figure from the AM-Thinking-v1 report: ``batch`` sequences of ``context`` tokens each."""

    name: str
    batch: int
    context: int  # tokens of context per sequence (prompt + generated)
    tokens_per_s_per_seq: float


# 32B model, one vLLM instance on 4xA100. "Short" is taken as a 1k-token context; the 32-concurrent figure's context
# is not stated and is read as 32k like the 16-concurrent one before it.
ANCHORS = (
    Anchor("1 sequence, short", 1, 1024, 60.0),
    Anchor("1 sequence, 32k", 1, 32768, 50.0),
    Anchor("16 concurrent, 32k (~460 tok/s total)", 16, 32768, 28.0),
    Anchor("32 concurrent, 32k", 32, 32768, 19.0),
)
ANCHOR_TOLERANCE = 0.05  # relative: the report gives these as approximate figures


@dataclass(frozen=True)
class SpeedModel:
    """Decode-step and prefill timing of one instance (seconds, tokens)."""

    t0_s: float = 16.509e-3  # fixed cost per decode step
    per_seq_s: float = 0.05e-3  # a: cost per sequence in the batch per step
    attn_latency_s_per_token: float = 1.0500e-7  # c1: one sequence's attention, per context token
    kv_read_s_per_token: float = 3.5105e-8  # c2: KV bytes read per cached token of the batch
    prefill_tokens_per_s: float = 8_000.0  # 65 GFLOP/token on 4xA100 at ~45% MFU
    prefill_quadratic_s: float = 1.17e-9  # attention FLOPs of prefill grow with n**2 (1.3 s extra at 32k)
    # Resident KV tokens: anchor 4 (32 x 32k) must fit, so >= 1.05M; 1.2M is about what 4x80 GB at 0.9 utilisation
    # leaves for an FP8 KV cache of a 64-layer, 8-KV-head model after the weights.
    kv_capacity_tokens: int = 1_200_000
    max_num_seqs: int = 256  # vLLM's scheduler cap on concurrently running sequences

    def step_s(self, batch, sum_context, max_context):
        """Seconds per decode step; works elementwise on numpy arrays (one entry per instance)."""
        return (
            self.t0_s
            + self.per_seq_s * batch
            + np.maximum(self.attn_latency_s_per_token * max_context, self.kv_read_s_per_token * sum_context)
        )

    def prefill_s(self, tokens):
        """Seconds to prefill ``tokens`` tokens of context (scalar or array)."""
        return tokens / self.prefill_tokens_per_s + self.prefill_quadratic_s * tokens * tokens

    def per_seq_tokens_per_s(self, batch: int, context: int) -> float:
        """Steady decode speed of each of ``batch`` sequences that all hold ``context`` tokens."""
        return 1.0 / float(self.step_s(batch, batch * context, context))


DEFAULT_SPEED = SpeedModel()
