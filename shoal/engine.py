"""`Shoal`: builds backends, specialists and graphs from configuration; runs, resumes, reviews.

```python
from shoal import Shoal

shoal = Shoal.from_config()
report = shoal.run_sync("Ticket: order 123 arrived broken. Categorise it and get the order id.")
print(report.status, report.answer)
```
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from pydantic import BaseModel, Field

from shoal.agents.escalation import Budget, LadderConfig
from shoal.agents.planner import DESCRIPTIONS, Plan, PlanError, Planner
from shoal.backends import build_backend, build_router
from shoal.config import Settings, SpecialistSettings
from shoal.errors import ConfigError, ShoalError, StoreError, TaskError
from shoal.evaluation import Labelled
from shoal.graphs.task import TaskRuntime, build_task_graph, record_call, task_subgraph
from shoal.inputs import check_text
from shoal.models.base import BACKENDS, BackendHealth, RetryPolicy
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.specialists.base import Specialist
from shoal.specialists.classifier import Classifier
from shoal.specialists.coder import Coder
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import MIN_PER_LABEL, TrainedHead
from shoal.specialists.summarizer import Summarizer
from shoal.store.db import BUSY_TIMEOUT_MS, Store, StoreLedger
from shoal.tickets.files import BadRow, TicketRow
from shoal.tickets.plan import ticket_specialists
from shoal.tickets.triage import WORKFLOW as TICKETS
from shoal.tickets.triage import TicketDesk, TicketOutcome
from shoal.training import Progress as TrainProgress
from shoal.training import TrainReport, load_head, train_head


class HeadSummary(BaseModel):
    specialist: str
    version: int
    active: bool
    embed_model: str
    labels: int
    examples: int
    created_at: datetime
    after: dict[str, Any] | None = None
    before: dict[str, Any] | None = None


class Entities(BaseModel):
    """What the general-purpose extractor pulls out of text."""

    names: list[str] = Field(default_factory=list, max_length=5, description="people and organisations named")
    ids: list[str] = Field(default_factory=list, max_length=5, description="order, invoice, account or ticket numbers")
    emails: list[str] = Field(default_factory=list, max_length=5, description="email addresses")
    amounts: list[str] = Field(default_factory=list, max_length=5, description="money amounts with currency")
    dates: list[str] = Field(default_factory=list, max_length=5, description="dates and times")


class ReviewItem(BaseModel):
    id: int
    run_id: str
    step_id: str
    specialist: str
    question: dict[str, Any]


class RunReport(BaseModel):
    run_id: str
    status: str
    answer: dict[str, Any] | None = None
    error: str | None = None
    reviews: list[ReviewItem] = Field(default_factory=list)
    model_calls: int = 0
    escalations: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        waiting = f", {len(self.reviews)} waiting for review" if self.reviews else ""
        return (
            f"run {self.run_id} {self.status}: {self.model_calls} model calls, {self.escalations} escalations"
            f"{waiting}, {self.tokens_in}+{self.tokens_out} tokens, ${self.cost_usd:.4f} frontier, "
            f"{self.seconds:.1f}s"
        )


def check_task(task: str | bytes, limit: int) -> str:
    """Refuse what cannot be a task before anything is written."""
    hint = "split it, or raise max_task_chars in shoal.toml (small models read a few thousand tokens at most)"
    return check_text(task, limit, what="task", raise_hint=hint)


class Shoal:
    """The engine. One per process: it owns the database connection and the checkpointer."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        router: ModelRouter | None = None,
        specialists: dict[str, Specialist[Any, Any]] | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self.router = router or build_router(self.settings)
        self.router.recorder = record_call
        self.store = store or Store(self.settings.db_path)
        self.ledger = StoreLedger(self.store)
        self.specialists = specialists or self.default_specialists()
        descriptions = {
            name: DESCRIPTIONS.get(name, getattr(s, "description", name)) for name, s in self.specialists.items()
        }
        self.planner = Planner(
            self.router,
            self.settings.model_for("planner"),
            descriptions,
            max_steps=self.settings.max_plan_steps,
            threshold=self.settings.threshold_for("planner", Planner.default_threshold),
        )
        self._budgets: dict[str, Budget] = {}
        self._exit = AsyncExitStack()
        self._graphs: dict[str, Any] = {}
        self._saver: Any = None
        self._ticket_specialists: dict[str, Specialist[Any, Any]] | None = None
        self._lock = asyncio.Lock()
        self._fresh: set[str] = set()
        self._ladder_configs: dict[tuple[str, float], LadderConfig] = {}
        self._embedders: dict[str, Embedder] = {}
        self._attached: set[str] = set()
        self.tickets = TicketDesk(self.store, self.settings, self)

    async def __aenter__(self) -> Shoal:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Shoal:
        return cls(Settings.load(path))

    def default_specialists(self) -> dict[str, Specialist[Any, Any]]:
        s = self.settings

        def threshold(name: str, default: float) -> float:
            return s.threshold_for(name, default)

        return {
            "classifier": Classifier(
                self.router,
                s.model_for("classifier"),
                s.classifier_labels,
                threshold=threshold("classifier", Classifier.default_threshold),
            ),
            "extractor": Extractor(
                self.router,
                s.model_for("extractor"),
                Entities,
                threshold=threshold("extractor", Extractor.default_threshold),
            ),
            "summarizer": Summarizer(
                self.router,
                s.model_for("summarizer"),
                threshold=threshold("summarizer", Summarizer.default_threshold),
            ),
            "coder": Coder(self.router, s.model_for("coder"), threshold=threshold("coder", Coder.default_threshold)),
        }

    # --- wiring ---------------------------------------------------------------------------

    def ladder_config(self, name: str, threshold: float) -> LadderConfig:
        key = (name, threshold)
        if key not in self._ladder_configs:  # built once per specialist, not once per step
            self._ladder_configs[key] = self._build_ladder_config(threshold)
        return self._ladder_configs[key]

    def _build_ladder_config(self, threshold: float) -> LadderConfig:
        e = self.settings.escalation
        frontier = self.settings.frontier_model
        unavailable = None
        if (
            frontier is not None
            and frontier.startswith("openai:")
            and self.settings.openai.base_url is None  # a local server may need no key
            and not os.environ.get(self.settings.openai.api_key_env)
        ):
            unavailable = f"{self.settings.openai.api_key_env} is not set"
        return LadderConfig(
            threshold=threshold,
            resample=e.resample,
            resample_temperature=e.resample_temperature,
            frontier=frontier,
            frontier_unavailable=unavailable,
            human=e.human,
        )

    def budget(self, run_id: str) -> Budget:
        if run_id not in self._budgets:
            e = self.settings.escalation
            self._budgets[run_id] = Budget(
                per_run_usd=e.frontier_per_run_usd, per_day_usd=e.frontier_per_day_usd, ledger=self.ledger
            )
        return self._budgets[run_id]

    async def graph(self, workflow: str = "task") -> Any:
        """A compiled graph with the SQLite checkpointer (one checkpointer per process)."""
        async with self._lock:
            if self._saver is None:
                connecting = aiosqlite.connect(str(self.store.path), timeout=BUSY_TIMEOUT_MS / 1000)
                # aiosqlite's worker thread would keep a script that never calls aclose() alive
                # after its last await; as a daemon it does not (every write is awaited first)
                worker = getattr(connecting, "_thread", None)
                if worker is not None and not worker.is_alive():
                    worker.daemon = True
                conn = await self._exit.enter_async_context(connecting)
                await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                await conn.execute("PRAGMA journal_mode=WAL")
                self._saver = AsyncSqliteSaver(conn)
                await self._saver.setup()
            if workflow not in self._graphs:
                # named for its workflow: that is how `_invoke` knows which runtime to give it
                self._graphs[workflow] = build_task_graph().compile(checkpointer=self._saver, name=workflow)
            return self._graphs[workflow]

    def ticket_specialists(self) -> dict[str, Specialist[Any, Any]]:
        if self._ticket_specialists is None:
            self._ticket_specialists = ticket_specialists(self.router, self.settings)
        return self._ticket_specialists

    def task_graph(self, checkpointer: Any = None) -> Any:
        """The task graph compiled as a plain LangGraph graph, e.g. to use as a subgraph.

        Without a checkpointer it uses its parent's. Its state: `run_id`, `task`, optionally
        `plan`; the answer lands in `answer`. Steps are recorded in this Shoal's store. Its
        nodes read this Shoal's `TaskRuntime` as their LangGraph context, and the graph
        returned here carries it: a parent graph passes no `context=` for it (and its own
        context, if it has one, does not reach shoal's nodes).
        """
        return task_subgraph(self._runtime(), checkpointer)

    # --- trained heads ----------------------------------------------------------------------

    def embedder(self, key: str) -> Embedder:
        """The embedder a specialist's head reads, caching vectors in the store."""
        if key not in self._embedders:
            self._embedders[key] = Embedder(self.router, self.settings.embed_model_for(key), cache=self.store)
        return self._embedders[key]

    def attach_heads(self, specialists: dict[str, Specialist[Any, Any]]) -> None:
        """Give each classifier its trained head, as `[specialists.NAME] mode` says."""
        for key, specialist in specialists.items():
            if not isinstance(specialist, Classifier) or key in self._attached:
                continue
            chosen = self.settings.specialists.get(key, SpecialistSettings())
            if chosen.mode == "prompt":
                self._attached.add(key)
                continue
            if chosen.head is not None:
                try:
                    blob = chosen.head.expanduser().read_bytes()
                except OSError as exc:
                    raise ConfigError(
                        f"[specialists.{key}] head = {str(chosen.head)!r} cannot be read: {exc}"
                    ) from None
                head = TrainedHead.from_bytes(blob, where=str(chosen.head))
            else:
                row = self.store.active_head(key)
                if row is None:
                    if chosen.mode == "trained":
                        raise ConfigError(
                            f'[specialists.{key}] mode = "trained" but no head is trained for {key}: run '
                            f'`shoal train {key} --data FILE`, or set mode = "auto" to prompt until one is'
                        )
                    self._attached.add(key)
                    continue
                head = load_head(row)
            specialist.use_head(head, self.embedder(key))
            self._attached.add(key)

    def trainable(self, key: str) -> Classifier:
        found = self.specialists.get(key) or self.ticket_specialists().get(key)
        if found is None:
            known = sorted(
                k for k, s in {**self.specialists, **self.ticket_specialists()}.items() if isinstance(s, Classifier)
            )
            raise ConfigError(f"no specialist named {key!r}; the classifiers are: {', '.join(known)}")
        if not isinstance(found, Classifier):
            raise ConfigError(f"{key} is a {type(found).__name__}; only classifiers can be trained")
        return found

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
        classifier = self.trainable(key)
        self.attach_heads({key: classifier})  # the active head, if any, is what the new one must beat
        report, head = await train_head(
            classifier,
            key,
            store=self.store,
            embedder=self.embedder(key),
            files=files,
            holdout=holdout,
            min_per_label=min_per_label,
            baseline=baseline,
            force=force,
            progress=progress,
        )
        chosen = self.settings.specialists.get(key, SpecialistSettings())
        if report.activated and chosen.head is None and chosen.mode != "prompt":
            classifier.use_head(head, self.embedder(key))
            self._attached.add(key)
        return report

    def heads(self) -> list[HeadSummary]:
        """Every trained head, for `shoal models` and the TUI."""
        out = []
        for row in self.store.heads():
            metrics = json.loads(row.metrics_json or "{}")
            out.append(
                HeadSummary(
                    specialist=row.specialist,
                    version=row.version,
                    active=row.active,
                    embed_model=row.embed_model,
                    labels=len(json.loads(row.labels_json or "[]")),
                    examples=row.n_examples,
                    created_at=row.created_at,
                    after=metrics.get("after"),
                    before=metrics.get("before"),
                )
            )
        return out

    def _runtime(self, workflow: str = "task") -> TaskRuntime:
        """What the task graph's nodes read (their LangGraph context) in a run of `workflow`."""
        specialists = self.ticket_specialists() if workflow == TICKETS else self.specialists
        self.attach_heads(specialists)
        return TaskRuntime(
            store=self.store,
            planner=self.planner,
            specialists=specialists,
            ladder_config=self.ladder_config,
            budget=self.budget,
            ledger=self.ledger,
            max_steps=self.settings.max_plan_steps,
            fresh=self._fresh,
        )

    # --- running --------------------------------------------------------------------------

    async def run(
        self,
        task: str | bytes,
        *,
        plan: Plan | dict[str, Any] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> RunReport:
        """Plan (unless a plan is given) and run a task; returns when it is done or waits for a person.

        `on_start` gets the run id as soon as the run exists (to show it, or to cancel it)."""
        text = check_task(task, self.settings.max_task_chars)
        chosen = None
        if plan is not None:
            chosen = Plan.model_validate(plan).check(list(self.specialists), self.settings.max_plan_steps)
        run_id = uuid.uuid4().hex[:12]
        plan_json = None if chosen is None else chosen.model_dump_json()
        await self.store.offload(self.store.create_run, run_id, text, plan_json=plan_json)
        state = {"run_id": run_id, "task": text, "plan": None if chosen is None else chosen.model_dump()}
        if on_start is not None:
            on_start(run_id)
        return await self.drive(run_id, state, fresh=True)

    def run_sync(self, task: str | bytes, *, plan: Plan | dict[str, Any] | None = None) -> RunReport:
        report: RunReport = asyncio.run(self.closing(self.run(task, plan=plan)))
        return report

    async def resume(self, run_id: str) -> RunReport:
        """Continue a run that crashed, was stopped, or waits on reviews answered meanwhile."""
        run = await self.store.offload(self.store.find_run, run_id)
        if run.status == "done":
            return await self.store.offload(self.report, run.id)
        graph = await self.graph(run.workflow)
        snapshot = await graph.aget_state({"configurable": {"thread_id": run.id}})
        if snapshot.next:
            return await self.drive(run.id, None)
        state = {
            "run_id": run.id,
            "task": run.task,
            "plan": json.loads(run.plan_json) if run.plan_json else None,
        }
        return await self.drive(run.id, state)

    async def review(self, review_id: int, answer: Any, *, who: str = "a person") -> RunReport:
        """Answer a pending human decision and let its run go on at once."""
        row = await self.store.offload(self.store.get_review, review_id)
        if row.status != "pending":
            raise StoreError(f"review {review_id} was already answered by {row.answered_by}")
        validated = self._validate_answer(row.specialist, answer)
        await self.store.offload(self.store.answer_review, review_id, validated, who)
        run = await self.store.offload(self.store.find_run, row.run_id)
        graph = await self.graph(run.workflow)
        snapshot = await graph.aget_state({"configurable": {"thread_id": row.run_id}})
        resume: dict[str, Any] = {}
        for pending in snapshot.interrupts:
            if isinstance(pending.value, dict) and pending.value.get("review_id") == review_id:
                resume[pending.id] = {"answer": validated, "who": who}
        return await self.drive(row.run_id, Command(resume=resume) if resume else None)

    async def health(self) -> list[BackendHealth]:
        """Each backend: reachable or not (and why), with its models; one quick attempt each."""
        quick = self.settings.model_copy(update={"retry": RetryPolicy(attempts=1)})
        results = []
        for name in BACKENDS:
            try:
                backend = build_backend(name, quick)
            except ShoalError as exc:
                results.append(BackendHealth(backend=name, reachable=False, where="", reason=str(exc)))
                continue
            try:
                results.append(await backend.health())
            finally:
                await backend.aclose()
        return results

    async def pull(self, model: str) -> AsyncIterator[Any]:
        """Pull a model into the configured Ollama server, yielding its progress lines."""
        from shoal.models.ollama import OllamaBackend

        backend = OllamaBackend(self.settings.ollama.host, retry=RetryPolicy(attempts=1))
        try:
            async for step in backend.pull(model):
                yield step
        finally:
            await backend.aclose()

    def specialist_settings(self) -> list[tuple[str, str, float, str]]:
        """(name, model, threshold, how it answers) for the task and ticket specialists."""
        rows = [("planner", str(self.planner.model), self.planner.threshold, "prompt")]
        for group in (self.specialists, self.ticket_specialists()):
            try:
                self.attach_heads(group)
            except ShoalError as exc:  # shown, not raised: this is what an operator looks at to fix it
                problem = f"error: {exc}"
            else:
                problem = ""
            for name, s in group.items():
                head = getattr(s, "head", None)
                how = problem if problem and isinstance(s, Classifier) else "prompt"
                if head is not None:
                    how = f"head v{head.info.version}" if head.info.version is not None else "head (file)"
                rows.append((name, str(s.model), s.threshold, how))
        return rows

    def activate_head(self, key: str, version: int) -> None:
        """Make a stored head version the active one, here and for processes started later."""
        classifier = self.trainable(key)
        row = self.store.activate_head(key, version)
        if self.settings.specialists.get(key, SpecialistSettings()).mode != "prompt":
            classifier.use_head(load_head(row), self.embedder(key))
            self._attached.add(key)

    # --- tickets --------------------------------------------------------------------------

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

    def _validate_answer(self, specialist: str, answer: Any) -> Any:
        if specialist == "planner":
            return Plan.model_validate(answer).check(list(self.specialists), self.settings.max_plan_steps).model_dump()
        known = self.specialists.get(specialist) or self.ticket_specialists().get(specialist)
        if known is None:
            raise TaskError(f"no specialist '{specialist}' in this shoal to check the answer against")
        output_type = known.output_type
        if isinstance(answer, str) and "label" in output_type.model_fields:
            answer = {"label": answer, "labels": [answer]}
        try:
            output = output_type.model_validate(answer)
            known.check_answer(output)
            return output.model_dump(mode="json")
        except ValueError as exc:
            raise TaskError(f"that answer does not fit {specialist} output ({output_type.__name__}): {exc}") from None

    async def drive(
        self,
        run_id: str,
        state: dict[str, Any] | Command[Any] | None,
        workflow: str | None = None,
        *,
        fresh: bool = False,
    ) -> RunReport:
        """Start or continue a run's graph and record how it ended. `state`: a new run's first
        state, a Command answering its interrupts, or None to go on from its checkpoint;
        `fresh`: the run was just created here, so its steps have no rows to look up."""
        if fresh:
            self._fresh.add(run_id)
        if workflow is None:
            run = await self.store.offload(self.store.get_run, run_id)
            workflow = run.workflow if run is not None else "task"
        return await self._invoke(await self.graph(workflow), run_id, state)

    async def _invoke(self, graph: Any, run_id: str, state: Any) -> RunReport:
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": 200}
        started = time.perf_counter()
        context = self._runtime(graph.name)
        if run_id not in self._fresh:  # a new run's row already says so
            await self.store.offload(self.store.update_run, run_id, status="running", owner_pid=os.getpid(), error=None)
        try:
            result = await graph.ainvoke(state, config, context=context, durability=self.settings.durability)
        except (ShoalError, PlanError) as exc:
            self._fresh.discard(run_id)
            await self.store.offload(self._finish, run_id, "failed", started, error=str(exc))
            raise
        except BaseException as exc:
            self._fresh.discard(run_id)
            # KeyboardInterrupt, cancellation: finished steps are saved; `shoal resume` goes on
            await self._finish_stopped(run_id, started, exc)
            raise
        self._fresh.discard(run_id)  # from here on its rows exist and must be looked up
        if result.get("__interrupt__"):
            await self.store.offload(self._finish, run_id, "waiting", started)
        else:
            await self.store.offload(self._finish, run_id, "done", started, answer=result.get("answer"))
            await self.store.offload(self.store.prune_checkpoints, run_id)
        return await self.store.offload(self.report, run_id)

    async def _finish_stopped(self, run_id: str, started: float, exc: BaseException) -> None:
        """Record a run stopped by Ctrl-C, cancellation or an unexpected error, even while this
        task is being cancelled (the record is what lets `shoal resume` go on)."""
        write = asyncio.ensure_future(
            self.store.offload(self._finish, run_id, "stopped", started, error=f"{type(exc).__name__}: {exc}")
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})

    def _finish(
        self, run_id: str, status: str, started: float, *, error: str | None = None, answer: Any = None
    ) -> None:
        workflow = self.store.finish_run(
            run_id,
            status,
            time.perf_counter() - started,
            error=error,
            result_json=None if answer is None else json.dumps(answer, ensure_ascii=False),
        )
        if status in ("done", "failed"):
            self._budgets.pop(run_id, None)  # a waiting run keeps its budget for after the review
        if workflow == TICKETS:
            self.tickets.finish(run_id, status)

    def report(self, run_id: str) -> RunReport:
        run = self.store.find_run(run_id)
        reviews = [
            ReviewItem(
                id=r.id or 0,
                run_id=r.run_id,
                step_id=r.step_id,
                specialist=r.specialist,
                question=json.loads(r.question_json),
            )
            for r in self.store.reviews(status="pending", run_id=run.id)
        ]
        return RunReport(
            run_id=run.id,
            status=run.status,
            answer=json.loads(run.result_json) if run.result_json else None,
            error=run.error,
            reviews=reviews,
            model_calls=run.model_calls,
            escalations=run.escalations,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            cost_usd=run.cost_usd,
            seconds=run.seconds,
        )

    async def closing(self, work: Any) -> Any:
        """Await `work`, then close the engine (for one-shot callers such as the CLI)."""
        try:
            return await work
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._exit.aclose()
        self._graphs.clear()
        self._saver = None
        await self.router.aclose()
