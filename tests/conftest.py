from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from httpfake import FakeServer, fake_server

from shoal.models.base import RetryPolicy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with fake_server() as state:
        yield state


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own shoal.toml, keys or database."""
    monkeypatch.delenv("SHOAL_CONFIG", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SHOAL_DB", str(tmp_path / "shoal.db"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
