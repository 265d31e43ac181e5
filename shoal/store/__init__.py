"""What is remembered: shoal's tables and LangGraph's checkpoints in one database (a SQLite file,
or PostgreSQL).

Names load when first used, so a module of this package that needs no SQLAlchemy (`prompts`)
can be imported by the read-only commands without paying for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.errors import StoreError
    from shoal.store.db import MIGRATIONS, Store, StoreLedger
    from shoal.store.tables import (
        EmbeddingVector,
        EscalationRow,
        Example,
        Head,
        ModelCall,
        Review,
        Run,
        Step,
        Ticket,
    )

_HOMES = {
    "StoreError": "shoal.errors",
    "MIGRATIONS": "shoal.store.db",
    "Store": "shoal.store.db",
    "StoreLedger": "shoal.store.db",
    **dict.fromkeys(
        ("EmbeddingVector", "EscalationRow", "Example", "Head", "ModelCall", "Review", "Run", "Step", "Ticket"),
        "shoal.store.tables",
    ),
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
