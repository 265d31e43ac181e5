"""What the faces show about runs, read from the store as typed rows: the list of runs, and one
run's steps, escalations and model calls. Assembled here once, so the CLI and the TUI only lay
them out (a face never reads the store's tables or parses their JSON columns itself).

The views that `shoal runs`, `show`, `review` (the list) and `heads` print read the file through
the standard library's `sqlite3` (`read`), and this module is their one home: those commands
start in a fraction of a second because they import neither SQLAlchemy nor the engine, nor
pydantic (its first model costs a start 0.2 s), so the rows are plain dataclasses whose columns
are converted here, once. A file
that does not exist yet, or lacks a table of this version, is opened once through `Store`, which
creates or migrates it (or refuses one written by a newer shoal).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from shoal.dburl import is_url, libpq_url, redact_url
from shoal.errors import StoreError
from shoal.status import (
    AnsweredBy,
    EscalationOutcome,
    ReviewStatus,
    Rung,
    RunStatus,
    StepStatus,
    TicketStatus,
    WorkerStatus,
    WorkStatus,
)
from shoal.store.prompts import unpack_all

if TYPE_CHECKING:  # SQLAlchemy: only for callers that already hold a Store
    from shoal.store.db import Store
    from shoal.store.tables import Run


def when(value: datetime | str) -> datetime:
    """A stored time: psycopg gives a `datetime`, sqlite3 the text SQLAlchemy wrote."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def as_json(row: Any) -> Any:
    """A view's row (or a list of them) as JSON values: times in ISO form, statuses as their text."""
    if isinstance(row, list):
        return [as_json(item) for item in row]
    return json.loads(json.dumps(dataclasses.asdict(row), default=_json_value, ensure_ascii=False))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(kw_only=True)
class Evidence:
    """One signal behind a confidence, as stored with a step or a review."""

    name: str
    value: float
    detail: str = ""


def evidence(items: Any) -> list[Evidence]:
    """Stored evidence (a JSON list of signals) as rows; anything else in the list is skipped."""
    return [
        Evidence(name=str(item["name"]), value=float(item.get("value") or 0.0), detail=str(item.get("detail") or ""))
        for item in items or []
        if isinstance(item, dict) and "name" in item
    ]


@dataclass(kw_only=True)
class RunSummary:
    """A run's row: what it was asked, how it stands, and what it cost."""

    id: str
    workflow: str
    status: RunStatus
    task: str
    created_at: datetime
    error: str | None = None
    model_calls: int = 0
    escalations: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @classmethod
    def read(cls, row: Mapping[str, Any]) -> RunSummary:
        """A row of `SELECT {_RUN} FROM run`."""
        return cls(**{**row, "status": _status(row["status"]), "created_at": when(row["created_at"])})

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        return cls(
            id=run.id,
            workflow=run.workflow,
            status=run.status,
            task=run.task,
            created_at=run.created_at,
            error=run.error,
            model_calls=run.model_calls,
            escalations=run.escalations,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            cost_usd=run.cost_usd,
            seconds=run.seconds,
        )


@dataclass(kw_only=True)
class StepLine:
    """A plan step as it ended (or waits): who answered, how sure, on what evidence."""

    step_id: str
    specialist: str
    status: StepStatus
    instruction: str = ""
    model: str | None = None
    confidence: float | None = None
    first_confidence: float | None = None
    answered_by: AnsweredBy | None = None
    output_json: str | None = None
    error: str | None = None
    evidence: list[Evidence] = field(default_factory=list)

    @classmethod
    def read(cls, row: Mapping[str, Any]) -> StepLine:
        answered = row["answered_by"]
        return cls(
            **{
                **row,
                "status": StepStatus(row["status"]),
                "answered_by": None if answered is None else AnsweredBy(answered),
                "evidence": evidence(json.loads(row["evidence"] or "[]")),
            }
        )


@dataclass(kw_only=True)
class EscalationLine:
    """A rung of the escalation ladder a step took."""

    step_id: str | None
    rung: Rung
    outcome: EscalationOutcome
    confidence_before: float
    confidence_after: float | None = None
    model: str | None = None
    cost_usd: float = 0.0
    reason: str = ""
    redacted: str | None = None  # JSON: kind -> how many values were withheld from the frontier

    @classmethod
    def read(cls, row: Mapping[str, Any]) -> EscalationLine:
        redacted = row["redacted"]
        if redacted is not None and not isinstance(redacted, str):  # psycopg parses a JSON column
            redacted = json.dumps(redacted)
        return cls(
            **{**row, "rung": Rung(row["rung"]), "outcome": EscalationOutcome(row["outcome"]), "redacted": redacted}
        )

    @property
    def explained(self) -> str:
        """The reason, and what the frontier was not shown (kinds and counts, never values)."""
        kinds = json.loads(self.redacted) if self.redacted else {}
        if not kinds:
            return self.reason
        withheld = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        return f"{self.reason}; withheld from the frontier: {withheld}"


