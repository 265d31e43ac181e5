"""What is remembered: shoal's tables and LangGraph's checkpoints in one SQLite file."""

from shoal.errors import StoreError
from shoal.store.db import MIGRATIONS, Store, StoreLedger
from shoal.store.tables import EmbeddingVector, EscalationRow, Example, Head, ModelCall, Review, Run, Step, Ticket

__all__ = [
    "MIGRATIONS",
    "EmbeddingVector",
    "EscalationRow",
    "Example",
    "Head",
    "ModelCall",
    "Review",
    "Run",
    "Step",
    "Store",
    "StoreError",
    "StoreLedger",
    "Ticket",
]
