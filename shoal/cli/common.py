"""What every group of commands shares: the consoles, the checks on what was typed, the way
text is cut for a table, and progress that suits a terminal or a pipe.

Kept light on purpose: it imports typer and nothing of the engine or the model stack, and its
consoles load Rich on first use, so `shoal --help` (Typer prints it) never loads Rich and a
command that only reads the database starts at once.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from shoal.errors import InputFileError, UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

    from shoal.config import Settings
    from shoal.engine import RunReport, Shoal
    from shoal.models.base import ModelRef


class _LazyConsole:
    """A Rich console made when first used: Rich takes a sixth of `shoal --help`'s start, and
    help never prints through it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            from rich.console import Console

            self._made = Console(**self._options)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


def real(out: Console) -> Console:
    """The console itself, for Rich code that keeps it (a progress display)."""
    return out.made() if isinstance(out, _LazyConsole) else out


console = cast("Console", _LazyConsole(emoji=False))  # shoal writes no emoji codes: `:x:` stays text
err = cast("Console", _LazyConsole(stderr=True, emoji=False))


def escape(text: str) -> str:
    """`text` with Rich markup escaped, for the parts of a markup string shoal did not write."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="shoal.toml to use (default: SHOAL_CONFIG, ./shoal.toml, user config dir)"),
]

LABELLED = "give labelled data as CSV, JSONL or CLINC150-style JSON"
ELLIPSIS = "…"


def literal(text: str) -> Text:
    """Text shoal did not write (a task, model output, an error, a file name) as it is: brackets such
    as `[openai]` are not read as Rich markup, nor `:name:` as an emoji."""
    return console.render_str(text, markup=False, emoji=False)


def cut(text: str, limit: int) -> tuple[str, bool]:
    """`text` whole, or its first `limit` characters ending in an ellipsis; and whether it was cut
    (a caller that cuts says so, and how to see the whole)."""
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + ELLIPSIS, True


def one_line(text: str) -> str:
    """A table cell's excerpt: newlines and runs of spaces become one space."""
    return " ".join(text.split())


def print_json(text: str) -> None:
    """JSON on standard output, never cut nor folded: coloured on a terminal, verbatim in a pipe
    (where a program reads it)."""
    if console.is_terminal:
        console.print_json(text)
    else:  # laid out as on a terminal (two-space indent), but no line is folded at the width
        console.file.write(json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n")


def input_file(path: Path, what: str, hint: str = "") -> Path:
    """`path` if it opens for reading, else an `InputFileError` naming it and saying what to do.

    Commands check the files they were given before they start work (a database, a model), so a
    typo costs one line, not a traceback after the setup.
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if stat.S_ISREG(mode):  # a pipe or a device is left to the reader: opening one here would drain it
            with path.open("rb"):
                pass
    except OSError as exc:
        raise InputFileError.from_os_error(path, what, exc, hint) from None
    return path


def output_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """`path` if results can be written there, else a `UsageError` saying why, before any work
    starts (not a traceback when the results are written at the end of a long batch)."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: use a {' or '.join(suffixes)} file")
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory: give a file name")
    if not folder.is_dir():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise UsageError(f"{option} {path}: folder {folder}{where} does not exist: create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path} cannot be written (permission denied): choose another path")
    return path


def model_ref(text: str, option: str = "--model") -> ModelRef:
    """A `backend:model` typed on the command line, or a `UsageError` saying what is wrong."""
    from shoal.models.base import BACKENDS, ModelRef

    try:
        ref = ModelRef.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if ref.backend not in BACKENDS:  # the scripted backend exists for tests written in Python
        raise UsageError(f"{option}: {text!r} names backend {ref.backend!r}; use one of {', '.join(BACKENDS)}")
    return ref


def _config_file(config: Path | None) -> None:
    """The config file about to be read opens, or an `InputFileError` says what to give."""
    from shoal.configfile import find_config

    found = find_config(config, os.environ)
    if found is not None:
        input_file(
            found,
            "config file",
            "point --config or SHOAL_CONFIG at a shoal.toml, or leave both out to use ./shoal.toml "
            "or the one in the user config directory",
        )


def settings(config: Path | None) -> Settings:
    from shoal.config import Settings

    _config_file(config)
    return Settings.load(config)


def db_location(config: Path | None) -> Path | str:
    """Where the database is, read without building the settings (what the read-only commands
    need, and all they can afford at start-up: `shoal.configfile`)."""
    from shoal.configfile import read_db_location

    _config_file(config)
    return read_db_location(config)


def engine(config: Path | None) -> Shoal:
    from shoal.engine.facade import Shoal  # the engine loads LangGraph: only for the commands that need it

    return Shoal(settings(config))


def read_plan(path: Path) -> Any:
    """The JSON in a `--plan` file (the engine checks that it is a plan that can run)."""
    hint = "give a plan in JSON, like examples/ticket_plan.json, or leave --plan out and let the planner choose"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError.from_os_error(path, "plan", exc, hint) from None
    except UnicodeDecodeError:
        raise InputFileError(f"plan {path} is not UTF-8 text: {hint}", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"plan {path} is not valid JSON ({exc}): {hint}", path) from None


def print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        print_json(report.model_dump_json())
    elif report.answer is not None:
        print_json(json.dumps(report.answer.get("answer", report.answer), ensure_ascii=False))
    for item in report.reviews:
        err.print(
            f"[yellow]waiting for a person:[/yellow] review {item.id} ({escape(item.specialist)}, "
            f"step {escape(item.step_id)}): `shoal review {item.id}`",
            soft_wrap=True,
        )
    if report.error:
        err.print(report.error, style="red", soft_wrap=True, markup=False, emoji=False, highlight=False)
    err.print(report.summary(), style="dim", soft_wrap=True, markup=False, emoji=False, highlight=False)


class Ticker:
    """Progress of long work, one phase at a time (`update(what, done, total, status)`).

    On a terminal: a Rich bar per phase. In a pipe or a log file a bar cannot redraw, and Rich
    would print it once, cut to the width; so there it is plain lines instead: when a phase
    starts and ends, and in between at most every `every` items or `every_s` seconds.
    """

    def __init__(self, label: str, *, out: Console = err, every_s: float = 10.0, steps: int = 10) -> None:
        self.label = label
        self.out = out
        self.every_s = every_s
        self.steps = steps
        self.live = out.is_terminal and not out.is_dumb_terminal
        self._progress: Progress | None = None
        self._bars: dict[str, TaskID] = {}
        self._last: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> Ticker:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"[bold]{escape(self.label)}[/bold] {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=real(self.out),
            )
            self._progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, exc, tb)

    def update(self, what: str, done: int, total: int | None, status: str = "") -> None:
        if self._progress is not None:
            if what not in self._bars:
                self._bars[what] = self._progress.add_task(escape(what), total=total, status="")
            self._progress.update(self._bars[what], completed=done, total=total, status=escape(status))
            return
        now = time.monotonic()
        last = self._last.get(what)
        every = max(1, (total or 0) // self.steps)
        finished = total is not None and done >= total
        if last is not None and not finished and done - last[0] < every and now - last[1] < self.every_s:
            return
        if last is not None and last[0] == done and finished:
            return  # the end, already said
        self._last[what] = (done, now)
        of = f"/{total:,}" if total is not None else ""
        self.note(f"{self.label} {what}: {done:,}{of}" + (f" · {status}" if status else ""))

    def note(self, line: str | Text) -> None:
        """A line of its own (above the bar on a terminal), never folded mid-phrase."""
        text = literal(line) if isinstance(line, str) else line
        (self._progress.console if self._progress is not None else self.out).print(text, soft_wrap=True)
