"""The triage driver: each ticket of a batch through its run, the ticket's row kept in step with it.

A ticket is a run of the fixed ticket plan plus a row in the `ticket` table (its source, key,
status, queue and fields). This module owns that row; the engine owns runs and hands this driver
the two things it needs from it (start or resume a run). A batch never stops for one ticket: any
failure fails that ticket with its reason, and an unreachable model server pauses the batch
instead of draining it into failures (`shoal.batch.Outage`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from shoal.batch import Outage
from shoal.config import Settings
from shoal.errors import PlanError, ShoalError, StoreError, TaskError, TransientModelError
from shoal.inputs import check_text
from shoal.notify import record_deliveries
from shoal.status import AnsweredBy, RunStatus, StepStatus, TicketStatus
from shoal.store.db import Store
from shoal.store.tables import Step
from shoal.tickets.files import BadRow, TicketRow, text_hash
from shoal.tickets.plan import TICKET_PLAN, route

WORKFLOW = "tickets"


class TicketOutcome(BaseModel):
    key: str
    line: int | None = None
    status: TicketStatus
    run_id: str | None = None
    queue: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    skipped: bool = False
    escalated: list[str] = Field(default_factory=list)
    reviews: list[int] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    # failed for want of a model server (worth retrying once it is back), not for the ticket itself
    transient: bool = Field(default=False, exclude=True)


class Runs(Protocol):
    """What triage needs of the engine: start a run's graph, and resume one."""

    def drive(
        self, run_id: str, state: dict[str, Any] | None, workflow: str, *, fresh: bool = False
    ) -> Awaitable[object]: ...

    def resume(self, run_id: str) -> Awaitable[object]: ...


def ticket_fields(steps: Iterable[Step]) -> dict[str, dict[str, Any]]:
    """A ticket's fields from its step rows: output, confidence, who answered, status. A field
    not started yet (it reads one that waits for a person) is there too, pending, so every
    ticket has every field."""
    found = {
        step.step_id: {
            # a waiting field keeps the models' best answer; its status says nobody vouched for it yet
            "output": json.loads(step.output_json) if step.output_json else None,
            "confidence": step.confidence,
            "answered_by": step.answered_by,
            "status": step.status,
        }
        for step in steps
    }
    pending = {"output": None, "confidence": None, "answered_by": None, "status": StepStatus.PENDING}
    return {step["id"]: found.get(step["id"], dict(pending)) for step in TICKET_PLAN["steps"]} | found


