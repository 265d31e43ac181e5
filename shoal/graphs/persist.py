"""How a step reaches the store, the planner's step and every other alike.

Every finished (or waiting, or failed) step is written with its model calls, escalations,
review and taught examples in one transaction before its node returns; that is what lets a
resumed run skip a paid call whatever LangGraph's checkpoint durability. Nodes call the async
functions here, which go through `Store.offload`: a store call on the event loop deadlocks
against the aiosqlite checkpointer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shoal.agents.escalation import Escalation, Outcome
from shoal.errors import ModelError, PlanError
from shoal.graphs.context import Attempt, TaskRuntime
from shoal.graphs.state import StepOutcome
from shoal.models.router import CallRecord
from shoal.specialists.base import Specialist
from shoal.status import AnsweredBy, EscalationOutcome, Rung, StepStatus
from shoal.store import db as store_db
from shoal.store.tables import EscalationRow, Review, Step, now


def render(output: Any) -> str:
    """A step's output as text for the steps that read it."""
    if output is None:
        return ""
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    if isinstance(data, dict):
        if "label" in data and "distribution" in data:
            return ", ".join(data.get("labels") or [data["label"]])
        if "summary" in data:
            points = "".join(f"\n- {p}" for p in data.get("key_points") or [])
            return str(data["summary"]) + points
        if "code" in data:
            return str(data["code"])
    return json.dumps(data, ensure_ascii=False)


def outcome_of(row: Step | dict[str, Any], output: Any = None) -> StepOutcome:
    """What a step hands on, from its stored row or the values just written for it.

    `output` spares decoding the JSON the caller has just encoded."""
    values = row if isinstance(row, dict) else row.model_dump()
    if output is None and values.get("output_json") is not None:
        output = json.loads(values["output_json"])
    return StepOutcome(
        step_id=values["step_id"],
        specialist=values["specialist"],
        # plain strings in the graph's state: its checkpoints are serialised, enums with them
        status=str(values["status"]),
        output=output,
        text=render(output),
        confidence=values.get("confidence") or 0.0,
        answered_by=None if values.get("answered_by") is None else str(values["answered_by"]),
    )


def call_rows(run_id: str, step_id: str, calls: list[CallRecord], confidence: float | None) -> list[dict[str, Any]]:
    """`ModelCall` rows as plain dicts: built once per call on the hot path, so no ORM objects."""
    rows = []
    for call in calls:
        reply = call.reply
        rows.append(
            {
                "run_id": run_id,
                "step_id": step_id,
                "model": str(call.ref),
                "request_json": call.request.record_json(),
                "reply_json": call.stored_reply(),  # bounded, without top-k alternatives (#16)
                "error": call.error,
                "error_type": call.error_type,
                "raw_text": call.stored_raw_text(),  # bounded, and never the reply's text again
                "tokens_in": reply.usage.input_tokens if reply else 0,
                "tokens_out": reply.usage.output_tokens if reply else 0,
                "latency_s": call.latency_s,
                "cost_usd": reply.cost_usd if reply else 0.0,
                "confidence": confidence,
                "created_at": call.started_at,
            }
        )
    return rows


def escalation_rows(run_id: str, step_id: str, items: list[Escalation]) -> list[EscalationRow]:
    return [EscalationRow(run_id=run_id, step_id=step_id, **item.model_dump(mode="python")) for item in items]


def question(data: BaseModel, outcome: Outcome[Any]) -> dict[str, Any]:
    """What a person sees on the review queue."""
    frontier = next(
        (e for e in outcome.escalations if e.rung == Rung.FRONTIER and e.outcome != EscalationOutcome.SKIPPED), None
    )
    return {
        "input": data.model_dump(mode="json"),
        "small_answer": None if outcome.first.output is None else outcome.first.output.model_dump(mode="json"),
        "small_model": outcome.first.model,
        "confidence": outcome.first.confidence,
        "evidence": [s.model_dump() for s in outcome.first.evidence],
        "best_answer": None if outcome.result.output is None else outcome.result.output.model_dump(mode="json"),
        "frontier": None if frontier is None else frontier.model_dump(mode="json"),
        "reasons": [e.reason for e in outcome.escalations],
    }


def teaches(
    key: str,
    specialist: Specialist[Any, Any],
    data: BaseModel,
    output: BaseModel | None,
    source: str,
    run_id: str,
    step_id: str,
) -> list[dict[str, Any]]:
    """The labelled example an escalated answer gives its specialist (the flywheel), if any."""
    pair = None if output is None else specialist.labelled_example(data, output)
    if pair is None:
        return []
    text, label = pair
    return [{"specialist": key, "text": text, "label": label, "source": source, "run_id": run_id, "step_id": step_id}]


@dataclass(slots=True)
class Saved:
    """A step as written: its row's values, its output as JSON data, its review if it waits."""

    row: dict[str, Any]
    output: Any
    review_id: int | None

    def outcome(self) -> StepOutcome:
        return outcome_of(self.row, self.output)


