"""Replies a hostile or broken server could send: each must end as a judgement with a finite
confidence in [0, 1] or as a shoal ModelError, in time linear in the reply, never as a hang, a
RecursionError, a NaN confidence or a pydantic error escaping a specialist.

No wall-clock assertions: where speed is the point, a reply far larger than the one that froze
`shoal ask` runs under a generous pytest-timeout guard that the old code would blow far past.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy
import pytest
from httpfake import Answer, FakeServer
from pydantic import BaseModel, Field, field_validator

from shoal.errors import ModelError, SchemaValidationError
from shoal.models.base import (
    ChatRequest,
    Message,
    Reply,
    RetryPolicy,
    TokenLogprob,
    TopLogprob,
    parse_reply,
    parse_structured,
    token_logprobs,
)
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.specialists import Classifier, Extractor, Summarizer, SummaryInput, TextInput
from shoal.specialists.base import Judgement, Result, Signal, Specialist

NAN, INF = math.nan, math.inf


class Point(BaseModel):
    x: int
    y: int


class Measure(BaseModel):
    value: float
    note: str = ""


class Order(BaseModel):
    order_id: str | None = Field(default=None, description="the order number")
    amount: float | None = None
    items: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)


def replying(text: str, logprobs: list[TokenLogprob] | None = None) -> ModelRouter:
    """A router whose backend answers `text` with `logprobs`, parsed as a real backend parses."""

    def answer(request: ChatRequest) -> Reply:
        reply = Reply(text=text, logprobs=logprobs or [], model=request.model, backend="scripted")
        return parse_reply(reply, request)

    backend = ScriptedBackend(answer)
    return ModelRouter(lambda _: backend)


def finite_in_unit(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


# --- 1. fence stripping in linear time ---------------------------------------------------------


@pytest.mark.timeout(10)
def test_an_unclosed_fence_before_many_spaces_fails_cleanly_and_fast() -> None:
    # 3,000 spaces froze `shoal ask` for 20 s under the old regex (cubic); 200,000 would take years
    for spaces in (3_000, 200_000):
        for text in ("```json" + " " * spaces, "```json\n" + " " * spaces + '{"x": 1, "y": 2}'):
            with pytest.raises(SchemaValidationError, match="not JSON") as info:
                parse_structured(text, Point)
            assert info.value.raw_text == text


@pytest.mark.timeout(10)
def test_closed_fences_parse_and_near_misses_fail_fast() -> None:
    spaces = " " * 200_000
    assert parse_structured("```json" + spaces + '{"x": 1, "y": 2}' + spaces + "```  ", Point) == Point(x=1, y=2)
    for trailed in (
        "```json" + spaces + '{"x": 1, "y": 2}' + spaces + "``` x",
        "```json" + spaces + "```" + spaces + "`",
    ):
        with pytest.raises(SchemaValidationError, match="not JSON"):  # text after the fence: not a fence
            parse_structured(trailed, Point)
    # well-formed fences read as they always did
    assert parse_structured('```json\n{"x": 1, "y": 2}\n```', Point) == Point(x=1, y=2)
    assert parse_structured('  ```\n{"x": 3, "y": 4}```\n', Point) == Point(x=3, y=4)
    assert parse_structured('```json{"x": 5, "y": 6}```', Point) == Point(x=5, y=6)


@pytest.mark.timeout(10)
async def test_a_specialist_survives_an_unclosed_fence() -> None:
    text = "```json" + " " * 200_000 + '{"label": "A"}'  # spaces inside: the reply's strip() keeps them
    result = await Classifier(replying(text), "scripted:x", ["A", "B"]).run(TextInput(text="t"))
    assert result.confidence == 0.0 and result.error and "not JSON" in result.error
    assert result.calls[0].raw_text == text


@pytest.mark.timeout(10)
def test_code_fences_are_stripped_in_linear_time_with_the_same_results() -> None:
    from shoal.models.base import unfence  # the coder's fence stripping, shared

    python = ("python", "py")
    assert unfence("```python\n" + "\n" * 200_000, python, code=True) is None  # never closed
    hostile = "```\n" + "\n" * 200_000 + "```" + " " * 200_000 + "x"
    assert unfence(hostile, python, code=True) is None  # text after the closing fence
    closed = "```python\n" + "\n" * 200_000 + "    x = 1\n```"
    assert unfence(closed, python, code=True) == "    x = 1"
    # what the coder's regex gave on well-formed fences
    assert unfence("```python\ndef f():\n    return 1\n```", python, code=True) == "def f():\n    return 1"
    assert unfence("```py\n  x = 1\n\n```\n", python, code=True) == "  x = 1\n"
    assert unfence("```\nx = 1```", python, code=True) == "x = 1"
    assert unfence("```python x = 1```", python, code=True) is None  # no line break after the tag
    assert unfence("```python3\nx = 1\n```", python, code=True) is None
    assert unfence("x = 1", python, code=True) is None


# --- 2. bounded nesting ------------------------------------------------------------------------


@pytest.mark.parametrize("opening", ["[", '{"x": ', '{"x": [{"y": '])
def test_deep_nesting_is_a_schema_error_not_a_recursion_error(opening: str) -> None:
    text = opening * 100_000
    with pytest.raises(SchemaValidationError, match="nested more than 64 levels") as info:
        parse_structured(text, Point)
    assert info.value.raw_text == text


def test_depth_is_measured_outside_strings_and_ordinary_nesting_parses() -> None:
    class Tree(BaseModel):
        x: int
        y: int
        note: Any = None

    brackets_in_a_string = '{"x": 1, "y": 2, "note": "' + "[{" * 10_000 + '\\"]"}'
    assert parse_structured(brackets_in_a_string, Tree).note == "[{" * 10_000 + '"]'
    nested = '{"x": 1, "y": 2, "note": ' + "[" * 60 + "]" * 60 + "}"
    assert parse_structured(nested, Tree).x == 1
    with pytest.raises(SchemaValidationError, match="nested"):
        parse_structured('{"x": 1, "y": 2, "note": ' + "[" * 70 + "]" * 70 + "}", Tree)


async def test_a_specialist_survives_deep_nesting() -> None:
    text = "[" * 100_000 + "]" * 100_000
    result = await Extractor(replying(text), "scripted:x", Order).run(TextInput(text="t"))
    assert result.confidence == 0.0 and result.error and "nested" in result.error
    assert result.calls[0].raw_text == text


# --- 3. non-finite logprobs never reach a confidence --------------------------------------------


def label_reply(label_logprob: float, alternatives: dict[str, float]) -> list[TokenLogprob]:
    """Tokens of '{"label": "<chosen>"}' with the chosen label's logprob and alternatives."""
    top = [TopLogprob(token=tok, logprob=lp) for tok, lp in alternatives.items()]
    return [
        TokenLogprob(token='{"label": "', logprob=-0.01),
        TokenLogprob(token="A", logprob=label_logprob, top=top),
        TokenLogprob(token='"}', logprob=-0.01),
    ]


