"""What a line typed on the New task screen means, with no Textual in it.

`triage FILE [--text COL] [--id COL] [--limit N] [--out FILE] [--concurrency N] [--force]` takes
the options `shoal triage` takes, with the same meaning; any other line is a task for the planner.
A mistake is a `UsageError` saying what to type, raised before anything starts (not a failure at
the end of a long batch).
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from shoal.errors import UsageError
from shoal.status import TicketStatus

if TYPE_CHECKING:
    from shoal.tickets.triage import TicketOutcome

TICKET_SUFFIXES = (".csv", ".jsonl", ".ndjson")
OUT_SUFFIXES = (".jsonl", ".csv")
USAGE = "triage FILE [--text COL] [--id COL] [--limit N] [--out FILE.jsonl|.csv] [--concurrency N] [--force]"
_VALUED = {
    "--text": "text_column",
    "--id": "id_column",
    "--limit": "limit",
    "--out": "out",
    "--concurrency": "concurrency",
}
_FLAGS = {"--force": "force"}


class TriageCommand(BaseModel):
    """`shoal triage`'s arguments, as typed on the New task screen."""

    file: Path
    text_column: str = "instruction"
    id_column: str | None = None
    limit: int | None = None
    out: Path | None = None
    concurrency: int = 1
    force: bool = False


def is_triage(line: str) -> bool:
    """A line whose first word is `triage` is the command; anything else is a task."""
    return line.split(maxsplit=1)[:1] == ["triage"]


def parse_triage(line: str) -> TriageCommand:
    """The command in `line`, or a UsageError naming what is wrong and how to write it."""
    try:
        words = shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"{exc}: quote a path with spaces as 'my tickets.csv'; {USAGE}") from None
    if words[:1] != ["triage"]:
        raise UsageError(USAGE)
    values: dict[str, str | bool] = {}
    files: list[str] = []
    rest = iter(words[1:])
    for word in rest:
        name, equals, value = word.partition("=")
        if name in _FLAGS and not equals:
            values[_FLAGS[name]] = True
        elif name in _VALUED:
            if not equals:
                value = next(rest, "")
            if not value or (not equals and value.startswith("--")):
                raise UsageError(f"{name} needs a value; {USAGE}")
            values[_VALUED[name]] = value
        elif word.startswith("--"):
            raise UsageError(f"unknown option {name}; the options are {', '.join([*_VALUED, *_FLAGS])}")
        else:
            files.append(word)
    if len(files) != 1:
        given = "no ticket file" if not files else f"{len(files)} files ({', '.join(files)})"
        raise UsageError(f"{given}: give one CSV or JSONL export; {USAGE}")
    return _checked(files[0], values)


def _count(option: str, value: str | bool) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{option} {value}: give a whole number of at least 1")
    return number


def _checked(file: str, values: dict[str, str | bool]) -> TriageCommand:
    path = Path(file).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise UsageError(f"ticket file {path}{where} does not exist or is not a file: check the path")
    if path.suffix.lower() not in TICKET_SUFFIXES:
        raise UsageError(f"ticket file {path} is neither .csv nor .jsonl: export your tickets as one")
    out = values.get("out")
    return TriageCommand(
        file=path,
        text_column=str(values.get("text_column", "instruction")),
        id_column=None if "id_column" not in values else str(values["id_column"]),
        limit=None if "limit" not in values else _count("--limit", values["limit"]),
        out=None if out is None else _output(Path(str(out)).expanduser()),
        concurrency=_count("--concurrency", values.get("concurrency", "1")),
        force=bool(values.get("force", False)),
    )


def _output(path: Path) -> Path:
    """`path` if results can be written there (as `shoal triage --out` checks it)."""
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise UsageError(f"--out {path}: use a .jsonl or .csv file")
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory: give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--out {path}: folder {folder} does not exist: create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--out {path} cannot be written (permission denied): choose another path")
    return path


def triage_summary(outcomes: Sequence[TicketOutcome]) -> str:
    """A batch's counts, worded as `shoal triage` words them."""
    skipped = sum(o.skipped for o in outcomes)
    counts = Counter(o.status for o in outcomes if not o.skipped)
    escalated = sum(bool(o.escalated) and not o.skipped for o in outcomes)
    return (
        f"{len(outcomes)} tickets: {counts[TicketStatus.DONE]} done, {counts[TicketStatus.WAITING]} waiting for "
        f"review, {escalated} escalated, {counts[TicketStatus.FAILED]} failed, "
        f"{counts[TicketStatus.REJECTED]} rejected, {skipped} already done"
    )
