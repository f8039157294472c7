"""Shuffle a verl batch before the agent-loop dispatch and undo it afterwards (DESIGN.md §3.1), as pure functions.

verl's trainer repeats each prompt n times *interleaved* (the copies of one prompt are contiguous), then
``AgentLoopManager.generate_sequences`` cuts the batch into contiguous chunks, one per agent-loop worker. So the
n siblings of a prompt land on one worker, which sends them together: the crowding the report removes. Permuting
the rows first spreads every group across the workers (and, behind the balancer, across the engines); the inverse
permutation puts the outputs back in verl's order, so ``uid`` groups and the later ``batch.union`` line up.
"""

from __future__ import annotations

import numpy as np
from verl import DataProto

from am_rl.sampling import inverse_permutation, step_permutation


def shuffle_for_dispatch(batch: DataProto, seed: int, step: int) -> tuple[DataProto, np.ndarray]:
    """(rows in the order ``perm``, ``perm``): ``shuffled[i] == batch[perm[i]]``; ``perm`` drawn from (seed, step)."""
    perm = step_permutation(len(batch), seed, step)
    return batch.select_idxs(perm), perm


def restore_order(output: DataProto, perm: np.ndarray) -> DataProto:
    """Undo ``shuffle_for_dispatch`` on the rows generated from the shuffled batch (same length, same order)."""
    if len(output) != len(perm):
        raise ValueError(f"expected {len(perm)} generated rows to restore, got {len(output)}")
    return output.select_idxs(inverse_permutation(perm))
