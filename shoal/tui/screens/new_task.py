"""New task: start a task (planned by the shoal) or a ticket batch; the app runs it."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from shoal.tui.messages import StartRequested


class NewTaskScreen(Screen[None]):
    """Start a task (planned by the shoal) or a ticket batch (a CSV/JSONL path)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "Type a task for the planner, or 'triage PATH' to triage a ticket file (CSV/JSONL, text column "
            "'instruction'). Enter starts it; watch it on Runs.",
            id="help-text",
        )
        yield Input(placeholder="task text, or: triage examples/tickets.csv", id="task")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#task", Input).focus()

    @on(Input.Submitted, "#task")
    def _start(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.notify("type a task first", severity="warning")
            return
        self.app.post_message(StartRequested(text))
        self.app.pop_screen()
