"""The installed llama.cpp runs where it was built, and when it cannot, shoal says why and how to fix it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.errors import UnsupportedCPUError
from shoal.models import llama_probe
from shoal.models.embedded import BUNDLED, bundled_path, load_llama
from shoal.models.llama_probe import enabled_features, run_probe, system_info

pytestmark = pytest.mark.embedded

DIES = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"


def test_the_installed_build_uses_no_amx() -> None:
    # AMX needs register state the OS (or hypervisor) must enable; a build with it dies of SIGILL
    # where that state is off, so the project's build settings turn it off everywhere
    info = system_info()
    assert "AVX" in info or "NEON" in info or "SSE3" in info, info  # a real system-info line
    assert not {f for f in enabled_features(info) if f.startswith("AMX")}, info


def test_a_child_killed_by_sigill_is_explained_with_the_fix() -> None:
    problem = run_probe(bundled_path(BUNDLED["smollm2-135m"]), code=DIES)
    assert problem is not None
    assert "illegal instruction (SIGILL)" in problem
    assert "uv sync --reinstall-package llama-cpp-python" in problem and "-mno-amx-tile" in problem


def test_a_healthy_build_passes_the_probe() -> None:
    assert run_probe(bundled_path(BUNDLED["smollm2-135m"])) is None


def test_the_first_embedded_call_raises_instead_of_dying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no verdict cached: the probe runs
    monkeypatch.setattr(llama_probe, "_PROBE_CODE", DIES)
    monkeypatch.setattr(llama_probe, "_CHECKED", set())
    path = bundled_path(BUNDLED["smollm2-135m"])
    with pytest.raises(UnsupportedCPUError, match="SIGILL"):
        load_llama(path, n_ctx=272, n_threads=1, n_gpu_layers=0)  # a context size no other test loads
    # the verdict is kept for this build, so the next process does not probe again
    cached = json.loads((tmp_path / "shoal" / "llama-probe.json").read_text())
    assert any("SIGILL" in verdict for verdict in cached.values())


def test_shoal_models_says_what_happened(tmp_path: Path) -> None:
    path = bundled_path(BUNDLED["smollm2-135m"])
    key = llama_probe._cache_key(path)
    assert key is not None
    cache = tmp_path / "shoal" / "llama-probe.json"
    cache.parent.mkdir(parents=True)
    verdict = llama_probe.explain_death(-signal.SIGILL, "", "AVX2 = 1 | AMX_INT8 = 1 |")
    cache.write_text(json.dumps({key: verdict}))
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "models"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "200", "OLLAMA_HOST": "http://127.0.0.1:9"},
        timeout=120,
    )
    flat = " ".join((done.stdout + done.stderr).split())
    assert "illegal instruction (SIGILL)" in flat and "AMX_INT8" in flat, flat
