"""The store on a real PostgreSQL server (started by the tests, `tests/pg.py`): every table,
query and transaction shoal uses, LangGraph's checkpoints included, on the second engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal, views
from shoal.errors import StoreError
from shoal.models.base import ChatRequest
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import ReviewStatus, RunStatus
from shoal.store import Store

PLAN = {
    "steps": [
        {"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]},
        {"id": "ids", "specialist": "extractor", "instruction": "order ids", "inputs": ["task", "kind"]},
    ]
}


def shoal_on(url: str, *answers: str, threshold: float = 0.0) -> Shoal:
    """An engine on `url` whose model answers in turn, or (no answers) by the schema asked for."""
    settings = Settings.load(env={"SHOAL_DB": url})
    settings.default_model = "scripted:small"
    settings.frontier_model = None
    settings.specialists = {n: SpecialistSettings(threshold=threshold) for n in ("classifier", "extractor")}
    backend = ScriptedBackend(list(answers)) if answers else ScriptedBackend(by_schema)
    return Shoal(settings, router=ModelRouter(lambda _: backend))


def by_schema(request: ChatRequest) -> str:
    """What a model answers concurrent runs with: a label to a classifier, ids to an extractor."""
    schema = request.output_schema
    return '{"label": "ORDER"}' if schema is not None and "label" in schema.model_fields else '{"ids": []}'


def test_the_url_is_kept_as_a_url_and_shown_without_its_password(pg_url: str) -> None:
    settings = Settings.load(env={"SHOAL_DB": pg_url.replace("shoal@", "shoal:secret@")})
    assert isinstance(settings.db_path, str) and settings.db_path.startswith("postgresql://shoal:secret@")
    store = Store(settings.db_path)
    try:
        assert "secret" not in store.where and "***" in store.where
        assert store.is_postgres and store.schema_version() == max(v for v, _, _ in store_migrations())
    finally:
        store.close()


def store_migrations() -> list[Any]:
    from shoal.store.migrations import MIGRATIONS

    return MIGRATIONS


def test_a_dead_server_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match=r"cannot open the database .*Check that the server runs"):
        Store("postgresql://shoal@127.0.0.1:9/nothing")


async def test_a_run_with_a_review_and_its_checkpoints_on_postgres(pg_url: str) -> None:
    # the extractor's answer is below the threshold: the run waits for a person
    shoal = shoal_on(pg_url, '{"label": "ORDER"}', '{"ids": ["70012345"]}', threshold=0.0)
    shoal.settings.specialists["extractor"] = SpecialistSettings(threshold=1.0)
    shoal = Shoal(shoal.settings, router=shoal.router)
    try:
        report = await shoal.run("my order 70012345 arrived broken", plan=PLAN)
        assert report.status == RunStatus.WAITING, report
        (review,) = shoal.store.reviews()
        answered = await shoal.answer_review(review.id or 0, '{"ids": ["70012345"]}', accept=False, who="ana")
        assert answered.status == RunStatus.DONE, answered
        assert shoal.store.get_review(review.id or 0).status == ReviewStatus.ANSWERED
        steps = {s.step_id: s for s in shoal.store.steps(report.run_id)}
        assert steps["ids"].answered_by == "human" and json.loads(steps["ids"].output_json or "{}")
        # finished: LangGraph's snapshots of the run are gone, shoal's rows stay
        with shoal.store.engine.connect() as connection:
            left = connection.exec_driver_sql(
                "SELECT count(*) FROM checkpoints WHERE thread_id = %(t)s", {"t": report.run_id}
            ).scalar()
        assert left == 0
    finally:
        await shoal.aclose()

    # the read-only views (what `shoal runs` and `shoal show` print) read the server too
    (summary,) = views.run_summaries(pg_url)
    assert summary.id == report.run_id and summary.status == RunStatus.DONE and summary.model_calls == 2
    detail = views.run_detail(pg_url, report.run_id[:8])
    assert [s.step_id for s in detail.steps] == ["plan", "kind", "ids"] or [s.step_id for s in detail.steps] == [
        "kind",
        "ids",
    ]
    assert {c.step_id for c in detail.calls} >= {"kind", "ids"}
    with pytest.raises(StoreError, match="no run 'zzz'"):
        views.run_detail(pg_url, "zzz")


async def test_concurrent_runs_share_one_server(pg_url: str) -> None:
    shoal = shoal_on(pg_url)
    try:
        reports = await asyncio.gather(*(shoal.run(f"ticket {i}", plan=PLAN) for i in range(12)))
    finally:
        await shoal.aclose()
    assert all(r.status == RunStatus.DONE for r in reports), [r.status for r in reports]
    store = Store(pg_url)
    try:
        assert len(store.list_runs(limit=100)) == 12
        assert sum(len(store.model_calls(r.run_id)) for r in reports) == 24
    finally:
        store.close()


async def test_prune_on_postgres(pg_url: str) -> None:
    shoal = shoal_on(pg_url, *(['{"label": "ORDER"}', '{"ids": []}'] * 2))
    try:
        reports = [await shoal.run(f"ticket {i}", plan=PLAN) for i in range(2)]
        dry = shoal.store.prune_runs(statuses=["done"], dry_run=True)
        assert dry.runs == 2 and dry.calls == 4 and dry.bytes > 0
        assert len(shoal.store.list_runs()) == 2
        pruned = shoal.store.prune_runs(statuses=["done"], before=None)
        assert pruned.runs == 2 and sorted(pruned.run_ids) == sorted(r.run_id for r in reports)
        assert shoal.store.list_runs() == [] and shoal.store.model_calls(reports[0].run_id) == []
        before, after = shoal.store.vacuum()
        assert before > 0 and after > 0
    finally:
        await shoal.aclose()


def test_the_read_only_commands_read_the_server(pg_url: str, tmp_path: Path) -> None:
    Store(pg_url).close()
    env = {**os.environ, "SHOAL_DB": pg_url, "COLUMNS": "120"}
    listed = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "runs"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    dead = {**env, "SHOAL_DB": "postgresql://shoal:pw@127.0.0.1:9/x"}
    failed = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "runs"], capture_output=True, text=True, env=dead, cwd=tmp_path, timeout=120
    )
    assert failed.returncode != 0
    assert "Check that the server runs" in failed.stderr and "pw" not in failed.stderr
