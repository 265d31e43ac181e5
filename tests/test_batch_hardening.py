"""A batch under load, outages and crashes: the store never locks itself, one ticket's failure is
that ticket's alone, and nothing is lost or paid twice.

The model is a fake Ollama on loopback (tests/fakeollama.py) reached through shoal's real HTTP
client, so many tickets and processes run in seconds; the store, the graph and the CLI are real.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakeollama import FakeOllama, fake_ollama

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.base import ChatRequest
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.store import MIGRATIONS, Store, StoreError, StoreLedger
from shoal.tickets.files import BadRow, TicketRow, read_tickets, ticket_source
from shoal.tickets.plan import FIELDS

TEXTS = [
    "I want to cancel order {n}, it has not shipped yet",
    "Where is my refund for invoice {n}? It has been two weeks",
    "My account {n} is locked and I cannot log in",
    "Please change the delivery address for order {n}",
]


def write_csv(path: Path, n: int, *, prefix: str = "T") -> None:
    lines = ["ticket_id,instruction"]
    lines += [f"{prefix}{i:03d},{TEXTS[i % len(TEXTS)].format(n=10000 + i)}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_config(folder: Path, fake: FakeOllama, *, outage_wait_s: float = 60.0) -> Path:
    config = folder / "shoal.toml"
    config.write_text(
        'default_model = "ollama:fake"\n'
        'frontier_model = "openai:gpt-4o-mini"\n'
        f'[ollama]\nhost = "{fake.url}"\n'
        "[retry]\nattempts = 2\ninitial_s = 0.05\nmax_s = 0.1\n"
        f"[tickets]\noutage_wait_s = {outage_wait_s}\n",
        encoding="utf-8",
    )
    return config


def shoal_cli(folder: Path, *args: str, timeout: float = 300) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOAL_DB": str(folder / "shoal.db"), "COLUMNS": "200"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", *args, "--config", str(folder / "shoal.toml")],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with fake_ollama(latency_s=0.02) as server:
        yield server


def test_concurrency_8_on_one_sqlite_file(tmp_path: Path, fake: FakeOllama) -> None:
    write_config(tmp_path, fake)
    write_csv(tmp_path / "tickets.csv", 40)
    code, out, err = finish(shoal_cli(tmp_path, "triage", "tickets.csv", "--id", "ticket_id", "--concurrency", "8"))
    assert "locked" not in err, err
    assert code == 0, err
    assert "40 tickets:" in out and "0 failed" in out, out
    states = [t.status for t in Store(tmp_path / "shoal.db").tickets()]
    assert len(states) == 40 and set(states) <= {"done", "waiting"}


def test_four_processes_at_concurrency_4_on_one_file(tmp_path: Path, fake: FakeOllama) -> None:
    write_config(tmp_path, fake)
    for p in range(4):
        write_csv(tmp_path / f"part{p}.csv", 12, prefix=f"P{p}-")
    procs = [shoal_cli(tmp_path, "triage", f"part{p}.csv", "--id", "ticket_id", "--concurrency", "4") for p in range(4)]
    results = [finish(proc) for proc in procs]
    for code, out, err in results:
        assert "locked" not in err, err
        assert code == 0, err
        assert "12 tickets:" in out and "0 failed" in out, out
    tickets = Store(tmp_path / "shoal.db").tickets()
    assert len(tickets) == 48 and {t.status for t in tickets} <= {"done", "waiting"}


def test_an_outage_mid_batch_pauses_it_instead_of_failing_tickets(tmp_path: Path, fake: FakeOllama) -> None:
    write_config(tmp_path, fake, outage_wait_s=60)
    write_csv(tmp_path / "tickets.csv", 24)
    fake.latency_s = 0.1
    proc = shoal_cli(tmp_path, "triage", "tickets.csv", "--id", "ticket_id", "--concurrency", "4")
    deadline = time.monotonic() + 240
    while fake.chats < 20 and proc.poll() is None and time.monotonic() < deadline:  # a few tickets in
        time.sleep(0.05)
    fake.outage(3.0)
    code, out, err = finish(proc)
    assert code == 0, err
    assert "24 tickets:" in out and "0 failed" in out, out
    assert "paused" in err  # the operator is told why nothing moves


def test_a_server_that_stays_down_fails_tickets_and_the_exit_code(tmp_path: Path, fake: FakeOllama) -> None:
    write_config(tmp_path, fake, outage_wait_s=1)
    write_csv(tmp_path / "tickets.csv", 6)
    fake.stop()
    code, out, err = finish(shoal_cli(tmp_path, "triage", "tickets.csv", "--id", "ticket_id", "--concurrency", "2"))
    assert code != 0, out
    assert "6 failed" in out, out
    assert "cannot reach Ollama" in err


def engine(tmp_path: Path, backend: ScriptedBackend) -> Shoal:
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    return Shoal(settings, router=ModelRouter(lambda _: backend))


def answer(request: ChatRequest) -> str:
    schema = request.output_schema
    assert schema is not None
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    return {
        "Label": json.dumps({"label": (labels or ["?"])[0]}),
        "TicketEntities": '{"order_id": "12345"}',
        "Summary": '{"summary": "Customer wants order 12345 cancelled", "key_points": []}',
        "ReplyDraft": '{"reply": "Thanks for writing, we are looking at order 12345 now."}',
    }[schema.__name__]


async def test_any_exception_fails_its_ticket_and_the_batch_goes_on(tmp_path: Path) -> None:
    def script(request: ChatRequest) -> str | Exception:
        text = request.messages[-1].content
        if "poison" in text:
            return RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        if "nan" in text:
            raise ValueError("a NaN where a number belongs")
        return answer(request)

    rows = [TicketRow(key=f"K{i}", line=i + 2, text=f"cancel order 1234{i}") for i in range(6)]
    rows[1] = TicketRow(key="K1", line=3, text="poison ticket")
    rows[4] = TicketRow(key="K4", line=6, text="nan ticket")
    async with engine(tmp_path, ScriptedBackend(script)) as shoal:
        outcomes = await shoal.triage(rows, concurrency=2)
    by_key = {o.key: o for o in outcomes}
    assert len(by_key) == 6
    assert by_key["K1"].status == "failed" and "RecursionError" in (by_key["K1"].error or "")
    assert by_key["K4"].status == "failed" and "NaN" in (by_key["K4"].error or "")
    assert all(by_key[k].status == "done" for k in ("K0", "K2", "K3", "K5"))


async def test_a_ticket_left_running_after_its_run_finished_is_repaired_without_calls(tmp_path: Path) -> None:
    backend = ScriptedBackend(answer)
    row = TicketRow(key="R1", line=2, text="please cancel order 12345")
    async with engine(tmp_path, backend) as shoal:
        (first,) = await shoal.triage([row], source="export.csv")
        assert first.status == "done"
        calls = len(backend.requests)
        # killed between finishing the run and writing the ticket: the run says done, the ticket running
        shoal.store.put_ticket("export.csv", "R1", status="running", queue=None, result_json=None)
        (again,) = await shoal.triage([row], source="export.csv")
    assert again.status == "done" and again.queue == first.queue and again.fields == first.fields
    assert len(backend.requests) == calls, "repairing the ticket made no model call"


async def test_ticket_ids_are_unique_per_source_not_global(tmp_path: Path) -> None:
    backend = ScriptedBackend(answer)
    one, two = tmp_path / "a" / "tickets.csv", tmp_path / "b" / "tickets.csv"
    for path, text in ((one, "cancel order 11111"), (two, "refund for invoice 22222")):
        path.parent.mkdir()
        path.write_text(f"ticket_id,instruction\nT1,{text}\n", encoding="utf-8")
    async with engine(tmp_path, backend) as shoal:
        for path in (one, two):
            await shoal.triage(list(read_tickets(path, id_column="ticket_id")), source=ticket_source(path))
        calls = len(backend.requests)
        for path in (one, two):  # a re-run of either pays nothing
            (outcome,) = await shoal.triage(list(read_tickets(path, id_column="ticket_id")), source=ticket_source(path))
            assert outcome.skipped
        assert len(backend.requests) == calls
        tickets = shoal.store.tickets()
    assert [(t.key, t.source) for t in tickets] == [("T1", ticket_source(one)), ("T1", ticket_source(two))]


def test_a_duplicate_id_in_one_file_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("ticket_id,instruction\nA,first text\nB,other\nA,second text\n", encoding="utf-8")
    rows = list(read_tickets(path, id_column="ticket_id"))
    assert [type(r).__name__ for r in rows] == ["TicketRow", "TicketRow", "BadRow"]
    bad = rows[2]
    assert isinstance(bad, BadRow) and bad.key != "A" and "duplicate id 'A' (first on line 2)" in bad.reason


def test_opening_the_store_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    Store(path).create_run("abc123", "a task")
    writer = sqlite3.connect(path)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    seen: list[int] = []

    def read() -> None:
        seen.append(len(Store(path).list_runs()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)  # the busy timeout is 30 s: waiting on the lock would still be waiting
    writer.rollback()
    assert seen == [1]


def test_run_ids_match_literally_not_as_like_patterns(tmp_path: Path) -> None:
    store = Store(tmp_path / "shoal.db")
    store.create_run("abc123", "a task")
    for pattern in ("%", "_", "a%", "ab_"):
        with pytest.raises(StoreError, match="no run"):
            store.find_run(pattern)
    assert store.find_run("ab").id == "abc123"


async def test_frontier_spend_is_recorded_when_paid(tmp_path: Path) -> None:
    store = Store(tmp_path / "shoal.db")
    await StoreLedger(store).add(0.25)
    # a new process (as after kill -9, before any step was recorded) still sees the money spent
    assert await StoreLedger(Store(tmp_path / "shoal.db")).spent_today() == pytest.approx(0.25)
    assert store.frontier_spent_since(datetime.now(UTC) + timedelta(hours=1)) == 0.0


def test_a_version_3_database_migrates_with_its_tickets(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    with old.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE shoal_migration (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at DATETIME NOT NULL)"
        )
        for version, name, apply in MIGRATIONS[:3]:
            apply(connection)
            connection.execute(
                text("INSERT INTO shoal_migration VALUES (:v, :n, '2026-11-01 00:00:00')"), {"v": version, "n": name}
            )
        connection.exec_driver_sql(
            "INSERT INTO ticket (id, source, line, text_hash, status, created_at, updated_at) "
            "VALUES ('T1', 'tickets.csv', 2, 'abc', 'done', '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
        )
    old.dispose()
    store = Store(path)
    assert store.schema_version() == max(v for v, _, _ in MIGRATIONS)
    kept = store.get_ticket("tickets.csv", "T1")
    assert kept is not None and kept.id == "T1"
    store.put_ticket("tickets.csv", "T1", queue="billing")  # updates the old row, adds none
    (ticket,) = store.tickets()
    assert ticket.key == "T1" and ticket.source == "tickets.csv" and ticket.status == "done"
    assert ticket.queue == "billing"


async def test_every_worker_hitting_the_outage_at_once_still_recovers(tmp_path: Path) -> None:
    from shoal.errors import BackendUnavailableError

    down = {"calls": 0}

    def script(request: ChatRequest) -> str | Exception:
        if down["calls"] < 12:  # the first dozen calls, across all four workers, find no server
            down["calls"] += 1
            return BackendUnavailableError("cannot reach Ollama at http://127.0.0.1:9")
        return answer(request)

    rows = [TicketRow(key=f"O{i}", line=i + 2, text=f"cancel order 5555{i}") for i in range(8)]
    shoal = engine(tmp_path, ScriptedBackend(script))
    shoal.settings.tickets.outage_wait_s = 60
    pauses: list[str] = []
    async with shoal:
        outcomes = await shoal.triage(rows, concurrency=4, on_pause=lambda reason, _: pauses.append(reason))
    assert [o.status for o in outcomes] == ["done"] * 8
    assert pauses and "cannot reach Ollama" in pauses[0]


class Killed(BaseException):
    """Not an Exception: like a kill, nothing on the way catches it."""


async def test_killed_between_naming_the_run_and_creating_it_leaves_no_orphan(tmp_path: Path) -> None:
    backend = ScriptedBackend(answer)
    row = TicketRow(key="Z1", line=2, text="please cancel order 12345")
    async with engine(tmp_path, backend) as shoal:
        store = shoal.store
        real_create, real_put = store.create_run, store.put_ticket
        writes: list[str] = []

        def second_write_dies(name: str, real: Any) -> Any:
            def write(*args: Any, **kwargs: Any) -> Any:
                if name == "ticket" and kwargs.get("status") != "running":
                    return real(*args, **kwargs)
                writes.append(name)
                if len(writes) == 2:
                    raise Killed  # kill -9 between the run's two first writes, whichever comes first
                return real(*args, **kwargs)

            return write

        store.create_run = second_write_dies("run", real_create)  # type: ignore[method-assign]
        store.put_ticket = second_write_dies("ticket", real_put)  # type: ignore[method-assign]
        with pytest.raises(Killed):
            await shoal.triage([row], source="s")
        store.create_run, store.put_ticket = real_create, real_put  # type: ignore[method-assign]
        (outcome,) = await shoal.triage([row], source="s")
        runs = store.list_runs()
    assert outcome.status == "done"
    assert [r.status for r in runs] == ["done"], "one run, and no run left running that no ticket names"
