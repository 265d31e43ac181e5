"""What the engine hands back to its callers: plain pydantic values, no rows or graphs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shoal.status import RunStatus


class ReviewItem(BaseModel):
    id: int
    run_id: str
    step_id: str
    specialist: str
    question: dict[str, Any]


class RunReport(BaseModel):
    run_id: str
    status: RunStatus
    answer: dict[str, Any] | None = None
    error: str | None = None
    reviews: list[ReviewItem] = Field(default_factory=list)
    model_calls: int = 0
    escalations: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        waiting = f", {len(self.reviews)} waiting for review" if self.reviews else ""
        return (
            f"run {self.run_id} {self.status}: {self.model_calls} model calls, {self.escalations} escalations"
            f"{waiting}, {self.tokens_in}+{self.tokens_out} tokens, ${self.cost_usd:.4f} frontier, "
            f"{self.seconds:.1f}s"
        )


class HeadMetrics(BaseModel):
    """A head (or what it was compared with) on its held-out slice, as stored with the head."""

    model_config = ConfigDict(extra="ignore")

    what: str = ""
    n: int = 0
    accuracy: float = 0.0
    ece: float = 0.0
    auroc: float | None = None
    escalated: float = 0.0


class HeadSummary(BaseModel):
    specialist: str
    version: int
    active: bool
    embed_model: str
    labels: int
    examples: int
    created_at: datetime
    after: HeadMetrics | None = None
    before: HeadMetrics | None = None
