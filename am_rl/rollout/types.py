"""Messages of the rollout hop: trainer → rollout client → balancer/engines and back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class RolloutRequest:
    """One sample (n=1) to generate; the trainer's repeat+shuffle produces B·n of these per step."""

    request_id: str  # unique per step; sent as X-Request-Id so the balancer and vLLM can abort by id
    prompt_ids: list[int]  # token-id prompt: trainer and engines agree on tokens, not text
    max_tokens: int  # the response-length cap; reaching it makes the sample overlong
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut (vLLM's default)
    seed: Optional[int] = None  # per-sample seed, for reproducible sampling
    # Output tokens the trainer expects (am_rl.rollout.priors), sent as the balancer's routing hint
    # am_rl_expected_tokens (load_balancer.hints); None: no hint. Never sent to an engine directly.
    expected_tokens: Optional[int] = None

    def anon_repr(self) -> str:
        return f"RolloutRequest(id={self.request_id}, prompt_len={len(self.prompt_ids)}, max_tokens={self.max_tokens})"


@dataclass
class RolloutResult:
    request_id: str
    prompt_ids: list[int]
    response_ids: list[int]  # generated tokens, eos included when the model stopped
    logprobs: list[float]  # one per response token, from the engine (the behaviour policy)
    finish_reason: str  # "stop" | "length" (hit max_tokens: overlong) | "abort"
    latency_s: float  # request start to last token

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class RolloutStats:
    """Per-step timing of a batch of rollouts."""

    wall_s: float = 0.0  # first request sent → last response finished (the step's rollout makespan)
    requests: int = 0
    generated_tokens: int = 0
    retries: int = 0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0