@pytest.mark.parametrize(
    ("chosen", "alternatives", "known"),
    [
        (NAN, {}, False),
        (NAN, {"B": -1.0}, False),
        (INF, {"A": INF, "B": -1.0}, False),
        (1000.0, {"B": 800.0}, False),  # exp() of these overflows
        (-0.1, {"A": NAN, "B": NAN}, True),
        (-0.1, {"A": -0.1, "B": INF}, True),
    ],
    ids=["nan", "nan-with-runner-up", "inf", "huge", "nan-alternatives", "inf-alternative"],
)
async def test_non_finite_logprobs_give_a_finite_classifier_confidence(
    chosen: float, alternatives: dict[str, float], known: bool
) -> None:
    router = replying('{"label": "A"}', label_reply(chosen, alternatives))
    result = await Classifier(router, "scripted:x", ["A", "B"]).run(TextInput(text="t"))
    assert result.ok and result.output is not None and result.output.label == "A"
    assert finite_in_unit(result.confidence)
    assert all(math.isfinite(s.value) for s in result.evidence)
    assert all(finite_in_unit(p) for p in result.output.distribution.values())
    signals = {s.name: s for s in result.evidence}
    assert "not usable" in signals["usable_logprobs"].detail  # the evidence says what was left out
    if known:  # the chosen label's own probability was usable: it is the confidence
        assert result.confidence == pytest.approx(math.exp(-0.1))
    else:  # nothing is known about the chosen label: no confidence, and no crash
        assert result.confidence == 0.0


