"""The math of distillation's per-query numbers, as pure functions: pass rate, its coefficient of variation over
passes (DeepDistill), percentiles, and the teachers' majority answer (AM-Thinking-v1 report §2.2).

A *pass* is one teacher's samples of a query, split into `passes` groups of equal size (sample j is in pass
j % passes); the coefficient of variation is over the pass rates of every teacher's passes: 0 when every pass agrees,
large when the query's outcome depends on which teacher or which pass drew it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence


def pass_rate(outcomes: Sequence[bool]) -> float:
    if not outcomes:
        raise ValueError("pass rate of no samples")
    return sum(outcomes) / len(outcomes)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Population standard deviation / mean; None when the mean is 0 (no pass anywhere: nothing to vary around)."""
    if not values:
        raise ValueError("coefficient of variation of no values")
    mean = sum(values) / len(values)
    if mean == 0:
        return None
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def percentiles(values: Sequence[float], qs: Sequence[int] = (10, 50, 90, 100)) -> dict[str, float]:
    """Nearest-rank percentiles ({"p50": ...}); empty when there are no values."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{q}": ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] for q in qs}


@dataclass(frozen=True)
class Grade:
    """A query's difficulty under the teachers, as written into its row's extra_info."""

    pass_rate: float  # verified samples / scored samples, over every teacher
    pass_rate_cv: float | None  # coefficient of variation of the per-(teacher, pass) rates; None when none passed
    samples: int  # scored samples behind the rate
    passes: int  # verified samples


def grade(outcomes: dict[str, dict[int, bool]], passes: int) -> Grade:
    """`outcomes[teacher][sample index]` -> verified. Every teacher's samples are split into `passes` groups."""
    groups: dict[tuple[str, int], list[bool]] = {}
    for teacher, samples in outcomes.items():
        for j, ok in samples.items():
            groups.setdefault((teacher, j % passes), []).append(ok)
    flat = [ok for samples in outcomes.values() for ok in samples.values()]
    cv = coefficient_of_variation([pass_rate(g) for g in groups.values()])
    return Grade(pass_rate(flat), cv, len(flat), sum(flat))


def cluster_answers(answers: Sequence[str], equal: set[tuple[str, str]]) -> list[set[str]]:
    """Group distinct answers into classes of equivalent ones (union of the `equal` pairs), largest first by the
    number of `answers` they hold; ties go to the class holding the earliest answer."""
    parent = {a: a for a in answers}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in equal:
        if a in parent and b in parent:
            parent[root(a)] = root(b)
    counts = Counter(answers)
    classes: dict[str, set[str]] = {}
    for a in dict.fromkeys(answers):
        classes.setdefault(root(a), set()).add(a)
    first = {a: i for i, a in reversed(list(enumerate(answers)))}
    return sorted(
        classes.values(), key=lambda c: (-sum(counts[a] for a in c), min(first[a] for a in c))
    )


def majority(answers: Sequence[str], equal: set[tuple[str, str]]) -> tuple[str, int] | None:
    """(the most common answer of the largest class, how many answers the class holds), or None without answers."""
    if not answers:
        return None
    top = cluster_answers(answers, equal)[0]
    counts = Counter(answers)
    representative = max(sorted(top), key=lambda a: counts[a])
    return representative, sum(counts[a] for a in top)