def step_values(attempt: Attempt, status: StepStatus, error: str | None) -> tuple[dict[str, Any], Any]:
    """The step's row as plain values (cheaper than an ORM object on the hot path) and its output."""
    row: dict[str, Any] = {
        "run_id": attempt.run_id,
        "step_id": attempt.step_id,
        "specialist": attempt.key,
        "instruction": attempt.instruction,
        "input_json": attempt.data.model_dump_json(),
        "status": status,
        "error": error,
        "started_at": attempt.started_at,
        # a waiting step is finished when a person answers (finish_human_step)
        "finished_at": None if status == StepStatus.WAITING else now(),
    }
    outcome = attempt.outcome
    if outcome is None:
        return row, None
    result = outcome.result
    output = None if result.output is None else result.output.model_dump(mode="json")
    # an unconfirmed answer the ladder ran out of rungs for still feeds later steps, marked so
    answered_by = (outcome.answered_by or AnsweredBy.UNVERIFIED) if status == StepStatus.DONE else None
    row.update(
        confidence=result.confidence,
        first_confidence=outcome.first.confidence,
        evidence_json=json.dumps([s.model_dump() for s in result.evidence]),
        model=result.model,
        output_json=None if output is None else json.dumps(output, ensure_ascii=False),
        answered_by=answered_by,
    )
    return row, output


async def record(ctx: TaskRuntime, attempt: Attempt, status: StepStatus, error: str | None = None) -> Saved:
    """Write a step that climbed its ladder, whatever became of it: the one path to the store."""
    run_id, step_id, outcome = attempt.run_id, attempt.step_id, attempt.outcome
    row, output = step_values(attempt, status, error)
    calls = call_rows(run_id, step_id, attempt.calls, None if outcome is None else outcome.result.confidence)
    escalated = escalation_rows(run_id, step_id, attempt.escalations)
    review = None
    if status == StepStatus.WAITING and outcome is not None:
        question_json = json.dumps(question(attempt.data, outcome))
        review = Review(run_id=run_id, step_id=step_id, specialist=attempt.key, question_json=question_json)
    taught: list[dict[str, Any]] = []
    if status == StepStatus.DONE and outcome is not None and outcome.answered_by == AnsweredBy.FRONTIER:
        taught = teaches(
            attempt.key, attempt.specialist, attempt.data, outcome.result.output, "frontier", run_id, step_id
        )
    store = ctx.store
    if run_id in ctx.fresh:  # no row can exist yet: a plain insert, no lookup
        await store.offload(store.insert_step, row, calls, escalated, review, taught)
    else:
        await store.offload(store.record_step, Step(**row), calls, escalated, review, examples=taught)
    return Saved(row, output, None if review is None else review.id)


async def outcome_or_fail(ctx: TaskRuntime, attempt: Attempt) -> Outcome[Any]:
    """The attempt's outcome; a model error is recorded as a failed step, then raised."""
    if attempt.outcome is None:
        await record(ctx, attempt, StepStatus.FAILED, str(attempt.error))
        raise attempt.error or ModelError(f"step {attempt.step_id} failed")
    return attempt.outcome


async def earlier(ctx: TaskRuntime, run_id: str, step_id: str) -> tuple[Step | None, int | None]:
    """The step's row from an earlier go at this run, and the review it waits on, if any."""
    store = ctx.store
    row = await store.offload(store.finished_step, run_id, step_id)
    if row is None or row.status != StepStatus.WAITING:
        return row, None
    reviews = await store.offload(store.reviews, status=None, run_id=run_id)
    waiting = [r.id for r in reviews if r.step_id == step_id]
    return row, waiting[-1] if waiting else None


def finish_human_step(
    store: store_db.Store,
    run_id: str,
    step_id: str,
    output: BaseModel,
    review: Review,
    learner: tuple[str, Specialist[Any, Any]],
) -> Step:
    """A waiting step finished with a person's answer (synchronous: run it through offload)."""
    row = store.finished_step(run_id, step_id)
    if row is None:
        raise PlanError(f"step {step_id} of run {run_id} has no row to finish")
    key, specialist = learner
    taught: list[dict[str, Any]] = []
    if row.input_json:
        data = specialist.input_type.model_validate_json(row.input_json)
        taught = teaches(key, specialist, data, output, "human", run_id, step_id)
    who = review.answered_by or "a person"
    row.status = StepStatus.DONE
    row.finished_at = now()
    row.output_json = output.model_dump_json()
    row.confidence = 1.0
    row.answered_by = AnsweredBy.HUMAN
    row.model = f"human:{who}"
    row.evidence_json = json.dumps([{"name": "human", "value": 1.0, "detail": f"answered by {who}"}])
    human = [
        e
        for e in store.escalations(run_id)
        if e.step_id == step_id and e.rung == Rung.HUMAN and e.outcome == EscalationOutcome.PENDING
    ]
    for item in human:
        item.outcome, item.confidence_after = EscalationOutcome.ACCEPTED, 1.0
    return store.record_step(row, [], human, examples=taught)


def kept_answer(answer: Any) -> str | None:
    """A run's answer as its row keeps it: the plan's final answers (`answer`) without the
    outputs of every step (`steps`), which the step rows hold already (#16: it doubled what a
    ticket cost); `whole_answer` puts them back."""
    if answer is None:
        return None
    if isinstance(answer, dict) and set(answer) == {"answer", "steps"}:
        answer = {"answer": answer["answer"]}
    return json.dumps(answer, ensure_ascii=False)


def whole_answer(kept: str | None, plan_json: str | None, steps: list[Step]) -> Any:
    """A run's answer as `compose` made it, from its row and its steps' rows."""
    if kept is None:
        return None
    answer = json.loads(kept)
    if not (isinstance(answer, dict) and set(answer) == {"answer"}):
        return answer  # a row from before, or an answer of another shape: as it was kept
    plan = json.loads(plan_json) if plan_json else {}
    order = [s.get("id") for s in plan.get("steps", []) if isinstance(s, dict)] if isinstance(plan, dict) else []
    outputs = {s.step_id: json.loads(s.output_json) for s in steps if s.output_json is not None}
    return {**answer, "steps": {sid: outputs[sid] for sid in order if sid in outputs}}
