"""`shoal tui`: live runs, a run's steps and model calls, the human review queue, models.

The app is small: its bindings and command palette, switching between the screens (one module
each, in `screens/`), the work that outlives a screen (tasks, retries, ticket batches and the
runs that answered reviews resume, in Textual workers), and the engine's lifecycle, held by a
`Core` that never imports Textual. The screens read the store, so runs of other processes on the
same database show up live, and act through the engine; they never talk to a model backend.
Workers report through typed messages.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from shoal.tui.core import Core
from shoal.tui.messages import (
    AnswerRequested,
    CancelRequested,
    RetryRequested,
    ReviewAnswered,
    StartRequested,
    WorkFailed,
    WorkFinished,
)
from shoal.tui.screens import ModelsScreen, NewTaskScreen, ReviewScreen, RunsScreen
from shoal.tui.widgets import ShoalScreen

if TYPE_CHECKING:
    from shoal.engine import Shoal


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

    def __init__(self, settings: Settings | None = None, *, engine: Shoal | None = None) -> None:
        super().__init__()
        self.core = Core(settings, engine=engine)
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
        self.sub_title = str(self.store.path)
        self.push_screen(RunsScreen(self.core))

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
            "Run: arrows move through model calls; escape goes back.\n"
            "Reviews: a accepts the best answer, or type a label / JSON and press enter.\n"
            "Models: e edits a specialist's model and threshold (saved to shoal.toml).\n"
            "ctrl+p opens the command palette.",
            title="shoal",
            timeout=10,
        )

    # --- work that outlives its screen ----------------------------------------------------------

    @on(StartRequested)
    def _start_requested(self, message: StartRequested) -> None:
        self.start(message.text)

    @on(RetryRequested)
    def _retry_requested(self, message: RetryRequested) -> None:
        self.resume(message.run_id)

    @on(AnswerRequested)
    def _answer_requested(self, message: AnswerRequested) -> None:
        self.answer(message.review_id, message.value)

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
            report = await self.engine.resume(run_id)
        except Exception as exc:  # shown to the operator; the app keeps running
            self.post_message(WorkFailed(f"retry of {run_id} failed: {exc}", timeout=10))
            return
        self.post_message(WorkFinished(f"run {run_id}", report.summary()))

    @work(group="reviews")
    async def answer(self, review_id: int, value: Any) -> None:
        """Send a person's answer; the engine resumes the run at once (models may run for a while).

        On the app, not the Review screen: leaving the screen would cancel the resumed run."""
        self.notify(f"review {review_id}: answer sent, resuming its run")
        try:
            report = await self.engine.review(review_id, value, who="tui")
        except Exception as exc:  # shown to the operator, the app keeps running
            self.post_message(ReviewAnswered(review_id, "error", str(exc)))
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
                screen.action_refresh()

    @work(group="tasks")
    async def start(self, text: str) -> None:
        """Run a task or a ticket batch in the background; Runs shows it as it goes."""
        if text.startswith("triage "):
            await self._triage(Path(text.removeprefix("triage ").strip()))
            return
        worker = get_current_worker()
        try:
            report = await self.engine.run(text, on_start=lambda run_id: self._run_workers.__setitem__(run_id, worker))
        except Exception as exc:  # shown to the operator; the app keeps running
            self.post_message(WorkFailed(f"task failed: {exc}", timeout=10))
            return
        self.post_message(WorkFinished(f"run {report.run_id}", report.summary()))

    async def _triage(self, path: Path) -> None:
        from shoal.tickets.files import ticket_source

        try:
            rows = await self.core.read_tickets(path)
        except (OSError, ShoalError) as exc:
            self.post_message(WorkFailed(str(exc)))
            return
        try:
            outcomes = await self.engine.triage(rows, source=ticket_source(path))
        except Exception as exc:  # shown to the operator; finished tickets are saved
            self.post_message(WorkFailed(f"triage stopped: {exc}", timeout=10))
            return
        done = sum(o.status == "done" for o in outcomes)
        waiting = sum(o.status == "waiting" for o in outcomes)
        self.post_message(WorkFinished(f"triage {path.name}", f"{done} done, {waiting} waiting for review"))

    @on(WorkFinished)
    def _work_finished(self, message: WorkFinished) -> None:
        self.notify(f"{message.what}: {message.summary}", timeout=8, markup=False)

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        self.notify(message.text, severity="error", timeout=message.timeout, markup=False)

    async def on_unmount(self) -> None:
        await self.core.aclose()
