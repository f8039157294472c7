"""Math: the last \\boxed{...} (or \\fbox) of the answer part, compared with the ground truth by Math-Verify."""

import logging
import re
import time

from latex2sympy2_extended.latex2sympy2 import convert_to_pct
from math_verify import parse, verify
from sympy import Number

from reward_server.config import WorkerSettings
from reward_server.types import MathItem, Verdict
from reward_server.verifiers import register

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000  # no real final answer is longer; longer boxes are rejected before Math-Verify sees them
_BOX_OPENERS = ("\\boxed", "\\fbox")
# Math-Verify's own timeouts are SIGALRM-based: they stop slow Python, not hangs inside C code; the worker's
# hard kill (WorkerSettings.math_timeout_s) covers those.
_MV_TIMEOUT_S = 3


def answer_part(response: str) -> str:
    _, sep, after = response.rpartition("</think>")
    return after if sep else response


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}/\\fbox{...} with balanced braces, or None.

    Hand-written because Math-Verify's extraction picks by priority, not by position, and we must take the
    last box of the answer, as the report does.
    """
    start = max(text.rfind(opener) for opener in _BOX_OPENERS)
    while start >= 0:
        i = start + len("\\boxed") if text.startswith("\\boxed", start) else start + len("\\fbox")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
        start = max(text.rfind(opener, 0, start) for opener in _BOX_OPENERS)
    return None


# Two digits with only whitespace between them. Math-Verify reads "9 1" as 9 + 1 = 10 ("2 3" as 5, "1 0" as 1*0): a
# demo rollout's boxed "9 1" was rewarded for ground truth 10, and a boxed "2 3" would earn "What is 2+3?" by copying
# the operands. No answer means a sum when written that way, so such an answer is scored wrong.
SPACED_DIGITS = re.compile(r"\d\s+\d")
# A LaTeX environment Math-Verify extracts from (an escaped \\$ is a dollar sign, not math).
_ENVIRONMENT = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
# A percent sign right after a number: `\\%`, `%`, or the spellings Math-Verify's normaliser turns into one.
_PERCENT = re.compile(r"(?<=\d)\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\}|\s*percent\b)")


def gold_text(ground_truth: str) -> str:
    """The ground truth as Math-Verify's documentation says to hand it over: inside a LaTeX environment.

    A gold that already has one (`$..$`, `\\(..\\)`, `\\boxed{}`) is parsed exactly as given; a bare gold is put in
    `$..$` (parse() only extracts LaTeX from an environment: bare `(1, 2]` or `\\pm 2` would be read as `2`).
    """
    return ground_truth if _ENVIRONMENT.search(ground_truth) else f"${ground_truth}$"


def parse_math(text: str) -> list:
    """Math-Verify's parse() with its default extraction configs, plus percents written in LaTeX.

    latex2sympy2_extended 1.11.0's parser generated for antlr 4.9.3 (the runtime hydra-core pins in our
    environment) fails on every percent (`25\\%` stays an unparsed string, so `\\boxed{25\\%}` matched nothing
    but the identical string); on antlr 4.13.2 it reads X% as X * UnevaluatedExpr(1/100), which Math-Verify's
    grader compares with both X and X/100. We build that same value with its own convert_to_pct, and keep the
    strings Math-Verify extracted from the text as written (it compares those too).
    """
    parsed = parse(text, parsing_timeout=_MV_TIMEOUT_S)
    if len(_PERCENT.findall(text)) == 1:
        number = parse(_PERCENT.sub("", text), parsing_timeout=_MV_TIMEOUT_S)
        if number and isinstance(number[0], Number):
            return [convert_to_pct(number[0]), *(s for s in parsed if isinstance(s, str))]
    return parsed


@register("math")
class MathVerifier:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings

    def hard_timeout_s(self, item: MathItem) -> float:
        return self.settings.math_timeout_s

    def verify(self, item: MathItem) -> Verdict:
        t0 = time.monotonic()
        verdict = self._judge(item)
        # Math-Verify swallows its own timeouts (a mismatch, or an empty parse): a verification that ran as long
        # as one of them may have been cut short by a busy machine, so its verdict is not cached.
        verdict.cacheable = time.monotonic() - t0 < _MV_TIMEOUT_S
        return verdict

    def _judge(self, item: MathItem) -> Verdict:
        boxed = last_boxed(answer_part(item.response))
        if boxed is None:
            return Verdict(score=0.0, details={"reason": "no_boxed_answer"})
        if len(boxed) > MAX_ANSWER_CHARS:
            return Verdict(score=0.0, details={"reason": "answer_too_long", "answer_chars": len(boxed)})
        if SPACED_DIGITS.search(boxed):
            return Verdict(score=0.0, details={"reason": "spaced_digits", "answer": boxed})
        gold = parse_math(gold_text(item.ground_truth))
        if not gold:
            return Verdict(score=0.0, details={"reason": "unparsable_ground_truth", "answer": boxed})
        pred = parse_math(f"\\boxed{{{boxed}}}")
        if not pred:
            return Verdict(score=0.0, details={"reason": "unparsable_answer", "answer": boxed})
        ok = verify(gold, pred, timeout_seconds=_MV_TIMEOUT_S)
        return Verdict(score=1.0 if ok else 0.0, details={"answer": boxed, "reason": "match" if ok else "mismatch"})
