"""Snapshots of the Runs, Run detail and Review queue screens at a fixed size, on a real SQLite
file holding fixed rows. Update after a deliberate change with `pytest --snapshot-update`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shoal.config import Settings
from shoal.status import AnsweredBy, EscalationOutcome, Rung, StepStatus
from shoal.store import Store
from shoal.store.tables import EscalationRow, Review, Step
from shoal.tui.app import ShoalApp

SIZE = (130, 36)
FOLDER = Path("/tmp/shoal-tui-snapshots")  # a fixed path: the title shows the database file
PLAN = {
    "steps": [
        {"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]},
        {"id": "ids", "specialist": "extractor", "instruction": "ids", "inputs": ["task"]},
    ]
}


def evidence(*signals: tuple[str, float, str]) -> str:
    return json.dumps([{"name": n, "value": v, "detail": d} for n, v, d in signals])


def call(run_id: str, step_id: str, reply: dict[str, Any], tokens: tuple[int, int]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step_id,
        "model": "embedded:smollm2-135m",
        "request_json": json.dumps(
            {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Order 70012345"}]}
        ),
        "reply_json": json.dumps(
            {"text": json.dumps(reply), "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}
        ),
        "tokens_in": tokens[0],
        "tokens_out": tokens[1],
        "latency_s": 0.42,
        "confidence": 0.3,
    }


def app_with_rows() -> ShoalApp:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)
    store = Store(FOLDER / "shoal.db")
    for run_id, task, status in [
        ("0a1b2c3d4e5f", "Ticket: my order 70012345 arrived broken, I want a refund", "waiting"),
        ("9f8e7d6c5b4a", "Ticket: how do I change my shipping address?", "done"),
    ]:
        store.create_run(run_id, task)
        store.update_run(run_id, plan_json=json.dumps(PLAN))
        store.record_step(
            Step(
                run_id=run_id,
                step_id="ids",
                specialist="extractor",
                status=StepStatus.DONE,
                confidence=0.91,
                first_confidence=0.91,
                answered_by=AnsweredBy.SPECIALIST,
                model="embedded:smollm2-135m",
                output_json=json.dumps({"ids": ["70012345"]}),
                evidence_json=evidence(("required", 1.0, "0/0"), ("grounded", 1.0, "1/1 values found in the text")),
            ),
            [call(run_id, "ids", {"ids": ["70012345"]}, (180, 12))],
            [],
        )
        waiting = status == "waiting"
        question = {
            "input": {"text": task},
            "small_answer": {"label": "ORDER"},
            "small_model": "embedded:smollm2-135m",
            "confidence": 0.31,
            "evidence": [{"name": "label_probability", "value": 0.31, "detail": "p(ORDER)=0.31"}],
            "best_answer": {"label": "ORDER", "labels": ["ORDER"]},
            "frontier": None,
            "reasons": ["confidence 0.31 below threshold 0.70; frontier skipped: OPENAI_API_KEY is not set"],
        }
        store.record_step(
            Step(
                run_id=run_id,
                step_id="kind",
                specialist="classifier",
                status=StepStatus.WAITING if waiting else StepStatus.DONE,
                confidence=0.31 if waiting else 1.0,
                first_confidence=0.31,
                answered_by=None if waiting else AnsweredBy.HUMAN,
                model="embedded:smollm2-135m",
                output_json=json.dumps({"label": "ORDER" if waiting else "SHIPPING_ADDRESS"}),
                evidence_json=evidence(
                    ("label_probability", 0.31, "p(ORDER)=0.31"), ("margin", 0.12, "runner-up REFUND")
                ),
            ),
            [call(run_id, "kind", {"label": "ORDER"}, (150, 6))],
            [
                EscalationRow(
                    run_id=run_id,
                    step_id="kind",
                    specialist="classifier",
                    rung=Rung.HUMAN,
                    reason="confidence 0.31 below threshold 0.70",
                    confidence_before=0.31,
                    confidence_after=None if waiting else 1.0,
                    outcome=EscalationOutcome.PENDING if waiting else EscalationOutcome.ACCEPTED,
                )
            ],
            review=Review(run_id=run_id, step_id="kind", specialist="classifier", question_json=json.dumps(question))
            if waiting
            else None,
        )
        totals = store.totals(run_id)
        store.update_run(run_id, status=status, **totals)
    return ShoalApp(Settings.load(env={"SHOAL_DB": str(FOLDER / "shoal.db")}))


@pytest.fixture(autouse=True)
def _cleanup() -> Any:
    yield
    shutil.rmtree(FOLDER, ignore_errors=True)


def test_runs_screen(snap_compare: Any) -> None:
    assert snap_compare(app_with_rows(), terminal_size=SIZE)


def test_run_detail_screen(snap_compare: Any) -> None:
    assert snap_compare(app_with_rows(), terminal_size=SIZE, press=["enter"])


def test_review_queue_screen(snap_compare: Any) -> None:
    assert snap_compare(app_with_rows(), terminal_size=SIZE, press=["v"])
