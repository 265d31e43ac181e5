"""Reviews: the decisions put to a person, and turning what the person types into the
specialist's answer.

One reading of an answer for every face (the CLI's `--answer`, the TUI's input line):

- a JSON object is the specialist's output; a key the specialist does not have is refused
  (naming it and the known ones), never dropped, so a typo cannot store an all-empty answer;
- for a classifier, a bare label, matched to its labels ignoring case (`refund` -> `REFUND`);
- for an output with one text field (a summary's `summary`, a reply's `reply`), plain text;
- the planner's answer is a plan in JSON, checked as a `--plan` file is.

A wrong answer raises `AnswerError` saying what the specialist expects. Accepting takes the best
answer the models gave, and is refused when there is none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shoal.agents.planner import Plan, Planner
from shoal.engine.reports import RunReport
from shoal.engine.runs import RunDriver
from shoal.engine.views import Evidence, distinct_reasons, evidence
from shoal.engine.wiring import TASK, Wiring
from shoal.errors import AnswerError, StoreError, TaskError
from shoal.specialists.base import Specialist
from shoal.specialists.classifier import Classifier
from shoal.status import ReviewStatus
from shoal.store.db import Store
from shoal.store.tables import Review

PLAN_SHAPE = '{"steps": [{"id": "a", "specialist": "...", "instruction": "...", "inputs": ["task"]}]}'


class FrontierTry(BaseModel):
    """What the frontier rung made of the step before it came to a person."""

    model: str | None = None
    outcome: str = ""
    reason: str = ""


class ReviewDetail(BaseModel):
    """One decision put to a person, as the faces show it."""

    id: int
    run_id: str
    step_id: str
    specialist: str
    status: ReviewStatus
    instruction: str = ""
    input_text: str = Field(description="what the specialist read")
    small_model: str | None = None
    small_answer: dict[str, Any] | None = None
    confidence: float = 0.0
    evidence: list[Evidence] = Field(default_factory=list)
    frontier: FrontierTry | None = None
    reasons: list[str] = Field(default_factory=list, description="why it waits for a person, each reason once")
    best_answer: dict[str, Any] | None = Field(default=None, description="the best answer the models gave")
    expects: str = Field(description="how to answer, worded for a person")
    labels: list[str] = Field(default_factory=list, description="a classifier's labels; empty for others")
    answer: dict[str, Any] | None = None
    answered_by: str | None = None


# --- reading an answer ------------------------------------------------------------------------


def find_specialist(wiring: Wiring, workflow: str, name: str) -> Specialist[Any, Any]:
    """The specialist a review of a run of `workflow` waits on."""
    if name == "planner":
        return wiring.planner
    found = wiring.workflow_specialists(workflow).get(name)
    if found is None:  # a review recorded under another workflow's name
        found = wiring.specialists.get(name) or wiring.ticket_specialists().get(name)
    if found is None:
        raise TaskError(f"no specialist '{name}' in this shoal to check the answer against")
    return found


def expects(specialist: Specialist[Any, Any]) -> str:
    """What an answer for `specialist` looks like, worded for a person."""
    if isinstance(specialist, Planner):
        return f"a plan in JSON: {PLAN_SHAPE}"
    if isinstance(specialist, Classifier):
        return f"one of its labels (any case): {', '.join(specialist.labels)}"
    fields = _fields(specialist.output_type)
    field = text_field(specialist.output_type)
    if field is not None:
        return f"plain text (its {field}), or a JSON object with {fields}"
    return f"a JSON object with {fields}"


def _fields(output_type: type[BaseModel]) -> str:
    names = list(output_type.model_fields)
    required = [n for n, info in output_type.model_fields.items() if info.is_required()]
    if not required:
        return f"the fields {', '.join(names)} (all optional)"
    optional = [n for n in names if n not in required]
    return f"the field{'s' if len(required) > 1 else ''} {', '.join(required)}" + (
        f" (optional: {', '.join(optional)})" if optional else ""
    )


def text_field(output_type: type[BaseModel]) -> str | None:
    """The one field plain text can fill: the output's only required field, when it is text."""
    required = [(n, info) for n, info in output_type.model_fields.items() if info.is_required()]
    if len(required) == 1 and required[0][1].annotation is str:
        return required[0][0]
    return None


