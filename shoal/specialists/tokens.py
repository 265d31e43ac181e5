"""Reading confidence out of token log-probabilities.

Backends return, per generated token, its log-probability and the top alternatives. These
helpers map those tokens back onto the reply text, so a specialist can ask "how sure was the
model of *this value*" or "how much probability went to each label".

A backend's numbers are not trusted: a log-probability that is NaN, +inf or above 0 (see
`shoal.models.base.probability`) is missing evidence. It is left out of every mean and every
distribution, and where the chosen token's own probability is missing the answer is "unknown"
(None, or no probability on any label), never NaN and never certainty.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from shoal.models.base import TokenLogprob, probability


class TokenText:
    """The reply as the backend tokenised it: joined text and each token's character span."""

    def __init__(self, tokens: Sequence[TokenLogprob]) -> None:
        self.tokens = list(tokens)
        self.starts: list[int] = []
        self.ends: list[int] = []
        position = 0
        for token in self.tokens:
            self.starts.append(position)
            position += len(token.token)
            self.ends.append(position)
        self.text = "".join(t.token for t in self.tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def index_at(self, char: int) -> int | None:
        """The token that holds character `char` of the joined text."""
        for i in range(len(self.tokens) - 1, -1, -1):
            if self.starts[i] <= char < self.starts[i] + max(1, len(self.tokens[i].token)):
                return i
        return None

    def span_tokens(self, start: int, end: int) -> list[TokenLogprob]:
        """Tokens that overlap characters [start, end)."""
        # starts and ends only grow, so the overlapping tokens are one run found by bisection:
        # a specialist asks once per value, and a long hostile reply must not make that quadratic
        first = bisect_right(self.ends, start)
        last = bisect_left(self.starts, end)
        return [t for t in self.tokens[first:last] if t.token.strip()]

    def mean_prob(self, start: int, end: int) -> float | None:
        """Mean probability of the tokens over a span (None when no token with a usable
        probability covers it)."""
        probs = [p for p in (probability(t.logprob) for t in self.span_tokens(start, end)) if p is not None]
        if not probs:
            return None
        return sum(probs) / len(probs)


def unusable_logprobs(tokens: Sequence[TokenLogprob]) -> tuple[int, int]:
    """(how many, of how many) log-probabilities, chosen tokens' and alternatives', are not
    usable numbers (NaN, +inf or above 0)."""
    numbers = [t.logprob for t in tokens] + [alt.logprob for t in tokens for alt in t.top]
    return sum(probability(x) is None for x in numbers), len(numbers)


def _alternatives(token: TokenLogprob) -> dict[str, float]:
    """Probability of each alternative at one position, the chosen token included; those the
    backend gave no usable number for are left out (the chosen one too: callers check)."""
    options: dict[str, float] = {}
    for alt in token.top:
        p = probability(alt.logprob)
        if p is not None:
            options[alt.token] = p
    if token.token not in options:
        p = probability(token.logprob)
        if p is not None:
            options[token.token] = p
    return options


def label_distribution(
    text: TokenText, value_start: int, labels: Sequence[str], *, closing: str = '"'
) -> tuple[dict[str, float], float]:
    """Probability the model put on each label, from the tokens that spell the chosen one.

    `value_start` is where the label's first character sits in `text.text`. At each position
    an alternative token is credited to every label it could begin (split evenly when several
    share it); the chosen token is followed to the next position, so labels that share a first
    token are told apart by their continuation. Returns the distribution normalised over the
    label set, with the mass beyond the backend's top-k alternatives counted as possibly-unseen
    labels (so it may sum to less than 1: a truncated view must not look certain), and the raw
    mass the model put on the labels it showed. Alternatives without a usable probability count
    as unseen; when a chosen token on the way has none, nothing is known and every label gets 0.
    """
    raw: dict[str, float] = dict.fromkeys(labels, 0.0)
    first = text.index_at(value_start)
    if first is None:
        return raw, 0.0
    walk = _Walk(text, value_start, closing, raw)
    walk.step(first, value_start, list(labels), 1.0, top=True)
    mass = sum(raw.values())
    if walk.unusable or mass <= 0:
        return dict.fromkeys(labels, 0.0), 0.0
    # Probability outside the top-k alternatives may belong to labels the backend did not
    # show; counting it in the denominator keeps a truncated view from looking certain.
    return {label: p / (mass + walk.unseen) for label, p in raw.items()}, mass


class _Walk:
    """One walk along the tokens that spell a label, crediting probability to labels in `out`."""

    def __init__(self, text: TokenText, value_start: int, closing: str, out: dict[str, float]) -> None:
        self.text = text
        self.value_start = value_start
        self.closing = closing
        self.out = out
        self.unseen = 0.0  # mass beyond the backend's top-k alternatives
        self.unusable = False  # a chosen token had no usable probability: the answer is unknown

    def step(self, index: int, position: int, candidates: list[str], incoming: float, *, top: bool) -> None:
        text, out, closing = self.text, self.out, self.closing
        if index >= len(text.tokens):
            for label in candidates:
                out[label] += incoming / len(candidates)
            return
        token = text.tokens[index]
        prefix = text.text[text.starts[index] : position]  # e.g. the opening quote in the same token
        consumed = position - self.value_start
        everything = _alternatives(token)
        if token.token not in everything:
            self.unusable = True
            return
        options = {tok: p for tok, p in everything.items() if tok.startswith(prefix)}
        beyond_top_k = max(0.0, 1.0 - sum(everything.values()))
        matched: dict[str, list[str]] = {}
        for tok in options:
            rest = tok[len(prefix) :]
            if not rest:
                continue
            fits = [
                label
                for label in candidates
                if (label[consumed:] + closing).startswith(rest) or rest.startswith(label[consumed:] + closing)
            ]
            if fits:
                matched[tok] = fits
        if not matched:
            # The backend's alternatives do not reach the label (too few top-k): trust the text.
            chosen = text.text[self.value_start :].split(closing, 1)[0]
            if chosen in out:
                out[chosen] += incoming
            return
        # At the first position raw probabilities are kept (their sum is the label mass); deeper
        # down, the chosen path's mass is split in proportion among its continuations.
        total = 1.0 if top else sum(options[tok] for tok in matched) + beyond_top_k
        if total <= 0:  # every continuation has probability 0 (-inf logprobs): no label gets any
            return
        self.unseen += incoming * beyond_top_k / total
        for tok, fits in matched.items():
            share = incoming * options[tok] / total
            rest = tok[len(prefix) :]
            if tok == token.token and len(fits) > 1:
                finished = [label for label in fits if rest.startswith(label[consumed:] + closing)]
                still_open = [label for label in fits if label not in finished]
                for label in finished:
                    out[label] += share / len(fits)
                if still_open:
                    self.step(
                        index + 1,
                        text.starts[index] + len(tok),
                        still_open,
                        share * len(still_open) / len(fits),
                        top=False,
                    )
            else:
                for label in fits:
                    out[label] += share / len(fits)


def find_value(text: str, key: str, after: int = 0) -> tuple[int, int] | None:
    """Character span of the JSON value of `key` (the value itself, without quotes)."""
    match = re.compile(r'"' + re.escape(key) + r'"\s*:\s*').search(text, after)
    if match is None:
        return None
    start = match.end()
    if start < len(text) and text[start] == '"':
        end = start + 1
        while end < len(text) and text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        return start + 1, end
    end = start
    while end < len(text) and text[end] not in ",}]\n":
        end += 1
    return start, end
