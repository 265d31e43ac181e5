"""The `shoal` command: Typer parses, the engine (or, for commands that only read, the
database views) does the work, Rich lays it out.

One module per group of commands:

- `reading`: `runs`, `show`, `heads` and the review list; no engine, no LangGraph (quick start)
- `reviewing`: `review` (list, show one, answer)
- `working`: `ask`, `run`, `resume`, `triage`
- here: `tui`, the one command that loads Textual (lazily, so no other command pays for it)
- `learning`: `eval`, `train`
- `backends`: `models`, `models pull`
- `maintenance`: `prune`
- `serve`: `serve` (the HTTP API; FastAPI loads inside it) and `tokens`
- `workers`: `worker`, `workers`, and `triage --enqueue`'s report
- `common`: consoles, checks on what was typed, cutting, progress for a terminal or a pipe

Help is plain text (`rich_markup_mode=None`): Typer's Rich help loads Markdown and syntax
highlighting, which tripled the time `shoal --help` took. A `ShoalError` ends a command with one
line and its exit code (2 for input mistakes, 1 otherwise); anything else is a bug and shows its
traceback.
"""

from __future__ import annotations

import sys

import typer

from shoal.cli import backends, learning, maintenance, reading, reviewing, serve, workers, working
from shoal.cli.common import ConfigOption, err, settings
from shoal.cli.working import fields_model
from shoal.errors import ShoalError

app = typer.Typer(
    name="shoal",
    help="A graph of small specialist models that knows when to ask a bigger one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
for command in (working.ask, working.run, working.resume, reading.runs, reading.show, reviewing.review):
    app.command()(command)
app.command()(working.triage)
app.command("eval")(learning.eval_)
app.command()(learning.train)
app.command()(reading.heads)
app.command()(maintenance.prune)
app.command()(workers.worker)
app.command()(workers.workers)
app.add_typer(backends.models_app, name="models")
app.command()(serve.serve)
app.add_typer(serve.tokens_app, name="tokens")


@app.command()
def tui(config: ConfigOption = None) -> None:
    """Open the terminal UI: live runs, a run's steps and calls, the review queue."""
    from shoal.tui.app import ShoalApp  # Textual loads only here

    ShoalApp(settings(config)).run()


def print_error(exc: ShoalError) -> None:
    """The message as it was written (a Text is not read as markup, so `[openai]` stays), on one
    line however narrow the terminal or pipe: soft wrap lets the terminal fold it, not Rich."""
    from rich.text import Text

    err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)


def main() -> None:
    """The `shoal` command. A `ShoalError` is a mistake or a failure worded for whoever runs it:
    one line and its exit code. Anything else is a bug in shoal, and shows its traceback."""
    try:
        app()
    except ShoalError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


__all__ = ["app", "fields_model", "main"]
