"""One SQLite file: shoal's tables and LangGraph's checkpoints side by side.

WAL and a busy timeout let several processes share the file. Every write is one short
transaction opened and closed inside a plain function: nothing here awaits while holding one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event, func, insert, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, create_engine, select

from shoal.errors import StoreError
from shoal.status import ReviewStatus, RunStatus
from shoal.store.learning import LearningRecords, upsert_examples
from shoal.store.tables import (
    EscalationRow,
    Migration,
    ModelCall,
    Review,
    Run,
    Spend,
    Step,
    Ticket,
    now,
    ticket_id,
)

BUSY_TIMEOUT_MS = 30_000

P = ParamSpec("P")
T = TypeVar("T")


def _v1(connection: Any) -> None:
    tables = [SQLModel.metadata.tables[name] for name in ("run", "step", "modelcall", "escalation", "review")]
    SQLModel.metadata.create_all(connection, tables=tables)


def _v2(connection: Any) -> None:
    # Frozen: the ticket table as version 2 made it (v4 changes it); never today's model.
    connection.exec_driver_sql(
        "CREATE TABLE ticket (id VARCHAR NOT NULL, source VARCHAR NOT NULL, line INTEGER, "
        "text_hash VARCHAR NOT NULL, run_id VARCHAR, status VARCHAR NOT NULL, queue VARCHAR, "
        "result_json VARCHAR, error VARCHAR, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, "
        "PRIMARY KEY (id))"
    )
    connection.exec_driver_sql("CREATE INDEX ix_ticket_run_id ON ticket (run_id)")
    connection.exec_driver_sql("CREATE INDEX ix_ticket_status ON ticket (status)")


# Numbered, append-only: a database records which it has applied and gets the rest on open.
def _v3(connection: Any) -> None:
    tables = [SQLModel.metadata.tables[name] for name in ("embedding", "example", "head")]
    SQLModel.metadata.create_all(connection, tables=tables)


def _v4(connection: Any) -> None:
    # Ticket ids were global, so two exports with the same ids (or the same file name) overwrote
    # each other: a ticket is now its key within its source. Old rows keep their id as their key.
    connection.exec_driver_sql("ALTER TABLE ticket ADD COLUMN key VARCHAR NOT NULL DEFAULT ''")
    connection.exec_driver_sql("UPDATE ticket SET key = id")
    connection.exec_driver_sql("CREATE UNIQUE INDEX ix_ticket_source_key ON ticket (source, key)")
    # Frontier spend written when paid, not when its step is recorded (kill -9 lost it).
    connection.exec_driver_sql(
        "CREATE TABLE spend (id INTEGER NOT NULL, run_id VARCHAR, model VARCHAR NOT NULL, "
        "cost_usd FLOAT NOT NULL, at DATETIME NOT NULL, PRIMARY KEY (id))"
    )
    connection.exec_driver_sql("CREATE INDEX ix_spend_at ON spend (at)")
    connection.exec_driver_sql(
        "INSERT INTO spend (run_id, model, cost_usd, at) SELECT run_id, COALESCE(model, ''), cost_usd, at "
        "FROM escalation WHERE rung = 'frontier' AND cost_usd > 0"
    )


def _v5(connection: Any) -> None:
    # Frozen. What [privacy] withheld from the frontier on each rung: kind -> count, as JSON.
    # Version 1 builds the escalation table from today's model, so it may have the column already.
    columns = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(escalation)")}
    if "redacted" not in columns:
        connection.exec_driver_sql("ALTER TABLE escalation ADD COLUMN redacted JSON")


MIGRATIONS: list[tuple[int, str, Callable[[Any], None]]] = [
    (1, "runs, steps, model calls, escalations, reviews", _v1),
    (2, "tickets of triage batches", _v2),
    (3, "embedding cache, labelled examples, trained heads", _v3),
    (4, "tickets keyed within their source; frontier spend recorded when paid", _v4),
    (5, "escalations record what kinds of value were withheld from the frontier", _v5),
]


class Store(LearningRecords):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for the database {self.path}: {exc}") from None
        self.engine: Engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _pragmas)
        self._checkpoint_tables: set[str] = set()
        self._fast: sqlite3.Connection | None = None
        self._fast_lock = threading.Lock()
        # One thread runs every store call made from async code. A call made on the event loop
        # itself would block it while it waits for SQLite's lock, and the lock may be held by
        # LangGraph's checkpointer, which needs that very loop to commit: a deadlock until the
        # busy timeout. One thread also keeps this process's writes from contending with each other.
        self._executor: ThreadPoolExecutor | None = None
        self.migrate()

    # --- schema ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this file lacks.

        Under BEGIN IMMEDIATE (the write lock, taken before reading what is applied), so two
        processes opening a new file at once do not both create its tables.
        """
        applied: list[int] = []
        newest = max(v for v, _, _ in MIGRATIONS)
        if self._applied() == {v for v, _, _ in MIGRATIONS}:
            return applied  # the common open: a plain read, no write lock (readers never wait on writers)
        with self.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                connection.exec_driver_sql(
                    "CREATE TABLE IF NOT EXISTS shoal_migration "
                    "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at DATETIME NOT NULL)"
                )
                done = {row[0] for row in connection.exec_driver_sql("SELECT version FROM shoal_migration")}
                if done and max(done) > newest:
                    raise StoreError(
                        f"{self.path} was written by a newer shoal (schema {max(done)} > {newest}); upgrade shoal"
                    )
                for version, name, apply in MIGRATIONS:
                    if version in done:
                        continue
                    apply(connection)
                    connection.execute(
                        text("INSERT INTO shoal_migration (version, name, applied_at) VALUES (:v, :n, :t)"),
                        {"v": version, "n": name, "t": now()},
                    )
                    applied.append(version)
                connection.exec_driver_sql("COMMIT")
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
        return applied

    def _applied(self) -> set[int] | None:
        """Versions already applied, read without a write lock; None for a new file."""
        with self.engine.connect() as connection:
            exists = connection.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shoal_migration'"
            ).first()
            if exists is None:
                return None
            return {int(row[0]) for row in connection.exec_driver_sql("SELECT version FROM shoal_migration")}

    def schema_version(self) -> int:
        with Session(self.engine) as session:
            return max(session.exec(select(Migration.version)).all(), default=0)

    async def offload(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store method off the event loop (every async caller goes through here)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-store")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run_id: str, task: str, *, workflow: str = "task", plan_json: str | None = None) -> Run:
        row = Run(
            id=run_id,
            task=task,
            workflow=workflow,
            status=RunStatus.RUNNING,
            owner_pid=os.getpid(),
            plan_json=plan_json,
        )
        with self.session() as session:
            session.add(row)
            session.commit()
        return row

    def get_run(self, run_id: str) -> Run | None:
        with self.session() as session:
            return session.get(Run, run_id)

    def find_run(self, prefix: str) -> Run:
        """A run by id or unique id prefix (as git takes commit ids)."""
        with self.session() as session:
            exact = session.get(Run, prefix)
            if exact is not None:
                return exact
            # autoescape: `%` and `_` typed by a person are characters, not LIKE wildcards
            matches = session.exec(select(Run).where(col(Run.id).startswith(prefix, autoescape=True)).limit(2)).all()
        if not matches:
            raise StoreError(f"no run '{prefix}' in {self.path}: `shoal runs` lists them")
        if len(matches) > 1:
            raise StoreError(f"'{prefix}' matches several runs: give more of the id")
        return matches[0]

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.session() as session:
            row = session.get(Run, run_id)
            if row is None:
                raise StoreError(f"no run {run_id}")
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = now()
            session.add(row)
            session.commit()

    def finish_run(
        self, run_id: str, status: str, elapsed_s: float, *, error: str | None = None, result_json: str | None = None
    ) -> str:
        """Close a run's row: status (a `RunStatus`), time, and totals summed from its calls and
        escalations, in one statement (every run pays this once). Returns the run's workflow."""
        value = _member(RunStatus, status).value  # the raw connection below bypasses `EnumText`
        with self._fast_lock:
            raw = self._fast_connection()
            with raw:
                updated = raw.execute(
                    "UPDATE run SET status = ?, seconds = seconds + ?, owner_pid = NULL, error = ?, "
                    "result_json = COALESCE(?, result_json), updated_at = ?, "
                    "model_calls = (SELECT COUNT(*) FROM modelcall WHERE run_id = run.id), "
                    "tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM modelcall WHERE run_id = run.id), "
                    "tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM modelcall WHERE run_id = run.id), "
                    "cost_usd = (SELECT COALESCE(SUM(cost_usd), 0.0) FROM modelcall WHERE run_id = run.id), "
                    "escalations = (SELECT COUNT(*) FROM escalation WHERE run_id = run.id) "
                    "WHERE id = ?",
                    (value, elapsed_s, error, result_json, _sqlite_value(now()), run_id),
                ).rowcount
                found = raw.execute("SELECT workflow FROM run WHERE id = ?", (run_id,)).fetchone()
        if not updated or found is None:
            raise StoreError(f"no run {run_id}")
        return str(found[0])

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        with self.session() as session:
            query = select(Run).order_by(col(Run.created_at).desc()).limit(limit)
            if status:
                query = query.where(Run.status == _member(RunStatus, status))
            return list(session.exec(query).all())

    def totals(self, run_id: str) -> dict[str, Any]:
        with self.session() as session:
            calls = session.exec(
                select(
                    func.count(col(ModelCall.id)),
                    func.coalesce(func.sum(ModelCall.tokens_in), 0),
                    func.coalesce(func.sum(ModelCall.tokens_out), 0),
                    func.coalesce(func.sum(ModelCall.cost_usd), 0.0),
                ).where(ModelCall.run_id == run_id)
            ).one()
            escalations = session.exec(
                select(func.count(col(EscalationRow.id))).where(EscalationRow.run_id == run_id)
            ).one()
        return {
            "model_calls": calls[0],
            "tokens_in": calls[1],
            "tokens_out": calls[2],
            "cost_usd": calls[3],
            "escalations": escalations,
        }

    # --- steps ----------------------------------------------------------------------------

    def finished_step(self, run_id: str, step_id: str) -> Step | None:
        with self.session() as session:
            return session.exec(select(Step).where(Step.run_id == run_id, Step.step_id == step_id)).first()

    def steps(self, run_id: str) -> list[Step]:
        with self.session() as session:
            return list(session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.id))).all())

    def record_step(
        self,
        step: Step,
        calls: Sequence[dict[str, Any]],
        escalations: Sequence[EscalationRow],
        review: Review | None = None,
        *,
        examples: Sequence[dict[str, Any]] = (),
    ) -> Step:
        """A finished (or waiting) step with everything it cost, in one transaction; an existing
        row for the step is updated in place (`insert_step` is the path for a known-new step).

        `examples`: labelled texts the step's escalated answer teaches (the flywheel).
        """
        with self.session() as session:
            existing = session.exec(
                select(Step).where(Step.run_id == step.run_id, Step.step_id == step.step_id)
            ).first()
            if existing is not None:
                for key, value in step.model_dump(exclude={"id", "started_at"}).items():
                    setattr(existing, key, value)
                step = existing
            session.add(step)
            session.add_all(ModelCall(**call) for call in calls)
            for item in escalations:
                if item.id is None:
                    session.add(item)
                else:  # an update to a row read earlier (a human rung now answered)
                    session.merge(item)
            if review is not None:
                session.add(review)
            upsert_examples(session.connection(), examples)
            session.commit()
            return step

    def insert_step(
        self,
        values: dict[str, Any],
        calls: Sequence[dict[str, Any]],
        escalations: Sequence[EscalationRow] = (),
        review: Review | None = None,
        examples: Sequence[dict[str, Any]] = (),
    ) -> int:
        """`record_step` for a step known to have no row yet, from plain values (no ORM object:
        on the hot path building one costs more than the write). Returns the row id."""
        if escalations or review is not None or examples:
            # rarer: Core inserts, since escalations and reviews carry more than plain columns
            with self.engine.begin() as connection:
                inserted = connection.execute(insert(Step), Step(**values).model_dump(exclude={"id"}))
                if calls:
                    connection.execute(insert(ModelCall), list(calls))
                if escalations:
                    connection.execute(insert(EscalationRow), [e.model_dump(exclude={"id"}) for e in escalations])
                if review is not None:
                    added = connection.execute(insert(Review), review.model_dump(exclude={"id"}))
                    review.id = added.inserted_primary_key[0]  # type: ignore[index]
                upsert_examples(connection, examples)
            return int(inserted.inserted_primary_key[0])  # type: ignore[index]
        # the common case (a step answered with nothing escalated): one short transaction on a
        # connection of its own, without SQLAlchemy's per-statement machinery
        with self._fast_lock:
            raw = self._fast_connection()
            with raw:  # commits, or rolls back on error
                step_id = raw.execute(_STEP_SQL, _row(_STEP_COLUMNS, values, _STEP_DEFAULTS)).lastrowid
                if calls:
                    raw.executemany(_CALL_SQL, [_row(_CALL_COLUMNS, call, _CALL_DEFAULTS) for call in calls])
        return int(step_id or 0)

    def _fast_connection(self) -> sqlite3.Connection:
        if self._fast is None:
            self._fast = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            _pragmas(self._fast, None)
        return self._fast

    def close(self) -> None:
        with self._fast_lock:
            if self._fast is not None:
                self._fast.close()
                self._fast = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.engine.dispose()

    def model_calls(self, run_id: str) -> list[ModelCall]:
        with self.session() as session:
            return list(
                session.exec(select(ModelCall).where(ModelCall.run_id == run_id).order_by(col(ModelCall.id))).all()
            )

    def escalations(self, run_id: str) -> list[EscalationRow]:
        with self.session() as session:
            return list(
                session.exec(
                    select(EscalationRow).where(EscalationRow.run_id == run_id).order_by(col(EscalationRow.id))
                ).all()
            )

    # --- reviews --------------------------------------------------------------------------

    def reviews(self, *, status: str | None = ReviewStatus.PENDING, run_id: str | None = None) -> list[Review]:
        with self.session() as session:
            query = select(Review).order_by(col(Review.id))
            if status:
                query = query.where(Review.status == _member(ReviewStatus, status))
            if run_id:
                query = query.where(Review.run_id == run_id)
            return list(session.exec(query).all())

    def get_review(self, review_id: int) -> Review:
        with self.session() as session:
            row = session.get(Review, review_id)
        if row is None:
            raise StoreError(f"no review {review_id}: `shoal review` lists the pending ones")
        return row

    def answer_review(self, review_id: int, answer: dict[str, Any], who: str) -> Review:
        with self.session() as session:
            row = session.get(Review, review_id)
            if row is None:
                raise StoreError(f"no review {review_id}")
            if row.status != ReviewStatus.PENDING:
                raise StoreError(f"review {review_id} was already answered by {row.answered_by}")
            row.status = ReviewStatus.ANSWERED
            row.answer_json = json.dumps(answer)
            row.answered_by = who
            row.answered_at = now()
            session.add(row)
            session.commit()
            return row

    # --- tickets --------------------------------------------------------------------------

    def get_ticket(self, source: str, key: str) -> Ticket | None:
        with self.session() as session:
            return _ticket(session, source, key)

    def put_ticket(self, source: str, key: str, **fields: Any) -> Ticket:
        with self.session() as session:
            row = _ticket(session, source, key) or Ticket(id=ticket_id(source, key), source=source, key=key)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = now()
            session.add(row)
            session.commit()
            return row

    def ticket_for_run(self, run_id: str) -> Ticket | None:
        with self.session() as session:
            return session.exec(select(Ticket).where(Ticket.run_id == run_id)).first()

    def tickets(self, source: str | None = None, keys: Sequence[str] | None = None) -> list[Ticket]:
        """Tickets in file order; of one source, and of some keys of it, when given."""
        with self.session() as session:
            query = select(Ticket).order_by(col(Ticket.source), col(Ticket.line))
            if source is not None:
                query = query.where(Ticket.source == source)
            if keys is not None:
                wanted = list(keys)
                rows: list[Ticket] = []
                for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
                    chunk = query.where(col(Ticket.key).in_(wanted[start : start + 500]))
                    rows.extend(session.exec(chunk).all())
                return sorted(rows, key=lambda t: (t.source, t.line or 0))
            return list(session.exec(query).all())

    # --- spend ----------------------------------------------------------------------------

    def add_spend(self, cost_usd: float, *, run_id: str | None = None, model: str = "") -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(Spend), {"run_id": run_id, "model": model, "cost_usd": cost_usd, "at": now()})

    def frontier_spent_since(self, since: datetime) -> float:
        with self.session() as session:
            total = session.exec(select(func.coalesce(func.sum(Spend.cost_usd), 0.0)).where(Spend.at >= since)).one()
        return float(total)

    # --- checkpoints ----------------------------------------------------------------------

    def prune_checkpoints(self, run_id: str) -> int:
        """Drop LangGraph's snapshots of a finished run; shoal's own rows keep its history."""
        with self.engine.begin() as connection:
            if len(self._checkpoint_tables) < 2:  # once both exist they stay: stop asking
                self._checkpoint_tables = {
                    r[0]
                    for r in connection.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type='table' AND name IN ('checkpoints', 'writes')"
                    )
                }
            removed = 0
            for table in ("checkpoints", "writes"):
                if table in self._checkpoint_tables:
                    removed += connection.execute(
                        text(f"DELETE FROM {table} WHERE thread_id = :t"), {"t": run_id}
                    ).rowcount
        return removed

    # --- retention ------------------------------------------------------------------------

    def prune_runs(self, *, statuses: Sequence[str], before: datetime | None = None, dry_run: bool = False) -> Pruned:
        """Delete the runs with one of `statuses` last touched before `before` (any age when
        None), with their steps, model calls, escalations, reviews and LangGraph checkpoints, in
        one transaction; `dry_run` counts what would go and deletes nothing.

        Ticket rows stay with their result (fields, queue, status), so exports and re-triage
        skips still work; a ticket whose run had not ended well enough to keep (waiting,
        running, pending, stopped) is marked failed, its run id cleared, so triaging it again
        starts afresh. Labelled examples and frontier spend are kept."""
        wanted = [_member(RunStatus, s).value for s in statuses]
        if not wanted:
            return Pruned()
        where = f"status IN ({', '.join('?' * len(wanted))})"
        params: list[Any] = list(wanted)
        if before is not None:
            where += " AND updated_at < ?"
            params.append(_sqlite_value(before.astimezone(UTC).replace(tzinfo=None)))
        with self.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                pruned = _prune(connection, where, tuple(params), dry_run)
                connection.exec_driver_sql("ROLLBACK" if dry_run else "COMMIT")
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
        return pruned

    def file_bytes(self) -> int:
        """The database's size on disk, its write-ahead log included."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.is_file())

    def vacuum(self) -> tuple[int, int]:
        """Give the space of deleted rows back to the disk (SQLite otherwise reuses it in the
        file); needs as much free disk as the file takes. Returns the size before and after."""
        before = self.file_bytes()
        with self._fast_lock:
            raw = self._fast_connection()
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, self.file_bytes()


@dataclass
class Pruned:
    """What `Store.prune_runs` deleted (or, on a dry run, would delete)."""

    runs: int = 0
    steps: int = 0
    calls: int = 0
    escalations: int = 0
    reviews: int = 0
    checkpoints: int = 0
    tickets_failed: int = 0  # tickets whose unfinished run went: marked failed, to triage again
    bytes: int = 0  # the data in the deleted rows' text columns (the file shrinks after VACUUM)
    run_ids: list[str] = field(default_factory=list)


# text columns that hold what a run's rows weigh (summed for `Pruned.bytes`)
_PRUNED_COLUMNS = {
    "run": ("task", "plan_json", "result_json", "error"),
    "step": ("instruction", "input_json", "output_json", "evidence_json", "error"),
    "modelcall": ("request_json", "reply_json", "raw_text", "error"),
    "escalation": ("reason",),
    "review": ("question_json", "answer_json"),
}

_PRUNED_COUNTS = {"step": "steps", "modelcall": "calls", "escalation": "escalations", "review": "reviews"}


def _prune(connection: Any, where: str, params: tuple[Any, ...], dry_run: bool) -> Pruned:
    ids = [str(r[0]) for r in connection.exec_driver_sql(f"SELECT id FROM run WHERE {where}", params)]
    pruned = Pruned(runs=len(ids), run_ids=ids)
    tables = {r[0] for r in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for start in range(0, len(ids), 500):  # SQLite caps bound parameters
        chunk = tuple(ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        for table, columns in _PRUNED_COLUMNS.items():
            key = "id" if table == "run" else "run_id"
            sizes = " + ".join(f"COALESCE(length(CAST({c} AS BLOB)), 0)" for c in columns)
            count, size = connection.exec_driver_sql(
                f"SELECT COUNT(*), COALESCE(SUM({sizes}), 0) FROM {table} WHERE {key} IN ({marks})", chunk
            ).one()
            pruned.bytes += int(size)
            if table != "run":
                name = _PRUNED_COUNTS[table]
                setattr(pruned, name, getattr(pruned, name) + int(count))
        for table in ("checkpoints", "writes"):
            if table in tables:
                pruned.checkpoints += int(
                    connection.exec_driver_sql(
                        f"SELECT COUNT(*) FROM {table} WHERE thread_id IN ({marks})", chunk
                    ).scalar_one()
                )
        unfinished = (
            f"SELECT ticket.id FROM ticket JOIN run ON run.id = ticket.run_id WHERE ticket.run_id IN ({marks}) "
            "AND run.status NOT IN ('done', 'failed')"
        )
        tickets = [r[0] for r in connection.exec_driver_sql(unfinished, chunk)]
        pruned.tickets_failed += len(tickets)
        if dry_run:
            continue
        if tickets:
            connection.exec_driver_sql(
                f"UPDATE ticket SET status = 'failed', run_id = NULL, updated_at = ?, error = "
                f"'its run was pruned before it finished: triage the ticket again' "
                f"WHERE id IN ({', '.join('?' * len(tickets))})",
                (_sqlite_value(now()), *tickets),
            )
        for table in ("modelcall", "escalation", "review", "step"):  # children first: foreign keys
            connection.exec_driver_sql(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)
        for table in ("checkpoints", "writes"):
            if table in tables:
                connection.exec_driver_sql(f"DELETE FROM {table} WHERE thread_id IN ({marks})", chunk)
        connection.exec_driver_sql(f"DELETE FROM run WHERE id IN ({marks})", chunk)
    return pruned


class StoreLedger:
    """Daily frontier spend, kept in the store's `spend` table as each call is paid."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def spent_today(self) -> float:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return await self.store.offload(self.store.frontier_spent_since, midnight)

    async def add(self, cost_usd: float) -> None:
        if cost_usd > 0:
            await self.store.offload(self.store.add_spend, cost_usd)


