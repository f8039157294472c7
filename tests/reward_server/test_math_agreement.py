"""Differential test: our math reward against Math-Verify called as documented, on a fixed sample of the corpus.

Every disagreement must be one of the documented deviations (bench/differential/math_reference.py, printed in
docs/reward_agreement.md); the full corpus runs in `python -m bench.reward_agreement math`.
"""

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from bench.differential.math_corpus import FORMS, GOLD_WRAPPERS, KINDS, pair
from bench.differential.math_reference import DEVIATIONS, REFERENCES, UNEXPLAINED, explain, judge
from reward_server.config import WorkerSettings
from reward_server.verifiers.math import MathVerifier

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reward_agreement.md"
SAMPLE = range(0, 2200, 11)  # 200 of the benchmark's 2,400 pairs (pair i depends only on the seed and i)


@pytest.fixture(scope="module")
def judged():
    logging.disable(logging.WARNING)  # Math-Verify logs every unparsable string
    try:
        verifier = MathVerifier(WorkerSettings())
        return [judge(pair(i), verifier) for i in SAMPLE]
    finally:
        logging.disable(logging.NOTSET)


def test_sample_covers_every_gold_form_wrapper_and_kind(judged):
    assert {j.pair.category for j in judged} == set(FORMS)
    assert {j.pair.wrapper for j in judged} == set(GOLD_WRAPPERS)
    assert {j.pair.kind for j in judged} == set(KINDS)


@pytest.mark.parametrize("reference", REFERENCES)
def test_every_disagreement_is_a_documented_deviation(judged, reference):
    unexplained = [
        (j.pair.index, j.pair.gold, j.pair.answer, f"ours={j.ours}", f"{reference}={getattr(j, reference)}")
        for j in judged
        if explain(j, reference) == UNEXPLAINED
    ]
    assert not unexplained


def test_agrees_with_the_documented_reference_outside_percents(judged):
    percent_free = [j for j in judged if "%" not in j.pair.gold + j.pair.answer and "percent" not in j.pair.gold]
    assert len(percent_free) > 150
    assert all(j.ours == j.documented for j in percent_free)


def test_no_near_miss_or_wrong_answer_is_rewarded(judged):
    assert not [(j.pair.gold, j.pair.answer) for j in judged if j.pair.kind != "equivalent" and j.ours]


def test_a_disagreement_outside_the_deviations_is_caught(judged):
    # The check above can fail: flip our verdict on pairs no deviation covers and it must report them.
    plain_pairs = [j for j in judged if j.pair.wrapper != "bare" and "%" not in j.pair.gold + j.pair.answer][:20]
    flipped = [dataclasses.replace(j, ours=not j.ours) for j in plain_pairs]
    assert all(explain(j, "documented") == UNEXPLAINED for j in flipped)


def test_docs_table_lists_exactly_the_deviations_in_code():
    section = DOCS.read_text().split("## Math deviations", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| (.+) \|$", section, flags=re.MULTILINE)
    documented = {name: (refs.strip(), reason.strip()) for name, refs, reason in rows}
    assert set(documented) == {d.name for d in DEVIATIONS}
    for d in DEVIATIONS:
        assert documented[d.name] == (", ".join(d.references), d.reason)
