"""`shoal review`: the queue (read without the engine), one item whole, and answering it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.common import ConfigOption, console, db_location, engine, literal, print_report
from shoal.cli.reading import print_pending

if TYPE_CHECKING:
    from rich.text import Text

    from shoal.engine.reviews import ReviewDetail


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
    queue: Annotated[
        bool, typer.Option(help="Record the answer and let a `shoal worker` go on with the run, instead of here.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """List pending human decisions, show one, or answer it; its run then goes on at once."""
    import asyncio

    from shoal.engine import views

    if review_id is None:
        print_pending(views.review_lines(db_location(config)))
        return
    shoal = engine(config)
    if answer is None and not accept:
        item = shoal.review_detail(review_id)
        print_review(item, views.ticket_of_run(shoal.store, item.run_id))
        return
    report = asyncio.run(shoal.closing(shoal.answer_review(review_id, answer, accept=accept, who=who, queue=queue)))
    if queue:
        console.print(literal(f"review {review_id} answered; run {report.run_id} is queued for a worker"))
        return
    print_report(report, False)


def whole_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def heading(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="bold")


def print_review(item: ReviewDetail, ticket: str | None) -> None:
    """One review whole: nothing here is cut (a person deciding needs all of it)."""
    from rich.text import Text

    say = console.print
    of_ticket = f" (ticket {ticket})" if ticket else ""
    say(
        Text.assemble(
            (f"review {item.id}", "bold"),
            literal(f"  {item.status}  {item.specialist}, step {item.step_id} of run {item.run_id}{of_ticket}"),
        ),
        soft_wrap=True,
    )
    if item.instruction:
        say(Text.assemble(("question: ", "bold"), literal(item.instruction)), soft_wrap=True)
    say(heading("ticket text:" if ticket else "input:"))
    say(literal(item.input_text), soft_wrap=True)
    say(heading("model answers:"))
    small = whole_json(item.small_answer) if item.small_answer is not None else "no usable answer"
    say(literal(f"  {item.small_model or 'small model'}: {small} (confidence {item.confidence:.2f})"), soft_wrap=True)
    for e in item.evidence:
        say(literal(f"    {e.name} = {e.value:.2f}  {e.detail}"), soft_wrap=True)
    if item.frontier is not None:
        say(
            literal(f"  frontier {item.frontier.model or '-'}: {item.frontier.outcome}. {item.frontier.reason}"),
            soft_wrap=True,
        )
    if item.reasons:  # each reason once, however many rungs repeated it (the engine's reading)
        say(heading("why it is here:"))
        for reason in item.reasons:
            say(literal(f"  {reason}"), soft_wrap=True)
    best = whole_json(item.best_answer) if item.best_answer is not None else "none (no usable model answer)"
    say(Text.assemble(("best answer: ", "bold"), literal(best)), soft_wrap=True)
    if item.answer is not None:
        say(literal(f"answered by {item.answered_by}: {whole_json(item.answer)}"), soft_wrap=True)
        return
    say(literal(f"answer with `shoal review {item.id} --answer ANSWER`: it takes {item.expects}"), soft_wrap=True)
    if item.best_answer is not None:
        say(literal(f"or take the best answer with `shoal review {item.id} --accept`"), soft_wrap=True)
