"""What the screens show, read from the store: plain rows, so screens stay thin and testable."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from shoal.store import Store

STATUSES = (None, "running", "waiting", "done", "failed", "stopped")


class RunLine(BaseModel):
    id: str
    workflow: str
    status: str
    steps_done: int
    steps: int
    escalations: int
    reviews: int
    cost_usd: float
    task: str


def run_lines(store: Store, status: str | None = None, limit: int = 200) -> list[RunLine]:
    lines = []
    pending: dict[str, int] = {}
    for review in store.reviews(status="pending"):
        pending[review.run_id] = pending.get(review.run_id, 0) + 1
    for run in store.list_runs(status=status, limit=limit):
        steps = store.steps(run.id)
        planned = len(json.loads(run.plan_json)["steps"]) if run.plan_json else len(steps)
        lines.append(
            RunLine(
                id=run.id,
                workflow=run.workflow,
                status=run.status,
                steps_done=sum(s.status == "done" for s in steps if s.step_id != "plan"),
                steps=planned,
                escalations=run.escalations,
                reviews=pending.get(run.id, 0),
                cost_usd=run.cost_usd,
                task=" ".join(run.task.split())[:80],
            )
        )
    return lines


def evidence_text(evidence_json: str) -> str:
    return "\n".join(f"  {e['name']} = {e['value']:.2f}  {e['detail']}" for e in json.loads(evidence_json or "[]"))


def pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def question_text(question: dict[str, Any]) -> str:
    lines = [
        f"input: {json.dumps(question.get('input'), ensure_ascii=False)[:1500]}",
        "",
        f"small model ({question.get('small_model')}), confidence {question.get('confidence', 0):.2f}:",
        f"  {json.dumps(question.get('small_answer'), ensure_ascii=False)}",
        "evidence:",
        *[f"  {e['name']} = {e['value']:.2f}  {e['detail']}" for e in question.get("evidence", [])],
    ]
    frontier = question.get("frontier")
    if frontier:
        lines += ["", f"frontier ({frontier.get('model')}): {frontier.get('outcome')}, {frontier.get('reason', '')}"]
    lines += ["", "why it is here:", *[f"  {r}" for r in question.get("reasons", [])]]
    best = question.get("best_answer")
    if best is not None:
        lines += ["", f"best answer so far: {json.dumps(best, ensure_ascii=False)}"]
    return "\n".join(lines)
