"""Math: the last \\boxed{...} (or \\fbox) of the answer part, compared with the ground truth by Math-Verify."""

import logging
import time

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

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


def _parse_gold(ground_truth: str) -> list:
    gold = parse(f"\\boxed{{{ground_truth}}}", [LatexExtractionConfig()], parsing_timeout=_MV_TIMEOUT_S)
    return gold or parse(ground_truth, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=_MV_TIMEOUT_S)


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
        gold = _parse_gold(item.ground_truth)
        if not gold:
            return Verdict(score=0.0, details={"reason": "unparsable_ground_truth", "answer": boxed})
        pred = parse(f"\\boxed{{{boxed}}}", [LatexExtractionConfig()], parsing_timeout=_MV_TIMEOUT_S)
        if not pred:
            return Verdict(score=0.0, details={"reason": "unparsable_answer", "answer": boxed})
        ok = verify(gold, pred, timeout_seconds=_MV_TIMEOUT_S)
        return Verdict(score=1.0 if ok else 0.0, details={"answer": boxed, "reason": "match" if ok else "mismatch"})
