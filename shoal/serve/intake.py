"""How tickets submitted over HTTP reach a worker: the database's work queue.

A submitted ticket is a `pending` row holding its text plus a work item, written in one
transaction (`Store.submit_tickets`), so nothing is lost when the server stops and any
`shoal worker` on any machine may triage it. The server runs a worker of its own as well
(`[serve] concurrency` items at once; `shoal serve --no-worker` leaves the work to the
`shoal worker` processes), woken by each submission instead of waiting for its next poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shoal.engine.worker import Worker

if TYPE_CHECKING:
    from shoal.engine.facade import Shoal

SOURCE = "api"  # the ticket rows' source: ids are unique among the API's tickets

log = logging.getLogger("shoal.serve")


class Intake:
    """The server's own worker (or none), and a wake-up for it when tickets arrive."""

    def __init__(self, shoal: Shoal, concurrency: int, *, work: bool = True) -> None:
        self.shoal = shoal
        self.worker: Worker | None = None
        if work:
            chosen = shoal.settings.workers.model_copy(update={"concurrency": concurrency})
            self.worker = Worker(shoal, chosen)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def run(self, stop: asyncio.Event) -> None:
        store = self.shoal.store
        # tickets a server before the work queue kept as pending rows without an item
        repaired = await store.offload(store.enqueue_unqueued, SOURCE)
        if repaired:
            log.info("queued %d submitted tickets that had no work item", repaired)
        if self.worker is not None:
            await self.worker.run(stop=stop)