@dataclass(kw_only=True)
class CallLine:
    """One model call: its cost, and the prompt and reply as stored (JSON text)."""

    id: int
    step_id: str | None
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    confidence: float | None = None
    error: str | None = None
    request_json: str
    reply_json: str | None = None
    raw_text: str | None = None

    @property
    def reply(self) -> str:
        """The reply as JSON text; a call without one shows its error and what the model said."""
        return self.reply_json or json.dumps({"error": self.error, "raw_text": self.raw_text}, ensure_ascii=False)


@dataclass(kw_only=True)
class RunDetail:
    """Everything `shoal show` prints about a run."""

    run: RunSummary
    steps: list[StepLine]
    escalations: list[EscalationLine]
    calls: list[CallLine]


# --- reading the file -------------------------------------------------------------------------

R = TypeVar("R")
BUSY_TIMEOUT_S = 30.0  # as long as the store's own connections wait for a writer's lock


class ReadConnection(Protocol):
    """What a view's query is given: a read-only DB-API connection to the store's database whose
    `execute` takes `?` placeholders (sqlite3's own; PostgreSQL's are translated)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


Location = Union["Store", Path, str]


def read(db: Location, query: Callable[[ReadConnection], R]) -> R:
    """`query` run on a plain, read-only connection to the store's database: the standard
    library's `sqlite3` on a file, psycopg on a `postgresql://` URL."""
    where = _location(db)
    if isinstance(where, str):
        return _read_postgres(where, query)
    if where.is_file():
        try:
            return _query(where, query)
        except sqlite3.OperationalError as exc:
            if "no such" not in str(exc):  # not a missing table or column: a locked or broken file
                raise StoreError(f"cannot read the database {where}: {exc}") from None
    from shoal.store.db import Store  # creates or migrates the file, or refuses one from a newer shoal

    Store(where).close()
    return _query(where, query)


def _location(db: Location) -> Path | str:
    """A URL, or the file's path as `Store` opens it (`~` expanded)."""
    if isinstance(db, str):
        return db if is_url(db) else Path(db).expanduser()
    if isinstance(db, Path):
        return db.expanduser()
    if db.url is not None:
        return db.url
    assert db.path is not None
    return db.path


def shown(db: Location) -> str:
    """The database as a message names it (a URL without its password)."""
    where = _location(db)
    if isinstance(where, Path):
        return str(where)
    return redact_url(where)


def _query(path: Path, query: Callable[[ReadConnection], R]) -> R:
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as connection:
        connection.execute("PRAGMA query_only = ON")
        return query(connection)


