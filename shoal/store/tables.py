"""The tables shoal keeps: every run, step, model call, escalation and pending human decision.

JSON columns hold pydantic dumps as text, so a row can be read back without shoal's classes
(`sqlite3 shoal.db 'select * from modelcall'` is an operator's tool, as `llm logs` is). Statuses,
rungs and outcomes are the `StrEnum`s of `shoal.status`, stored as their values in VARCHAR
columns (`EnumText`): the schema is the one earlier versions wrote.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel, UniqueConstraint

from shoal.status import (
    AnsweredBy,
    DeliveryStatus,
    EscalationOutcome,
    ReviewStatus,
    Rung,
    RunStatus,
    StepStatus,
    TicketStatus,
    WorkerStatus,
    WorkKind,
    WorkStatus,
)


def now() -> datetime:
    return datetime.now(UTC)


class EnumText(TypeDecorator[str]):
    """A `StrEnum` kept as its value in a plain VARCHAR (no SQL enum, no CHECK: the schema stays
    the one earlier versions wrote). Writing anything but a member's value fails; reading gives
    the member back, or the bare text for a value this version does not know."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            return self.enum(value)
        except ValueError:
            return value


class Run(SQLModel, table=True):
    id: str = Field(primary_key=True)
    workflow: str = "task"
    task: str
    status: RunStatus = Field(default=RunStatus.PENDING, index=True, sa_type=EnumText(RunStatus))
    plan_json: str | None = None
    result_json: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    escalations: int = 0
    seconds: float = 0.0
    owner_pid: int | None = None
    created_at: datetime = Field(default_factory=now, index=True)
    updated_at: datetime = Field(default_factory=now)


