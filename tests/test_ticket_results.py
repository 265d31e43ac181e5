"""`write_results`: a batch's results as JSONL or CSV, one flat record per ticket, never half-written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from shoal.store.tables import Ticket
from shoal.tickets.files import write_results
from shoal.tickets.plan import FIELDS

RESULT = {
    "category": {"output": {"label": "REFUND", "labels": ["REFUND"]}, "confidence": 0.9, "answered_by": "specialist"},
    "entities": {"output": {"order_id": "70012345"}, "confidence": 0.5, "answered_by": "human", "status": "done"},
    "summary": {"output": {"summary": "broken order", "key_points": []}, "confidence": 0.8},
    "reply": {"output": {"reply": "We are on it."}},
}
TICKETS = [
    Ticket(id="a", source="s", key="T1", line=2, status="done", queue="refunds", result_json=json.dumps(RESULT)),
    Ticket(id="b", source="s", key="T2", line=3, status="rejected", error="no 'instruction' value"),
]


def test_jsonl_records(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert write_results(TICKETS, out) == 2
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["id"] == "T1" and first["status"] == "done" and first["queue"] == "refunds"
    assert first["category"] == "REFUND" and first["summary"] == "broken order" and first["reply"] == "We are on it."
    assert first["entities"] == {"order_id": "70012345"} and first["entities_by"] == "human"
    assert first["intent"] is None and set(FIELDS) <= set(first)
    assert second["status"] == "rejected" and second["error"] == "no 'instruction' value"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"], "no temporary file left"


def test_csv_flattens_and_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old results\n")
    assert write_results(TICKETS, out) == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["T1", "T2"]
    assert json.loads(rows[0]["entities"]) == {"order_id": "70012345"} and rows[0]["category_confidence"] == "0.9"
    assert write_results([], out) == 0 and out.read_text().strip() == "id"
