"""Workers and the database's queue: leases on SQLite and PostgreSQL, `shoal worker` processes
sharing a queue, a worker killed with SIGKILL whose ticket another finishes without paying a
finished step twice, and a review answered anywhere that a free worker resumes.

The model is a fake Ollama on loopback (tests/fakeollama.py), reached through shoal's real HTTP
client, in real worker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fakeollama import FakeOllama, fake_ollama
from sqlmodel import col, select

from shoal.status import TicketStatus, WorkerStatus, WorkKind, WorkStatus
from shoal.store import Store
from shoal.store.tables import Work

SPECIALISTS = ("category", "intent", "priority", "entities", "summary", "reply")
TEXTS = [
    "my order {n} arrived broken, I want a refund",
    "how do I change the shipping address of order {n}?",
    "I was charged twice for order {n}, please help",
]


def test_each_item_goes_to_one_worker_at_a_time(store: Store) -> None:
    store.enqueue(WorkKind.RESUME, [{"run_id": f"r{i}"} for i in range(40)])
    taken: list[int] = []
    lock = threading.Lock()

    def take(worker: str) -> None:
        while (item := store.lease(worker, lease_s=60, max_attempts=3)) is not None:
            with lock:
                taken.append(item.id or 0)
            assert store.settle(item.id or 0, worker, WorkStatus.DONE)

    threads = [threading.Thread(target=take, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(taken) == sorted(set(taken)) and len(taken) == 40
    assert store.work_counts() == {WorkStatus.DONE: 40}


def test_an_expired_lease_goes_to_another_worker_and_attempts_run_out(store: Store) -> None:
    (item_id,) = store.enqueue(WorkKind.RESUME, [{"run_id": "r1"}])
    first = store.lease("dead", lease_s=0.01, max_attempts=2)
    assert first is not None and first.attempts == 1
    time.sleep(0.05)  # "dead" never renews
    second = store.lease("alive", lease_s=0.01, max_attempts=2)
    assert second is not None and second.id == item_id and second.attempts == 2
    # the dead worker's late renewal and settlement are refused: the item is no longer its
    assert not store.renew(item_id, "dead", lease_s=60)
    assert not store.settle(item_id, "dead", WorkStatus.DONE)
    time.sleep(0.05)
    assert store.lease("third", lease_s=60, max_attempts=2) is None  # two attempts used: failed
    (failed,) = [w for w in store.open_work(run_id="r1")] or [None]
    assert failed is None
    assert store.work_counts() == {WorkStatus.FAILED: 1}


def test_given_back_on_stop_does_not_count_an_attempt(store: Store) -> None:
    store.enqueue(WorkKind.RESUME, [{"run_id": "r1"}])
    item = store.lease("w", lease_s=60, max_attempts=1)
    assert item is not None and store.settle(item.id or 0, "w", WorkStatus.QUEUED, error="given back")
    again = store.lease("w2", lease_s=60, max_attempts=1)
    assert again is not None and again.attempts == 1


def test_heartbeats_list_workers(store: Store) -> None:
    worker = store.register_worker()
    store.heartbeat(worker, WorkerStatus.BUSY, current="ticket T-1 of x.csv", done=3)
    (row,) = store.workers()
    assert row.id == worker and row.status == WorkerStatus.BUSY and row.current == "ticket T-1 of x.csv"
    assert row.done == 3 and row.pid == os.getpid()


# --- real worker processes ------------------------------------------------------------------


def write_config(folder: Path, fake: FakeOllama, *, lease_s: float = 60) -> None:
    (folder / "shoal.toml").write_text(
        'default_model = "ollama:fake"\nfrontier_model = "openai:gpt-4o-mini"\n'
        f'[ollama]\nhost = "{fake.url}"\n'
        "[retry]\nattempts = 2\ninitial_s = 0.05\nmax_s = 0.1\n"
        f"[workers]\nlease_s = {lease_s}\npoll_s = 0.2\n"
        # every answer accepted: the fake model's answers carry no confidence worth a review
        + "".join(f"[specialists.{name}]\nthreshold = 0.0\n" for name in SPECIALISTS),
        encoding="utf-8",
    )


def write_csv(path: Path, n: int) -> None:
    lines = ["ticket_id,instruction"] + [f"T{i:03d},{TEXTS[i % 3].format(n=10000 + i)}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def cli(folder: Path, db: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOAL_DB": db, "COLUMNS": "200"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", *args, "--config", str(folder / "shoal.toml")],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(procs: list[subprocess.Popen[str]]) -> None:
    """Workers a failed test left running (they would poll the queue forever) are killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def done(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "shoal.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_enqueue_then_two_workers_drain_the_queue(tmp_path: Path, database: str) -> None:
    with fake_ollama(latency_s=0.01) as fake:
        write_config(tmp_path, fake)
        write_csv(tmp_path / "tickets.csv", 12)
        code, out, err = done(cli(tmp_path, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue"))
        assert code == 0, err
        assert "12 tickets queued, 0 already queued, 0 already done, 0 rejected" in out, out
        again = done(cli(tmp_path, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue"))
        assert "0 tickets queued, 12 already queued" in again[1], again
        workers = [cli(tmp_path, database, "worker", "--drain", "--concurrency", "2") for _ in range(2)]
        results = [done(w) for w in workers]
    for code, _, err in results:
        assert code == 0, err
    store = Store(database)
    try:
        tickets = store.tickets()
        assert len(tickets) == 12 and {t.status for t in tickets} <= {TicketStatus.DONE, TicketStatus.WAITING}
        assert store.work_counts() == {WorkStatus.DONE: 12}
        # both workers worked, and each ticket had one run
        by_worker = Counter(line.split(" ")[1] for _, _, err in results for line in err.splitlines() if "done" in line)
        assert len({t.run_id for t in tickets}) == 12
        assert len(store.workers()) == 2 and all(w.status == WorkerStatus.STOPPED for w in store.workers())
        assert sum(w.done for w in store.workers()) == 12, by_worker
    finally:
        store.close()
    listed = done(cli(tmp_path, database, "workers", "--all"))
    assert listed[0] == 0 and "stopped" in listed[1] and "queue: 0 queued, 0 leased, 12 done, 0 failed" in listed[1]


def test_a_worker_killed_mid_ticket_loses_nothing_and_pays_no_step_twice(tmp_path: Path, database: str) -> None:
    with fake_ollama(latency_s=0.4) as fake:  # slow calls: the kill lands mid-ticket
        write_config(tmp_path, fake, lease_s=5)
        write_csv(tmp_path / "tickets.csv", 1)
        assert done(cli(tmp_path, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue"))[0] == 0
        victim = cli(tmp_path, database, "worker")
        store = Store(database)
        try:
            deadline = time.monotonic() + 120
            paid: set[str] = set()  # finished steps that made a model call
            while time.monotonic() < deadline and not paid:
                time.sleep(0.05)
                runs = store.list_runs()
                if runs:
                    called = {c.step_id for c in store.model_calls(runs[0].id)}
                    paid = {s.step_id for s in store.steps(runs[0].id) if s.status == "done"} & called
            assert paid, "no step of the ticket's run finished"
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            run_id = store.list_runs()[0].id
            finished = {s.step_id for s in store.steps(run_id) if s.status == "done"}
            paid_before = Counter(c.step_id for c in store.model_calls(run_id))
            # another worker takes the item once the dead one's lease expires, and finishes it
            code, _, err = done(cli(tmp_path, database, "worker", "--drain"), timeout=300)
            assert code == 0, err
            (ticket,) = store.tickets()
            assert ticket.status in (TicketStatus.DONE, TicketStatus.WAITING) and ticket.run_id == run_id
            paid_after = Counter(c.step_id for c in store.model_calls(run_id))
            for step in finished:
                assert paid_after[step] == paid_before[step], (step, paid_before, paid_after)
            assert store.work_counts() == {WorkStatus.DONE: 1}
        finally:
            store.close()
            reap([victim])


def test_a_review_answered_with_queue_is_resumed_by_a_free_worker(tmp_path: Path, database: str) -> None:
    with fake_ollama(latency_s=0.01) as fake:
        write_config(tmp_path, fake)
        config = tmp_path / "shoal.toml"  # the category always goes to a person
        config.write_text(
            config.read_text().replace(
                "[specialists.category]\nthreshold = 0.0", "[specialists.category]\nthreshold = 1.0"
            )
        )
        write_csv(tmp_path / "tickets.csv", 1)
        assert done(cli(tmp_path, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue"))[0] == 0
        assert done(cli(tmp_path, database, "worker", "--drain"))[0] == 0
        store = Store(database)
        try:
            (ticket,) = store.tickets()
            assert ticket.status == TicketStatus.WAITING
            (review,) = store.reviews()
            code, out, err = done(cli(tmp_path, database, "review", str(review.id), "--accept", "--queue"))
            assert code == 0, err
            assert "queued for a worker" in out
            assert store.get_run(ticket.run_id or "").status == "waiting"  # type: ignore[union-attr]
            assert [w.kind for w in store.open_work()] == [WorkKind.RESUME]
            code, _, err = done(cli(tmp_path, database, "worker", "--drain"))
            assert code == 0, err
            (ticket,) = store.tickets()
            assert ticket.status == TicketStatus.DONE, ticket
            assert store.get_run(ticket.run_id or "").status == "done"  # type: ignore[union-attr]
        finally:
            store.close()


@pytest.mark.parametrize(("engine", "n"), [("sqlite", 100), ("postgresql", 200)])
def test_four_workers_two_killed_every_ticket_done_once(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str, n: int
) -> None:
    database = str(tmp_path / "shoal.db") if engine == "sqlite" else str(request.getfixturevalue("pg_url"))
    with fake_ollama(latency_s=0.05) as fake:
        write_config(tmp_path, fake, lease_s=5)
        write_csv(tmp_path / "tickets.csv", n)
        assert done(cli(tmp_path, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue"))[0] == 0
        workers = [cli(tmp_path, database, "worker", "--drain") for _ in range(4)]
        store = Store(database)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and store.work_counts().get(WorkStatus.DONE, 0) < n // 10:
                time.sleep(0.2)
            for victim in workers[:2]:  # mid-ticket: each holds a lease it will never renew
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait()
            finished = {(s.run_id, s.step_id) for r in store.list_runs(limit=n) for s in store.steps(r.id)}
            paid = Counter((c.run_id, c.step_id) for r in store.list_runs(limit=n) for c in store.model_calls(r.id))
            for survivor in workers[2:]:
                code, _, err = done(survivor, timeout=900)
                assert code == 0, err
            tickets = store.tickets()
            assert len(tickets) == n and {t.status for t in tickets} == {TicketStatus.DONE}
            runs = store.list_runs(limit=n * 2)
            assert len(runs) == n and {t.run_id for t in tickets} == {r.id for r in runs}  # one run a ticket
            assert store.work_counts() == {WorkStatus.DONE: n}
            with store.session() as session:
                taken_over = session.exec(select(Work).where(col(Work.attempts) > 1)).all()
            assert taken_over, "no item was held by a killed worker: the test killed nothing mid-ticket"
            after = Counter((c.run_id, c.step_id) for r in runs for c in store.model_calls(r.id))
            repeated = [key for key in finished if after[key] != paid[key]]
            assert repeated == [], f"finished steps paid again: {repeated}"
            assert max(after.values()) <= 2  # only a step cut off mid-call may have called twice
        finally:
            store.close()
            reap(workers)
