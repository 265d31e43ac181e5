from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpfake import FakeServer, fake_server
from pg import pg_url, postgres_server, store  # noqa: F401  (fixtures: a throwaway PostgreSQL, a store on each engine)

from shoal.models.base import RetryPolicy

DATA = Path(__file__).resolve().parents[1] / "data"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Ask once, in a child process, whether the installed llama.cpp runs on this machine.

    A build that dies of SIGILL (AMX in a VM that does not enable it, say) would otherwise kill
    pytest in the middle of the first embedded test: no summary, no other results.
    """
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return  # the embedded tests report the missing extra themselves
    from shoal.errors import ShoalError, UnsupportedCPUError
    from shoal.models.embedded import BUNDLED, bundled_path
    from shoal.models.llama_probe import check_runs

    try:
        path = bundled_path(BUNDLED["smollm2-135m"])
    except ShoalError:
        return
    try:
        check_runs(path)
    except UnsupportedCPUError as exc:
        pytest.exit(f"the embedded model cannot run here: {exc}", returncode=3)


NO_BWRAP = (
    "SANDBOX TESTS SKIPPED: bubblewrap (bwrap) is not installed, so generated code cannot be "
    "run here. Install it with `apt-get install bubblewrap` (Debian/Ubuntu) to run them"
)


def require_bwrap() -> None:
    """Skip loudly without bubblewrap; under CI a missing sandbox is a failure, never a skip."""
    if shutil.which("bwrap") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(NO_BWRAP.replace("SKIPPED", "FAILED (CI=true)"), pytrace=False)
    pytest.skip(NO_BWRAP)


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
