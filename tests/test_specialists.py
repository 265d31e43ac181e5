"""Each specialist on the real embedded model with Bitext rows, and on malformed replies.

The assertions are on structure and on confidence coming from the real signals, never on the
135M model being right.
"""

from __future__ import annotations

import math

import pytest
from bitext import categories, sample
from conftest import require_bwrap
from pydantic import BaseModel, Field

from shoal.backends import build_router
from shoal.config import Settings
from shoal.errors import BackendUnavailableError
from shoal.models.base import ChatRequest, Reply, TokenLogprob
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.specialists import (
    Classifier,
    Coder,
    CodeTask,
    Extractor,
    Summarizer,
    SummaryInput,
    TextInput,
)

SMOL = "embedded:smollm2-135m"


class OrderRef(BaseModel):
    order_id: str | None = Field(default=None, description="the order or purchase number")


@pytest.fixture(scope="module")
def router() -> ModelRouter:
    return build_router(Settings.load(env={}))


def scripted(*answers: str | Exception) -> ModelRouter:
    backend = ScriptedBackend(list(answers))
    return ModelRouter(lambda _: backend)


@pytest.mark.embedded
async def test_classifier_on_bitext_categories(router: ModelRouter) -> None:
    labels = categories()
    classifier = Classifier(router, SMOL, labels, instruction="Classify the customer's support request.")
    results = [await classifier.run(TextInput(text=row["instruction"])) for row in sample(6)]
    confidences = []
    for result in results:
        assert result.ok and result.output is not None
        out = result.output
        assert out.label in labels
        assert set(out.distribution) <= set(labels)
        assert 0.0 < sum(out.distribution.values()) <= 1.0 + 1e-6
        assert result.confidence == pytest.approx(out.distribution[out.label], abs=1e-5)
        assert {s.name for s in result.evidence} == {"label_probability", "margin", "label_mass"}
        assert len(result.calls) == 1 and result.calls[0].reply is not None
        assert result.calls[0].reply.logprobs, "confidence must come from token probabilities"
        confidences.append(result.confidence)
    assert len({round(c, 4) for c in confidences}) > 1, "confidence is not a constant"


@pytest.mark.embedded
async def test_multi_label_classifier(router: ModelRouter) -> None:
    classifier = Classifier(router, SMOL, {"refund": "money back", "delivery": "shipping, parcels"}, multi_label=True)
    result = await classifier.run({"text": "Where is my parcel? And I want my money back."})
    assert result.ok and result.output is not None
    assert set(result.output.labels) <= {"refund", "delivery"} and result.output.labels
    assert 0.0 <= result.confidence <= 1.0


@pytest.mark.embedded
async def test_extractor_grounds_order_ids(router: ModelRouter) -> None:
    extractor = Extractor(router, SMOL, OrderRef)
    rows = sample(5, entity="order_id")
    seen = set()
    for row in rows:
        result = await extractor.run(TextInput(text=row["instruction"]))
        assert result.ok and isinstance(result.output, OrderRef)
        signals = {s.name: s for s in result.evidence}
        assert set(signals) == {"required", "grounded", "token_p"}
        value = result.output.order_id
        if value:
            in_text = value.lower() in row["instruction"].lower()
            assert (signals["grounded"].value == 1.0) == in_text
        expected = signals["required"].value * signals["grounded"].value * (0.4 + 0.6 * signals["token_p"].value)
        assert result.confidence == pytest.approx(expected)
        seen.add(round(result.confidence, 4))
    assert len(seen) > 1


async def test_extractor_flags_invented_values() -> None:
    class Contact(BaseModel):
        name: str
        email: str | None = None

    router = scripted('{"name": "Dana", "email": "dana@example.com"}', '{"name": "Dana", "email": null}')
    extractor = Extractor(router, "scripted:x", Contact)
    invented = await extractor.run(TextInput(text="Hi, this is Dana, my order is late"))
    honest = await extractor.run(TextInput(text="Hi, this is Dana, my order is late"))
    assert "email" in invented.explain() and "not in the text" in invented.explain()
    assert invented.confidence < honest.confidence
    assert next(s for s in invented.evidence if s.name == "grounded").value == 0.5


