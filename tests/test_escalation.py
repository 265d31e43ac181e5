"""The ladder with the real embedded classifier below and a scripted frontier above it,
speaking the OpenAI HTTP API on loopback."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest
from bitext import categories, sample
from httpfake import Answer, FakeServer

from shoal.agents.escalation import (
    Budget,
    Escalation,
    Ladder,
    LadderConfig,
    MemoryLedger,
    Rung,
    answer_by_human,
)
from shoal.backends import build_router
from shoal.config import Settings
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.specialists import Classification, Classifier, TextInput

FRONTIER = "openai:gpt-4o-mini"
PATH = "/v1/chat/completions"


def frontier_reply(label: str) -> dict[str, Any]:
    content = json.dumps({"label": label})
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": [{"token": content, "logprob": 0.0, "bytes": None, "top_logprobs": []}]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    }


@pytest.fixture
def router(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> ModelRouter:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings.load(env={"SHOAL_FRONTIER_BASE_URL": server.url + "/v1"})
    settings.retry.initial_s = 0.01
    return build_router(settings)


def classifier(router: ModelRouter) -> Classifier:
    return Classifier(router, "embedded:smollm2-135m", categories(), instruction="Classify the support request.")


@pytest.mark.embedded
async def test_frontier_called_exactly_for_items_below_threshold(server: FakeServer, router: ModelRouter) -> None:
    rows = sample(8)
    spec = classifier(router)
    firsts = [await spec.run(TextInput(text=r["instruction"])) for r in rows]
    threshold = statistics.median(r.confidence for r in firsts)
    below = [row for row, first in zip(rows, firsts, strict=True) if first.confidence < threshold]
    assert 0 < len(below) < len(rows)
    for row in below:
        server.add(PATH, Answer(body=frontier_reply(row["category"])))

    records: list[Escalation] = []

    async def keep(item: Escalation) -> None:
        records.append(item)

    ladder = Ladder(LadderConfig(threshold=threshold, frontier=FRONTIER), on_escalation=keep)
    outcomes = [await ladder.run(spec, TextInput(text=r["instruction"])) for r in rows]

    assert len(server.bodies(PATH)) == len(below)
    for row, first, outcome in zip(rows, firsts, outcomes, strict=True):
        assert outcome.first.confidence == pytest.approx(first.confidence)
        if first.confidence >= threshold:
            assert outcome.status == "accepted" and outcome.answered_by == "specialist"
            assert not outcome.escalations
        else:
            assert outcome.status == "escalated" and outcome.answered_by == "frontier"
            assert outcome.output is not None and outcome.output.label == row["category"]
            (record,) = outcome.escalations
            assert record.rung == Rung.FRONTIER and record.outcome == "accepted"
            assert record.confidence_before == pytest.approx(first.confidence)
            assert record.confidence_after == pytest.approx(1.0)
            assert record.cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
            assert "below threshold" in record.reason
    assert len(records) == len(below)
    # the frontier got the same task: the same system prompt and the same text
    sent = server.bodies(PATH)[0]
    assert "Classify the support request." in sent["messages"][0]["content"]


@pytest.mark.embedded
async def test_nothing_escalates_above_threshold(server: FakeServer, router: ModelRouter) -> None:
    ladder = Ladder(LadderConfig(threshold=0.0, frontier=FRONTIER))
    for row in sample(3):
        outcome = await ladder.run(classifier(router), TextInput(text=row["instruction"]))
        assert outcome.status == "accepted"
    assert server.bodies(PATH) == []


def scripted_router(server: FakeServer, answers: list[str], monkeypatch: pytest.MonkeyPatch) -> ModelRouter:
    """A scripted small model (no logprobs: confidence 0, always escalates) under the HTTP frontier."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    small = ScriptedBackend(answers)
    settings = Settings.load(env={"SHOAL_FRONTIER_BASE_URL": server.url + "/v1"})
    settings.retry.initial_s = 0.01
    real = build_router(settings)
    return ModelRouter(lambda name: small if name == "scripted" else real.backend(name))


