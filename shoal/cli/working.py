"""Commands that make models work: `ask`, `run`, `resume`, `triage`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.common import (
    ConfigOption,
    Ticker,
    console,
    engine,
    err,
    escape,
    input_file,
    literal,
    model_ref,
    output_file,
    print_json,
    print_report,
    read_plan,
    settings,
)
from shoal.status import RunStatus, TicketStatus

if TYPE_CHECKING:
    from pydantic import BaseModel

    from shoal.agents.planner import Plan
    from shoal.tickets.triage import TicketOutcome

_FIELD_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list[str]}


def fields_model(spec: str) -> type[BaseModel]:
    """`order_id:str,urgent:bool` -> a pydantic model with those required fields."""
    from pydantic import BaseModel, create_model

    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, kind = part.partition(":")
        kind = kind.strip() or "str"
        name = name.strip()
        reserved = name.startswith("_") or (name.startswith("model_") and hasattr(BaseModel, name))
        if not name.isidentifier() or reserved or kind not in _FIELD_TYPES:
            raise typer.BadParameter(
                f"field {part!r} must be NAME:TYPE with TYPE one of {', '.join(_FIELD_TYPES)} "
                "(NAME a Python identifier, not starting with _ nor a pydantic name such as model_dump)",
                param_hint="--fields",
            )
        fields[name] = (_FIELD_TYPES[kind], ...)
    if not fields:
        raise typer.BadParameter("give at least one NAME:TYPE", param_hint="--fields")
    model: type[BaseModel] = create_model("Answer", **fields)
    return model


def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask; '-' reads standard input.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="backend:model, e.g. ollama:qwen2.5:3b")] = None,
    fields: Annotated[
        str | None,
        typer.Option(help="Structured answer with these fields, e.g. 'order_id:str,urgent:bool'."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.", min=1)] = 256,
    config: ConfigOption = None,
) -> None:
    """One model call through shoal's backends; with --fields the answer is validated JSON."""
    import asyncio

    from shoal.backends import build_router
    from shoal.models.base import ChatRequest, Message, ModelRef

    chosen = settings(config)
    text = sys.stdin.read() if prompt == "-" else prompt
    ref = model_ref(model) if model else ModelRef.parse(chosen.default_model)
    schema = fields_model(fields) if fields else None
    system = "Answer with a JSON object only." if schema else "You are a helpful assistant. Answer briefly."
    request = ChatRequest(
        model=ref.name,
        messages=[Message(role="system", content=system), Message(role="user", content=text)],
        output_schema=schema,
        max_tokens=max_tokens,
        logprobs=True,
        top_logprobs=1,
    )

    async def go() -> None:
        router = build_router(chosen)
        try:
            reply = await router.chat(ref, request)
        finally:
            await router.aclose()
        if reply.parsed is not None:
            print_json(reply.parsed.model_dump_json())
        else:
            console.print(reply.text, markup=False, emoji=False, highlight=False, soft_wrap=True)
        mean_p = sum(t.prob for t in reply.logprobs) / len(reply.logprobs) if reply.logprobs else None
        confidence = f", mean token p={mean_p:.2f}" if mean_p is not None else ""
        err.print(
            f"[dim]{escape(str(reply.ref))}: {reply.usage.input_tokens} in / {reply.usage.output_tokens} out, "
            f"{reply.latency_s:.2f}s{confidence}[/dim]",
            soft_wrap=True,
        )

    asyncio.run(go())


