"""Commands of the work queue: `triage FILE --enqueue` (its printing), `worker` and `workers`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shoal.cli.common import ConfigOption, console, engine, err, literal
from shoal.cli.reading import fixed, free, table
from shoal.status import WorkStatus

if TYPE_CHECKING:
    import asyncio
    import signal

    from shoal.engine.facade import Shoal
    from shoal.engine.worker import WorkEvent
    from shoal.tickets.files import BadRow, TicketRow


def enqueue(shoal: Shoal, rows: list[TicketRow | BadRow], source: str, file: Path, *, force: bool) -> None:
    """`shoal triage FILE --enqueue`: queue the file's tickets for workers, then say what happened."""
    done = shoal.enqueue_tickets(rows, source=source, force=force)
    console.print(
        literal(
            f"{file}: {len(done.queued)} tickets queued, {len(done.already_queued)} already queued, "
            f"{len(done.already_done)} already done, {len(done.rejected)} rejected"
        ),
        soft_wrap=True,
    )
    if done.queued:
        err.print("`shoal worker` takes them (on any machine that reaches this database); `shoal workers` lists them")


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Items this process works on at once (default: [workers] concurrency).")
    ] = None,
    drain: Annotated[bool, typer.Option(help="Stop once the queue is empty instead of waiting for more.")] = False,
    config: ConfigOption = None,
) -> None:
    """Take tickets and runs from the database's queue and work on them until Ctrl-C.

    Start as many as the work needs, on any machine that reaches the database. Ctrl-C gives the
    items in hand back to the queue; a worker killed outright loses nothing either: once its
    lease ends ([workers] lease_s) another worker resumes its items from their finished steps.
    """
    import asyncio
    import signal

    from shoal.engine.worker import Worker

    shoal = engine(config)
    chosen = shoal.settings.workers
    if concurrency is not None:
        if concurrency < 1:
            raise typer.BadParameter("give 1 or more", param_hint="--concurrency")
        chosen = chosen.model_copy(update={"concurrency": concurrency})
    runner = Worker(shoal, chosen, on_event=show_event)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _stopper(stop, loop, sig))
        stats = await shoal.closing(runner.run(stop=stop, drain=drain))
        err.print(
            literal(
                f"worker {runner.id} stopped: {stats.done} done, {stats.failed} failed, {stats.given_back} given back"
            ),
            soft_wrap=True,
        )

    err.print(literal(f"worker on {shoal.store.where}; Ctrl-C gives work in hand back and stops"), soft_wrap=True)
    asyncio.run(main())
    if runner.stats.failed:
        raise typer.Exit(1)


def _stopper(stop: asyncio.Event, loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> Callable[[], None]:
    def handle() -> None:
        err.print("stopping: giving the work in hand back to the queue (Ctrl-C again to quit at once)")
        stop.set()
        # a second Ctrl-C is Python's own KeyboardInterrupt: leases run out, nothing finished is lost
        loop.remove_signal_handler(sig)

    return handle


def show_event(event: WorkEvent) -> None:
    from rich.text import Text

    stamp = datetime.now().strftime("%H:%M:%S")
    if event.status is None:
        err.print(literal(f"{stamp} #{event.item} {event.what}: started"), soft_wrap=True)
        return
    style = {WorkStatus.DONE: "green", WorkStatus.FAILED: "red"}.get(event.status, "yellow")
    said = {WorkStatus.QUEUED: "given back"}.get(event.status, str(event.status))
    line = Text(f"{stamp} #{event.item} {event.what}: ")
    line.append(said, style=style)
    if event.detail:
        line.append(f" ({event.detail})")
    err.print(line, soft_wrap=True)


def workers(
    all_: Annotated[bool, typer.Option("--all", help="Also workers that stopped or went silent.")] = False,
    config: ConfigOption = None,
) -> None:
    """Workers and the queue: each worker's host, state, current item and last heartbeat."""
    from shoal.cli.common import settings
    from shoal.engine import views

    chosen = settings(config)
    board = views.work_board(chosen.db_path, lease_s=chosen.workers.lease_s)
    rows = board.workers if all_ else board.live
    grid = table()
    fixed(grid, "worker")
    fixed(grid, "state")
    fixed(grid, "done", "failed", right=True)
    fixed(grid, "heartbeat", right=True)
    free(grid, "working on")
    for row in rows:
        state = "silent" if row.silent else str(row.status)
        grid.add_row(row.id, state, str(row.done), str(row.failed), f"{row.heard_s:.0f}s ago", row.current or "")
    if rows:
        console.print(grid)
    else:
        console.print("no live workers" + ("" if all_ else " (--all lists those that stopped)"))
    queue = ", ".join(f"{n} {status}" for status, n in board.queue.items())
    console.print(literal(f"queue: {queue}"), soft_wrap=True)
