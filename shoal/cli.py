"""The `shoal` command."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, create_model
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from shoal.backends import build_router
from shoal.config import Settings, find_config
from shoal.errors import InputFileError, ShoalError, UsageError
from shoal.models.base import BACKENDS, ChatRequest, Message, ModelRef
from shoal.status import RunStatus, TicketStatus

if TYPE_CHECKING:
    from shoal.agents.planner import Plan
    from shoal.engine import RunReport, Shoal
    from shoal.engine.reviews import ReviewDetail
    from shoal.engine.views import RunDetail
    from shoal.evaluation import Evaluation
    from shoal.tickets.triage import TicketOutcome
    from shoal.training import TrainReport

app = typer.Typer(
    name="shoal",
    help="A graph of small specialist models that knows when to ask a bigger one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Backends, their health and their models.", invoke_without_command=True)
app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="shoal.toml to use (default: SHOAL_CONFIG, ./shoal.toml, user config dir)"),
]

_FIELD_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list[str]}


def _literal(text: str) -> Text:
    """Text shoal did not write (a task, model output, an error, a file name) as it is: brackets such
    as `[openai]` are not read as Rich markup, nor `:name:` as an emoji."""
    return console.render_str(text, markup=False, emoji=False)


_LABELLED = "give labelled data as CSV, JSONL or CLINC150-style JSON"


def _input_file(path: Path, what: str, hint: str = "") -> Path:
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


def _output_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
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


def _model_ref(text: str, option: str = "--model") -> ModelRef:
    """A `backend:model` typed on the command line, or a `UsageError` saying what is wrong."""
    try:
        ref = ModelRef.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if ref.backend not in BACKENDS:  # the scripted backend exists for tests written in Python
        raise UsageError(f"{option}: {text!r} names backend {ref.backend!r}; use one of {', '.join(BACKENDS)}")
    return ref


def _settings(config: Path | None) -> Settings:
    found = find_config(config, os.environ)
    if found is not None:  # the file Settings.load is about to read
        _input_file(
            found,
            "config file",
            "point --config or SHOAL_CONFIG at a shoal.toml, or leave both out to use ./shoal.toml "
            "or the one in the user config directory",
        )
    return Settings.load(config)


def _read_plan(path: Path) -> Any:
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


def fields_model(spec: str) -> type[BaseModel]:
    """`order_id:str,urgent:bool` -> a pydantic model with those required fields."""
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


@app.command()
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
    settings = _settings(config)
    text = sys.stdin.read() if prompt == "-" else prompt
    ref = _model_ref(model) if model else ModelRef.parse(settings.default_model)
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
        router = build_router(settings)
        try:
            reply = await router.chat(ref, request)
        finally:
            await router.aclose()
        if reply.parsed is not None:
            console.print_json(reply.parsed.model_dump_json())
        else:
            console.print(reply.text, markup=False, emoji=False, highlight=False, soft_wrap=True)
        mean_p = sum(t.prob for t in reply.logprobs) / len(reply.logprobs) if reply.logprobs else None
        confidence = f", mean token p={mean_p:.2f}" if mean_p is not None else ""
        err.print(
            f"[dim]{escape(str(reply.ref))}: {reply.usage.input_tokens} in / {reply.usage.output_tokens} out, "
            f"{reply.latency_s:.2f}s{confidence}[/dim]"
        )

    asyncio.run(go())


def _engine(config: Path | None) -> Shoal:
    from shoal.engine import Shoal  # the engine loads LangGraph: only for the commands that need it

    return Shoal(_settings(config))


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        console.print_json(report.model_dump_json())
    elif report.answer is not None:
        console.print_json(json.dumps(report.answer.get("answer", report.answer), ensure_ascii=False))
    for item in report.reviews:
        err.print(
            f"[yellow]waiting for a person:[/yellow] review {item.id} ({escape(item.specialist)}, "
            f"step {escape(item.step_id)}): `shoal review {item.id}`"
        )
    if report.error:
        err.print(Text(report.error, style="red"))
    err.print(Text(report.summary(), style="dim"))


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="The task; '-' reads standard input.")],
    plan: Annotated[Path | None, typer.Option(help="A plan (JSON) to run instead of asking the planner.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Plan and run a task; prints the result and a one-line cost and escalation summary."""
    text: str | bytes = sys.stdin.buffer.read() if task == "-" else task
    given = _read_plan(plan) if plan else None
    engine = _engine(config)
    chosen: Plan | None = None if plan is None else engine.check_plan(given, what=f"plan {plan}")
    report = engine.run_sync(text, plan=chosen)
    _print_report(report, as_json)
    if report.status == RunStatus.FAILED:
        raise typer.Exit(1)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")], config: ConfigOption = None
) -> None:
    """Continue a run that crashed, was stopped, or waited on reviews answered since."""
    engine = _engine(config)
    report = asyncio.run(engine.closing(engine.resume(run_id)))
    _print_report(report, False)