async def test_minus_infinity_is_probability_zero_and_no_division_by_zero() -> None:
    router = replying('{"label": "A"}', label_reply(-INF, {"A": -INF, "B": -INF}))
    result = await Classifier(router, "scripted:x", ["A", "B"]).run(TextInput(text="t"))
    assert result.ok and result.confidence == 0.0
    assert "usable_logprobs" not in {s.name for s in result.evidence}  # -inf is a usable number
    # AB and AC share "A"; the model put probability 0 on every continuation that is a label
    tokens = [
        TokenLogprob(token='{"label": "', logprob=-0.01),
        TokenLogprob(token="A", logprob=0.0, top=[TopLogprob(token="A", logprob=0.0)]),
        TokenLogprob(
            token="B", logprob=-INF, top=[TopLogprob(token="B", logprob=-INF), TopLogprob(token="Z", logprob=0.0)]
        ),
        TokenLogprob(token='"}', logprob=-0.01),
    ]
    result = await Classifier(replying('{"label": "AB"}', tokens), "scripted:x", ["AB", "AC"]).run(TextInput(text="t"))
    assert result.ok and result.confidence == 0.0


@pytest.mark.parametrize("bad", [NAN, INF, 50.0, 1000.0])
async def test_non_finite_logprobs_give_a_finite_extractor_confidence(bad: float) -> None:
    text = '{"order_id": "A-42", "amount": null, "items": [], "counts": {}}'
    pieces = ['{"order_id": "', "A", "-42", '", "amount": ', "null", ', "items": [], "counts": {}}']
    tokens = [TokenLogprob(token=p, logprob=bad if i in (1, 2, 4) else -0.05) for i, p in enumerate(pieces)]
    extractor = Extractor(replying(text, tokens), "scripted:x", Order)
    data = TextInput(text="my order A-42 is late")
    result = await extractor.run(data)
    assert result.ok and finite_in_unit(result.confidence)
    assert all(math.isfinite(s.value) for s in result.evidence)
    assert "usable_logprobs" in {s.name for s in result.evidence}


async def test_judgement_and_signals_are_always_finite() -> None:
    nan = Judgement[Point](output=None, confidence=NAN, evidence=[Signal(name="s", value=INF)])
    assert nan.confidence == 0.0
    assert [s.name for s in nan.evidence] == ["s", "confidence"]
    assert nan.evidence[0].value == 0.0 and "inf" in nan.evidence[0].detail
    assert "nan" in nan.evidence[1].detail
    assert Judgement[Point](output=None, confidence=1.0000000000000002).confidence == 1.0
    assert Judgement[Point](output=None, confidence=-1e-17).confidence == 0.0
    far = Judgement[Point](output=None, confidence=3.5)
    assert far.confidence == 1.0 and "clamped" in far.evidence[-1].detail


