"""Migrations that stay true: a database built at every past version, filled with rows of that
version, migrated to the newest, has the schema of a new database and of today's table models,
and keeps its rows; on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pg import Server
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from shoal.dburl import sqlalchemy_url
from shoal.errors import StoreError
from shoal.store import Store
from shoal.store.migrations import MIGRATIONS, NEWEST, migrate

STAMP = "2026-11-01 00:00:00"

# rows a database of each version could hold, inserted right after that version is applied
FILL: dict[int, list[str]] = {
    1: [
        "INSERT INTO run (id, workflow, task, status, tokens_in, tokens_out, cost_usd, model_calls, escalations, "
        f"seconds, created_at, updated_at) VALUES ('r1', 'task', 'my order', 'done', 1, 2, 0.0, 1, 1, 0.5, "
        f"'{STAMP}', '{STAMP}')",
        "INSERT INTO step (run_id, step_id, specialist, instruction, status, input_json, evidence_json, started_at) "
        f"VALUES ('r1', 'kind', 'classifier', '', 'done', '{{}}', '[]', '{STAMP}')",
        "INSERT INTO modelcall (run_id, step_id, model, request_json, tokens_in, tokens_out, latency_s, cost_usd, "
        f"created_at) VALUES ('r1', 'kind', 'embedded:smollm2', '{{}}', 1, 2, 0.1, 0.0, '{STAMP}')",
        "INSERT INTO escalation (run_id, step_id, specialist, rung, reason, confidence_before, cost_usd, outcome, "
        f"at, model) VALUES ('r1', 'kind', 'classifier', 'frontier', 'low', 0.2, 0.01, 'accepted', '{STAMP}', 'gpt')",
        "INSERT INTO review (run_id, step_id, specialist, status, question_json, created_at) "
        f"VALUES ('r1', 'kind', 'classifier', 'answered', '{{}}', '{STAMP}')",
    ],
    2: [
        "INSERT INTO ticket (id, source, line, text_hash, run_id, status, created_at, updated_at) "
        f"VALUES ('T-1', 'export.csv', 2, 'h', 'r1', 'done', '{STAMP}', '{STAMP}')",
    ],
    3: [
        "INSERT INTO example (specialist, text, text_hash, label, source, created_at) "
        f"VALUES ('classifier', 'refund', 'h', 'REFUND', 'human', '{STAMP}')",
    ],
}


def sqlite_engine(tmp_path: Path) -> Callable[[str], Engine]:
    def make(name: str) -> Engine:
        return create_engine(f"sqlite:///{tmp_path / name}.db")

    return make


def schema(engine: Engine) -> dict[str, Any]:
    """Tables -> columns (name, a coarse type, nullable), indexes and unique constraints."""
    found = inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(found.get_table_names()):
        if table in ("shoal_migration",):
            continue
        columns = {c["name"]: (_kind(c["type"]), bool(c["nullable"])) for c in found.get_columns(table)}
        indexes = {(tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)}
        uniques = {tuple(u["column_names"]) for u in found.get_unique_constraints(table)}
        keys = tuple(found.get_pk_constraint(table)["constrained_columns"])
        tables[table] = {"columns": columns, "indexes": indexes, "uniques": uniques, "key": keys}
    return tables


def _kind(sql_type: Any) -> str:
    name = type(sql_type).__name__.upper()
    for word, kind in (
        ("INT", "int"),
        ("CHAR", "text"),
        ("TEXT", "text"),
        ("FLOAT", "float"),
        ("DOUBLE", "float"),
        ("REAL", "float"),
        ("TIMESTAMP", "time"),
        ("DATETIME", "time"),
        ("BOOL", "bool"),
        ("BLOB", "bytes"),
        ("BYTEA", "bytes"),
        ("JSON", "json"),
    ):
        if word in name:
            return kind
    return name


def _build(engine: Engine, upto: int) -> None:
    """A database as shoal at version `upto` left it, with rows of each version in it."""
    for version, _, _ in MIGRATIONS:
        if version > upto:
            break
        with engine.begin() as connection:
            migrate(connection, "test", upto=version)
            for statement in FILL.get(version, []):
                connection.execute(text(statement))


def _models(engine: Engine) -> dict[str, Any]:
    SQLModel.metadata.create_all(engine)
    return schema(engine)


@pytest.fixture(params=["sqlite", "postgresql"])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Engine]:
    if request.param == "sqlite":
        return sqlite_engine(tmp_path)
    server: Server = request.getfixturevalue("postgres_server")

    def make(name: str) -> Engine:
        return create_engine(sqlalchemy_url(server.new_database(f"m_{tmp_path.name[-12:]}_{name}")))

    return make


def test_every_past_version_migrates_to_the_schema_of_a_new_database(engines: Callable[[str], Engine]) -> None:
    fresh = engines("fresh")
    _build(fresh, NEWEST)
    expected = schema(fresh)
    # today's table models describe the same schema as the migrations make
    assert _models(engines("models")) == expected
    for version in range(1, NEWEST):
        old = engines(f"v{version}")
        _build(old, version)
        with old.begin() as connection:
            assert migrate(connection, "test") == list(range(version + 1, NEWEST + 1))
        assert schema(old) == expected, f"a version {version} database migrates to a different schema"
        with old.connect() as connection:
            assert connection.execute(text("SELECT task FROM run WHERE id = 'r1'")).scalar() == "my order"
            if version >= 2:  # version 4 made every old ticket's id its key
                assert connection.execute(text("SELECT key FROM ticket WHERE id = 'T-1'")).scalar() == "T-1"
            if version < 4:  # frontier spend of old escalations was carried into `spend`
                assert connection.execute(text("SELECT SUM(cost_usd) FROM spend")).scalar() == pytest.approx(0.01)
        old.dispose()


def test_store_opens_an_old_file_and_refuses_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    _build(engine, 3)
    engine.dispose()
    store = Store(path)
    try:
        assert store.schema_version() == NEWEST
        assert [t.key for t in store.tickets()] == ["T-1"]
    finally:
        store.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO shoal_migration VALUES ({NEWEST + 1}, 'future', '{STAMP}')"))
    engine.dispose()
    with pytest.raises(StoreError, match="written by a newer shoal"):
        Store(path).migrate()
