"""Static placements for the simulator, behind the same ``RoutingPolicy`` interface as the live policies.

- ``VerlChunks``: what verl does without a balancer: the trainer repeats each prompt n times, keeps the copies
  contiguous and hands contiguous chunks to the instances, so all of a prompt's samples share one instance.
- ``LongestFirstOracle``: a reference no live policy can be, since it knows every output length in advance. It
  places requests longest first, each on the instance whose projected finish stays earliest (classic LPT, with the
  projection below). It is a strong static placement, not a bound: it never migrates.

Both read the request index from ``request_id`` with :func:`bench.sim.engine.request_index`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.sim.calibration import DEFAULT_SPEED, SpeedModel
from bench.sim.engine import request_index
from bench.sim.workload import Workload
from load_balancer.policies import StatelessPolicy
from load_balancer.policy import InstanceState, RequestInfo


class VerlChunks(StatelessPolicy):
    """Request ``i`` of ``n`` (prompt-major order) goes to instance ``i * m // n``."""

    name = "verl_chunks"

    def __init__(self, n_requests: int) -> None:
        self.n_requests = n_requests

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        return instances[request_index(request.request_id) * len(instances) // self.n_requests].url


class LongestFirstOracle(StatelessPolicy):
    """LPT placement with known lengths.

    All of an instance's sequences start together and advance in lockstep (one token per step each), so an instance
    holding lengths ``L_1 >= L_2 >= ...`` with prompts ``p_j`` finishes after about
    ``t0 * L_1 + a * sum L_j + max(c1 * C_1, c2 * sum C_j)`` seconds, ``C_j = p_j L_j + L_j**2 / 2`` (the speed
    model summed over the steps, prefill and queueing left out). Requests are placed longest first, each on the
    instance whose projected finish after adding it is earliest.
    """

    name = "oracle_longest_first"

    def __init__(self, workload: Workload, n_instances: int, speed: SpeedModel = DEFAULT_SPEED) -> None:
        length = workload.output_tokens.astype(np.float64)
        prompt = workload.prompt_tokens.astype(np.float64)
        context = prompt * length + length * (length - 1.0) / 2.0
        longest = np.zeros(n_instances)  # L_1 per instance
        first_context = np.zeros(n_instances)  # C_1 per instance
        tokens = np.zeros(n_instances)  # sum L_j
        contexts = np.zeros(n_instances)  # sum C_j
        self._assigned = np.empty(workload.n, dtype=np.int64)
        for i in np.argsort(-length, kind="stable"):
            first = np.where(longest > 0, first_context, context[i])
            projected = (
                speed.t0_s * np.maximum(longest, length[i])
                + speed.per_seq_s * (tokens + length[i])
                + np.maximum(speed.attn_latency_s_per_token * first, speed.kv_read_s_per_token * (contexts + context[i]))
            )
            k = int(np.argmin(projected))
            self._assigned[i] = k
            if longest[k] == 0:
                longest[k], first_context[k] = length[i], context[i]
            tokens[k] += length[i]
            contexts[k] += context[i]

    def choose(self, request: RequestInfo, instances: Sequence[InstanceState], now: float) -> str:
        return instances[int(self._assigned[request_index(request.request_id)])].url
