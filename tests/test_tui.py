"""The TUI under `App.run_test()`, on a real SQLite database filled by real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import ReviewStatus, RunStatus, TicketStatus

pytest.importorskip("textual")

from textual.widgets import DataTable, Input, Static, Tree

from shoal.tui.app import ShoalApp
from shoal.tui.screens import ModelsScreen, ReviewScreen, RunScreen, RunsScreen

PLAN = {
    "steps": [
        {"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]},
        {"id": "ids", "specialist": "extractor", "instruction": "ids", "inputs": ["task"]},
    ]
}


def answers(request: object) -> str:
    name = request.output_schema.__name__  # type: ignore[attr-defined]
    return '{"label": "REFUND"}' if name == "Label" else '{"ids": ["70012345"]}'


async def filled(tmp_path: Path, *, classifier_threshold: float) -> Shoal:
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {
        "classifier": SpecialistSettings(threshold=classifier_threshold),
        "extractor": SpecialistSettings(threshold=0.0),
    }
    backend = ScriptedBackend(answers)
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    await shoal.run("Order 70012345 arrived broken, refund please", plan=PLAN)
    return shoal


async def test_runs_screen_lists_and_filters_runs(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=0.0)  # done
    await shoal.run("A second ticket about order 70012345", plan=PLAN)
    shoal.settings.specialists["classifier"] = SpecialistSettings(threshold=1.0)
    shoal.specialists = shoal.default_specialists()
    waiting = await shoal.run("A third one, refund for 70012345", plan=PLAN)
    assert waiting.status == "waiting"
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 3
        statuses = sorted(str(table.get_row_at(i)[2]) for i in range(3))
        assert statuses == ["done", "done", "waiting"]
        await pilot.press("f")  # running
        await pilot.press("f")  # waiting
        assert screen.status_filter == "waiting" and table.row_count == 1
        assert str(table.get_row_at(0)[0]) == waiting.run_id and str(table.get_row_at(0)[5]) == "1"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == waiting.run_id
        tree = app.screen.query_one("#steps", Tree)
        labels = [str(node.label) for node in tree.root.children]
        assert any(label.startswith("kind · classifier · waiting") for label in labels)
        assert any(label.startswith("ids · extractor · done") for label in labels)
        calls = app.screen.query_one("#calls", DataTable)
        assert calls.row_count == 2
        await pilot.press("down")
        reply = str(app.screen.query_one("#call-reply", Static).render())
        prompt = str(app.screen.query_one("#call-prompt", Static).render())
        assert reply.startswith("reply (") and prompt.startswith("prompt:") and "--- user ---" in prompt
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_answering_a_review_resumes_its_run(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)  # the classifier waits for a person
    run = shoal.store.list_runs()[0]
    assert run.status == "waiting"
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("v")
        assert isinstance(app.screen, ReviewScreen)
        screen = app.screen
        table = screen.query_one("#reviews", DataTable)
        assert table.row_count == 1
        text = str(screen.query_one("#question", Static).render())
        assert text.startswith("a accepts: REFUND") and "evidence" in text and "why it is here" in text
        screen.query_one("#answer", Input).focus()
        await pilot.press(*"INVOICE", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.row_count == 0
    finished = shoal.store.get_run(run.id)
    assert finished is not None and finished.status == "done"
    kind = shoal.store.finished_step(run.id, "kind")
    assert (
        kind is not None and kind.answered_by == "human" and json.loads(kind.output_json or "{}")["label"] == "INVOICE"
    )
    assert kind.model == "human:tui"


async def test_a_wrong_answer_is_shown_and_nothing_changes(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("v")
        screen = app.screen
        screen.query_one("#answer", Input).focus()
        await pilot.press(*"NOT_A_LABEL", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query_one("#reviews", DataTable).row_count == 1
        # the engine's AnswerError, where the answer is typed; the typed text stays to be fixed
        shown = str(screen.query_one("#answer-status", Static).render())
        assert "'NOT_A_LABEL' is not a label of classifier; its labels:" in shown
        assert screen.query_one("#answer", Input).value == "NOT_A_LABEL"
    assert shoal.store.reviews(status=ReviewStatus.PENDING)


async def test_models_screen_edits_a_threshold_into_shoal_toml(tmp_path: Path) -> None:
    import tomllib

    config = tmp_path / "shoal.toml"
    config.write_text("# my settings\n[specialists.extractor]\nthreshold = 0.6  # keep this comment\n")
    settings = Settings.load(config, env={"SHOAL_DB": str(tmp_path / "shoal.db"), "OLLAMA_HOST": "127.0.0.1:9"})
    app = ShoalApp(settings)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("m")
        assert isinstance(app.screen, ModelsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        backends = app.screen.query_one("#backends", DataTable)
        rows = {str(backends.get_row_at(i)[0]): str(backends.get_row_at(i)[1]) for i in range(backends.row_count)}
        assert rows["ollama"].startswith("unavailable") and rows["embedded"] == "ready"
        table = app.screen.query_one("#specialists", DataTable)
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert {"planner", "classifier", "extractor", "category", "intent", "reply"} <= set(names)
        table.move_cursor(row=names.index("classifier"))
        await pilot.press("e")
        edit = app.screen.query_one("#edit", Input)
        edit.value = "embedded:smollm2-135m 0.55"
        await pilot.press("enter")
        await pilot.pause()
    saved = config.read_text()
    assert "# keep this comment" in saved and "# my settings" in saved
    data = tomllib.loads(saved)
    assert data["specialists"]["classifier"] == {"model": "embedded:smollm2-135m", "threshold": 0.55}
    assert data["specialists"]["extractor"]["threshold"] == 0.6
    assert app.settings.threshold_for("classifier", 0.7) == 0.55


def ticket_answers(request: object) -> str:
    schema = request.output_schema  # type: ignore[attr-defined]
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    if schema.__name__ == "Label":
        return json.dumps({"label": "PAYMENT" if "PAYMENT" in labels else labels[0]})
    return {
        "TicketEntities": '{"invoice_id": "5521"}',
        "Summary": '{"summary": "Invoice 5521 is wrong", "key_points": []}',
        "ReplyDraft": '{"reply": "Thank you, we are checking invoice 5521 for you now."}',
    }[schema.__name__]


async def test_a_batch_started_from_new_task_appears_on_runs(tmp_path: Path) -> None:
    from shoal.tickets.plan import FIELDS

    tickets = tmp_path / "t.jsonl"
    tickets.write_text('{"instruction": "my invoice 5521 is wrong"}\n{"instruction": ""}\n')
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    backend = ScriptedBackend(ticket_answers)
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    app = ShoalApp(settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("n")
        await pilot.press(*f"triage {tickets}", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        screen.action_refresh()
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 1
        row = table.get_row_at(0)
        # done, or waiting on a person for a field the scripted answers cannot settle (the reply)
        assert str(row[1]) == "tickets" and str(row[2]) in (RunStatus.DONE, RunStatus.WAITING)
    rejected = [t for t in shoal.store.tickets() if t.status == TicketStatus.REJECTED]
    assert len(rejected) == 1 and rejected[0].error == "the text is empty"


async def test_retry_finishes_a_failed_run(tmp_path: Path) -> None:
    from shoal.errors import BackendUnavailableError

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.0)}
    down = ScriptedBackend([BackendUnavailableError("cannot reach Ollama")])
    broken = Shoal(settings, router=ModelRouter(lambda _: down))
    with pytest.raises(BackendUnavailableError):
        await broken.run("refund please", plan={"steps": [PLAN["steps"][0]]})
    await broken.aclose()
    run = broken.store.list_runs()[0]
    assert run.status == "failed"

    up = ScriptedBackend(answers)
    shoal = Shoal(settings, router=ModelRouter(lambda _: up))
    app = ShoalApp(settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("c")  # not running here: says so, changes nothing
        await pilot.press("t")
        await app.workers.wait_for_complete()
        await pilot.pause()
    finished = shoal.store.get_run(run.id)
    assert finished is not None and finished.status == "done"
    assert len(up.requests) == 1


async def test_models_screen_pulls_with_progress(tmp_path: Path, server: Any) -> None:
    from httpfake import Answer
    from textual.widgets import ProgressBar

    server.always("/api/tags", Answer(body={"models": []}))
    server.add(
        "/api/pull",
        Answer(
            stream=[
                {"status": "pulling manifest"},
                {"status": "pulling abc", "digest": "sha256:abc", "total": 1000, "completed": 250},
                {"status": "pulling abc", "digest": "sha256:abc", "total": 1000, "completed": 1000},
                {"status": "success"},
            ]
        ),
    )
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db"), "OLLAMA_HOST": server.url})
    app = ShoalApp(settings)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("m")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.press("p", *"qwen2.5:3b", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        bar = app.screen.query_one("#pull-progress", ProgressBar)
        assert bar.total == 1000 and bar.progress == 1000
        assert "pulled qwen2.5:3b" in str(app.screen.query_one("#pull-status", Static).render())
    assert server.bodies("/api/pull")[0]["model"] == "qwen2.5:3b"


@pytest.mark.embedded
async def test_screens_on_runs_of_the_real_embedded_model(tmp_path: Path) -> None:
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {
        "classifier": SpecialistSettings(threshold=1.0),  # a person decides the category
        "extractor": SpecialistSettings(threshold=0.0),
    }
    shoal = Shoal(settings)
    waiting = await shoal.run("Ticket: my order 70012345 arrived broken, refund please", plan=PLAN)
    assert waiting.status == "waiting"
    app = ShoalApp(settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        assert str(table.get_row_at(0)[2]) == "waiting"
        await pilot.press("enter")
        calls = app.screen.query_one("#calls", DataTable)
        assert calls.row_count == 2 and "embedded:smollm2-135m" in str(calls.get_row_at(0)[2])
        await pilot.press("escape", "v")
        app.screen.query_one("#answer", Input).focus()
        await pilot.press(*"REFUND", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    run = shoal.store.get_run(waiting.run_id)
    assert run is not None and run.status == "done"


async def test_command_palette_reaches_every_screen(tmp_path: Path) -> None:
    shoal = await filled(tmp_path, classifier_threshold=1.0)
    app = ShoalApp(shoal.settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"Review queue", "New task", "Models", "Show waiting runs"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.press(*"Show waiting runs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen) and app.screen.status_filter == "waiting"
        await pilot.press("ctrl+p", *"Models")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ModelsScreen)


def answering(table: DataTable[Any]) -> dict[str, str]:
    """specialist -> the Models screen's "answers with" column."""
    return {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[3]) for i in range(table.row_count)}