E = TypeVar("E", bound=StrEnum)


def _member(enum: type[E], value: str) -> E:
    """`value` as a member of `enum` (a member, or its string from a caller or the command line)."""
    try:
        return enum(value)
    except ValueError:
        known = ", ".join(m.value for m in enum)
        raise StoreError(f"'{value}' is not a {enum.__name__} (one of: {known})") from None


def _ticket(session: Session, source: str, key: str) -> Ticket | None:
    # by (source, key), not by id: rows from before version 4 kept their old ids
    return session.exec(select(Ticket).where(Ticket.source == source, Ticket.key == key)).first()


def _sqlite_value(value: Any) -> Any:
    """What SQLAlchemy would bind: datetimes in its SQLite text format, enums by value."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, Enum):
        return value.value
    return value


def _insert_sql(table: Any) -> tuple[str, list[str], dict[str, Any]]:
    columns = [c.name for c in table.columns if c.name != "id"]
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.default is not None and c.name != "id" and not callable(c.default.arg)
    }
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    return sql, columns, defaults


def _row(columns: list[str], values: dict[str, Any], defaults: dict[str, Any]) -> tuple[Any, ...]:
    stamp = now()
    return tuple(
        _sqlite_value(values[c] if c in values else defaults.get(c, stamp if c in _STAMPS else None)) for c in columns
    )


_STAMPS = {"started_at", "created_at"}
_STEP_SQL, _STEP_COLUMNS, _STEP_DEFAULTS = _insert_sql(SQLModel.metadata.tables["step"])
_CALL_SQL, _CALL_COLUMNS, _CALL_DEFAULTS = _insert_sql(SQLModel.metadata.tables["modelcall"])


def _pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, fast commits
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
