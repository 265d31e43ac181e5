"""Free text is honest: a text cut at a limit is a failure, grounding matches whole words, and a
summary that turns a request into a done deed is not trusted."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from shoal.backends import build_router
from shoal.config import Settings
from shoal.engine.wiring import configured
from shoal.models import ModelRouter
from shoal.models.base import Reply, Usage
from shoal.models.scripted import ScriptedBackend
from shoal.specialists import Extractor, TextInput
from shoal.specialists.grounding import grounded, unsupported_claims
from shoal.specialists.summarizer import Summarizer, SummaryInput

SMOL = "embedded:smollm2-135m"
TICKET = "Hi, my order 70012345 arrived broken and I want a refund please."


def scripted(*answers: str | Reply) -> ModelRouter:
    backend = ScriptedBackend(list(answers))
    return ModelRouter(lambda _: backend)


@pytest.mark.parametrize(
    ("value", "source", "expected"),
    [
        ("12345", "my order 70012345 arrived", False),
        ("70012345", "order 70012345.", True),
        ("ORD 123-45", "ref ord12345 ok", True),
        ("ord12345", "ref ORD 123-45 ok", True),
        ("ord1234", "ref ORD 123-45 ok", False),
        ("refund", "I was refunded", False),
        ("John Smith", "hi, john  smith here", True),
        ("anna@example.com", "mail anna@example.com now", True),
    ],
)
def test_grounding_matches_whole_words_and_numbers(value: str, source: str, expected: bool) -> None:
    assert grounded(value, source) is expected


def test_a_request_told_as_done_is_an_unsupported_claim() -> None:
    assert unsupported_claims("The ticket was refunded.", TICKET) == ["was refunded"]
    assert unsupported_claims("Order 70012345 arrived broken; customer wants a refund.", TICKET) == []
    assert unsupported_claims("The refund was sent on Monday.", "Your refund was sent on Monday.") == []


async def test_a_summary_that_says_the_opposite_is_not_trusted() -> None:
    summarizer = Summarizer(
        scripted(
            '{"summary": "Order 70012345 arrived broken; the customer wants a refund.", "key_points": []}',
            '{"summary": "Order 70012345 arrived broken and was refunded.", "key_points": []}',
        ),
        "scripted:x",
        min_words=3,
    )
    faithful = await summarizer.run(SummaryInput(text=TICKET))
    opposite = await summarizer.run(SummaryInput(text=TICKET))
    assert faithful.confidence > 0.6
    assert opposite.confidence < 0.2
    assert "was refunded" in opposite.explain()


class Note(BaseModel):
    note: str = Field(max_length=20)


async def test_a_string_at_its_max_length_is_a_failed_answer() -> None:
    extractor = Extractor(scripted('{"note": "' + "x" * 20 + '"}'), "scripted:x", Note)
    result = await extractor.run(TextInput(text="anything at all"))
    assert not result.ok and result.confidence == 0.0
    assert result.evidence[0].name == "cut_off"
    assert "limit of 20 characters" in result.explain()


async def test_a_reply_stopped_at_max_tokens_is_a_failed_answer() -> None:
    stopped = Reply(
        text='{"summary": "Order 70012345 arrived broken.", "key_points": []}',
        model="x",
        backend="scripted",
        usage=Usage(input_tokens=10, output_tokens=5),
        finish_reason="length",
    )
    summarizer = Summarizer(scripted(stopped), "scripted:x", min_words=3, name="summary")
    result = await summarizer.run(SummaryInput(text=TICKET))
    assert not result.ok
    assert "[specialists.summary] max_tokens" in result.explain()


@pytest.mark.embedded
async def test_the_embedded_model_cut_by_max_tokens_fails_and_says_which_setting() -> None:
    settings = Settings.model_validate({"specialists": {"summary": {"max_tokens": 8}}})
    router = build_router(settings)
    summarizer = configured({"summary": Summarizer(router, SMOL, min_words=3, max_words=25, name="summary")}, settings)[
        "summary"
    ]
    assert summarizer.max_tokens == 8
    result = await summarizer.run(SummaryInput(text=TICKET))
    assert not result.ok and result.confidence == 0.0
    assert "max_tokens (8)" in result.explain() and "[specialists.summary] max_tokens = 16" in result.explain()


@pytest.mark.embedded
async def test_the_default_ticket_summary_finishes_on_the_embedded_model() -> None:
    from shoal.tickets.plan import ticket_specialists

    settings = Settings.load(env={})
    summary = ticket_specialists(build_router(settings), settings)["summary"]
    result = await summary.run({"text": TICKET})
    assert all(s.name != "cut_off" for s in result.evidence), result.explain()
