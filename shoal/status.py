"""Every status shoal writes, and the rungs of the escalation ladder, as `StrEnum`s.

One place for the words the store, the graph, the ladder, the CLI and the TUI share, so they
cannot drift apart. A member is a `str` equal to its value (`RunStatus.DONE == "done"`), and the
store keeps the value in a plain VARCHAR column: databases written before these enums read the
same.

A leaf module: it imports nothing from shoal, so anything may import it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AnsweredBy",
    "DeliveryStatus",
    "EscalationOutcome",
    "LadderStatus",
    "ReviewStatus",
    "RunStatus",
    "Rung",
    "StepStatus",
    "TicketStatus",
    "WorkKind",
    "WorkStatus",
    "WorkerStatus",
]


class RunStatus(StrEnum):
    """A run (`run.status`): waiting = paused on a person's review; stopped = interrupted
    (Ctrl-C, cancellation, an unexpected error) with its finished steps kept for `shoal resume`."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


class StepStatus(StrEnum):
    """A plan step (`step.status`): waiting = its answer waits on a person's review; pending =
    not started, because a step it reads waits (never stored on a step row: a ticket's field
    shows it, e.g. the reply while the intent waits for a person)."""

    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"
    PENDING = "pending"


class TicketStatus(StrEnum):
    """A ticket of a triage batch (`ticket.status`): rejected = the row could not be a ticket
    (no text, a duplicate id, unreadable), so no run was started for it."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"
    REJECTED = "rejected"


class ReviewStatus(StrEnum):
    """A decision put to a person (`review.status`): pending until answered."""

    PENDING = "pending"
    ANSWERED = "answered"


class Rung(StrEnum):
    """A rung of the escalation ladder above the specialist itself."""

    RESAMPLE = "resample"
    FRONTIER = "frontier"
    HUMAN = "human"


class EscalationOutcome(StrEnum):
    """What one rung gave (`escalation.outcome`): skipped = the frontier was not asked (no key,
    budget spent); pending = the human rung waits for an answer."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    PENDING = "pending"


class AnsweredBy(StrEnum):
    """Who gave a step's answer (`step.answered_by`): unverified = the ladder ran out of rungs
    and the best answer below threshold was kept (no human rung), marked as nobody's."""

    SPECIALIST = "specialist"
    RESAMPLE = "resample"
    FRONTIER = "frontier"
    HUMAN = "human"
    UNVERIFIED = "unverified"


class LadderStatus(StrEnum):
    """How a climb of the ladder ended (`Outcome.status`): accepted = the specialist's own answer;
    escalated = a higher rung's; needs_human = waits for a person; failed = no usable answer."""

    ACCEPTED = "accepted"
    ESCALATED = "escalated"
    NEEDS_HUMAN = "needs_human"
    FAILED = "failed"


class WorkKind(StrEnum):
    """An item of the work queue (`work.kind`): a ticket to triage, or a run to resume (a person
    answered its review, or its worker died)."""

    TICKET = "ticket"
    RESUME = "resume"


class WorkStatus(StrEnum):
    """A work item (`work.status`): queued until a worker leases it; leased while one works on it
    (the lease expires if that worker dies, and the item is queued again); done; failed after too
    many attempts."""

    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


class WorkerStatus(StrEnum):
    """A worker process (`worker.status`): idle or busy while alive; stopped once it left cleanly
    (one that died stays busy or idle with a heartbeat that grows old)."""

    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"


class DeliveryStatus(StrEnum):
    """A webhook delivery (`webhook_delivery.status`): pending until the receiver answers 2xx
    (retried with backoff meanwhile); delivered; failed after the last attempt."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
