"""Ticket triage on Bitext rows: quality, escalation, throughput and the framework's share of time.

Runs the real `shoal triage` workflow (the engine's `triage`, the embedded model by default) over
N Bitext rows held out of everything `examples/` ships (examples/build.py), with
`examples/shoal.toml` (its heads, knowledge and priority rules) unless `--config` says otherwise.
Per field it prints the share answered locally (by the small tier, accepted), how often those
were right where the data can say, and the ECE and AUROC of the small tier's confidence over every
answer it gave; entities are judged per extracted field, each with its own confidence
(`entity_answers`). Then tickets per minute and the framework's share of wall time (time outside
model calls). `--heads` instead trains category and intent heads on the other rows.

Run by hand: `uv run python benchmarks/tickets.py --n 714 [--config FILE] [--model M]` (714 is
every held-out row).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.evaluation import Labelled, Prediction, auroc, expected_calibration_error
from shoal.span_training import ALIASES
from shoal.store import Store
from shoal.tickets.files import TicketRow
from shoal.tickets.plan import FIELDS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bitext_customer_support.csv"
sys.path.insert(0, str(ROOT / "examples"))
from build import held_out  # noqa: E402  (the split the shipped heads and knowledge kept out)


def sample(n: int | None = None) -> list[dict[str, str]]:
    """`n` Bitext rows from the held-out share (714 rows), evenly spaced through it: none was
    fitted on by the shipped heads or put in the shipped knowledge (see examples/build.py). The
    data is sorted by intent, so the first `n` rows would leave the last intents out."""
    with DATA.open(encoding="utf-8", newline="") as handle:
        rows = [{**r, "row": str(i)} for i, r in enumerate(csv.DictReader(handle)) if held_out(r["instruction"])]
    n = len(rows) if n is None else min(n, len(rows))
    return [rows[i * len(rows) // n] for i in range(n)]


def ticket_key(row: dict[str, str]) -> str:
    """A ticket's id: its row in the data file, so a report on a kept `--db` finds each ticket's
    gold whatever `--n` the report is run with."""
    return f"bitext:{row['row']}"


def judged(right: bool, confidence: float) -> Prediction:
    return Prediction(text="", gold="y", predicted="y" if right else "n", confidence=confidence, seconds=0.0)


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


def whole_words(text: str, value: str) -> str:
    """The gold value widened to the whole words it sits in: Bitext labels "4587345" inside
    "00004587345" (and "3707955617" inside "370795561790"); the customer's order number is the
    whole number."""
    whole = re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text, re.IGNORECASE)
    if whole is not None:  # "pro" in "problems with pro account" is the word, not the prefix of "problems"
        return whole.group(0)
    at = text.casefold().find(value.casefold())
    if at < 0:
        return value
    start, end = at, at + len(value)
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "-_"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] in "-_"):
        end += 1
    return text[start:end]


def entity_answers(output: object, truth: dict[str, str], fields: Iterable[str]) -> dict[str, bool]:
    """Each extracted field the data can judge, and whether it is right: the gold entity's field
    (when configured) by exact match after case and space normalisation, the gold widened to whole
    words; and on a row with no labelled entity, every field but `amount` must be empty (Bitext
    labels no amount on most rows that state one: "a refund of 299 dollars")."""
    if not isinstance(output, dict):
        return {}
    labelled, value = truth["entity_type"], truth["entity_value"]
    labelled = ALIASES.get(labelled, labelled)  # Bitext's refund_amount is the extractor's amount
    if labelled and value:
        if labelled not in fields:
            return {}
        return {labelled: _norm(output.get(labelled) or "") == _norm(whole_words(truth["instruction"], value))}
    if labelled:
        return {}
    return {field: not output.get(field) for field in fields if field != "amount"}


def field_confidences(evidence_json: str | None) -> dict[str, float]:
    """An extraction's confidence per field, from its evidence (`span_FIELD` signals of a span head;
    none for a prompted extraction, which has one confidence for the whole answer)."""
    signals = json.loads(evidence_json or "[]")
    return {
        str(s["name"]).removeprefix("span_"): float(s["value"])
        for s in signals
        if isinstance(s, dict) and str(s.get("name", "")).startswith("span_")
    }


def _norm(value: object) -> str:
    return " ".join(str(value).casefold().split())


def correct(
    name: str, output: object, truth: dict[str, str], rules: dict[str, str], fields: Iterable[str] = ()
) -> bool | None:
    """Whether a field's answer is right where the data says (None where it cannot say):
    labels against Bitext's; priority against the configured rule for the gold intent; a reply,
    by its knowledge item's intent. Entities are judged per field (`entity_answers`)."""
    if not isinstance(output, dict):
        return None  # no answer (it waits on another field, or the model gave none): nothing to score
    if name in ("category", "intent"):
        return bool(output.get("label") == truth[name])
    if name == "priority":
        expected = rules.get(truth["intent"])
        return None if expected is None else output.get("label") == expected
    if name == "entities":
        raise ValueError("entities are scored per field: entity_answers()")
    if name == "reply":
        used = output.get("knowledge") or []
        return bool(used) and str(used[0]).split(":")[1:2] == [truth["intent"]]
    return None


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
    n: int,
    model: str | None,
    config: Path | None,
    db: Path | None,
    report_only: bool,
    heads: bool = False,
) -> None:
    rows = sample(n)
    n = len(rows)  # at most the held-out share
    config = config or ROOT / "examples" / "shoal.toml"
    db = db or Path(tempfile.mkdtemp(prefix="shoal-tickets-")) / "shoal.db"
    settings = Settings.load(config, env={"SHOAL_DB": str(db)})
    if model:
        settings.default_model = model
    tickets = [TicketRow(key=ticket_key(r), line=i, text=r["instruction"]) for i, r in enumerate(rows)]
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
        extracted = conn.exec_driver_sql("SELECT run_id, evidence_json FROM step WHERE step_id = 'entities'").all()
    per_field = {run_id: field_confidences(evidence) for run_id, evidence in extracted}
    model_seconds = busy_seconds(calls)

    gold = {ticket_key(r): r for r in sample()}  # every held-out row, by its id
    settings_rules = settings.tickets.priority_by_intent
    scored: dict[str, list[Prediction]] = defaultdict(list)
    local = dict.fromkeys(FIELDS, 0)
    statuses: dict[str, int] = {}
    for ticket in finished:
        statuses[ticket.status] = statuses.get(ticket.status, 0) + 1
        fields = json.loads(ticket.result_json or "{}")
        truth = gold[ticket.key]
        for name in FIELDS:
            field = fields.get(name) or {}
            if field.get("status") == "done" and field.get("answered_by") == "specialist":
                local[name] += 1
            if field.get("answered_by") not in ("specialist", None):
                continue  # the frontier's or a person's answer: not the small tier's confidence
            confidence = float(field.get("confidence") or 0.0)
            if name == "entities":  # each field with its own confidence (a span head's; else the answer's)
                own = per_field.get(ticket.run_id or "", {})
                for entity, right in entity_answers(field.get("output"), truth, settings.tickets.entities).items():
                    scored[f"  {entity}"].append(judged(right, own.get(entity, confidence)))
                    scored[name].append(judged(right, own.get(entity, confidence)))
                continue
            verdict = correct(name, field.get("output"), truth, settings_rules, settings.tickets.entities)
            if verdict is not None:
                scored[name].append(judged(verdict, confidence))

    how = f" with {config}" if config else ""
    table = Table(title=f"shoal triage on {n} held-out Bitext tickets, {settings.default_model}{how}")
    for column in ("field", "answered locally", "right, of local", "n scored", "ECE", "AUROC"):
        table.add_column(column, justify="left" if column == "field" else "right")
    rows_shown = [(name, name) for name in FIELDS]
    at = rows_shown.index(("entities", "entities")) + 1
    rows_shown[at:at] = [(key, "entities") for key in sorted(scored) if key.startswith("  ")]
    for key, name in rows_shown:
        predictions = scored[key]
        accepted = [p for p in predictions if p.confidence >= settings.threshold_for(name, 0.5)]
        area = auroc(predictions)
        table.add_row(
            key,
            f"{local[name] / n:.1%}" if key == name else "",
            f"{sum(p.correct for p in accepted) / len(accepted):.3f}" if accepted else "-",
            str(len(predictions)),
            f"{expected_calibration_error(predictions):.3f}" if predictions else "-",
            f"{area:.3f}" if area is not None else "-",
        )
    every = sum(local.values()) / (n * len(FIELDS))
    table.add_row("all fields", f"{every:.1%}", "", "", "", "")
    Console().print(table)
    totals = Table(title="throughput")
    totals.add_column("measure")
    totals.add_column("value", justify="right")
    totals.add_row("ticket status", json.dumps(statuses))
    totals.add_row("tickets per minute", f"{n / wall * 60:.1f}")
    totals.add_row("wall time", f"{wall:.1f} s")
    totals.add_row("time covered by model calls", f"{model_seconds:.1f} s")
    totals.add_row("framework share of wall time", f"{max(0.0, wall - model_seconds) / wall:.2%}")
    table = totals
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
