"""Synthetic arithmetic problems in the recipe's prompt format (DESIGN.md §2).

The CPU demo, the tiny model's tokenizer and the tests all draw from here, so the format lives in one place.

The train / held-out split is a pure function of the expression (``is_held_out``): a problem is held out iff the
SHA-256 of its expression text (e.g. ``"17+25"``), read as a big-endian integer, is below ``held_out_percent`` mod
100. Warm-up and RL draw only train problems (``sample_problem(..., split="train")``); evaluation uses a fixed set
of distinct held-out problems (``eval_problems``), so its accuracy measures problems the model never trained on.

A problem is one operation (``17+25``) or a chain of them evaluated left to right (``3+4-2``, ``operands`` > 2),
whose solution writes each step. A held-out chain was never trained on, but the one-operation facts it steps
through were, inside other chains: what RL teaches on train chains can carry over to held-out ones, where a
held-out single fact shares nothing learnable with the train facts (bench/results/heldout_research.md).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

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


def problem_of(numbers: Sequence[int], ops: Sequence[str]) -> Problem:
    """``numbers[0] ops[0] numbers[1] ops[1] ...`` evaluated left to right; the solution writes one step per operator.

    ``problem_of((17, 25), "+")`` is "What is 17+25?" with solution ``<think>17+25=42</think> ...``; a chain
    ``problem_of((3, 4, 2), "+-")`` is "What is 3+4-2?" with ``<think>3+4=7 7-2=5</think> ...``.
    """
    if len(ops) != len(numbers) - 1 or not ops:
        raise ValueError(f"{len(numbers)} numbers need {len(numbers) - 1} operators, got {ops!r}")
    if len(ops) > 1 and "*" in ops:
        raise ValueError("chains are evaluated left to right, which is the usual reading only for + and -")
    steps, value = [], numbers[0]
    for op, b in zip(ops, numbers[1:], strict=True):
        result = {"+": value + b, "-": value - b, "*": value * b}[op]
        steps.append(f"{value}{op}{b}={result}")
        value = result
    expr = str(numbers[0]) + "".join(f"{op}{b}" for op, b in zip(ops, numbers[1:], strict=True))
    return Problem(
        question=f"What is {expr}?",
        answer=str(value),
        solution=f"<think>{' '.join(steps)}</think> <answer>\\boxed{{{value}}}</answer>",
    )


@dataclass(frozen=True)
class ArithmeticTask:
    """Which problems exist: the knobs are documented once, in ``am_rl.config.schema`` (``am_rl.*``)."""

    max_operand: int = 99
    ops: str = OPS
    max_second_operand: int | None = None
    operands: int = 2
    held_out_percent: int = 0

    def ranges(self) -> list[range]:
        """The range of each operand: the first 0..max_operand, the others 0..max_second_operand (or max_operand)."""
        later = self.max_operand if self.max_second_operand is None else self.max_second_operand
        return [range(self.max_operand + 1)] + [range(later + 1)] * (self.operands - 1)


def make_problem(rng: random.Random, task: ArithmeticTask) -> Problem:
    """Operands uniform in their ranges, then each operator uniform in ``task.ops`` (so a two-operand task draws
    a, b, op: the stream the tokenizer and every recorded run were made from)."""
    numbers = [rng.randint(r.start, r.stop - 1) for r in task.ranges()]
    return problem_of(numbers, [rng.choice(task.ops) for _ in range(task.operands - 1)])


def make_problems(count: int, seed: int, task: ArithmeticTask = ArithmeticTask()) -> list[Problem]:
    rng = random.Random(seed)
    return [make_problem(rng, task) for _ in range(count)]


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


def all_problems(task: ArithmeticTask) -> list[Problem]:
    """Every problem of the task, in a fixed order (operators, then operands)."""
    return [
        problem_of(numbers, ops)
        for ops in product(task.ops, repeat=task.operands - 1)
        for numbers in product(*task.ranges())
    ]


def make_split(task: ArithmeticTask) -> tuple[list[Problem], list[Problem]]:
    """(train, held_out): every problem of the task, partitioned by ``is_held_out``."""
    train, held_out = [], []
    for p in all_problems(task):
        (held_out if is_held_out(expression(p), task.held_out_percent) else train).append(p)
    return train, held_out


def sample_problem(rng: random.Random, task: ArithmeticTask, split: str = "all") -> Problem:
    """A uniform draw from the split's problems (rejection sampling over ``make_problem``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "all" and not 0 < task.held_out_percent < 100:
        raise ValueError(f"held_out_percent must be in 1..99 to draw from split {split!r}, got {task.held_out_percent}")
    while True:
        problem = make_problem(rng, task)
        if in_split(problem, split, task.held_out_percent):
            return problem


def sample_problems(count: int, seed: int, task: ArithmeticTask, split: str = "all") -> list[Problem]:
    rng = random.Random(seed)
    return [sample_problem(rng, task, split) for _ in range(count)]


def eval_problems(count: int, seed: int, task: ArithmeticTask, split: str) -> list[Problem]:
    """A fixed set of ``count`` distinct problems of ``split`` (a seeded sample without replacement)."""
    train, held_out = make_split(task)
    pool = {"train": train, "held_out": held_out, "all": train + held_out}[split]
    if count > len(pool):
        raise ValueError(f"{count} evaluation problems asked of split {split!r}, which has only {len(pool)}")
    return random.Random(seed).sample(pool, count)
