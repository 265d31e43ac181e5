"""`import shoal` and the commands that only read start without the heavy stack.

What is checked is the set of modules a fresh process loaded, never the wall-clock time (which
depends on the machine): LangGraph, llama.cpp, the openai and ollama clients, SQLAlchemy and
numpy are what made `shoal runs` take seconds. `benchmarks/startup.py` measures the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import waiting_classifier

HEAVY = ("langgraph", "llama_cpp", "openai", "ollama", "sqlalchemy", "sqlmodel", "numpy", "textual")
# pydantic's first model costs a process 0.2 s: the read path's rows are dataclasses and it reads
# `db_path` without building the settings (shoal.configfile)
READ_HEAVY = (*HEAVY, "pydantic")

# runs `shoal ARGS...` in this process (as the entry point does), then prints what was loaded
PROBE = """
import json, sys
sys.argv = ["shoal", *json.loads(sys.argv[1])]
from shoal.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\nLOADED=" + json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def loaded(args: list[str], cwd: Path) -> dict[str, object]:
    code = f"HEAVY = {READ_HEAVY!r}\n{PROBE}"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )
    assert "Traceback" not in out.stderr, out.stderr
    found: dict[str, object] = json.loads(out.stdout.rsplit("LOADED=", 1)[1])
    return found


def test_import_shoal_loads_nothing_heavy() -> None:
    code = (
        "import sys, shoal; from shoal import RunStatus, ShoalError;"
        f"print(sorted(m for m in {HEAVY!r} + ('pydantic', 'rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import shoal pulled in {out.stdout.strip()}"


def test_lazy_names_are_the_real_ones() -> None:
    import shoal
    from shoal.engine.facade import Shoal
    from shoal.errors import ShoalError

    assert shoal.Shoal is Shoal and shoal.ShoalError is ShoalError
    assert set(shoal.__all__) <= set(dir(shoal))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = shoal.Nope


async def test_read_only_commands_load_no_model_stack(tmp_path: Path) -> None:
    report = await waiting_classifier()
    for args in (
        ["--help"],
        ["runs"],
        ["runs", "--json"],
        ["show", report.run_id],
        ["review"],
        ["heads"],
        ["runs", "--status", "bogus"],
    ):
        found = loaded(args, tmp_path)
        assert found["heavy"] == [], (args, found)
        assert found["code"] == (2 if "bogus" in args else 0), (args, found)


def test_help_loads_no_rich(tmp_path: Path) -> None:
    # Typer prints the help; the consoles load Rich on first use, and help never uses them
    code = f"HEAVY = {(*READ_HEAVY, 'rich')!r}\n{PROBE}"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(["--help"])], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    found = json.loads(out.stdout.rsplit("LOADED=", 1)[1])
    assert found == {"code": 0, "heavy": []}, found


def test_a_new_database_is_created_on_first_read(tmp_path: Path) -> None:
    # conftest points SHOAL_DB into the test's folder; the file does not exist yet
    found = loaded(["runs"], tmp_path)
    assert found["code"] == 0
    assert Path(os.environ["SHOAL_DB"]).is_file()


def test_a_database_under_home_is_read_where_the_store_writes_it(tmp_path: Path) -> None:
    # `~` is expanded by the store that creates the file and by the views that read it
    env = {**os.environ, "HOME": str(tmp_path), "SHOAL_DB": "~/shoal-home.db", "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "runs"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "shoal-home.db").is_file() and not (tmp_path / "~").exists()
