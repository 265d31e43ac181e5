"""Mistakes at the `shoal` command end on one line that says what to do, never a traceback.

Each test runs the real command in a process, as a person does (see test_cli_models.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from httpfake import FakeServer, free_port


def shoal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80", **(env or {})},  # a narrow pipe must not split the line
        cwd=cwd,
        timeout=120,
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be a single `error: ...` line."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), out.stderr
    return lines[0]


# each command that reads a file, with NAME standing for the file it is given
COMMANDS = {
    "triage": ["triage", "NAME"],
    "run --plan": ["run", "sort these tickets", "--plan", "NAME"],
    "eval": ["eval", "NAME"],
    "train --data": ["train", "category", "--data", "NAME"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_file_is_one_line(command: str, tmp_path: Path) -> None:
    name = "no-such-file.csv" if command != "run --plan" else "no-such-plan.json"
    out = shoal(*(name if a == "NAME" else a for a in COMMANDS[command]), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    line = one_line_error(out)
    assert name in line and "does not exist" in line and "check the path" in line
    assert str(tmp_path) in line  # a relative path: where it was looked for
    assert out.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_directory_instead_of_file_is_one_line(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    out = shoal(*(str(folder) if a == "NAME" else a for a in COMMANDS[command]), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    line = one_line_error(out)
    assert str(folder) in line and "is a directory" in line and "give a file" in line


def test_readme_triage_typo_costs_nothing(tmp_path: Path) -> None:
    """The README's `shoal triage tickets.csv` where there is no such file: the hint says what
    the file should be, and no database is created for a command that could not start."""
    out = shoal("triage", "tickets.csv", "--text", "body", "--id", "ticket_id", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "ticket file tickets.csv does not exist" in line and "CSV or JSONL" in line
    assert not Path(os.environ["SHOAL_DB"]).exists()


def test_config_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    out = shoal("runs", "--config", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert f"config file {tmp_path} is a directory" in line and "--config" in line


def test_plan_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{not json")
    out = shoal("run", "sort these tickets", "--plan", "plan.json", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "plan plan.json is not valid JSON" in line


def test_brackets_in_an_error_are_kept(tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text("[retry]\nattempts = 1\n")
    out = shoal(
        "ask",
        "hi",
        "--model",
        "ollama:qwen2.5:3b",
        "--config",
        str(config),
        env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}"},
        cwd=tmp_path,
    )
    assert out.returncode == 1
    line = one_line_error(out)
    assert "cannot reach Ollama" in line and "OLLAMA_HOST / [ollama] host in shoal.toml" in line


def test_brackets_in_the_models_table_are_kept(tmp_path: Path) -> None:
    out = shoal("models", env={"OLLAMA_HOST": f"127.0.0.1:{free_port()}", "COLUMNS": "400"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[ollama] host" in out.stdout and "[openai] api_key_env" in out.stdout


def test_openai_without_a_key_says_so_without_connecting(tmp_path: Path) -> None:
    out = shoal("ask", "hi", "--model", "openai:gpt-4o-mini", cwd=tmp_path)
    assert "OPENAI_API_KEY" not in os.environ  # conftest's doing; the child inherits it
    assert out.returncode == 1
    line = one_line_error(out)
    assert "OPENAI_API_KEY is not set" in line and "export OPENAI_API_KEY=" in line
    assert "[openai] api_key_env" in line and "cannot reach" not in line


def test_openai_key_variable_named_in_config(tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text('[openai]\napi_key_env = "FRONTIER_KEY"\n')
    out = shoal("ask", "hi", "--model", "openai:gpt-4o-mini", cwd=tmp_path)
    assert out.returncode == 1
    line = one_line_error(out)
    assert "FRONTIER_KEY is not set" in line and "export FRONTIER_KEY=" in line


def test_a_local_openai_compatible_server_needs_no_key(server: FakeServer, tmp_path: Path) -> None:
    # vLLM or llama.cpp's server: the request goes out without a key, and the server decides
    shoal("ask", "hi", "--model", "openai:local", env={"SHOAL_FRONTIER_BASE_URL": server.url + "/v1"}, cwd=tmp_path)
    assert server.requests and server.requests[0][1] == "/v1/chat/completions"


# --- results written to a file: checked before the work starts ------------------------------

OUT_COMMANDS = {
    "triage": (
        ["triage", "tickets.csv", "--id", "ticket_id"],
        "tickets.csv",
        "ticket_id,instruction\nT1,where is my order\n",
    ),
    "eval": (["eval", "labelled.csv"], "labelled.csv", "text,label\nwhere is my order,ORDER\nrefund me,REFUND\n"),
}


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_out_into_a_missing_folder_is_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    args, name, content = OUT_COMMANDS[command]
    (tmp_path / name).write_text(content)
    out = shoal(*args, "--out", "results/out.jsonl", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    line = one_line_error(out)
    assert "--out results/out.jsonl: folder results" in line and "does not exist" in line and str(tmp_path) in line
    assert not Path(os.environ["SHOAL_DB"]).exists(), "nothing started"


def test_out_that_is_a_directory_or_the_wrong_kind_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tickets.csv").write_text("ticket_id,instruction\nT1,where is my order\n")
    (tmp_path / "labelled.csv").write_text("text,label\nwhere is my order,ORDER\n")
    wrong = shoal("triage", "tickets.csv", "--out", "results.txt", cwd=tmp_path)
    assert wrong.returncode == 2 and "--out results.txt: use a .jsonl or .csv file" in one_line_error(wrong)
    folder = shoal("eval", "labelled.csv", "--out", str(tmp_path), cwd=tmp_path)
    assert folder.returncode == 2 and f"--out {tmp_path} is a directory" in one_line_error(folder)


# --- only shoal's own errors are one line; anything else is a bug and shows its traceback ------


def test_a_plan_of_the_wrong_shape_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"steps": "all of them"}')
    out = shoal("run", "sort these tickets", "--plan", "plan.json", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "plan plan.json is not a plan (steps: Input should be a valid list)" in line and '{"steps": [' in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("words,tag\nhello,A\n", "has no column(s) ['label', 'text']"),
        ("text,label\nhello\n", "line 2: the text and the label must both be text"),
    ],
)
def test_labelled_data_that_cannot_be_read_is_one_line(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "labelled.csv").write_text(content)
    out = shoal("eval", "labelled.csv", cwd=tmp_path)
    assert out.returncode == 2
    assert words in one_line_error(out)


def test_a_bad_model_reference_is_one_line(tmp_path: Path) -> None:
    out = shoal("eval", "labelled.csv", "--model", "qwen", cwd=tmp_path)
    assert out.returncode == 2
    assert "--model: model reference 'qwen' is not of the form backend:model" in one_line_error(out)
    scripted = shoal("ask", "hi", "--model", "scripted:x", cwd=tmp_path)
    assert scripted.returncode == 2 and "names backend 'scripted'" in one_line_error(scripted)


def test_an_unexpected_error_is_not_dressed_as_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal import cli

    def broken() -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(ValueError, match="a bug"):  # its traceback reaches the terminal
        cli.main()