def test_backend_logprobs_of_the_wrong_shape_read_as_missing() -> None:
    read = token_logprobs(
        [
            {"token": "a", "logprob": None},
            {"token": 5, "logprob": "not a number", "top_logprobs": "junk"},
            {"token": "b", "logprob": INF, "top_logprobs": [{"token": None, "logprob": -0.5}, {"logprob": 10**400}]},
            {"token": "c", "logprob": "-0.25", "top_logprobs": [{"token": "c", "logprob": True}]},
            "garbage",
            {"token": "d", "logprob": numpy.float32(-0.5), "top_logprobs": [{"token": "e", "logprob": [1]}]},
        ]
    )
    assert [t.token for t in read] == ["a", "", "b", "c", "", "d"]
    assert read[5].logprob == -0.5 and math.isnan(read[5].top[0].logprob)  # llama.cpp gives numpy floats
    assert math.isnan(read[0].logprob) and math.isnan(read[1].logprob) and math.isnan(read[2].logprob)
    assert read[3].logprob == -0.25 and math.isnan(read[3].top[0].logprob)
    assert read[2].top[0].logprob == -0.5 and math.isnan(read[2].top[1].logprob)
    assert token_logprobs("junk") == [] and token_logprobs({"content": []}) == []


async def test_an_openai_server_sending_null_and_nan_logprobs(server: FakeServer, fast_retry: RetryPolicy) -> None:
    from shoal.models.openai import OpenAIBackend

    logprobs = [
        {"token": '{"category": "', "logprob": None, "top_logprobs": []},
        {"token": "ORDER", "logprob": NAN, "top_logprobs": [{"token": "ORDER", "logprob": INF}]},
        {"token": '", "order_id": "4\ud8002"}', "logprob": 3.0, "top_logprobs": None},
    ]
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": '{"category": "ORDER", "order_id": "4\ud8002"}'},
                "logprobs": {"content": logprobs},
                "finish_reason": "stop",
            }
        ],
    }
    server.add("/v1/chat/completions", Answer(body=body))

    class Ticket(BaseModel):
        category: str
        order_id: str

    backend = OpenAIBackend(base_url=server.url + "/v1", api_key="sk-test", retry=fast_retry)
    request = ChatRequest(
        model="m", messages=[Message(role="user", content="x")], output_schema=Ticket, logprobs=True, top_logprobs=1
    )
    try:
        reply = await backend.chat(request)
    finally:
        await backend.aclose()
    assert reply.parsed == Ticket(category="ORDER", order_id="4\ufffd2")  # a lone surrogate is no text
    assert [math.isnan(t.logprob) for t in reply.logprobs] == [True, True, True]
    json.loads(reply.record_json())  # storable: no surrogate, nothing that fails to serialise


# --- 4. every other way a reply can be invalid --------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"value": NaN}', '{"value": Infinity}', '{"value": -Infinity}', '{"value": 1e999}', '{"value": -2e400}'],
)
def test_non_finite_numbers_are_not_json_answers(text: str) -> None:
    with pytest.raises(SchemaValidationError, match="not JSON"):
        parse_structured(text, Measure)


def test_lone_surrogates_become_replacement_characters() -> None:
    parsed = parse_structured('{"value": 1.5, "note": "a\\ud800b\\udc00"}', Measure)
    assert parsed.note == "a\ufffdb\ufffd"
    parsed.model_dump_json()  # it serialises, so it can be stored
    assert parse_structured('{"value": 1, "note": "\\ud83d\\ude00"}', Measure).note == "\U0001f600"  # a real pair
    raw = Reply(text='{"value": 2, "note": "x\ud800"}', model="m", backend="scripted")
    assert raw.text == '{"value": 2, "note": "x\ufffd"}'
    json.loads(raw.record_json())


@pytest.mark.timeout(10)
def test_a_huge_list_of_wrong_values_is_refused_without_listing_them_all() -> None:
    class Labels(BaseModel):
        labels: list[str]

    text = '{"labels": [' + ",".join(["1"] * 300_000) + "]}"
    with pytest.raises(SchemaValidationError, match="300,000 values do not fit") as info:
        parse_structured(text, Labels)
    assert info.value.raw_text == text


def test_a_reply_longer_than_any_answer_is_refused_unread() -> None:
    from shoal.models.base import MAX_REPLY_CHARS

    text = '{"x": 1, "y": 2, "pad": "' + " " * MAX_REPLY_CHARS + '"}'
    with pytest.raises(SchemaValidationError, match="characters where Point JSON was expected") as info:
        parse_structured(text, Point)
    assert info.value.raw_text is text


