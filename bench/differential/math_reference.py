"""Math-Verify called as its documentation shows, our math reward beside it, and the one table of deviations.

References, each `verify(parse(gold), parse(prediction))` with Math-Verify's default extraction configs:
- `plain`: the gold exactly as the dataset holds it, the prediction the response's last box, `\\boxed{<content>}`.
- `documented`: the same, but a bare gold (no `$`, `\\(`, `\\boxed`) goes in `$...$`, as Math-Verify's README says
  LaTeX must ("Do note that the latex must be placed in latex environment to be parsable").
- `extraction`: the documented gold against Math-Verify's own pick from the whole response, with the prediction
  config its README recommends when the model is told to box its answer
  (`LatexExtractionConfig(boxed_match_priority=0)`, `ExprExtractionConfig()`).

Every disagreement with a reference must be explained by one DEVIATIONS entry whose predicate holds for that pair
(docs/reward_agreement.md prints the same table); anything else is `UNEXPLAINED`, a bug.

`python -m bench.differential.math_reference` reads [[gold, answer], ...] as JSON on stdin and prints the
`documented` verdicts: the benchmark runs it under a second antlr runtime (see bench/reward_agreement.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Callable

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from bench.differential.math_corpus import MathPair
from reward_server.config import WorkerSettings
from reward_server.types import MathItem
from reward_server.verifiers.math import SPACED_DIGITS, MathVerifier

REFERENCES = ("documented", "plain", "extraction")
UNEXPLAINED = "unexplained"
# A number followed by a percent sign in any spelling the corpus uses; Math-Verify's ExprExtractionConfig reads the
# plain-text form `N%` as a percentage under either antlr runtime.
_PERCENT_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\}|percent)")


def documented_gold(pair: MathPair) -> str:
    return f"${pair.gold}$" if pair.wrapper == "bare" else pair.gold


def documented(pair: MathPair) -> bool:
    return verify(parse(documented_gold(pair)), parse(f"\\boxed{{{pair.answer}}}"))


def plain(pair: MathPair) -> bool:
    return verify(parse(pair.gold), parse(f"\\boxed{{{pair.answer}}}"))


def extraction(pair: MathPair) -> bool:
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return verify(parse(documented_gold(pair)), parse(pair.response, config))


def percent_as_plain_text(pair: MathPair) -> bool | None:
    """Math-Verify's verdict with every LaTeX percent rewritten as plain-text `N%`; None if no side has one."""
    gold_pct, answer_pct = _PERCENT_NUMBER.findall(pair.gold), _PERCENT_NUMBER.findall(pair.answer)
    if len(gold_pct) != 1 and len(answer_pct) != 1:
        return None
    def as_percent(number: str) -> list:
        # Without the string fallback, which would be the number with its percent sign dropped.
        return parse(f"{number}%", [ExprExtractionConfig()], fallback_mode="no_fallback")

    gold = as_percent(gold_pct[0]) if len(gold_pct) == 1 else parse(documented_gold(pair))
    answer = as_percent(answer_pct[0]) if len(answer_pct) == 1 else parse(f"\\boxed{{{pair.answer}}}")
    return verify(gold, answer)


@dataclass(frozen=True)
class Judged:
    pair: MathPair
    ours: bool
    documented: bool
    plain: bool
    extraction: bool


@dataclass(frozen=True)
class Deviation:
    name: str
    references: tuple[str, ...]  # the references whose disagreements it may explain
    applies: Callable[[Judged, str], bool]  # does it explain this pair's disagreement with that reference?
    reason: str  # why we deviate: the row of the docs table


def _bare_gold(j: Judged, reference: str) -> bool:
    return j.pair.wrapper == "bare" and j.ours == j.documented


def _latex_percent(j: Judged, reference: str) -> bool:
    return percent_as_plain_text(j.pair) == j.ours


def _earlier_match(j: Judged, reference: str) -> bool:
    boxes = j.pair.response.count("\\boxed") + j.pair.response.count("\\fbox")
    return boxes > 1 and j.ours == j.documented


def _spaced_digits(j: Judged, reference: str) -> bool:
    return bool(SPACED_DIGITS.search(j.pair.answer)) and not j.ours


DEVIATIONS = (
    Deviation(
        "bare_latex_gold",
        ("plain",),
        _bare_gold,
        "A gold without a LaTeX environment (`(1, 2]`, `\\pm 2`, `2\\frac{1}{2}`) is parsed inside `$...$`, as "
        "Math-Verify's README requires; its plain `parse(gold)` reads only the last plain number of such a gold "
        "(`2`, `2`, `\\frac{1}{2}`) or nothing, which both rejects right answers and accepts wrong ones. "
        "Agreement with the `documented` reference is required instead.",
    ),
    Deviation(
        "latex_percent",
        ("documented", "plain", "extraction"),
        _latex_percent,
        "Percents (`25\\%`, `25%`, `25\\text{ percent}`) are read as 25 * 1/100, which Math-Verify's grader equates "
        "with 25 and with 0.25. The installed Math-Verify cannot parse a LaTeX percent: latex2sympy2_extended "
        "1.11.0's parser generated for antlr 4.9.3 (the runtime hydra-core pins here) raises on every percent "
        "atom, so `\\boxed{25\\%}` only matches the identical string. Required: our verdict equals Math-Verify's "
        "with each percent written as plain-text `25%` (which its ExprExtractionConfig reads under any runtime).",
    ),
    Deviation(
        "last_box_only",
        ("extraction",),
        _earlier_match,
        "We score the last `\\boxed{}` of the answer part (after `</think>`), as the AM-Thinking-v1 report does; "
        "Math-Verify's own extraction picks by pattern priority and may take an earlier box, a `$...$` or a plain "
        "number. Required: agreement with the `documented` reference on the last box.",
    ),
    Deviation(
        "spaced_digits",
        ("documented", "plain", "extraction"),
        _spaced_digits,
        "An answer with two digits separated only by whitespace (`9 1`) is wrong: Math-Verify reads it as a sum "
        "(`9 1` = 10, `2 3` = 5) or a product (`1 0` = 0), so a model could earn `2+3` by copying the operands. "
        "Required: such an answer scores 0.",
    ),
)


def judge(pair: MathPair, verifier: MathVerifier | None = None) -> Judged:
    verifier = verifier or MathVerifier(WorkerSettings())
    item = MathItem(reward_type="math", response=pair.response, ground_truth=pair.gold)
    return Judged(
        pair=pair,
        ours=verifier.verify(item).score == 1.0,
        documented=documented(pair),
        plain=plain(pair),
        extraction=extraction(pair),
    )


def explain(j: Judged, reference: str) -> str | None:
    """None if we agree with `reference`, else the name of the deviation that explains it, else UNEXPLAINED."""
    if j.ours == getattr(j, reference):
        return None
    for deviation in DEVIATIONS:
        if reference in deviation.references and deviation.applies(j, reference):
            return deviation.name
    return UNEXPLAINED


def _documented_verdicts_from_stdin() -> None:
    rows = json.load(sys.stdin)
    verdicts = [bool(verify(parse(gold), parse(f"\\boxed{{{answer}}}"))) for gold, answer in rows]
    json.dump(verdicts, sys.stdout)


if __name__ == "__main__":
    _documented_verdicts_from_stdin()
