"""Options of `python -m am_rl.data distill`: the served models it talks to and every knob, documented here once."""

from __future__ import annotations

from dataclasses import dataclass, field

from am_rl.data.filters import FilterOptions

KEEP_MODES = ("all", "shortest-verified", "teacher-order")


class TeacherError(RuntimeError):
    """A teacher (or the scoring model) failed past its retries; the message names it."""


@dataclass(frozen=True)
class Endpoint:
    """A served model: a teacher, or the perplexity scoring model."""

    name: str  # how reports, the log and the rows name it
    url: str  # OpenAI-compatible base URL (the balancer fronting its engines)
    model: str  # the model name the endpoint serves (the request's "model")
    tokenizer: str  # HF tokenizer (model directory or hub id) whose chat template builds its prompts


@dataclass(frozen=True)
class DistillOptions:
    k: int = 4  # responses per query from each teacher
    max_tokens: int = 32768  # response cap; a response that reaches it is "truncated"
    temperature: float = 0.6  # the report's sampling settings (DESIGN.md §2)
    top_p: float = 0.95
    concurrency: int = 64  # sampling slots (in-flight requests) per teacher
    retries: int = 3  # retries of a request that failed before its first token, before the teacher is declared dead
    seed: int = 0  # dispatch-order shuffle
    score_batch: int = 256  # responses verified per reward-service call while sampling goes on
    verify: bool = True  # False: sample only (no reward service, no perplexity, no filters): the benchmark baseline
    pass_score: float = 1.0  # a response is verified when its reward is at least this (rule-verified types)
    passes: int = 1  # each teacher's k samples split into this many passes for the coefficient of variation
    keep: str = "shortest-verified"  # all | shortest-verified | teacher-order (see am_rl.data.curation)
    fix_ground_truth_with: str | None = None  # a teacher whose own majority must agree before a ground truth is fixed
    filters: FilterOptions = field(default_factory=FilterOptions)

    def __post_init__(self) -> None:
        if self.k < 1 or self.concurrency < 1 or self.passes < 1:
            raise ValueError(f"k, concurrency and passes must be >= 1, got {self.k}, {self.concurrency}, {self.passes}")
        if self.k % self.passes:
            raise ValueError(f"k={self.k} does not split into {self.passes} equal passes")
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES}, got {self.keep!r}")

    def sampling_settings(self) -> dict:
        """What the log must agree on across reruns."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}
