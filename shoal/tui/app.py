"""`shoal tui`: live runs, a run's steps and model calls, and the human review queue.

The screens read the store (so runs of other processes on the same database show up live) and
act through the engine (`Shoal.review`); they never talk to a model backend. Answering a
review resumes its run in a Textual worker, so the interface stays responsive while models run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, Static, Tree

from shoal.config import Settings
from shoal.errors import ShoalError
from shoal.store import Store
from shoal.tui.data import STATUSES, evidence_text, pretty, question_text, run_lines


class RunsScreen(Screen[None]):
    """Every run and ticket batch item, newest first, refreshed every second."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open run"),
        Binding("f", "filter", "Filter status"),
        Binding("v", "app.reviews", "Review queue"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.status_filter: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="filter-bar")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "workflow", "status", "steps", "escalations", "reviews", "cost", "task")
        self.action_refresh()
        self.set_interval(1.0, self.action_refresh)

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined,no-any-return]

    def action_refresh(self) -> None:
        table = self.query_one("#runs", DataTable)
        selected = self._selected()
        table.clear()
        for line in run_lines(self.store, self.status_filter):
            table.add_row(
                line.id,
                line.workflow,
                line.status,
                f"{line.steps_done}/{line.steps}",
                str(line.escalations),
                str(line.reviews) if line.reviews else "",
                f"${line.cost_usd:.4f}",
                line.task,
                key=line.id,
            )
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        shown = self.status_filter or "all"
        self.query_one("#filter-bar", Static).update(f"status: {shown}  ({table.row_count} runs)  f: next filter")

    def _selected(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_filter(self) -> None:
        position = STATUSES.index(self.status_filter)
        self.show_status(STATUSES[(position + 1) % len(STATUSES)])

    def show_status(self, status: str | None) -> None:
        self.status_filter = status
        self.action_refresh()

    def action_open(self) -> None:
        run_id = self._selected()
        if run_id is not None:
            self.app.push_screen(RunScreen(run_id))

    @on(DataTable.RowSelected, "#runs")
    def _open_row(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(RunScreen(str(event.row_key.value)))


class RunScreen(Screen[None]):
    """One run: its steps with confidence and evidence, escalations, and every model call."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "refresh", "Refresh"),
        Binding("t", "retry", "Retry failed steps"),
        Binding("c", "cancel", "Cancel run"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="run-header")
        with Horizontal():
            yield Tree("plan", id="steps")
            with Vertical():
                yield DataTable(id="calls", cursor_type="row")
                yield Static("", id="detail-pane")
        yield Footer()

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined,no-any-return]

    def on_mount(self) -> None:
        self.query_one("#calls", DataTable).add_columns("#", "step", "model", "tokens", "latency", "cost", "error")
        self.action_refresh()

    def action_refresh(self) -> None:
        run = self.store.find_run(self.run_id)
        self.query_one("#run-header", Static).update(
            f"run {run.id} · {run.workflow} · {run.status} · {run.model_calls} calls · {run.escalations} escalations"
            f" · ${run.cost_usd:.4f}\n{' '.join(run.task.split())[:300]}"
            + (f"\nerror: {run.error}" if run.error else "")
        )
        tree = self.query_one("#steps", Tree)
        tree.clear()
        tree.root.expand()
        escalations = self.store.escalations(run.id)
        for step in self.store.steps(run.id):
            confidence = "-" if step.confidence is None else f"{step.confidence:.2f}"
            node = tree.root.add(
                f"{step.step_id} · {step.specialist} · {step.status} · {confidence} · {step.answered_by or ''}",
                data={"kind": "step", "id": step.step_id},
                expand=True,
            )
            node.add_leaf(f"model {step.model or '-'}")
            for line in evidence_text(step.evidence_json).splitlines():
                node.add_leaf(line.strip())
            if step.output_json:
                node.add_leaf(f"output {step.output_json[:200]}")
            for item in (e for e in escalations if e.step_id == step.step_id):
                after = "-" if item.confidence_after is None else f"{item.confidence_after:.2f}"
                rung = f"↑ {item.rung} {item.outcome} {item.confidence_before:.2f}→{after} ${item.cost_usd:.4f}"
                node.add_leaf(f"{rung}: {item.reason}")
        calls = self.query_one("#calls", DataTable)
        calls.clear()
        for call in self.store.model_calls(run.id):
            calls.add_row(
                str(call.id),
                call.step_id or "-",
                call.model,
                f"{call.tokens_in}+{call.tokens_out}",
                f"{call.latency_s:.2f}s",
                f"${call.cost_usd:.4f}",
                (call.error or "")[:60],
                key=str(call.id),
            )

    def action_retry(self) -> None:
        run = self.store.find_run(self.run_id)
        if run.status not in ("failed", "stopped"):
            self.notify(f"run {run.id} is {run.status}: only failed or stopped runs are retried", severity="warning")
            return
        self.app.resume(run.id)  # type: ignore[attr-defined]

    def action_cancel(self) -> None:
        if not self.app.cancel(self.run_id):  # type: ignore[attr-defined]
            self.notify("this run is not running in this window; stop its process (finished steps are kept)")

    @on(DataTable.RowHighlighted, "#calls")
    def _show_call(self, event: DataTable.RowHighlighted) -> None:
        call_id = int(str(event.row_key.value))
        call = next((c for c in self.store.model_calls(self.run_id) if c.id == call_id), None)
        if call is not None:
            reply = call.reply_json or json.dumps({"error": call.error, "raw_text": call.raw_text})
            self.query_one("#detail-pane", Static).update(
                f"prompt:\n{pretty(call.request_json)}\n\nreply:\n{pretty(reply)}"
            )


class ReviewScreen(Screen[None]):
    """Decisions waiting for a person: accept the best answer, or type one (a label or JSON)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "accept", "Accept best answer"),
        Binding("r", "refresh", "Refresh"),
    ]

    class Answered(Message):
        def __init__(self, review_id: int, status: str, error: str | None = None) -> None:
            super().__init__()
            self.review_id = review_id
            self.status = status
            self.error = error

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="reviews", cursor_type="row")
        yield Static("", id="question")
        yield Input(placeholder="answer: a label, or JSON of the specialist's output; enter to send", id="answer")
        yield Footer()

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined,no-any-return]

    def on_mount(self) -> None:
        self.query_one("#reviews", DataTable).add_columns("id", "run", "step", "specialist", "confidence")
        self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    def action_refresh(self) -> None:
        table = self.query_one("#reviews", DataTable)
        selected = self.selected()
        table.clear()
        for review in self.store.reviews(status="pending"):
            question = json.loads(review.question_json)
            table.add_row(
                str(review.id),
                review.run_id,
                review.step_id,
                review.specialist,
                f"{question.get('confidence', 0):.2f}",
                key=str(review.id),
            )
        if selected is not None and str(selected) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected)))
        if table.row_count == 0:
            self.query_one("#question", Static).update("no decisions waiting")

    def selected(self) -> int | None:
        table = self.query_one("#reviews", DataTable)
        if table.row_count == 0:
            return None
        return int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    @on(DataTable.RowHighlighted, "#reviews")
    def _show(self, event: DataTable.RowHighlighted) -> None:
        review = self.store.get_review(int(str(event.row_key.value)))
        self.query_one("#question", Static).update(question_text(json.loads(review.question_json)))

    def action_accept(self) -> None:
        review_id = self.selected()
        if review_id is None:
            return
        best = json.loads(self.store.get_review(review_id).question_json).get("best_answer")
        if best is None:
            self.notify("the models gave no answer to accept: type one", severity="warning")
            return
        self.answer(review_id, best)

    @on(Input.Submitted, "#answer")
    def _typed(self, event: Input.Submitted) -> None:
        review_id = self.selected()
        if review_id is None or not event.value.strip():
            return
        try:
            value: Any = json.loads(event.value)
        except ValueError:
            value = event.value.strip()  # a bare label
        event.input.value = ""
        self.answer(review_id, value)

    @work(exclusive=False, group="reviews")
    async def answer(self, review_id: int, value: Any) -> None:
        self.notify(f"review {review_id}: answer sent, resuming its run")
        try:
            report = await self.app.engine.review(review_id, value, who="tui")  # type: ignore[attr-defined]
        except Exception as exc:  # shown to the operator, the app keeps running
            self.post_message(self.Answered(review_id, "error", str(exc)))
            return
        self.post_message(self.Answered(review_id, report.status))

    @on(Answered)
    def _answered(self, message: Answered) -> None:
        if message.error:
            self.notify(f"review {message.review_id}: {message.error}", severity="error", timeout=8)
        else:
            self.notify(f"review {message.review_id} answered; run is {message.status}")
        self.action_refresh()


