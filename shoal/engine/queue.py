"""Putting work on the database's queue: tickets to triage (`shoal triage FILE --enqueue`, the
API) and runs to resume once a person answered (`shoal review N --queue`). Workers
(`shoal.engine.worker`) take it from there, on any machine that reaches the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.errors import ShoalError
from shoal.inputs import check_text
from shoal.status import TicketStatus, WorkKind
from shoal.store.db import Store
from shoal.store.tables import ticket_id
from shoal.tickets.files import BadRow, TicketRow, text_hash


@dataclass
class Enqueued:
    """What `enqueue_tickets` did with each row of a batch."""

    queued: list[str] = field(default_factory=list)  # ticket keys now on the queue
    already_queued: list[str] = field(default_factory=list)  # an unfinished item holds them already
    already_done: list[str] = field(default_factory=list)  # same text, finished or waiting for a person
    rejected: list[str] = field(default_factory=list)  # rows that cannot be tickets (see their error)


def enqueue_tickets(
    store: Store, rows: Iterable[TicketRow | BadRow], *, source: str, max_chars: int, force: bool = False
) -> Enqueued:
    """Queue a batch: each ticket keeps its text in its row (any worker can triage it) and gets
    one work item. Safe to repeat: a ticket already queued, or already done with the same text,
    is not queued again (unless `force`); one whose text changed starts afresh."""
    result = Enqueued()
    for row in rows:
        if isinstance(row, BadRow):
            store.put_ticket(
                source, row.key, line=row.line, status=TicketStatus.REJECTED, error=row.reason, run_id=None
            )
            result.rejected.append(row.key)
            continue
        if len(row.text) > max_chars:
            reason = f"text is {len(row.text):,} characters, over [tickets] max_chars = {max_chars:,}"
            store.put_ticket(source, row.key, line=row.line, status=TicketStatus.REJECTED, error=reason, run_id=None)
            result.rejected.append(row.key)
            continue
        digest = text_hash(row.text)
        existing = store.get_ticket(source, row.key)
        same = existing is not None and existing.text_hash == digest
        if existing is not None and store.open_work(ticket_ids=[existing.id]) and same and not force:
            result.already_queued.append(row.key)
            continue
        if existing is not None and same and not force and existing.status in (TicketStatus.DONE, TicketStatus.WAITING):
            result.already_done.append(row.key)
            continue
        # a ticket whose text is unchanged keeps its run: the worker resumes it, paying for no
        # finished step again; a changed (or forced) one starts a new run
        keep_run = existing.run_id if existing is not None and same and not force else None
        store.put_ticket(
            source, row.key, line=row.line, text=row.text, text_hash=digest, status=TicketStatus.PENDING,
            run_id=keep_run, queue=None, result_json=None, error=None,
        )  # fmt: skip
        key = ticket_id(source, row.key)
        store.enqueue(WorkKind.TICKET, [{"ticket_id": key, "run_id": keep_run, "force": force}])
        result.queued.append(row.key)
    return result


def _unfit(text: str, max_chars: int) -> str | None:
    """Why a ticket's text cannot be triaged (the check triage makes, made before queueing)."""
    try:
        check_text(text, max_chars, what="text")
    except ShoalError as exc:
        return str(exc)
    return None


def enqueue_resume(store: Store, run_id: str) -> bool:
    """Queue a run to go on (a person answered its review); False when one is queued already."""
    if store.open_work(run_id=run_id):
        return False
    store.enqueue(WorkKind.RESUME, [{"run_id": run_id}])
    return True
