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
from shoal.batch import Outage
from shoal.config import Settings, SpecialistSettings
from shoal.errors import ConfigError, ShoalError, TransientModelError
from shoal.evaluation import Labelled
from shoal.graphs.task import TaskRuntime, build_task_graph, record_call
from shoal.graphs.tickets import TICKET_PLAN, BadRow, TicketRow, route, text_hash, ticket_specialists
from shoal.models.base import BACKENDS, BackendHealth, RetryPolicy
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.specialists.base import Specialist
from shoal.specialists.classifier import Classifier
from shoal.specialists.coder import Coder
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import MIN_PER_LABEL, TrainedHead
from shoal.specialists.summarizer import Summarizer
from shoal.store.db import BUSY_TIMEOUT_MS, Store, StoreError, StoreLedger
from shoal.training import Progress as TrainProgress
from shoal.training import TrainReport, load_head, train_head


def ticket_fields(steps: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """A ticket's fields from its step rows: output, confidence, who answered, status."""
    return {
        step.step_id: {
            # a waiting field keeps the models' best answer; its status says nobody vouched for it yet
            "output": json.loads(step.output_json) if step.output_json else None,
            "confidence": step.confidence,
            "answered_by": step.answered_by,
            "status": step.status,
        }
        for step in steps
    }


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


class TaskError(ShoalError):
    """A task that cannot be started as given."""


class Entities(BaseModel):
    """What the general-purpose extractor pulls out of text."""

    names: list[str] = Field(default_factory=list, max_length=5, description="people and organisations named")
    ids: list[str] = Field(default_factory=list, max_length=5, description="order, invoice, account or ticket numbers")
    emails: list[str] = Field(default_factory=list, max_length=5, description="email addresses")
    amounts: list[str] = Field(default_factory=list, max_length=5, description="money amounts with currency")
    dates: list[str] = Field(default_factory=list, max_length=5, description="dates and times")


class TicketOutcome(BaseModel):
    key: str
    line: int | None = None
    status: str  # done waiting failed rejected
    run_id: str | None = None
    queue: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    skipped: bool = False
    escalated: list[str] = Field(default_factory=list)
    reviews: list[int] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    # failed for want of a model server (worth retrying once it is back), not for the ticket itself
    transient: bool = Field(default=False, exclude=True)


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
    if isinstance(task, bytes):
        try:
            task = task.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskError(f"the task is not UTF-8 text (byte {exc.start} is {task[exc.start]:#04x})") from None
    if "\x00" in task:
        raise TaskError("the task contains NUL bytes: it looks like binary data, not text")
    if not task.strip():
        raise TaskError("the task is empty: say what the shoal should do")
    if len(task) > limit:
        raise TaskError(
            f"the task is {len(task):,} characters, over the limit of {limit:,}; split it, or raise "
            "max_task_chars in shoal.toml (small models read a few thousand tokens at most)"
        )
    return task


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
                runtime = self._runtime(self.ticket_specialists() if workflow == "tickets" else self.specialists)
                self._graphs[workflow] = build_task_graph(runtime).compile(checkpointer=self._saver)
            return self._graphs[workflow]

    def ticket_specialists(self) -> dict[str, Specialist[Any, Any]]:
        if self._ticket_specialists is None:
            self._ticket_specialists = ticket_specialists(self.router, self.settings)
        return self._ticket_specialists

    def task_graph(self, checkpointer: Any = None) -> Any:
        """The task graph compiled as a plain LangGraph graph, e.g. to use as a subgraph.

        Without a checkpointer it uses its parent's. Its state: `run_id`, `task`, optionally
        `plan`; the answer lands in `answer`. Steps are recorded in this Shoal's store.
        """
        return build_task_graph(self._runtime(self.specialists)).compile(checkpointer=checkpointer)

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

    def _runtime(self, specialists: dict[str, Specialist[Any, Any]]) -> TaskRuntime:
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
        self._fresh.add(run_id)
        state = {"run_id": run_id, "task": text, "plan": None if chosen is None else chosen.model_dump()}
        if on_start is not None:
            on_start(run_id)
        return await self._drive(run_id, state)

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
            return await self._drive(run.id, None)
        state = {
            "run_id": run.id,
            "task": run.task,
            "plan": json.loads(run.plan_json) if run.plan_json else None,
        }
        return await self._drive(run.id, state)

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
        return await self._drive(row.run_id, Command(resume=resume) if resume else None)

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
        """Triage one ticket, or report why it cannot be; safe to call again for the same key.

        Never raises for a problem of this ticket: whatever goes wrong fails the ticket with its
        reason, so a batch goes on (KeyboardInterrupt and cancellation still stop it)."""
        store = self.store
        if isinstance(row, BadRow):
            await store.offload(
                store.put_ticket, source, row.key, line=row.line, status="rejected", error=row.reason, run_id=None
            )
            return TicketOutcome(key=row.key, line=row.line, status="rejected", error=row.reason)
        try:
            skipped = await self._triage_row(row, source, force)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ShoalError | PlanError) else f"{type(exc).__name__}: {exc}"
            await store.offload(store.put_ticket, source, row.key, status="failed", error=reason)
            outcome = await store.offload(self._ticket_outcome, source, row.key)
            outcome.transient = isinstance(exc, TransientModelError)
            return outcome
        return await store.offload(self._ticket_outcome, source, row.key, skipped=skipped)

    async def _triage_row(self, row: TicketRow, source: str, force: bool) -> bool:
        """Run (or resume, or repair) one ticket; True when it was already finished."""
        store = self.store
        digest = text_hash(row.text)
        existing = await store.offload(store.get_ticket, source, row.key)
        same = existing is not None and existing.text_hash == digest and existing.run_id is not None
        if existing is not None and same and not force:
            assert existing.run_id is not None
            if existing.status in ("done", "waiting"):
                return True
            run = await store.offload(store.get_run, existing.run_id)
            if run is not None and run.status in ("done", "waiting"):
                # killed after its run finished but before the ticket was written: repair, no calls
                await store.offload(self._finish_ticket, run.id, run.status)
                return False
            if run is not None:
                await self.resume(existing.run_id)  # finished steps are reused, not re-run
                return False
        text = check_task(row.text, self.settings.tickets.max_chars)
        run_id = uuid.uuid4().hex[:12]
        await store.offload(store.create_run, run_id, text, workflow="tickets", plan_json=json.dumps(TICKET_PLAN))
        await store.offload(
            store.put_ticket, source, row.key, line=row.line, text_hash=digest, run_id=run_id, status="running",
            queue=None, result_json=None, error=None,
        )  # fmt: skip
        self._fresh.add(run_id)
        await self._drive(run_id, {"run_id": run_id, "task": text, "plan": TICKET_PLAN}, "tickets")
        return False

    def _ticket_outcome(self, source: str, key: str, *, skipped: bool = False) -> TicketOutcome:
        ticket = self.store.get_ticket(source, key)
        if ticket is None:
            raise StoreError(f"ticket {key} of {source} has no row")
        fields = json.loads(ticket.result_json) if ticket.result_json else {}
        run = self.store.get_run(ticket.run_id) if ticket.run_id else None
        reviews = [r.id or 0 for r in self.store.reviews(run_id=ticket.run_id)] if ticket.run_id else []
        return TicketOutcome(
            key=key,
            line=ticket.line,
            status=ticket.status,
            run_id=ticket.run_id,
            queue=ticket.queue,
            fields=fields,
            error=ticket.error,
            skipped=skipped,
            escalated=[
                n
                for n, f in fields.items()
                if f.get("answered_by") not in ("specialist", None) or f.get("status") == "waiting"
            ],
            reviews=reviews,
            tokens=0 if run is None or skipped else run.tokens_in + run.tokens_out,
            cost_usd=0.0 if run is None or skipped else run.cost_usd,
        )

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
        """Triage a batch: `concurrency` tickets at a time, each saved as it finishes.

        `source` names the export the rows come from (its absolute path, say): ticket ids are
        unique within it. While the model server is unreachable the batch pauses and retries
        for `[tickets] outage_wait_s` before failing a ticket."""
        if concurrency < 1:
            raise TaskError("concurrency must be at least 1")
        queue: asyncio.Queue[TicketRow | BadRow | None] = asyncio.Queue(maxsize=concurrency * 2)
        outcomes: list[TicketOutcome] = []
        outage = Outage(self.settings.tickets.outage_wait_s, on_pause=on_pause)

        async def worker() -> None:
            while (row := await queue.get()) is not None:
                await outage.ready()  # not before a retry: the worker waiting out an outage retries
                while True:
                    outcome = await self.triage_ticket(row, source=source, force=force)
                    if not outcome.transient:
                        outage.recovered()
                        break
                    if not await outage.wait(outcome.error or "the model server is unreachable"):
                        outcome.error = f"{outcome.error} (still failing after {outage.wait_s:g}s of retries)"
                        break
                outcomes.append(outcome)
                if on_ticket is not None:
                    on_ticket(outcome)

        async def produce() -> None:
            for row in rows:
                await queue.put(row)
            for _ in range(concurrency):
                await queue.put(None)

        # one task group: if a worker dies of something triage_ticket could not catch, the
        # producer is cancelled with it instead of waiting forever on a full queue
        tasks = [asyncio.create_task(produce()), *(asyncio.create_task(worker()) for _ in range(concurrency))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return sorted(outcomes, key=lambda o: (o.line or 0, o.key))

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

    async def _drive(self, run_id: str, state: Any, workflow: str | None = None) -> RunReport:
        if workflow is None:
            run = await self.store.offload(self.store.get_run, run_id)
            workflow = run.workflow if run is not None else "task"
        return await self._invoke(await self.graph(workflow), run_id, state)

    async def _invoke(self, graph: Any, run_id: str, state: Any) -> RunReport:
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": 200}
        started = time.perf_counter()
        if run_id not in self._fresh:  # a new run's row already says so
            await self.store.offload(self.store.update_run, run_id, status="running", owner_pid=os.getpid(), error=None)
        try:
            result = await graph.ainvoke(state, config, durability=self.settings.durability)
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
        if workflow == "tickets":
            self._finish_ticket(run_id, status)

    def _finish_ticket(self, run_id: str, status: str) -> None:
        ticket = self.store.ticket_for_run(run_id)
        if ticket is None:
            return
        fields = ticket_fields(self.store.steps(run_id))
        outputs = {name: field.get("output") for name, field in fields.items()}
        queue = None
        if status == "done":
            queue = route(self.settings, outputs)
        elif status == "waiting":
            queue = self.settings.tickets.review_queue
        self.store.put_ticket(
            ticket.source,
            ticket.key,
            status={"done": "done", "waiting": "waiting"}.get(status, "failed"),
            queue=queue,
            result_json=json.dumps(fields, ensure_ascii=False),
            error=None if status in ("done", "waiting") else (self.store.get_run(run_id) or ticket).error,
        )

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