@pytest.mark.embedded
async def test_summarizer_on_a_bitext_response(router: ModelRouter) -> None:
    summarizer = Summarizer(router, SMOL, max_words=40)
    for row in sample(2):
        result = await summarizer.run(SummaryInput(text=row["response"]))
        if not result.ok:  # a 135M model may ramble past max_tokens: then it must say so
            assert result.confidence == 0.0 and result.error
            continue
        assert result.output is not None and result.output.summary
        assert {s.name for s in result.evidence} == {
            "numbers",
            "names",
            "content_words",
            "says_what_source_says",
            "length",
        }


async def test_summarizer_penalises_invented_numbers() -> None:
    source = "Your refund of 40 dollars was sent on Monday to the card ending 1234."
    router = scripted(
        '{"summary": "Refund of 40 dollars sent Monday to card 1234.", "key_points": []}',
        '{"summary": "Refund of 400 dollars sent Friday to card 9999.", "key_points": []}',
    )
    summarizer = Summarizer(router, "scripted:x", min_words=3)
    faithful = await summarizer.run(SummaryInput(text=source))
    invented = await summarizer.run(SummaryInput(text=source))
    assert faithful.confidence > 0.9
    assert invented.confidence < 0.2
    assert "400" in invented.explain() and "9999" in invented.explain()


@pytest.mark.embedded
async def test_coder_on_the_embedded_model(router: ModelRouter) -> None:
    coder = Coder(router, SMOL)
    task = CodeTask(
        task="Write a Python function add(a, b) that returns the sum of a and b.",
        tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
    )
    result = await coder.run(task)
    names = [s.name for s in result.evidence]
    if result.ok:
        assert names[0] == "parses"
        assert result.output is not None
        if "tests" in names:
            passed = sum(t.passed for t in result.output.tests)
            assert result.confidence == pytest.approx(0.1 + 0.85 * passed / 2)
        else:
            assert result.confidence in (0.0, 0.05)
    else:
        assert result.confidence == 0.0 and result.error


