"""Review queue: decisions waiting for a person; accept the best answer, or type one."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, Static

from shoal.tui.data import question_text
from shoal.tui.messages import AnswerRequested
from shoal.tui.widgets import ShoalScreen, cells, keep_cursor, selected_key


class ReviewScreen(ShoalScreen):
    """Decisions waiting for a person: accept the best answer, or type one (a label or JSON)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "accept", "Accept best answer"),
        Binding("r", "refresh", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="reviews", cursor_type="row")
        yield Static("", id="question", markup=False)
        yield Input(placeholder="answer: a label, or JSON of the specialist's output; enter to send", id="answer")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#reviews", DataTable).add_columns("id", "run", "step", "specialist", "confidence")
        self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    def action_refresh(self) -> None:
        table = self.query_one("#reviews", DataTable)
        selected = selected_key(table)
        table.clear()
        for review in self.store.reviews(status="pending"):
            question = json.loads(review.question_json)
            table.add_row(
                *cells(
                    str(review.id),
                    review.run_id,
                    review.step_id,
                    review.specialist,
                    f"{question.get('confidence', 0):.2f}",
                ),
                key=str(review.id),
            )
        keep_cursor(table, selected)
        if table.row_count == 0:
            self.query_one("#question", Static).update("no decisions waiting")

    def selected(self) -> int | None:
        key = selected_key(self.query_one("#reviews", DataTable))
        return None if key is None else int(key)

    @on(DataTable.RowHighlighted, "#reviews")
    def _show(self, event: DataTable.RowHighlighted) -> None:
        review = self.store.get_review(int(str(event.row_key.value)))
        self.query_one("#question", Static).update(question_text(json.loads(review.question_json)))

    def action_accept(self) -> None:
        review_id = self.selected()
        if review_id is None:
            return
        best = json.loads(self.store.get_review(review_id).question_json).get("best_answer")
        if best is None:
            self.notify("the models gave no answer to accept: type one", severity="warning")
            return
        self.app.post_message(AnswerRequested(review_id, best))

    @on(Input.Submitted, "#answer")
    def _typed(self, event: Input.Submitted) -> None:
        review_id = self.selected()
        if review_id is None or not event.value.strip():
            return
        try:
            value: Any = json.loads(event.value)
        except ValueError:
            value = event.value.strip()  # a bare label
        event.input.value = ""
        self.app.post_message(AnswerRequested(review_id, value))

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Accept the best answer", "For the selected review", self.action_accept)
