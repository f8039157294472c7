"""Response filters of distillation (AM-Thinking-v1 report §2.3): pure checks on one teacher response.

Each filter is switched on by its threshold in FilterOptions (None: off) and returns the reason it drops a response
with its evidence, or None. The order is fixed and the first failing filter names the drop, so a report counts each
dropped response once: truncated, structure, repetition, length, perplexity.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

# A complete response: one think block, then a non-empty answer block after it and nothing but space around.
_STRUCTURE = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
# Without answer tags: one think block, then a non-empty final part.
_THINK_ONLY = re.compile(r"\s*<think>(?P<think>.*?)</think>(?P<answer>.*)", re.DOTALL)


@dataclass(frozen=True)
class FilterOptions:
    drop_truncated: bool = True  # a response that hit max_tokens has no complete answer: dropped as "truncated"
    structure: bool = True  # require <think>...</think> then an answer, and the conversation to end on the assistant
    answer_tags: bool = True  # the answer must sit in <answer>...</answer> (the AM system prompt's format)
    # consecutive repetition: drop when some phrase of 1..repetition_max_ngram words occurs this many times in a
    # row ("a b a b a b" is "a b" three times); None: off
    repetition_min_copies: int | None = 8
    repetition_max_ngram: int = 32  # the longest phrase (in words) looked for
    max_length: int | None = 32768  # SFT maximum: prompt + response tokens over this are dropped, never cut; None: off
    max_perplexity: float | None = None  # drop above this perplexity under the scoring model; None: off

    def __post_init__(self) -> None:
        if self.repetition_min_copies is not None and self.repetition_min_copies < 2:
            raise ValueError(f"repetition_min_copies must be >= 2, got {self.repetition_min_copies}")
        if self.repetition_max_ngram < 1:
            raise ValueError(f"repetition_max_ngram must be >= 1, got {self.repetition_max_ngram}")
        if self.max_perplexity is not None and self.max_perplexity <= 1.0:
            raise ValueError(f"max_perplexity must be > 1 (a perplexity is at least 1), got {self.max_perplexity}")


@dataclass(frozen=True)
class Drop:
    reason: str  # truncated | structure | repetition | length | perplexity
    detail: str  # the evidence


def structure_problem(text: str, prompt: list[dict], answer_tags: bool = True) -> str | None:
    """Why `text` as the final assistant turn after `prompt` is not a complete think-and-answer response, or None."""
    if prompt and prompt[-1].get("role") == "assistant":
        return "the prompt already ends with an assistant turn: the response would not be the last turn's answer"
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        return f"expected one <think> and one </think>, found {text.count('<think>')} and {text.count('</think>')}"
    match = (_STRUCTURE if answer_tags else _THINK_ONLY).fullmatch(text)
    if match is None:
        return "not <think>...</think> <answer>...</answer>" if answer_tags else "text before <think>"
    if not match["think"].strip():
        return "empty think part"
    if not match["answer"].strip():
        return "empty answer part"
    return None


def longest_repeat(units: list, max_ngram: int) -> tuple[int, int, int]:
    """(copies, n, start): the phrase of n units (1 <= n <= max_ngram) repeated most often back to back in `units`,
    how many times, and where its run starts. (1, 0, 0) when nothing repeats."""
    if not units:
        return 1, 0, 0
    _, codes = np.unique(np.array(units, dtype=object).astype(str), return_inverse=True)
    best = (1, 0, 0)
    for n in range(1, min(max_ngram, len(units) // 2) + 1):
        # same[i]: unit i equals unit i+n; a run of r such positions is the phrase at its start, then r/n more copies
        same = np.concatenate(([False], codes[:-n] == codes[n:], [False]))
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        starts, ends = edges[::2], edges[1::2]
        if not len(starts):
            continue
        lengths = ends - starts
        i = int(np.argmax(lengths))
        copies = 1 + int(lengths[i]) // n
        if copies > best[0]:
            best = (copies, n, int(starts[i]))
    return best


def perplexity(logprobs: list[float]) -> float:
    """exp of the mean negative log-likelihood of the response tokens."""
    if not logprobs:
        raise ValueError("perplexity of an empty response")
    return math.exp(-sum(logprobs) / len(logprobs))


def check_response(
    text: str,
    prompt: list[dict],
    finish_reason: str,
    length: int,
    ppl: float | None,
    opts: FilterOptions,
) -> Drop | None:
    """The first filter that drops this response (`length`: prompt + response tokens; `ppl`: its perplexity under
    the scoring model, None when not measured), or None when it passes every filter that is on."""
    if opts.drop_truncated and finish_reason == "length":
        return Drop("truncated", "hit max_tokens")
    if opts.structure:
        problem = structure_problem(text, prompt, opts.answer_tags)
        if problem:
            return Drop("structure", problem)
    if opts.repetition_min_copies is not None:
        words = text.split()
        copies, n, start = longest_repeat(words, opts.repetition_max_ngram)
        if copies >= opts.repetition_min_copies:
            phrase = " ".join(words[start : start + n])[:80]
            return Drop("repetition", f"{phrase!r} ({n} words) {copies} times in a row")
    if opts.max_length is not None and length > opts.max_length:
        return Drop("length", f"{length} tokens > {opts.max_length}")
    if opts.max_perplexity is not None:
        if ppl is None:
            raise ValueError("max_perplexity is set but the response's perplexity was not measured")
        if ppl > opts.max_perplexity:
            return Drop("perplexity", f"{ppl:.2f} > {opts.max_perplexity}")
    return None
