"""What the operator reads in the first hour: tables at 80 columns, cut text that says so, JSON
never cut, progress in a pipe, counts from the database, `train` saying what it is doing.

Tables are read from the real command in another process (a pipe at 80 columns, as in a log);
triage and train run in this process through Typer's runner with a scripted model, since a real
one would take minutes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner
from waiting import TICKET, one_line_error, ticket_answer, waiting_classifier, waiting_ticket

from shoal.cli import app
from shoal.cli.common import Ticker
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import RunStatus
from shoal.store import Store
from shoal.tickets.plan import FIELDS

LONG = "Order 70012345 " + "arrived late and the box was crushed, " * 20 + "please refund me."


def shoal(*args: str, cwd: Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": str(columns)},
        cwd=cwd,
        timeout=120,
    )


def scripted_engine(doubted: dict[str, float], answer: Any) -> Shoal:
    settings = Settings.load()
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in [*FIELDS, "classifier"]}
    settings.specialists.update({name: SpecialistSettings(threshold=t) for name, t in doubted.items()})
    backend = ScriptedBackend(answer)
    return Shoal(settings, router=ModelRouter(lambda _: backend))


async def long_run() -> str:
    """A finished run whose task and answer are longer than any table cell."""
    reply = json.dumps({"summary": LONG[:400], "key_points": []})
    plan = {"steps": [{"id": "sum", "specialist": "summarizer", "instruction": "summarise", "inputs": ["task"]}]}
    async with scripted_engine({}, lambda _: reply) as engine:
        report = await engine.run(LONG, plan=plan)
    return report.run_id


# --- tables at 80 columns -----------------------------------------------------------------------


async def test_runs_at_80_columns_keeps_ids_whole_and_says_what_it_cut(tmp_path: Path) -> None:
    first = await waiting_classifier()
    second = await long_run()
    out = shoal("runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), out.stdout
    for run_id in (first.run_id, second):
        (row,) = [line for line in lines if run_id in line]  # the whole id, on the run's one line
        assert "…" in row  # the task, cut to fit
    header = next(line for line in lines if line.startswith("id "))
    assert header.split() == ["id", "status", "started", "calls", "esc", "tokens", "cost", "task"]
    assert "tasks cut to fit: `shoal show RUN` or `shoal runs --json` shows them whole" in out.stdout
    # --json: every task whole, whatever the width
    rows = json.loads(shoal("runs", "--json", cwd=tmp_path).stdout)
    assert {r["id"]: r["task"] for r in rows}[second] == LONG


async def test_show_cuts_answers_with_a_mark_and_json_shows_them_whole(tmp_path: Path) -> None:
    run_id = await long_run()
    for columns in (80, 160):
        out = shoal("show", run_id, cwd=tmp_path, columns=columns)
        assert out.returncode == 0, out.stderr
        assert f"run {run_id}" in out.stdout and "…" in out.stdout
        assert f"answers cut at 300 characters, evidence at 400: `shoal show {run_id} --json`" in out.stdout
        header = next(line for line in out.stdout.splitlines() if line.startswith("step "))
        assert header.split() == ["step", "status", "conf", "first", "by", "output", "evidence"]
    whole = json.loads(shoal("show", run_id, "--json", cwd=tmp_path).stdout)
    (step,) = whole["steps"]
    assert json.loads(step["output_json"])["summary"] == LONG[:400]


def test_runs_with_an_unknown_status_names_the_valid_ones(tmp_path: Path) -> None:
    out = shoal("runs", "--status", "bogus", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "'bogus' is not a run status" in line
    assert ", ".join(RunStatus) in line
    assert shoal("runs", "--status", "WAITING", cwd=tmp_path).returncode == 0


async def test_the_review_list_shows_the_ticket_and_each_reason_once(tmp_path: Path) -> None:
    await waiting_classifier()
    outcome, reviews = await waiting_ticket()
    out = shoal("review", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(len(line) <= 80 for line in out.stdout.splitlines()), out.stdout
    flat = " ".join(out.stdout.split())
    lines = out.stdout.splitlines()
    (row,) = [i for i, line in enumerate(lines) if line.startswith(f"{reviews['entities']} ")]
    assert lines[row].split()[1:3] == ["T1", "entities"] and (outcome.run_id or "?") in lines[row + 1]  # ticket, run
    assert "Ticket from Anna: my order 70012345" in lines[row]  # its text
    assert 'answer: {"order_id": "99999",' in out.stdout and '"pr…' in out.stdout  # the answer, cut, marked
    assert "`shoal review ID` shows one whole" in flat
    # each reason once per review (three wait), though each rung repeated it
    assert flat.count("below threshold 1.00") == 3 and flat.count("OPENAI_API_KEY is not set") == 3


async def test_one_review_shows_everything_once(tmp_path: Path) -> None:
    outcome, reviews = await waiting_ticket()
    out = shoal("review", str(reviews["entities"]), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"of run {outcome.run_id} (ticket T1)" in text
    assert "question: " in text and TICKET in text
    assert '"order_id": "99999"' in text and "grounded = 0.00" in text  # the model's answer, its evidence
    assert "fields order_id, invoice_id, account_type" in text  # what it takes
    assert text.count("OPENAI_API_KEY is not set") == 1 and text.count("below threshold 1.00") == 1


# --- progress and summaries in a pipe -----------------------------------------------------------


def test_progress_in_a_pipe_is_plain_lines() -> None:
    buffer = io.StringIO()
    out = Console(file=buffer, width=40)  # not a terminal: a bar would collapse into one cut line
    with Ticker("triage", out=out, every_s=3600) as ticker:
        for done in range(1, 25):
            ticker.update("tickets", done, 24, f"done {done} · escalated 0 · waiting 0 · failed 0 · $0.0000")
    lines = buffer.getvalue().splitlines()
    assert lines[-1] == "triage tickets: 24/24 · done 24 · escalated 0 · waiting 0 · failed 0 · $0.0000"
    assert 2 <= len(lines) <= 13  # every tenth, not every ticket, and never folded at 40 columns
    assert all(line.startswith("triage tickets: ") for line in lines)


def write_tickets(path: Path, n: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket_id", "instruction"])
        for i in range(n):
            writer.writerow([f"T{i}", f"{TICKET} (ticket {i})"])


def test_triage_counts_what_the_database_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tickets(tmp_path / "tickets.csv", 3)
    monkeypatch.setattr("shoal.cli.working.engine", lambda _: scripted_engine({"entities": 1.0}, ticket_answer))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["triage", "tickets.csv", "--id", "ticket_id"])
    assert first.exit_code == 0, first.output
    assert "3 tickets: 0 done, 3 waiting for review, 0 failed, 0 rejected" in first.stdout
    assert "triage tickets: 3/3 · done 0 · escalated 3 · waiting 3" in first.stderr  # a plain line, not a bar
    again = runner.invoke(app, ["triage", "tickets.csv", "--id", "ticket_id"])
    assert again.exit_code == 0, again.output
    # the rerun did nothing, and still says that three tickets wait for a person
    assert "3 tickets: 0 done, 3 waiting for review, 0 failed, 0 rejected" in again.stdout
    assert "this run: 0 triaged (0 escalated), 3 already done and skipped" in again.stdout
    assert "answer the waiting ones with `shoal review`" in again.stdout


def test_train_reports_each_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words = {"ORDER": "order parcel arrived", "REFUND": "refund money back", "ACCOUNT": "account login password"}
    with (tmp_path / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label, topic in words.items():
            for i in range(20):
                writer.writerow([f"{topic} question {i} about my {topic.split()[0]}", label])
    monkeypatch.setattr("shoal.cli.learning.engine", lambda _: scripted_engine({}, ["{}"]))
    result = CliRunner().invoke(app, ["train", "classifier", "--data", str(tmp_path / "data.csv"), "--baseline", "0"])
    assert result.exit_code == 0, result.output
    said = result.stderr
    for line in ("train keep examples: 60/60", "train embed: 0/60", "train embed: 60/60", "train fit: 1/1"):
        assert line in said, said
    assert "train evaluate: " in said and "head v1" in result.stdout
    assert Store(Settings.load().db_path).heads()[0].specialist == "classifier"
