"""Runs left waiting for a person, written into a test's database by a scripted model.

The model only sets the scene: what is tested is what a person does next, through the real
`shoal` command in another process (reading the queue, answering, accepting), as they would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from shoal.config import Settings, SpecialistSettings
from shoal.engine import RunReport, Shoal, TicketOutcome
from shoal.models.base import ChatRequest
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.tickets.files import TicketRow
from shoal.tickets.plan import FIELDS

TICKET = "Ticket from Anna: my order 70012345 arrived broken and I want a refund."
# two lines: too long to be its own summary, so the summary is the model's (and can be doubted)
LONG_TICKET = TICKET + "\nSent from my phone, sorry for typos."
KIND = {"steps": [{"id": "kind", "specialist": "classifier", "instruction": "categorise it", "inputs": ["task"]}]}


def shoal_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a process, on the test's database (conftest sets SHOAL_DB)."""
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=cwd,
        timeout=120,
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be a single `error: ...` line."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), out.stderr
    return lines[0]


def ticket_answer(request: ChatRequest) -> str:
    """Every ticket field answered: the entities with an id the ticket does not have (so they are
    doubted), the rest as a model that reads the ticket would."""
    schema = request.output_schema
    assert schema is not None
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    return {
        "Label": json.dumps({"label": (labels or ["?"])[0]}),
        "TicketEntities": '{"order_id": "99999"}',
        "Summary": '{"summary": "Order 70012345 arrived broken and a refund is wanted", "key_points": []}',
        "ReplyDraft": '{"reply": "Thank you, we are looking into your order now."}',
    }[schema.__name__]


def _engine(doubted: dict[str, float], answer: Any) -> Shoal:
    settings = Settings.load()  # SHOAL_DB from conftest: the database the command reads too
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in [*FIELDS, "classifier"]}
    settings.specialists.update({name: SpecialistSettings(threshold=t) for name, t in doubted.items()})
    backend = ScriptedBackend(answer)
    return Shoal(settings, router=ModelRouter(lambda _: backend))


async def waiting_classifier(reply: str = '{"label": "ORDER"}') -> RunReport:
    """A one-step task run whose classifier answer waits for a person (no frontier key)."""
    async with _engine({"classifier": 1.0}, lambda _: reply) as engine:
        report = await engine.run(TICKET, plan=KIND)
    assert report.status == "waiting" and len(report.reviews) == 1, report
    return report


async def waiting_ticket() -> tuple[TicketOutcome, dict[str, int]]:
    """A triaged ticket whose entities and summary wait for a person: (outcome, step -> review id)."""
    async with _engine({"entities": 1.0, "summary": 1.0}, ticket_answer) as engine:
        outcome = await engine.triage_ticket(TicketRow(key="T1", line=1, text=LONG_TICKET), source="tickets.csv")
        reviews = {r.step_id: r.id or 0 for r in engine.store.reviews(run_id=outcome.run_id)}
    assert outcome.status == "waiting" and set(reviews) == {"entities", "summary"}, outcome
    return outcome, reviews