class TicketDesk:
    def __init__(self, store: Store, settings: Settings, runs: Runs) -> None:
        self.store = store
        self.settings = settings
        self.runs = runs

    async def triage(
        self,
        rows: Iterable[TicketRow | BadRow],
        *,
        source: str = "",
        concurrency: int = 1,
        force: bool = False,
        on_ticket: Callable[[TicketOutcome], None] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> list[TicketOutcome]:
        """A batch, `concurrency` tickets at a time, each saved as it finishes.

        `source` names the export the rows come from (its absolute path, say): ticket ids are
        unique within it. While the model server is unreachable the batch pauses and retries
        for `[tickets] outage_wait_s` before a ticket fails."""
        if concurrency < 1:
            raise TaskError("concurrency must be at least 1")
        queue: asyncio.Queue[TicketRow | BadRow | None] = asyncio.Queue(maxsize=concurrency * 2)
        outcomes: list[TicketOutcome] = []
        outage = Outage(self.settings.tickets.outage_wait_s, on_pause=on_pause)

        async def worker() -> None:
            while (row := await queue.get()) is not None:
                await outage.ready()  # not before a retry: the worker waiting out an outage retries
                outcome = await self._through_outage(row, source, force, outage)
                outcomes.append(outcome)
                if on_ticket is not None:
                    on_ticket(outcome)

        async def produce() -> None:
            for row in rows:
                await queue.put(row)
            for _ in range(concurrency):
                await queue.put(None)

        # one group: if a worker dies of something triage_ticket could not catch, the producer is
        # cancelled with it instead of waiting forever on a full queue
        tasks = [asyncio.create_task(produce()), *(asyncio.create_task(worker()) for _ in range(concurrency))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return sorted(outcomes, key=lambda o: (o.line or 0, o.key))

    async def _through_outage(self, row: TicketRow | BadRow, source: str, force: bool, outage: Outage) -> TicketOutcome:
        while True:
            outcome = await self.triage_ticket(row, source=source, force=force)
            if not outcome.transient:
                outage.recovered()
                return outcome
            if not await outage.wait(outcome.error or "the model server is unreachable"):
                outcome.error = f"{outcome.error} (still failing after {outage.wait_s:g}s of retries)"
                return outcome

    async def triage_ticket(self, row: TicketRow | BadRow, *, source: str = "", force: bool = False) -> TicketOutcome:
        """Triage one ticket, or report why it cannot be; safe to call again for the same key.

        Never raises for a problem of this ticket: whatever goes wrong fails the ticket with its
        reason, so a batch goes on (KeyboardInterrupt and cancellation still stop it)."""
        store = self.store
        if isinstance(row, BadRow):
            await store.offload(
                store.put_ticket,
                source,
                row.key,
                line=row.line,
                status=TicketStatus.REJECTED,
                error=row.reason,
                run_id=None,
            )
            return TicketOutcome(key=row.key, line=row.line, status=TicketStatus.REJECTED, error=row.reason)
        try:
            skipped = await self._triage_row(row, source, force)
        except Exception as exc:  # one ticket's failure, whatever it is, is that ticket's alone
            reason = str(exc) if isinstance(exc, ShoalError | PlanError) else f"{type(exc).__name__}: {exc}"
            await store.offload(store.put_ticket, source, row.key, status=TicketStatus.FAILED, error=reason)
            outcome = await store.offload(self.outcome, source, row.key)
            outcome.transient = isinstance(exc, TransientModelError)
            return outcome
        return await store.offload(self.outcome, source, row.key, skipped=skipped)

    async def _triage_row(self, row: TicketRow, source: str, force: bool) -> bool:
        """Run (or resume, or repair) one ticket; True when it was already finished."""
        store = self.store
        digest = text_hash(row.text)
        existing = await store.offload(store.get_ticket, source, row.key)
        same = existing is not None and existing.text_hash == digest and existing.run_id is not None
        if existing is not None and same and not force:
            assert existing.run_id is not None
            if existing.status in (TicketStatus.DONE, TicketStatus.WAITING):
                return True
            run = await store.offload(store.get_run, existing.run_id)
            if run is not None and run.status in (RunStatus.DONE, RunStatus.WAITING):
                # killed after its run finished but before the ticket was written: repair, no calls
                await store.offload(self.finish, run.id, run.status)
                return False
            if run is not None:
                await self.runs.resume(existing.run_id)  # finished steps are reused, not re-run
                return False
        text = check_text(row.text, self.settings.tickets.max_chars, what="text")
        run_id = uuid.uuid4().hex[:12]
        # the ticket names its run before the run exists: killed in between, the next pass finds no
        # such run and starts one; the other order left a run no ticket points at, forever running
        await store.offload(
            store.put_ticket, source, row.key, line=row.line, text_hash=digest, run_id=run_id,
            status=TicketStatus.RUNNING, queue=None, result_json=None, error=None,
        )  # fmt: skip
        await store.offload(store.create_run, run_id, text, workflow=WORKFLOW, plan_json=json.dumps(TICKET_PLAN))
        await self.runs.drive(run_id, {"run_id": run_id, "task": text, "plan": TICKET_PLAN}, WORKFLOW, fresh=True)
        return False

    def outcome(self, source: str, key: str, *, skipped: bool = False) -> TicketOutcome:
        """A ticket as it stands in the store (runs on the store's thread)."""
        ticket = self.store.get_ticket(source, key)
        if ticket is None:
            raise StoreError(f"ticket {key} of {source} has no row")
        fields = json.loads(ticket.result_json) if ticket.result_json else {}
        run = self.store.get_run(ticket.run_id) if ticket.run_id else None
        reviews = [r.id or 0 for r in self.store.reviews(run_id=ticket.run_id)] if ticket.run_id else []
        return TicketOutcome(
            key=key,
            line=ticket.line,
            status=ticket.status,
            run_id=ticket.run_id,
            queue=ticket.queue,
            fields=fields,
            error=ticket.error,
            skipped=skipped,
            escalated=[
                n
                for n, f in fields.items()
                if f.get("answered_by") not in (AnsweredBy.SPECIALIST, None) or f.get("status") == StepStatus.WAITING
            ],
            reviews=reviews,
            tokens=0 if run is None or skipped else run.tokens_in + run.tokens_out,
            cost_usd=0.0 if run is None or skipped else run.cost_usd,
        )

    def finish(self, run_id: str, status: str) -> None:
        """Bring a ticket's row in step with its run that just ended (runs on the store's thread).

        `status` is the run's (a `RunStatus`): done and waiting carry over, anything else fails
        the ticket (a stopped run is resumed by triaging the ticket again)."""
        ticket = self.store.ticket_for_run(run_id)
        if ticket is None:
            return
        fields = ticket_fields(self.store.steps(run_id))
        outputs = {name: field.get("output") for name, field in fields.items()}
        queue = None
        ended = _TICKET_STATUS.get(RunStatus(status), TicketStatus.FAILED)
        if ended == TicketStatus.DONE:
            queue = route(self.settings, outputs)
        elif ended == TicketStatus.WAITING:
            queue = self.settings.tickets.review_queue
        ended_row = self.store.put_ticket(
            ticket.source,
            ticket.key,
            status=ended,
            queue=queue,
            result_json=json.dumps(fields, ensure_ascii=False),
            error=None if ended != TicketStatus.FAILED else (self.store.get_run(run_id) or ticket).error,
        )
        record_deliveries(self.store, self.settings.serve, ended_row)  # webhooks, right after the row


# what a ticket becomes when its run ends; any other end fails it
_TICKET_STATUS = {RunStatus.DONE: TicketStatus.DONE, RunStatus.WAITING: TicketStatus.WAITING}


__all__: Sequence[str] = ["WORKFLOW", "TicketDesk", "TicketOutcome", "ticket_fields"]
