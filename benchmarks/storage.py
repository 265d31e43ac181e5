"""How many bytes a triaged ticket costs the database, overall and per table and column (#16).

Triages N tickets of `examples/tickets.csv` with `examples/shoal.toml` (the embedded model,
`embedded:smollm2-135m`, unless `--model` says otherwise) into a new temporary database (with
`--finish`, every review is then accepted as a person would, so every ticket finishes), then
prints per table its share of the file (SQLite's `dbstat`: pages, payload) and per column the
bytes its values hold (`length(CAST(col AS BLOB))`), each divided by the number of tickets.

Run by hand: `uv run python benchmarks/storage.py --n 5`; `--db FILE` reports on an existing
database without triaging (e.g. one written by an older shoal, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.tickets.files import TicketRow, read_tickets, ticket_source

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "examples" / "tickets.csv"
CONFIG = ROOT / "examples" / "shoal.toml"
# the columns that can grow with a reply or a prompt; every other column is counted as "rest"
WIDE = {
    "run": ["task", "plan_json", "result_json", "error"],
    "step": ["instruction", "input_json", "output_json", "evidence_json", "error"],
    "modelcall": ["request_json", "reply_json", "raw_text", "error"],
    "review": ["question_json", "answer_json"],
    "ticket": ["result_json", "error"],
    "escalation": ["reason"],
}


async def triage(n: int, db: Path, model: str | None, finish: bool) -> float:
    settings = Settings.load(CONFIG, env={"SHOAL_DB": str(db)})
    if model:
        settings.default_model = model
    rows = [r for r in read_tickets(TICKETS, id_column="ticket_id") if isinstance(r, TicketRow)][:n]
    started = time.perf_counter()
    async with Shoal(settings) as shoal:
        await shoal.triage(rows, source=ticket_source(TICKETS))
        while finish and (pending := shoal.pending_reviews()):  # a person accepts the best answers
            for item in pending:
                await shoal.answer_review(item.id, accept=True, who="benchmark")
    return time.perf_counter() - started


def report(db: Path, console: Console, title: str) -> None:
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM")  # the file as it would be kept: no free pages, no WAL
        tickets = connection.execute("SELECT COUNT(*) FROM ticket").fetchone()[0] or 1
        calls = connection.execute("SELECT COUNT(*) FROM modelcall").fetchone()[0]
        size = db.stat().st_size
        try:
            stats = connection.execute(
                "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize), SUM(d.payload) FROM dbstat d "
                "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        except sqlite3.OperationalError:  # an SQLite built without dbstat
            stats = []
        columns: list[tuple[str, str, int]] = []
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, names in WIDE.items():
            if table not in tables:
                continue
            for name in names:
                found = connection.execute(f"SELECT COALESCE(SUM(length(CAST({name} AS BLOB))), 0) FROM {table}")
                columns.append((table, name, int(found.fetchone()[0])))
    console.print(
        f"{title}: {tickets} tickets, {calls} model calls, file {size:,} bytes after VACUUM = "
        f"[bold]{size / tickets:,.0f} bytes per ticket[/bold]"
    )
    if stats:
        grid = Table(title="per table (dbstat, indexes counted with their table)")
        for head in ("table", "pages bytes", "per ticket", "payload", "payload per ticket"):
            grid.add_column(head, justify="left" if head == "table" else "right")
        for name, pages, payload in [*stats, ("all", sum(s[1] for s in stats), sum(s[2] for s in stats))]:
            row = (f"{pages:,}", f"{pages / tickets:,.0f}", f"{payload:,}", f"{payload / tickets:,.0f}")
            grid.add_row(str(name), *row)
        console.print(grid)
    grid = Table(title="per column (bytes of the values)")
    for head in ("column", "bytes", "per ticket", "per call"):
        grid.add_column(head, justify="left" if head == "column" else "right")
    for table, name, total in sorted(columns, key=lambda c: -c[2]):
        per_call = f"{total / calls:,.0f}" if table == "modelcall" and calls else ""
        grid.add_row(f"{table}.{name}", f"{total:,}", f"{total / tickets:,.0f}", per_call)
    console.print(grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5, help="tickets of examples/tickets.csv to triage")
    parser.add_argument("--model", default=None, help="default model (the config's, embedded:smollm2-135m)")
    parser.add_argument(
        "--finish", action="store_true", help="accept every review, as a person would, so every ticket finishes"
    )
    parser.add_argument("--db", type=Path, default=None, help="report on this database; do not triage")
    args = parser.parse_args()
    console = Console()
    if args.db is not None:
        report(args.db, console, str(args.db))
        return
    db = Path(tempfile.mkdtemp(prefix="shoal-storage-")) / "shoal.db"
    seconds = asyncio.run(triage(args.n, db, args.model, args.finish))
    how = ", every review accepted" if args.finish else ""
    report(db, console, f"{args.n} tickets triaged{how} in {seconds:.0f}s into {db}")


if __name__ == "__main__":
    main()
