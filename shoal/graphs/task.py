"""The task graph: plan -> dispatch (Send) -> step (run, gate, escalate) -> compose.

```
START -> plan -> [plan_review] -> dispatch -> step* ---> dispatch -> ... -> compose -> END
                                          \\-> review* -/
```

Crash safety does not rest on LangGraph's checkpoints alone: every finished step is written to
the store (with its model calls and escalations) in one transaction before the node returns,
and a step node first looks for its own finished row. A resumed run therefore never repeats
a paid call, whatever the checkpoint durability. The human rung is a node of its own
(`review`), after the node that made the model calls, because a node that calls `interrupt()`
runs again from its start on resume.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from pydantic import BaseModel

from shoal.agents.escalation import Budget, Escalation, Ladder, LadderConfig, Outcome
from shoal.agents.planner import TASK, Plan, PlanError, Planner, PlanStep, TaskInput
from shoal.errors import ModelError
from shoal.graphs.state import ReviewPayload, RunState, StepOutcome, StepPayload
from shoal.models.router import CallRecord
from shoal.specialists.base import Result, Specialist
from shoal.store import db as store_db
from shoal.store.tables import Escalation as EscalationRow
from shoal.store.tables import Review, Step

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
    ledger: store_db.StoreLedger | None = None
    max_steps: int = 6
    # runs this process started from nothing: no step rows can exist yet, so no lookups
    fresh: set[str] = field(default_factory=set)

    def ladder(self, run_id: str, name: str, threshold: float, sink: list[Escalation]) -> Ladder:
        async def keep(item: Escalation) -> None:
            sink.append(item)

        return Ladder(self.ladder_config(name, threshold), budget=self.budget(run_id), on_escalation=keep)


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


def build_input(
    specialist: Specialist[Any, Any], step: PlanStep, task: str, upstream: dict[str, StepOutcome]
) -> BaseModel:
    parts = []
    for name in step.inputs:
        if name == TASK:
            parts.append(task)
        else:
            earlier = upstream[name]
            parts.append(f"[{name}, {earlier['specialist']}]\n{earlier['text']}")
    text = "\n\n".join(parts)
    fields = specialist.input_type.model_fields
    if "text" in fields:
        data: dict[str, Any] = {"text": text}
        if "instruction" in fields:
            data["instruction"] = step.instruction
        built: BaseModel = specialist.input_type.model_validate(data)
        return built
    if "task" in fields:
        built = specialist.input_type.model_validate({"task": f"{step.instruction}\n\n{text}".strip()})
        return built
    raise PlanError(
        f"specialist {specialist.name} takes {specialist.input_type.__name__}, which a plan step cannot "
        "fill from text; give it a 'text' or 'task' field, or run it outside the planner"
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
                "reply_json": None if reply is None else reply.record_json(),
                "error": call.error,
                "error_type": call.error_type,
                "raw_text": call.raw_text,
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
    frontier = next((e for e in outcome.escalations if e.rung == "frontier" and e.outcome != "skipped"), None)
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


def outcome_of_values(row: dict[str, Any], output: Any) -> StepOutcome:
    return StepOutcome(
        step_id=row["step_id"],
        specialist=row["specialist"],
        status=row["status"],
        output=output,
        text=render(output),
        confidence=row.get("confidence") or 0.0,
        answered_by=row.get("answered_by"),
    )


def outcome_of(row: Step, output: Any = None) -> StepOutcome:
    """What a step hands on; `output` spares re-reading the JSON the caller just wrote."""
    if output is None and row.output_json is not None:
        output = json.loads(row.output_json)
    return StepOutcome(
        step_id=row.step_id,
        specialist=row.specialist,
        status=row.status,
        output=output,
        text=render(output),
        confidence=row.confidence or 0.0,
        answered_by=row.answered_by,
    )


def build_task_graph(runtime: TaskRuntime) -> StateGraph[RunState]:
    store = runtime.store
    plans: dict[str, Plan] = {}  # validated once per run, not once per step

    # per run: step id -> (successors that read only that step, whether another step joins on it)
    links: dict[str, dict[str, tuple[list[PlanStep], bool]]] = {}

    def plan_of(run_id: str, data: dict[str, Any]) -> Plan:
        known = plans.get(run_id)
        if known is None:
            known = plans[run_id] = Plan.model_validate(data)
        return known

    def links_of(run_id: str, data: dict[str, Any]) -> dict[str, tuple[list[PlanStep], bool]]:
        known = links.get(run_id)
        if known is None:
            chosen = plan_of(run_id, data)
            readers = {s.id: {i for i in s.inputs if i != TASK} for s in chosen.steps}
            known = links[run_id] = {}
            for step in chosen.steps:
                exclusive = [s for s in chosen.steps if readers[s.id] == {step.id}]
                mine = {s.id for s in exclusive}
                joins = any(step.id in readers[s.id] for s in chosen.steps if s.id not in mine)
                known[step.id] = (exclusive, joins)
        return known

    async def run_ladder(
        run_id: str, step_id: str, specialist: Specialist[Any, Any], data: BaseModel
    ) -> tuple[Outcome[Any] | None, list[CallRecord], list[Escalation], ModelError | None]:
        calls: list[CallRecord] = []
        escalations: list[Escalation] = []
        token = CURRENT_CALLS.set(calls)
        try:
            ladder = runtime.ladder(run_id, specialist.name, specialist.threshold, escalations)
            return await ladder.run(specialist, data), calls, escalations, None
        except ModelError as exc:
            return None, calls, escalations, exc
        finally:
            CURRENT_CALLS.reset(token)

    async def plan(state: RunState) -> dict[str, Any]:
        run_id = state["run_id"]
        # every store call goes through offload: none may block the loop (see Store.offload)
        run = await store.offload(store.get_run, run_id)
        if run is None:  # the graph used as a subgraph of someone else's: keep the records anyway
            run = await store.offload(store.create_run, run_id, state["task"])
        if state.get("plan"):
            if not run.plan_json:
                chosen_json = Plan.model_validate(state["plan"]).model_dump_json()
                await store.offload(store.update_run, run_id, plan_json=chosen_json)
            return {}
        if run.plan_json:
            return {"plan": json.loads(run.plan_json)}
        existing = await store.offload(store.finished_step, run_id, "plan")
        if existing is not None and existing.status == "waiting":
            reviews = await store.offload(store.reviews, status=None, run_id=run_id)
            waiting = [r for r in reviews if r.step_id == "plan"]
            return {"plan_review": {"review_id": waiting[-1].id}} if waiting else {}
        data = TaskInput(task=state["task"])
        outcome, calls, escalations, error = await run_ladder(run_id, "plan", runtime.planner, data)
        step = Step(run_id=run_id, step_id="plan", specialist="planner", input_json=data.model_dump_json())
        if error is not None or outcome is None:
            step.status, step.error = "failed", str(error)
            await store.offload(
                store.record_step,
                step,
                call_rows(run_id, "plan", calls, None),
                escalation_rows(run_id, "plan", escalations),
            )
            raise error or PlanError("planning failed")
        result: Result[Any] = outcome.result
        step.confidence = result.confidence
        step.first_confidence = outcome.first.confidence
        step.evidence_json = json.dumps([s.model_dump() for s in result.evidence])
        step.model = result.model
        step.output_json = None if result.output is None else result.output.model_dump_json()
        rows = (
            call_rows(run_id, "plan", calls, result.confidence),
            escalation_rows(run_id, "plan", escalations),
        )
        if outcome.status in ("accepted", "escalated") and result.output is not None:
            chosen: Plan = result.output
            problems = chosen.problems(list(runtime.specialists), runtime.max_steps)
            if not problems:
                step.status, step.answered_by = "done", outcome.answered_by
                await store.offload(store.record_step, step, *rows)
                await store.offload(store.update_run, run_id, plan_json=chosen.model_dump_json())
                return {"plan": chosen.model_dump()}
            outcome = outcome.model_copy(update={"status": "needs_human"})
        if outcome.status == "needs_human":
            step.status = "waiting"
            review = Review(
                run_id=run_id,
                step_id="plan",
                specialist="planner",
                question_json=json.dumps(question(data, outcome)),
            )
            await store.offload(store.record_step, step, *rows, review=review)
            return {"plan_review": {"review_id": review.id}}
        step.status, step.error = "failed", result.error or "no usable plan"
        await store.offload(store.record_step, step, *rows)
        raise PlanError(f"no usable plan for the task: {result.explain()}")

    async def plan_review(state: RunState) -> dict[str, Any]:
        pending = state.get("plan_review") or {}
        review = await store.offload(store.get_review, int(pending["review_id"]))
        answer = _answer(review, state["run_id"], "plan")
        chosen = Plan.model_validate(answer).check(list(runtime.specialists), runtime.max_steps)
        await store.offload(store.update_run, state["run_id"], plan_json=chosen.model_dump_json())
        await store.offload(_finish_human_step, store, state["run_id"], "plan", chosen, review)
        return {"plan": chosen.model_dump(), "plan_review": None}

    def launch(
        run_id: str, task: str, plan_dict: dict[str, Any], steps: list[PlanStep], done: dict[str, StepOutcome]
    ) -> list[Send]:
        return [
            Send(
                "step",
                StepPayload(
                    run_id=run_id,
                    task=task,
                    plan=plan_dict,
                    step=s.model_dump(),
                    upstream={i: done[i] for i in s.inputs if i != TASK},
                ),
            )
            for s in steps
        ]

    async def dispatch(state: RunState) -> Command[Any]:
        """Launch every ready step; when nothing is left, compose.

        Launched steps are marked running in the same update, so a dispatch that runs while
        they are under way does not launch them twice.
        """
        if state.get("plan_review"):
            return Command(goto="plan_review")
        chosen = plan_of(state["run_id"], state["plan"] or {})
        results = state.get("results") or {}
        waiting = state.get("waiting") or {}
        running = state.get("running") or {}
        ready = chosen.ready(done=set(results), busy=set(waiting) | set(running))
        if ready:
            return Command(
                update={"running": {s.id: True for s in ready}},
                goto=launch(state["run_id"], state["task"], state["plan"] or {}, ready, results),
            )
        if running:
            return Command(goto=[])  # the steps under way come back here when they finish
        if waiting:
            return Command(
                goto=[
                    Send("review", ReviewPayload(run_id=state["run_id"], step_id=sid, review_id=int(w["review_id"])))
                    for sid, w in waiting.items()
                ]
            )
        return Command(goto="compose")

    def finished(payload: StepPayload, update: dict[str, Any]) -> Command[Any]:
        """Where a step goes next. A successor that reads no other step is launched at once
        (one superstep per step along a chain); joins and the end go through dispatch."""
        spec_id = payload["step"]["id"]
        exclusive, joins = links_of(payload["run_id"], payload["plan"])[spec_id]
        running: dict[str, Any] = {spec_id: None}
        goto: list[Send | str] = []
        outcome = (update.get("results") or {}).get(spec_id)
        if outcome is not None and exclusive:
            goto += launch(payload["run_id"], payload["task"], payload["plan"], exclusive, {spec_id: outcome})
            running.update({s.id: True for s in exclusive})
        if outcome is None or joins or not exclusive:
            goto.append("dispatch")
        return Command(update={**update, "running": running}, goto=goto)

    async def step(payload: StepPayload) -> Command[Any]:
        return finished(payload, await run_step(payload))

    async def run_step(payload: StepPayload) -> dict[str, Any]:
        run_id = payload["run_id"]
        spec = PlanStep.model_validate(payload["step"])
        fresh = run_id in runtime.fresh
        existing = None if fresh else await store.offload(store.finished_step, run_id, spec.id)
        if existing is not None and existing.status == "done":
            return {"results": {spec.id: outcome_of(existing)}}
        if existing is not None and existing.status == "waiting":
            reviews = await store.offload(store.reviews, status=None, run_id=run_id)
            pending = [r for r in reviews if r.step_id == spec.id]
            if pending:
                return {"waiting": {spec.id: {"review_id": pending[-1].id}}}
        specialist = runtime.specialists[spec.specialist]
        data = build_input(specialist, spec, payload["task"], payload["upstream"])
        outcome, calls, escalations, error = await run_ladder(run_id, spec.id, specialist, data)
        # plain values, not a Step object: a run this process started inserts them directly
        row: dict[str, Any] = {
            "run_id": run_id,
            "step_id": spec.id,
            "specialist": spec.specialist,
            "instruction": spec.instruction,
            "input_json": data.model_dump_json(),
        }

        async def save(
            calls: list[dict[str, Any]],
            escalated: list[EscalationRow],
            review: Review | None = None,
            examples: list[dict[str, Any]] | None = None,
        ) -> None:
            if fresh:
                await store.offload(store.insert_step, row, calls, escalated, review, examples or ())
            else:
                await store.offload(store.record_step, Step(**row), calls, escalated, review, examples=examples or ())

        if error is not None or outcome is None:
            row["status"], row["error"] = "failed", str(error)
            await save(call_rows(run_id, spec.id, calls, None), escalation_rows(run_id, spec.id, escalations))
            raise error or ModelError(f"step {spec.id} failed")
        result: Result[Any] = outcome.result
        output = None if result.output is None else result.output.model_dump(mode="json")
        row.update(
            confidence=result.confidence,
            first_confidence=outcome.first.confidence,
            evidence_json=json.dumps([s.model_dump() for s in result.evidence]),
            model=result.model,
            output_json=None if output is None else json.dumps(output, ensure_ascii=False),
            answered_by=outcome.answered_by or ("unverified" if outcome.status == "failed" else None),
        )
        calls_rows = call_rows(run_id, spec.id, calls, result.confidence)
        escalated = escalation_rows(run_id, spec.id, escalations)
        if outcome.status == "needs_human":
            row["status"] = "waiting"
            review = Review(
                run_id=run_id,
                step_id=spec.id,
                specialist=spec.specialist,
                question_json=json.dumps(question(data, outcome)),
            )
            await save(calls_rows, escalated, review)
            return {"waiting": {spec.id: {"review_id": review.id}}}
        row["status"] = "done"
        taught = (
            teaches(spec.specialist, specialist, data, result.output, "frontier", run_id, spec.id)
            if outcome.answered_by == "frontier"
            else []
        )
        await save(calls_rows, escalated, examples=taught)
        return {"results": {spec.id: outcome_of_values(row, output)}}

    async def review(payload: ReviewPayload) -> dict[str, Any]:
        run_id, step_id = payload["run_id"], payload["step_id"]
        row = await store.offload(store.get_review, payload["review_id"])
        answer = _answer(row, run_id, step_id)
        specialist = runtime.specialists[row.specialist]
        output = specialist.output_type.model_validate(answer)
        learner = (row.specialist, specialist)
        saved = await store.offload(_finish_human_step, store, run_id, step_id, output, row, learner)
        return {"results": {step_id: outcome_of(saved)}, "waiting": {step_id: None}}

    async def compose(state: RunState) -> dict[str, Any]:
        links.pop(state["run_id"], None)
        chosen = plans.pop(state["run_id"], None) or Plan.model_validate(state["plan"])
        results = state.get("results") or {}
        return {
            "answer": {
                "answer": {sid: results[sid]["output"] for sid in chosen.sinks() if sid in results},
                "steps": {sid: results[sid]["output"] for sid in (s.id for s in chosen.steps) if sid in results},
            }
        }

    graph: StateGraph[RunState] = StateGraph(RunState)
    graph.add_node("plan", plan)
    graph.add_node("plan_review", plan_review)
    graph.add_node("dispatch", dispatch, destinations=("step", "review", "compose", "plan_review"))
    graph.add_node("step", step, destinations=("step", "dispatch"))  # type: ignore[arg-type]
    graph.add_node("review", review)  # type: ignore[arg-type]
    graph.add_node("compose", compose)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", lambda s: "plan_review" if s.get("plan_review") else "dispatch")
    graph.add_edge("plan_review", "dispatch")
    graph.add_edge("review", "dispatch")
    graph.add_edge("compose", END)
    return graph


def _answer(review: Review, run_id: str, step_id: str) -> Any:
    """The person's answer: from the store if already given, else wait for it (interrupt)."""
    if review.status == "answered" and review.answer_json is not None:
        return json.loads(review.answer_json)
    value = interrupt(
        {
            "run_id": run_id,
            "step_id": step_id,
            "review_id": review.id,
            "question": json.loads(review.question_json),
        }
    )
    return value["answer"] if isinstance(value, dict) and "answer" in value else value


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


def _finish_human_step(
    store: store_db.Store,
    run_id: str,
    step_id: str,
    output: BaseModel,
    review: Review,
    learner: tuple[str, Specialist[Any, Any]] | None = None,
) -> Step:
    row = store.finished_step(run_id, step_id)
    if row is None:
        raise PlanError(f"step {step_id} of run {run_id} has no row to finish")
    taught: list[dict[str, Any]] = []
    if learner is not None and row.input_json:
        key, specialist = learner
        data = specialist.input_type.model_validate_json(row.input_json)
        taught = teaches(key, specialist, data, output, "human", run_id, step_id)
    row.status = "done"
    row.output_json = output.model_dump_json()
    row.confidence = 1.0
    row.answered_by = "human"
    row.model = f"human:{review.answered_by or 'a person'}"
    row.evidence_json = json.dumps(
        [{"name": "human", "value": 1.0, "detail": f"answered by {review.answered_by or 'a person'}"}]
    )
    human = [
        e for e in store.escalations(run_id) if e.step_id == step_id and e.rung == "human" and e.outcome == "pending"
    ]
    for item in human:
        item.outcome, item.confidence_after = "accepted", 1.0
    return store.record_step(row, [], human, examples=taught)
