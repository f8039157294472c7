"""Online estimate behind the ``makespan`` policy: how long a decode step takes, fitted from scrapes.

Pure math on what the balancer observes; no I/O. Units: tokens, seconds.
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
