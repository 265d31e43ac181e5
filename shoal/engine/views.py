"""What the faces show about runs, read from the store as typed rows: the list of runs, and one
run's steps, escalations and model calls. Assembled here once, so the CLI and the TUI only lay
them out (a face never reads the store's tables or parses their JSON columns itself).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shoal.status import AnsweredBy, EscalationOutcome, Rung, RunStatus, StepStatus
from shoal.store.db import Store
from shoal.store.tables import Run


class Evidence(BaseModel):
    """One signal behind a confidence, as stored with a step or a review."""

    name: str
    value: float
    detail: str = ""


def evidence(items: Any) -> list[Evidence]:
    """Stored evidence (a JSON list of signals) as rows; anything else in the list is skipped."""
    return [Evidence.model_validate(item) for item in items or [] if isinstance(item, dict) and "name" in item]


class RunSummary(BaseModel):
    """A run's row: what it was asked, how it stands, and what it cost."""

    id: str
    workflow: str
    status: RunStatus
    task: str
    created_at: datetime
    error: str | None = None
    model_calls: int = 0
    escalations: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        return cls(
            id=run.id,
            workflow=run.workflow,
            status=run.status,
            task=run.task,
            created_at=run.created_at,
            error=run.error,
            model_calls=run.model_calls,
            escalations=run.escalations,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            cost_usd=run.cost_usd,
            seconds=run.seconds,
        )


class StepLine(BaseModel):
    """A plan step as it ended (or waits): who answered, how sure, on what evidence."""

    step_id: str
    specialist: str
    status: StepStatus
    instruction: str = ""
    model: str | None = None
    confidence: float | None = None
    first_confidence: float | None = None
    answered_by: AnsweredBy | None = None
    output_json: str | None = None
    error: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)


class EscalationLine(BaseModel):
    """A rung of the escalation ladder a step took."""

    step_id: str | None
    rung: Rung
    outcome: EscalationOutcome
    confidence_before: float
    confidence_after: float | None = None
    model: str | None = None
    cost_usd: float = 0.0
    reason: str = ""


class CallLine(BaseModel):
    """One model call: its cost, and the prompt and reply as stored (JSON text)."""

    id: int
    step_id: str | None
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    confidence: float | None = None
    error: str | None = None
    request_json: str
    reply_json: str | None = None
    raw_text: str | None = None

    @property
    def reply(self) -> str:
        """The reply as JSON text; a call without one shows its error and what the model said."""
        return self.reply_json or json.dumps({"error": self.error, "raw_text": self.raw_text}, ensure_ascii=False)


class RunDetail(BaseModel):
    """Everything `shoal show` prints about a run."""

    run: RunSummary
    steps: list[StepLine]
    escalations: list[EscalationLine]
    calls: list[CallLine]


def run_summaries(store: Store, *, status: RunStatus | None = None, limit: int = 20) -> list[RunSummary]:
    """The newest runs first, optionally only those with `status`."""
    return [RunSummary.of(run) for run in store.list_runs(status=status, limit=limit)]


def run_detail(store: Store, run_id: str) -> RunDetail:
    """A run (by id or unique prefix; `%` and `_` are literal) with its steps, escalations and calls."""
    run = store.find_run(run_id)
    steps = [
        StepLine(
            step_id=s.step_id,
            specialist=s.specialist,
            status=s.status,
            instruction=s.instruction,
            model=s.model,
            confidence=s.confidence,
            first_confidence=s.first_confidence,
            answered_by=s.answered_by,
            output_json=s.output_json,
            error=s.error,
            evidence=evidence(json.loads(s.evidence_json or "[]")),
        )
        for s in store.steps(run.id)
    ]
    escalations = [
        EscalationLine(
            step_id=e.step_id,
            rung=e.rung,
            outcome=e.outcome,
            confidence_before=e.confidence_before,
            confidence_after=e.confidence_after,
            model=e.model,
            cost_usd=e.cost_usd,
            reason=e.reason,
        )
        for e in store.escalations(run.id)
    ]
    calls = [
        CallLine(
            id=c.id or 0,
            step_id=c.step_id,
            model=c.model,
            tokens_in=c.tokens_in,
            tokens_out=c.tokens_out,
            latency_s=c.latency_s,
            cost_usd=c.cost_usd,
            confidence=c.confidence,
            error=c.error,
            request_json=c.request_json,
            reply_json=c.reply_json,
            raw_text=c.raw_text,
        )
        for c in store.model_calls(run.id)
    ]
    return RunDetail(run=RunSummary.of(run), steps=steps, escalations=escalations, calls=calls)
