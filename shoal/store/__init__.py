"""What is remembered: shoal's tables and LangGraph's checkpoints in one SQLite file."""

from shoal.store.db import MIGRATIONS, Store, StoreError, StoreLedger
from shoal.store.tables import Escalation, ModelCall, Review, Run, Step, Ticket

__all__ = [
    "MIGRATIONS",
    "Escalation",
    "ModelCall",
    "Review",
    "Run",
    "Step",
    "Store",
    "StoreError",
    "StoreLedger",
    "Ticket",
]
