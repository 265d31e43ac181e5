"""`shoal tui`: live runs, a run's steps and model calls, the human review queue, models.

The app is small: its bindings and command palette, switching between the screens (one module
each, in `screens/`), the work that outlives a screen (tasks, retries, ticket batches and the
runs that answered reviews resume, in Textual workers), and the engine's lifecycle, held by a
`Core` that never imports Textual. The screens read through the engine's views (runs of other
processes on the same database show up live) and act through it; they never talk to a model
backend. Workers hold the engine through `Core.lease()`, so a settings reload never closes it
under them, and report through typed messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, get_current_worker

from shoal.config import Settings
from shoal.errors import ShoalError
from shoal.store import Store
from shoal.tui.commands import TriageCommand, triage_summary
from shoal.tui.core import Core
from shoal.tui.messages import (
    AnswerRequested,
    CancelRequested,
    RetryRequested,
    ReviewAnswered,
    StartRequested,
    TriageRequested,
    WorkFailed,
    WorkFinished,
)
from shoal.tui.screens import ModelsScreen, NewTaskScreen, ReviewScreen, RunsScreen
from shoal.tui.widgets import ShoalScreen

if TYPE_CHECKING:
    from shoal.engine import Shoal
    from shoal.tickets.triage import TicketOutcome


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

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: Shoal | None = None,
        build: Callable[[Settings, Store], Shoal] | None = None,
    ) -> None:
        """`engine`: the one to start with; `build`: how a reload of the settings makes the next
        one over the same store (by default `Shoal(settings, store=store)`)."""
        super().__init__()
        self.core = Core(settings, engine=engine, build=build)
        self._run_workers: dict[str, Worker[None]] = {}

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def engine(self) -> Shoal:
        return self.core.engine

    # --- screens ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.sub_title = self.store.where
        self.push_screen(RunsScreen(self.core))
        self.run_worker(self._start_engine(), group="engine")

    async def _start_engine(self) -> None:
        """Import the engine while Runs is on screen, so the other screens open without a wait."""
        try:
            await self.core.start()
        except Exception as exc:  # shown to the operator; the screens say it again when used
            self.post_message(WorkFailed(f"the engine could not start: {exc}", timeout=15))

    def action_reviews(self) -> None:
        if not isinstance(self.screen, ReviewScreen):
            self.push_screen(ReviewScreen(self.core))

    def action_new_task(self) -> None:
        self.push_screen(NewTaskScreen())

    def action_models(self) -> None:
        if not isinstance(self.screen, ModelsScreen):
            self.push_screen(ModelsScreen(self.core))

    def _to_runs(self) -> None:
        while not isinstance(self.screen, RunsScreen) and len(self.screen_stack) > 1:
            self.pop_screen()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Runs", "All runs and ticket batches, live", self._to_runs)
        yield SystemCommand("Review queue", "Decisions waiting for a person", self.action_reviews)
        yield SystemCommand("New task", "Start a task or a ticket batch", self.action_new_task)
        yield SystemCommand("Models", "Backends, health, models and thresholds", self.action_models)
        if isinstance(screen, ShoalScreen):
            yield from screen.commands()

    def action_help(self) -> None:
        self.notify(
            "Runs: enter opens a run, f cycles the status filter, v the review queue, n a new task, m models.\n"
            "Run: tab moves between steps, calls and the call pane (reply, then prompt); arrows scroll.\n"
            "Reviews: a accepts the best answer (asks again when unsure), / types a label or JSON.\n"
            "Models: e edits a specialist's threshold and/or model (saved to shoal.toml).\n"
            "ctrl+p opens the command palette.",
            title="shoal",
            timeout=10,
        )

    # --- work that outlives its screen ----------------------------------------------------------

    @on(StartRequested)
    def _start_requested(self, message: StartRequested) -> None:
        self.start(message.text)

    @on(TriageRequested)
    def _triage_requested(self, message: TriageRequested) -> None:
        self.triage(message.command)

    @on(RetryRequested)
    def _retry_requested(self, message: RetryRequested) -> None:
        self.resume(message.run_id)

    @on(AnswerRequested)
    def _answer_requested(self, message: AnswerRequested) -> None:
        self.answer(message.review_id, message.text, accept=message.accept)

    @on(CancelRequested)
    def _cancel_requested(self, message: CancelRequested) -> None:
        """Cancel a run this window started; its finished steps stay, `t` or `shoal resume` go on."""
        worker = self._run_workers.get(message.run_id)
        if worker is None or worker.is_finished:
            self.notify("this run is not running in this window; stop its process (finished steps are kept)")
            return
        worker.cancel()
        self.notify(f"run {message.run_id} cancelled; finished steps are kept", markup=False)

    @work(group="tasks")
    async def resume(self, run_id: str) -> None:
        self._run_workers[run_id] = get_current_worker()
        try:
            async with self.core.lease() as engine:
                report = await engine.resume(run_id)
        except Exception as exc:  # shown to the operator; the app keeps running
            self.post_message(WorkFailed(f"retry of {run_id} failed: {exc}", timeout=10))
            return
        self.post_message(WorkFinished(f"run {run_id}", report.summary()))

    @work(group="reviews")
    async def answer(self, review_id: int, text: str | None, *, accept: bool = False) -> None:
        """Send a person's answer; the engine reads it (or refuses it, saying why) and resumes the
        run at once (models may run for a while).

        On the app, not the Review screen: leaving the screen would cancel the resumed run."""
        self.notify(f"review {review_id}: answer sent, resuming its run")
        try:
            async with self.core.lease() as engine:
                report = await engine.answer_review(review_id, text, accept=accept, who="tui")
        except Exception as exc:  # an AnswerError says what the specialist takes; shown on the queue
            self.post_message(ReviewAnswered(review_id, None, str(exc)))
            return
        self.post_message(ReviewAnswered(review_id, report.status))

    @on(ReviewAnswered)
    def _review_answered(self, message: ReviewAnswered) -> None:
        if message.error:
            self.notify(f"review {message.review_id}: {message.error}", severity="error", timeout=8, markup=False)
        else:
            self.notify(f"review {message.review_id} answered; run is {message.status}", markup=False)
        for screen in self.screen_stack:
            if isinstance(screen, ReviewScreen):
                screen.answered(message)

    @work(group="tasks")
    async def start(self, text: str) -> None:
        """Run a task in the background; Runs shows it as it goes."""
        worker = get_current_worker()
        try:
            async with self.core.lease() as engine:
                report = await engine.run(text, on_start=lambda run_id: self._run_workers.__setitem__(run_id, worker))
        except Exception as exc:  # shown to the operator; the app keeps running
            self.post_message(WorkFailed(f"task failed: {exc}", timeout=10))
            return
        self.post_message(WorkFinished(f"run {report.run_id}", report.summary()))

    @work(group="tasks")
    async def triage(self, command: TriageCommand) -> None:
        """Triage a ticket file as `shoal triage` does; Runs shows its tickets as they go."""
        from shoal.tickets.files import ticket_source

        try:
            rows = await self.core.read_tickets(command)
        except (OSError, ShoalError) as exc:
            self.post_message(WorkFailed(str(exc)))
            return
        source = ticket_source(command.file)
        outcomes: list[TicketOutcome] = []
        try:
            async with self.core.lease() as engine:
                try:
                    await engine.triage(
                        rows,
                        source=source,
                        concurrency=command.concurrency,
                        force=command.force,
                        on_ticket=outcomes.append,
                    )
                finally:  # also when stopped: what finished is in the database, and in the file
                    written = await self._export(engine, command, source, [row.key for row in rows])
        except Exception as exc:  # shown to the operator; finished tickets are saved
            self.post_message(WorkFailed(f"triage of {command.file.name} stopped: {exc}", timeout=10))
            return
        self.post_message(WorkFinished(f"triage {command.file.name}", triage_summary(outcomes) + written))

    async def _export(self, engine: Shoal, command: TriageCommand, source: str, keys: list[str]) -> str:
        if command.out is None:
            return ""
        out = command.out
        count = await asyncio.to_thread(engine.export_tickets, source, keys, out)
        return f"; wrote {count} tickets to {out}"

    @on(WorkFinished)
    def _work_finished(self, message: WorkFinished) -> None:
        self.notify(f"{message.what}: {message.summary}", timeout=8, markup=False)

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        self.notify(message.text, severity="error", timeout=message.timeout, markup=False)

    async def on_unmount(self) -> None:
        await self.core.aclose()
