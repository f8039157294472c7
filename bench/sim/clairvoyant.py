"""Ours with perfect length knowledge: a reference for how much of ours' gap to the bound is missing information.

``KnownLengthsMakespan`` is the ``makespan`` policy, routing and migration planning unchanged, with its length
estimates replaced by the true remaining lengths read from the workload (:func:`bench.sim.engine.request_index` says
which request). No live balancer can run it; the gap between it and ``makespan`` is what a perfect length predictor
would buy, the gap between it and the bound is routing and planning.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.sim.engine import request_index
from bench.sim.workload import Workload
from load_balancer.makespan import MakespanPolicy
from load_balancer.policy import RequestInfo


class KnownLengthsMakespan(MakespanPolicy):
    name = "makespan_known_lengths"

    def __init__(self, workload: Workload, **options) -> None:
        super().__init__(**options)
        self._length = workload.output_tokens.astype(np.float64)

    def expected_remaining_many(
        self, requests: Sequence[RequestInfo], generated: Sequence[int], hinted: bool = True
    ) -> np.ndarray:
        length = self._length[[request_index(r.request_id) for r in requests]]
        return np.maximum(1.0, length - np.asarray(generated, dtype=np.float64))
