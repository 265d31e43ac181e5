"""Label probabilities read from token logprobs, on hand-made token streams."""

from __future__ import annotations

import math

import pytest

from shoal.models.base import TokenLogprob, TopLogprob
from shoal.specialists.tokens import TokenText, find_value, label_distribution


def tok(text: str, p: float, alts: dict[str, float]) -> TokenLogprob:
    top = [TopLogprob(token=t, logprob=math.log(q)) for t, q in alts.items()]
    return TokenLogprob(token=text, logprob=math.log(p), top=top)


def stream(*tokens: TokenLogprob) -> TokenText:
    return TokenText(list(tokens))


def test_distinct_first_tokens() -> None:
    text = stream(
        tok('{"label": "', 0.9, {'{"label": "': 0.9}),
        tok("ORDER", 0.6, {"ORDER": 0.6, "REFUND": 0.2, "Hello": 0.1}),
        tok('"}', 0.99, {'"}': 0.99}),
    )
    start = find_value(text.text, "label")
    assert start is not None
    dist, mass = label_distribution(text, start[0], ["ORDER", "REFUND", "PAYMENT"])
    # 0.1 of the mass lies beyond the alternatives shown: it may be a label, so it stays unseen
    assert dist["ORDER"] == pytest.approx(0.6 / 0.9)
    assert dist["REFUND"] == pytest.approx(0.2 / 0.9)
    assert dist["PAYMENT"] == 0.0
    assert mass == pytest.approx(0.8)


def test_shared_first_token_is_split_by_the_continuation() -> None:
    # CANCEL_ORDER and CANCEL_FEE share "CANCEL"; the next token tells them apart
    text = stream(
        tok('{"label": "', 0.9, {}),
        tok("CANCEL", 0.8, {"CANCEL": 0.8, "REF": 0.1}),
        tok("_ORDER", 0.7, {"_ORDER": 0.7, "_FEE": 0.1, "_X": 0.2}),
        tok('"}', 0.99, {}),
    )
    dist, _ = label_distribution(text, len('{"label": "'), ["CANCEL_ORDER", "CANCEL_FEE", "REFUND"])
    # 0.8 on CANCEL split 7:1 between _ORDER and _FEE (_X is no label), 0.1 on REF, 0.1 unseen
    assert dist["CANCEL_ORDER"] == pytest.approx(0.7)
    assert dist["CANCEL_FEE"] == pytest.approx(0.1)
    assert dist["REFUND"] == pytest.approx(0.1)


def test_label_that_is_prefix_of_another() -> None:
    text = stream(
        tok('{"label":"', 1.0, {}),
        tok("ORDER", 0.9, {"ORDER": 0.9}),
        tok('"', 0.6, {'"': 0.6, "_STATUS": 0.4}),
        tok("}", 1.0, {}),
    )
    dist, _ = label_distribution(text, len('{"label":"'), ["ORDER", "ORDER_STATUS"])
    assert dist["ORDER"] == pytest.approx(0.9 * 0.6)
    assert dist["ORDER_STATUS"] == pytest.approx(0.9 * 0.4)


def test_quote_inside_the_label_token() -> None:
    text = stream(
        tok('{"label":', 1.0, {}),
        tok(' "ORDER', 0.5, {' "ORDER': 0.5, ' "REFUND': 0.5}),
        tok('"}', 1.0, {}),
    )
    start = find_value(text.text, "label")
    assert start is not None
    dist, _ = label_distribution(text, start[0], ["ORDER", "REFUND"])
    assert dist == pytest.approx({"ORDER": 0.5, "REFUND": 0.5})


def test_find_value_spans() -> None:
    text = '{"order_id": "A-1", "amount": 12.5, "note": "say \\"hi\\""}'
    span = find_value(text, "order_id")
    assert span is not None and text[span[0] : span[1]] == "A-1"
    span = find_value(text, "amount")
    assert span is not None and text[span[0] : span[1]] == "12.5"
    span = find_value(text, "note")
    assert span is not None and text[span[0] : span[1]] == 'say \\"hi\\"'
    assert find_value(text, "missing") is None
