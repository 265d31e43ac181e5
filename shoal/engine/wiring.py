"""Wiring: from settings to the things a run uses. The specialists of each workflow, the planner,
each specialist's escalation ladder and each run's frontier budget, and the compiled graphs over
the process's one checkpointer.

Built once per engine; a run only reads it, through the `TaskRuntime` its graph's nodes get.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel, Field

from shoal.agents.escalation import Budget, LadderConfig
from shoal.agents.memory import Approved, PlanMemory
from shoal.agents.planner import DESCRIPTIONS, Planner
from shoal.config import Settings
from shoal.dburl import libpq_url
from shoal.engine.heads import HeadDesk
from shoal.graphs.task import TaskRuntime, build_task_graph, task_subgraph
from shoal.models.router import ModelRouter
from shoal.specialists.base import Specialist
from shoal.specialists.classifier import Classifier
from shoal.specialists.coder import Coder
from shoal.specialists.extractor import Extractor
from shoal.specialists.summarizer import Summarizer
from shoal.status import AnsweredBy
from shoal.store.db import BUSY_TIMEOUT_MS, Store, StoreLedger
from shoal.tickets.knowledge import BUILT_IN, KnowledgeBase, KnowledgeItem, load_knowledge, reviewed_item
from shoal.tickets.plan import ticket_specialists
from shoal.tickets.reply import ReplyDrafter
from shoal.tickets.triage import WORKFLOW as TICKETS

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

Specialists = dict[str, Specialist[Any, Any]]
TASK = "task"


# Any 64-bit number: the advisory lock under which one process sets LangGraph's tables up.
CHECKPOINT_SETUP_LOCK = 0x5_40A1_0002


class Entities(BaseModel):
    """What the general-purpose extractor pulls out of text."""

    names: list[str] = Field(default_factory=list, max_length=5, description="people and organisations named")
    ids: list[str] = Field(default_factory=list, max_length=5, description="order, invoice, account or ticket numbers")
    emails: list[str] = Field(default_factory=list, max_length=5, description="email addresses")
    amounts: list[str] = Field(default_factory=list, max_length=5, description="money amounts with currency")
    dates: list[str] = Field(default_factory=list, max_length=5, description="dates and times")


def configured(specialists: Specialists, settings: Settings) -> Specialists:
    """`specialists` with the `max_tokens` shoal.toml gives them; the rest keep their defaults."""
    for name, specialist in specialists.items():
        limit = settings.max_tokens_for(name)
        if limit is not None:
            specialist.max_tokens = limit
    return specialists


def default_specialists(router: ModelRouter, settings: Settings) -> Specialists:
    """The task workflow's specialists, as configured."""
    s = settings
    chosen: Specialists = {
        "classifier": Classifier(
            router,
            s.model_for("classifier"),
            s.classifier_labels,
            threshold=s.threshold_for("classifier", Classifier.default_threshold),
        ),
        "extractor": Extractor(
            router,
            s.model_for("extractor"),
            Entities,
            threshold=s.threshold_for("extractor", Extractor.default_threshold),
        ),
        "summarizer": Summarizer(
            router, s.model_for("summarizer"), threshold=s.threshold_for("summarizer", Summarizer.default_threshold)
        ),
        "coder": Coder(router, s.model_for("coder"), threshold=s.threshold_for("coder", Coder.default_threshold)),
    }
    return configured(chosen, settings)


