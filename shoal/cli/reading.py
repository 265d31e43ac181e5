"""Commands that only read the database: `runs`, `show`, `heads`, and the review queue.

They read through `shoal.engine.views` on a plain sqlite3 connection: no engine, no LangGraph,
no model stack, so they answer in a fraction of a second. Tables keep ids whole at 80 columns
(ids and numbers never wrap; free text gives way), and whatever is cut ends in "…" with a line
saying how to see all of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.common import ConfigOption, console, cut, db_location, escape, literal, one_line, print_json
from shoal.errors import UsageError
from shoal.status import RunStatus

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from shoal.engine.views import ReviewLine, RunDetail

OUTPUT_CHARS = 300  # a step's answer in `shoal show`
EVIDENCE_CHARS = 400
ANSWER_CHARS = 120  # an answer in the review list
EXCERPT_CHARS = 80  # a ticket's text in the review list


def table(title: str | Text | None = None, **options: Any) -> Table:
    """A table with a rule under its header and two spaces between columns, nothing more: at 80
    columns every character of border is one less for the text."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), **options)


def width_left(grid: Table, rows: list[list[str]], least: int = 8) -> int:
    """The width the one free column of `grid` gets once its fixed columns (whose cells are in
    `rows`, in column order, the free one left out) take what they need."""
    fixed = [max([len(str(column.header)), *(len(row[i]) for row in rows)]) for i, column in enumerate(grid.columns)]
    gaps = 2 * len(grid.columns) + 1  # a column's right padding and the blank rule between it and the next
    return max(least, console.width - sum(fixed) - gaps)


def fixed(grid: Table, *headers: str, right: bool = False) -> None:
    """Columns whose cells are ids, statuses or numbers: never wrapped, never cut."""
    for header in headers:
        grid.add_column(header, no_wrap=True, min_width=len(header), justify="right" if right else "left")


def free(grid: Table, *headers: str, ratio: int = 1) -> None:
    """Columns of free text: they take the width left, folding long words rather than losing them."""
    for header in headers:
        grid.add_column(header, overflow="fold", ratio=ratio, min_width=len(header))


def run_status(value: str | None) -> RunStatus | None:
    """`--status` as a `RunStatus`, or a `UsageError` naming the valid ones."""
    if value is None:
        return None
    try:
        return RunStatus(value.strip().lower())
    except ValueError:
        raise UsageError(f"--status {value!r} is not a run status; use one of: {', '.join(RunStatus)}") from None


def runs(
    status: Annotated[
        str | None, typer.Option(help=f"Only runs with this status: {', '.join(RunStatus)}.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON (nothing cut).")] = False,
    config: ConfigOption = None,
) -> None:
    """Recent runs."""
    from shoal.engine import views

    chosen = run_status(status)
    path = db_location(config)
    rows = views.run_summaries(path, status=chosen, limit=limit)
    if as_json:
        print_json(json.dumps(views.as_json(rows), ensure_ascii=False))
        return
    wide = console.width >= 100  # at 80 columns the task needs the room the time and seconds take
    today = datetime.now().astimezone().date()
    cells = []
    for row in rows:
        started = row.created_at.replace(tzinfo=UTC).astimezone()  # stored in UTC, shown in local time
        when = "%m-%d %H:%M" if wide else ("%H:%M" if started.date() == today else "%m-%d")
        numbers = [str(row.model_calls), str(row.escalations), f"{row.tokens_in + row.tokens_out:,}"]
        cells.append(
            [row.id, row.status, started.strftime(when), *numbers, f"${row.cost_usd:.4f}"]
            + ([f"{row.seconds:.1f}"] if wide else [])
        )
    grid = table(literal(f"runs in {path}"))
    fixed(grid, "id", "status", "started")
    fixed(grid, "calls", "esc", "tokens", "cost", *(["secs"] if wide else []), right=True)
    room = width_left(grid, cells)
    grid.add_column("task", no_wrap=True, min_width=4)  # last: one line a run, cut to what is left
    cuts = 0
    for row, line in zip(rows, cells, strict=True):
        task, was_cut = cut(one_line(row.task), room)
        cuts += was_cut
        grid.add_row(*line, literal(task))
    console.print(grid)
    if not rows:
        console.print("no runs" + (f" with status {chosen}" if chosen else "") + " yet")
    if cuts:
        console.print("tasks cut to fit: `shoal show RUN` or `shoal runs --json` shows them whole", soft_wrap=True)


