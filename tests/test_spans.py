"""Span heads: an extractor that learns. The logic on the scripted backend's tokens (fast), then
the real thing on the embedded model and Bitext's labelled spans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bitext import DATA, rows
from pydantic import BaseModel, Field

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.errors import ConfigError, HeadError
from shoal.models.embedded import token_offsets
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.span_training import examples_of, measure_spans, span_labels, span_rows
from shoal.specialists.classifier import TextInput
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import TrainedHead
from shoal.specialists.spans import SpanHead, TokenReader, decode, locate, spans_from_label
from shoal.training import is_held_out

SMOL = "embedded:smollm2-135m"


class Entities(BaseModel):
    order_id: str | None = Field(default=None, description="the order number")
    account_type: str | None = Field(default=None, description="the kind of account")
    email: str | None = Field(default=None, description="an email address")


IDS = ["A1234", "77812", "99120", "31337", "55501", "12121", "40404", "80808"]
KINDS = ["gold", "platinum", "free", "pro", "business", "standard", "premium", "basic"]
NONE = ["hello there", "i need help", "what are your hours", "refund my money", "talk to a person", "thanks a lot"]


def toy() -> list[tuple[str, dict[str, tuple[int, int] | None]]]:
    """Order numbers after "order", account kinds before "account", and texts with neither."""

    def at(text: str, value: str) -> tuple[int, int]:
        return text.index(value), text.index(value) + len(value)

    found: list[tuple[str, dict[str, tuple[int, int] | None]]] = []
    for n in IDS:
        for text in (f"please cancel order {n} now", f"where is my order {n}?"):
            found.append((text, {"order_id": at(text, n), "account_type": None}))
    for kind in KINDS:
        for text in (f"switch to the {kind} account", f"close my {kind} account please"):
            found.append((text, {"order_id": None, "account_type": at(text, kind)}))
    found += [(text, {"order_id": None, "account_type": None}) for text in NONE]
    return found


def scripted(answer: str = '{"email": null}') -> tuple[ModelRouter, ScriptedBackend]:
    backend = ScriptedBackend(lambda _: answer)
    return ModelRouter(lambda _: backend), backend


async def toy_head(router: ModelRouter) -> SpanHead:
    examples = toy()
    tokens = await TokenReader(router, "scripted:tok").read([t for t, _ in examples])
    fields = ["order_id", "account_type", "email"]
    return SpanHead.fit(examples, tokens, fields=fields, embed_model="scripted:tok", min_per_field=3)


# --- the parts -----------------------------------------------------------------------------------


def test_token_offsets_follow_the_characters_of_each_token() -> None:
    # SmolLM2's pieces of this text: a character split over two tokens, and spaces carried in front
    text = "café £12 – Müller"
    pieces = [b"c", b"af", b"\xc3\xa9", b" \xc2\xa3", b"1", b"2", b" \xe2\x80\x93", b" M\xc3\xbc", b"ller"]
    offsets = token_offsets(text, pieces)
    assert [text[a:b] for a, b in offsets] == ["c", "af", "é", " £", "1", "2", " –", " Mü", "ller"]
    # half a character ends after it; a piece the text does not have (a special token) spells nothing
    assert token_offsets("é!", [b"\xc3", b"\xa9", b"!"]) == [(0, 1), (0, 1), (1, 2)]
    assert token_offsets("hi", [b"<s>", b"hi"]) == [(0, 0), (0, 2)]
    # a tokenizer that adds a leading space to the first word
    assert token_offsets("hello you", [b" hello", b" you"]) == [(0, 5), (5, 9)]


def test_values_are_located_as_whole_words_first() -> None:
    assert locate("order 1234 and 123", "123") == (15, 18)
    assert locate("close GOLD account", "gold") == (6, 10)
    assert locate("no such thing", "gold") is None
    assert spans_from_label("cancel order 42", json.dumps({"order_id": "42", "email": None})) == {
        "order_id": (13, 15),
        "email": None,
    }
    assert spans_from_label("cancel order 42", json.dumps({"order_id": "43"})) is None  # not in the text
    assert spans_from_label("x", "not json") is None


def test_decoding_weighs_every_span_against_no_value() -> None:
    text = "order 42 now"
    offsets = [(0, 5), (5, 8), (8, 12)]
    probs = np.array([[0.98, 0.01, 0.01], [0.05, 0.9, 0.05], [0.9, 0.02, 0.08]], dtype=np.float32)
    span, p = decode(text, offsets, probs, 0)
    assert span == (6, 8) and text[6:8] == "42" and 0.5 < p < 1.0
    nothing = np.array([[0.99, 0.005, 0.005]] * 3, dtype=np.float32)
    assert decode(text, offsets, nothing, 0)[0] is None
    # a span never starts or ends inside a word
    word = "rebate"
    inside = np.array([[0.01, 0.98, 0.01], [0.98, 0.01, 0.01]], dtype=np.float32)
    assert decode(word, [(0, 3), (3, 6)], inside, 0)[0] in (None, (0, 6))  # never "reb"


async def test_a_span_head_learns_calibrates_and_round_trips() -> None:
    router, _ = scripted()
    head = await toy_head(router)
    assert head.fields == ["order_id", "account_type"]  # email has no examples: it stays prompted
    assert head.info.n_train + head.info.n_calibration == len(toy())
    assert set(head.info.calibration) == {"order_id", "account_type"}
    text = "cancel order 66613 please"
    tokens = (await TokenReader(router, "scripted:tok").read([text]))[0]
    answers = head.read(text, tokens)
    assert answers["order_id"].value == "66613" and text[answers["order_id"].start or 0 :].startswith("66613")
    assert answers["account_type"].value is None
    assert all(0.0 <= a.confidence <= 1.0 for a in answers.values())
    assert set(head.info.metrics["calibration"]) == {"order_id", "account_type"}
    again = SpanHead.from_bytes(head.to_bytes())
    assert again.info == head.info and again.read(text, tokens) == answers
    # a head saved before its neighbours' shapes were features still reads with its own layout
    older = SpanHead(
        head.info.model_copy(update={"layout": 1}),
        mean=head.mean,
        scale=head.scale,
        coef=head.coef[:, :-12],
        intercept=head.intercept,
    )
    assert set(older.read(text, tokens)) == {"order_id", "account_type"}


async def test_a_span_head_refuses_what_it_was_not_made_for() -> None:
    router, _ = scripted()
    head = await toy_head(router)
    extractor = Extractor(router, "scripted:small", Entities, name="entities")
    with pytest.raises(HeadError, match="token vectors of scripted:tok"):
        extractor.use_span_head(head, TokenReader(router, "scripted:other"))

    class Other(BaseModel):
        account_type: str | None = None

    with pytest.raises(HeadError, match="fields this extractor does not have: order_id"):
        Extractor(router, "scripted:small", Other).use_span_head(head, TokenReader(router, "scripted:tok"))
    vectors = np.eye(3, 4, dtype=np.float32).repeat(3, axis=0)
    classifier = TrainedHead.fit(vectors, ["a", "b", "c"] * 3, ["t"] * 9, embed_model="scripted:tok")
    with pytest.raises(HeadError, match="is a classifier head"):
        SpanHead.from_bytes(classifier.to_bytes())
    with pytest.raises(HeadError, match="not a readable shoal span head"):
        SpanHead.from_bytes(b"not a head")
    with pytest.raises(HeadError, match="too few examples"):
        SpanHead.fit(
            toy()[:2], (await TokenReader(router, "scripted:tok").read(["a", "b"]))[:2], fields=["x"], embed_model="m"
        )


async def test_backends_without_token_vectors_say_what_span_heads_need() -> None:
    class NoTokens:
        name = "ollama"

    router = ModelRouter(lambda _: NoTokens())  # type: ignore[arg-type, return-value]
    with pytest.raises(HeadError, match=r"span heads read one vector per token.*embedded model"):
        await router.token_vectors("ollama:qwen", "hello")


# --- the extractor -------------------------------------------------------------------------------


async def test_a_trained_extractor_answers_from_spans_and_prompts_only_the_rest() -> None:
    router, backend = scripted('{"email": "a@b.co"}')
    extractor = Extractor(router, "scripted:small", Entities, name="entities", threshold=0.5)
    extractor.use_span_head(await toy_head(router), TokenReader(router, "scripted:tok"))
    text = "please switch to the gold account, mail a@b.co"
    result = await extractor.run(TextInput(text=text))
    assert result.output is not None
    assert result.output.account_type == "gold" and result.output.order_id is None
    assert result.output.email == "a@b.co"  # from the prompt, which asked for email only
    asked = backend.requests[-1]
    assert "- email" in asked.messages[0].content and "order_id" not in asked.messages[0].content
    spans = {s.name: s for s in result.evidence if s.name.startswith("span_")}
    assert set(spans) == {"span_order_id", "span_account_type"}
    assert '"gold" at characters' in spans["span_account_type"].detail
    assert result.confidence <= min(s.value for s in spans.values()) + 1e-9
    assert "+spans:entities@from file" in result.model and len(result.calls) == 2

    # the frontier rung prompts the whole schema
    frontier = await extractor.run(TextInput(text=text), model="scripted:frontier")
    assert frontier.model == "scripted:frontier" and "order_id" in backend.requests[-1].messages[0].content


async def test_an_extractor_whose_head_knows_every_field_calls_no_model() -> None:
    class Ids(BaseModel):
        order_id: str | None = None
        account_type: str | None = None

    router, backend = scripted()
    extractor = Extractor(router, "scripted:small", Ids, name="entities")
    extractor.use_span_head(await toy_head(router), TokenReader(router, "scripted:tok"))
    result = await extractor.run(TextInput(text="where is my order 31337?"))
    assert result.output == Ids(order_id="31337") and backend.requests == []
    assert not extractor.resamplable


def test_an_answer_teaches_the_values_found_in_the_text() -> None:
    router, _ = scripted()
    extractor = Extractor(router, "scripted:small", Entities)
    text, label = extractor.labelled_example(
        TextInput(text="cancel order 42"), Entities(order_id="42", account_type="gold")
    ) or ("", "")
    assert text == "cancel order 42" and json.loads(label) == {"order_id": "42", "email": None}


def test_span_files_become_labels_at_their_offsets(tmp_path: Path) -> None:
    path = tmp_path / "spans.csv"
    path.write_text(
        "instruction,entity_type,entity_value,start_offset,end_offset\n"
        "cancel purchase 00123842,order_id,123842,16,24\n"  # the value is normalised; the text is not
        "reimburse $12,refund_amount,12,11,13\n"
        "ship to Paris,delivery_city,Paris,8,13\n"  # no such field: says nothing of the others
        "hello,,,,\n",
        encoding="utf-8",
    )
    labelled = {r.text: json.loads(r.label) for r in span_rows(path, ["order_id", "amount", "email"])}
    assert labelled == {
        "cancel purchase 00123842": {"order_id": "00123842", "amount": None},
        "reimburse $12": {"order_id": None, "amount": "12"},
        "ship to Paris": {"order_id": None, "amount": None},
        "hello": {"order_id": None, "amount": None},
    }
    router, _ = scripted()
    examples, unusable = examples_of(Extractor(router, "scripted:small", Entities), span_rows(path, ["order_id"]))
    assert unusable == 0 and examples[0] == ("cancel purchase 00123842", {"order_id": (16, 24)})


async def test_the_engine_trains_attaches_and_reloads_a_span_head(tmp_path: Path) -> None:
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.default_model = "scripted:small"
    settings.frontier_model = None
    settings.tickets.entities = {"order_id": "the order number", "account_type": "the account", "email": "email"}
    backend = ScriptedBackend(lambda _: '{"email": null}')
    lines: list[dict[str, Any]] = []
    for text, spans in toy():
        field, at = next(((f, s) for f, s in spans.items() if s is not None), ("", (0, 0)))
        lines.append(
            {"text": text, "entity_type": field, "entity_value": "", "start_offset": at[0], "end_offset": at[1]}
        )
    files = span_labels(lines, ["order_id", "account_type", "email"], text_column="text")
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        report = await shoal.train("entities", files=files, holdout=0.3, baseline=0, force=True)
        assert report.labels == 2 and report.labels_without_examples == ["email"]
        assert set(report.fields) == {"order_id", "account_type"} and report.n_holdout > 0
        assert report.embedded == len({r.text for r in files})
        extractor = shoal.learner("entities")
        assert isinstance(extractor, Extractor) and extractor.span_head is not None
        # the flywheel: a person's answer is kept as the example the extractor says it teaches
        taught = extractor.labelled_example(
            TextInput(text="cancel order 80808 on my gold account"),
            extractor.output_type(order_id="80808", account_type="gold", email="nobody@example.com"),
        )
        assert taught is not None and json.loads(taught[1]) == {"order_id": "80808", "account_type": "gold"}
        shoal.store.add_examples([{"specialist": "entities", "text": taught[0], "label": taught[1], "source": "human"}])
        again = await shoal.train("entities", baseline=0)  # the other texts' tokens come from the store now
        assert again.embedded == 1 and again.by_source["human"] == 1
        assert again.before is not None and again.before.what == "head v1"
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        fresh = shoal.learner("entities")
        shoal.attach_heads({"entities": fresh})
        assert isinstance(fresh, Extractor) and fresh.span_head is not None and fresh.span_head.info.version
        result = await fresh.run(TextInput(text="please cancel order 55501 now"))
        assert result.output is not None and result.output.model_dump()["order_id"] == "55501"
        with pytest.raises(ConfigError, match="only classifiers can be trained"):
            shoal.learner("summary")


# --- the real model --------------------------------------------------------------------------------


def bitext_examples(chosen: list[dict[str, str]], fields: list[str]) -> list[tuple[str, Any]]:
    labelled = span_labels(chosen, fields, text_column="instruction")
    return [(r.text, s) for r in labelled if (s := spans_from_label(r.text, r.label)) is not None]


@pytest.mark.embedded
@pytest.mark.timeout(900)
async def test_the_embedded_model_gives_token_vectors_that_spell_the_text() -> None:
    from shoal.backends import build_backend

    settings = Settings.load(env={})
    router = ModelRouter(lambda _: build_backend("embedded", settings))
    text = "how can I cancel purchase 113542617735902? – Müller"
    found = await router.token_vectors(SMOL, text)
    assert len(found.offsets) == len(found.vectors) > 10 and not found.cut
    assert "".join(text[a:b] for a, b in found.offsets) == text
    assert {len(v) for v in found.vectors} == {576}
    assert (await router.token_vectors(SMOL, "   ")).offsets == []


@pytest.mark.embedded
@pytest.mark.timeout(900)
async def test_a_trained_extractor_on_the_embedded_model_returns_spans_with_calibrated_confidence() -> None:
    """Fitted on ~260 Bitext texts, measured on 80 others: values are spans of the text, mostly
    right, and the confidence says how often."""
    from shoal.backends import build_backend

    fields = ["order_id", "invoice_id", "account_type", "person_name"]
    # Bitext repeats some texts: split by a hash of the text, so no held-out text was fitted on
    fit_rows = [r for r in rows() if not is_held_out(r["instruction"], 0.2)]
    held_rows = [r for r in rows() if is_held_out(r["instruction"], 0.2)]
    train = [r for r in fit_rows if r["entity_type"] in fields][::7][:180] + [
        r for r in fit_rows if not r["entity_type"]
    ][::29][:80]
    held = [r for r in held_rows if r["entity_type"] in fields][::4][:60] + [
        r for r in held_rows if not r["entity_type"]
    ][::23][:20]
    settings = Settings.load(env={})
    router = ModelRouter(lambda _: build_backend("embedded", settings))
    reader = TokenReader(router, SMOL)
    examples, tests = bitext_examples(train, fields), bitext_examples(held, fields)
    head = SpanHead.fit(examples, await reader.read([t for t, _ in examples]), fields=fields, embed_model=SMOL)
    assert head.fields == fields

    class Ticket(BaseModel):
        order_id: str | None = None
        invoice_id: str | None = None
        account_type: str | None = None
        person_name: str | None = None

    extractor = Extractor(router, "scripted:unused", Ticket, name="entities", threshold=0.5)
    extractor.use_span_head(head, reader)
    answers: list[dict[str, tuple[str | None, float]]] = []
    for text, _ in tests:
        result = await extractor.run(TextInput(text=text))
        assert result.output is not None and len(result.calls) == 1  # no prompt: the head knows every field
        spans = {s.name[5:]: s for s in result.evidence if s.name.startswith("span_")}
        values = result.output.model_dump()
        for value in values.values():
            if value is not None:
                assert value in text  # grounded by construction
        answers.append({f: (values[f], spans[f].value) for f in fields})
    metrics, per_field = measure_spans("held out", 0.5, tests, answers, fields)
    print(f"\nspans on {metrics.n} held-out Bitext texts: {metrics.model_dump_json()}")
    for field, m in per_field.items():
        print(f"  {field}: {json.dumps(m)}")
    assert metrics.accuracy >= 0.8
    valued = [m for m in per_field.values() if m["values"]]
    assert sum(m["value_accuracy"] * m["values"] for m in valued) / sum(m["values"] for m in valued) >= 0.8
    assert metrics.ece <= 0.15  # calibrated: confidence close to how often every field is right
    # the confident answers are the right ones more often than the rest
    assert metrics.accepted_accuracy is not None and metrics.accepted_accuracy >= metrics.accuracy


def test_the_bitext_file_is_a_file_of_labelled_spans() -> None:
    labelled = span_rows(DATA / "bitext_customer_support.csv", ["order_id", "account_type", "amount", "email"])
    values = [json.loads(r.label) for r in labelled]
    assert all(set(v) == {"order_id", "account_type", "amount"} for v in values)  # never an email
    shown = [(r.text, v) for r, v in zip(labelled, values, strict=True) if v["order_id"]]
    assert shown and all(v["order_id"] in text for text, v in shown)