async def test_models_screen_lists_heads_and_activates_an_older_one(tmp_path: Path) -> None:
    from bitext import rows

    from shoal.evaluation import Labelled

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db"), "OLLAMA_HOST": "127.0.0.1:9"})
    # scripted embeddings: this test is about the screen, the real model is trained in test_heads
    settings.specialists = {"category": SpecialistSettings(embed_model="scripted:emb")}
    backend = ScriptedBackend()
    trainer = Shoal(settings, router=ModelRouter(lambda _: backend))
    seen: dict[str, int] = {}
    data = []
    for row in rows()[::3]:
        if seen.get(row["category"], 0) < 6:
            seen[row["category"]] = seen.get(row["category"], 0) + 1
            data.append(Labelled(text=row["instruction"], label=row["category"]))
    first = await trainer.train("category", files=data, baseline=0)
    second = await trainer.train("category", baseline=0, force=True)
    await trainer.aclose()
    assert (first.version, second.version) == (1, 2) and second.activated

    app = ShoalApp(settings)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("m")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.pause()
        heads = app.screen.query_one("#heads", DataTable)
        listed = [[str(c) for c in heads.get_row_at(i)] for i in range(heads.row_count)]
        assert [row[:2] for row in listed] == [["category v1", ""], ["category v2", "active"]]
        assert listed[0][2] == f"{first.n_train} examples" and listed[0][8] == "scripted:emb"
        specialists = app.screen.query_one("#specialists", DataTable)
        how = {
            str(specialists.get_row_at(i)[0]): str(specialists.get_row_at(i)[3]) for i in range(specialists.row_count)
        }
        assert how["category"] == "head v2" and how["intent"] == "prompt"
        heads.focus()
        heads.move_cursor(row=0)
        await pilot.press("a")
        await pilot.pause()
        how = {
            str(specialists.get_row_at(i)[0]): str(specialists.get_row_at(i)[3]) for i in range(specialists.row_count)
        }
        assert how["category"] == "head v1"
    active = app.engine.store.active_head("category")
    assert active is not None and active.version == 1


