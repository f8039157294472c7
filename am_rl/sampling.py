"""Trainer-side repeat sampling with shuffling (DESIGN.md §3.1).

Asking one engine for ``n=16`` samples of a prompt pins all sixteen to one instance; when the prompt is hard,
all sixteen are long and that instance finishes last. Instead the trainer expands B prompts into B·n
single-sample requests, applies a seeded permutation so siblings spread over the instances, dispatches, and
restores the original order afterwards so each GRPO group is contiguous again.

Everything here is pure: no I/O, no global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SampleRequest(Generic[T]):
    """One single-sample (n=1) rollout request."""

    uid: str  # group id shared by the n siblings of one prompt (verl's ``uid``)
    prompt_index: int  # position of the prompt in the step's batch of B prompts
    sample_index: int  # 0..n-1 among its siblings
    prompt: T  # the prompt itself (token ids, text, or a chat), passed through untouched


def step_permutation(size: int, seed: int, step: int) -> np.ndarray:
    """The permutation used at training step ``step``: reproducible from (seed, step), different per step."""
    if size < 0 or seed < 0 or step < 0:
        raise ValueError(f"size, seed and step must be >= 0, got {size}, {seed}, {step}")
    return np.random.default_rng([seed, step]).permutation(size)


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """``inv`` such that ``shuffled[inv] == original`` when ``shuffled = original[perm]``."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return inv


@dataclass(frozen=True)
class RepeatShufflePlan(Generic[T]):
    """The expanded, shuffled requests of one step and the permutation needed to undo the shuffle."""

    requests: list[SampleRequest[T]]  # in dispatch (shuffled) order, length B·n
    perm: np.ndarray  # requests[i] is the expanded sample perm[i]; expanded order is prompt-major

    def restore(self, results: Sequence[R]) -> list[R]:
        """Put results, given in dispatch order, back in expanded (prompt-major, group-contiguous) order."""
        if len(results) != len(self.perm):
            raise ValueError(f"expected {len(self.perm)} results, got {len(results)}")
        inv = inverse_permutation(self.perm)
        return [results[j] for j in inv]


def repeat_and_shuffle(
    prompts: Sequence[T], n: int, seed: int, step: int, uids: Sequence[str] | None = None, shuffle: bool = True
) -> RepeatShufflePlan[T]:
    """Expand B prompts into B·n single-sample requests in a per-step seeded random order.

    ``uids`` name the groups (default: ``"<step>-<prompt index>"``); they must be unique per prompt.
    ``shuffle=False`` keeps siblings contiguous (verl's layout), for ablations.
    """
    if n < 1:
        raise ValueError(f"n (rollouts per prompt) must be >= 1, got {n}")
    if uids is None:
        uids = [f"{step}-{i}" for i in range(len(prompts))]
    if len(uids) != len(prompts) or len(set(uids)) != len(uids):
        raise ValueError("uids must be unique and one per prompt")
    expanded = [
        SampleRequest(uid=uids[i], prompt_index=i, sample_index=k, prompt=p)
        for i, p in enumerate(prompts)
        for k in range(n)
    ]
    perm = step_permutation(len(expanded), seed, step) if shuffle else np.arange(len(expanded))
    return RepeatShufflePlan(requests=[expanded[j] for j in perm], perm=perm)