async def test_coder_confidence_follows_the_tests() -> None:
    require_bwrap()
    good = '{"code": "def add(a, b):\\n    return a + b\\n", "explanation": "adds"}'
    half = '{"code": "def add(a, b):\\n    return abs(a) + b\\n", "explanation": "adds"}'
    broken = '{"code": "def add(a, b) return a + b", "explanation": "oops"}'
    crashes = '{"code": "import nonexistent_module_xyz", "explanation": ""}'
    router = scripted(good, half, broken, crashes)
    coder = Coder(router, "scripted:x")
    task = CodeTask(task="add", tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    results = [await coder.run(task) for _ in range(4)]
    assert [round(r.confidence, 3) for r in results] == [0.95, 0.525, 0.0, 0.05]
    assert "AssertionError" in results[1].explain()
    assert "SyntaxError" in results[2].explain()
    assert "ModuleNotFoundError" in results[3].explain()


MALFORMED = ["{not json", '{"label": 3}', "", "x" * 1_000_000, '{"summary": 12}', '{"code": null}']


@pytest.mark.parametrize("answer", MALFORMED, ids=["invalid", "wrong-type", "empty", "1MB", "wrong-field", "null"])
async def test_malformed_replies_become_zero_confidence(answer: str) -> None:
    router = scripted(*([answer] * 4))
    specialists = [
        (Classifier(router, "scripted:x", ["A", "B"]), TextInput(text="t")),
        (Extractor(router, "scripted:x", OrderRef), TextInput(text="t")),
        (Summarizer(router, "scripted:x"), SummaryInput(text="t")),
        (Coder(router, "scripted:x"), CodeTask(task="t")),
    ]
    for specialist, data in specialists:
        result = await specialist.run(data)  # type: ignore[attr-defined]
        if result.ok:  # e.g. '{"code": null}' is a valid OrderRef with nothing extracted
            continue
        assert result.confidence == 0.0
        assert result.output is None and result.error
        assert result.calls and result.calls[0].error_type == "SchemaValidationError"
        assert result.calls[0].raw_text == answer


async def test_unreachable_backend_raises_rather_than_guessing() -> None:
    router = scripted(BackendUnavailableError("cannot reach Ollama"))
    with pytest.raises(BackendUnavailableError):
        await Classifier(router, "scripted:x", ["A", "B"]).run(TextInput(text="t"))


async def test_classifier_without_logprobs_says_so() -> None:
    def answer(request: ChatRequest) -> Reply:
        return Reply(
            text='{"label": "A"}',
            parsed=request.output_schema.model_validate({"label": "A"}),  # type: ignore[union-attr]
            model="x",
            backend="scripted",
        )

    backend = ScriptedBackend(answer)
    result = await Classifier(ModelRouter(lambda _: backend), "scripted:x", ["A", "B"]).run(TextInput(text="t"))
    assert result.confidence == 0.0 and "no token probabilities" in result.explain()


def test_bad_label_sets() -> None:
    router = scripted()
    with pytest.raises(ValueError, match="at least two"):
        Classifier(router, "scripted:x", ["only"])
    with pytest.raises(ValueError, match="not in the label set"):
        Classifier(router, "scripted:x", ["A", "B"], examples=[("hi", "C")])


async def test_an_unparsable_reply_still_counts_its_cost() -> None:
    from shoal.models.base import Usage

    def answer(request: ChatRequest) -> Reply:
        from shoal.models.base import parse_reply

        reply = Reply(
            text='{"label": "NOPE"}',
            usage=Usage(input_tokens=900, output_tokens=12),
            latency_s=0.25,
            cost_usd=0.0003,
            model="frontier",
            backend="scripted",
        )
        return parse_reply(reply, request)

    backend = ScriptedBackend(answer)
    result = await Classifier(ModelRouter(lambda _: backend), "scripted:x", ["A", "B"]).run(TextInput(text="t"))
    assert result.confidence == 0.0 and result.error
    (call,) = result.calls
    assert call.error_type == "SchemaValidationError" and call.reply is not None
    assert call.reply.usage.output_tokens == 12 and call.latency_s == 0.25
    assert result.cost_usd == pytest.approx(0.0003)


async def test_extractor_that_finds_nothing_is_scored_on_its_nulls() -> None:
    """Keys and braces are forced by the grammar; only the model's belief in each `null` counts."""

    class Optional2(BaseModel):
        order_id: str | None = None
        email: str | None = None

    def reply(null_p: float) -> Reply:
        pieces = [('{"', 0.01), ("order_id", 0.01), ('": ', 0.01), ("null", null_p), (', "', 0.01)]
        pieces += [("email", 0.01), ('": ', 0.01), ("null", null_p), ("}", 0.01)]
        tokens = [TokenLogprob(token=t, logprob=math.log(p)) for t, p in pieces]
        text = "".join(t for t, _ in pieces)
        return Reply(text=text, parsed=Optional2(), logprobs=tokens, model="x", backend="scripted")

    extractor = Extractor(scripted(), "scripted:x", Optional2)
    data = TextInput(text="Where is my parcel?")
    sure = await extractor.judge(data, reply(0.9))
    unsure = await extractor.judge(data, reply(0.2))
    assert next(s for s in sure.evidence if s.name == "token_p").value == pytest.approx(0.9)
    assert sure.confidence == pytest.approx(0.4 + 0.6 * 0.9)
    assert unsure.confidence < sure.confidence