class ModelsScreen(Screen[None]):
    """Backends and their health; each specialist's model and threshold, editable into shoal.toml."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "edit", "Edit model/threshold"),
        Binding("a", "activate", "Activate head version"),
        Binding("p", "pull", "Pull Ollama model"),
        Binding("r", "refresh", "Refresh"),
    ]

    class Checked(Message):
        def __init__(self, rows: list[Any]) -> None:
            super().__init__()
            self.rows = rows

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="backends", cursor_type="row")
        yield DataTable(id="specialists", cursor_type="row")
        yield DataTable(id="heads", cursor_type="row")
        yield Input(placeholder="MODEL THRESHOLD, e.g. ollama:qwen2.5:3b 0.7 (enter saves to shoal.toml)", id="edit")
        yield Input(placeholder="Ollama model to pull, e.g. qwen2.5:3b (enter starts)", id="pull")
        yield ProgressBar(id="pull-progress", show_eta=True)
        yield Static("", id="pull-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#backends", DataTable).add_columns("backend", "status", "where", "models")
        self.query_one("#specialists", DataTable).add_columns("specialist", "model", "threshold", "answers with")
        self.query_one("#heads", DataTable).add_columns(
            "head", "active", "trained on", "labels", "held-out acc.", "ECE", "escalated", "before", "embeddings", "at"
        )
        self.query_one("#edit", Input).display = False
        self.query_one("#pull", Input).display = False
        self.query_one("#pull-progress", ProgressBar).display = False
        self.action_refresh()

    def action_refresh(self) -> None:
        table = self.query_one("#specialists", DataTable)
        table.clear()
        for setup in self.app.engine.specialist_settings():  # type: ignore[attr-defined]
            table.add_row(setup.name, setup.model, f"{setup.threshold:.2f}", setup.how, key=setup.name)
        heads = self.query_one("#heads", DataTable)
        heads.clear()
        for h in self.app.engine.heads():  # type: ignore[attr-defined]
            after, before = h.after or {}, h.before or {}
            heads.add_row(
                f"{h.specialist} v{h.version}",
                "active" if h.active else "",
                f"{h.examples} examples",
                str(h.labels),
                f"{after.get('accuracy', 0):.3f}",
                f"{after.get('ece', 0):.3f}",
                f"{after.get('escalated', 0):.1%}",
                f"{before.get('what', '')} {before.get('accuracy', 0):.3f}" if before else "-",
                h.embed_model,
                h.created_at.strftime("%Y-%m-%d %H:%M"),
                key=f"{h.specialist}:{h.version}",
            )
        self.check_backends()

    def action_activate(self) -> None:
        heads = self.query_one("#heads", DataTable)
        if heads.row_count == 0:
            self.notify("no trained heads yet: run `shoal train SPECIALIST --data FILE`", severity="warning")
            return
        name, _, version = str(heads.get_row_at(heads.cursor_row)[0]).rpartition(" v")
        try:
            self.app.engine.activate_head(name, int(version))  # type: ignore[attr-defined]
        except Exception as exc:  # shown to the operator
            self.notify(str(exc), severity="error")
            return
        self.notify(f"{name}: head v{version} is active")
        self.action_refresh()

    @work(exclusive=True, group="health")
    async def check_backends(self) -> None:
        rows = await self.app.engine.health()  # type: ignore[attr-defined]
        self.post_message(self.Checked(rows))

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        table = self.query_one("#backends", DataTable)
        table.clear()
        for row in message.rows:
            models = ", ".join(m.name for m in row.models[:6]) or "-"
            status = "ready" if row.reachable else f"unavailable: {row.reason[:80]}"
            table.add_row(row.backend, status, row.where, models)

    def action_edit(self) -> None:
        table = self.query_one("#specialists", DataTable)
        if table.row_count == 0:
            return
        _, model, threshold, _ = table.get_row_at(table.cursor_row)
        edit = self.query_one("#edit", Input)
        edit.display = True
        edit.value = f"{model} {threshold}"
        edit.focus()

    def action_pull(self) -> None:
        box = self.query_one("#pull", Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#pull")
    def _pull(self, event: Input.Submitted) -> None:
        if event.value.strip():
            event.input.display = False
            self.pull(event.value.strip())

    @work(exclusive=True, group="pull")
    async def pull(self, model: str) -> None:
        bar = self.query_one("#pull-progress", ProgressBar)
        status = self.query_one("#pull-status", Static)
        bar.display = True
        bar.update(total=None, progress=0)
        try:
            async for step in self.app.engine.pull(model):  # type: ignore[attr-defined]
                if step.total:
                    bar.update(total=step.total, progress=step.completed or 0)
                status.update(f"pull {model}: {step.status}")
        except Exception as exc:  # shown to the operator
            status.update(f"pull {model} failed: {exc}")
            return
        status.update(f"pulled {model}")
        self.check_backends()

    @on(Input.Submitted, "#edit")
    def _save(self, event: Input.Submitted) -> None:
        from shoal.config import save_specialist
        from shoal.errors import ConfigError

        table = self.query_one("#specialists", DataTable)
        name = str(table.get_row_at(table.cursor_row)[0])
        parts = event.value.split()
        try:
            if len(parts) != 2:
                raise ConfigError("give MODEL THRESHOLD, e.g. embedded:smollm2-135m 0.7")
            threshold = float(parts[1])
            settings = self.app.settings  # type: ignore[attr-defined]
            path = settings.source or Path.cwd() / "shoal.toml"
            save_specialist(path, name, model=parts[0], threshold=threshold)
        except (ValueError, ConfigError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.reload_settings(path)  # type: ignore[attr-defined]
        event.input.display = False
        self.notify(f"{name}: {parts[0]} at {threshold:.2f}, saved to {path}")
        self.action_refresh()


class NewTaskScreen(Screen[None]):
    """Start a task (planned by the shoal) or a ticket batch (a CSV/JSONL path)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "Type a task for the planner, or 'triage PATH' to triage a ticket file (CSV/JSONL, text column "
            "'instruction'). Enter starts it; watch it on Runs.",
            id="help-text",
        )
        yield Input(placeholder="task text, or: triage examples/tickets.csv", id="task")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#task", Input).focus()

    @on(Input.Submitted, "#task")
    def _start(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.notify("type a task first", severity="warning")
            return
        self.app.start(text)  # type: ignore[attr-defined]
        self.app.pop_screen()


class ShoalApp(App[None]):
    TITLE = "shoal"
    CSS_PATH = Path(__file__).with_name("app.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("v", "reviews", "Reviews"),
        Binding("n", "new_task", "New task"),
        Binding("m", "models", "Models"),
        Binding("question_mark", "help", "Help"),
    ]

    class Started(Message):
        def __init__(self, what: str, summary: str) -> None:
            super().__init__()
            self.what = what
            self.summary = summary

    def __init__(self, settings: Settings | None = None, *, engine: Any = None) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self._engine = engine
        self.store = engine.store if engine is not None else Store(self.settings.db_path)
        self._run_workers: dict[str, Any] = {}

    @property
    def engine(self) -> Any:
        if self._engine is None:  # built on first use: reading runs needs no models
            from shoal.engine import Shoal

            self._engine = Shoal(self.settings, store=self.store)
        return self._engine

    def on_mount(self) -> None:
        self.sub_title = str(self.store.path)
        self.push_screen(RunsScreen())

    def action_reviews(self) -> None:
        if not isinstance(self.screen, ReviewScreen):
            self.push_screen(ReviewScreen())

    def action_new_task(self) -> None:
        self.push_screen(NewTaskScreen())

    def action_models(self) -> None:
        if not isinstance(self.screen, ModelsScreen):
            self.push_screen(ModelsScreen())

    def reload_settings(self, path: Path) -> None:
        """New thresholds and models take effect for work started from now on."""
        self.settings = Settings.load(path)
        if self._engine is not None:
            old = self._engine
            from shoal.engine import Shoal

            self._engine = Shoal(self.settings, store=self.store)
            self.run_worker(old.aclose(), group="close")

    def cancel(self, run_id: str) -> bool:
        """Cancel a run this window started; its finished steps stay, `t` or `shoal resume` go on."""
        worker = self._run_workers.get(run_id)
        if worker is None or worker.is_finished:
            return False
        worker.cancel()
        self.notify(f"run {run_id} cancelled; finished steps are kept")
        return True

    @work(group="tasks")
    async def resume(self, run_id: str) -> None:
        from textual.worker import get_current_worker

        self._run_workers[run_id] = get_current_worker()
        try:
            report = await self.engine.resume(run_id)
        except Exception as exc:  # shown to the operator; the app keeps running
            self.notify(f"retry of {run_id} failed: {exc}", severity="error", timeout=10)
            return
        self.post_message(self.Started(f"run {run_id}", report.summary()))

    @work(group="tasks")
    async def start(self, text: str) -> None:
        """Run a task or a ticket batch in the background; Runs shows it as it goes."""
        if text.startswith("triage "):
            from shoal.tickets.files import read_tickets, ticket_source

            path = Path(text.removeprefix("triage ").strip())
            try:
                rows = await asyncio.to_thread(
                    lambda: list(read_tickets(path.expanduser(), max_chars=self.settings.tickets.max_chars))
                )
            except (OSError, ShoalError) as exc:
                self.notify(str(exc), severity="error")
                return
            try:
                outcomes = await self.engine.triage(rows, source=ticket_source(path))
            except Exception as exc:  # shown to the operator; finished tickets are saved
                self.notify(f"triage stopped: {exc}", severity="error", timeout=10)
                return
            done = sum(o.status == "done" for o in outcomes)
            waiting = sum(o.status == "waiting" for o in outcomes)
            self.post_message(self.Started(f"triage {path.name}", f"{done} done, {waiting} waiting for review"))
            return
        from textual.worker import get_current_worker

        worker = get_current_worker()
        try:
            report = await self.engine.run(text, on_start=lambda run_id: self._run_workers.__setitem__(run_id, worker))
        except Exception as exc:  # shown to the operator; the app keeps running
            self.notify(f"task failed: {exc}", severity="error", timeout=10)
            return
        self.post_message(self.Started(f"run {report.run_id}", report.summary()))

    def on_shoal_app_started(self, message: Started) -> None:
        self.notify(f"{message.what}: {message.summary}", timeout=8)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Runs", "All runs and ticket batches, live", self._to_runs)
        yield SystemCommand("Review queue", "Decisions waiting for a person", self.action_reviews)
        yield SystemCommand("New task", "Start a task or a ticket batch", self.action_new_task)
        yield SystemCommand("Models", "Backends, health, models and thresholds", self.action_models)
        if isinstance(screen, RunsScreen):
            for status in STATUSES:
                label = status or "all"
                yield SystemCommand(
                    f"Show {label} runs", f"Filter the runs by status: {label}", partial(screen.show_status, status)
                )
        if isinstance(screen, RunScreen):
            yield SystemCommand("Retry this run", "Resume a failed or stopped run", screen.action_retry)
            yield SystemCommand("Cancel this run", "Stop a run started in this window", screen.action_cancel)
        if isinstance(screen, ReviewScreen):
            yield SystemCommand("Accept the best answer", "For the selected review", screen.action_accept)

    def _to_runs(self) -> None:
        while not isinstance(self.screen, RunsScreen) and len(self.screen_stack) > 1:
            self.pop_screen()

    def action_help(self) -> None:
        self.notify(
            "Runs: enter opens a run, f cycles the status filter, v the review queue, n a new task, m models.\n"
            "Run: arrows move through model calls; escape goes back.\n"
            "Reviews: a accepts the best answer, or type a label / JSON and press enter.\n"
            "Models: e edits a specialist's model and threshold (saved to shoal.toml).\n"
            "ctrl+p opens the command palette.",
            title="shoal",
            timeout=10,
        )

    async def on_unmount(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
