"""What the faces show about runs comes from the engine as typed rows: `Shoal.list_runs` and
`Shoal.run_detail`, which `shoal runs` and `shoal show` only lay out."""

from __future__ import annotations

from pathlib import Path

import pytest
from waiting import TICKET, one_line_error, shoal_cli, waiting_classifier

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.errors import StoreError
from shoal.status import EscalationOutcome, ReviewStatus, Rung, RunStatus, StepStatus


async def test_run_detail_is_typed_rows(tmp_path: Path) -> None:
    report = await waiting_classifier()
    engine = Shoal(Settings.load())
    detail = engine.run_detail(report.run_id[:5])
    assert detail.run.id == report.run_id and detail.run.status is RunStatus.WAITING and detail.run.task == TICKET
    (step,) = detail.steps
    assert step.step_id == "kind" and step.status is StepStatus.WAITING and step.instruction == "categorise it"
    assert [e.name for e in step.evidence] == ["logprobs"] and step.evidence[0].value == 0.0
    assert [(e.rung, e.outcome) for e in detail.escalations] == [
        (Rung.FRONTIER, EscalationOutcome.SKIPPED),
        (Rung.HUMAN, EscalationOutcome.PENDING),
    ]
    (call,) = detail.calls
    assert call.step_id == "kind" and '"messages"' in call.request_json and '"label"' in call.reply
    assert [r.id for r in engine.list_runs()] == [report.run_id]
    assert engine.list_runs(status=RunStatus.DONE) == []
    (item,) = engine.pending_reviews()
    assert item.status is ReviewStatus.PENDING and item.input_text == TICKET and "REFUND" in item.labels


async def test_percent_and_underscore_in_an_id_are_literal(tmp_path: Path) -> None:
    await waiting_classifier()
    engine = Shoal(Settings.load())
    for typed in ("%", "_", "____"):
        with pytest.raises(StoreError, match=f"no run '{typed}'"):
            engine.run_detail(typed)


async def test_show_and_runs_print_the_rows(tmp_path: Path) -> None:
    report = await waiting_classifier()
    shown = shoal_cli("show", report.run_id[:6], "--calls", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for text in (f"run {report.run_id}", "waiting", "kind", "classifier", "logprobs=0.00", "frontier", "human"):
        assert text in shown.stdout, text
    assert "model calls" in shown.stdout and '"messages"' in shown.stdout  # --calls: the prompt
    listed = shoal_cli("runs", "--status", "waiting", cwd=tmp_path)
    assert listed.returncode == 0 and report.run_id in listed.stdout
    missing = shoal_cli("show", "%", cwd=tmp_path)
    assert missing.returncode == 1 and "no run '%'" in one_line_error(missing)
