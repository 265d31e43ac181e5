"""What the task graph's nodes depend on, handed to them as LangGraph's run context.

The engine builds one `TaskRuntime` and passes it to every `ainvoke` (`context=`); a node reads
it from its `runtime: Runtime[TaskRuntime]` argument. Nothing here is kept per run: a run's
plan lives in the graph state and what follows from it (the validated plan, which step
launches which) is derived from the state where it is needed, so a run that fails leaves
nothing behind in a long-lived process.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shoal.agents.escalation import Budget, Escalation, Ladder, LadderConfig, Outcome
from shoal.agents.planner import Planner
from shoal.errors import ModelError
from shoal.models.router import CallRecord
from shoal.specialists.base import Specialist
from shoal.store import db as store_db
from shoal.store.tables import now

# The model calls of the step running in this asyncio task; the router's recorder appends here.
CURRENT_CALLS: contextvars.ContextVar[list[CallRecord] | None] = contextvars.ContextVar(
    "shoal_current_calls", default=None
)


async def record_call(record: CallRecord) -> None:
    """The recorder the engine gives its router: calls land with the step that made them."""
    calls = CURRENT_CALLS.get()
    if calls is not None:
        calls.append(record)


@dataclass
class TaskRuntime:
    """What the graph's nodes need, built by the engine from configuration."""

    store: store_db.Store
    planner: Planner
    specialists: dict[str, Specialist[Any, Any]]
    ladder_config: Callable[[str, float], LadderConfig]
    budget: Callable[[str], Budget]
    max_steps: int = 6
    # runs this process started from nothing: no step rows can exist yet, so no lookups. The
    # engine owns the set and drops a run from it however its first invocation ends.
    fresh: set[str] = field(default_factory=set)

    def ladder(self, run_id: str, name: str, threshold: float, sink: list[Escalation]) -> Ladder:
        async def keep(item: Escalation) -> None:
            sink.append(item)

        return Ladder(self.ladder_config(name, threshold), budget=self.budget(run_id), on_escalation=keep)


@dataclass(slots=True)
class Attempt:
    """One step's climb up its escalation ladder: what it was asked and everything it cost.

    The calls and escalations are kept even when a model call fails part-way, so that the
    failed step's row still records what was spent on it.
    """

    run_id: str
    step_id: str
    key: str  # the specialist's name in the plan ("planner" for the plan step)
    instruction: str
    specialist: Specialist[Any, Any]
    data: BaseModel
    outcome: Outcome[Any] | None = None
    error: ModelError | None = None
    calls: list[CallRecord] = field(default_factory=list)
    started_at: datetime = field(default_factory=now)
    escalations: list[Escalation] = field(default_factory=list)


async def climb(ctx: TaskRuntime, attempt: Attempt) -> Attempt:
    """Run the attempt's specialist up its ladder, catching the calls the router records."""
    token = CURRENT_CALLS.set(attempt.calls)
    try:
        specialist = attempt.specialist
        ladder = ctx.ladder(attempt.run_id, specialist.name, specialist.threshold, attempt.escalations)
        attempt.outcome = await ladder.run(specialist, attempt.data)
    except ModelError as exc:
        attempt.error = exc
    finally:
        CURRENT_CALLS.reset(token)
    return attempt