class Wiring:
    def __init__(
        self, settings: Settings, router: ModelRouter, store: Store, specialists: Specialists | None = None
    ) -> None:
        self.settings = settings
        self.router = router
        self.store = store
        self.ledger = StoreLedger(store)
        self.specialists = specialists or default_specialists(router, settings)
        descriptions = {
            name: DESCRIPTIONS.get(name, getattr(s, "description", name)) for name, s in self.specialists.items()
        }
        self.planner = Planner(
            router,
            settings.model_for("planner"),
            descriptions,
            max_steps=settings.max_plan_steps,
            threshold=settings.threshold_for("planner", Planner.default_threshold),
        )
        self.planner.max_tokens = settings.max_tokens_for("planner") or self.planner.max_tokens
        self.heads = HeadDesk(settings, router, store, lambda: {**self.specialists, **self.ticket_specialists()})
        self.planner.use_memory(PlanMemory(self.heads.embedder(self.planner.name), self._approved_plans()))
        # runs started by this process whose steps have no rows yet (nothing to look up)
        self.fresh: set[str] = set()
        self._budgets: dict[str, Budget] = {}
        self._ladders: dict[tuple[str, float], LadderConfig] = {}
        self._tickets: Specialists | None = None
        self._exit = AsyncExitStack()
        self._graphs: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {}
        self._saver: BaseCheckpointSaver[Any] | None = None
        self._lock = asyncio.Lock()

    def ticket_specialists(self) -> Specialists:
        if self._tickets is None:
            chosen = configured(ticket_specialists(self.router, self.settings), self.settings)
            for specialist in chosen.values():
                if isinstance(specialist, ReplyDrafter):
                    self._give_knowledge(specialist)
            self._tickets = chosen
        return self._tickets

    def _approved_plans(self) -> Callable[[], list[Approved]]:
        """A reader of the plans approved since it last read (from any process)."""
        seen = 0

        def approved() -> list[Approved]:
            nonlocal seen
            rows = self.store.examples_since(self.planner.name, seen)
            if rows:
                seen = max(row.id or 0 for row in rows)
            found = []
            for row in rows:
                try:
                    found.append(Approved(task=row.text, plan=json.loads(row.label), source=row.source))
                except ValueError:  # not a plan: nothing to reuse
                    continue
            return found

        return approved

    def _give_knowledge(self, drafter: ReplyDrafter) -> None:
        """The configured knowledge plus every reply a person approved in review, and a way to
        pick up the ones approved later (in this process or another)."""
        chosen = self.settings.tickets.knowledge
        path = BUILT_IN if chosen.path is None else self.settings.resolve(chosen.path)
        items = load_knowledge(path)
        seen = 0

        def reviewed() -> list[KnowledgeItem]:
            nonlocal seen
            rows = self.store.examples_since(drafter.name, seen, source=AnsweredBy.HUMAN)
            if rows:
                seen = max(row.id or 0 for row in rows)
            return [item for row in rows if (item := reviewed_item(row.text, row.label, row.id or 0)) is not None]

        base = KnowledgeBase(items, where=str(path))
        for item in reviewed():
            base.add(item)
        drafter.use_knowledge(base, self.heads.embedder(drafter.name), reviewed)

    def workflow_specialists(self, workflow: str) -> Specialists:
        return self.ticket_specialists() if workflow == TICKETS else self.specialists

    def ladder_config(self, name: str, threshold: float) -> LadderConfig:
        key = (name, threshold)
        if key not in self._ladders:  # built once per specialist, not once per step
            e = self.settings.escalation
            self._ladders[key] = LadderConfig(
                threshold=threshold,
                resample=e.resample,
                resample_temperature=e.resample_temperature,
                frontier=self.settings.frontier_model,
                frontier_unavailable=self._frontier_unavailable(),
                human=e.human,
                privacy=self.settings.privacy,
            )
        return self._ladders[key]

    def _frontier_unavailable(self) -> str | None:
        frontier = self.settings.frontier_model
        openai = self.settings.openai
        # api.openai.com always needs a key; a local server behind base_url may need none
        official = bool(frontier and frontier.startswith("openai:")) and openai.base_url is None
        if official and not os.environ.get(openai.api_key_env):
            return f"{openai.api_key_env} is not set"
        return None

    def budget(self, run_id: str) -> Budget:
        if run_id not in self._budgets:
            e = self.settings.escalation
            self._budgets[run_id] = Budget(
                per_run_usd=e.frontier_per_run_usd, per_day_usd=e.frontier_per_day_usd, ledger=self.ledger
            )
        return self._budgets[run_id]

    def drop_budget(self, run_id: str) -> None:
        self._budgets.pop(run_id, None)

    def runtime(self, workflow: str = TASK) -> TaskRuntime:
        """What the task graph's nodes read (their LangGraph context) in a run of `workflow`."""
        specialists = self.workflow_specialists(workflow)
        self.heads.attach(specialists)
        return TaskRuntime(
            store=self.store,
            planner=self.planner,
            specialists=specialists,
            ladder_config=self.ladder_config,
            budget=self.budget,
            max_steps=self.settings.max_plan_steps,
            fresh=self.fresh,
        )

    async def graph(self, workflow: str = TASK) -> CompiledStateGraph[Any, Any, Any, Any]:
        """A compiled graph with the SQLite checkpointer (one checkpointer per process)."""
        async with self._lock:
            if self._saver is None:
                self._saver = await self._checkpointer()
            if workflow not in self._graphs:
                # named for its workflow: that is how a run knows which runtime to give it
                self._graphs[workflow] = build_task_graph().compile(checkpointer=self._saver, name=workflow)
            return self._graphs[workflow]

    async def _checkpointer(self) -> BaseCheckpointSaver[Any]:
        if self.store.url is not None:
            return await self._postgres_checkpointer(libpq_url(self.store.url))
        assert self.store.path is not None
        connecting = aiosqlite.connect(str(self.store.path), timeout=BUSY_TIMEOUT_MS / 1000)
        # aiosqlite's worker thread would keep a script that never calls aclose() alive after its
        # last await; as a daemon it does not (every write is awaited first)
        worker = getattr(connecting, "_thread", None)
        if worker is not None and not worker.is_alive():
            worker.daemon = True
        conn = await self._exit.enter_async_context(connecting)
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode=WAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        return saver

    async def _postgres_checkpointer(self, url: str) -> BaseCheckpointSaver[Any]:
        # imported here: only a Postgres store needs the `postgres` extra
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, max_size=4, kwargs=options, open=False)
        await pool.open()
        self._exit.push_async_callback(pool.close)
        saver = AsyncPostgresSaver(pool)
        # many workers start at once: one sets the checkpoint tables up while the others wait
        async with await AsyncConnection.connect(url, autocommit=True) as lock:
            await lock.execute("SELECT pg_advisory_lock(%s)", (CHECKPOINT_SETUP_LOCK,))
            try:
                await saver.setup()
            finally:
                await lock.execute("SELECT pg_advisory_unlock(%s)", (CHECKPOINT_SETUP_LOCK,))
        return saver

    def task_graph(self, checkpointer: Any = None) -> Any:
        """The task graph as a plain LangGraph graph carrying this runtime (see `Shoal.task_graph`)."""
        return task_subgraph(self.runtime(), checkpointer)

    async def aclose(self) -> None:
        await self._exit.aclose()
        self._graphs.clear()
        self._saver = None
