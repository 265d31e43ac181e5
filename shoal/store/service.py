"""What `shoal serve` keeps in the store: API tokens (only their SHA-256), the tickets callers
submit over HTTP, and webhook deliveries (one row per POST to make, retried until delivered).

A delivery is claimed before it is sent: its `next_at` moves past the claim's lease, so another
process looking for due rows skips it while this one waits on the receiver, and a process killed
mid-send leaves a row that falls due again once the lease is over (delivered at least once).
PostgreSQL hands out due rows with `SELECT ... FOR UPDATE SKIP LOCKED`; SQLite, whose writers
take turns anyway, in an immediate transaction. A mixin of `Store`, like `shoal.store.learning`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, bindparam, func, insert, text, update
from sqlmodel import Session, col, select

from shoal.errors import StoreError
from shoal.status import DeliveryStatus, TicketStatus, WorkKind, WorkStatus
from shoal.store.queue import work_row
from shoal.store.tables import ApiToken, Ticket, WebhookDelivery, Work, now, ticket_id

TOKEN_PREFIX = "shoal_"


def new_token() -> str:
    """A bearer token: 32 random bytes, URL-safe, marked as shoal's so a leaked one is recognisable."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class ServiceRecords:
    dialect: str

    def session(self) -> AbstractContextManager[Session]:  # provided by Store
        raise NotImplementedError

    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[Connection]:  # provided by Store
        raise NotImplementedError

    # --- tokens ---------------------------------------------------------------------------

    def create_token(self, name: str) -> str:
        """A new token named `name`; returns the token itself, which is stored only as a hash."""
        token = new_token()
        with self.transaction() as connection:
            taken = connection.execute(select(ApiToken.id).where(ApiToken.name == name)).scalar()
            if taken is not None:
                raise StoreError(f"a token named '{name}' exists: revoke it or choose another name")
            connection.execute(
                insert(ApiToken),
                {"name": name, "token_hash": token_hash(token), "prefix": token[:10], "created_at": now()},
            )
        return token

    def api_tokens(self) -> list[ApiToken]:
        with self.session() as session:
            return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))).all())

    def revoke_token(self, name: str) -> ApiToken:
        with self.transaction() as connection:
            changed = connection.execute(
                update(ApiToken)
                .where(col(ApiToken.name) == name, col(ApiToken.revoked_at).is_(None))
                .values(revoked_at=now())
            ).rowcount
            row = connection.execute(select(ApiToken).where(ApiToken.name == name)).first()
        if row is None:
            raise StoreError(f"no token named '{name}': `shoal tokens list` shows them")
        if not changed:
            raise StoreError(f"token '{name}' was already revoked")
        return ApiToken.model_validate(row._mapping)

    def find_token(self, token: str) -> ApiToken | None:
        """The token's row (revoked or not) by the hash of what a caller presented."""
        with self.session() as session:
            return session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).first()

    def touch_token(self, token_id: int) -> None:
        with self.transaction() as connection:
            connection.execute(update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=now()))

    # --- tickets submitted over HTTP ------------------------------------------------------

    def submit_tickets(self, source: str, tickets: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Keep (key, text, text hash) tickets as pending rows; for each, whether it is new. A key
        already stored keeps its row (the caller's id makes a submission idempotent), also when
        two requests race with it: the unique (source, key) index decides, not a read."""
        stamp = now()
        statement = text(
            "INSERT INTO ticket (id, source, key, line, text_hash, status, text, created_at, updated_at) "
            "VALUES (:id, :source, :key, NULL, :text_hash, :status, :text, :at, :at) "
            "ON CONFLICT (source, key) DO NOTHING"
        ).bindparams(*_stamp("at"))
        created: list[bool] = []
        with self.transaction() as connection:
            for key, body, digest in tickets:
                row_id = ticket_id(source, key)
                values = {
                    "id": row_id,
                    "source": source,
                    "key": key,
                    "text_hash": digest,
                    "status": TicketStatus.PENDING.value,
                    "text": body,
                    "at": stamp,
                }
                new = connection.execute(statement, values).rowcount == 1
                if new:  # its work item in the same transaction: a ticket is never kept unqueued
                    connection.execute(insert(Work), _ticket_work(row_id, stamp))
                created.append(new)
        return created

    def enqueue_unqueued(self, source: str) -> int:
        """Queue `source`'s unfinished tickets that have no open work item (rows a server kept
        before submissions were queued); how many."""
        stamp = now()
        with self.transaction() as connection:
            open_items = select(Work.ticket_id).where(col(Work.status).in_([WorkStatus.QUEUED, WorkStatus.LEASED]))
            orphans = connection.execute(
                select(Ticket.id)
                .where(Ticket.source == source, col(Ticket.text).is_not(None))
                .where(col(Ticket.status).in_([TicketStatus.PENDING, TicketStatus.RUNNING]))
                .where(col(Ticket.id).not_in(open_items))
            ).scalars()
            rows = [_ticket_work(str(ticket), stamp) for ticket in orphans]
            if rows:
                connection.execute(insert(Work), rows)
        return len(rows)

    def unfinished_tickets(self, source: str, *, limit: int = 100) -> list[Ticket]:
        """Tickets of `source` not triaged to an end yet (pending or running), oldest first."""
        with self.session() as session:
            query = (
                select(Ticket)
                .where(Ticket.source == source)
                .where(col(Ticket.status).in_([TicketStatus.PENDING, TicketStatus.RUNNING]))
                .order_by(col(Ticket.created_at), col(Ticket.key))
                .limit(limit)
            )
            return list(session.exec(query).all())

    # --- webhook deliveries ---------------------------------------------------------------

    def add_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        """Record deliveries to make (dicts of ticket_id, event, url, body), due now."""
        if not rows:
            return
        stamp = now()
        with self.transaction() as connection:
            connection.execute(
                insert(WebhookDelivery),
                [
                    {"status": DeliveryStatus.PENDING, "attempts": 0, "next_at": stamp, "created_at": stamp, **row}
                    for row in rows
                ],
            )

    def claim_deliveries(self, *, limit: int, lease_s: float) -> list[WebhookDelivery]:
        """Up to `limit` due deliveries, each now counted as one more attempt and hidden from other
        processes for `lease_s` seconds (the time a send may take)."""
        stamp = now()
        with self.transaction(exclusive=True) as connection:
            due = (
                select(WebhookDelivery.id)
                .where(col(WebhookDelivery.status) == DeliveryStatus.PENDING, col(WebhookDelivery.next_at) <= stamp)
                .order_by(col(WebhookDelivery.next_at), col(WebhookDelivery.id))
                .limit(limit)
            )
            if self.dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            ids = [int(i) for i in connection.execute(due).scalars()]
            if not ids:
                return []
            connection.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(ids))
                .values(attempts=col(WebhookDelivery.attempts) + 1, next_at=stamp + timedelta(seconds=lease_s))
            )
            rows = connection.execute(
                select(WebhookDelivery).where(col(WebhookDelivery.id).in_(ids)).order_by(col(WebhookDelivery.id))
            ).all()
        return [WebhookDelivery.model_validate(row._mapping) for row in rows]

    def settle_delivery(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        response_status: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        """Record how an attempt went: delivered; pending again until `retry_at`; or (no
        `retry_at`) failed for good."""
        stamp = now()
        values: dict[str, Any] = {"response_status": response_status, "last_error": error}
        if delivered:
            values.update(status=DeliveryStatus.DELIVERED, delivered_at=stamp, last_error=None)
        elif retry_at is not None:
            values.update(status=DeliveryStatus.PENDING, next_at=retry_at)
        else:
            values.update(status=DeliveryStatus.FAILED)
        with self.transaction() as connection:
            connection.execute(update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).values(**values))

    def deliveries(self, *, ticket_id: str | None = None) -> list[WebhookDelivery]:
        with self.session() as session:
            query = select(WebhookDelivery).order_by(col(WebhookDelivery.id))
            if ticket_id is not None:
                query = query.where(WebhookDelivery.ticket_id == ticket_id)
            return list(session.exec(query).all())

    def delivery_counts(self) -> dict[str, int]:
        with self.session() as session:
            rows = session.exec(
                select(WebhookDelivery.status, func.count()).group_by(col(WebhookDelivery.status))
            ).all()
        return {str(status): int(n) for status, n in rows}

    def next_delivery_due(self) -> datetime | None:
        """When the earliest pending delivery falls due (UTC), or None when none waits."""
        with self.session() as session:
            found = session.exec(
                select(func.min(WebhookDelivery.next_at)).where(col(WebhookDelivery.status) == DeliveryStatus.PENDING)
            ).one()
        if found is None:
            return None
        return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def _stamp(*names: str) -> list[Any]:
    return [bindparam(name, type_=DateTime()) for name in names]


def _ticket_work(ticket: str, stamp: datetime) -> dict[str, Any]:
    """A work item that triages one ticket (as `shoal.engine.queue.enqueue_tickets` queues them)."""
    return work_row(WorkKind.TICKET, {"ticket_id": ticket, "run_id": None, "force": False}, stamp)
