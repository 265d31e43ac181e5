"""The `shoal` command as a person runs it: a real process, the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from httpfake import Answer, FakeServer, free_port


def shoal(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_models_lists_every_backend(tmp_path: Path) -> None:
    out = shoal("models", "--json", env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {row["backend"]: row for row in json.loads(out.stdout)}
    assert not rows["ollama"]["reachable"] and "ollama serve" in rows["ollama"]["reason"]
    assert rows["embedded"]["reachable"]
    smol = next(m for m in rows["embedded"]["models"] if m["name"] == "smollm2-135m")
    assert smol["size_bytes"] > 50_000_000 and smol["detail"].endswith(".gguf")
    assert not rows["openai"]["reachable"] and "OPENAI_API_KEY" in rows["openai"]["reason"]


def test_models_table_shows_ollama_models(server: FakeServer, tmp_path: Path) -> None:
    server.add(
        "/api/tags",
        Answer(body={"models": [{"name": "qwen2.5:3b", "model": "qwen2.5:3b", "size": 1929912432}]}),
    )
    out = shoal("models", env={"OLLAMA_HOST": server.url, "COLUMNS": "200"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "qwen2.5:3b (1930 MB)" in out.stdout and "ready" in out.stdout


@pytest.mark.embedded
def test_ask_structured_on_embedded(tmp_path: Path) -> None:
    out = shoal(
        "ask",
        "Please cancel order ORD-77812, it is urgent",
        "--fields",
        "order_id:str,urgent:bool",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert set(answer) == {"order_id", "urgent"} and isinstance(answer["urgent"], bool)
    assert "embedded:smollm2-135m" in out.stderr and "mean token p=" in out.stderr


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    out = shoal("ask", "hi", "--model", "vllm:x", cwd=tmp_path)
    assert out.returncode == 2 and "unknown backend 'vllm'" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "shoal.toml"
    bad.write_text("[ollama]\nhost = 3\n")
    out = shoal("models", cwd=tmp_path)
    assert out.returncode == 1 and "ollama.host (line 2)" in out.stderr and "Traceback" not in out.stderr
    out = shoal(
        "ask",
        "hi",
        "--model",
        "ollama:qwen2.5:3b",
        env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}"},
        cwd=tmp_path / "..",
    )
    assert out.returncode == 1 and "cannot reach Ollama" in out.stderr
