"""The store's schema, one numbered migration at a time, on SQLite and PostgreSQL alike.

Each migration states its own change in DDL and is frozen once released: it never reads today's
table models (`create_all` on them would make a new database differ from a migrated one the day
a column is added). A database records which versions it has in `shoal_migration` and gets the
rest when it is opened; `tests/test_migrations.py` builds a database at every past version,
fills it, migrates it and compares the result with a new one and with the models, on both engines.

DDL is written once for both engines; the few words they spell differently are placeholders:
`{id}` (an integer key the database numbers), `{ts}` (a timestamp without time zone, UTC by
convention) and `{blob}` (bytes).

To change the schema: append a function, add it to `MIGRATIONS` with the next number, change the
model in `tables.py` to match, and let the test say whether the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlalchemy import DateTime, bindparam, inspect, text
from sqlalchemy.engine import Connection

from shoal.errors import StoreError
from shoal.store.tables import now

_WORDS: Final = {
    "sqlite": {"id": "INTEGER NOT NULL", "ts": "DATETIME", "blob": "BLOB"},
    "postgresql": {"id": "SERIAL NOT NULL", "ts": "TIMESTAMP WITHOUT TIME ZONE", "blob": "BYTEA"},
}

# Any 64-bit number: the advisory lock two PostgreSQL clients take to migrate one at a time.
_PG_LOCK: Final = 0x5_40A1_0001


def ddl(connection: Connection, *statements: str) -> None:
    """Run DDL written with `{id}`, `{ts}` and `{blob}` in this engine's words."""
    words = _WORDS[connection.dialect.name]
    for statement in statements:
        connection.exec_driver_sql(statement.format(**words))


def _v1(connection: Connection) -> None:
    ddl(
        connection,
        "CREATE TABLE run (id VARCHAR NOT NULL, workflow VARCHAR NOT NULL, task VARCHAR NOT NULL, "
        "status VARCHAR NOT NULL, plan_json VARCHAR, result_json VARCHAR, error VARCHAR, "
        "tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, cost_usd FLOAT NOT NULL, "
        "model_calls INTEGER NOT NULL, escalations INTEGER NOT NULL, seconds FLOAT NOT NULL, "
        "owner_pid INTEGER, created_at {ts} NOT NULL, updated_at {ts} NOT NULL, PRIMARY KEY (id))",
        "CREATE INDEX ix_run_created_at ON run (created_at)",
        "CREATE INDEX ix_run_status ON run (status)",
        "CREATE TABLE modelcall (id {id}, run_id VARCHAR, step_id VARCHAR, model VARCHAR NOT NULL, "
        "request_json VARCHAR NOT NULL, reply_json VARCHAR, error VARCHAR, error_type VARCHAR, raw_text VARCHAR, "
        "tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, latency_s FLOAT NOT NULL, "
        "cost_usd FLOAT NOT NULL, confidence FLOAT, created_at {ts} NOT NULL, PRIMARY KEY (id))",
        "CREATE INDEX ix_modelcall_run_id ON modelcall (run_id)",
        "CREATE INDEX ix_modelcall_created_at ON modelcall (created_at)",
        "CREATE TABLE escalation (id {id}, run_id VARCHAR, step_id VARCHAR, specialist VARCHAR NOT NULL, "
        "rung VARCHAR NOT NULL, reason VARCHAR NOT NULL, confidence_before FLOAT NOT NULL, "
        "confidence_after FLOAT, model VARCHAR, cost_usd FLOAT NOT NULL, outcome VARCHAR NOT NULL, "
        "at {ts} NOT NULL, PRIMARY KEY (id))",
        "CREATE INDEX ix_escalation_run_id ON escalation (run_id)",
        "CREATE INDEX ix_escalation_at ON escalation (at)",
        "CREATE TABLE step (id {id}, run_id VARCHAR NOT NULL, step_id VARCHAR NOT NULL, "
        "specialist VARCHAR NOT NULL, instruction VARCHAR NOT NULL, status VARCHAR NOT NULL, "
        "input_json VARCHAR NOT NULL, output_json VARCHAR, confidence FLOAT, first_confidence FLOAT, "
        "evidence_json VARCHAR NOT NULL, answered_by VARCHAR, model VARCHAR, error VARCHAR, "
        "started_at {ts} NOT NULL, finished_at {ts}, PRIMARY KEY (id), UNIQUE (run_id, step_id), "
        "FOREIGN KEY (run_id) REFERENCES run (id))",
        "CREATE INDEX ix_step_run_id ON step (run_id)",
        "CREATE TABLE review (id {id}, run_id VARCHAR NOT NULL, step_id VARCHAR NOT NULL, "
        "specialist VARCHAR NOT NULL, status VARCHAR NOT NULL, question_json VARCHAR NOT NULL, "
        "answer_json VARCHAR, answered_by VARCHAR, created_at {ts} NOT NULL, answered_at {ts}, "
        "PRIMARY KEY (id), FOREIGN KEY (run_id) REFERENCES run (id))",
        "CREATE INDEX ix_review_run_id ON review (run_id)",
        "CREATE INDEX ix_review_status ON review (status)",
    )