class _Postgres:
    """A psycopg connection taking sqlite3's `?` placeholders (the views' SQL has no `%`)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.connection.execute(sql.replace("?", "%s"), list(parameters))


def _read_postgres(url: str, query: Callable[[ReadConnection], R]) -> R:
    import psycopg  # the `postgres` extra; only a Postgres store reads through it

    from shoal.store.db import Store

    def attempt() -> R:
        options = "-c default_transaction_read_only=on -c timezone=UTC"
        with psycopg.connect(libpq_url(url), options=options, connect_timeout=10) as connection:
            return query(_Postgres(connection))

    try:
        return attempt()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        Store(url).close()  # a database shoal never opened, or one of an older version: migrate it
        return attempt()
    except psycopg.OperationalError as exc:
        raise StoreError(
            f"cannot read the database {redact_url(url)}: {str(exc).strip().splitlines()[0]}. "
            "Check that the server runs and the URL in SHOAL_DB or db_path"
        ) from None


def _rows(connection: ReadConnection, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
    cursor = connection.execute(sql, params)
    names = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(names, row, strict=True))


def _prompt_texts(connection: ReadConnection, hashes: set[str]) -> dict[str, str]:
    """Kept prompt texts by hash (`shoal.store.prompts`), for the calls a view shows."""
    wanted = sorted(hashes)
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
        chunk = wanted[start : start + 500]
        sql = f"SELECT hash, text FROM prompt WHERE hash IN ({', '.join('?' * len(chunk))})"
        found.update((str(h), str(t)) for h, t in connection.execute(sql, chunk))
    return found


def _status(value: str | RunStatus) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        raise StoreError(f"'{value}' is not a RunStatus (one of: {', '.join(RunStatus)})") from None


# a view's columns are its fields, named as the table names them
def _columns(row: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(row)]


_RUN = ", ".join(_columns(RunSummary))
_STEP = ", ".join(name if name != "evidence" else "evidence_json AS evidence" for name in _columns(StepLine))
_ESCALATION = ", ".join(_columns(EscalationLine))
_CALL = ", ".join(_columns(CallLine))


def run_summaries(db: Location, *, status: RunStatus | None = None, limit: int = 20) -> list[RunSummary]:
    """The newest runs first, optionally only those with `status`."""
    where, params = ("WHERE status = ?", [_status(status).value]) if status is not None else ("", [])
    sql = f"SELECT {_RUN} FROM run {where} ORDER BY created_at DESC LIMIT ?"
    return read(db, lambda c: [RunSummary.read(row) for row in _rows(c, sql, [*params, limit])])


def find_run(connection: ReadConnection, prefix: str, where: str) -> RunSummary:
    """A run by id or unique id prefix (as git takes commit ids); `%` and `_` are characters."""
    found = list(_rows(connection, f"SELECT {_RUN} FROM run WHERE id = ?", [prefix]))
    if not found:
        sql = f"SELECT {_RUN} FROM run WHERE substr(id, 1, ?) = ? LIMIT 2"
        found = list(_rows(connection, sql, [len(prefix), prefix]))
    if not found:
        raise StoreError(f"no run '{prefix}' in {where}: `shoal runs` lists them")
    if len(found) > 1:
        raise StoreError(f"'{prefix}' matches several runs: give more of the id")
    return RunSummary.read(found[0])


def run_detail(db: Location, run_id: str) -> RunDetail:
    """A run (by id or unique prefix; `%` and `_` are literal) with its steps, escalations and calls."""

    def query(connection: ReadConnection) -> RunDetail:
        run = find_run(connection, run_id, shown(db))
        of_run = [run.id]
        steps = [
            StepLine.read(row)
            for row in _rows(connection, f"SELECT {_STEP} FROM step WHERE run_id = ? ORDER BY id", of_run)
        ]
        escalations = [
            EscalationLine.read(row)
            for row in _rows(connection, f"SELECT {_ESCALATION} FROM escalation WHERE run_id = ? ORDER BY id", of_run)
        ]
        stored = list(_rows(connection, f"SELECT {_CALL} FROM modelcall WHERE run_id = ? ORDER BY id", of_run))
        whole = unpack_all((row["request_json"] for row in stored), partial(_prompt_texts, connection))
        calls = [CallLine(**{**row, "request_json": r}) for row, r in zip(stored, whole, strict=True)]
        return RunDetail(run=run, steps=steps, escalations=escalations, calls=calls)

    return read(db, query)


@dataclass(kw_only=True)
class ReviewLine:
    """A decision waiting for a person, as the queue lists it (`ReviewDetail` in
    `engine/reviews.py` is one review whole, with what its specialist takes as an answer)."""

    id: int
    run_id: str
    step_id: str
    specialist: str
    ticket: str | None = None  # the ticket's id in its export, for a ticket run
    text: str  # what the specialist read
    confidence: float = 0.0
    best_answer: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)  # each reason once


def question_text(question: dict[str, Any]) -> str:
    """What the specialist read, from a review's stored question."""
    data = question.get("input")
    data = data if isinstance(data, dict) else {}
    text = data.get("text", data.get("task"))
    return text if isinstance(text, str) else json.dumps(data, ensure_ascii=False)


def distinct_reasons(reasons: Iterable[str]) -> list[str]:
    """Each reason once. The ladder records a reason per rung and each repeats what came before
    ("confidence 0.40 below threshold 0.70; frontier skipped: no key", then "confidence 0.40 below
    threshold 0.70; no key"): split at "; ", keep the first of equal parts and drop a part that
    another part contains."""
    parts = list(dict.fromkeys(part.strip() for reason in reasons for part in str(reason).split("; ") if part.strip()))
    return [part for part in parts if not any(part != other and part in other for other in parts)]


