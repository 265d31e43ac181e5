"""The task graph's state and its reducers.

Parallel step branches (LangGraph `Send`) write the same keys in one superstep, so every key
they touch has a reducer that merges instead of overwriting (LangGraph raises
`InvalidUpdateError` otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Union of two dicts; a value of None removes its key (a review that was answered)."""
    merged = dict(left or {})
    for key, value in (right or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class StepOutcome(TypedDict):
    """What a finished step hands on: enough to feed later steps and compose the answer."""

    step_id: str
    specialist: str
    # `StepStatus` and `AnsweredBy` values as plain strings: the state is checkpointed, and
    # LangGraph's serialiser warns about (or, strict, refuses) classes it does not know
    status: str
    output: Any
    text: str
    confidence: float
    answered_by: str | None


class RunState(TypedDict, total=False):
    run_id: str
    task: str
    plan: dict[str, Any] | None
    plan_review: dict[str, Any] | None
    results: Annotated[dict[str, StepOutcome], merge]
    waiting: Annotated[dict[str, dict[str, Any]], merge]
    running: Annotated[dict[str, bool], merge]  # launched and not yet finished
    answer: dict[str, Any] | None


class StepPayload(TypedDict):
    run_id: str
    task: str
    plan: dict[str, Any]
    step: dict[str, Any]
    upstream: dict[str, StepOutcome]


class ReviewPayload(TypedDict):
    run_id: str
    step_id: str
    review_id: int
