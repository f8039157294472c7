"""Length priors on the trainer side: how long each prompt's samples ran in earlier epochs, sent as a routing hint.

The balancer routes and migrates better when it knows roughly how long a request will run (``load_balancer.hints``:
the request field ``am_rl_expected_tokens``). The trainer sees every sample's length come back; this store keeps the
``per_prompt`` most recent lengths of each prompt, keyed by a hash of its token ids (verl's ``uid`` is new every
step, the prompt's tokens are the same every epoch), and offers their mean as the next epoch's hint. A prompt never
seen gives no hint: the balancer then learns one within the step from the prompt's siblings. At most ``max_prompts``
prompts are kept, the least recently used forgotten first.

Each agent-loop worker (a Ray actor) holds its own store: the trainer's shuffle spreads a prompt's samples over the
workers, so one worker learns from the samples it ran (about n / workers per epoch, a few epochs' worth kept), a
noisier prior than a shared store but no state shared across processes. ``bench/sim_steps.py`` measures routing
with such noisy priors (``bench.sim.workload.PriorSpec``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Sequence

import numpy as np


def prompt_key(prompt_ids: Sequence[int]) -> bytes:
    """A prompt's identity, shared by its samples and across epochs: a hash of its token ids."""
    return hashlib.blake2b(np.asarray(prompt_ids, dtype=np.int64).tobytes(), digest_size=12).digest()


class LengthPriors:
    """The recent output lengths of each prompt, and the expected length they suggest."""

    def __init__(
        self,
        per_prompt: int = 16,  # lengths kept per prompt, the newest: the policy drifts, old epochs mislead
        max_prompts: int = 200_000,  # prompts remembered (~100 bytes each plus their lengths)
    ) -> None:
        if per_prompt < 1 or max_prompts < 1:
            raise ValueError(f"per_prompt and max_prompts must be >= 1, got {per_prompt}, {max_prompts}")
        self.per_prompt = per_prompt
        self.max_prompts = max_prompts
        self._lengths: OrderedDict[bytes, deque[int]] = OrderedDict()

    def record(self, prompt_ids: Sequence[int], length: int) -> None:
        """A sample of ``prompt_ids`` finished (stopped or hit its cap) after ``length`` output tokens."""
        key = prompt_key(prompt_ids)
        lengths = self._lengths.get(key)
        if lengths is None:
            lengths = self._lengths[key] = deque(maxlen=self.per_prompt)
            if len(self._lengths) > self.max_prompts:
                self._lengths.popitem(last=False)
        else:
            self._lengths.move_to_end(key)
        lengths.append(int(length))

    def expected(self, prompt_ids: Sequence[int], max_tokens: int) -> int | None:
        """The mean recorded length of the prompt's samples, within [1, ``max_tokens``]; None when never seen."""
        lengths = self._lengths.get(prompt_key(prompt_ids))
        if not lengths:
            return None
        return min(max_tokens, max(1, round(sum(lengths) / len(lengths))))

    def __len__(self) -> int:
        return len(self._lengths)
