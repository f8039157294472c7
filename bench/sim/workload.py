"""Synthetic GRPO rollout workload for the simulator: prompts x samples with long-tailed, prompt-correlated lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    """One rollout step. Requests are listed prompt-major: request ``i`` is sample ``i % n_samples`` of prompt
    ``i // n_samples`` (siblings are contiguous, as verl's trainer-side repeat leaves them)."""

    prompt_of: np.ndarray  # (n,) int: prompt index of each request
    prompt_tokens: np.ndarray  # (n,) int: prompt length, tokens
    output_tokens: np.ndarray  # (n,) int: the length the sample will reach, tokens (== max_tokens when truncated)
    max_tokens: int  # output cap of every request
    n_samples: int

    @property
    def n(self) -> int:
        return len(self.output_tokens)


@dataclass(frozen=True)
class WorkloadSpec:
    """Length distribution (lognormal, two levels). Defaults give a mean output of ~7.6k tokens, ~3% truncated at
    32k, and prompts whose median sample runs from a few hundred tokens to past the cap."""

    n_prompts: int = 256
    n_samples: int = 16
    max_tokens: int = 32_768
    median_output: float = 5_000.0  # tokens: median over prompts of a prompt's median sample length
    prompt_sigma: float = 0.9  # log-std of a prompt's median length across prompts: difficulty
    sample_sigma: float = 0.45  # log-std of sample lengths around their prompt's median
    median_prompt: float = 300.0  # tokens
    prompt_len_sigma: float = 0.6


def make_workload(seed: int, spec: WorkloadSpec = WorkloadSpec()) -> Workload:
    """Draw one step's workload; the same seed gives the same workload."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(np.log(spec.median_output), spec.prompt_sigma, spec.n_prompts)  # (P,) log tokens
    prompt_len = np.clip(rng.lognormal(np.log(spec.median_prompt), spec.prompt_len_sigma, spec.n_prompts), 16, 4096)
    prompt_of = np.repeat(np.arange(spec.n_prompts), spec.n_samples)  # (n,)
    log_len = rng.normal(difficulty[prompt_of], spec.sample_sigma)  # (n,)
    output = np.clip(np.exp(log_len), 16, spec.max_tokens).astype(np.int64)
    return Workload(
        prompt_of=prompt_of,
        prompt_tokens=prompt_len.astype(np.int64)[prompt_of],
        output_tokens=output,
        max_tokens=spec.max_tokens,
        n_samples=spec.n_samples,
    )
