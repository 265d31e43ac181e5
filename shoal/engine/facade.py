"""The `Shoal` facade: construction, the calls the faces make, and closing. Every method is one
line into the part that does the work (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from langgraph.types import Command

from shoal.agents.escalation import Budget, LadderConfig
from shoal.agents.planner import Plan, Planner
from shoal.backends import build_router
from shoal.config import Settings
from shoal.engine import admin, reviews, views
from shoal.engine.queue import Enqueued, enqueue_tickets
from shoal.engine.reports import RunReport
from shoal.engine.reviews import ReviewDetail
from shoal.engine.runs import RunDriver
from shoal.engine.views import HeadSummary, RunDetail, RunSummary
from shoal.engine.wiring import TASK, Specialists, Wiring, default_specialists
from shoal.evaluation import Labelled
from shoal.graphs.task import record_call
from shoal.models.base import BackendHealth
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.specialists.classifier import Classifier
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import MIN_PER_LABEL
from shoal.status import RunStatus
from shoal.store.db import Pruned, Store, StoreLedger
from shoal.tickets.files import BadRow, TicketRow, write_results
from shoal.tickets.triage import WORKFLOW as TICKETS
from shoal.tickets.triage import TicketDesk, TicketOutcome
from shoal.training import Progress as TrainProgress
from shoal.training import TrainReport

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from shoal.engine.admin import SpecialistSetup
    from shoal.models.ollama import PullProgress

T = TypeVar("T")


class Shoal:
    """The engine. One per process: it owns the database connection and the checkpointer."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        router: ModelRouter | None = None,
        specialists: Specialists | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self.router = router or build_router(self.settings)
        self.router.recorder = record_call
        self.store = store or Store(self.settings.db_path)
        self.wiring = Wiring(self.settings, self.router, self.store, specialists)
        self.runs = RunDriver(self.wiring)
        self.tickets = TicketDesk(self.store, self.settings, self.runs)
        self.runs.on_finish[TICKETS] = self.tickets.finish

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Shoal:
        return cls(Settings.load(path))

    async def __aenter__(self) -> Shoal:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- what the parts hold ----------------------------------------------------------------

    @property
    def specialists(self) -> Specialists:
        return self.wiring.specialists

    @specialists.setter
    def specialists(self, chosen: Specialists) -> None:
        # read at each run (the graph's context is built per run), so a swap takes effect at once
        self.wiring.specialists = chosen

    @property
    def planner(self) -> Planner:
        return self.wiring.planner

    @property
    def ledger(self) -> StoreLedger:
        return self.wiring.ledger

    def default_specialists(self) -> Specialists:
        return default_specialists(self.router, self.settings)

    def ticket_specialists(self) -> Specialists:
        return self.wiring.ticket_specialists()

    def ladder_config(self, name: str, threshold: float) -> LadderConfig:
        return self.wiring.ladder_config(name, threshold)

    def budget(self, run_id: str) -> Budget:
        return self.wiring.budget(run_id)

    async def graph(self, workflow: str = TASK) -> CompiledStateGraph[Any, Any, Any, Any]:
        return await self.wiring.graph(workflow)

    def task_graph(self, checkpointer: Any = None) -> Any:
        """The task graph compiled as a plain LangGraph graph, e.g. to use as a subgraph.

        Without a checkpointer it uses its parent's. Its state: `run_id`, `task`, optionally
        `plan`; the answer lands in `answer`. Steps are recorded in this Shoal's store. Its
        nodes read this Shoal's `TaskRuntime` as their LangGraph context, and the graph
        returned here carries it: a parent graph passes no `context=` for it (and its own
        context, if it has one, does not reach shoal's nodes).
        """
        return self.wiring.task_graph(checkpointer)

    # --- runs -------------------------------------------------------------------------------

    async def run(
        self,
        task: str | bytes,
        *,
        plan: Plan | dict[str, Any] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> RunReport:
        """Plan (unless a plan is given) and run a task; returns when it is done or waits for a person.

        `on_start` gets the run id as soon as the run exists (to show it, or to cancel it)."""
        return await self.runs.run(task, plan=plan, on_start=on_start)

    def run_sync(self, task: str | bytes, *, plan: Plan | dict[str, Any] | None = None) -> RunReport:
        return asyncio.run(self.closing(self.run(task, plan=plan)))

    async def resume(self, run_id: str) -> RunReport:
        """Continue a run that crashed, was stopped, or waits on reviews answered meanwhile."""
        return await self.runs.resume(run_id)

    async def review(self, review_id: int, answer: Any, *, who: str = "a person") -> RunReport:
        """Answer a pending human decision and let its run go on at once."""
        return await self.runs.review(review_id, answer, who=who)

    async def drive(
        self,
        run_id: str,
        state: dict[str, Any] | Command[Any] | None,
        workflow: str | None = None,
        *,
        fresh: bool = False,
    ) -> RunReport:
        return await self.runs.drive(run_id, state, workflow, fresh=fresh)

    def report(self, run_id: str) -> RunReport:
        return self.runs.report(run_id)

    def check_plan(self, plan: Any, *, what: str = "the plan") -> Plan:
        """A plan a person gave (JSON data) as one that can run here, or an error saying why not."""
        return reviews.check_plan(self.wiring, plan, what=what)

    # --- what the faces show ----------------------------------------------------------------

    def list_runs(self, *, status: RunStatus | None = None, limit: int = 20) -> list[RunSummary]:
        return views.run_summaries(self.store, status=status, limit=limit)

    def run_detail(self, run_id: str) -> RunDetail:
        """A run (id or unique prefix) with its steps, escalations and model calls, as typed rows."""
        return views.run_detail(self.store, run_id)

    # --- reviews ----------------------------------------------------------------------------

    async def answer_review(
        self,
        review_id: int,
        text: str | None = None,
        *,
        accept: bool = False,
        who: str = "a person",
        queue: bool = False,
    ) -> RunReport:
        """Answer a review with what a person typed (JSON, a label, or plain text for a one-text
        output), or `accept` the models' best answer; its run goes on at once, or (`queue`) on
        whichever worker is free. See `reviews`."""
        return await reviews.answer(self.runs, review_id, text, accept=accept, who=who, queue=queue)

    def review_detail(self, review_id: int) -> ReviewDetail:
        return reviews.detail(self.wiring, review_id)

    def pending_reviews(self) -> list[ReviewDetail]:
        return reviews.pending(self.wiring)

    def best_answer(self, review_id: int) -> dict[str, Any] | None:
        return reviews.best_answer(self.store, review_id)

    # --- tickets ----------------------------------------------------------------------------

    async def triage_ticket(self, row: TicketRow | BadRow, *, source: str = "", force: bool = False) -> TicketOutcome:
        """Triage one ticket (see `TicketDesk.triage_ticket`)."""
        return await self.tickets.triage_ticket(row, source=source, force=force)

    async def triage(
        self,
        rows: Iterable[TicketRow | BadRow],
        *,
        source: str = "",
        concurrency: int = 1,
        force: bool = False,
        on_ticket: Callable[[TicketOutcome], None] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> list[TicketOutcome]:
        """Triage a batch (see `TicketDesk.triage`)."""
        return await self.tickets.triage(
            rows, source=source, concurrency=concurrency, force=force, on_ticket=on_ticket, on_pause=on_pause
        )

    def enqueue_tickets(self, rows: Iterable[TicketRow | BadRow], *, source: str, force: bool = False) -> Enqueued:
        """Put a batch on the database's queue for `shoal worker` processes (see `shoal.engine.queue`)."""
        return enqueue_tickets(self.store, rows, source=source, max_chars=self.settings.tickets.max_chars, force=force)

    def export_tickets(self, source: str, keys: Sequence[str], out: Path) -> int:
        """Write these tickets' results to `out` (.jsonl or .csv), atomically; returns how many."""
        return write_results(self.store.tickets(source, keys), out)

    # --- trained heads ----------------------------------------------------------------------

    def embedder(self, key: str) -> Embedder:
        return self.wiring.heads.embedder(key)

    def attach_heads(self, specialists: Specialists) -> None:
        self.wiring.heads.attach(specialists)

    def trainable(self, key: str) -> Classifier:
        return self.wiring.heads.trainable(key)

    def learner(self, key: str) -> Classifier | Extractor[Any]:
        """What `shoal train KEY` trains: a classifier, or an extractor (into a span head)."""
        return self.wiring.heads.learner(key)

    async def train(
        self,
        key: str,
        *,
        files: Sequence[Labelled] = (),
        holdout: float = 0.2,
        min_per_label: int = MIN_PER_LABEL,
        baseline: int = 200,
        force: bool = False,
        progress: TrainProgress | None = None,
    ) -> TrainReport:
        """(Re)train `key`'s head from `files` and stored examples; see `shoal.training`."""
        return await self.wiring.heads.train(
            key,
            files=files,
            holdout=holdout,
            min_per_label=min_per_label,
            baseline=baseline,
            force=force,
            progress=progress,
        )

    def heads(self) -> list[HeadSummary]:
        return self.wiring.heads.summaries()

    def activate_head(self, key: str, version: int) -> None:
        self.wiring.heads.activate(key, version)

    # --- backends ---------------------------------------------------------------------------

    async def health(self) -> list[BackendHealth]:
        return await admin.health(self.settings)

    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        return admin.pull(self.settings, model)

    def specialist_settings(self) -> list[SpecialistSetup]:
        return admin.specialist_setups(self.wiring)

    # --- closing ----------------------------------------------------------------------------

    async def closing(self, work: Awaitable[T]) -> T:
        """Await `work`, then close the engine (for one-shot callers such as the CLI)."""
        try:
            return await work
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.wiring.aclose()
        await self.router.aclose()

    def run_lines(self, *, status: RunStatus | None = None, limit: int = 200) -> list[views.RunLine]:
        """The newest runs with their progress (steps done of planned, reviews pending)."""
        return views.run_lines(self.store, status=status, limit=limit)

    def exchange(self, call: views.CallLine) -> views.Exchange:
        """A model call's prompt and reply as text (from a `run_detail` call line)."""
        return views.exchange(call)

    def prune(self, statuses: Sequence[str], *, older_than: timedelta | None = None, dry_run: bool = False) -> Pruned:
        """Delete runs with one of `statuses` not touched for `older_than` (`[store] retention_days`
        when None) with everything they recorded; see `Store.prune_runs`."""
        age = older_than if older_than is not None else timedelta(days=self.settings.store.retention_days)
        return self.store.prune_runs(statuses=statuses, before=datetime.now(UTC) - age, dry_run=dry_run)
