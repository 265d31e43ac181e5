"""The run driver: start, continue, answer and close runs of the task graph.

A run is a row in the store plus a LangGraph thread. This module is the only place that invokes
a graph and the only place that decides how a run ended (done, waiting for a person, failed, or
stopped by Ctrl-C or cancellation), so `shoal resume` always finds the row it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from langgraph.types import Command

from shoal import telemetry
from shoal.agents.planner import Plan
from shoal.engine.reports import ReviewItem, RunReport
from shoal.engine.wiring import TASK, Wiring
from shoal.errors import AnswerError, PlanError, ShoalError, StoreError
from shoal.graphs.persist import kept_answer, whole_answer
from shoal.inputs import check_text
from shoal.status import ReviewStatus, RunStatus

# called on the store's thread when a run of a workflow ends: (run id, status)
OnFinish = Callable[[str, RunStatus], None]

_TASK_LIMIT_HINT = "split it, or raise max_task_chars in shoal.toml (small models read a few thousand tokens at most)"


def check_task(task: str | bytes, limit: int) -> str:
    """Refuse what cannot be a task before anything is written."""
    return check_text(task, limit, what="task", raise_hint=_TASK_LIMIT_HINT)


def stopped_because(exc: BaseException) -> str:
    """Why a run stopped, as an operator reads it (a cancelled task's repr says nothing useful)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled; `shoal resume` goes on from the last finished step"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C); `shoal resume` goes on from the last finished step"
    return f"{type(exc).__name__}: {exc}"


class RunDriver:
    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self.store = wiring.store
        self.settings = wiring.settings
        self.on_finish: dict[str, OnFinish] = {}

    async def run(
        self,
        task: str | bytes,
        *,
        plan: Plan | dict[str, Any] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> RunReport:
        """Plan (unless a plan is given) and run a task; returns when it is done or waits for a person."""
        text = check_task(task, self.settings.max_task_chars)
        chosen = None
        if plan is not None:
            chosen = Plan.model_validate(plan).check(list(self.wiring.specialists), self.settings.max_plan_steps)
        run_id = uuid.uuid4().hex[:12]
        plan_json = None if chosen is None else chosen.model_dump_json()
        await self.store.offload(self.store.create_run, run_id, text, plan_json=plan_json)
        if plan_json is not None:  # a plan someone wrote for this task: the planner remembers it
            given = {"specialist": "planner", "text": text, "label": plan_json, "source": "file", "run_id": run_id}
            await self.store.offload(self.store.add_examples, [given])
        state = {"run_id": run_id, "task": text, "plan": None if chosen is None else chosen.model_dump()}
        if on_start is not None:
            on_start(run_id)
        return await self.drive(run_id, state, fresh=True)

    async def resume(self, run_id: str) -> RunReport:
        """Continue a run that crashed, was stopped, or waits on reviews answered meanwhile."""
        run = await self.store.offload(self.store.find_run, run_id)
        if run.status == RunStatus.DONE:
            return await self.store.offload(self.report, run.id)
        graph = await self.wiring.graph(run.workflow)
        snapshot = await graph.aget_state({"configurable": {"thread_id": run.id}})
        if snapshot.next:
            # reviews answered meanwhile (by a person on another machine, or queued for a
            # worker: `shoal review --queue`) are given to the interrupts that wait for them
            answers = await self.store.offload(self._answers, [p.value for p in snapshot.interrupts])
            resume = {p.id: answers[i] for i, p in enumerate(snapshot.interrupts) if i in answers}
            return await self.drive(run.id, Command(resume=resume) if resume else None)
        state = {"run_id": run.id, "task": run.task, "plan": json.loads(run.plan_json) if run.plan_json else None}
        return await self.drive(run.id, state)

    def _answers(self, waiting: list[Any]) -> dict[int, dict[str, Any]]:
        """For each interrupt (by position) whose review is answered: what resumes it."""
        found: dict[int, dict[str, Any]] = {}
        for i, value in enumerate(waiting):
            if not isinstance(value, dict) or not isinstance(value.get("review_id"), int):
                continue
            row = self.store.get_review(value["review_id"])
            if row.status == ReviewStatus.ANSWERED and row.answer_json is not None:
                found[i] = {"answer": json.loads(row.answer_json), "who": row.answered_by or "a person"}
        return found

    async def review(self, review_id: int, answer: Any, *, who: str = "a person") -> RunReport:
        """Answer a pending human decision and let its run go on at once."""
        row = await self.store.offload(self.store.get_review, review_id)
        if row.status != ReviewStatus.PENDING:
            raise StoreError(f"review {review_id} was already answered by {row.answered_by}")
        run = await self.store.offload(self.store.find_run, row.run_id)
        validated = self.validate_answer(row.specialist, answer, run.workflow)
        await self.store.offload(self.store.answer_review, review_id, validated, who)
        graph = await self.wiring.graph(run.workflow)
        snapshot = await graph.aget_state({"configurable": {"thread_id": row.run_id}})
        resume: dict[str, Any] = {}
        for pending in snapshot.interrupts:
            if isinstance(pending.value, dict) and pending.value.get("review_id") == review_id:
                resume[pending.id] = {"answer": validated, "who": who}
        return await self.drive(row.run_id, Command(resume=resume) if resume else None)

    async def review_later(self, review_id: int, answer: Any, *, who: str = "a person") -> RunReport:
        """Record a person's answer and queue its run for whichever worker is free."""
        from shoal.engine.queue import enqueue_resume

        row = await self.store.offload(self.store.get_review, review_id)
        run = await self.store.offload(self.store.find_run, row.run_id)
        validated = self.validate_answer(row.specialist, answer, run.workflow)
        await self.store.offload(self.store.answer_review, review_id, validated, who)
        await self.store.offload(enqueue_resume, self.store, row.run_id)
        return await self.store.offload(self.report, row.run_id)

    def validate_answer(self, specialist: str, answer: Any, workflow: str = TASK) -> Any:
        """A person's answer as the specialist's output (JSON data), or an error saying why it does
        not fit: the same reading as `shoal review` and the TUI (a dict with a key the specialist
        lacks is refused, never stored as an empty answer)."""
        from shoal.engine import reviews  # it builds on this module: imported when first needed

        chosen = reviews.find_specialist(self.wiring, workflow, specialist)
        if isinstance(answer, str):
            return reviews.read_answer(self.wiring, specialist, chosen, answer)
        if isinstance(answer, dict):
            return reviews.check_output(self.wiring, specialist, chosen, answer)
        raise AnswerError(f"{specialist} takes {reviews.expects(chosen)}, not {type(answer).__name__}")

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
            self.wiring.fresh.add(run_id)
        try:
            if workflow is None:
                run = await self.store.offload(self.store.get_run, run_id)
                workflow = run.workflow if run is not None else TASK
            return await self._invoke(workflow, run_id, state)
        finally:
            self.wiring.fresh.discard(run_id)  # from here on its rows exist and must be looked up

    async def _invoke(self, workflow: str, run_id: str, state: dict[str, Any] | Command[Any] | None) -> RunReport:
        graph = await self.wiring.graph(workflow)
        config: Any = {"configurable": {"thread_id": run_id}, "recursion_limit": 200}
        started = time.perf_counter()
        context = self.wiring.runtime(workflow)
        if run_id not in self.wiring.fresh:  # a new run's row already says so
            await self.store.offload(
                self.store.update_run, run_id, status=RunStatus.RUNNING, owner_pid=os.getpid(), error=None
            )
        try:
            with telemetry.run_span(run_id, workflow):
                result = await graph.ainvoke(state, config, context=context, durability=self.settings.durability)
        except (ShoalError, PlanError) as exc:
            await self.store.offload(self._finish, run_id, RunStatus.FAILED, started, error=str(exc))
            raise
        except BaseException as exc:
            # KeyboardInterrupt, cancellation, a bug: finished steps are saved; `shoal resume` goes on
            await self._finish_stopped(run_id, started, exc)
            raise
        if result.get("__interrupt__"):
            await self.store.offload(self._finish, run_id, RunStatus.WAITING, started)
        else:
            await self.store.offload(self._finish, run_id, RunStatus.DONE, started, answer=result.get("answer"))
            await self.store.offload(self.store.prune_checkpoints, run_id)
        return await self.store.offload(self.report, run_id)

    async def _finish_stopped(self, run_id: str, started: float, exc: BaseException) -> None:
        """Record a run stopped by Ctrl-C, cancellation or an unexpected error, even while this
        task is being cancelled (the record is what lets `shoal resume` go on)."""
        write = asyncio.ensure_future(
            self.store.offload(self._finish, run_id, RunStatus.STOPPED, started, error=stopped_because(exc))
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})

    def _finish(
        self, run_id: str, status: RunStatus, started: float, *, error: str | None = None, answer: Any = None
    ) -> None:
        workflow = self.store.finish_run(
            run_id,
            status,
            time.perf_counter() - started,
            error=error,
            result_json=kept_answer(answer),
        )
        if status in (RunStatus.DONE, RunStatus.FAILED):
            self.wiring.drop_budget(run_id)  # a waiting run keeps its budget for after the review
        hook = self.on_finish.get(workflow)
        if hook is not None:
            hook(run_id, status)

    def report(self, run_id: str) -> RunReport:
        """A run as it stands in the store (a plain read: callable from any thread)."""
        run = self.store.find_run(run_id)
        reviews = [
            ReviewItem(
                id=r.id or 0,
                run_id=r.run_id,
                step_id=r.step_id,
                specialist=r.specialist,
                question=json.loads(r.question_json),
            )
            for r in self.store.reviews(status=ReviewStatus.PENDING, run_id=run.id)
        ]
        return RunReport(
            run_id=run.id,
            status=run.status,
            answer=whole_answer(run.result_json, run.plan_json, self.store.steps(run.id)) if run.result_json else None,
            error=run.error,
            reviews=reviews,
            model_calls=run.model_calls,
            escalations=run.escalations,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            cost_usd=run.cost_usd,
            seconds=run.seconds,
        )
