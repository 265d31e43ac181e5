"""shoal's tables and LangGraph's checkpoints side by side, in one database: a SQLite file (the
default: WAL and a busy timeout let several processes share it) or a PostgreSQL server
(`SHOAL_DB=postgresql://...`, for many workers on many machines).

Every write goes one way, SQLAlchemy Core statements on the store's one engine, as one short
transaction opened and closed inside a plain function: nothing here awaits while holding one.
Reads may use the ORM's sessions; nothing is written through them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, DateTime, bindparam, event, func, insert, inspect, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, create_engine, select

from shoal.dburl import is_url, redact_url, sqlalchemy_url
from shoal.errors import StoreError
from shoal.status import ReviewStatus, RunStatus
from shoal.store import migrations, prompts
from shoal.store.learning import LearningRecords, upsert_examples
from shoal.store.queue import WorkRecords
from shoal.store.service import ServiceRecords
from shoal.store.tables import (
    EscalationRow,
    Migration,
    ModelCall,
    Prompt,
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

MIGRATIONS = migrations.MIGRATIONS

# LangGraph's checkpoint tables in each engine (the SQLite and the Postgres savers name them apart)
CHECKPOINT_TABLES = {
    "sqlite": ("checkpoints", "writes"),
    "postgresql": ("checkpoints", "checkpoint_blobs", "checkpoint_writes"),
}


class Store(LearningRecords, WorkRecords, ServiceRecords):
    def __init__(self, location: str | Path) -> None:
        self.url: str | None = str(location) if is_url(location) else None
        self.path: Path | None = None
        if self.url is not None:
            self.where = redact_url(self.url)
            self.engine: Engine = _postgres_engine(self.url)
        else:
            self.path = Path(location).expanduser()
            self.where = str(self.path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for the database {self.path}: {exc}") from None
            self.engine = create_engine(
                f"sqlite:///{self.path}",
                connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            )
            event.listen(self.engine, "connect", _pragmas)
        self.dialect: str = self.engine.dialect.name
        self._checkpoint_tables: set[str] = set()
        self._writer: Connection | None = None
        self._writer_lock = threading.Lock()
        # One thread runs every store call made from async code. A call made on the event loop
        # itself would block it while it waits for SQLite's lock, and the lock may be held by
        # LangGraph's checkpointer, which needs that very loop to commit: a deadlock until the
        # busy timeout. One thread also keeps this process's writes from contending with each other.
        self._executor: ThreadPoolExecutor | None = None
        self.migrate()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    # --- schema and transactions ----------------------------------------------------------

    def migrate(self, *, upto: int = migrations.NEWEST) -> list[int]:
        """Apply the migrations this database lacks (see `shoal.store.migrations`)."""
        try:
            with self.engine.connect() as connection:
                have = migrations.applied(connection)
        except Exception as exc:  # a server that is down or refuses us: say which and how to fix
            if self.url is None:
                raise
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(
                f"cannot open the database {self.where}: {reason}. Check that the server runs and the URL "
                "(user, password, database) in SHOAL_DB or db_path is right"
            ) from None
        if have and max(have) > migrations.NEWEST:
            raise StoreError(
                f"{self.where} was written by a newer shoal (schema {max(have)} > {migrations.NEWEST}): upgrade shoal"
            )
        if have is not None and have >= {v for v, _, _ in MIGRATIONS if v <= upto}:
            return []  # the common open: a plain read, no write lock (readers never wait on writers)
        with self.transaction(exclusive=True) as connection:
            return migrations.migrate(connection, self.where, upto=upto)

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[Connection]:
        """One write transaction, committed when the block ends (rolled back if it raises).

        `exclusive`: for a read-then-write that must not be raced (numbering a head, taking a
        lease). SQLite takes its write lock up front (BEGIN IMMEDIATE); PostgreSQL relies on the
        row locks the statements take (`FOR UPDATE`), or on an advisory lock the caller takes."""
        if self.dialect != "sqlite":
            with self.engine.begin() as connection:
                yield connection
            return
        if not exclusive:
            # SQLite takes one writer at a time anyway: this process's writes share one
            # connection, which saves a pool checkout per transaction on every step's write
            with self._writer_lock:
                if self._writer is None:
                    self._writer = self.engine.connect()
                with self._writer.begin():
                    yield self._writer
            return
        with self.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

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
        with self.transaction() as connection:
            connection.execute(insert(Run), row.model_dump())
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
            raise StoreError(f"no run '{prefix}' in {self.where}: `shoal runs` lists them")
        if len(matches) > 1:
            raise StoreError(f"'{prefix}' matches several runs: give more of the id")
        return matches[0]

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.transaction() as connection:
            updated = connection.execute(
                update(Run).where(col(Run.id) == run_id).values(**fields, updated_at=now())
            ).rowcount
        if not updated:
            raise StoreError(f"no run {run_id}")

    def finish_run(
        self, run_id: str, status: str, elapsed_s: float, *, error: str | None = None, result_json: str | None = None
    ) -> str:
        """Close a run's row: status (a `RunStatus`), time, and totals summed from its calls and
        escalations, in one statement (every run pays this once). Returns the run's workflow."""
        values = {
            "status": _member(RunStatus, status).value,
            "elapsed": elapsed_s,
            "error": error,
            "result": result_json,
            "at": now(),
            "id": run_id,
        }
        with self.transaction() as connection:
            updated = connection.execute(_FINISH_RUN, values).rowcount
            found = connection.execute(select(Run.workflow).where(Run.id == run_id)).first()
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
        values = step.model_dump(exclude={"id"})
        with self.transaction() as connection:
            existing = connection.execute(
                select(Step.id).where(Step.run_id == step.run_id, Step.step_id == step.step_id)
            ).scalar()
            if existing is not None:
                values.pop("started_at")
                connection.execute(update(Step).where(col(Step.id) == existing).values(**values))
                step.id = int(existing)
            else:
                step.id = _new_id(connection.execute(insert(Step), values))
            self._children(connection, calls, escalations, review, examples)
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
        row = {**_STEP_DEFAULTS, "started_at": now(), **values}
        with self.transaction() as connection:
            step_id = _insert_rows(connection, Step, [row])
            self._children(connection, calls, escalations, review, examples)
        return step_id

    @staticmethod
    def _children(
        connection: Connection,
        calls: Sequence[dict[str, Any]],
        escalations: Sequence[EscalationRow],
        review: Review | None,
        examples: Sequence[dict[str, Any]],
    ) -> None:
        """What a step's row brings along: its model calls, escalations, review and examples."""
        if calls:
            stamp = now()
            rows = [{**_CALL_DEFAULTS, "created_at": stamp, **c} for c in calls]
            texts: dict[str, str] = {}
            for row in rows:
                row["request_json"], parts = prompts.pack(row["request_json"])
                texts.update(parts)
            if texts:  # a text some earlier call kept already stays as it is
                connection.execute(_KEEP_PROMPT, [{"h": h, "t": t, "at": stamp} for h, t in texts.items()])
            _insert_rows(connection, ModelCall, rows)
        for item in escalations:
            values = item.model_dump(exclude={"id"})
            if item.id is None:
                item.id = _new_id(connection.execute(insert(EscalationRow), values))
            else:  # an update to a row read earlier (a human rung now answered)
                connection.execute(update(EscalationRow).where(col(EscalationRow.id) == item.id).values(**values))
        if review is not None:
            review.id = _new_id(connection.execute(insert(Review), review.model_dump(exclude={"id"})))
        upsert_examples(connection, examples)

    def close(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.engine.dispose()

    def prompt_texts(self, hashes: set[str]) -> dict[str, str]:
        """The kept prompt texts of these hashes (see `shoal.store.prompts`)."""
        found: dict[str, str] = {}
        wanted = sorted(hashes)
        with self.session() as session:
            for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
                chunk = wanted[start : start + 500]
                found.update(session.exec(select(Prompt.hash, Prompt.text).where(col(Prompt.hash).in_(chunk))).all())
        return found

    def model_calls(self, run_id: str) -> list[ModelCall]:
        """A run's calls, each request whole again (its kept prompt texts put back)."""
        with self.session() as session:
            rows = list(
                session.exec(select(ModelCall).where(ModelCall.run_id == run_id).order_by(col(ModelCall.id))).all()
            )
        for row, request in zip(
            rows, prompts.unpack_all((r.request_json for r in rows), self.prompt_texts), strict=True
        ):
            row.request_json = request
        return rows

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
        """Record a person's answer; only a pending review takes one (two people answering at
        once: the first wins, the second is told who answered)."""
        answered = now()
        with self.transaction() as connection:
            changed = connection.execute(
                update(Review)
                .where(col(Review.id) == review_id, col(Review.status) == ReviewStatus.PENDING)
                .values(
                    status=ReviewStatus.ANSWERED, answer_json=json.dumps(answer), answered_by=who, answered_at=answered
                )
            ).rowcount
        row = self.get_review(review_id)
        if not changed:
            raise StoreError(f"review {review_id} was already answered by {row.answered_by}")
        return row

    # --- tickets --------------------------------------------------------------------------

    def get_ticket(self, source: str, key: str) -> Ticket | None:
        with self.session() as session:
            return _ticket(session, source, key)

    def put_ticket(self, source: str, key: str, **fields: Any) -> Ticket:
        stamp = now()
        with self.transaction() as connection:
            existing = connection.execute(select(Ticket.id).where(Ticket.source == source, Ticket.key == key)).scalar()
            if existing is None:
                row = Ticket(id=ticket_id(source, key), source=source, key=key, created_at=stamp)
                connection.execute(insert(Ticket), {**row.model_dump(), **fields, "updated_at": stamp})
            else:
                connection.execute(update(Ticket).where(col(Ticket.id) == existing).values(**fields, updated_at=stamp))
        found = self.get_ticket(source, key)
        assert found is not None
        return found

    def get_ticket_by_id(self, row_id: str) -> Ticket | None:
        with self.session() as session:
            return session.get(Ticket, row_id)

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
        with self.transaction() as connection:
            connection.execute(insert(Spend), {"run_id": run_id, "model": model, "cost_usd": cost_usd, "at": now()})

    def frontier_spent_since(self, since: datetime) -> float:
        with self.session() as session:
            total = session.exec(select(func.coalesce(func.sum(Spend.cost_usd), 0.0)).where(Spend.at >= since)).one()
        return float(total)

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint_tables(self, connection: Connection) -> set[str]:
        """LangGraph's checkpoint tables present in this database (its saver makes them on first use)."""
        wanted = CHECKPOINT_TABLES[self.dialect]
        if len(self._checkpoint_tables) < len(wanted):  # once they all exist they stay: stop asking
            present = set(inspect(connection).get_table_names())
            self._checkpoint_tables = {t for t in wanted if t in present}
        return self._checkpoint_tables

    def prune_checkpoints(self, run_id: str) -> int:
        """Drop LangGraph's snapshots of a finished run; shoal's own rows keep its history."""
        removed = 0
        with self.transaction() as connection:
            for table in sorted(self.checkpoint_tables(connection)):
                removed += connection.execute(text(f"DELETE FROM {table} WHERE thread_id = :t"), {"t": run_id}).rowcount
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
        where = "status IN :statuses"
        params: dict[str, Any] = {"statuses": wanted}
        if before is not None:
            where += " AND updated_at < :before"
            params["before"] = before.astimezone(UTC)
        with self.transaction(exclusive=True) as connection:
            found = text(f"SELECT id FROM run WHERE {where}").bindparams(
                *_expanding("statuses"), *_stamped("before" in params)
            )
            ids = [str(r[0]) for r in connection.execute(found, params)]
            return _prune(connection, ids, sorted(self.checkpoint_tables(connection)), dry_run)

    def size_bytes(self) -> int:
        """What the database takes on disk: the file and its write-ahead log, or the server's database."""
        if self.path is None:
            with self.engine.connect() as connection:
                return int(connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.is_file())

    def vacuum(self) -> tuple[int, int]:
        """Give the space of deleted rows back to the disk (SQLite otherwise reuses it in the
        file; PostgreSQL's VACUUM FULL rewrites the tables); needs as much free disk as the data
        takes. Returns the size before and after."""
        before = self.size_bytes()
        with self.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "sqlite":
                connection.exec_driver_sql("VACUUM")
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                connection.exec_driver_sql("VACUUM FULL")
        return before, self.size_bytes()


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


def _expanding(*names: str) -> list[Any]:
    return [bindparam(name, expanding=True) for name in names]


def _stamped(present: bool) -> list[Any]:
    return [bindparam("before", type_=DateTime())] if present else []


def _in_ids(connection: Connection, ids: list[str], sql: str) -> Any:
    """`sql`, whose `:ids` is the list of run ids."""
    return connection.execute(text(sql).bindparams(*_expanding("ids")), {"ids": ids})


def _prune(connection: Connection, ids: list[str], checkpoints: list[str], dry_run: bool) -> Pruned:
    pruned = Pruned(runs=len(ids), run_ids=ids)
    length = "octet_length({})" if connection.dialect.name == "postgresql" else "length(CAST({} AS BLOB))"
    for start in range(0, len(ids), 500):  # SQLite caps bound parameters
        run = functools.partial(_in_ids, connection, ids[start : start + 500])

        for table, columns in _PRUNED_COLUMNS.items():
            key = "id" if table == "run" else "run_id"
            sizes = " + ".join(f"COALESCE({length.format(c)}, 0)" for c in columns)
            count, size = run(f"SELECT COUNT(*), COALESCE(SUM({sizes}), 0) FROM {table} WHERE {key} IN :ids").one()
            pruned.bytes += int(size)
            if table != "run":
                name = _PRUNED_COUNTS[table]
                setattr(pruned, name, getattr(pruned, name) + int(count))
        for table in checkpoints:
            pruned.checkpoints += int(run(f"SELECT COUNT(*) FROM {table} WHERE thread_id IN :ids").scalar_one())
        unfinished = (
            "SELECT ticket.id FROM ticket JOIN run ON run.id = ticket.run_id WHERE ticket.run_id IN :ids "
            "AND run.status NOT IN ('done', 'failed')"
        )
        tickets = [r[0] for r in run(unfinished)]
        pruned.tickets_failed += len(tickets)
        if dry_run:
            continue
        if tickets:
            connection.execute(
                update(Ticket)
                .where(col(Ticket.id).in_(tickets))
                .values(
                    status="failed",
                    run_id=None,
                    updated_at=now(),
                    error="its run was pruned before it finished: triage the ticket again",
                )
            )
        for table in ("modelcall", "escalation", "review", "step"):  # children first: foreign keys
            run(f"DELETE FROM {table} WHERE run_id IN :ids")
        for table in checkpoints:
            run(f"DELETE FROM {table} WHERE thread_id IN :ids")
        run("DELETE FROM run WHERE id IN :ids")
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


def _new_id(result: Any) -> int:
    """The key the database gave the row an INSERT made."""
    return int(result.inserted_primary_key[0])


def _insert_rows(connection: Connection, model: Any, rows: list[dict[str, Any]]) -> int:
    """Plain rows into `model`'s table (a column not given is NULL; a step's write is the hot path);
    returns the id of the last. On SQLite the statement is compiled once and its values bound
    as SQLAlchemy would, since its per-statement machinery cost more than the write itself
    (`benchmarks/orchestration_overhead.py`); on PostgreSQL a Core insert."""
    if connection.dialect.name != "sqlite":
        result = connection.execute(insert(model), rows[0] if len(rows) == 1 else rows)
        return _new_id(result) if len(rows) == 1 else 0
    sql, columns = _SQLITE_INSERT[model.__tablename__]
    params = [tuple(_sqlite_value(row.get(c)) for c in columns) for row in rows]
    if len(params) == 1:
        return int(connection.exec_driver_sql(sql, params[0]).lastrowid)
    connection.exec_driver_sql(sql, params)
    return 0


def _sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy binds it on SQLite: datetimes in its text format (UTC, as stored),
    enums by their value."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, StrEnum):
        return value.value
    return value


def _sqlite_insert(model: Any) -> tuple[str, list[str]]:
    columns = [c.name for c in model.__table__.columns if c.name != "id"]
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {model.__tablename__} ({', '.join(columns)}) VALUES ({marks})", columns


def _defaults(table: Any) -> dict[str, Any]:
    """A table's plain column defaults, so a row given as a dict needs only what differs."""
    return {
        c.name: c.default.arg
        for c in table.columns
        if c.default is not None and c.name != "id" and not callable(c.default.arg)
    }


_STEP_DEFAULTS = _defaults(Step.__table__)  # type: ignore[attr-defined]
_CALL_DEFAULTS = _defaults(ModelCall.__table__)  # type: ignore[attr-defined]
_SQLITE_INSERT = {m.__tablename__: _sqlite_insert(m) for m in (Step, ModelCall)}

_KEEP_PROMPT = text(
    "INSERT INTO prompt (hash, text, created_at) VALUES (:h, :t, :at) ON CONFLICT (hash) DO NOTHING"
).bindparams(bindparam("at", type_=DateTime()))

_FINISH_RUN = text(
    "UPDATE run SET status = :status, seconds = seconds + :elapsed, owner_pid = NULL, error = :error, "
    "result_json = COALESCE(:result, result_json), updated_at = :at, "
    "model_calls = (SELECT COUNT(*) FROM modelcall WHERE run_id = run.id), "
    "tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM modelcall WHERE run_id = run.id), "
    "tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM modelcall WHERE run_id = run.id), "
    "cost_usd = (SELECT COALESCE(SUM(cost_usd), 0.0) FROM modelcall WHERE run_id = run.id), "
    "escalations = (SELECT COUNT(*) FROM escalation WHERE run_id = run.id) "
    "WHERE id = :id"
).bindparams(bindparam("at", type_=DateTime()))


def _postgres_engine(url: str) -> Engine:
    # Timestamps are stored without a time zone, in UTC by convention: the session says so, so
    # an aware datetime bound by psycopg lands as UTC whatever the server's own zone.
    return create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"options": "-c timezone=UTC", "connect_timeout": 10},
    )


def _pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, fast commits
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
