"""The work queue in the database: items leased by workers on any machine, and the workers'
heartbeats. No coordinator: the database hands out each item to one worker at a time.

A lease is a promise for `lease_s` seconds, renewed while the worker works; a worker killed
with SIGKILL stops renewing, its lease expires, and the next worker to ask takes the item again
(its finished steps are in the store, so no paid model call is made twice). An item leased
`max_attempts` times without finishing fails, with the reason, instead of circling forever.

PostgreSQL hands out items with `SELECT ... FOR UPDATE SKIP LOCKED` (many workers never wait
on one another); SQLite, whose writers take turns anyway, in an immediate transaction.
A mixin of `Store`, like `shoal.store.learning`.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, or_, update
from sqlmodel import Session, col, select

from shoal.status import WorkerStatus, WorkKind, WorkStatus
from shoal.store.tables import Work, Worker, now


class WorkRecords:
    dialect: str

    def session(self) -> AbstractContextManager[Session]:  # provided by Store
        raise NotImplementedError

    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[Connection]:  # provided by Store
        raise NotImplementedError

    # --- items ----------------------------------------------------------------------------

    def enqueue(self, kind: WorkKind, payloads: Sequence[dict[str, Any]]) -> list[int]:
        """Queue items of one kind; each payload may name its `ticket_id` and `run_id`."""
        stamp = now()
        rows = [work_row(kind, p, stamp) for p in payloads]
        ids: list[int] = []
        with self.transaction() as connection:
            for row in rows:  # one by one: the ids are wanted, and a batch is a few hundred at most
                ids.append(int(connection.execute(insert(Work), row).inserted_primary_key[0]))  # type: ignore[index]
        return ids

    def open_work(self, *, ticket_ids: Sequence[str] = (), run_id: str | None = None) -> list[Work]:
        """Items not finished yet (queued or leased) of these tickets or of this run."""
        with self.session() as session:
            query = select(Work).where(col(Work.status).in_([WorkStatus.QUEUED, WorkStatus.LEASED]))
            if ticket_ids:
                query = query.where(col(Work.ticket_id).in_(list(ticket_ids)))
            if run_id is not None:
                query = query.where(Work.run_id == run_id)
            return list(session.exec(query.order_by(col(Work.id))).all())

    def lease(self, worker_id: str, *, lease_s: float, max_attempts: int) -> Work | None:
        """The oldest item no live worker holds, now leased to `worker_id`; None when there is none.

        An item whose lease expired is taken again (its worker died); one that has used its
        attempts is failed first, so a ticket that kills every worker cannot kill them all."""
        stamp = now()
        with self.transaction(exclusive=True) as connection:
            expired = (col(Work.status) == WorkStatus.LEASED) & (col(Work.lease_expires_at) < stamp)
            connection.execute(
                update(Work)
                .where(expired, col(Work.attempts) >= max_attempts)
                .values(
                    status=WorkStatus.FAILED,
                    updated_at=stamp,
                    error=f"leased {max_attempts} times without finishing: its workers died or hung "
                    "(see [workers] max_attempts)",
                )
            )
            due = select(Work.id).where(or_(col(Work.status) == WorkStatus.QUEUED, expired)).order_by(col(Work.id))
            if self.dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            chosen = connection.execute(due.limit(1)).scalar()
            if chosen is None:
                return None
            connection.execute(
                update(Work)
                .where(col(Work.id) == chosen)
                .values(
                    status=WorkStatus.LEASED,
                    lease_owner=worker_id,
                    lease_expires_at=stamp + timedelta(seconds=lease_s),
                    attempts=col(Work.attempts) + 1,
                    updated_at=stamp,
                )
            )
            row = connection.execute(select(Work).where(col(Work.id) == chosen)).one()
        return Work.model_validate(row._mapping)

    def renew(self, work_id: int, worker_id: str, *, lease_s: float) -> bool:
        """Extend a lease this worker still holds; False when it lost it (it expired and another
        worker took the item), so the work must stop."""
        stamp = now()
        with self.transaction() as connection:
            changed = connection.execute(
                update(Work)
                .where(_held(work_id, worker_id))
                .values(lease_expires_at=stamp + timedelta(seconds=lease_s), updated_at=stamp)
            ).rowcount
        return bool(changed)

    def settle(self, work_id: int, worker_id: str, status: WorkStatus, *, error: str | None = None) -> bool:
        """End a lease: the item done or failed, or queued again (given back, e.g. on Ctrl-C,
        without counting the attempt). False when the lease was no longer this worker's."""
        values: dict[str, Any] = {"status": status, "updated_at": now(), "error": error}
        if status == WorkStatus.QUEUED:
            values.update(lease_owner=None, lease_expires_at=None, attempts=col(Work.attempts) - 1)
        with self.transaction() as connection:
            changed = connection.execute(update(Work).where(_held(work_id, worker_id)).values(**values)).rowcount
        return bool(changed)

    def work_counts(self) -> dict[WorkStatus, int]:
        with self.session() as session:
            rows = session.exec(select(Work.status, func.count()).group_by(col(Work.status))).all()
        return {WorkStatus(status): int(n) for status, n in rows}

    # --- workers --------------------------------------------------------------------------

    def register_worker(self) -> str:
        """A new worker's row; its id names the host and process, so `shoal workers` says where it runs."""
        host = socket.gethostname()
        worker_id = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        with self.transaction() as connection:
            connection.execute(
                insert(Worker),
                Worker(id=worker_id, host=host, pid=os.getpid(), status=WorkerStatus.IDLE).model_dump(),
            )
        return worker_id

    def heartbeat(
        self, worker_id: str, status: WorkerStatus, *, current: str | None = None, done: int = 0, failed: int = 0
    ) -> None:
        with self.transaction() as connection:
            connection.execute(
                update(Worker)
                .where(col(Worker.id) == worker_id)
                .values(status=status, current=current, done=done, failed=failed, heartbeat_at=now())
            )

    def workers(self) -> list[Worker]:
        """Every worker, newest first (`shoal.engine.views.work_board` says which are live)."""
        with self.session() as session:
            return list(session.exec(select(Worker).order_by(col(Worker.started_at).desc())).all())


def work_row(kind: WorkKind, payload: dict[str, Any], stamp: datetime) -> dict[str, Any]:
    """A new, queued work item as a row; the payload may name its `ticket_id` and `run_id`."""
    return {
        "kind": kind,
        "ticket_id": payload.get("ticket_id"),
        "run_id": payload.get("run_id"),
        "payload": json.dumps(payload, ensure_ascii=False),
        "status": WorkStatus.QUEUED,
        "attempts": 0,
        "created_at": stamp,
        "updated_at": stamp,
    }


def _held(work_id: int, worker_id: str) -> Any:
    return (col(Work.id) == work_id) & (col(Work.lease_owner) == worker_id) & (col(Work.status) == WorkStatus.LEASED)
