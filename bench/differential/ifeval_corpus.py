"""Seeded corpus of IFEval items: every instruction id with kwargs a dataset uses, against responses that follow it,
break it, or sit on its boundary (counts exactly at the limit, case, punctuation, spacing, other languages).

Item `i` depends only on (seed, i); one item in six combines two or three instructions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from reward_server.types import IFEVAL_KWARGS

KINDS = ("follows", "breaks", "boundary")
_WORDS = (
    "the quick brown fox jumps over a lazy dog near river bank while children play in green garden "
    "under bright summer sky and old men watch from wooden bench with coffee cups in hand"
).split()
_KEYWORDS = ("river", "planet", "garden", "signal", "copper", "lantern", "harbor")
_FOREIGN = {
    "de": "Der schnelle braune Fuchs springt über den faulen Hund. Die Kinder spielen im grünen Garten am Fluss.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux. Les enfants jouent dans le jardin vert.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso. Los niños juegan en el jardín verde junto al río.",
    "it": "La volpe marrone veloce salta sopra il cane pigro. I bambini giocano nel giardino verde vicino al fiume.",
    "pt": "A rápida raposa marrom pula sobre o cão preguiçoso. As crianças brincam no jardim verde perto do rio.",
    "ru": "Быстрая коричневая лиса прыгает через ленивую собаку. Дети играют в зелёном саду у реки.",
    "ja": "素早い茶色の狐が怠け者の犬を飛び越える。子供たちは川のそばの緑の庭で遊んでいる。",
    "hi": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। बच्चे नदी के पास हरे बगीचे में खेलते हैं।",
}
_ENGLISH = "The quick brown fox jumps over the lazy dog. The children play in the green garden by the river."
_ENGLISH_LONG = (
    "This is a letter to the editor about the new library that opened last week in our town. I think that the "
    "people who work there should be thanked for their hard work, and that everyone should visit it soon."
)


@dataclass(frozen=True)
class IFEvalCase:
    index: int
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]  # one dict per id, as the dataset holds them (some padded with None values)
    prompt: str
    response: str
    kind: str  # one of KINDS, for the report; agreement is measured against the reference, not this label


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _sentence(rng: random.Random, n: int = 6) -> str:
    text = _words(rng, n)
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, sentences: int = 2) -> str:
    return " ".join(_sentence(rng, rng.randint(4, 9)) for _ in range(sentences))


Case = tuple[dict, str, str]  # kwargs, response, kind


def existence(rng: random.Random) -> list[Case]:
    a, b = rng.sample(_KEYWORDS, 2)
    kw = {"keywords": [a, b]}
    base = _paragraph(rng)
    return [
        (kw, f"{base} The {a} and the {b} stay.", "follows"),
        (kw, f"{base} Only the {a} stays.", "breaks"),
        (kw, f"{base} The {a.upper()} and the {b.capitalize()}.", "boundary"),
        (kw, f"{base} The {a}s and the sub{b}s.", "boundary"),
        ({"keywords": [a, "e.g."]}, f"{base} The {a}, eggs.", "boundary"),
    ]


def frequency(rng: random.Random) -> list[Case]:
    word, n = rng.choice(_KEYWORDS), rng.randint(1, 4)
    relation = rng.choice(["less than", "at least"])
    kw = {"keyword": word, "frequency": n, "relation": relation}

    def text(count: int, spell=lambda w: w) -> str:
        return " ".join(f"{_sentence(rng, 3)[:-1]} {spell(word)}." for _ in range(count)) or _sentence(rng)

    return [
        (kw, text(n), "boundary"),
        (kw, text(n - 1), "boundary"),
        (kw, text(n + 1), "follows" if relation == "at least" else "breaks"),
        (kw, text(n, str.upper), "boundary"),
        (kw, text(n - 1) + f" {word}{word}.", "boundary"),
        ({**kw, "keyword": "U.S."}, " ".join(["The US team."] * n), "boundary"),
    ]


def forbidden(rng: random.Random) -> list[Case]:
    a, b = rng.sample(_KEYWORDS, 2)
    kw = {"forbidden_words": [a, b]}
    base = _paragraph(rng)
    return [
        (kw, base, "follows"),
        (kw, f"{base} A {a} here.", "breaks"),
        (kw, f"{base} The {b.upper()}, again.", "breaks"),
        (kw, f"{base} The {a}s and {b}y things.", "boundary"),
        (kw, f"{base} ({a}) and {b}-like", "boundary"),
    ]


def letter_frequency(rng: random.Random) -> list[Case]:
    letter, n = rng.choice("zqxjk"), rng.randint(1, 5)
    relation = rng.choice(["less than", "at least"])
    kw = {"letter": letter, "let_frequency": n, "let_relation": relation}
    base = "The old man sat by the window."
    return [
        (kw, base + f" {letter}" * n, "boundary"),
        (kw, base + f" {letter}" * (n - 1), "boundary"),
        (kw, base + f" {letter.upper()}" * n, "boundary"),
        (kw, base + f" {letter}" * (n + 2), "follows" if relation == "at least" else "breaks"),
    ]


def response_language(rng: random.Random) -> list[Case]:
    lang = rng.choice(sorted(_FOREIGN) + ["en", "en"])
    kw = {"language": lang}
    native = _ENGLISH if lang == "en" else _FOREIGN[lang]
    other = _FOREIGN["de"] if lang == "en" else _ENGLISH
    return [
        (kw, native, "follows"),
        (kw, other, "breaks"),
        (kw, native + " OK.", "boundary"),
        (kw, "12345 !!!", "boundary"),
        (kw, native.split(".")[0], "boundary"),
        (kw, f"{native} {other}", "boundary"),
        (kw, native.upper(), "boundary"),
    ]


_SENTENCE_TRAPS = (
    "Mr. Smith met Dr. Jones at 3.5 p.m. today.",
    "The U.S. team won, e.g. in 2020.",
    "Wait... what happened?",
    "Really?! Yes.",
    "He said 'go.' Then left.",
    "First line\nSecond line",
    "See No. 5 for details. Then stop.",
    "It costs $5.50. Then stop.",
    "Visit www.example.com today. Done.",
    "Fig. 3 shows it. Chapter 4. Begins here.",
    "He arrived at 5 p.m. He left at 6 a.m. on Jan. 3.",
    "I.e. this one, vs. that one. St. Louis is big.",
    "The value is approx. 3. Next.",
    "She said: \"Stop.\" He stopped.",
)


def number_sentences(rng: random.Random) -> list[Case]:
    n = rng.randint(2, 6)
    relation = rng.choice(["less than", "at least"])
    kw = {"num_sentences": n, "relation": relation}
    plain = lambda k: " ".join(_sentence(rng) for _ in range(k))  # noqa: E731
    return [
        (kw, plain(n), "boundary"),
        (kw, plain(n - 1), "boundary"),
        (kw, plain(n + 2), "follows" if relation == "at least" else "breaks"),
        (kw, plain(n - 2) + " " + rng.choice(_SENTENCE_TRAPS), "boundary"),
        (kw, "\n".join(_sentence(rng) for _ in range(n)), "boundary"),
    ]


def number_paragraphs(rng: random.Random) -> list[Case]:
    n = rng.randint(2, 5)
    kw = {"num_paragraphs": n}
    paras = [_paragraph(rng, 1) for _ in range(n)]
    return [
        (kw, "\n***\n".join(paras), "follows"),
        (kw, "\n***\n".join(paras[:-1]), "breaks"),
        (kw, "***\n" + "\n***\n".join(paras) + "\n***", "boundary"),
        (kw, "\n***\n".join(paras[:1] + [""] + paras[1:]), "boundary"),
        (kw, " *** ".join(paras), "boundary"),
        (kw, "\n* * *\n".join(paras), "boundary"),
    ]


def number_words(rng: random.Random) -> list[Case]:
    n = rng.choice([5, 10, 25, 50])
    relation = rng.choice(["less than", "at least"])
    kw = {"num_words": n, "relation": relation}
    return [
        (kw, _words(rng, n), "boundary"),
        (kw, _words(rng, n - 1), "boundary"),
        (kw, _words(rng, n - 2) + " don't", "boundary"),
        (kw, _words(rng, n - 1) + " well-known", "boundary"),
        (kw, _words(rng, n - 1) + " 3.14", "boundary"),
    ]


def nth_paragraph_first_word(rng: random.Random) -> list[Case]:
    n = rng.randint(2, 4)
    nth = rng.randint(1, n)
    word = rng.choice(["then", "however", "first", "summer"])
    kw = {"num_paragraphs": n, "nth_paragraph": nth, "first_word": word}
    paras = [_paragraph(rng, 1) for _ in range(n)]

    def with_first(first: str, sep: str = "\n\n", count: int = n) -> str:
        ps = paras[:count]
        ps = ps[: nth - 1] + [f"{first} {ps[nth - 1]}"] + ps[nth:] if nth <= count else ps
        return sep.join(ps)

    return [
        (kw, with_first(word.capitalize()), "follows"),
        (kw, with_first("Instead"), "breaks"),
        (kw, with_first(f'"{word.upper()},'), "boundary"),
        (kw, with_first(f"{word}:"), "boundary"),
        (kw, with_first(word, sep="\n\n\n"), "boundary"),
        (kw, with_first(word, count=n - 1), "breaks"),
    ]


def number_placeholders(rng: random.Random) -> list[Case]:
    n = rng.randint(1, 4)
    kw = {"num_placeholders": n}
    fill = lambda k: " ".join(f"[field {i}]" for i in range(k))  # noqa: E731
    return [
        (kw, f"Dear {fill(n)}, hello.", "boundary"),
        (kw, f"Dear {fill(n - 1)}, hello.", "breaks"),
        (kw, f"Dear {fill(n - 1)} [], hello.", "boundary"),
        (kw, f"Dear {fill(n - 1)} [a [b] c], hello.", "boundary"),
    ]


def postscript(rng: random.Random) -> list[Case]:
    marker = rng.choice(["P.S.", "P.P.S"])
    kw = {"postscript_marker": marker}
    body = _paragraph(rng)
    return [
        (kw, f"{body}\n{marker} See you soon.", "follows"),
        (kw, f"{body}\nSee you soon.", "breaks"),
        (kw, f"{body}\n{marker.lower()} see you.", "boundary"),
        (kw, f"{body} {marker.replace('.', '')} see you.", "boundary"),
        (kw, f"{body}\n{marker.replace('.', '. ')} see you.", "boundary"),
    ]


def bullet_lists(rng: random.Random) -> list[Case]:
    n = rng.randint(2, 5)
    kw = {"num_bullets": n}
    items = [_sentence(rng, 3) for _ in range(n + 1)]
    return [
        (kw, "Intro.\n" + "\n".join(f"* {t}" for t in items[:n]), "follows"),
        (kw, "Intro.\n" + "\n".join(f"- {t}" for t in items[:n]), "follows"),
        (kw, "Intro.\n" + "\n".join(f"* {t}" for t in items), "breaks"),
        (kw, "\n".join(f"* {t}" for t in items[: n - 1]) + "\n**Bold line**", "boundary"),
        (kw, "\n".join(f"  * {t}" for t in items[: n - 1]) + "\n*emphasis* line", "boundary"),
    ]


def constrained_response(rng: random.Random) -> list[Case]:
    kw: dict = {}
    return [
        (kw, "My answer is yes.", "follows"),
        (kw, f"{_sentence(rng)} My answer is maybe.", "follows"),
        (kw, "My answer is Yes.", "boundary"),
        (kw, "My answer is no", "boundary"),
        (kw, "Yes.", "breaks"),
    ]


def highlighted_sections(rng: random.Random) -> list[Case]:
    n = rng.randint(1, 4)
    kw = {"num_highlights": n}
    marks = [f"*part {i}*" if i % 2 else f"**part {i}**" for i in range(n)]
    return [
        (kw, "Text " + " and ".join(marks), "boundary"),
        (kw, "Text " + " and ".join(marks[:-1] + ["* *"]), "boundary"),
        (kw, "Text " + " and ".join(marks[:-1] + ["*split\nacross*"]), "boundary"),
        (kw, "Text " + " and ".join(marks[:-1] + ["***triple***"]), "boundary"),
    ]


def multiple_sections(rng: random.Random) -> list[Case]:
    splitter, n = rng.choice(["Section", "SECTION", "PARAGRAPH"]), rng.randint(2, 4)
    kw = {"section_spliter": splitter, "num_sections": n}
    body = lambda k, s=splitter: "\n".join(f"{s} {i + 1}\n{_sentence(rng)}" for i in range(k))  # noqa: E731
    return [
        (kw, body(n), "follows"),
        (kw, body(n - 1), "breaks"),
        (kw, body(n, splitter.lower()), "boundary"),
        (kw, body(n).replace(f"{splitter} 1", f"{splitter} one"), "boundary"),
    ]


def json_format(rng: random.Random) -> list[Case]:
    kw: dict = {}
    return [
        (kw, '{"a": [1, 2], "b": "x"}', "follows"),
        (kw, '```json\n{"a": 1}\n```', "follows"),
        (kw, '```JSON\n{"a": 1}\n```', "boundary"),
        (kw, "{'a': 1}", "breaks"),
        (kw, '{"a": 1} trailing words', "breaks"),
        (kw, '  [1, 2, 3]  ', "boundary"),
    ]


def title(rng: random.Random) -> list[Case]:
    kw: dict = {}
    return [
        (kw, f"<<A Summer Day>>\n{_paragraph(rng)}", "follows"),
        (kw, f"<< >>\n{_paragraph(rng)}", "boundary"),
        (kw, f"<<A\nDay>>\n{_paragraph(rng)}", "boundary"),
        (kw, f"<<<Nested>>>\n{_paragraph(rng)}", "boundary"),
        (kw, _paragraph(rng), "breaks"),
    ]


def two_responses(rng: random.Random) -> list[Case]:
    kw: dict = {}
    a, b = _paragraph(rng, 1), _paragraph(rng, 1)
    return [
        (kw, f"{a}\n******\n{b}", "follows"),
        (kw, f"{a}\n******\n{a}", "breaks"),
        (kw, f"******\n{a}\n******\n{b}", "boundary"),
        (kw, f"{a}\n*******\n{b}", "boundary"),
        (kw, f"{a}\n******\n{b}\n******\n{a}", "breaks"),
    ]


def repeat_prompt(rng: random.Random) -> list[Case]:
    prompt = _sentence(rng, 6)
    kw = {"prompt_to_repeat": prompt}
    return [
        (kw, f"{prompt} {_paragraph(rng)}", "follows"),
        (kw, _paragraph(rng), "breaks"),
        (kw, f"  {prompt.upper()}\n{_paragraph(rng)}", "boundary"),
        (kw, f"{prompt[:-1]} {_paragraph(rng)}", "boundary"),
    ]


def end_checker(rng: random.Random) -> list[Case]:
    phrase = rng.choice(["Is there anything else I can help with?", "Any other questions?", "Peace."])
    kw = {"end_phrase": phrase}
    body = _paragraph(rng)
    return [
        (kw, f"{body} {phrase}", "follows"),
        (kw, f"{body} {phrase}  \n", "boundary"),
        (kw, f'"{body} {phrase}"', "boundary"),
        (kw, f"{body} {phrase.upper()}", "boundary"),
        (kw, f"{body} {phrase} Bye.", "breaks"),
    ]


def capital_word_frequency(rng: random.Random) -> list[Case]:
    n = rng.randint(1, 5)
    relation = rng.choice(["less than", "at least"])
    kw = {"capital_frequency": n, "capital_relation": relation}
    caps = ["RIVER", "GARDEN", "SIGNAL", "HARBOR", "COPPER", "PLANET"]
    text = lambda k, extra="": f"The {' '.join(caps[:k])} stays{extra}."  # noqa: E731
    return [
        (kw, text(n), "boundary"),
        (kw, text(n - 1), "boundary"),
        (kw, text(n - 1, " in the U.S.A"), "boundary"),
        (kw, text(n - 1, " and I DON'T know"), "boundary"),
        (kw, text(n - 1, " near CO-OP"), "boundary"),
        (kw, text(n - 1, " with NASA's (HELLO) A.B.C."), "boundary"),
        (kw, text(n - 1, " ROCK'N'ROLL HELLO-WORLD"), "boundary"),
        (kw, text(max(n - 2, 0), " ROCK'N'ROLL"), "boundary"),
        (kw, text(max(n - 2, 0), " ROCK'N'ROLL and SHE'S'LL"), "boundary"),
        (kw, text(n, " and OK."), "boundary"),
    ]


def english_capital(rng: random.Random) -> list[Case]:
    kw: dict = {}
    return [
        (kw, _ENGLISH.upper(), "boundary"),
        (kw, _ENGLISH_LONG.upper(), "follows"),
        (kw, _ENGLISH_LONG, "breaks"),
        (kw, _FOREIGN["de"].upper(), "breaks"),
        (kw, _ENGLISH.upper() + " 42!", "boundary"),
    ]


def english_lowercase(rng: random.Random) -> list[Case]:
    kw: dict = {}
    return [
        (kw, _ENGLISH.lower(), "boundary"),
        (kw, _ENGLISH_LONG.lower(), "follows"),
        (kw, _ENGLISH_LONG, "breaks"),
        (kw, _FOREIGN["fr"].lower(), "breaks"),
        (kw, _ENGLISH.lower() + " 42!", "boundary"),
    ]


def no_comma(rng: random.Random) -> list[Case]:
    kw: dict = {}
    body = _paragraph(rng)
    return [(kw, body, "follows"), (kw, body + " Yes, sure.", "breaks"), (kw, body + " 好，", "boundary")]


def quotation(rng: random.Random) -> list[Case]:
    kw: dict = {}
    body = _paragraph(rng)
    return [
        (kw, f'"{body}"', "follows"),
        (kw, f'  "{body}"\n', "boundary"),
        (kw, f"“{body}”", "boundary"),
        (kw, f'"{body}', "breaks"),
        (kw, '"', "boundary"),
    ]


CASES: dict[str, Callable[[random.Random], list[Case]]] = {
    "keywords:existence": existence,
    "keywords:frequency": frequency,
    "keywords:forbidden_words": forbidden,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:number_words": number_words,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
    "startend:quotation": quotation,
}
assert set(CASES) == set(IFEVAL_KWARGS), "every instruction id the service supports has cases"

# Keys a dataset row may carry for any instruction, set to None when unused.
_PADDING = ("keywords", "num_words", "relation", "language", "num_sentences", "end_phrase")


def _padded(rng: random.Random, kwargs: dict) -> dict:
    return {**{k: None for k in _PADDING}, **kwargs} if rng.random() < 0.3 else dict(kwargs)


def case(index: int, seed: int = 0) -> IFEvalCase:
    rng = random.Random(f"ifeval-corpus:{seed}:{index}")
    ids = list(CASES)
    if index % 6 == 5:
        chosen = rng.sample([i for i in ids if i != "detectable_format:constrained_response"], rng.choice([2, 3]))
        parts = [rng.choice(CASES[i](rng)) for i in chosen]
        response = "\n\n".join(p[1] for p in parts)
        kind = "boundary"
    else:
        chosen = [ids[(index - index // 6) % len(ids)]]
        parts = [rng.choice(CASES[chosen[0]](rng))]
        response, kind = parts[0][1], parts[0][2]
    return IFEvalCase(
        index=index,
        instruction_id_list=tuple(chosen),
        kwargs=tuple(_padded(rng, p[0]) for p in parts),
        prompt=_sentence(rng, 8),
        response=response,
        kind=kind,
    )


def corpus(n: int, seed: int = 0) -> list[IFEvalCase]:
    return [case(i, seed) for i in range(n)]