class Step(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("run_id", "step_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    step_id: str
    specialist: str
    instruction: str = ""
    status: StepStatus = Field(default=StepStatus.DONE, sa_type=EnumText(StepStatus))
    input_json: str = "{}"
    output_json: str | None = None
    confidence: float | None = None
    first_confidence: float | None = None
    evidence_json: str = "[]"
    answered_by: AnsweredBy | None = Field(default=None, sa_type=EnumText(AnsweredBy))
    model: str | None = None
    error: str | None = None
    started_at: datetime = Field(default_factory=now)
    finished_at: datetime | None = None


class ModelCall(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    step_id: str | None = None
    model: str
    request_json: str
    reply_json: str | None = None
    error: str | None = None
    error_type: str | None = None
    raw_text: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    confidence: float | None = None
    created_at: datetime = Field(default_factory=now, index=True)


class EscalationRow(SQLModel, table=True):
    """A rung taken, as stored (the ladder's record is `shoal.agents.escalation.Escalation`)."""

    __tablename__ = "escalation"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    step_id: str | None = None
    specialist: str
    rung: Rung = Field(sa_type=EnumText(Rung))
    reason: str
    confidence_before: float
    confidence_after: float | None = None
    model: str | None = None
    cost_usd: float = 0.0
    outcome: EscalationOutcome = Field(sa_type=EnumText(EscalationOutcome))
    at: datetime = Field(default_factory=now, index=True)
    # kind -> how many values [privacy] withheld from the frontier (JSON; never the values)
    redacted: dict[str, int] | None = Field(default=None, sa_type=JSON)


class Review(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    step_id: str
    specialist: str
    status: ReviewStatus = Field(default=ReviewStatus.PENDING, index=True, sa_type=EnumText(ReviewStatus))
    question_json: str = "{}"
    answer_json: str | None = None
    answered_by: str | None = None  # who answered: a person's name, not an `AnsweredBy`
    created_at: datetime = Field(default_factory=now)
    answered_at: datetime | None = None


class Ticket(SQLModel, table=True):
    """One support ticket of a triage batch, keyed by its id within its source (the export file it
    came from), so a batch can be re-run safely and two exports never overwrite each other."""

    __table_args__ = (Index("ix_ticket_source_key", "source", "key", unique=True),)

    id: str = Field(primary_key=True)  # ticket_id(source, key): stable, and short enough to show
    source: str = ""
    key: str = ""  # the caller's ticket id (or file name and line)
    line: int | None = None
    text_hash: str = ""
    run_id: str | None = Field(default=None, index=True)
    status: TicketStatus = Field(default=TicketStatus.PENDING, index=True, sa_type=EnumText(TicketStatus))
    queue: str | None = None
    result_json: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    text: str | None = None  # kept so that any worker can triage a queued ticket


class Spend(SQLModel, table=True):
    """Frontier money, written the moment a call returns: a process killed before it records the
    step must not let the daily budget forget what was already paid."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = None
    model: str = ""
    cost_usd: float = 0.0
    at: datetime = Field(default_factory=now, index=True)


class EmbeddingVector(SQLModel, table=True):
    """A text's embedding under one model, so re-training never embeds a text twice."""

    __tablename__ = "embedding"

    model: str = Field(primary_key=True)  # a ModelRef string, e.g. embedded:smollm2-135m
    key: str = Field(primary_key=True)  # sha256 of the text
    dim: int
    vector: bytes  # float32, little-endian
    created_at: datetime = Field(default_factory=now)


class Example(SQLModel, table=True):
    """A labelled text for a specialist: from a file, or an escalated answer (the flywheel)."""

    __table_args__ = (UniqueConstraint("specialist", "text_hash", "source"),)

    id: int | None = Field(default=None, primary_key=True)
    specialist: str = Field(index=True)
    text: str
    text_hash: str
    label: str
    source: str  # frontier human file
    run_id: str | None = None
    step_id: str | None = None
    created_at: datetime = Field(default_factory=now)


class Head(SQLModel, table=True):
    """A trained classifier head: one version per training, at most one active per specialist."""

    __table_args__ = (UniqueConstraint("specialist", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    specialist: str = Field(index=True)
    version: int
    active: bool = False
    embed_model: str
    labels_json: str = "[]"
    n_examples: int = 0
    data_hash: str = ""
    metrics_json: str = "{}"
    blob: bytes  # the head itself (npz), so the database stays the one file to copy
    created_at: datetime = Field(default_factory=now)


class Work(SQLModel, table=True):
    """An item of the work queue, leased by one worker at a time (see `shoal.engine.queue`)."""

    __table_args__ = (Index("ix_work_status", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: WorkKind = Field(sa_type=EnumText(WorkKind))
    ticket_id: str | None = None
    run_id: str | None = Field(default=None, index=True)
    payload: str = "{}"  # JSON: what the worker needs (a ticket's source, key, line, text)
    status: WorkStatus = Field(default=WorkStatus.QUEUED, sa_type=EnumText(WorkStatus))
    lease_owner: str | None = None  # the worker's id
    lease_expires_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)


class Worker(SQLModel, table=True):
    """A worker process and its heartbeat (`shoal workers` lists them)."""

    id: str = Field(primary_key=True)  # host:pid:random
    host: str
    pid: int
    status: WorkerStatus = Field(default=WorkerStatus.IDLE, sa_type=EnumText(WorkerStatus))
    current: str | None = None  # what it works on, e.g. "ticket export.csv:T-1"
    done: int = 0
    failed: int = 0
    started_at: datetime = Field(default_factory=now)
    heartbeat_at: datetime = Field(default_factory=now)


class ApiToken(SQLModel, table=True):
    """A bearer token of `shoal serve`: only its SHA-256 is kept; revoked ones stay, marked."""

    __tablename__ = "api_token"
    __table_args__ = (Index("ix_api_token_name", "name", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    token_hash: str = Field(unique=True)
    prefix: str  # the token's first characters, to tell tokens apart in a list
    created_at: datetime = Field(default_factory=now)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class WebhookDelivery(SQLModel, table=True):
    """One POST of a ticket's result to one webhook URL, recorded before it is tried."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str | None = None
    event: str  # ticket.done, ticket.waiting
    url: str
    body: str  # the exact bytes signed and sent (UTF-8 JSON)
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=EnumText(DeliveryStatus))
    attempts: int = 0
    next_at: datetime = Field(default_factory=now)
    response_status: int | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=now)
    delivered_at: datetime | None = None


class Prompt(SQLModel, table=True):
    """A long prompt text kept once; model calls name it by `hash` (see `shoal.store.prompts`)."""

    hash: str = Field(primary_key=True)
    text: str
    created_at: datetime = Field(default_factory=now)


class Migration(SQLModel, table=True):
    __tablename__ = "shoal_migration"

    version: int = Field(primary_key=True)
    name: str
    applied_at: datetime = Field(default_factory=now)


def ticket_id(source: str, key: str) -> str:
    """The row id of a ticket: its key within its source, made unique across sources."""
    return hashlib.sha256(f"{source}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