def review_lines(db: Location) -> list[ReviewLine]:
    """The reviews waiting for a person, oldest first, each with its ticket's id when it has one."""
    sql = (
        "SELECT id, run_id, step_id, specialist, question_json, "
        "(SELECT key FROM ticket WHERE ticket.run_id = review.run_id LIMIT 1) AS ticket "
        "FROM review WHERE status = ? ORDER BY id"
    )

    def line(row: dict[str, Any]) -> ReviewLine:
        question = json.loads(row.pop("question_json") or "{}")
        question = question if isinstance(question, dict) else {}
        best = question.get("best_answer")
        return ReviewLine(
            id=int(row["id"]),
            run_id=str(row["run_id"]),
            step_id=str(row["step_id"]),
            specialist=str(row["specialist"]),
            ticket=None if row["ticket"] is None else str(row["ticket"]),
            text=question_text(question),
            confidence=float(question.get("confidence") or 0.0),
            best_answer=best if isinstance(best, dict) else None,
            reasons=distinct_reasons(question.get("reasons") or []),
        )

    return read(db, lambda c: [line(row) for row in _rows(c, sql, [ReviewStatus.PENDING.value])])


def ticket_of_run(db: Location, run_id: str) -> str | None:
    """The id (in its export) of the ticket a run triaged; None for a task run."""
    sql = "SELECT key FROM ticket WHERE run_id = ? LIMIT 1"
    found = read(db, lambda c: c.execute(sql, [run_id]).fetchone())
    return None if found is None else str(found[0])


@dataclass(kw_only=True)
class HeadMetrics:
    """A head (or what it was compared with) on its held-out slice, as stored with the head."""

    what: str = ""
    n: int = 0
    accuracy: float = 0.0
    ece: float = 0.0
    auroc: float | None = None
    escalated: float = 0.0

    @classmethod
    def read(cls, stored: Any) -> HeadMetrics | None:
        """Stored metrics (a JSON object; keys of other versions ignored), or None."""
        if not isinstance(stored, dict):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})


@dataclass(kw_only=True)
class HeadSummary:
    """A trained head's row, without its weights."""

    specialist: str
    version: int
    active: bool
    embed_model: str
    labels: int
    examples: int
    created_at: datetime
    after: HeadMetrics | None = None
    before: HeadMetrics | None = None


def head_summaries(db: Location) -> list[HeadSummary]:
    """Every trained head, oldest version first (without its weights)."""
    sql = (
        "SELECT specialist, version, active, embed_model, labels_json, n_examples AS examples, created_at, "
        "metrics_json FROM head ORDER BY specialist, version"
    )

    def summary(row: dict[str, Any]) -> HeadSummary:
        metrics = json.loads(row.pop("metrics_json") or "{}")
        labels = json.loads(row.pop("labels_json") or "[]")
        return HeadSummary(
            specialist=str(row["specialist"]),
            version=int(row["version"]),
            active=bool(row["active"]),
            embed_model=str(row["embed_model"]),
            labels=len(labels),
            examples=int(row["examples"]),
            created_at=when(row["created_at"]),
            after=HeadMetrics.read(metrics.get("after")),
            before=HeadMetrics.read(metrics.get("before")),
        )

    return read(db, lambda c: [summary(row) for row in _rows(c, sql)])


def ticket_counts(db: Location, source: str, keys: Sequence[str]) -> dict[TicketStatus, int]:
    """How the tickets `keys` of the export `source` stand in the database, by status (a ticket
    not stored yet is not counted)."""

    def query(connection: ReadConnection) -> dict[TicketStatus, int]:
        counts: dict[TicketStatus, int] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            chunk = wanted[start : start + 500]
            sql = (
                f"SELECT status, COUNT(*) FROM ticket WHERE source = ? AND key IN ({', '.join('?' * len(chunk))}) "
                "GROUP BY status"
            )
            for status, n in connection.execute(sql, [source, *chunk]):
                counts[TicketStatus(status)] = counts.get(TicketStatus(status), 0) + int(n)
        return counts

    return read(db, query)


# --- the Runs board and a call's exchange (added for the TUI) -----------------------------------


@dataclass(kw_only=True)
class RunLine(RunSummary):
    """A run's row on a live board: its summary, how far its plan got, and its open reviews."""

    steps_done: int = 0
    steps_planned: int = 0
    reviews_pending: int = 0


_PROGRESS = ("steps_done", "reviews_pending")


