"""The math behind the ``makespan`` policy: a decode step-time fit from scrapes, each instance's expected work, and an
instance's drain time.

Pure functions and plain objects on what the balancer observes; no I/O. Units: tokens, seconds.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np


class Planned(NamedTuple):
    """One running request as migration planning sees it."""

    remaining: float  # expected output tokens still to come
    context: float  # tokens it holds (prompt + generated): what a move re-prefills, and what each step attends to
    running: Any  # the request itself (load_balancer.policy.RunningRequest); estimates only compare it by identity


class StepTimeFit:
    """Online least-squares fit of a decode step time, ``step ≈ slowness(url) * (t0 + a * b + c * K)`` (seconds).

    ``b`` is the number of running sequences and ``K`` the tokens of context they hold; one observation per clean
    scrape interval of an instance (``InstanceState.decode_step_s``). ``t0, a, c`` are shared: the instances serve one
    model on the same kind of hardware. Older observations fade (``decay`` per round) so the fit follows the cluster it
    serves; a weak ridge toward ``prior`` keeps it defined before any data. ``slowness`` is each instance's step time
    over the round's typical one (1 when unmeasured): the capacity routing divides work by, a property of the
    instance that, unlike its measured tokens/s, does not scale with the batch it happens to run.

    **Outliers.** A scrape interval that hid a prefill stall or a preemption gives a step several times the true one,
    and least squares lets one such sample dominate for hundreds of rounds. Each round's observations are judged by
    their ratio to the fit's prediction: once the fit holds ``min_weight`` observations, those more than
    ``outlier_factor`` times off it either way are dropped. Before that, or when the round's median itself is that far
    off (the cluster changed, or the prior was wrong), the round's median ratio is the yardstick instead, so the fit
    can always learn a new regime from a round that agrees with itself.
    """

    _SCALE = np.array([1.0, 10.0, 1e5])  # feature units: 1, 10 sequences, 100k tokens (keeps the ridge balanced)

    def __init__(
        self,
        prior=(0.02, 0.0, 0.0),
        ridge: float = 1e-3,
        decay: float = 0.98,
        outlier_factor: float = 4.0,  # an observation this many times off the yardstick (either way) is dropped
        min_weight: float = 16.0,  # (decayed) observations before the fit's own prediction is the yardstick
        slowness_decay: float = 0.98,  # per observation of that instance: ~50 (12 s of 0.25 s scrapes) remembered
    ) -> None:
        self.prior = np.asarray(prior, dtype=np.float64) * self._SCALE  # in scaled units
        self.ridge = ridge
        self.decay = decay
        self.outlier_factor = outlier_factor
        self.min_weight = min_weight
        self.slowness_decay = slowness_decay
        self._xtx = np.zeros((3, 3))
        self._xty = np.zeros(3)
        self._weight = 0.0  # decayed count of the observations in the fit
        self._log_slowness: dict[str, float] = {}  # url -> EWMA of log(its step / the round's typical step)

    def predict(self, batch, context) -> np.ndarray:
        """Step seconds of an instance of typical speed running ``batch`` sequences holding ``context`` tokens."""
        t0, a, c = self.coefficients()
        return t0 + a * np.asarray(batch, dtype=np.float64) + c * np.asarray(context, dtype=np.float64)

    def observe(
        self, urls: Sequence[str], batch: Sequence[float], context: Sequence[float], step_s: Sequence[float]
    ) -> np.ndarray:
        """One round of observations (one per instance); returns the (k,) mask of those kept."""
        step = np.asarray(step_s, dtype=np.float64)
        ratio = step / np.maximum(self.predict(batch, context), 1e-12)
        valid = np.isfinite(ratio) & (ratio > 0)
        if not valid.any():
            return valid
        limit = np.log(self.outlier_factor)
        median = float(np.median(ratio[valid]))
        trusted = self._weight >= self.min_weight and abs(np.log(median)) <= limit
        yardstick = 1.0 if trusted else median
        keep = valid & (np.abs(np.log(np.where(valid, ratio, 1.0) / yardstick)) <= limit)
        x = np.column_stack([np.ones(len(step)), batch, context])[keep] / self._SCALE
        self._xtx = self.decay * self._xtx + x.T @ x
        self._xty = self.decay * self._xty + x.T @ step[keep]
        self._weight = self.decay * self._weight + float(keep.sum())
        typical = float(np.median(ratio[keep]))
        for url, r in zip(np.asarray(urls)[keep], ratio[keep]):
            previous = self._log_slowness.get(url, 0.0)
            self._log_slowness[url] = self.slowness_decay * previous + (1.0 - self.slowness_decay) * np.log(r / typical)
        return keep

    def slowness(self, url: str) -> float:
        """``url``'s step time over a typical instance's at the same load (1 when unmeasured)."""
        return float(np.exp(self._log_slowness.get(url, 0.0)))

    def slowness_many(self, urls: Sequence[str]) -> np.ndarray:
        """(k,) :meth:`slowness` of each of ``urls`` (k,)."""
        return np.exp(np.fromiter((self._log_slowness.get(u, 0.0) for u in urls), np.float64, len(urls)))

    def coefficients(self) -> np.ndarray:
        """(3,) t0 (s), a (s per sequence), c (s per context token), each clipped at 0."""
        theta = np.linalg.solve(self._xtx + self.ridge * np.eye(3), self._xty + self.ridge * self.prior)
        return np.maximum(theta / self._SCALE, 0.0)


class InstanceLoads:
    """Expected remaining work per instance, kept incrementally between full refreshes.

    Each request adds its expected remaining tokens ``r`` to the work and its *uncertain* part ``u`` (``r`` when
    its length is guessed, less when the client's hint says it) to its prompt's spread; the variance treats
    siblings' uncertain parts as moving together and different prompts as independent. Arrays indexed by instance
    (``index``), so routing scores every instance in one vectorised expression."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # url -> row
        self.work = np.zeros(8)  # (rows,) sum of expected remaining tokens of the requests routed there
        self.variance = np.zeros(8)  # (rows,) sum over prompts of by_prompt**2: siblings' lengths move together
        self.by_prompt: dict[str, dict[int, float]] = {}  # prompt_key -> row -> its requests' uncertain work there

    def row(self, url: str) -> int:
        k = self.index.get(url)
        if k is None:
            k = self.index[url] = len(self.index)
            if k == len(self.work):
                self.work, self.variance = (np.concatenate([a, np.zeros(len(a))]) for a in (self.work, self.variance))
        return k

    def rebuild(self, placed: Sequence[tuple[str, str]], remaining: np.ndarray, uncertain: np.ndarray) -> None:
        """Start over from requests ``placed`` (k,) as (url, prompt_key) with ``remaining`` (k,) expected tokens of
        which ``uncertain`` (k,) are guessed."""
        rows = np.fromiter((self.row(url) for url, _ in placed), np.int64, len(placed))
        self.work = np.bincount(rows, remaining, minlength=len(self.work)).astype(np.float64)
        self.by_prompt = {}
        for (_, key), k, u in zip(placed, rows.tolist(), uncertain.tolist()):
            per_row = self.by_prompt.setdefault(key, {})
            per_row[k] = per_row.get(k, 0.0) + u
        self.variance = np.zeros(len(self.work))
        for per_row in self.by_prompt.values():
            for k, w in per_row.items():
                self.variance[k] += w * w

    def add(self, url: str, key: str, r: float, u: float) -> None:
        k, rows = self.row(url), self.by_prompt.setdefault(key, {})
        w = rows.get(k, 0.0)
        self.variance[k] += 2.0 * w * u + u * u
        rows[k] = w + u
        self.work[k] += r

    def remove(self, url: str, key: str, r: float, u: float) -> None:
        """Take back exactly what ``add`` counted, so a finish or a move costs no full refresh."""
        k, rows = self.row(url), self.by_prompt.setdefault(key, {})
        w = rows.get(k, 0.0)
        self.variance[k] = max(0.0, self.variance[k] - 2.0 * w * u + u * u)
        rows[k] = w - u
        self.work[k] -= r


class DrainQueue:
    """Requests on one instance as migration planning sees them, and its drain time in the lockstep model.

    ``theta = (t0, a, c)``; an item (:class:`Planned`) with ``r`` tokens remaining at context ``x`` adds ``a * r`` and
    ``c * (x r + r²/2)`` to the drain and sets ``t0 * max r``. ``stall_s`` is re-prefill time already planned here.
    """

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta
        self.items: list[Planned] = []
        self.stall_s = 0.0
        self._sum = 0.0  # a * r + c * (x r + r²/2) over the items
        self._longest: float | None = 0.0  # max r over the items; None when it must be recomputed

    def _cost(self, r: float, x: float) -> float:
        return self.theta[1] * r + self.theta[2] * (x * r + r * r / 2.0)

    def longest(self) -> float:
        if self._longest is None:
            self._longest = max((it.remaining for it in self.items), default=0.0)
        return self._longest

    def add(self, item: Planned) -> None:
        self.items.append(item)
        self._sum += self._cost(item.remaining, item.context)
        if self._longest is not None:
            self._longest = max(self._longest, item.remaining)

    def remove(self, item: Planned) -> None:
        self.items.remove(item)
        self._sum -= self._cost(item.remaining, item.context)
        self._longest = None

    def drain_s(self) -> float:
        return self.theta[0] * self.longest() + self._sum + self.stall_s

    def drain_with_s(self, r: float, x: float) -> float:
        return self.theta[0] * max(self.longest(), r) + self._sum + self._cost(r, x) + self.stall_s

    def finish_s(self, r: float) -> float:
        """When a request here with ``r`` tokens left finishes: the others share only its steps (``min(r_i, r)``)."""
        if not self.items:
            return self.theta[0] * r + self.stall_s
        left, context = np.array([(it.remaining, it.context) for it in self.items]).T
        shared = float(np.sum(self._cost(np.minimum(left, r), context)))
        return self.theta[0] * r + shared + self.stall_s

    def drain_without_s(self, item: Planned) -> float:
        longest = max((it.remaining for it in self.items if it.running is not item.running), default=0.0)
        return self.theta[0] * longest + self._sum - self._cost(item.remaining, item.context) + self.stall_s


class Targets:
    """The instances a move may land on, with each one's drain time after a move scored for all at once.

    Mirrors the :class:`DrainQueue` of each target in arrays (its longest remaining, cost sum, planned stall and
    slowness-scaled ``theta``); :meth:`update` re-reads one queue after a planned move changed it.
    """

    def __init__(self, queues: dict[str, DrainQueue], urls: Sequence[str]) -> None:
        self.queues = queues
        self.urls = sorted(urls)  # ties go to the smallest URL, so plans are deterministic
        self._row = {u: k for k, u in enumerate(self.urls)}
        k = len(self.urls)
        self._longest, self._sum, self._stall = np.zeros(k), np.zeros(k), np.zeros(k)
        self._theta = np.zeros((3, k))  # (3, k) t0, a, c of each target
        for u in self.urls:
            self.update(u)

    def update(self, url: str) -> None:
        k = self._row.get(url)
        if k is not None:
            q = self.queues[url]
            self._longest[k], self._sum[k], self._stall[k] = q.longest(), q._sum, q.stall_s
            self._theta[:, k] = q.theta

    def earliest(self, source: str, r: float, x: float) -> str | None:
        """The target other than ``source`` that would drain earliest with a request of ``r`` tokens left at context
        ``x`` added (:meth:`DrainQueue.drain_with_s`); None when there is none."""
        t0, a, c = self._theta
        drain = t0 * np.maximum(self._longest, r) + self._sum + (a * r + c * (x * r + r * r / 2.0)) + self._stall
        k = self._row.get(source)
        if k is not None:
            drain[k] = np.inf
        if not len(drain) or not np.isfinite(drain.min()):
            return None
        return self.urls[int(np.argmin(drain))]