def show(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    calls: Annotated[bool, typer.Option("--calls", help="Print every model call's prompt and reply.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON (nothing cut).")] = False,
    config: ConfigOption = None,
) -> None:
    """A run's steps with confidence and evidence, its escalations and its model calls."""
    from shoal.engine import views

    detail = views.run_detail(db_location(config), run_id)
    if as_json:
        print_json(json.dumps(views.as_json(detail), ensure_ascii=False))
        return
    print_run(detail, calls)


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_run(detail: RunDetail, with_calls: bool) -> None:
    from rich.text import Text

    run = detail.run
    console.print(
        f"[bold]run {run.id}[/bold]  {run.status}  {escape(run.workflow)}  {run.created_at:%Y-%m-%d %H:%M:%S}"
    )
    task, task_cut = cut(run.task, 500)
    console.print(literal(f"task: {task}"))
    if run.error:
        console.print(Text(f"error: {run.error}", style="red"))
    steps = table("steps", show_lines=True)
    fixed(steps, "step", "status", "conf", "first", "by")
    free(steps, "output", "evidence")
    cuts = 0
    for step in detail.steps:
        output, output_cut = cut(step.output_json or step.error or "", OUTPUT_CHARS)
        evidence, evidence_cut = cut(
            "; ".join(f"{e.name}={e.value:.2f} {e.detail}" for e in step.evidence), EVIDENCE_CHARS
        )
        cuts += output_cut + evidence_cut
        name = Text.assemble(step.step_id, ("\n" + step.specialist, "dim") if step.specialist != step.step_id else "")
        steps.add_row(
            name,
            step.status,
            score(step.confidence),
            score(step.first_confidence),
            literal(step.answered_by or "-"),
            literal(output),
            literal(evidence),
        )
    console.print(steps)
    if detail.escalations:
        grid = table("escalations")
        fixed(grid, "step", "rung", "outcome", "before", "after", "model")
        fixed(grid, "cost", right=True)
        free(grid, "reason")
        for e in detail.escalations:
            grid.add_row(
                literal(e.step_id or "-"),
                e.rung,
                e.outcome,
                f"{e.confidence_before:.2f}",
                score(e.confidence_after),
                literal(e.model or "-"),
                f"${e.cost_usd:.4f}",
                literal(e.explained),
            )
        console.print(grid)
    grid = table("model calls")
    fixed(grid, "#", "step")
    free(grid, "model")
    fixed(grid, "tokens", "secs", "cost", "conf", right=True)
    free(grid, "error")
    for call in detail.calls:
        grid.add_row(
            str(call.id),
            literal(call.step_id or "-"),
            literal(call.model),
            f"{call.tokens_in}+{call.tokens_out}",
            f"{call.latency_s:.2f}",
            f"${call.cost_usd:.4f}",
            score(call.confidence),
            literal(call.error or ""),
        )
    console.print(grid)
    if with_calls:
        for call in detail.calls:
            console.rule(literal(f"call {call.id}: {call.model} (step {call.step_id})"))
            print_json(call.request_json)
            print_json(call.reply)
    console.print(
        f"{run.model_calls} model calls, {run.escalations} escalations, {run.tokens_in}+{run.tokens_out} tokens, "
        f"${run.cost_usd:.4f} frontier, {run.seconds:.1f}s",
        soft_wrap=True,
    )
    if cuts or task_cut:
        what = f"answers cut at {OUTPUT_CHARS} characters, evidence at {EVIDENCE_CHARS}"
        console.print(literal(f"{what}: `shoal show {run.id} --json` (or `--calls`) shows them whole"), soft_wrap=True)


def short_json(value: Any, limit: int) -> tuple[str, bool]:
    return cut(json.dumps(value, ensure_ascii=False), limit)


def print_pending(pending: list[ReviewLine]) -> None:
    """The queue: per review its id, ticket (or run), step and confidence in columns that never
    wrap, then the ticket text, the best answer and why it is here, each cut to a few lines."""
    from rich.text import Text

    if not pending:
        console.print("no reviews waiting")
        return
    grid = table("waiting for a person", show_lines=True)
    fixed(grid, "id", "ticket / run", "step", "conf")
    grid.add_column("text · best answer · why", overflow="fold", ratio=1)
    cuts = 0
    for item in pending:
        text, text_cut = cut(one_line(item.text), EXCERPT_CHARS)
        best, best_cut = short_json(item.best_answer, ANSWER_CHARS) if item.best_answer is not None else ("none", False)
        cuts += text_cut + best_cut
        where = item.run_id if item.ticket is None else f"{item.ticket}\n{item.run_id}"
        step = item.step_id if item.specialist == item.step_id else f"{item.step_id}\n({item.specialist})"
        detail = Text.assemble(
            literal(text),
            "\n",
            ("answer: ", "bold"),
            literal(best),
            "\n",
            ("why: ", "bold"),
            literal("; ".join(item.reasons)),
        )
        grid.add_row(str(item.id), literal(where), literal(step), f"{item.confidence:.2f}", detail)
    console.print(grid)
    if cuts:
        console.print(
            f"texts cut at {EXCERPT_CHARS} characters and answers at {ANSWER_CHARS}: `shoal review ID` shows one whole",
            soft_wrap=True,
        )
    console.print("see one with `shoal review ID`, answer with `--answer ANSWER` or `--accept`", soft_wrap=True)


def heads(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Trained classifier heads: versions, training data and held-out metrics."""
    from shoal.engine import views
    from shoal.engine.views import HeadMetrics

    found = views.head_summaries(db_location(config))
    if as_json:
        print_json(json.dumps(views.as_json(found), ensure_ascii=False))
        return
    if not found:
        console.print("no trained heads yet: `shoal train SPECIALIST --data FILE`")
        return
    models = sorted({h.embed_model for h in found})
    grid = table("trained heads", caption=literal(f"held-out metrics; embeddings of {', '.join(models)}"))
    fixed(grid, "head", "active")
    fixed(grid, "labels", "examples", "accuracy", "ECE", "escalated", right=True)
    for h in found:
        after = h.after or HeadMetrics()
        grid.add_row(
            literal(f"{h.specialist} v{h.version}" + (f" ({h.embed_model})" if len(models) > 1 else "")),
            "yes" if h.active else "",
            str(h.labels),
            str(h.examples),
            f"{after.accuracy:.3f}",
            f"{after.ece:.3f}",
            f"{after.escalated:.1%}",
        )
    console.print(grid)
