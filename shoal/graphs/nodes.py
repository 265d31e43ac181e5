"""The task graph's nodes: module-level functions that take the state (or a `Send` payload)
and LangGraph's `Runtime`, whose context is the `TaskRuntime`.

A node can be called alone: `await step(payload, Runtime(context=task_runtime))`. Whatever a
run derives from its plan is read from the state or the payload, never kept between calls.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt
from pydantic import BaseModel

from shoal import telemetry
from shoal.agents.escalation import Outcome
from shoal.agents.planner import TASK, Plan, PlanStep, TaskInput
from shoal.errors import PlanError
from shoal.graphs.context import Attempt, TaskRuntime, climb
from shoal.graphs.persist import earlier, finish_human_step, outcome_of, outcome_or_fail, record
from shoal.graphs.state import ReviewPayload, RunState, StepOutcome, StepPayload
from shoal.specialists.base import Specialist
from shoal.status import LadderStatus, ReviewStatus, StepStatus
from shoal.store.tables import Review


def build_input(
    specialist: Specialist[Any, Any], step: PlanStep, task: str, upstream: dict[str, StepOutcome]
) -> BaseModel:
    fields = specialist.input_type.model_fields
    if "upstream" in fields and "text" in fields:
        # a specialist that reads earlier answers as data gets them so, not as text
        given = {
            name: {"output": o["output"], "confidence": o["confidence"], "answered_by": o["answered_by"]}
            for name, o in upstream_outcomes(step, upstream).items()
        }
        structured: BaseModel = specialist.input_type.model_validate({"text": task, "upstream": given})
        return structured
    parts = []
    for name in step.inputs:
        if name == TASK:
            parts.append(task)
        else:
            source = upstream[name]
            parts.append(f"[{name}, {source['specialist']}]\n{source['text']}")
    text = "\n\n".join(parts)
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


def upstream_outcomes(step: PlanStep, upstream: dict[str, StepOutcome]) -> dict[str, StepOutcome]:
    return {name: upstream[name] for name in step.inputs if name != TASK}


def ask(review: Review, run_id: str, step_id: str) -> Any:
    """The person's answer: from the store if already given, else wait for it.

    Called in the node itself, never in a thread: `interrupt` needs the node's context."""
    if review.status == ReviewStatus.ANSWERED and review.answer_json is not None:
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


# --- the plan -------------------------------------------------------------------------------


async def known_plan(ctx: TaskRuntime, state: RunState) -> dict[str, Any] | None:
    """The update for a run whose plan was given, chosen earlier or waits on a person; None
    when the planner must be asked."""
    store, run_id = ctx.store, state["run_id"]
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
    _, review_id = await earlier(ctx, run_id, "plan")
    return None if review_id is None else {"plan_review": {"review_id": review_id}}


def plan_status(ctx: TaskRuntime, outcome: Outcome[Plan]) -> tuple[StepStatus, str | None]:
    """A plan the planner is sure of runs; one it doubts, or that cannot run, goes to a person."""
    chosen = outcome.result.output
    if outcome.status in (LadderStatus.ACCEPTED, LadderStatus.ESCALATED) and chosen is not None:
        doubtful = chosen.problems(list(ctx.specialists), ctx.max_steps)
        return (StepStatus.WAITING if doubtful else StepStatus.DONE), None
    if outcome.status == LadderStatus.NEEDS_HUMAN:
        return StepStatus.WAITING, None
    return StepStatus.FAILED, outcome.result.error or "no usable plan"


async def plan(state: RunState, runtime: Runtime[TaskRuntime]) -> dict[str, Any]:
    ctx = runtime.context
    known = await known_plan(ctx, state)
    if known is not None:
        return known
    run_id = state["run_id"]
    data = TaskInput(task=state["task"])
    attempt = await climb(ctx, Attempt(run_id, "plan", "planner", "", ctx.planner, data))
    outcome = await outcome_or_fail(ctx, attempt)
    status, error = plan_status(ctx, outcome)
    saved = await record(ctx, attempt, status, error)
    if status == StepStatus.FAILED:
        raise PlanError(f"no usable plan for the task: {outcome.result.explain()}")
    if saved.review_id is not None:
        return {"plan_review": {"review_id": saved.review_id}}
    chosen = outcome.result.output
    assert isinstance(chosen, Plan)  # plan_status said "done": the planner gave a plan that runs
    await ctx.store.offload(ctx.store.update_run, run_id, plan_json=chosen.model_dump_json())
    return {"plan": chosen.model_dump()}


async def plan_review(state: RunState, runtime: Runtime[TaskRuntime]) -> dict[str, Any]:
    ctx, run_id = runtime.context, state["run_id"]
    pending = state.get("plan_review") or {}
    review = await ctx.store.offload(ctx.store.get_review, int(pending["review_id"]))
    chosen = Plan.model_validate(ask(review, run_id, "plan")).check(list(ctx.specialists), ctx.max_steps)
    await ctx.store.offload(ctx.store.update_run, run_id, plan_json=chosen.model_dump_json())
    learner = ("planner", ctx.planner)
    await ctx.store.offload(finish_human_step, ctx.store, run_id, "plan", chosen, review, learner)
    return {"plan": chosen.model_dump(), "plan_review": None}