def test_a_validator_that_breaks_on_the_reply_is_a_schema_error() -> None:
    class Picky(BaseModel):
        n: Any

        @field_validator("n")
        @classmethod
        def _plus_one(cls, value: Any) -> Any:
            return value + 1  # TypeError on a string: not a ValueError pydantic would catch

    assert parse_structured('{"n": 1}', Picky).n == 2
    with pytest.raises(SchemaValidationError, match="TypeError"):
        parse_structured('{"n": "one"}', Picky)


# --- a fuzz over many kinds of malformed reply -------------------------------------------------

LABELS = ["A", "B", "AB", "REFUND"]


def _bases() -> list[Any]:
    return [
        {"label": "A"},
        {"label": "AB"},
        {"label": "REFUND"},
        {"labels": ["A", "REFUND"]},
        {"labels": ["AB", "A", "AB"]},
        {"order_id": "A-42", "amount": 12.5, "items": ["x", "y"], "counts": {"a": 1}},
        {"order_id": None},
        {"summary": "The order A-42 is late and the customer wants a refund.", "key_points": ["late", "refund"]},
    ]


def _malformed(rng: random.Random) -> str:
    """One malformed (or, now and then, well-formed) reply of a randomly chosen kind."""
    base = json.dumps(rng.choice(_bases()))
    kind = rng.randrange(20)
    if kind == 0:  # truncated
        return base[: rng.randrange(len(base))]
    if kind == 1:  # a wrong type in every field
        junk = rng.choice([None, 3, -1.5, True, [], {}, "x", [1, [2]], {"a": {"b": None}}])
        return json.dumps(dict.fromkeys(json.loads(base), junk))
    if kind == 2:  # nested past the limit (or just inside it)
        depth = rng.choice([63, 65, 200, 5_000]) if rng.random() < 0.8 else 100_000
        opening, closing = rng.choice([("[", "]"), ('{"a": ', "}"), ('{"label": [', "]}")])
        return opening * depth + rng.choice(["1", ""]) + closing * rng.choice([depth, 0])
    if kind == 3:  # numbers JSON cannot carry, or a float cannot hold
        number = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 5_000, "1" + "0" * 400 + ".5"])
        return base.replace("12.5", number) if "12.5" in base else f'{{"amount": {number}, "label": {number}}}'
    if kind == 4:  # binary junk
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).decode("latin-1")
    if kind == 5:  # empty or blank
        return rng.choice(["", " ", "\n\t ", "```", "``````", "```json\n```", "\u00a0"])
    if kind == 6:  # huge
        filler = rng.choice(["x", " ", "[", "{", '"', "\\", "9", "`"])
        return rng.choice(["", "```json", base[:5]]) + filler * rng.choice([20_000, 100_000])
    if kind == 7:  # a top level that is not an object
        return rng.choice(["[1, 2]", '"A"', "null", "42", "true", "[]", '[{"label": "A"}]', "-0"])
    if kind == 8:  # lone surrogates, raw or escaped, and other odd characters
        odd = rng.choice(["\\ud800", "\\udfff", "\ud800", "\x00", "\\u0000", "\U0001f600", "\\ud83d\\ude00"])
        return base.replace('"A', '"A' + odd, 1).replace('"x', '"' + odd, 1)
    if kind == 9:  # fences: unclosed, with spaces, with the wrong tag
        fence = rng.choice(["```json", "```", "```python", "``` json"])
        spaces = " " * rng.choice([0, 3, 3_000, 50_000])
        return fence + spaces + base + rng.choice(["", "```", spaces + "```", "``", "```x"])
    if kind == 10:  # extra keys and duplicates
        return base[:-1] + ', "label": "B", "extra": [1, {"a": 2}], "label": "ZZ"}'
    if kind == 11:  # labels outside the set, odd label values
        return json.dumps({"label": rng.choice(["", "a", "AB ", "REFUND\n", "A" * 10_000, "\\", '"'])})
    if kind == 12:  # long lists and strings inside a valid shape
        return json.dumps({"items": ["x"] * rng.choice([10, 2_000]), "key_points": ["p"] * 6, "summary": "s" * 2_000})
    if kind == 13:  # garbage around valid JSON
        return rng.choice(["Sure! ", "```json\n", "<|im_end|>", "\ufeff"]) + base + rng.choice(["", " thanks", "\n```"])
    if kind == 14:  # brackets and quotes inside strings, escapes cut in half
        return base.replace('"A', '"[{\\"' + "[" * rng.choice([1, 100]), 1)[: rng.choice([None, -3])]
    return base  # well formed (kinds 15 to 19): only its logprobs are hostile


