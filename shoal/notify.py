"""Webhooks: a ticket's result POSTed to each URL in `[serve] webhooks` when the ticket ends done
or waiting for a person, signed, retried with backoff, and every attempt recorded.

Delivery is an outbox. `record_deliveries` writes one `webhook_delivery` row per URL right after
the ticket's own row (from `TicketDesk.finish`, whatever process triaged the ticket); a
`Deliverer` (run by `shoal serve`, usable from any worker) claims due rows, POSTs them and records
how it went. A receiver that is down for minutes, or a shoal that restarts, loses nothing: the
rows wait in the database until delivered or out of attempts. Delivery is at least once: a
receiver dedupes on `X-Shoal-Delivery`.

Signature: `X-Shoal-Signature: sha256=<hex>` is the HMAC-SHA256, keyed with the secret in the
environment variable `[serve] secret_env` names (`SHOAL_WEBHOOK_SECRET`), of
`"{X-Shoal-Timestamp}.{body}"`; `verify` is the receiver's side of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shoal.status import TicketStatus
from shoal.store.tables import Ticket, WebhookDelivery

if TYPE_CHECKING:
    import httpx

    from shoal.config import ServeSettings
    from shoal.store.db import Store

log = logging.getLogger("shoal.notify")

SIGNATURE_HEADER = "X-Shoal-Signature"
TIMESTAMP_HEADER = "X-Shoal-Timestamp"
EVENTS = {TicketStatus.DONE: "ticket.done", TicketStatus.WAITING: "ticket.waiting"}

# Deliverers running in this process, woken when a delivery is recorded here (no waiting for
# their next poll); called from whichever thread recorded it
_wakers: set[Callable[[], None]] = set()
_wakers_lock = threading.Lock()


def sign(secret: str, timestamp: str, body: str) -> str:
    """The `X-Shoal-Signature` value of `body` sent at `timestamp`."""
    message = f"{timestamp}.{body}".encode()
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: str, signature: str, *, tolerance_s: float = 300.0) -> bool:
    """Whether a delivery is shoal's: the signature matches (compared in constant time) and the
    timestamp is recent (an old request replayed is refused)."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def event_body(ticket: Ticket) -> str:
    """What a receiver gets for a ticket: its id (the caller's), status, queue, fields, run."""
    data = {
        "event": EVENTS[TicketStatus(ticket.status)],
        "ticket": {
            "id": ticket.key,
            "source": ticket.source,
            "status": str(ticket.status),
            "queue": ticket.queue,
            "run_id": ticket.run_id,
            "fields": json.loads(ticket.result_json) if ticket.result_json else {},
        },
        "at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def record_deliveries(store: Store, settings: ServeSettings, ticket: Ticket) -> int:
    """One pending delivery per configured URL for a ticket that just ended done or waiting;
    how many were recorded (none without URLs, or for any other end)."""
    if not settings.webhooks or ticket.status not in EVENTS:
        return 0
    body = event_body(ticket)
    event = EVENTS[TicketStatus(ticket.status)]
    rows = [{"ticket_id": ticket.id, "event": event, "url": url, "body": body} for url in settings.webhooks]
    store.add_deliveries(rows)
    with _wakers_lock:
        wakers = list(_wakers)
    for wake in wakers:
        wake()
    return len(settings.webhooks)


def retry_delay(settings: ServeSettings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed try: doubling from `retry_initial_s`."""
    return float(min(settings.retry_initial_s * 2 ** max(attempts - 1, 0), settings.retry_max_s))


class Deliverer:
    """Sends due deliveries until stopped: claims a few rows, POSTs them at once, records each
    attempt, then sleeps until the next row falls due or a new one is recorded here."""

    def __init__(
        self,
        store: Store,
        settings: ServeSettings,
        *,
        secret: str | None = None,
        batch: int = 20,
        poll_s: float = 2.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.secret = secret if secret is not None else os.environ.get(settings.secret_env, "")
        self.batch = batch
        self.poll_s = poll_s  # rows recorded by other processes are seen within this
        self.sent = 0
        if not self.secret:
            log.warning("%s is not set: webhooks go out unsigned", settings.secret_env)

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def waker() -> None:
            loop.call_soon_threadsafe(wake.set)

        with _wakers_lock:
            _wakers.add(waker)
        try:
            async with httpx.AsyncClient(timeout=self.settings.delivery_timeout_s) as client:
                while not stop.is_set():
                    wake.clear()
                    try:
                        sent = await self.deliver_due(client)
                    except Exception:  # the database went away for a moment: log, try again later
                        log.exception("webhook delivery pass failed")
                        sent = 0
                    if sent:
                        continue  # there may be more due
                    await wait_either(stop, wake, await self._idle_s())
        finally:
            with _wakers_lock:
                _wakers.discard(waker)

    async def _idle_s(self) -> float:
        due = await self.store.offload(self.store.next_delivery_due)
        if due is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (due - datetime.now(UTC)).total_seconds()))

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One pass: the due rows claimed and tried; how many were tried."""
        lease_s = self.settings.delivery_timeout_s * 3
        claimed = await self.store.offload(self.store.claim_deliveries, limit=self.batch, lease_s=lease_s)
        if claimed:
            await asyncio.gather(*(self._attempt(client, row) for row in claimed))
        return len(claimed)

    async def _attempt(self, client: httpx.AsyncClient, row: WebhookDelivery) -> None:
        import httpx

        assert row.id is not None
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "shoal-webhook",
            "X-Shoal-Event": row.event,
            "X-Shoal-Delivery": str(row.id),
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, row.body)
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(row.url, content=row.body.encode(), headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        delivered = error is None
        retry_at = None
        if not delivered and row.attempts < self.settings.max_attempts:
            retry_at = datetime.now(UTC) + timedelta(seconds=retry_delay(self.settings, row.attempts))
        if delivered:
            self.sent += 1
        elif retry_at is None:
            log.warning("webhook %s to %s failed for good after %d attempts: %s", row.id, row.url, row.attempts, error)
        await self.store.offload(
            self.store.settle_delivery,
            row.id,
            delivered=delivered,
            response_status=status,
            error=error,
            retry_at=retry_at,
        )


async def wait_either(stop: asyncio.Event, wake: asyncio.Event, within_s: float) -> None:
    """Wait until stopped, woken, or `within_s` seconds have passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