async def test_budget_exhaustion_sends_items_to_the_human_rung(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = scripted_router(server, ['{"label": "A"}'] * 3, monkeypatch)
    spec = Classifier(router, "scripted:small", ["A", "B"])
    server.always(PATH, Answer(body=frontier_reply("B")))
    ledger = MemoryLedger()
    budget = Budget(per_run_usd=0.0005, ledger=ledger)  # one call costs 0.00045
    ladder = Ladder(LadderConfig(threshold=0.7, frontier=FRONTIER), budget=budget)

    outcomes = [await ladder.run(spec, TextInput(text=t)) for t in ("one", "two", "three")]
    # the check comes before each call: two calls fit under $0.0005 before it is spent
    assert [o.answered_by for o in outcomes] == ["frontier", "frontier", None]
    assert outcomes[0].output == Classification(label="B", labels=["B"], distribution={"B": 1.0, "A": 0.0}, margin=1.0)
    assert budget.run_spent == pytest.approx(0.0009) and await ledger.spent_today() == pytest.approx(0.0009)
    last = outcomes[2]
    assert last.status == "needs_human"
    assert [e.rung for e in last.escalations] == [Rung.FRONTIER, Rung.HUMAN]
    assert last.escalations[0].outcome == "skipped" and "run frontier budget spent" in last.escalations[0].reason
    assert last.escalations[1].outcome == "pending"
    assert len(server.bodies(PATH)) == 2


async def test_daily_budget(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    router = scripted_router(server, ['{"label": "A"}'], monkeypatch)
    spec = Classifier(router, "scripted:small", ["A", "B"])
    ledger = MemoryLedger()
    await ledger.add(5.0)
    ladder = Ladder(LadderConfig(threshold=0.7, frontier=FRONTIER), budget=Budget(per_day_usd=5.0, ledger=ledger))
    outcome = await ladder.run(spec, TextInput(text="x"))
    assert outcome.status == "needs_human" and "daily frontier budget" in outcome.escalations[0].reason
    assert server.bodies(PATH) == []


@pytest.mark.parametrize(
    "answer",
    [
        Answer(body=frontier_reply("NOT_A_LABEL")),
        Answer(body={"choices": []}),
        Answer(status=400, body={"error": {"message": "bad schema", "type": "invalid_request_error"}}),
        Answer(status=500, body={"error": {"message": "down"}}),
    ],
    ids=["label-outside-set", "no-choices", "rejected", "server-down"],
)
async def test_invalid_frontier_output_goes_to_a_person(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, answer: Answer
) -> None:
    router = scripted_router(server, ['{"label": "A"}'], monkeypatch)
    spec = Classifier(router, "scripted:small", ["A", "B"])
    server.always(PATH, answer)
    outcome = await Ladder(LadderConfig(threshold=0.7, frontier=FRONTIER)).run(spec, TextInput(text="x"))
    assert outcome.status == "needs_human"
    frontier, human = outcome.escalations
    assert frontier.rung == Rung.FRONTIER and frontier.outcome == "rejected"
    assert "frontier gave no usable answer" in human.reason

    done = answer_by_human(outcome, Classification(label="B", labels=["B"]), who="ops@example.com")
    assert done.status == "escalated" and done.answered_by == "human"
    assert done.output is not None and done.output.label == "B"
    assert done.result.model == "human:ops@example.com" and done.result.confidence == 1.0
    assert done.escalations[-1].outcome == "accepted"


async def test_resampling_agreement_is_the_confidence() -> None:
    small = ScriptedBackend(['{"label": "A"}', '{"label": "A"}', '{"label": "A"}', '{"label": "B"}', '{"label": "A"}'])
    spec = Classifier(ModelRouter(lambda _: small), "scripted:small", ["A", "B"])
    ladder = Ladder(LadderConfig(threshold=0.7, resample=4, human=False))
    outcome = await ladder.run(spec, TextInput(text="x"))
    assert outcome.answered_by == "resample" and outcome.result.confidence == pytest.approx(0.8)
    assert outcome.output is not None and outcome.output.label == "A"
    assert [r.temperature for r in small.requests[1:]] == [0.8] * 4
    assert outcome.escalations[0].rung == Rung.RESAMPLE and outcome.escalations[0].confidence_after == 0.8

    split = ScriptedBackend(['{"label": "A"}', '{"label": "B"}', '{"label": "A"}', '{"label": "B"}'])
    spec = Classifier(ModelRouter(lambda _: split), "scripted:small", ["A", "B"])
    outcome = await Ladder(LadderConfig(threshold=0.7, resample=3, human=False)).run(spec, TextInput(text="x"))
    assert outcome.status == "failed" and outcome.result.confidence == 0.5
