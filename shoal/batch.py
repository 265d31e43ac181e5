"""What a batch of tickets shares while it runs: whether the model server is answering.

Without it, a 30 s outage drained the queue into failures: every worker took the next ticket,
failed it a second after its first refused connection, and took the next. With it, the first
worker to see the server gone pauses the batch (no worker starts a new ticket) and retries its
own ticket with backoff until the server answers or `wait_s` has passed; then the batch goes on,
or fails what it must fail at once rather than one window per ticket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Outage:
    MAX_DELAY_S = 30.0

    def __init__(self, wait_s: float, *, on_pause: Callable[[str, float], None] | None = None) -> None:
        self.wait_s = wait_s
        self.on_pause = on_pause
        self._up = asyncio.Event()
        self._up.set()
        self._since: float | None = None
        self._gave_up = False
        self._delay = 1.0

    async def ready(self) -> None:
        """Wait, before starting a ticket, while another worker is waiting out an outage."""
        await self._up.wait()

    def recovered(self) -> None:
        """A ticket got through: the server answers (again)."""
        self._since = None
        self._gave_up = False
        self._delay = 1.0
        self._up.set()

    async def wait(self, reason: str) -> bool:
        """After a ticket failed for want of a server: pause, then True to retry it; False once
        the outage has lasted `wait_s` (and, until a ticket gets through, at once)."""
        if self._gave_up:
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        left = self.wait_s - (now - self._since)
        if left <= 0:
            self._gave_up = True
            self._up.set()  # the others go on, and fail fast, until the server is back
            return False
        self._up.clear()
        delay = min(self._delay, left)
        self._delay = min(self._delay * 2, self.MAX_DELAY_S)
        if self.on_pause is not None:
            self.on_pause(reason, delay)
        await asyncio.sleep(delay)
        return True