_LOGPROBS = [-0.01, -0.7, -2.5, -30.0, -800.0, 0.0, 1e-6, 0.5, 5.0, 1000.0, NAN, INF, -INF]


def _tokens(rng: random.Random, text: str) -> list[TokenLogprob]:
    """`text` cut into tokens with hostile logprobs and alternatives (none for huge replies)."""
    if len(text) > 1_000 or rng.random() < 0.1:
        return []
    tokens, at = [], 0
    while at < len(text):
        size = 0 if rng.random() < 0.05 else rng.choice([1, 2, 3, 6, 12])  # an empty token now and then
        piece = text[at : at + size]
        at += size
        alternatives = [
            TopLogprob(token=rng.choice([*LABELS, piece, '"', "", "A" + piece, "B"]), logprob=rng.choice(_LOGPROBS))
            for _ in range(rng.randrange(4))
        ]
        tokens.append(TokenLogprob(token=piece, logprob=rng.choice(_LOGPROBS), top=alternatives))
    return tokens


@pytest.mark.timeout(60)
async def test_a_thousand_malformed_replies_end_as_judgements_or_model_errors() -> None:
    rng = random.Random(20_251_114)
    cases = [(text, _tokens(rng, text)) for text in (_malformed(rng) for _ in range(1_000))]
    current: list[tuple[str, list[TokenLogprob]]] = []

    def answer(request: ChatRequest) -> Reply:
        text, tokens = current[0]
        return parse_reply(Reply(text=text, logprobs=tokens, model=request.model, backend="scripted"), request)

    backend = ScriptedBackend(answer)
    router = ModelRouter(lambda _: backend)
    specialists: list[tuple[Specialist[Any, Any], BaseModel]] = [
        (Classifier(router, "scripted:x", LABELS), TextInput(text="refund for order A-42")),
        (Classifier(router, "scripted:x", LABELS, multi_label=True), TextInput(text="refund for order A-42")),
        (Extractor(router, "scripted:x", Order), TextInput(text="refund for order A-42, 12.5 euros")),
        (Summarizer(router, "scripted:x"), SummaryInput(text="The order A-42 is late. The customer wants a refund.")),
    ]
    outcomes = {"judgement": 0, "model_error": 0}
    for text, tokens in cases:
        current[:] = [(text, tokens)]
        for specialist, data in specialists:
            try:
                reply = await router.chat(specialist.model, specialist.request(data))
            except ModelError:
                outcomes["model_error"] += 1
            else:
                judgement = await specialist.judge(data, reply)
                assert isinstance(judgement, Judgement), text[:200]
                assert finite_in_unit(judgement.confidence), text[:200]
                assert all(math.isfinite(s.value) for s in judgement.evidence), text[:200]
                json.loads(reply.record_json())  # what the engine stores serialises
                outcomes["judgement"] += 1
            result = await specialist.run(data)  # the path the engine takes: never raises here
            assert isinstance(result, Result) and finite_in_unit(result.confidence), text[:200]
    # the fuzz reached both outcomes in numbers, not just one
    assert outcomes["judgement"] > 500 and outcomes["model_error"] > 2_000, outcomes