@app.command()
def runs(
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    config: ConfigOption = None,
) -> None:
    """Recent runs."""
    engine = _engine(config)
    table = Table(title=_literal(f"runs in {engine.settings.db_path}"))
    for column in ("id", "status", "started", "task", "calls", "esc.", "tokens", "cost", "secs"):
        table.add_column(column, overflow="fold")
    for row in engine.list_runs(status=status, limit=limit):
        table.add_row(
            row.id,
            row.status,
            row.created_at.strftime("%Y-%m-%d %H:%M"),
            _literal((row.task[:50] + "…") if len(row.task) > 50 else row.task),
            str(row.model_calls),
            str(row.escalations),
            str(row.tokens_in + row.tokens_out),
            f"${row.cost_usd:.4f}",
            f"{row.seconds:.1f}",
        )
    console.print(table)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    calls: Annotated[bool, typer.Option("--calls", help="Print every model call's prompt and reply.")] = False,
    config: ConfigOption = None,
) -> None:
    """A run's steps with confidence and evidence, its escalations and its model calls."""
    _print_run(_engine(config).run_detail(run_id), calls)


def _print_run(detail: RunDetail, with_calls: bool) -> None:
    run = detail.run
    console.print(
        f"[bold]run {run.id}[/bold]  {run.status}  {escape(run.workflow)}  {run.created_at:%Y-%m-%d %H:%M:%S}"
    )
    console.print(_literal(f"task: {run.task if len(run.task) < 500 else run.task[:500] + '…'}"))
    if run.error:
        console.print(Text(f"error: {run.error}", style="red"))
    steps = Table(title="steps", show_lines=True)
    for column in ("step", "specialist", "status", "confidence", "first", "answered by", "output", "evidence"):
        steps.add_column(column, overflow="fold")
    for step in detail.steps:
        evidence = "; ".join(f"{e.name}={e.value:.2f} {e.detail}" for e in step.evidence)
        steps.add_row(
            _literal(step.step_id),
            _literal(step.specialist),
            step.status,
            _score(step.confidence),
            _score(step.first_confidence),
            _literal(step.answered_by or "-"),
            _literal((step.output_json or step.error or "")[:300]),
            _literal(evidence[:400]),
        )
    console.print(steps)
    if detail.escalations:
        table = Table(title="escalations")
        for column in ("step", "rung", "outcome", "before", "after", "model", "cost", "reason"):
            table.add_column(column, overflow="fold")
        for e in detail.escalations:
            table.add_row(
                _literal(e.step_id or "-"),
                e.rung,
                e.outcome,
                f"{e.confidence_before:.2f}",
                _score(e.confidence_after),
                _literal(e.model or "-"),
                f"${e.cost_usd:.4f}",
                _literal(e.reason),
            )
        console.print(table)
    table = Table(title="model calls")
    for column in ("#", "step", "model", "tokens", "latency", "cost", "confidence", "error"):
        table.add_column(column, overflow="fold")
    for call in detail.calls:
        table.add_row(
            str(call.id),
            _literal(call.step_id or "-"),
            _literal(call.model),
            f"{call.tokens_in}+{call.tokens_out}",
            f"{call.latency_s:.2f}s",
            f"${call.cost_usd:.4f}",
            _score(call.confidence),
            _literal(call.error or ""),
        )
    console.print(table)
    if with_calls:
        for call in detail.calls:
            console.rule(_literal(f"call {call.id}: {call.model} (step {call.step_id})"))
            console.print_json(call.request_json)
            console.print_json(call.reply)
    console.print(
        f"{run.model_calls} model calls, {run.escalations} escalations, {run.tokens_in}+{run.tokens_out} tokens, "
        f"${run.cost_usd:.4f} frontier, {run.seconds:.1f}s"
    )


