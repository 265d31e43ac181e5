"""Priority by the team's rules: as sure as the intent it follows; other intents go to the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import AnsweredBy
from shoal.tickets.files import TicketRow
from shoal.tickets.plan import FIELDS
from shoal.tickets.priority import PriorityClassifier, TicketInput
from shoal.tickets.settings import PRIORITIES


def _intent(label: str, p: float, by: str = AnsweredBy.SPECIALIST) -> dict[str, Any]:
    return {"intent": {"output": {"label": label}, "confidence": p, "answered_by": by}}


async def test_a_rule_answers_with_the_intents_confidence_and_others_are_asked() -> None:
    backend = ScriptedBackend(lambda _: '{"label": "urgent"}')
    priority = PriorityClassifier(
        ModelRouter(lambda _: backend), "scripted:x", PRIORITIES, rules={"complaint": "high"}, name="priority"
    )
    ruled = await priority.run(TicketInput(text="this is a disgrace", upstream=_intent("complaint", 0.83)))
    assert ruled.output is not None and ruled.output.label == "high"
    assert ruled.confidence == pytest.approx(0.83) and not backend.requests
    assert "[tickets.priority_by_intent] complaint = high" in ruled.explain()
    by_person = await priority.run(TicketInput(text="x", upstream=_intent("complaint", 0.2, AnsweredBy.HUMAN)))
    assert by_person.confidence == 1.0
    asked = await priority.run(TicketInput(text="where is my parcel", upstream=_intent("track_order", 0.9)))
    assert asked.output is not None and asked.output.label == "urgent" and len(backend.requests) == 1


def test_a_rule_naming_no_priority_is_refused() -> None:
    with pytest.raises(ValueError, match="not priorities: critical"):
        PriorityClassifier(ModelRouter(lambda _: ScriptedBackend()), "scripted:x", PRIORITIES, rules={"x": "critical"})


async def test_the_ticket_workflow_applies_the_rules(tmp_path: Path) -> None:
    def answer(request: Any) -> str:
        schema = request.output_schema
        labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
        chosen = "complaint" if "complaint" in labels else (labels or ["?"])[0]
        return {
            "Label": json.dumps({"label": chosen}),
            "TicketEntities": "{}",
            "Summary": '{"summary": "The customer complains about the service", "key_points": []}',
        }[schema.__name__]

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    settings.tickets.priority_by_intent = {"complaint": "high"}
    backend = ScriptedBackend(answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        (outcome,) = await shoal.triage([TicketRow(key="C", line=1, text="your service is a disgrace")])
    assert outcome.fields["priority"]["output"]["label"] == "high"
    assert not any("urgently" in m.content for r in backend.requests for m in r.messages)  # never prompted


async def test_fields_that_wait_for_the_intent_are_pending(tmp_path: Path) -> None:
    def answer(request: Any) -> str:
        schema = request.output_schema
        labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
        return {
            "Label": json.dumps({"label": (labels or ["?"])[0]}),
            "TicketEntities": "{}",
            "Summary": '{"summary": "x", "key_points": []}',
        }[schema.__name__]

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    settings.specialists["intent"] = SpecialistSettings(threshold=1.0)  # the intent waits for a person
    settings.frontier_model = None
    backend = ScriptedBackend(answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        (outcome,) = await shoal.triage([TicketRow(key="P", line=1, text="where is my parcel")])
        assert outcome.status == "waiting" and set(outcome.fields) == set(FIELDS)
        for name in ("priority", "reply"):
            assert outcome.fields[name] == {
                "output": None,
                "confidence": None,
                "answered_by": None,
                "status": "pending",
            }
        ticket = shoal.store.get_ticket("", "P")
        assert ticket is not None and set(json.loads(ticket.result_json or "{}")) == set(FIELDS)
