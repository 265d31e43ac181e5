"""The operator's first hour with `shoal tui` (issue 15), under `App.run_test()` on the real app,
a real SQLite file and scripted model answers: a settings edit during a batch, a long prompt, an
80x24 terminal, a low-confidence accept, New task's triage options, and the Models edit box."""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import UsageError
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import ReviewStatus, RunStatus, TicketStatus
from shoal.store import Store
from shoal.tickets.plan import FIELDS

pytest.importorskip("textual")

from test_tui import filled, ticket_answers
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from shoal.tui.app import ShoalApp
from shoal.tui.commands import parse_triage
from shoal.tui.screens import ModelsScreen, NewTaskScreen, ReviewScreen, RunScreen, RunsScreen

SMALL = (80, 24)


def screen_text(app: ShoalApp) -> str:
    """What the terminal shows now, as plain text (only what is visible is in the screenshot)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def on_screen(app: ShoalApp, *texts: str) -> bool:
    shown = screen_text(app)
    return all(text in shown for text in texts)


async def until(pilot: Pilot[None], condition: Callable[[], bool], seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the app")


def row_of(table: DataTable[Any], name: str) -> int:
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)].index(name)


# --- a settings edit while work runs ------------------------------------------------------------


class Gated(ScriptedBackend):
    """Scripted answers that hold every call after the first two until `gate` opens: the batch
    is certainly under way when the settings change, however slow the machine."""

    def __init__(self, script: Callable[[Any], str]) -> None:
        super().__init__(script)
        self.gate = asyncio.Event()

    async def chat(self, request: Any) -> Any:
        if len(self.requests) >= 2:
            await self.gate.wait()
        return await super().chat(request)


async def test_editing_a_threshold_while_a_triage_runs_lets_the_triage_finish(tmp_path: Path) -> None:
    """Saving a threshold reloads the settings; the batch keeps the engine it started on (closing
    it stopped the batch with `ValueError: no active connection`), and that engine is closed
    once the batch is over."""
    config = tmp_path / "shoal.toml"
    zero = "".join(f"[specialists.{name}]\nthreshold = 0.0\n" for name in FIELDS)
    config.write_text(f'db_path = "{tmp_path / "shoal.db"}"\n[ollama]\nhost = "127.0.0.1:9"\n{zero}')
    backend = Gated(ticket_answers)

    def build(settings: Settings, store: Store) -> Shoal:
        return Shoal(settings, router=ModelRouter(lambda _: backend), store=store)

    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text("".join(json.dumps({"instruction": f"my invoice 55{i} is wrong"}) + "\n" for i in range(4)))
    app = ShoalApp(Settings.load(config), build=build)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n", *f"triage {tickets}", "enter")
        await until(pilot, lambda: len(backend.requests) >= 2)
        running = app.core.engine
        await pilot.press("m")
        assert isinstance(app.screen, ModelsScreen)
        table = app.screen.query_one("#specialists", DataTable)
        table.move_cursor(row=row_of(table, "category"))
        await pilot.press("e", *"0.55", "enter")
        await pilot.pause()
        assert app.core.in_use(running), "the batch should still be running when the settings change"
        assert app.core.engine is not running  # work started from now on gets the new settings
        assert app.core.engine.settings.threshold_for("category", 0.7) == 0.55
        backend.gate.set()  # the batch goes on, on the engine it started with
        await app.workers.wait_for_complete()
        await pilot.pause()
        closed = not app.core.in_use(running) and running.wiring._saver is None
    store = Store(tmp_path / "shoal.db")
    rows = store.tickets()
    assert len(rows) == 4 and all(t.status in (TicketStatus.DONE, TicketStatus.WAITING) for t in rows), [
        (t.status, t.error) for t in rows
    ]
    for run in store.list_runs():
        assert run.status in (RunStatus.DONE, RunStatus.WAITING) and run.error is None, run.error
    assert closed  # the retired engine was closed once the batch let go of it
    assert tomllib.loads(config.read_text())["specialists"]["category"] == {"threshold": 0.55}


async def test_a_reload_with_nothing_running_closes_the_old_engine_at_once(tmp_path: Path) -> None:
    from shoal.tui.core import Core

    config = tmp_path / "shoal.toml"
    config.write_text(f'db_path = "{tmp_path / "shoal.db"}"\n')
    core = Core(Settings.load(config))
    first = core.engine
    async with core.lease() as leased:
        assert leased is first
        await core.reload_settings(config)
        assert core.in_use(first) and first.store is core.store
    assert not core.in_use(first)
    second = core.engine
    await core.reload_settings(config)  # nobody uses it: closed now
    assert second is not core.engine
    await core.aclose()


def test_the_core_never_imports_textual() -> None:
    code = "import sys, shoal.tui.core, shoal.tui.commands, shoal.tui.data; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- run detail: the reply of a call with a long prompt -----------------------------------------


def long_prompt_run(db: Path) -> str:
    store = Store(db)
    store.create_run("longprompt01", "Order 70012345 arrived broken")
    prompt = "\n".join(f"line {i} of a very long system prompt" for i in range(300)) + "\nPROMPT_END_MARKER"
    from shoal.store.tables import Step

    call = {
        "run_id": "longprompt01",
        "step_id": "kind",
        "model": "embedded:smollm2-135m",
        "request_json": json.dumps({"model": "smollm2-135m", "messages": [{"role": "system", "content": prompt}]}),
        "reply_json": json.dumps({"text": '{"label": "THE_REPLY_LABEL"}', "usage": {}}),
        "tokens_in": 3000,
        "tokens_out": 6,
        "latency_s": 0.5,
    }
    step = Step(run_id="longprompt01", step_id="kind", specialist="classifier", status="done", confidence=0.9)
    store.record_step(step, [call], [])
    store.update_run("longprompt01", status=RunStatus.DONE)
    store.close()
    return "longprompt01"


async def test_run_detail_shows_the_reply_of_a_call_with_a_long_prompt(tmp_path: Path) -> None:
    long_prompt_run(tmp_path / "shoal.db")
    app = ShoalApp(Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")}))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        calls = app.screen.query_one("#calls", DataTable)
        calls.focus()
        calls.move_cursor(row=0)
        await pilot.pause()
        assert on_screen(app, "THE_REPLY_LABEL", "line 0 of a very long system prompt")
        assert not on_screen(app, "PROMPT_END_MARKER")
        pane = app.screen.query_one("#detail-pane", VerticalScroll)
        assert pane.max_scroll_y > 0  # the pane scrolls: the prompt is longer than it
        await pilot.press("tab")
        assert app.focused is pane
        await pilot.press("end")
        await pilot.pause()
        assert pane.scroll_y == pane.max_scroll_y and on_screen(app, "PROMPT_END_MARKER")


# --- every screen at 80x24 -----------------------------------------------------------------------


async def test_every_screen_is_usable_at_80x24(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)  # one run waits on the classifier
    run_id = shoal.store.list_runs()[0].id
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert on_screen(app, run_id, "waiting", "1/2")
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        await pilot.pause()
        assert on_screen(app, "kind · classifier", "ids · extractor")
        app.screen.query_one("#calls", DataTable).focus()
        await pilot.press("down", "up")
        assert on_screen(app, "reply (", '"label": "REFUND"')
        await pilot.press("escape", "v")
        assert isinstance(app.screen, ReviewScreen)
        await pilot.pause()
        # what `a` accepts, how sure the model was and on what evidence, and where to type
        assert on_screen(app, "a accepts: REFUND", "confidence 0.00", "evidence", "logprobs = 0.00")
        assert on_screen(app, "answer review")
        await pilot.press("escape", "n")
        assert isinstance(app.screen, NewTaskScreen)
        assert on_screen(app, "--limit N", "--out FILE", "--id COL")
        await pilot.press("escape", "m")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.pause()
        assert on_screen(app, "specialists", "classifier", "0.70")
        table = app.screen.query_one("#specialists", DataTable)
        table.move_cursor(row=row_of(table, "reply"))  # the last row: the box must not hide it
        await pilot.press("e")
        await pilot.pause()
        assert on_screen(app, "edit reply", "reply answers with")
        assert re.search(r"reply\s+embedded:", screen_text(app))  # the row being edited is still in sight


# --- accepting a low-confidence answer asks once --------------------------------------------------


async def test_accepting_a_low_confidence_answer_asks_first(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)  # scripted: no logprobs, confidence 0
    (review,) = shoal.store.reviews(status=ReviewStatus.PENDING)
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("v")
        assert isinstance(app.screen, ReviewScreen)
        await pilot.press("a")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert shoal.store.get_review(review.id or 0).status == ReviewStatus.PENDING  # nothing recorded yet
        assert on_screen(app, "accept REFUND at confidence 0.00?")
        await pilot.press("escape")  # takes the confirmation back, stays on the queue
        assert isinstance(app.screen, ReviewScreen) and app.screen.confirming is None
        await pilot.press("y")  # nothing to confirm
        await app.workers.wait_for_complete()
        assert shoal.store.get_review(review.id or 0).status == ReviewStatus.PENDING
        await pilot.press("a", "a")  # asked, then confirmed
        await app.workers.wait_for_complete()
        await pilot.pause()
    answered = shoal.store.get_review(review.id or 0)
    assert answered.status == ReviewStatus.ANSWERED and answered.answered_by == "tui"
    assert json.loads(answered.answer_json or "{}")["label"] == "REFUND"
    examples = shoal.store.examples("classifier")
    assert [(e.label, e.source, e.run_id) for e in examples] == [("REFUND", "human", review.run_id)]
    run = shoal.store.get_run(review.run_id)
    assert run is not None and run.status == RunStatus.DONE


async def test_y_confirms_a_low_confidence_accept(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)
    (review,) = shoal.store.reviews(status=ReviewStatus.PENDING)
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("v", "a", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert shoal.store.get_review(review.id or 0).answered_by == "tui"


# --- New task: triage takes shoal triage's options ------------------------------------------------


def test_the_triage_line_reads_like_the_cli(tmp_path: Path) -> None:
    tickets = tmp_path / "my tickets.csv"
    tickets.write_text("ticket_id,body\nT-1,hello\n")
    command = parse_triage(f"triage '{tickets}' --text body --id=ticket_id --limit 5 --force --out {tmp_path}/o.csv")
    assert (command.file, command.text_column, command.id_column) == (tickets, "body", "ticket_id")
    assert command.limit == 5 and command.force and command.out == tmp_path / "o.csv" and command.concurrency == 1
    for line, problem in [
        (f"triage '{tickets}' --limit 0", "--limit 0: give a whole number"),
        (f"triage '{tickets}' --limit", "--limit needs a value"),
        (f"triage '{tickets}' --bogus", "unknown option --bogus"),
        (f"triage '{tickets}' '{tickets}'", "2 files"),
        ("triage", "no ticket file"),
        (f"triage {tmp_path}/none.csv", "does not exist"),
        (f"triage '{tickets}' --out {tmp_path}/o.txt", "use a .jsonl or .csv file"),
        (f"triage '{tickets}' --out {tmp_path}/no/o.csv", "does not exist"),
        ("triage 'unclosed", "quote a path"),
    ]:
        with pytest.raises(UsageError, match=re.escape(problem)):
            parse_triage(line)


async def test_new_task_triages_with_the_cli_options_and_exports(tmp_path: Path) -> None:
    tickets = tmp_path / "export.csv"
    tickets.write_text(
        "ticket_id,body\nINV-1,my invoice 5521 is wrong\nINV-2,invoice 7 is wrong too\nINV-3,and invoice 9\n"
    )
    out = tmp_path / "results.jsonl"
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    backend = ScriptedBackend(ticket_answers)
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    app = ShoalApp(settings, engine=shoal)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("n", *f"triage {tickets} --limit x", "enter")
        assert isinstance(app.screen, NewTaskScreen)  # stays open, saying what is wrong
        assert on_screen(app, "--limit x: give a whole number of at least 1")
        box = app.screen.query_one("#task", Input)
        box.value = f"triage {tickets} --text body --id ticket_id --limit 2 --out {out}"
        await pilot.press("enter")
        assert isinstance(app.screen, RunsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert sorted(t.key for t in shoal.store.tickets()) == ["INV-1", "INV-2"]  # ids from --id, not two:2
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in written] == ["INV-1", "INV-2"]
    assert all(row["status"] in (TicketStatus.DONE, TicketStatus.WAITING) for row in written)


# --- Models: the edit box -------------------------------------------------------------------------


async def test_the_models_edit_box_writes_only_what_was_typed(tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text(f'# mine\ndb_path = "{tmp_path / "shoal.db"}"\n[ollama]\nhost = "127.0.0.1:9"\n')
    app = ShoalApp(Settings.load(config))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("m")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.pause()
        table = app.screen.query_one("#specialists", DataTable)
        table.move_cursor(row=row_of(table, "classifier"))
        await pilot.press("e")
        assert on_screen(app, "edit classifier", "classifier answers with")
        await pilot.press("escape")  # closes the box, not the screen
        assert isinstance(app.screen, ModelsScreen) and not app.screen.query_one("#edit-box").display
        await pilot.press("e", *"0.55", "enter")  # a threshold alone
        await pilot.pause()
        assert not app.screen.query_one("#edit-box").display
        table.move_cursor(row=row_of(table, "extractor"))
        await pilot.press("e", *"a b", "enter")  # two models: refused, the box stays open
        await pilot.pause()
        assert app.screen.query_one("#edit-box").display and on_screen(app, "two models given")
        app.screen.query_one("#edit", Input).value = "ollama:qwen2.5:3b"  # a model alone
        await pilot.press("enter")
        await pilot.pause()
        assert on_screen(app, "ollama:qwen2.5:3b")
        await pilot.press("escape")  # no box open: leaves the screen
        assert isinstance(app.screen, RunsScreen)
    saved = config.read_text()
    assert saved.startswith("# mine")
    data = tomllib.loads(saved)["specialists"]
    assert data == {"classifier": {"threshold": 0.55}, "extractor": {"model": "ollama:qwen2.5:3b"}}
    # the classifier still follows default_model
    assert app.settings.model_for("classifier") == app.settings.model_for("summarizer")


async def test_a_slow_engine_import_does_not_hold_up_the_runs_screen(tmp_path: Path) -> None:
    """The engine is imported on a thread at start; Runs reads the views meanwhile."""
    long_prompt_run(tmp_path / "shoal.db")
    app = ShoalApp(Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")}))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#runs", DataTable).row_count == 1
        await asyncio.wait_for(app.workers.wait_for_complete(), 60)


async def test_the_review_pane_gives_each_reason_once() -> None:
    # every rung repeats the reasons before it; the engine reads them once for every face
    from waiting import waiting_ticket

    from shoal.tui.data import review_text

    _, reviews = await waiting_ticket()
    settings = Settings.load()
    shoal = Shoal(settings)
    try:
        detail = shoal.review_detail(reviews["entities"])
    finally:
        await shoal.aclose()
    text = review_text(detail)
    assert text.count("OPENAI_API_KEY is not set") == 1 and text.count("below threshold 1.00") == 1
