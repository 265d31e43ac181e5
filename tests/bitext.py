"""The repository's data/ folder, and rows of the Bitext customer-support set in it (CDLA-Sharing 1.0)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


@cache
def rows() -> list[dict[str, str]]:
    with (DATA / "bitext_customer_support.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def categories() -> list[str]:
    return sorted({r["category"] for r in rows()})


def sample(n: int, *, entity: str | None = None, step: int = 97) -> list[dict[str, str]]:
    chosen = [r for r in rows() if entity is None or r["entity_type"] == entity]
    return chosen[::step][:n] if len(chosen) >= n * step else chosen[:n]