def run_lines(db: Location, *, status: RunStatus | None = None, limit: int = 200) -> list[RunLine]:
    """The newest runs first (optionally only those with `status`), each with its progress: plan
    steps done out of planned (the planner's own step not counted) and reviews still pending."""
    where, params = ("WHERE status = ?", [_status(status).value]) if status is not None else ("", [])
    sql = (
        f"SELECT {_RUN}, plan_json, "
        "(SELECT COUNT(*) FROM step WHERE step.run_id = run.id AND step.step_id != 'plan' AND step.status = ?)"
        " AS steps_done, "
        "(SELECT COUNT(*) FROM step WHERE step.run_id = run.id AND step.step_id != 'plan') AS steps_seen, "
        "(SELECT COUNT(*) FROM review WHERE review.run_id = run.id AND review.status = ?) AS reviews_pending "
        f"FROM run {where} ORDER BY created_at DESC LIMIT ?"
    )
    counted = [StepStatus.DONE.value, ReviewStatus.PENDING.value, *params, limit]

    def line(row: dict[str, Any]) -> RunLine:
        try:
            plan = json.loads(row.pop("plan_json") or "null")
        except ValueError:
            plan = None
        seen = row.pop("steps_seen")
        planned = len(plan["steps"]) if isinstance(plan, dict) and isinstance(plan.get("steps"), list) else seen
        summary = RunSummary.read({k: v for k, v in row.items() if k not in _PROGRESS})
        return RunLine(
            **vars(summary),
            steps_done=int(row["steps_done"]),
            steps_planned=planned,
            reviews_pending=int(row["reviews_pending"]),
        )

    return read(db, lambda c: [line(row) for row in _rows(c, sql, counted)])


@dataclass(kw_only=True)
class Turn:
    """One message of a prompt."""

    role: str
    content: str


@dataclass(kw_only=True)
class Exchange:
    """A model call as a person reads it: the prompt's messages as text, what else the request
    asked for (temperature, schema, ...), and the reply's text or the error in its place."""

    turns: list[Turn]
    options: dict[str, Any] = field(default_factory=dict)
    reply: str | None = None
    error: str | None = None


def exchange(call: CallLine) -> Exchange:
    """`call`'s stored request and reply, unpacked; a request that is not a chat is one turn."""
    try:
        request = json.loads(call.request_json)
    except ValueError:
        request = None
    turns: list[Turn] = []
    options: dict[str, Any] = {}
    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        for message in request["messages"]:
            if isinstance(message, dict):
                turns.append(Turn(role=str(message.get("role", "?")), content=str(message.get("content", ""))))
        options = {k: v for k, v in request.items() if k != "messages" and v is not None}
    else:
        turns.append(Turn(role="request", content=call.request_json))
    reply: str | None = None
    if call.reply_json:
        try:
            stored = json.loads(call.reply_json)
        except ValueError:
            stored = None
        reply = call.reply_json
        if isinstance(stored, dict) and "text" in stored:
            reply = str(stored["text"])
        elif isinstance(stored, dict) and stored.get("text_is_parsed"):  # kept once, as the parsed answer
            reply = json.dumps(stored.get("parsed"), ensure_ascii=False)
    elif call.raw_text is not None:
        reply = call.raw_text
    return Exchange(turns=turns, options=options, reply=reply, error=call.error)


# --- workers and the work queue (`shoal workers`, the TUI's Runs screen) -----------------------


@dataclass(kw_only=True)
class WorkerLine:
    """A worker process as `shoal workers` lists it."""

    id: str
    host: str
    status: WorkerStatus
    current: str | None = None
    done: int = 0
    failed: int = 0
    heartbeat_at: datetime
    silent: bool = False  # not heard from for a lease's length: killed, or its machine gone

    @classmethod
    def read(cls, row: Mapping[str, Any]) -> WorkerLine:
        return cls(**{**row, "status": WorkerStatus(row["status"]), "heartbeat_at": when(row["heartbeat_at"])})

    @property
    def heard_s(self) -> float:
        """Seconds since its last heartbeat."""
        return (datetime.now(UTC) - self.heartbeat_at.replace(tzinfo=UTC)).total_seconds()


@dataclass(kw_only=True)
class WorkBoard:
    workers: list[WorkerLine]
    queue: dict[WorkStatus, int]

    @property
    def live(self) -> list[WorkerLine]:
        return [w for w in self.workers if w.status != WorkerStatus.STOPPED and not w.silent]


def work_board(db: Location, *, lease_s: float) -> WorkBoard:
    """Every worker (newest first, each marked silent when its heartbeat is older than a lease)
    and the queue's items by status."""

    def query(connection: ReadConnection) -> WorkBoard:
        sql = "SELECT id, host, status, current, done, failed, heartbeat_at FROM worker ORDER BY started_at DESC"
        rows = [WorkerLine.read(row) for row in _rows(connection, sql)]
        for row in rows:
            row.silent = row.status != WorkerStatus.STOPPED and row.heard_s > lease_s
        counts = {
            WorkStatus(s): int(n) for s, n in connection.execute("SELECT status, COUNT(*) FROM work GROUP BY status")
        }
        return WorkBoard(workers=rows, queue={s: counts.get(s, 0) for s in WorkStatus})

    return read(db, query)
