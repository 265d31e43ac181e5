"""What shoal learns from, in the store: embedding vectors (the cache heads and knowledge read),
labelled examples (the flywheel) and trained heads (their versions and the active one).

A mixin of `Store`, kept apart so the store's run and ticket records and its learning records
each stay small enough to read; it uses only the store's engine and sessions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, DateTime, LargeBinary, bindparam, func, insert, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from shoal.errors import StoreError
from shoal.store.tables import EmbeddingVector, Example, Head, now


class LearningRecords:
    engine: Engine

    def session(self) -> AbstractContextManager[Session]:  # provided by Store
        raise NotImplementedError

    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[Connection]:  # provided by Store
        raise NotImplementedError

    # --- embeddings -----------------------------------------------------------------------

    def cached_vectors(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Stored float32 vectors for the keys that have one (looked up in chunks: SQLite
        caps the number of bound parameters)."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        with self.session() as session:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                rows = session.exec(
                    select(EmbeddingVector.key, EmbeddingVector.vector).where(
                        EmbeddingVector.model == model, col(EmbeddingVector.key).in_(chunk)
                    )
                ).all()
                found.update((key, vector) for key, vector in rows)
        return found

    def cache_vectors(self, model: str, vectors: dict[str, bytes], dim: int) -> None:
        if not vectors:
            return
        rows = [{"model": model, "key": k, "dim": dim, "vector": v, "created_at": now()} for k, v in vectors.items()]
        with self.transaction() as connection:
            # two processes may embed the same text at once: the first row stays
            statement = text(
                "INSERT INTO embedding (model, key, dim, vector, created_at) "
                "VALUES (:model, :key, :dim, :vector, :created_at) ON CONFLICT (model, key) DO NOTHING"
            ).bindparams(bindparam("vector", type_=LargeBinary()), bindparam("created_at", type_=DateTime()))
            connection.execute(statement, rows)

    # --- labelled examples and trained heads ----------------------------------------------

    def add_examples(self, rows: Sequence[dict[str, Any]]) -> int:
        """Keep labelled texts (dicts of `Example` fields; text_hash is filled in)."""
        with self.transaction() as connection:
            upsert_examples(connection, rows)
        return len(rows)

    def examples(self, specialist: str) -> list[Example]:
        with self.session() as session:
            return list(
                session.exec(select(Example).where(Example.specialist == specialist).order_by(col(Example.id))).all()
            )

    def examples_since(self, specialist: str, after_id: int, *, source: str | None = None) -> list[Example]:
        """`specialist`'s examples kept after `after_id` (from `source` only, if given): what a
        long-lived reader has not seen yet, without reading the whole table again."""
        query = select(Example).where(Example.specialist == specialist, col(Example.id) > after_id)
        if source is not None:
            query = query.where(Example.source == source)
        with self.session() as session:
            return list(session.exec(query.order_by(col(Example.id))).all())

    def example_counts(self) -> dict[str, dict[str, int]]:
        """specialist -> source -> number of examples."""
        counts: dict[str, dict[str, int]] = {}
        with self.session() as session:
            rows = session.exec(
                select(Example.specialist, Example.source, func.count()).group_by(
                    col(Example.specialist), col(Example.source)
                )
            ).all()
        for specialist, source, n in rows:
            counts.setdefault(specialist, {})[source] = int(n)
        return counts

    def add_head(self, head: Head, *, activate: bool) -> Head:
        """Store a new head version (numbered here, under the write lock) and maybe activate it."""
        with self.transaction(exclusive=True) as connection:
            if connection.dialect.name == "postgresql":  # one numbering at a time per specialist
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": "head:" + head.specialist})
            latest = connection.execute(
                select(func.coalesce(func.max(Head.version), 0)).where(Head.specialist == head.specialist)
            ).scalar_one()
            head.version = int(latest) + 1
            head.active = activate
            if activate:
                connection.execute(update(Head).where(col(Head.specialist) == head.specialist).values(active=False))
            head.id = int(connection.execute(insert(Head), head.model_dump(exclude={"id"})).inserted_primary_key[0])  # type: ignore[index]
        return head

    def activate_head(self, specialist: str, version: int) -> Head:
        rows = self.heads(specialist)
        chosen = next((row for row in rows if row.version == version), None)
        if chosen is None:
            known = ", ".join(str(r.version) for r in rows) or "none"
            raise StoreError(f"{specialist} has no head version {version} (versions: {known})")
        with self.transaction() as connection:
            connection.execute(
                update(Head).where(col(Head.specialist) == specialist).values(active=col(Head.version) == version)
            )
        chosen.active = True
        return chosen

    def active_head(self, specialist: str) -> Head | None:
        with self.session() as session:
            return session.exec(select(Head).where(Head.specialist == specialist, col(Head.active))).first()

    def heads(self, specialist: str | None = None) -> list[Head]:
        """Every stored head, oldest version first."""
        with self.session() as session:
            query = select(Head).order_by(col(Head.specialist), col(Head.version))
            if specialist is not None:
                query = query.where(Head.specialist == specialist)
            return list(session.exec(query).all())


def upsert_examples(connection: Any, rows: Sequence[dict[str, Any]]) -> None:
    """The same text from the same source keeps its latest label (a person may correct one)."""
    if not rows:
        return
    statement = text(
        "INSERT INTO example (specialist, text, text_hash, label, source, run_id, step_id, created_at) "
        "VALUES (:specialist, :text, :text_hash, :label, :source, :run_id, :step_id, :created_at) "
        "ON CONFLICT (specialist, text_hash, source) DO UPDATE SET label = excluded.label, "
        "run_id = excluded.run_id, step_id = excluded.step_id, created_at = excluded.created_at"
    ).bindparams(bindparam("created_at", type_=DateTime()))
    connection.execute(
        statement,
        [
            {
                "run_id": None,
                "step_id": None,
                "created_at": now(),
                "text_hash": hashlib.sha256(row["text"].encode("utf-8", "surrogatepass")).hexdigest(),
                **row,
            }
            for row in rows
        ],
    )
