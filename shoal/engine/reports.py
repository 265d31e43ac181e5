"""What the engine hands back to its callers: plain pydantic values, no rows or graphs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shoal.engine.views import HeadMetrics, HeadSummary
from shoal.status import RunStatus

__all__ = ["HeadMetrics", "HeadSummary", "ReviewItem", "RunReport"]  # a head's row is a view, read without pydantic


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