def _v2(connection: Connection) -> None:
    ddl(
        connection,
        "CREATE TABLE ticket (id VARCHAR NOT NULL, source VARCHAR NOT NULL, line INTEGER, "
        "text_hash VARCHAR NOT NULL, run_id VARCHAR, status VARCHAR NOT NULL, queue VARCHAR, "
        "result_json VARCHAR, error VARCHAR, created_at {ts} NOT NULL, updated_at {ts} NOT NULL, "
        "PRIMARY KEY (id))",
        "CREATE INDEX ix_ticket_run_id ON ticket (run_id)",
        "CREATE INDEX ix_ticket_status ON ticket (status)",
    )


def _v3(connection: Connection) -> None:
    ddl(
        connection,
        "CREATE TABLE embedding (model VARCHAR NOT NULL, key VARCHAR NOT NULL, dim INTEGER NOT NULL, "
        "vector {blob} NOT NULL, created_at {ts} NOT NULL, PRIMARY KEY (model, key))",
        "CREATE TABLE example (id {id}, specialist VARCHAR NOT NULL, text VARCHAR NOT NULL, "
        "text_hash VARCHAR NOT NULL, label VARCHAR NOT NULL, source VARCHAR NOT NULL, run_id VARCHAR, "
        "step_id VARCHAR, created_at {ts} NOT NULL, PRIMARY KEY (id), UNIQUE (specialist, text_hash, source))",
        "CREATE INDEX ix_example_specialist ON example (specialist)",
        "CREATE TABLE head (id {id}, specialist VARCHAR NOT NULL, version INTEGER NOT NULL, "
        "active BOOLEAN NOT NULL, embed_model VARCHAR NOT NULL, labels_json VARCHAR NOT NULL, "
        "n_examples INTEGER NOT NULL, data_hash VARCHAR NOT NULL, metrics_json VARCHAR NOT NULL, "
        "blob {blob} NOT NULL, created_at {ts} NOT NULL, PRIMARY KEY (id), UNIQUE (specialist, version))",
        "CREATE INDEX ix_head_specialist ON head (specialist)",
    )


def _v4(connection: Connection) -> None:
    # Ticket ids were global, so two exports with the same ids (or the same file name) overwrote
    # each other: a ticket is now its key within its source. Old rows keep their id as their key.
    # Frontier spend is written when paid, not when its step is recorded (kill -9 lost it).
    ddl(
        connection,
        "ALTER TABLE ticket ADD COLUMN key VARCHAR NOT NULL DEFAULT ''",
        "UPDATE ticket SET key = id",
        "CREATE UNIQUE INDEX ix_ticket_source_key ON ticket (source, key)",
        "CREATE TABLE spend (id {id}, run_id VARCHAR, model VARCHAR NOT NULL, cost_usd FLOAT NOT NULL, "
        "at {ts} NOT NULL, PRIMARY KEY (id))",
        "CREATE INDEX ix_spend_at ON spend (at)",
        "INSERT INTO spend (run_id, model, cost_usd, at) SELECT run_id, COALESCE(model, ''), cost_usd, at "
        "FROM escalation WHERE rung = 'frontier' AND cost_usd > 0",
    )


def _v5(connection: Connection) -> None:
    # What [privacy] withheld from the frontier on each rung: kind -> count, as JSON. SQLite files
    # made between this version's release and migrations in DDL got the column from version 1.
    columns = {c["name"] for c in inspect(connection).get_columns("escalation")}
    if "redacted" not in columns:
        ddl(connection, "ALTER TABLE escalation ADD COLUMN redacted JSON")


