"""Does a value appear in the source? The test of invention behind extractor and summarizer
confidence: a small model that writes a number or a name the text never had made it up."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "also",
        "may",
        "might",
        "must",
        "shall",
        "us",
        "get",
        "got",
        "please",
        "thank",
        "thanks",
        "hello",
        "hi",
        "dear",
        "one",
        "two",
        "let",
        "like",
        "need",
        "want",
        "make",
        "sure",
        "well",
    ]
)


def normalise(text: str) -> str:
    """Case, accents, whitespace and typographic quotes do not make a value different."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    return _SPACE.sub(" ", text).strip()


def numbers(text: str) -> list[str]:
    """Numbers as digit strings, so '1,200.50' and '1200.50' compare equal."""
    return [re.sub(r"[.,](?=\d{3}\b)", "", n) for n in _NUMBER.findall(text)]


def grounded(value: str, source: str) -> bool:
    """Whether `value` occurs in `source` as whole words, ignoring case, accents and spacing.

    Whole words and whole numbers: "12345" is not in "70012345", nor "refund" in "refunded";
    a substring match would ground any short value in any long text.
    """
    needle = normalise(value)
    if not needle:
        return False
    haystack = normalise(source)
    if re.search(rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])", haystack):
        return True
    # an id written with other separators ('ORD 123-45' vs 'ord12345') is still the same id,
    # when it spells out a run of whole tokens of the source
    compact = re.sub(r"[\W_]+", "", needle)
    if len(re.sub(r"\D", "", needle)) >= 3:
        return compact in _token_runs(haystack, len(compact))
    return False


def _token_runs(text: str, length: int) -> set[str]:
    """Every run of consecutive tokens of `text` joined without separators, `length` long."""
    tokens = re.findall(r"[^\W_]+", text)
    runs: set[str] = set()
    for start in range(len(tokens)):
        joined = ""
        for token in tokens[start:]:
            joined += token
            if len(joined) >= length:
                if len(joined) == length:
                    runs.add(joined)
                break
    return runs


_DONE = re.compile(
    r"\b(?:was|were|has been|have been|had been|is now|got|has|have|had)\s+(?:already\s+)?"
    r"([^\W\d_]+(?:ed|en)|sent|paid|made|done|given|taken|sold|bought|lost|found|shipped|refunded)\b",
    re.IGNORECASE,
)


def unsupported_claims(written: str, source: str) -> list[str]:
    """Statements that something happened ("was refunded", "has shipped") whose verb form the
    source never uses: a request ("I want a refund") summarised as done says the opposite of
    the ticket while every one of its words is grounded."""
    used = {w.casefold() for w in _WORD.findall(source)}
    return [m.group(0) for m in _DONE.finditer(written) if m.group(1).casefold() not in used]


def stem(word: str) -> str:
    word = word.casefold()
    for suffix in ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if len(w) > 2 and w.casefold() not in STOPWORDS]


def names(text: str) -> list[str]:
    """Capitalised words that do not start a sentence: a cheap stand-in for proper names."""
    found: list[str] = []
    for sentence in re.split(r"(?<=[.!?:;])\s+|\n+", text):
        words = _WORD.findall(sentence)
        found.extend(w for w in words[1:] if w[:1].isupper() and w.casefold() not in STOPWORDS)
    return found
