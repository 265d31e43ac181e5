"""Statuses and rungs are the `StrEnum`s of `shoal.status`: what the store writes is always one of
their values (read back raw, with sqlite3), the schema is the VARCHAR one earlier versions wrote,
and no module compares a status to a bare string."""

from __future__ import annotations

import json
import re
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal import status as status_module
from shoal.config import Settings, SpecialistSettings
from shoal.errors import StoreError
from shoal.graphs.persist import outcome_of
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import (
    AnsweredBy,
    EscalationOutcome,
    ReviewStatus,
    Rung,
    RunStatus,
    StepStatus,
    TicketStatus,
)
from shoal.store import EscalationRow, Review, Step, Store
from shoal.tickets.files import BadRow, TicketRow
from shoal.tickets.plan import FIELDS
from shoal.tickets.triage import TicketDesk

SHOAL = Path(shoal.__file__).resolve().parent

# (table, column) -> the enum its values belong to
COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("run", "status"): RunStatus,
    ("step", "status"): StepStatus,
    ("step", "answered_by"): AnsweredBy,
    ("escalation", "rung"): Rung,
    ("escalation", "outcome"): EscalationOutcome,
    ("review", "status"): ReviewStatus,
    ("ticket", "status"): TicketStatus,
}


def raw_values(db: Path) -> dict[tuple[str, str], set[str | None]]:
    """Every value of every status column, as SQLite holds it (no SQLAlchemy, no shoal)."""
    with sqlite3.connect(db) as connection:
        return {
            (table, column): {row[0] for row in connection.execute(f"SELECT {column} FROM {table}")}
            for table, column in COLUMNS
        }


def assert_members(found: dict[tuple[str, str], set[str | None]]) -> None:
    for (table, column), values in found.items():
        enum = COLUMNS[(table, column)]
        strays = {v for v in values if v is not None and v not in {m.value for m in enum}}
        assert not strays, f"{table}.{column} holds {strays}, not values of {enum.__name__}"
        assert all(v is None or type(v) is str for v in values)


def test_the_enums_say_what_they_mean() -> None:
    enums = [getattr(status_module, name) for name in status_module.__all__]
    assert {e.__name__ for e in enums} == {
        "RunStatus", "StepStatus", "TicketStatus", "ReviewStatus", "Rung", "EscalationOutcome", "AnsweredBy",
        "LadderStatus", "WorkKind", "WorkStatus", "WorkerStatus", "DeliveryStatus",
    }  # fmt: skip
    for enum in enums:
        assert issubclass(enum, StrEnum) and enum.__doc__, enum
        assert all(m.value == m.name.lower() for m in enum), enum  # values are what the database holds
        assert getattr(shoal, enum.__name__) is enum  # exported from `shoal`
    # "stopped" is what a Ctrl-C or cancelled run is recorded as; "cancelled" was never written
    assert RunStatus.STOPPED == "stopped" and "cancelled" not in {m.value for m in RunStatus}
    from shoal.agents.escalation import Rung as ladder_rung

    assert ladder_rung is Rung


def test_status_module_is_a_leaf() -> None:
    source = (SHOAL / "status.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+shoal\b", source, re.MULTILINE)