async def test_stored_text_is_shown_as_it_is_never_as_markup(tmp_path: Path) -> None:
    """Tickets, model output and errors are text: "[ollama]" must not vanish, "[/b]" must not crash."""
    from shoal.store import Store
    from shoal.store.tables import Step

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    store = Store(settings.db_path)
    task = "Customer: the price [/b] is wrong [bold]really"
    store.create_run("bracketsrun1", task)
    step = Step(run_id="bracketsrun1", step_id="kind", specialist="classifier", status="done")
    step.output_json = '{"label": "[/i] REFUND"}'
    store.record_step(step, [], [])
    store.update_run("bracketsrun1", status="failed", error="set OLLAMA_HOST / [ollama] host in shoal.toml")
    app = ShoalApp(settings)
    async with app.run_test(size=(140, 40)) as pilot:
        assert isinstance(app.screen, RunsScreen)
        await app.workers.wait_for_complete()  # the engine is imported on a thread at start
        await pilot.pause()
        assert str(app.screen.query_one("#runs", DataTable).get_row_at(0)[7]) == task
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        header = str(app.screen.query_one("#run-header", Static).render())
        assert task in header and "[ollama] host" in header
        leaves = [
            str(leaf.label) for node in app.screen.query_one("#steps", Tree).root.children for leaf in node.children
        ]
        assert 'output {"label": "[/i] REFUND"}' in leaves


async def test_leaving_the_review_queue_lets_the_resumed_run_finish(tmp_path: Path) -> None:
    """The answer resumes the run; going back to Runs at once must not cancel it half-way."""
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {
        "classifier": SpecialistSettings(threshold=1.0),
        "extractor": SpecialistSettings(threshold=0.0),
    }
    backend = ScriptedBackend(answers, delay_s=0.5)  # the step after the review takes a while
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    after_review = {"steps": [PLAN["steps"][0], {**PLAN["steps"][1], "inputs": ["task", "kind"]}]}
    waiting = await shoal.run("Order 70012345 arrived broken, refund please", plan=after_review)
    assert waiting.status == "waiting"
    app = ShoalApp(settings, engine=shoal)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("v")
        app.screen.query_one("#answer", Input).focus()
        await pilot.press(*"INVOICE", "enter", "escape")
        assert isinstance(app.screen, RunsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
    run = shoal.store.get_run(waiting.run_id)
    assert run is not None and run.status == "done", run and run.error