def run(
    task: Annotated[str, typer.Argument(help="The task; '-' reads standard input.")],
    plan: Annotated[Path | None, typer.Option(help="A plan (JSON) to run instead of asking the planner.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Plan and run a task; prints the result and a one-line cost and escalation summary."""
    text: str | bytes = sys.stdin.buffer.read() if task == "-" else task
    given = read_plan(plan) if plan else None
    shoal = engine(config)
    chosen: Plan | None = None if plan is None else shoal.check_plan(given, what=f"plan {plan}")
    report = shoal.run_sync(text, plan=chosen)
    print_report(report, as_json)
    if report.status == RunStatus.FAILED:
        raise typer.Exit(1)


def resume(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")], config: ConfigOption = None
) -> None:
    """Continue a run that crashed, was stopped, or waited on reviews answered since."""
    import asyncio

    shoal = engine(config)
    report = asyncio.run(shoal.closing(shoal.resume(run_id)))
    print_report(report, False)


class TriageCounts:
    """What one `shoal triage` did, ticket by ticket, for its progress line."""

    def __init__(self) -> None:
        self.done = self.escalated = self.waiting = self.failed = self.rejected = self.skipped = 0
        self.tokens = 0
        self.cost = 0.0
        self.problems: list[str] = []

    def add(self, outcome: TicketOutcome) -> None:
        if outcome.skipped:
            self.skipped += 1
        elif outcome.status == TicketStatus.DONE:
            self.done += 1
        elif outcome.status == TicketStatus.WAITING:
            self.waiting += 1
        elif outcome.status == TicketStatus.FAILED:
            self.failed += 1
        elif outcome.status == TicketStatus.REJECTED:
            self.rejected += 1
        if outcome.escalated and not outcome.skipped:
            self.escalated += 1
        if outcome.status in (TicketStatus.REJECTED, TicketStatus.FAILED):
            self.problems.append(f"{outcome.key} (line {outcome.line}): {outcome.status}: {outcome.error}")
        self.tokens += outcome.tokens
        self.cost += outcome.cost_usd

    def status(self) -> str:
        return (
            f"done {self.done} · escalated {self.escalated} · waiting {self.waiting} · failed {self.failed} · "
            f"bad {self.rejected} · skipped {self.skipped} · {self.tokens:,} tokens · ${self.cost:.4f}"
        )

    @property
    def triaged(self) -> int:
        return self.done + self.waiting + self.failed + self.rejected


def triage(
    file: Annotated[Path, typer.Argument(help="Ticket export: CSV or JSONL.")],
    text: Annotated[str, typer.Option("--text", help="Column (or key) holding the ticket text.")] = "instruction",
    id_column: Annotated[
        str | None, typer.Option("--id", help="Column holding the ticket id (default: the file name and row number).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write results to this .jsonl or .csv file.")] = None,
    concurrency: Annotated[int, typer.Option(help="Tickets in flight at once (helps with Ollama).")] = 1,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    force: Annotated[bool, typer.Option(help="Triage again tickets already done.")] = False,
    enqueue: Annotated[
        bool, typer.Option(help="Only put the tickets on the database's queue, for `shoal worker` processes.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Triage a ticket queue: category, intent, priority, entities, summary, a first reply, a queue."""
    import asyncio
    import itertools

    from rich.text import Text

    from shoal.engine import views
    from shoal.tickets.files import read_tickets, ticket_source

    if out is not None:
        output_file(out, "--out", (".jsonl", ".csv"))
    input_file(file, "ticket file", "give a CSV or JSONL export of your tickets")
    shoal = engine(config)
    rows = list(
        itertools.islice(
            read_tickets(file, text_column=text, id_column=id_column, max_chars=shoal.settings.tickets.max_chars),
            limit,
        )
    )
    source = ticket_source(file)
    if enqueue:
        from shoal.cli.workers import enqueue as queue_tickets

        if out is not None:
            raise typer.BadParameter("workers triage queued tickets later: export with a later `shoal triage --out`")
        queue_tickets(shoal, rows, source, file, force=force)
        return
    counts = TriageCounts()
    with Ticker("triage") as ticker:

        def update(outcome: TicketOutcome) -> None:
            counts.add(outcome)
            ticker.update("tickets", counts.triaged + counts.skipped, len(rows), counts.status())

        def paused(reason: str, delay_s: float) -> None:
            ticker.note(Text(f"paused: {reason}; retrying in {delay_s:.0f}s", style="yellow"))

        work = shoal.triage(
            rows, source=source, concurrency=concurrency, force=force, on_ticket=update, on_pause=paused
        )
        try:
            asyncio.run(shoal.closing(work))
        finally:  # also on Ctrl-C: what finished is in the database, and in the output file
            if out is not None:
                written = shoal.export_tickets(source, [r.key for r in rows], out)
                err.print(literal(f"wrote {written} tickets to {out}"), soft_wrap=True)
    for line in counts.problems:
        err.print(Text(line, style="yellow"), soft_wrap=True)
    stored = views.ticket_counts(shoal.store, source, [r.key for r in rows])
    print_triage_summary(file, len(rows), stored, counts)
    if counts.failed:
        # scripts and schedulers must see it: run again to retry them (finished tickets are skipped)
        raise typer.Exit(1)


def print_triage_summary(file: Path, n: int, stored: dict[TicketStatus, int], counts: TriageCounts) -> None:
    """How the file's tickets stand in the database (a rerun that skips them all still says how
    many wait for review), then what this invocation did; one fact a line, never folded."""
    say = console.print
    standing = [
        f"{stored.get(TicketStatus.DONE, 0)} done",
        f"{stored.get(TicketStatus.WAITING, 0)} waiting for review",
        f"{stored.get(TicketStatus.FAILED, 0)} failed",
        f"{stored.get(TicketStatus.REJECTED, 0)} rejected",
    ]
    if stored.get(TicketStatus.RUNNING):
        standing.append(f"{stored[TicketStatus.RUNNING]} still running")
    say(literal(f"{n} tickets: {', '.join(standing)} (in the database, for {file.name})"), soft_wrap=True)
    say(
        literal(
            f"this run: {counts.triaged} triaged ({counts.escalated} escalated), {counts.skipped} already done "
            f"and skipped; {counts.tokens:,} tokens, ${counts.cost:.4f} frontier"
        ),
        soft_wrap=True,
    )
    if stored.get(TicketStatus.WAITING):
        say("answer the waiting ones with `shoal review`", soft_wrap=True)
