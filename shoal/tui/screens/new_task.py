"""New task: start a task (planned by the shoal) or a ticket batch; the app runs it.

`triage FILE` takes `shoal triage`'s options (see `shoal.tui.commands`); a mistake in them is
shown here, and the screen stays open to fix it.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from shoal.errors import ShoalError
from shoal.tui.commands import USAGE, is_triage, parse_triage
from shoal.tui.messages import StartRequested, TriageRequested

HELP = (
    "Type a task for the planner, or triage a ticket export (CSV or JSONL):\n\n"
    f"  {USAGE}\n\n"
    "  --text COL     the column holding the ticket text (default: instruction)\n"
    "  --id COL       the column holding the ticket id (default: file name and line)\n"
    "  --limit N      only the first N rows\n"
    "  --out FILE     write every ticket's fields to FILE (.jsonl or .csv) when done\n"
    "  --concurrency N  tickets in flight at once (helps with Ollama)\n"
    "  --force        triage again tickets already done\n\n"
    "e.g. triage examples/tickets.csv --limit 5 --out out.jsonl\n"
    "Enter starts it; watch it on Runs. Escape goes back."
)


class NewTaskScreen(Screen[None]):
    """Start a task (planned by the shoal) or a ticket batch (a CSV/JSONL path and options)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="task text, or: triage examples/tickets.csv --limit 5", id="task")
        yield Static("", id="task-error", markup=False)
        with VerticalScroll(id="help-pane"):
            yield Static(HELP, id="help-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#task-error").display = False
        self.query_one("#task", Input).focus()

    @on(Input.Changed, "#task")
    def _clear_error(self) -> None:
        self.query_one("#task-error").display = False

    @on(Input.Submitted, "#task")
    def _start(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self._error("type a task first")
            return
        if is_triage(text):
            try:
                command = parse_triage(text)
            except ShoalError as exc:
                self._error(str(exc))
                return
            self.app.post_message(TriageRequested(command))
        else:
            self.app.post_message(StartRequested(text))
        self.app.pop_screen()

    def _error(self, text: str) -> None:
        error = self.query_one("#task-error", Static)
        error.update(text)
        error.display = True
