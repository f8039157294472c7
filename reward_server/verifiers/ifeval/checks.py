"""The 25 instruction checkers of Google's IFEval, strict mode: `CHECKS[instruction_id](response, **kwargs)`.

Written here rather than taken from `if-verifiable` (which reimplements the same checkers): that package loads
NLTK's punkt pickle through nltk.data (a run-time download) and pulls `datasets` into the worker. Each checker
follows the reference semantics (google-research/instruction_following_eval) with the kwargs names of the
IFEval dataset.
"""

import json
import re
from collections import Counter
from typing import Callable

from reward_server.verifiers.ifeval.text import compare, count_sentences, count_words, detect_language, word_tokens

CHECKS: dict[str, Callable[..., bool]] = {}


def check(instruction_id: str):
    def decorator(fn):
        if instruction_id in CHECKS:
            raise ValueError(f"IFEval checker {instruction_id!r} registered twice")
        CHECKS[instruction_id] = fn
        return fn

    return decorator


@check("keywords:existence")
def keywords_existence(value: str, *, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), value, flags=re.IGNORECASE) for k in keywords)


@check("keywords:frequency")
def keywords_frequency(value: str, *, keyword: str, frequency: int, relation: str) -> bool:
    return compare(len(re.findall(re.escape(keyword), value, flags=re.IGNORECASE)), relation, frequency)


@check("keywords:forbidden_words")
def forbidden_words(value: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", value, flags=re.IGNORECASE) for w in forbidden_words)


@check("keywords:letter_frequency")
def letter_frequency(value: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return compare(Counter(value.lower())[letter.lower()], let_relation, let_frequency)


@check("language:response_language")
def response_language(value: str, *, language: str) -> bool:
    detected = detect_language(value)
    return detected is None or detected == language


@check("length_constraints:number_sentences")
def number_sentences(value: str, *, num_sentences: int, relation: str) -> bool:
    return compare(count_sentences(value), relation, num_sentences)


@check("length_constraints:number_paragraphs")
def number_paragraphs(value: str, *, num_paragraphs: int) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", value)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


@check("length_constraints:number_words")
def number_words(value: str, *, num_words: int, relation: str) -> bool:
    return compare(count_words(value), relation, num_words)


@check("length_constraints:nth_paragraph_first_word")
def nth_paragraph_first_word(value: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = re.split(r"\n\n", value)
    count = sum(1 for p in paragraphs if p.strip())
    if nth_paragraph > count or nth_paragraph < 1:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for letter in word:
        if letter in {".", ",", "?", "!", "'", '"'}:
            break
        first += letter.lower()
    return count == num_paragraphs and first == first_word.lower()


@check("detectable_content:number_placeholders")
def number_placeholders(value: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", value)) >= num_placeholders


@check("detectable_content:postscript")
def postscript(value: str, *, postscript_marker: str) -> bool:
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, value.lower(), flags=re.MULTILINE))


@check("detectable_format:number_bullet_lists")
def number_bullet_lists(value: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", value, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", value, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@check("detectable_format:constrained_response")
def constrained_response(value: str) -> bool:
    return any(option in value.strip() for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


@check("detectable_format:number_highlighted_sections")
def number_highlighted_sections(value: str, *, num_highlights: int) -> bool:
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", value) if h.strip("*").strip())
    count += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", value) if h.removeprefix("**").removesuffix("**").strip())
    return count >= num_highlights


@check("detectable_format:multiple_sections")
def multiple_sections(value: str, *, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", value)
    return len(sections) - 1 >= num_sections


@check("detectable_format:json_format")
def json_format(value: str) -> bool:
    value = value.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(prefix)
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@check("detectable_format:title")
def title(value: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", value))


@check("combination:two_responses")
def two_responses(value: str) -> bool:
    parts = value.split("******")
    valid = []
    for index, part in enumerate(parts):
        if not part.strip():
            if index not in (0, len(parts) - 1):
                return False
        else:
            valid.append(part)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


@check("combination:repeat_prompt")
def repeat_prompt(value: str, *, prompt_to_repeat: str) -> bool:
    return value.strip().lower().startswith(prompt_to_repeat.strip().lower())


@check("startend:end_checker")
def end_checker(value: str, *, end_phrase: str) -> bool:
    return value.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@check("change_case:capital_word_frequency")
def capital_word_frequency(value: str, *, capital_frequency: int, capital_relation: str) -> bool:
    return compare(sum(1 for w in word_tokens(value) if w.isupper()), capital_relation, capital_frequency)


@check("change_case:english_capital")
def english_capital(value: str) -> bool:
    return value.isupper() and detect_language(value) in ("en", None)


@check("change_case:english_lowercase")
def english_lowercase(value: str) -> bool:
    return value.islower() and detect_language(value) in ("en", None)


@check("punctuation:no_comma")
def no_comma(value: str) -> bool:
    return "," not in value


@check("startend:quotation")
def quotation(value: str) -> bool:
    value = value.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'
