"""IFEval strict checkers: one followed and one violated response per instruction id, offline."""

import inspect

import pytest
from pydantic import ValidationError

from reward_server.config import WorkerSettings
from reward_server.types import IFEVAL_KWARGS, IFEvalItem
from reward_server.verifiers.ifeval import IFEvalVerifier
from reward_server.verifiers.ifeval.checks import CHECKS

LONG_EN = "The quick brown fox jumps over the lazy dog near the river bank today."

# instruction id -> (kwargs, followed response, violated response)
CASES = {
    "keywords:existence": ({"keywords": ["river", "fox"]}, LONG_EN, "The dog sleeps."),
    "keywords:frequency": ({"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat Cat CAT", "cat cat"),
    "keywords:forbidden_words": ({"forbidden_words": ["dog"]}, "A hotdog stand.", "A dog stand."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zebra", "zizz"),
    "language:response_language": (
        {"language": "de"},
        "Der schnelle braune Fuchs springt über den faulen Hund am Fluss.",
        LONG_EN,
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        "One. Two.",
        "One. Two. Three.",
    ),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First part.\n***\nSecond part.", "A\n***\n***\nB"),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"}, "one two three four five", "one two"),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        'Start here.\n\n"Then, we end.',
        "Start.\n\nNow end.",
    ),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name] at [address]", "Dear [name]"),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. PS bye"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n- two", "* one\n* two\n* three"),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*a* and **b**", "*a* and ** **"),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nx\nSection 2\ny",
        "Section 1\nx",
    ),
    "detectable_format:json_format": ({}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    "detectable_format:title": ({}, "<<Poem of joy>>\nla la", "<<>>\nla la"),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Write a poem."}, "write a poem. Roses...", "Roses..."),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        'Bye. Any other questions?"',
        "Any other questions? Bye.",
    ),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        "HELLO big WORLD",
        "Hello WORLD",
    ),
    "change_case:english_capital": ({}, LONG_EN.upper(), LONG_EN),
    "change_case:english_lowercase": ({}, LONG_EN.lower(), LONG_EN),
    "punctuation:no_comma": ({}, "No commas here.", "One, two."),
    "startend:quotation": ({}, '  "quoted"  ', '"half quoted'),
}


def test_all_25_instruction_ids_have_checkers_and_cases():
    assert len(IFEVAL_KWARGS) == 25 and set(CHECKS) == set(IFEVAL_KWARGS) == set(CASES)
    for instruction_id, fn in CHECKS.items():
        params = inspect.signature(fn).parameters
        assert tuple(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY) == IFEVAL_KWARGS[instruction_id]


def item(ids, kwargs, response, prompt="prompt"):
    return IFEvalItem.model_validate(
        {
            "reward_type": "ifeval",
            "response": response,
            "prompt": prompt,
            "ground_truth": {"instruction_id_list": ids, "kwargs": kwargs},
        }
    )


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_followed_and_violated(instruction_id):
    kwargs, good, bad = CASES[instruction_id]
    # the dataset pads every row with all kwargs names set to None; they must be ignored
    padded = {**{k: None for k in ("keywords", "num_words", "relation", "language")}, **kwargs}
    verifier = IFEvalVerifier(WorkerSettings())
    assert verifier.verify(item([instruction_id], [padded], good)).score == 1.0
    assert verifier.verify(item([instruction_id], [padded], bad)).score == 0.0


def test_all_instructions_must_hold_and_think_is_ignored():
    verifier = IFEvalVerifier(WorkerSettings())
    ids = ["punctuation:no_comma", "change_case:english_lowercase"]
    assert verifier.verify(item(ids, [{}, {}], "<think>Hmm, OK</think>" + LONG_EN.lower())).score == 1.0
    result = verifier.verify(item(ids, [{}, None], LONG_EN.lower() + ", sure"))
    assert result.score == 0.0 and result.details["followed"] == [False, True]


@pytest.mark.parametrize(
    "ids,kwargs,match",
    [
        (["keywords:teleport"], [{}], "unknown IFEval instruction id"),
        (["keywords:frequency"], [{"keyword": "x", "frequency": 2}], "needs kwargs"),
        (["keywords:frequency"], [{"keyword": "x", "frequency": 2, "relation": "exactly"}], "must be one of"),
        (["punctuation:no_comma", "startend:quotation"], [{}], "2 instruction ids but 1 kwargs"),
    ],
)
def test_bad_ground_truth_is_rejected_at_validation(ids, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        item(ids, kwargs, "x")
