"""Ticket triage on Bitext rows: quality, escalation, throughput and the framework's share of time.

Runs the real `shoal triage` workflow (the engine's `triage`, the embedded model by default) over
N Bitext rows and prints: category and intent accuracy against the gold labels (of the answers
the small model gave, accepted or not), entity exact match (gold `entity_value` found as one of the
extracted values), share escalated per field, tickets per minute, and the framework's share of
wall time (time outside model calls / total).

Run by hand: `uv run python benchmarks/tickets.py --n 500 [--model ollama:qwen2.5:3b] [--heads]`;
`--heads` first trains the category and intent heads on the Bitext rows that are not in the sample.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.evaluation import Labelled
from shoal.store import Store
from shoal.tickets.files import TicketRow
from shoal.tickets.plan import FIELDS

DATA = Path(__file__).resolve().parents[1] / "data" / "bitext_customer_support.csv"


def sample(n: int) -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def busy_seconds(calls: list[Any]) -> float:
    """Time covered by at least one model call. A call is recorded when it ends, so it spans
    [end - latency, end]; calls of one ticket run side by side (a head embeds while the chat model
    generates), so their latencies are merged as intervals, not summed."""
    spans = sorted(
        (end - latency, end)
        for end, latency in ((datetime.fromisoformat(str(at)).timestamp(), float(lat or 0.0)) for at, lat in calls)
    )
    total, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


async def train_heads(shoal: Shoal, chosen: list[dict[str, str]], console: Console) -> None:
    """Category and intent heads fitted on the Bitext rows that are not among the tickets."""
    with DATA.open(encoding="utf-8", newline="") as handle:
        every = list(csv.DictReader(handle))
    asked = {r["instruction"] for r in chosen}
    rest = [r for r in every if r["instruction"] not in asked]
    for name in ("category", "intent"):
        files = [Labelled(text=r["instruction"], label=r[name]) for r in rest]
        result = await shoal.train(name, files=files, baseline=0)
        console.print(
            f"{name} head v{result.version}: {result.n_train} examples, held-out accuracy "
            f"{result.after.accuracy:.3f}, ECE {result.after.ece:.3f}, {result.embedded} texts embedded"
        )


async def main(
    n: int, model: str | None, config: Path | None, db: Path | None, report_only: bool, heads: bool = False
) -> None:
    rows = sample(n)
    db = db or Path(tempfile.mkdtemp(prefix="shoal-tickets-")) / "shoal.db"
    settings = Settings.load(config, env={"SHOAL_DB": str(db)})
    if model:
        settings.default_model = model
    tickets = [TicketRow(key=f"bitext:{i}", line=i, text=r["instruction"]) for i, r in enumerate(rows)]
    console = Console(stderr=True)
    started = time.perf_counter()
    done = [0]

    def tick(_: object) -> None:
        done[0] += 1
        if done[0] % 10 == 0:
            elapsed = time.perf_counter() - started
            console.print(f"{done[0]}/{n} tickets, {done[0] / elapsed * 60:.1f}/min")

    if not report_only:
        async with Shoal(settings) as shoal:
            if heads:
                await train_heads(shoal, rows, console)
                started = time.perf_counter()
            await shoal.triage(tickets, source="bitext", on_ticket=tick)
    store = Store(settings.db_path)
    finished = [t for t in store.tickets() if t.status in ("done", "waiting", "failed", "rejected")]
    if not finished:
        raise SystemExit(f"no finished tickets in {settings.db_path}")
    n = len(finished)
    # wall time from the tickets themselves, so a resumed or partial run reports honestly
    wall = (max(t.updated_at for t in finished) - min(t.created_at for t in finished)).total_seconds()
    with store.engine.connect() as conn:
        calls = conn.exec_driver_sql("SELECT created_at, latency_s FROM modelcall").all()
    model_seconds = busy_seconds(calls)

    gold = {f"bitext:{i}": r for i, r in enumerate(rows)}
    correct = {"category": 0, "intent": 0}
    entity_hits = entity_total = 0
    escalated = dict.fromkeys(FIELDS, 0)
    statuses: dict[str, int] = {}
    for ticket in finished:
        statuses[ticket.status] = statuses.get(ticket.status, 0) + 1
        fields = json.loads(ticket.result_json or "{}")
        truth = gold[ticket.id]
        for name in ("category", "intent"):
            output = (fields.get(name) or {}).get("output") or {}
            correct[name] += output.get("label") == truth[name]
        for name in FIELDS:
            field = fields.get(name) or {}
            if field.get("status") != "done" or field.get("answered_by") not in ("specialist", None):
                escalated[name] += 1
        if truth["entity_value"]:
            entity_total += 1
            values = ((fields.get("entities") or {}).get("output") or {}).values()
            entity_hits += any(str(v).strip().lower() == truth["entity_value"].strip().lower() for v in values if v)

    how = ", category and intent from trained heads" if heads else ""
    table = Table(title=f"shoal triage on {n} Bitext tickets (of {len(rows)} asked), {settings.default_model}{how}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("category accuracy (small model's answer)", f"{correct['category'] / n:.3f}")
    table.add_row("intent accuracy (small model's answer)", f"{correct['intent'] / n:.3f}")
    table.add_row(
        f"entity exact match ({entity_total} tickets with a gold entity)", f"{entity_hits / max(1, entity_total):.3f}"
    )
    for name in FIELDS:
        table.add_row(f"escalated: {name}", f"{escalated[name] / n:.1%}")
    table.add_row("ticket status", json.dumps(statuses))
    table.add_row("tickets per minute", f"{n / wall * 60:.1f}")
    table.add_row("wall time", f"{wall:.1f} s")
    table.add_row("time covered by model calls", f"{model_seconds:.1f} s")
    table.add_row("note", "wall time spans the first ticket's start to the last one's end")
    table.add_row("framework share of wall time", f"{max(0.0, wall - model_seconds) / wall:.2%}")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--model", default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--db", type=Path, default=None, help="database to use (re-running resumes it)")
    parser.add_argument("--report-only", action="store_true", help="only report on the tickets in --db")
    parser.add_argument(
        "--heads", action="store_true", help="first train category and intent heads on the other Bitext rows"
    )
    args = parser.parse_args()
    asyncio.run(main(args.n, args.model, args.config, args.db, args.report_only, args.heads))
