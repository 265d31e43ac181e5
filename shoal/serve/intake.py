"""Triage of the tickets callers submit, inside the server process: the one place to swap for
the database work queue (`shoal worker` processes) when it lands.

The database is the queue already: a submitted ticket is a `pending` row holding its text, so
nothing is lost when the server stops. `Intake` takes the oldest unfinished rows of the API's
source, up to `[serve] concurrency` at a time, through `Shoal.triage_ticket` (which resumes a
ticket whose run had started). It looks again when woken by a submission, when a ticket ends,
and every few seconds; at start it finds what a previous server left pending or running.
One `shoal serve` per database until the work queue lands: two would triage the same rows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shoal.notify import wait_either
from shoal.tickets.files import TicketRow

if TYPE_CHECKING:
    from shoal.engine.facade import Shoal

SOURCE = "api"  # the ticket rows' source: ids are unique among the API's tickets

log = logging.getLogger("shoal.serve")


class Intake:
    def __init__(self, shoal: Shoal, concurrency: int, *, poll_s: float = 5.0) -> None:
        self.shoal = shoal
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.triaged = 0
        self._in_flight: set[str] = set()
        self._broken: set[str] = set()  # keys whose triage raised: not taken again until restart
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        store = self.shoal.store
        try:
            while not stop.is_set():
                self._wake.clear()
                room = self.concurrency - len(self._in_flight)
                if room > 0:
                    seen = len(self._in_flight) + len(self._broken)
                    rows = await store.offload(store.unfinished_tickets, SOURCE, limit=room + seen)
                    for ticket in rows:
                        skip = ticket.key in self._in_flight or ticket.key in self._broken
                        if skip or ticket.text is None or room <= 0:
                            continue
                        room -= 1
                        self._in_flight.add(ticket.key)
                        row = TicketRow(key=ticket.key, line=0, text=ticket.text)
                        task = asyncio.create_task(self._triage(row))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                await wait_either(stop, self._wake, self.poll_s)
        finally:
            for task in list(self._tasks):
                task.cancel()  # the run is recorded stopped; the next start resumes it
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _triage(self, row: TicketRow) -> None:
        try:
            outcome = await self.shoal.triage_ticket(row, source=SOURCE)
            self.triaged += 1
            if outcome.error:
                log.warning("ticket %s: %s", row.key, outcome.error)
        except Exception:  # triage_ticket fails the ticket itself; anything here is a bug to log
            self._broken.add(row.key)
            log.exception("ticket %s could not be triaged", row.key)
        finally:
            self._in_flight.discard(row.key)
            self._wake.set()