@app.command()
def review(
    review_id: Annotated[
        int | None, typer.Argument(help="The review to show or answer; none lists the pending ones.")
    ] = None,
    answer: Annotated[
        str | None,
        typer.Option(
            help="The answer: a label for a classifier (any case), plain text for a summary or a reply, "
            "or JSON of the specialist's output."
        ),
    ] = None,
    accept: Annotated[bool, typer.Option(help="Accept the best answer the models gave.")] = False,
    who: Annotated[str, typer.Option(help="Who answers (recorded with the answer).")] = "cli",
    config: ConfigOption = None,
) -> None:
    """List pending human decisions, show one, or answer it; its run then goes on at once."""
    engine = _engine(config)
    if review_id is None:
        _print_pending(engine.pending_reviews())
    elif answer is None and not accept:
        _print_review(engine.review_detail(review_id))
    else:
        report = asyncio.run(engine.closing(engine.answer_review(review_id, answer, accept=accept, who=who)))
        _print_report(report, False)


def _short_json(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_pending(pending: list[ReviewDetail]) -> None:
    if not pending:
        console.print("no reviews waiting")
        return
    table = Table(title="waiting for a person", show_lines=True)
    for column in ("id", "run", "step", "specialist", "confidence", "best answer", "why"):
        table.add_column(column, overflow="fold")
    for item in pending:
        table.add_row(
            str(item.id),
            item.run_id,
            _literal(item.step_id),
            _literal(item.specialist),
            f"{item.confidence:.2f}",
            _literal(_short_json(item.best_answer)),
            _literal("; ".join(item.reasons)[:300]),
        )
    console.print(table)
    console.print("see one with `shoal review ID`; answer with `shoal review ID --answer ANSWER` or `--accept`")


def _print_review(item: ReviewDetail) -> None:
    console.print(
        Text.assemble(
            (f"review {item.id}", "bold"),
            f"  {item.status}  {item.specialist}, step {item.step_id} of run {item.run_id}",
        )
    )
    if item.instruction:
        console.print(_literal(f"asked: {item.instruction}"))
    text = item.input_text if len(item.input_text) <= 2000 else item.input_text[:2000] + "…"
    console.print(Text("input:", style="bold"))
    console.print(_literal(text), soft_wrap=True)
    console.print(
        _literal(
            f"small model {item.small_model or '-'}: {_short_json(item.small_answer, 1000)}, "
            f"confidence {item.confidence:.2f}"
        )
    )
    if item.evidence:
        console.print(Text("evidence:", style="bold"))
    for e in item.evidence:
        console.print(_literal(f"  {e.name} = {e.value:.2f}  {e.detail}"))
    if item.frontier is not None:
        console.print(
            _literal(f"frontier {item.frontier.model or '-'}: {item.frontier.outcome}. {item.frontier.reason}")
        )
    if item.reasons:
        console.print(Text("why it is here:", style="bold"))
        for reason in item.reasons:
            console.print(_literal(f"  {reason}"))
    best = _short_json(item.best_answer, 2000) if item.best_answer is not None else "none (no usable model answer)"
    console.print(Text.assemble(("best answer: ", "bold"), best))
    if item.answer is not None:
        console.print(_literal(f"answered by {item.answered_by}: {_short_json(item.answer, 2000)}"))
        return
    console.print(_literal(f"answer with `shoal review {item.id} --answer ANSWER`: it takes {item.expects}"))
    if item.best_answer is not None:
        console.print(_literal(f"or take the best answer with `shoal review {item.id} --accept`"))


@app.command()
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
    config: ConfigOption = None,
) -> None:
    """Triage a ticket queue: category, intent, priority, entities, summary, a first reply, a queue."""
    import itertools

    from shoal.tickets.files import read_tickets, ticket_source

    if out is not None:
        _output_file(out, "--out", (".jsonl", ".csv"))
    _input_file(file, "ticket file", "give a CSV or JSONL export of your tickets")
    engine = _engine(config)
    rows = list(
        itertools.islice(
            read_tickets(file, text_column=text, id_column=id_column, max_chars=engine.settings.tickets.max_chars),
            limit,
        )
    )
    counts = {"done": 0, "escalated": 0, "waiting": 0, "failed": 0, "rejected": 0, "skipped": 0}
    totals = {"tokens": 0, "cost": 0.0}
    problems: list[str] = []

    with Progress(
        TextColumn("[bold]triage[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
    ) as progress:
        bar = progress.add_task("triage", total=len(rows), status="")

        def update(outcome: TicketOutcome) -> None:
            if outcome.skipped:
                counts["skipped"] += 1
            elif outcome.status in counts:
                counts[outcome.status] += 1
            if outcome.escalated and not outcome.skipped:
                counts["escalated"] += 1
            if outcome.status in (TicketStatus.REJECTED, TicketStatus.FAILED):
                problems.append(f"{outcome.key} (line {outcome.line}): {outcome.status}: {outcome.error}")
            totals["tokens"] += outcome.tokens
            totals["cost"] += outcome.cost_usd
            progress.update(
                bar,
                advance=1,
                status=(
                    f"done {counts['done']} · escalated {counts['escalated']} · review {counts['waiting']} · "
                    f"failed {counts['failed']} · bad {counts['rejected']} · skipped {counts['skipped']} · "
                    f"{totals['tokens']:,} tok · ${totals['cost']:.4f}"
                ),
            )

        def paused(reason: str, delay_s: float) -> None:
            progress.console.print(Text(f"paused: {reason}; retrying in {delay_s:.0f}s", style="yellow"))

        work = engine.triage(
            rows, source=ticket_source(file), concurrency=concurrency, force=force, on_ticket=update, on_pause=paused
        )
        try:
            asyncio.run(engine.closing(work))
        finally:  # also on Ctrl-C: what finished is in the database, and in the output file
            if out is not None:
                written = engine.export_tickets(ticket_source(file), [r.key for r in rows], out)
                err.print(_literal(f"wrote {written} tickets to {out}"))
    for line in problems:
        err.print(Text(line, style="yellow"))
    console.print(
        f"{len(rows)} tickets: {counts['done']} done, {counts['waiting']} waiting for review, "
        f"{counts['escalated']} escalated, {counts['failed']} failed, {counts['rejected']} rejected, "
        f"{counts['skipped']} already done; {totals['tokens']:,} tokens, ${totals['cost']:.4f} frontier"
    )
    if counts["waiting"]:
        console.print("answer the waiting ones with `shoal review`")
    if counts["failed"]:
        # scripts and schedulers must see it: run again to retry them (finished tickets are skipped)
        raise typer.Exit(1)


@app.command()
def tui(config: ConfigOption = None) -> None:
    """Open the terminal UI: live runs, a run's steps and calls, the review queue."""
    from shoal.tui.app import ShoalApp  # Textual loads only here

    ShoalApp(_settings(config)).run()


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Argument(help="Labelled data: CSV, JSONL, or CLINC150-style JSON.")],
    text: Annotated[str, typer.Option("--text", help="Column (or key) holding the text.")] = "text",
    label: Annotated[str, typer.Option("--label", help="Column (or key) holding the gold label.")] = "label",
    split: Annotated[str, typer.Option(help="Split of a CLINC150-style JSON file.")] = "test",
    per_label: Annotated[int | None, typer.Option(help="Stratified sample: at most this many rows per label.")] = None,
    out_of_scope: Annotated[
        int | None, typer.Option("--oos", help="At most this many out-of-scope rows (CLINC150 'oos').")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="backend:model to evaluate.")] = None,
    target: Annotated[float, typer.Option(help="System accuracy the threshold must reach.")] = 0.9,
    frontier_accuracy: Annotated[float, typer.Option(help="Accuracy assumed for escalated items.")] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="JSONL of predictions, written as they come; re-running resumes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    specialist: Annotated[
        str | None,
        typer.Option(
            help="Evaluate this configured classifier as it answers now (its trained head, if active) "
            "instead of prompting --model over the data's labels."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Evaluate a classifier on labelled data and recommend a threshold."""
    from shoal.evaluation import eval_set, evaluate

    ref = _model_ref(model) if model else None
    if out is not None:
        _output_file(out, "--out")
    _input_file(data, "labelled data", _LABELLED)
    chosen = eval_set(
        data, text_column=text, label_column=label, split=split, per_label=per_label, out_of_scope=out_of_scope
    )
    engine = _engine(config)
    with Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[acc]}"),
        console=err,
    ) as progress:
        bars: dict[str, TaskID] = {}

        def update(what: str, done: int, total: int, accuracy: float) -> None:
            if what not in bars:
                bars[what] = progress.add_task(escape(what), total=total, acc="")
            progress.update(bars[what], completed=done, acc=f"acc {accuracy:.2f}")

        work = evaluate(
            engine,
            chosen,
            model=ref,
            specialist=specialist,
            out=out,
            target_accuracy=target,
            frontier_accuracy=frontier_accuracy,
            progress=update,
        )
        result = asyncio.run(engine.closing(work))
    if as_json:
        console.print_json(result.report.model_dump_json())
        return
    _print_eval(result, data)


def _print_eval(evaluation: Evaluation, data: Path) -> None:
    result = evaluation.report
    summary = Table(title=_literal(f"{evaluation.what} on {data.name}: {result.n} rows"), show_header=False)
    summary.add_column("value", justify="right")
    summary.add_row("rows in scope / out of scope", f"{result.n_in_scope} / {result.n_out_of_scope}")
    summary.add_row("accuracy (in scope)", f"{result.in_scope_accuracy:.3f}")
    summary.add_row("accuracy (all rows)", f"{result.accuracy:.3f}")
    summary.add_row("macro-F1 (in scope)", f"{result.macro_f1:.3f}")
    summary.add_row("ECE", f"{result.ece:.3f}")
    summary.add_row("AUROC, confidence vs correct", "-" if result.auroc is None else f"{result.auroc:.3f}")
    summary.add_row("mean confidence in scope", f"{result.mean_confidence_in_scope:.3f}")
    if result.mean_confidence_out_of_scope is not None:
        summary.add_row("mean confidence out of scope", f"{result.mean_confidence_out_of_scope:.3f}")
    summary.add_row("seconds per item", f"{result.seconds_per_item:.3f}")
    summary.add_row("unusable replies", str(result.errors))
    console.print(summary)
    table = Table(title=f"threshold sweep (frontier accuracy {result.frontier_accuracy:.2f})")
    for column in ("threshold", "escalated", "accepted acc.", "system acc.", "oos escalated"):
        table.add_column(column, justify="right")
    for row in result.table:
        table.add_row(
            f"{row.threshold:.3f}",
            f"{row.escalated:.1%}",
            "-" if row.accepted_accuracy is None else f"{row.accepted_accuracy:.3f}",
            f"{row.system_accuracy:.3f}",
            "-" if row.out_of_scope_escalated is None else f"{row.out_of_scope_escalated:.1%}",
        )
    console.print(table)
    best = result.recommended
    if best is None:
        console.print(f"no threshold reaches system accuracy {result.target_accuracy:.2f}")
    else:
        console.print(
            f"recommended threshold: [bold]{best.threshold:.2f}[/bold] reaches {best.system_accuracy:.3f} "
            f"(target {result.target_accuracy:.2f}) escalating {best.escalated:.1%} of items"
            + (
                f"; out-of-scope escalated: {best.out_of_scope_escalated:.1%}"
                if best.out_of_scope_escalated is not None
                else ""
            )
        )


@app.command()
def train(
    specialist: Annotated[str, typer.Argument(help="The classifier to train, e.g. category, intent, classifier.")],
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", "-d", help="Labelled CSV, JSONL or CLINC150-style JSON (repeatable); kept in the store."
        ),
    ] = None,
    text: Annotated[str, typer.Option("--text", help="Column (or key) holding the text.")] = "text",
    label: Annotated[str, typer.Option("--label", help="Column (or key) holding the label.")] = "label",
    split: Annotated[str, typer.Option(help="Split of a CLINC150-style JSON file.")] = "train",
    per_label: Annotated[
        int | None, typer.Option(help="Take at most this many rows per label from the files (stratified).")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Share of examples held out to compare old and new.")] = 0.2,
    min_per_label: Annotated[int, typer.Option(help="Fewer examples than this for a label is an error.")] = 3,
    baseline: Annotated[
        int, typer.Option(help="Held-out items to put to the prompted classifier when no head is active (0: skip).")
    ] = 200,
    force: Annotated[bool, typer.Option(help="Activate the new head even if it measures worse.")] = False,
    activate: Annotated[
        int | None, typer.Option(help="Do not train: make this stored version the active head (roll back).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Train a classifier head on embeddings from files and from escalated answers (the flywheel)."""
    from shoal.evaluation import training_rows

    for path in data or []:
        _input_file(path, "training data", _LABELLED + ", or leave --data out to train on what the store keeps")
    engine = _engine(config)
    engine.trainable(specialist)
    if activate is not None:
        engine.activate_head(specialist, activate)
        console.print(_literal(f"{specialist}: head v{activate} is active"))
        return
    rows = [
        row
        for path in data or []
        for row in training_rows(path, text_column=text, label_column=label, split=split, per_label=per_label)
    ]

    with Progress(
        TextColumn("[bold]train[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        bars: dict[str, TaskID] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(escape(what), total=total)
            progress.update(bars[what], completed=done, total=total)

        async def go() -> TrainReport:
            return await engine.closing(
                engine.train(
                    specialist,
                    files=rows,
                    holdout=holdout,
                    min_per_label=min_per_label,
                    baseline=baseline,
                    force=force,
                    progress=update,
                )
            )

        result = asyncio.run(go())
    if as_json:
        console.print_json(result.model_dump_json())
        return
    _print_training(result)


def _print_training(result: TrainReport) -> None:
    sources = ", ".join(f"{n} {source}" for source, n in sorted(result.by_source.items()))
    console.print(
        f"[bold]{escape(result.specialist)}[/bold]: {result.examples} examples ({escape(sources)}), "
        f"{result.labels} labels; {result.n_train} to fit, {result.n_holdout} held out; "
        f"embeddings of {escape(str(result.embed_model))}: "
        f"{result.embedded} new, {result.reused} from the cache"
        + (f", {result.texts_per_second:.1f} texts/s" if result.texts_per_second else "")
    )
    if result.labels_without_examples:
        missing = ", ".join(result.labels_without_examples[:10])
        more = (
            f" and {len(result.labels_without_examples) - 10} more" if len(result.labels_without_examples) > 10 else ""
        )
        console.print(
            f"[yellow]labels with no examples (the head never answers them):[/yellow] {escape(missing)}{more}"
        )
    table = Table(title=f"held-out comparison (threshold {result.after.threshold:.2f})")
    for column in ("", "n", "accuracy", "macro-F1", "ECE", "AUROC", "escalated", "accepted right"):
        table.add_column(column, justify="right" if column else "left")
    for metrics in (result.before, result.after):
        if metrics is None:
            continue
        table.add_row(
            _literal(metrics.what),
            str(metrics.n),
            f"{metrics.accuracy:.3f}",
            f"{metrics.macro_f1:.3f}",
            f"{metrics.ece:.3f}",
            "-" if metrics.auroc is None else f"{metrics.auroc:.3f}",
            f"{metrics.escalated:.1%}",
            "-" if metrics.accepted_accuracy is None else f"{metrics.accepted_accuracy:.1%}",
        )
    console.print(table)
    state = "[green]activated[/green]" if result.activated else "[yellow]kept inactive[/yellow]"
    console.print(f"head v{result.version} {state}: {escape(result.reason)} (temperature {result.temperature:.2f})")
    if not result.activated:
        console.print(
            _literal(f"activate it anyway with `shoal train {result.specialist} --activate {result.version}`")
        )


@app.command()
def heads(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Trained classifier heads: versions, training data and held-out metrics."""
    engine = _engine(config)
    found = engine.heads()
    if as_json:
        console.print_json(json.dumps([h.model_dump(mode="json") for h in found]))
        return
    if not found:
        console.print("no trained heads yet: `shoal train SPECIALIST --data FILE`")
        return
    models = sorted({h.embed_model for h in found})
    table = Table(title="trained heads", caption=_literal(f"held-out metrics; embeddings of {', '.join(models)}"))
    for column in ("head", "active", "labels", "examples", "accuracy", "ECE", "escalated"):
        table.add_column(column, justify="left" if column in ("head", "active") else "right")
    for h in found:
        after = h.after or {}
        table.add_row(
            _literal(f"{h.specialist} v{h.version}" + (f" ({h.embed_model})" if len(models) > 1 else "")),
            "yes" if h.active else "",
            str(h.labels),
            str(h.examples),
            f"{after.get('accuracy', 0):.3f}",
            f"{after.get('ece', 0):.3f}",
            f"{after.get('escalated', 0):.1%}",
        )
    console.print(table)


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the backends).")] = False,
    config: ConfigOption = None,
) -> None:
    """List each backend: reachable or not (and why), and its models; then how each specialist answers."""
    if ctx.invoked_subcommand is not None:
        return
    engine = _engine(config)
    results = asyncio.run(engine.closing(engine.health()))
    if as_json:
        console.print_json(json.dumps([row.model_dump(mode="json") for row in results]))
        return
    table = Table(title="shoal backends", show_lines=True)
    table.add_column("backend")
    table.add_column("status")
    table.add_column("where")
    table.add_column("models")
    for row in results:
        # the reason and the names come from servers and config: escaped, so `[ollama]` stays in the text
        status = "[green]ready[/green]" if row.reachable else f"[red]unavailable[/red]\n{escape(row.reason)}"
        names = "\n".join(
            escape(m.name)
            + (f" ({m.size_bytes / 1e6:.0f} MB)" if m.size_bytes else "")
            + (f"\n  [dim]{escape(m.detail)}[/dim]" if m.detail else "")
            for m in row.models
        )
        table.add_row(row.backend, status, _literal(row.where), names or "-")
    console.print(table)
    setups = Table(title="specialists")
    for column in ("specialist", "model", "threshold", "answers with"):
        setups.add_column(column, overflow="fold")
    for setup in engine.specialist_settings():
        setups.add_row(_literal(setup.name), _literal(setup.model), f"{setup.threshold:.2f}", _literal(setup.how))
    console.print(setups)
    trained = [f"{h.specialist} v{h.version}" + (" (active)" if h.active else "") for h in engine.heads()]
    if trained:
        console.print(_literal(f"trained heads: {', '.join(trained)} (`shoal heads` for their metrics)"))
    settings = engine.settings
    console.print(
        f"default model: [bold]{escape(settings.default_model)}[/bold]   "
        f"frontier: {escape(settings.frontier_model or '-')}"
    )


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Ollama model to pull, e.g. qwen2.5:3b")],
    config: ConfigOption = None,
) -> None:
    """Pull a model into the Ollama server, with a progress bar."""
    engine = _engine(config)

    async def pull() -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        ) as progress:
            tasks: dict[str, TaskID] = {}
            async for step in engine.pull(name):
                key = step.digest or step.status
                if key not in tasks:
                    tasks[key] = progress.add_task(escape(step.status[:40]), total=step.total or None)
                progress.update(tasks[key], completed=step.completed or 0, total=step.total or None)

    asyncio.run(engine.closing(pull()))
    console.print(f"pulled [bold]{escape(name)}[/bold] into {escape(engine.settings.ollama.host)}")


def _print_error(exc: ShoalError) -> None:
    """The message as it was written (a Text is not read as markup, so `[openai]` stays), on one
    line however narrow the terminal or pipe: soft wrap lets the terminal fold it, not Rich."""
    err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)


def main() -> None:
    """The `shoal` command. A `ShoalError` is a mistake or a failure worded for whoever runs it:
    one line and its exit code. Anything else is a bug in shoal, and shows its traceback."""
    try:
        app()
    except ShoalError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
