"""`shoal prune`: keep the database from outgrowing its disk (issue #16)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer

from shoal.cli.common import ConfigOption, console, engine
from shoal.errors import UsageError
from shoal.status import RunStatus

# what goes when no --status is given: runs that ended, none that a process or a person may still
# take up (running, pending, waiting); stopped runs can be resumed, but not after the retention
ENDED = (RunStatus.DONE, RunStatus.FAILED, RunStatus.STOPPED)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", re.IGNORECASE)


def age(text: str) -> timedelta:
    """`--older-than` (`30d`, `12h`, `90m`, `2w`, `0d`) as a timedelta, or a `UsageError`."""
    found = _AGE.fullmatch(text)
    if found is None:
        raise UsageError(f"--older-than {text!r}: give a number and a unit, e.g. 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[found.group(2).lower()]: float(found.group(1))})


def statuses(values: list[str] | None) -> list[RunStatus]:
    """`--status` values (repeated, or comma-separated) as run statuses, or a `UsageError`."""
    if not values:
        return list(ENDED)
    chosen: list[RunStatus] = []
    for value in (v.strip().lower() for item in values for v in item.split(",")):
        try:
            chosen.append(RunStatus(value))
        except ValueError:
            raise UsageError(f"--status {value!r} is not a run status; use one of: {', '.join(RunStatus)}") from None
    return list(dict.fromkeys(chosen))


def size(n: int) -> str:
    """Bytes for a person: 950 bytes, 12.3 KB, 4.5 MB, 1.2 GB."""
    if abs(n) < 1000:
        return f"{n:,} bytes"
    scaled = [(n / 1000**power, unit) for power, unit in ((1, "KB"), (2, "MB"), (3, "GB"))]
    value, unit = next(((v, u) for v, u in scaled if abs(v) < 1000), scaled[-1])
    return f"{value:,.1f} {unit}"


def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only runs last touched longer ago than this: 30d, 12h, 90m, 2w (0d: any age). "
            "Default: [store] retention_days (30).",
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only runs with this status (repeat, or comma-separate). Default: done, failed, stopped. "
            "Running, pending and waiting runs go only when named here.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            help="Give the freed space back to the disk (VACUUM: rewrites the file, needs as much free disk)."
        ),
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Delete old runs with their steps, model calls, escalations, reviews and checkpoints.

    Ticket rows stay, with their fields, queue and status: `shoal triage --out` still exports
    them and triaging them again skips them. A ticket whose run had not ended (waiting, running,
    stopped) is marked failed when its run goes, so triaging it again starts afresh. Labelled
    examples, trained heads, the embedding cache and frontier spend are kept.
    """
    chosen = statuses(status)
    delta = None if older_than is None else age(older_than)
    shoal = engine(config)
    try:
        store = shoal.store
        before = store.size_bytes()
        pruned = shoal.prune(chosen, older_than=delta, dry_run=dry_run)
        days = shoal.settings.store.retention_days
        when = f"last touched over {older_than} ago" if older_than is not None else f"older than {days:g} days"
        what = f"{pruned.runs} runs ({', '.join(chosen)}; {when})"
        verb = "would delete" if dry_run else "deleted"
        console.print(
            f"{verb} {what}: {pruned.steps} steps, {pruned.calls} model calls, {pruned.escalations} escalations, "
            f"{pruned.reviews} reviews, {pruned.checkpoints} checkpoint rows; {size(pruned.bytes)} of data",
            soft_wrap=True,
        )
        if pruned.tickets_failed:
            console.print(
                f"{pruned.tickets_failed} tickets {'would be' if dry_run else 'were'} marked failed (their runs had "
                "not ended): triage them again to redo them",
                soft_wrap=True,
            )
        if dry_run or not pruned.runs:
            return
        if vacuum:
            _, after = store.vacuum()
            console.print(f"{store.where}: {size(before)} -> {size(after)} ({size(before - after)} freed)")
        elif store.path is not None:
            console.print(
                f"{store.where} keeps its size ({size(before)}): SQLite reuses the freed space. To give it back "
                f"to the disk, run `sqlite3 {store.path} VACUUM` while nothing else uses the file",
                soft_wrap=True,
            )
        else:
            console.print(
                f"{store.where} keeps its size ({size(before)}): PostgreSQL reuses the freed space; "
                "`shoal prune --vacuum` (VACUUM FULL) gives it back to the disk",
                soft_wrap=True,
            )
    finally:
        shoal.store.close()
