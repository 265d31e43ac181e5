"""Who decides: the escalation ladder (and, later, the planner)."""

from shoal.agents.escalation import (
    Budget,
    Escalation,
    Ladder,
    LadderConfig,
    MemoryLedger,
    Outcome,
    Rung,
    SpendLedger,
    answer_by_human,
)

__all__ = [
    "Budget",
    "Escalation",
    "Ladder",
    "LadderConfig",
    "MemoryLedger",
    "Outcome",
    "Rung",
    "SpendLedger",
    "answer_by_human",
]
