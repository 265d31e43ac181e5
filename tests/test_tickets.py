"""`shoal triage` over real Bitext tickets on the real embedded model."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bitext import rows as bitext_rows

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import InputFileError
from shoal.store import Store
from shoal.tickets.files import BadRow, TicketRow, read_tickets
from shoal.tickets.plan import FIELDS, TICKET_PLAN, route

ACCEPT_ALL = "\n".join(f"[specialists.{name}]\nthreshold = 0.0" for name in FIELDS) + "\n"


def write_tickets(path: Path, n: int, *, start: int = 0) -> list[dict[str, str]]:
    chosen = bitext_rows()[start::211][:n]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ticket_id", "instruction", "category"])
        writer.writeheader()
        for i, row in enumerate(chosen):
            writer.writerow({"ticket_id": f"T{i:03d}", "instruction": row["instruction"], "category": row["category"]})
    return chosen


def triage(tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", "triage", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_DB": str(tmp / "shoal.db"), "COLUMNS": "200"},
        cwd=tmp,
        timeout=timeout,
    )


@pytest.mark.embedded
@pytest.mark.timeout(900)  # 120 model calls on 2 cores: minutes, more on a busy machine
def test_twenty_bitext_tickets_end_to_end(tmp_path: Path) -> None:
    write_tickets(tmp_path / "tickets.csv", 20)
    done = triage(tmp_path, "tickets.csv", "--id", "ticket_id", "--out", "out.jsonl")
    assert done.returncode == 0, done.stderr
    assert "20 tickets:" in done.stdout
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    store = Store(tmp_path / "shoal.db")
    tickets = {t.key: t for t in store.tickets()}
    assert len(out) == len(tickets) == 20
    for record in out:
        ticket = tickets[record["id"]]
        assert record["status"] == ticket.status and record["queue"] == ticket.queue
        assert ticket.status in ("done", "waiting")
        escalated_steps = {e.step_id for e in store.escalations(ticket.run_id or "")}
        for step in TICKET_PLAN["steps"]:
            # every field was answered, or its step was escalated with the reason recorded, or it
            # waits for a field it reads (priority and the reply read the intent)
            name = step["id"]
            accepted = record[f"{name}_status"] == "done" and record[name] is not None
            waits_on = [i for i in step["inputs"] if i != "task" and record[f"{i}_status"] != "done"]
            assert accepted or name in escalated_steps or waits_on, (record["id"], name, record)
        fields = json.loads(ticket.result_json or "{}")
        assert set(fields) == set(FIELDS)
        if ticket.status == "done":
            assert ticket.queue == route(Settings.load(env={}), {k: v["output"] for k, v in fields.items()})
        else:
            assert ticket.queue == "needs-review"


@pytest.mark.embedded
def test_rerun_skips_finished_tickets(tmp_path: Path) -> None:
    (tmp_path / "shoal.toml").write_text(ACCEPT_ALL)
    write_tickets(tmp_path / "tickets.csv", 3)
    first = triage(tmp_path, "tickets.csv", "--id", "ticket_id")
    assert first.returncode == 0, first.stderr
    # a 135M model's reply can still be unusable (zero confidence at any threshold): waiting counts as finished
    assert "0 failed" in first.stdout
    store = Store(tmp_path / "shoal.db")
    with store.engine.connect() as conn:
        calls = conn.exec_driver_sql("SELECT count(*) FROM modelcall").scalar()
    again = triage(tmp_path, "tickets.csv", "--id", "ticket_id", "--out", "again.csv")
    assert again.returncode == 0, again.stderr
    assert "3 already done" in again.stdout
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM modelcall").scalar() == calls
    with (tmp_path / "again.csv").open() as handle:
        assert all(r["status"] in ("done", "waiting") for r in csv.DictReader(handle))


@pytest.mark.embedded
def test_kill_mid_batch_then_rerun_does_each_ticket_once(tmp_path: Path) -> None:
    (tmp_path / "shoal.toml").write_text(ACCEPT_ALL)
    write_tickets(tmp_path / "tickets.csv", 5, start=3)
    env = {**os.environ, "SHOAL_DB": str(tmp_path / "shoal.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "triage", "tickets.csv", "--id", "ticket_id"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store: Store | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.1)
        assert proc.poll() is None, "the batch ended before it could be killed"
        if not (tmp_path / "shoal.db").exists():
            continue
        store = store or Store(tmp_path / "shoal.db")
        states = [t.status for t in store.tickets()]
        if states.count("done") + states.count("waiting") >= 2 and "running" in states:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store is not None
    again = triage(tmp_path, "tickets.csv", "--id", "ticket_id")
    assert again.returncode == 0, again.stderr
    tickets = store.tickets()
    assert len(tickets) == 5 and all(t.status in ("done", "waiting") for t in tickets)
    runs = store.list_runs(limit=100)
    assert len(runs) == 5, "one run per ticket: the interrupted one was resumed, not restarted"
    for run in runs:
        per_step: dict[str, int] = {}
        for call in store.model_calls(run.id):
            per_step[call.step_id or ""] = per_step.get(call.step_id or "", 0) + 1
        # the fields that read only the ticket always ask a model; priority and the reply wait for
        # the intent (and entities), and a one-line ticket is its own summary
        assert {"category", "intent", "entities"} <= set(per_step) <= set(FIELDS), per_step
        assert all(n <= 2 for n in per_step.values()), per_step  # only a step cut mid-call can repeat


def test_bad_rows_are_reported_and_the_batch_goes_on(tmp_path: Path) -> None:
    good = "I want to cancel order 12345"
    path = tmp_path / "mixed.csv"
    with path.open("wb") as handle:
        handle.write(b"ticket_id,instruction\n")
        handle.write(b"A1," + good.encode() + b"\n")
        handle.write(b"A2,\n")  # empty text
        handle.write(b"A3\n")  # the text column is missing from the row
        handle.write(b"A4,caf\xe9 au lait \xff\xfe broken bytes\n")  # not UTF-8
        handle.write(b"A5," + b"x" * 1_000_000 + b"\n")  # a 1 MB body
        handle.write(b"A6,Where is my refund for invoice 778?\n")
    rows = list(read_tickets(path, id_column="ticket_id", max_chars=20_000))
    kinds = {r.key: (r.reason if isinstance(r, BadRow) else "ok") for r in rows}
    assert kinds["A1"] == "ok" and kinds["A6"] == "ok"
    assert kinds["A2"] == "the text is empty"
    assert kinds["A3"] == "no 'instruction' value"
    assert kinds["A4"] == "the text is not valid UTF-8"
    assert "over the limit" in kinds["A5"]

    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(b'{"id": "J1", "text": "hello, my order is late"}\nnot json\n[1, 2]\n{"id": "J4"}\n')
    parsed = list(read_tickets(jsonl, text_column="text", id_column="id"))
    assert [type(r).__name__ for r in parsed] == ["TicketRow", "BadRow", "BadRow", "BadRow"]
    assert "not JSON" in parsed[1].reason  # type: ignore[union-attr]
    with pytest.raises(InputFileError, match="no column 'body'"):
        list(read_tickets(path, text_column="body"))


@pytest.mark.embedded
def test_bad_rows_in_a_real_batch(tmp_path: Path) -> None:
    (tmp_path / "shoal.toml").write_text(ACCEPT_ALL)
    path = tmp_path / "mixed.csv"
    with path.open("wb") as handle:
        handle.write(b"ticket_id,instruction\n")
        handle.write(b"B1,I want to cancel order 12345\n")
        handle.write(b"B2,\n")
        handle.write(b"B3,\xff\xfe\n")
        handle.write(b"B4," + b"y" * 1_000_000 + b"\n")
        handle.write(b"B5,my invoice 5521 is wrong\n")
    done = triage(tmp_path, "mixed.csv", "--id", "ticket_id", "--out", "out.jsonl")
    assert done.returncode == 0, done.stderr
    assert "3 rejected" in done.stdout and "0 failed" in done.stdout
    assert "B2 (line 3): rejected: the text is empty" in done.stderr
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert records["B3"]["status"] == "rejected" and "UTF-8" in records["B3"]["error"]
    assert {records["B1"]["status"], records["B5"]["status"]} <= {"done", "waiting"}


async def test_triage_api_with_rows(tmp_path: Path) -> None:
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend

    def answer(request: object) -> str:
        schema = request.output_schema.__name__  # type: ignore[attr-defined]
        labels = request.output_schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])  # type: ignore[attr-defined]
        return {
            "Label": json.dumps({"label": "PAYMENT" if "PAYMENT" in labels else (labels or ["?"])[0]}),
            "TicketEntities": '{"order_id": "12345"}',
            "Summary": '{"summary": "Customer wants order 12345 cancelled", "key_points": []}',
            "ReplyDraft": '{"reply": "Thanks for writing, we are looking at order 12345 now."}',
        }[schema]

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    backend = ScriptedBackend(answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        outcomes = await shoal.triage([TicketRow(key="X1", line=1, text="please cancel order 12345")])
    (outcome,) = outcomes
    assert outcome.status == "done" and outcome.queue == "billing", outcome
    assert outcome.fields["entities"]["output"] == {k: None for k in settings.tickets.entities} | {"order_id": "12345"}
    # four prompted fields: the reply comes from knowledge, and a one-line ticket is its own summary
    assert len(backend.requests) == 4


async def test_answering_a_ticket_review_finishes_the_ticket(tmp_path: Path) -> None:
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend

    def answer(request: object) -> str:
        schema = request.output_schema  # type: ignore[attr-defined]
        labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
        if "PAYMENT" in labels:
            return "{not json"  # the category comes back unusable: a person must decide
        return {
            "Label": json.dumps({"label": (labels or ["?"])[0]}),
            "TicketEntities": '{"invoice_id": "5521"}',
            "Summary": '{"summary": "Invoice 5521 is wrong", "key_points": []}',
            "ReplyDraft": '{"reply": "Thank you, we are checking invoice 5521 for you now."}',
        }[schema.__name__]

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    backend = ScriptedBackend(answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        (first,) = await shoal.triage([TicketRow(key="INV-1", line=1, text="my invoice 5521 is wrong")])
        assert first.status == "waiting" and first.queue == "needs-review" and first.escalated == ["category"]
        (review_id,) = first.reviews
        report = await shoal.review(review_id, "INVOICE", who="agent-7")
        assert report.status == "done"
        ticket = shoal.store.get_ticket("", "INV-1")
        assert ticket is not None and ticket.status == "done" and ticket.queue == "billing"
        fields = json.loads(ticket.result_json or "{}")
        assert fields["category"] == {
            "output": {"label": "INVOICE", "labels": ["INVOICE"], "distribution": {}, "margin": 0.0},
            "confidence": 1.0,
            "answered_by": "human",
            "status": "done",
        }
        assert len(backend.requests) == 4, "answering re-ran nothing"
