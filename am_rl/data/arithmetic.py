"""Synthetic arithmetic problems in the recipe's prompt format (DESIGN.md §2).

The CPU demo, the tiny model's tokenizer and the tests all draw from here, so the format lives in one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are a helpful assistant. Think first, then answer: "
    "<think> reasoning </think> <answer> final answer </answer>."
)
MATH_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."


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


def make_problem(rng: random.Random, max_operand: int = 99) -> Problem:
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
    op = rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    expr = f"{a}{op}{b}"
    return Problem(
        question=f"What is {expr}?",
        answer=str(value),
        solution=f"<think>{expr}={value}</think> <answer>\\boxed{{{value}}}</answer>",
    )


def make_problems(count: int, seed: int, max_operand: int = 99) -> list[Problem]:
    rng = random.Random(seed)
    return [make_problem(rng, max_operand) for _ in range(count)]