def _v6(connection: Connection) -> None:
    # The database is the queue: work items (a ticket to triage, a run to resume after a person
    # answered) leased by workers on any machine; a lease that expires (a worker killed) goes
    # back to the queue. Workers say they are alive in `worker`. A ticket keeps its text so
    # any worker can triage it.
    ddl(
        connection,
        "CREATE TABLE work (id {id}, kind VARCHAR NOT NULL, ticket_id VARCHAR, run_id VARCHAR, "
        "payload VARCHAR NOT NULL, status VARCHAR NOT NULL, lease_owner VARCHAR, lease_expires_at {ts}, "
        "attempts INTEGER NOT NULL, error VARCHAR, created_at {ts} NOT NULL, updated_at {ts} NOT NULL, "
        "PRIMARY KEY (id))",
        "CREATE INDEX ix_work_status ON work (status, id)",
        "CREATE INDEX ix_work_run_id ON work (run_id)",
        "CREATE TABLE worker (id VARCHAR NOT NULL, host VARCHAR NOT NULL, pid INTEGER NOT NULL, "
        "status VARCHAR NOT NULL, current VARCHAR, done INTEGER NOT NULL, failed INTEGER NOT NULL, "
        "started_at {ts} NOT NULL, heartbeat_at {ts} NOT NULL, PRIMARY KEY (id))",
        "ALTER TABLE ticket ADD COLUMN text VARCHAR",
    )


def _v7(connection: Connection) -> None:
    # `shoal serve`: bearer tokens (only their SHA-256 is kept) and webhook deliveries, each
    # recorded so none is lost while a receiver is down or shoal restarts.
    ddl(
        connection,
        "CREATE TABLE api_token (id {id}, name VARCHAR NOT NULL, token_hash VARCHAR NOT NULL, "
        "prefix VARCHAR NOT NULL, created_at {ts} NOT NULL, last_used_at {ts}, revoked_at {ts}, "
        "PRIMARY KEY (id), UNIQUE (token_hash))",
        "CREATE UNIQUE INDEX ix_api_token_name ON api_token (name)",
        "CREATE TABLE webhook_delivery (id {id}, ticket_id VARCHAR, event VARCHAR NOT NULL, url VARCHAR NOT NULL, "
        "body VARCHAR NOT NULL, status VARCHAR NOT NULL, attempts INTEGER NOT NULL, next_at {ts} NOT NULL, "
        "response_status INTEGER, last_error VARCHAR, created_at {ts} NOT NULL, delivered_at {ts}, "
        "PRIMARY KEY (id))",
        "CREATE INDEX ix_webhook_delivery_due ON webhook_delivery (status, next_at)",
    )


def _v8(connection: Connection) -> None:
    # Long prompt texts (system prompts, output schemas, long tickets) kept once, named by hash
    # from each call's request (`shoal.store.prompts`): they were most of a ticket's bytes.
    ddl(
        connection,
        "CREATE TABLE prompt (hash VARCHAR NOT NULL, text VARCHAR NOT NULL, created_at {ts} NOT NULL, "
        "PRIMARY KEY (hash))",
    )


Migration = tuple[int, str, Callable[[Connection], None]]

# Numbered, append-only.
MIGRATIONS: list[Migration] = [
    (1, "runs, steps, model calls, escalations, reviews", _v1),
    (2, "tickets of triage batches", _v2),
    (3, "embedding cache, labelled examples, trained heads", _v3),
    (4, "tickets keyed within their source; frontier spend recorded when paid", _v4),
    (5, "escalations record what kinds of value were withheld from the frontier", _v5),
    (6, "a work queue leased by workers, their heartbeats, ticket texts", _v6),
    (7, "API tokens and webhook deliveries of shoal serve", _v7),
    (8, "long prompt texts kept once, named by hash from model calls", _v8),
]

NEWEST: Final = max(v for v, _, _ in MIGRATIONS)


_RECORD = text("INSERT INTO shoal_migration (version, name, applied_at) VALUES (:v, :n, :t)").bindparams(
    bindparam("t", type_=DateTime())
)


def applied(connection: Connection) -> set[int] | None:
    """Versions a database has, read without a lock; None for a database shoal never opened."""
    if not inspect(connection).has_table("shoal_migration"):
        return None
    return {int(row[0]) for row in connection.exec_driver_sql("SELECT version FROM shoal_migration")}


def migrate(connection: Connection, where: str, *, upto: int = NEWEST) -> list[int]:
    """Apply the migrations a database lacks (up to `upto`), in one transaction the caller has
    begun, holding the engine's write lock first so two processes opening a new database at once
    do not both create its tables. Returns the versions applied."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    ddl(
        connection,
        "CREATE TABLE IF NOT EXISTS shoal_migration "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at {ts} NOT NULL)",
    )
    done = {int(row[0]) for row in connection.exec_driver_sql("SELECT version FROM shoal_migration")}
    if done and max(done) > NEWEST:
        raise StoreError(f"{where} was written by a newer shoal (schema {max(done)} > {NEWEST}): upgrade shoal")
    added: list[int] = []
    for version, name, apply in MIGRATIONS:
        if version in done or version > upto:
            continue
        apply(connection)
        connection.execute(_RECORD, {"v": version, "n": name, "t": now()})
        added.append(version)
    return added
