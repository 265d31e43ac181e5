"""`shoal worker`: a process that takes work from the database's queue and does it, as many of
them as the work needs, on as many machines as reach the database.

Each item is held under a lease renewed while it runs. Ctrl-C (or `stop`) gives the items in
hand back to the queue at once; a worker killed outright stops renewing, and once its lease
expires another worker takes the item and resumes its run from the finished steps the store
kept (no finished step's model call is paid twice). A model server that is down gives the item
back and makes this worker wait before it asks again, rather than failing tickets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal.config import WorkerSettings
from shoal.status import TicketStatus, WorkerStatus, WorkKind, WorkStatus
from shoal.store.tables import Ticket, Work
from shoal.tickets.files import TicketRow

if TYPE_CHECKING:
    from shoal.engine.facade import Shoal

MAX_OUTAGE_WAIT_S = 30.0


@dataclass
class WorkEvent:
    """One item started or ended by this worker, for a face to show."""

    item: int
    what: str  # e.g. "ticket T-17 of export.csv", "resume run 3fa2c1"
    status: WorkStatus | None  # None when it starts; done/failed/queued (given back) when it ends
    detail: str = ""


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    given_back: int = 0
    events: list[WorkEvent] = field(default_factory=list)


class Worker:
    """Takes items from the queue until stopped (or, with `drain`, until none is left)."""

    def __init__(
        self,
        shoal: Shoal,
        settings: WorkerSettings | None = None,
        *,
        on_event: Callable[[WorkEvent], None] | None = None,
    ) -> None:
        self.shoal = shoal
        self.store = shoal.store
        self.settings = settings or shoal.settings.workers
        self.on_event = on_event
        self.id = ""
        self.stats = WorkerStats()
        self._current: dict[int, str] = {}
        self._outage_s = 0.0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for work now rather than at the next poll (new work was just queued here)."""
        self._wake.set()

    async def run(self, *, stop: asyncio.Event | None = None, drain: bool = False) -> WorkerStats:
        stop = stop or asyncio.Event()
        self.id = await self.store.offload(self.store.register_worker)
        beat = asyncio.create_task(self._heartbeats(stop))
        try:
            slots = [self._slot(stop, drain) for _ in range(self.settings.concurrency)]
            await asyncio.gather(*slots)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            stopped = self.store.offload(
                self.store.heartbeat, self.id, WorkerStatus.STOPPED, done=self.stats.done, failed=self.stats.failed
            )
            await asyncio.shield(stopped)
        return self.stats

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        every = min(5.0, self.settings.lease_s / 4)
        while not stop.is_set():
            status = WorkerStatus.BUSY if self._current else WorkerStatus.IDLE
            current = next(iter(self._current.values()), None)
            await self.store.offload(
                self.store.heartbeat, self.id, status, current=current, done=self.stats.done, failed=self.stats.failed
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _slot(self, stop: asyncio.Event, drain: bool) -> None:
        while not stop.is_set():
            item = await self.store.offload(
                self.store.lease, self.id, lease_s=self.settings.lease_s, max_attempts=self.settings.max_attempts
            )
            if item is None:
                if drain and not await self._work_left():
                    return
                await self._idle(stop)
                continue
            await self._hold(item, stop)
            if self._outage_s:  # the model server is down: wait before asking for more work
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._outage_s)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait a poll interval, or less if stopped or woken."""
        self._wake.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=self.settings.poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _work_left(self) -> bool:
        counts = await self.store.offload(self.store.work_counts)
        return bool(counts.get(WorkStatus.QUEUED) or counts.get(WorkStatus.LEASED))

    async def _hold(self, item: Work, stop: asyncio.Event) -> None:
        """Do one item under its lease: renewed while it runs, given back if stopped or lost."""
        assert item.id is not None
        ticket = None
        if item.kind == WorkKind.TICKET:  # read once: it names the item and is the work
            ticket = await self.store.offload(self.store.get_ticket_by_id, item.ticket_id or "")
        what = _describe(item, ticket)
        self._current[item.id] = what
        self._emit(WorkEvent(item.id, what, None))
        work = asyncio.create_task(self._do(item, ticket))
        renewing = asyncio.create_task(self._renew(item.id, work))
        stopping = asyncio.create_task(stop.wait())
        try:
            try:
                await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the worker itself is cancelled: give the item back
                stop.set()
            if not work.done():  # stopped: the run keeps its finished steps, the item goes back
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
                await self._settle(item.id, what, WorkStatus.QUEUED, "given back: this worker stopped")
                return
            if work.cancelled():  # the lease was lost: another worker holds the item now
                self._emit(WorkEvent(item.id, what, WorkStatus.QUEUED, "lease lost to another worker"))
                return
            status, detail = work.result() if work.exception() is None else (WorkStatus.FAILED, _why(work))
            await self._settle(item.id, what, status, detail)
        finally:
            for task in (renewing, stopping):
                task.cancel()
            self._current.pop(item.id, None)

    async def _renew(self, item_id: int, work: asyncio.Task[tuple[WorkStatus, str]]) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            held = await self.store.offload(self.store.renew, item_id, self.id, lease_s=self.settings.lease_s)
            if not held:
                work.cancel()
                return

    async def _settle(self, item_id: int, what: str, status: WorkStatus, detail: str) -> None:
        error = detail if status != WorkStatus.DONE else None
        settled = await asyncio.shield(self.store.offload(self.store.settle, item_id, self.id, status, error=error))
        if not settled:
            detail = "its lease had expired; another worker holds it"
        elif status == WorkStatus.DONE:
            self.stats.done += 1
        elif status == WorkStatus.FAILED:
            self.stats.failed += 1
        else:
            self.stats.given_back += 1
        self._emit(WorkEvent(item_id, what, status, detail))

    def _emit(self, event: WorkEvent) -> None:
        self.stats.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    async def _do(self, item: Work, ticket: Ticket | None) -> tuple[WorkStatus, str]:
        """The item's work; its status and a word on how it went."""
        self._outage_s = 0.0
        if item.kind == WorkKind.RESUME:
            report = await self.shoal.resume(item.run_id or "")
            return WorkStatus.DONE, f"run {report.status}"
        if ticket is None or ticket.text is None:
            return WorkStatus.FAILED, "the ticket's row (or its text) is gone"
        force = bool(json.loads(item.payload).get("force")) and item.attempts == 1  # a retry resumes
        row = TicketRow(key=ticket.key, line=ticket.line or 0, text=ticket.text)
        outcome = await self.shoal.triage_ticket(row, source=ticket.source, force=force)
        if outcome.transient:
            self._outage_s = min(MAX_OUTAGE_WAIT_S, max(self.settings.poll_s, 2.0) * 2**item.attempts)
            return WorkStatus.QUEUED, outcome.error or "the model server is unreachable"
        if outcome.status == TicketStatus.FAILED:
            return WorkStatus.FAILED, outcome.error or "failed"
        return WorkStatus.DONE, f"ticket {outcome.status}" + (f" → {outcome.queue}" if outcome.queue else "")


def _describe(item: Work, ticket: Ticket | None) -> str:
    if item.kind == WorkKind.RESUME:
        return f"resume run {item.run_id}"
    return f"ticket {ticket.key} of {ticket.source}" if ticket is not None else f"ticket {item.ticket_id}"


def _why(task: asyncio.Task[tuple[WorkStatus, str]]) -> str:
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc is not None else "failed"