def match_label(name: str, labels: Iterable[str], typed: str) -> str:
    """`typed` as one of `labels`: exactly, or else ignoring case."""
    known = list(labels)
    if typed in known:
        return typed
    folded = [label for label in known if label.casefold() == typed.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    if folded:
        raise AnswerError(f"'{typed}' matches several labels of {name} when case is ignored: {', '.join(folded)}")
    raise AnswerError(f"'{typed}' is not a label of {name}; its labels: {', '.join(known)}")


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'the answer'}: {error['msg']}" for error in exc.errors()
    )


def check_plan(wiring: Wiring, value: Any, *, what: str = "the answer") -> Plan:
    """`value` (JSON data) as a plan that can run in this shoal: AnswerError for the wrong shape,
    PlanError for a plan that cannot run (an unknown specialist, a cycle)."""
    try:
        plan = Plan.model_validate(value)
    except ValidationError as exc:
        raise AnswerError(f"{what} is not a plan ({_problems(exc)}); a plan is {PLAN_SHAPE}") from None
    return plan.check(list(wiring.specialists), wiring.settings.max_plan_steps)


def check_output(wiring: Wiring, name: str, specialist: Specialist[Any, Any], value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object as `specialist`'s output (JSON data), or AnswerError saying why it is not one."""
    if isinstance(specialist, Planner):
        return check_plan(wiring, value).model_dump(mode="json")
    output_type = specialist.output_type
    known = {alias for n, info in output_type.model_fields.items() for alias in (n, info.alias) if alias}
    unknown = [key for key in value if key not in known]
    if unknown:
        keys = ", ".join(f"'{key}'" for key in unknown)
        fields = ", ".join(output_type.model_fields)
        raise AnswerError(f"{name} has no field{'s' if len(unknown) > 1 else ''} {keys}; its fields: {fields}")
    if isinstance(specialist, Classifier):
        value = _labelled(name, specialist, value)
    try:
        output = output_type.model_validate(value)
    except ValidationError as exc:
        problems = _problems(exc)
        raise AnswerError(f"that answer does not fit {name} ({problems}); it takes {expects(specialist)}") from None
    try:
        specialist.check_answer(output)
    except ValueError as exc:
        raise AnswerError(f"that answer does not fit {name}: {exc}") from None
    dumped: dict[str, Any] = output.model_dump(mode="json")
    return dumped


def _labelled(name: str, classifier: Classifier, value: dict[str, Any]) -> dict[str, Any]:
    """A classifier's answer with its labels matched to the label set, ignoring case."""
    fixed = dict(value)
    label, labels = fixed.get("label"), fixed.get("labels")
    if isinstance(label, str):
        fixed["label"] = match_label(name, classifier.labels, label)
    if isinstance(labels, list):
        fixed["labels"] = [match_label(name, classifier.labels, x) if isinstance(x, str) else x for x in labels]
    elif isinstance(fixed.get("label"), str) and not classifier.multi_label:
        fixed["labels"] = [fixed["label"]]
    return fixed


def read_answer(wiring: Wiring, name: str, specialist: Specialist[Any, Any], text: str) -> dict[str, Any]:
    """What a person typed, as `specialist`'s output (JSON data); see the module docstring."""
    typed = text.strip()
    if not typed:
        raise AnswerError(f"the answer is empty; {name} takes {expects(specialist)}")
    try:
        value: Any = json.loads(typed)
    except ValueError as exc:
        if typed.startswith("{"):
            raise AnswerError(f"that answer is not valid JSON ({exc}); {name} takes {expects(specialist)}") from None
        value = typed
    if isinstance(value, dict):
        return check_output(wiring, name, specialist, value)
    plain = value if isinstance(value, str) else typed  # a quoted string is its text; 42 is "42"
    if isinstance(specialist, Planner):
        raise AnswerError(f"the planner's answer is {expects(specialist)}")
    if isinstance(specialist, Classifier):
        label = match_label(name, specialist.labels, plain.strip())
        return check_output(wiring, name, specialist, {"label": label, "labels": [label]})
    field = text_field(specialist.output_type)
    if field is None:
        raise AnswerError(f"{name} takes {expects(specialist)}, not plain text")
    return check_output(wiring, name, specialist, {field: plain})


# --- the queue --------------------------------------------------------------------------------


def _question(row: Review) -> dict[str, Any]:
    question = json.loads(row.question_json or "{}")
    return question if isinstance(question, dict) else {}


def _workflow(store: Store, run_id: str) -> str:
    run = store.get_run(run_id)
    return TASK if run is None else run.workflow


def _detail(wiring: Wiring, row: Review, workflow: str) -> ReviewDetail:
    question = _question(row)
    data = question.get("input")
    data = data if isinstance(data, dict) else {}
    text = data.get("text", data.get("task"))
    try:
        specialist: Specialist[Any, Any] | None = find_specialist(wiring, workflow, row.specialist)
    except TaskError:  # shown all the same; answering it says why it cannot be checked
        specialist = None
    frontier = question.get("frontier")
    best = question.get("best_answer")
    small = question.get("small_answer")
    return ReviewDetail(
        id=row.id or 0,
        run_id=row.run_id,
        step_id=row.step_id,
        specialist=row.specialist,
        status=row.status,
        instruction=str(data.get("instruction") or ""),
        input_text=text if isinstance(text, str) else json.dumps(data, ensure_ascii=False),
        small_model=question.get("small_model"),
        small_answer=small if isinstance(small, dict) else None,
        confidence=float(question.get("confidence") or 0.0),
        evidence=evidence(question.get("evidence")),
        frontier=FrontierTry.model_validate(frontier) if isinstance(frontier, dict) else None,
        reasons=distinct_reasons(question.get("reasons") or []),
        best_answer=best if isinstance(best, dict) else None,
        expects="JSON of the specialist's output" if specialist is None else expects(specialist),
        labels=list(specialist.labels) if isinstance(specialist, Classifier) else [],
        answer=json.loads(row.answer_json) if row.answer_json else None,
        answered_by=row.answered_by,
    )


def detail(wiring: Wiring, review_id: int) -> ReviewDetail:
    """One review: the question, the input, the models' answers and evidence, how to answer."""
    row = wiring.store.get_review(review_id)
    return _detail(wiring, row, _workflow(wiring.store, row.run_id))


def pending(wiring: Wiring) -> list[ReviewDetail]:
    """The reviews waiting for a person, oldest first."""
    rows: Sequence[Review] = wiring.store.reviews(status=ReviewStatus.PENDING)
    workflows = {run_id: _workflow(wiring.store, run_id) for run_id in {r.run_id for r in rows}}
    return [_detail(wiring, row, workflows[row.run_id]) for row in rows]


def best_answer(store: Store, review_id: int) -> dict[str, Any] | None:
    """The best answer the models gave for a review (JSON data), or None when none was usable."""
    best = _question(store.get_review(review_id)).get("best_answer")
    return best if isinstance(best, dict) else None


async def answer(
    runs: RunDriver,
    review_id: int,
    text: str | None = None,
    *,
    accept: bool = False,
    who: str = "a person",
    queue: bool = False,
) -> RunReport:
    """Answer a pending review with what a person typed (`text`), or `accept` the models' best
    answer; the run then goes on at once, or (`queue`) on whichever worker is free. Nothing is
    stored unless the answer fits."""
    store = runs.store
    row = await store.offload(store.get_review, review_id)
    if row.status != ReviewStatus.PENDING:
        raise StoreError(f"review {review_id} was already answered by {row.answered_by}")
    if accept == (text is not None):
        raise AnswerError("give an answer, or accept the best one the models gave (one of the two)")
    workflow = await store.offload(_workflow, store, row.run_id)
    specialist = find_specialist(runs.wiring, workflow, row.specialist)
    if text is not None:
        value = read_answer(runs.wiring, row.specialist, specialist, text)
    else:
        best = _question(row).get("best_answer")
        if not isinstance(best, dict):
            raise AnswerError(
                f"review {review_id}: the models gave no usable answer to accept; "
                f"answer it yourself: {row.specialist} takes {expects(specialist)}"
            )
        value = check_output(runs.wiring, row.specialist, specialist, best)
    if queue:
        return await runs.review_later(review_id, value, who=who)
    return await runs.review(review_id, value, who=who)