def after_plan(state: RunState) -> str:
    return "plan_review" if state.get("plan_review") else "dispatch"


# --- the steps ------------------------------------------------------------------------------


def launch(
    run_id: str, task: str, plan_dict: dict[str, Any], steps: list[dict[str, Any]], done: dict[str, StepOutcome]
) -> list[Send]:
    return [
        Send(
            "step",
            StepPayload(
                run_id=run_id,
                task=task,
                plan=plan_dict,
                step=s,
                upstream={i: done[i] for i in s.get("inputs") or () if i != TASK},
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
    plan_dict = state["plan"] or {}
    # validated here rather than cached: it is cheap, and a cache would outlive a failed run
    chosen = Plan.model_validate(plan_dict)
    results = state.get("results") or {}
    waiting = state.get("waiting") or {}
    running = state.get("running") or {}
    ready = chosen.ready(done=set(results), busy=set(waiting) | set(running))
    if ready:
        steps = [s.model_dump() for s in ready]
        return Command(
            update={"running": {s.id: True for s in ready}},
            goto=launch(state["run_id"], state["task"], plan_dict, steps, results),
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


def successors(plan_dict: dict[str, Any], step_id: str) -> tuple[list[dict[str, Any]], bool]:
    """The steps that read only `step_id`, and whether any other step reads it too.

    Derived from the plan each time (one pass over a handful of steps) instead of cached per run."""
    only: list[dict[str, Any]] = []
    joins = False
    for s in plan_dict["steps"]:
        reads = {i for i in s.get("inputs") or () if i != TASK}
        if step_id in reads:
            if len(reads) == 1:
                only.append(s)
            else:
                joins = True
    return only, joins


def finished(payload: StepPayload, update: dict[str, Any]) -> Command[Any]:
    """Where a step goes next. A successor that reads no other step is launched at once
    (one superstep per step along a chain); joins and the end go through dispatch."""
    spec_id = payload["step"]["id"]
    only, joins = successors(payload["plan"], spec_id)
    running: dict[str, Any] = {spec_id: None}
    goto: list[Send | str] = []
    outcome = (update.get("results") or {}).get(spec_id)
    if outcome is not None and only:
        goto += launch(payload["run_id"], payload["task"], payload["plan"], only, {spec_id: outcome})
        running.update({s["id"]: True for s in only})
    if outcome is None or joins or not only:
        goto.append("dispatch")
    return Command(update={**update, "running": running}, goto=goto)


async def run_step(ctx: TaskRuntime, payload: StepPayload) -> dict[str, Any]:
    """One plan step: reuse its finished row if a run is resumed, else climb, record, hand on."""
    run_id = payload["run_id"]
    spec = PlanStep.model_validate(payload["step"])
    if run_id not in ctx.fresh:
        row, review_id = await earlier(ctx, run_id, spec.id)
        if row is not None and row.status == StepStatus.DONE:
            return {"results": {spec.id: outcome_of(row)}}
        if review_id is not None:
            return {"waiting": {spec.id: {"review_id": review_id}}}
    specialist = ctx.specialists[spec.specialist]
    data = build_input(specialist, spec, payload["task"], payload["upstream"])
    attempt = await climb(ctx, Attempt(run_id, spec.id, spec.specialist, spec.instruction, specialist, data))
    outcome = await outcome_or_fail(ctx, attempt)
    waits = outcome.status == LadderStatus.NEEDS_HUMAN
    saved = await record(ctx, attempt, StepStatus.WAITING if waits else StepStatus.DONE)
    if saved.review_id is not None:
        return {"waiting": {spec.id: {"review_id": saved.review_id}}}
    return {"results": {spec.id: saved.outcome()}}


async def step(payload: StepPayload, runtime: Runtime[TaskRuntime]) -> Command[Any]:
    spec = payload["step"]
    with telemetry.step_span(payload["run_id"], spec["id"], spec["specialist"]):
        return finished(payload, await run_step(runtime.context, payload))


async def review(payload: ReviewPayload, runtime: Runtime[TaskRuntime]) -> dict[str, Any]:
    ctx = runtime.context
    run_id, step_id = payload["run_id"], payload["step_id"]
    row = await ctx.store.offload(ctx.store.get_review, payload["review_id"])
    specialist = ctx.specialists[row.specialist]
    output = specialist.output_type.model_validate(ask(row, run_id, step_id))
    learner = (row.specialist, specialist)
    saved = await ctx.store.offload(finish_human_step, ctx.store, run_id, step_id, output, row, learner)
    return {"results": {step_id: outcome_of(saved)}, "waiting": {step_id: None}}


async def compose(state: RunState) -> dict[str, Any]:
    chosen = Plan.model_validate(state["plan"])
    results = state.get("results") or {}
    return {
        "answer": {
            "answer": {sid: results[sid]["output"] for sid in chosen.sinks() if sid in results},
            "steps": {sid: results[sid]["output"] for sid in (s.id for s in chosen.steps) if sid in results},
        }
    }
