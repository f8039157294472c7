"""Synthetic arithmetic problems in the recipe's prompt format (DESIGN.md §2).

The CPU demo, the tiny model's tokenizer and the tests all draw from here, so the format lives in one place.

The train / held-out split is a pure function of the expression (``is_held_out``): a problem is held out iff the
SHA-256 of its expression text (e.g. ``"17+25"``), read as a big-endian integer, is below ``held_out_percent`` mod
100. Warm-up and RL draw only train problems (``sample_problem(..., split="train")``); evaluation uses a fixed set
of distinct held-out problems (``eval_problems``), so its accuracy measures problems the model never trained on.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are a helpful assistant. Think first, then answer: "
    "<think> reasoning </think> <answer> final answer </answer>."
)
MATH_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
OPS = "+-*"
SPLITS = ("train", "held_out", "all")


@dataclass(frozen=True)
class Problem:
    question: str  # e.g. "What is 17+25?"
    answer: str  # ground truth, e.g. "42"
    solution: str  # a correct response in the recipe format, for warm-up and tokenizer training

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{self.question} {MATH_SUFFIX}"},
        ]


def problem_of(a: int, op: str, b: int) -> Problem:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    expr = f"{a}{op}{b}"
    return Problem(
        question=f"What is {expr}?",
        answer=str(value),
        solution=f"<think>{expr}={value}</think> <answer>\\boxed{{{value}}}</answer>",
    )


def make_problem(rng: random.Random, max_operand: int = 99, ops: str = OPS, max_second: int | None = None) -> Problem:
    """a op b, a uniform in 0..max_operand, b in 0..max_second (default max_operand), op uniform in ops."""
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand if max_second is None else max_second)
    return problem_of(a, rng.choice(ops), b)


def make_problems(
    count: int, seed: int, max_operand: int = 99, ops: str = OPS, max_second: int | None = None
) -> list[Problem]:
    rng = random.Random(seed)
    return [make_problem(rng, max_operand, ops, max_second) for _ in range(count)]


# ---- train / held-out split ---------------------------------------------------------------------------------------


def expression(problem: Problem) -> str:
    """``"What is 17+25?"`` -> ``"17+25"``."""
    return problem.question.removeprefix("What is ").removesuffix("?")


def is_held_out(expr: str, held_out_percent: int) -> bool:
    """Whether the problem with expression ``expr`` (``"17+25"``) is held out: sha256(expr) mod 100 < percent.

    Depends on the expression only, so the split is the same in every process, run and config that shares the
    percentage, and a larger percentage holds out a superset.
    """
    digest = hashlib.sha256(expr.encode()).digest()
    return int.from_bytes(digest, "big") % 100 < held_out_percent


def in_split(problem: Problem, split: str, held_out_percent: int) -> bool:
    if split == "all":
        return True
    held_out = is_held_out(expression(problem), held_out_percent)
    return held_out if split == "held_out" else not held_out


def all_problems(max_operand: int, ops: str = OPS, max_second: int | None = None) -> list[Problem]:
    """Every problem of the task, in a fixed order (operator, then a, then b)."""
    bs = range((max_operand if max_second is None else max_second) + 1)
    return [problem_of(a, op, b) for op in ops for a in range(max_operand + 1) for b in bs]


def make_split(
    max_operand: int, ops: str, held_out_percent: int, max_second: int | None = None
) -> tuple[list[Problem], list[Problem]]:
    """(train, held_out): every problem of the task, partitioned by ``is_held_out``."""
    train, held_out = [], []
    for p in all_problems(max_operand, ops, max_second):
        (held_out if is_held_out(expression(p), held_out_percent) else train).append(p)
    return train, held_out


def sample_problem(
    rng: random.Random,
    max_operand: int,
    ops: str = OPS,
    split: str = "all",
    held_out_percent: int = 0,
    max_second: int | None = None,
) -> Problem:
    """A uniform draw from the split's problems (rejection sampling over ``make_problem``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "all" and not 0 < held_out_percent < 100:
        raise ValueError(f"held_out_percent must be in 1..99 to draw from split {split!r}, got {held_out_percent}")
    while True:
        problem = make_problem(rng, max_operand, ops, max_second)
        if in_split(problem, split, held_out_percent):
            return problem


def sample_problems(
    count: int,
    seed: int,
    max_operand: int,
    ops: str = OPS,
    split: str = "all",
    held_out_percent: int = 0,
    max_second: int | None = None,
) -> list[Problem]:
    rng = random.Random(seed)
    return [sample_problem(rng, max_operand, ops, split, held_out_percent, max_second) for _ in range(count)]


def eval_problems(
    count: int,
    seed: int,
    max_operand: int,
    ops: str,
    split: str,
    held_out_percent: int,
    max_second: int | None = None,
) -> list[Problem]:
    """A fixed set of ``count`` distinct problems of ``split`` (a seeded sample without replacement)."""
    train, held_out = make_split(max_operand, ops, held_out_percent, max_second)
    pool = {"train": train, "held_out": held_out, "all": train + held_out}[split]
    if count > len(pool):
        raise ValueError(f"{count} evaluation problems asked of split {split!r}, which has only {len(pool)}")
    return random.Random(seed).sample(pool, count)
