"""The math behind the ``makespan`` policy: a decode step-time fit from scrapes, and an instance's drain time.

Pure functions and plain objects on what the balancer observes; no I/O. Units: tokens, seconds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class StepTimeFit:
    """Online least-squares fit of an instance's decode step time, ``step ≈ t0 + a * b + c * K`` (seconds).

    ``b`` is the number of running sequences and ``K`` the tokens of context they hold; one observation per scraped
    instance is ``step = running / tokens_per_s``. Older observations fade (``decay`` per update) so the fit follows
    the cluster it serves; a weak ridge toward ``prior`` keeps it defined before any data.
    """

    _SCALE = np.array([1.0, 10.0, 1e5])  # feature units: 1, 10 sequences, 100k tokens (keeps the ridge balanced)

    def __init__(self, prior=(0.02, 0.0, 0.0), ridge: float = 1e-3, decay: float = 0.98) -> None:
        self.prior = np.asarray(prior, dtype=np.float64) * self._SCALE  # in scaled units
        self.ridge = ridge
        self.decay = decay
        self._xtx = np.zeros((3, 3))
        self._xty = np.zeros(3)

    def observe(self, batch: Sequence[float], context: Sequence[float], step_s: Sequence[float]) -> None:
        x = np.column_stack([np.ones(len(batch)), batch, context]) / self._SCALE
        self._xtx = self.decay * self._xtx + x.T @ x
        self._xty = self.decay * self._xty + x.T @ np.asarray(step_s, dtype=np.float64)

    def coefficients(self) -> np.ndarray:
        """(3,) t0 (s), a (s per sequence), c (s per context token), each clipped at 0."""
        theta = np.linalg.solve(self._xtx + self.ridge * np.eye(3), self._xty + self.ridge * self.prior)
        return np.maximum(theta / self._SCALE, 0.0)


class DrainQueue:
    """Requests on one instance as migration planning sees them, and its drain time in the lockstep model.

    ``theta = (t0, a, c)``; an item is (remaining tokens r, context tokens x, request); it adds ``a * r`` and
    ``c * (x r + r²/2)`` to the drain and sets ``t0 * max r``. ``stall_s`` is re-prefill time already planned here.
    """

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta
        self.items: list[tuple[float, float, object]] = []
        self.stall_s = 0.0
        self._sum = 0.0  # a * r + c * (x r + r²/2) over the items
        self._longest: float | None = 0.0  # max r over the items; None when it must be recomputed

    def _cost(self, r: float, x: float) -> float:
        return self.theta[1] * r + self.theta[2] * (x * r + r * r / 2.0)

    def longest(self) -> float:
        if self._longest is None:
            self._longest = max((r for r, _, _ in self.items), default=0.0)
        return self._longest

    def add(self, item: tuple[float, float, object]) -> None:
        self.items.append(item)
        self._sum += self._cost(item[0], item[1])
        if self._longest is not None:
            self._longest = max(self._longest, item[0])

    def remove(self, item: tuple[float, float, object]) -> None:
        self.items.remove(item)
        self._sum -= self._cost(item[0], item[1])
        self._longest = None

    def drain_s(self) -> float:
        return self.theta[0] * self.longest() + self._sum + self.stall_s

    def drain_with_s(self, r: float, x: float) -> float:
        return self.theta[0] * max(self.longest(), r) + self._sum + self._cost(r, x) + self.stall_s

    def finish_s(self, r: float) -> float:
        """When a request here with ``r`` tokens left finishes: the others share only its steps (``min(r_i, r)``)."""
        shared = sum(self._cost(min(r_i, r), x) for r_i, x, _ in self.items)
        return self.theta[0] * r + shared + self.stall_s

    def drain_without_s(self, item: tuple[float, float, object]) -> float:
        longest = max((r for r, _, it in self.items if it is not item[2]), default=0.0)
        return self.theta[0] * longest + self._sum - self._cost(item[0], item[1]) + self.stall_s