def test_every_enum_value_is_stored_as_itself_and_read_back_as_a_member(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    store = Store(db)
    for n, status in enumerate(RunStatus):
        store.create_run(f"r{n}", "task")
        store.update_run(f"r{n}", status=status)
        assert store.get_run(f"r{n}").status is status  # type: ignore[union-attr]
    store.create_run("f1", "task")
    store.finish_run("f1", RunStatus.STOPPED, 0.1)
    store.create_run("f2", "task")
    store.finish_run("f2", "done", 0.1)  # the engine's plain strings still do
    assert store.get_run("f1").status is RunStatus.STOPPED  # type: ignore[union-attr]
    statuses = list(StepStatus)
    for n, by in enumerate(AnsweredBy):  # the fast path (no ORM object, no SQLAlchemy)
        values = {"status": statuses[n % len(statuses)], "answered_by": by}
        store.insert_step({"run_id": "r2", "step_id": f"fast{n}", "specialist": "c", **values}, [])
    items = [
        EscalationRow(
            run_id="r2", step_id="slow", specialist="c", rung=rung, reason="r", confidence_before=0.1, outcome=outcome
        )
        for rung in Rung
        for outcome in EscalationOutcome
    ]
    review = Review(run_id="r2", step_id="slow", specialist="c")
    step = Step(run_id="r2", step_id="slow", specialist="c", status=StepStatus.WAITING)
    store.record_step(step, [], items, review)
    store.insert_step(
        {"run_id": "r2", "step_id": "slow2", "specialist": "c", "answered_by": AnsweredBy.UNVERIFIED},
        [],
        [EscalationRow(run_id="r2", specialist="c", rung=Rung.HUMAN, reason="r", confidence_before=0.1,
                       outcome=EscalationOutcome.PENDING)],
        Review(run_id="r2", step_id="slow2", specialist="c"),
    )  # fmt: skip
    assert review.id is not None
    store.answer_review(review.id, {"label": "x"}, "tester")
    for status in TicketStatus:
        store.put_ticket("src", status.value, status=status)

    found = raw_values(db)
    assert_members(found)
    assert found[("run", "status")] == {m.value for m in RunStatus}
    assert found[("step", "status")] == {m.value for m in StepStatus}
    assert found[("step", "answered_by")] >= {m.value for m in AnsweredBy}
    assert found[("escalation", "rung")] == {m.value for m in Rung}
    assert found[("escalation", "outcome")] == {m.value for m in EscalationOutcome}
    assert found[("review", "status")] == {m.value for m in ReviewStatus}
    assert found[("ticket", "status")] == {m.value for m in TicketStatus}

    # read back through the store: members, not bare strings
    assert {s.status for s in store.steps("r2")} <= set(StepStatus)
    assert all(type(s.status) is StepStatus for s in store.steps("r2"))
    assert all(type(e.rung) is Rung and type(e.outcome) is EscalationOutcome for e in store.escalations("r2"))
    assert [r.status for r in store.reviews(status=None)] == [ReviewStatus.ANSWERED, ReviewStatus.PENDING]
    assert all(type(t.status) is TicketStatus for t in store.tickets("src"))
    assert [r.id for r in store.list_runs(status=RunStatus.WAITING)] == ["r2"]
    assert [r.id for r in store.list_runs(status="waiting")] == ["r2"]
    # the graph's state gets plain strings (its checkpoints serialise what they are given)
    handed_on = outcome_of(store.steps("r2")[0])
    assert type(handed_on["status"]) is str and type(handed_on["answered_by"]) is str
    store.close()


def test_a_value_outside_its_enum_is_refused_and_an_unknown_one_read_as_text(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    store = Store(db)
    store.create_run("r", "task")
    with pytest.raises(Exception, match="cancelled"):
        store.update_run("r", status="cancelled")
    with pytest.raises(StoreError, match="'cancelled' is not a RunStatus"):
        store.finish_run("r", "cancelled", 0.1)
    with pytest.raises(StoreError, match="one of: pending, running"):
        store.list_runs(status="cancelled")
    with pytest.raises(StoreError, match="not a ReviewStatus"):
        store.reviews(status="open")
    assert raw_values(db)[("run", "status")] == {"running"}
    # a row some other version wrote keeps its text rather than failing to load
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE run SET status = 'archived'")
    assert store.get_run("r").status == "archived"  # type: ignore[union-attr]
    store.close()


def test_the_schema_keeps_plain_varchar_columns(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    Store(db).close()
    with sqlite3.connect(db) as connection:
        for table, column in COLUMNS:
            info = {row[1]: row for row in connection.execute(f"PRAGMA table_info({table})")}
            assert info[column][2] == "VARCHAR", (table, column, info[column])
        sql = " ".join(row[0] for row in connection.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    assert "CHECK" not in sql and "escalationrow" not in sql.lower()


def ticket_answer(request: Any) -> str:
    schema = request.output_schema
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    if "PAYMENT" in labels:
        return "{not json"  # the category comes back unusable: a person must decide
    return {
        "Label": json.dumps({"label": (labels or ["?"])[0]}),
        "TicketEntities": '{"invoice_id": "5521"}',
        "Summary": '{"summary": "Invoice 5521 is wrong", "key_points": []}',
        "ReplyDraft": '{"reply": "Thank you, we are checking invoice 5521 for you now."}',
    }[schema.__name__]


async def test_what_real_runs_and_tickets_write_is_a_member(tmp_path: Path) -> None:
    from shoal import Shoal

    db = tmp_path / "shoal.db"
    settings = Settings.load(env={"SHOAL_DB": str(db)})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    backend = ScriptedBackend(ticket_answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as engine:
        waiting, bad = await engine.triage(
            [TicketRow(key="INV-1", line=1, text="my invoice 5521 is wrong"), BadRow(key="X", line=2, reason="empty")]
        )
        assert waiting.status is TicketStatus.WAITING and bad.status is TicketStatus.REJECTED
        (review_id,) = waiting.reviews
        middle = raw_values(db)
        assert "waiting" in middle[("run", "status")] and "pending" in middle[("review", "status")]
        assert "human" in middle[("escalation", "rung")] and "pending" in middle[("escalation", "outcome")]
        report = await engine.review(review_id, "INVOICE", who="agent-7")
        assert report.status == RunStatus.DONE
        # a run stopped part-way, and the ticket it belongs to, as the engine records them
        engine.store.create_run("stop", "task", workflow="tickets")
        engine.store.put_ticket("", "STOP-1", run_id="stop", status=TicketStatus.RUNNING)
        engine.store.finish_run("stop", RunStatus.STOPPED, 0.1, error="KeyboardInterrupt: ")
        TicketDesk(engine.store, settings, runs=None).finish("stop", RunStatus.STOPPED)  # type: ignore[arg-type]
    found = raw_values(db)
    assert_members(found)
    assert found[("run", "status")] == {"done", "stopped"}
    assert found[("ticket", "status")] == {"done", "rejected", "failed"}
    assert found[("review", "status")] == {"answered"}
    assert found[("escalation", "outcome")] >= {"accepted"} and "pending" not in found[("escalation", "outcome")]
    assert found[("step", "answered_by")] >= {"specialist", "human"}


# `x.status == "done"` and the like: a status spelled as a bare string, where drift starts.
COMPARISON = re.compile(
    r"""\.(status|rung|outcome|answered_by)\s*(?:(?:==|!=)\s*|(?:not\s+)?in\s*[(\[{][^)\]}]*)["']"""
)


def unconverted(path: Path) -> bool:
    """The TUI is still to convert (its literals still work, since a StrEnum member equals its
    value); drop it from here once converted."""
    top = path.relative_to(SHOAL).parts[0]
    return top == "status.py"


def test_no_module_compares_a_status_to_a_bare_string() -> None:
    offenders = [
        f"{path.relative_to(SHOAL.parent)}:{n}: {line.strip()}"
        for path in sorted(SHOAL.rglob("*.py"))
        if not unconverted(path)
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if not line.lstrip().startswith("#") and COMPARISON.search(line)
    ]
    assert not offenders, "compare with the shoal.status enums:\n" + "\n".join(offenders)


def test_the_scan_would_see_a_bare_string() -> None:
    for line in (
        'if run.status == "done":',
        "x.rung != 'human'",
        'if e.outcome in ("a", "b")',
        's.status not in ["failed"]',
        'o.answered_by in (AnsweredBy.HUMAN, "frontier")',
    ):
        assert COMPARISON.search(line), line
    for line in ("if run.status == RunStatus.DONE:", "if e.outcome in (EscalationOutcome.PENDING,)", "x.status"):
        assert not COMPARISON.search(line), line
