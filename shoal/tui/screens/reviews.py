"""Review queue: decisions waiting for a person; accept the best answer, or type one.

The engine reads what is typed (a label, JSON, or plain text for a one-text output) and says
what is wrong with it (`AnswerError`); this screen shows that message where the answer is typed.
Accepting an answer the models were unsure of (`data.CONFIRM_BELOW`) asks once more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Static

from shoal.tui.data import compact, needs_confirming, review_text
from shoal.tui.messages import AnswerRequested, ReviewAnswered
from shoal.tui.widgets import ShoalScreen, cells, keep_cursor, selected_key

if TYPE_CHECKING:
    from shoal.engine.reviews import ReviewDetail
    from shoal.tui.core import Core


class ReviewScreen(ShoalScreen):
    """Decisions waiting for a person: accept the best answer, or type one (a label or JSON)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "accept", "Accept best answer"),
        Binding("y", "confirm", "Yes, accept", show=False),
        Binding("slash", "type_answer", "Type an answer"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.details: dict[int, ReviewDetail] = {}  # built once per review shown (the engine's reading)
        self.confirming: int | None = None  # the review whose low-confidence accept waits for a/y
        self.typed_for: int | None = None  # the review the answer box's text was sent for

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="reviews", cursor_type="row")
        with VerticalScroll(id="question-pane"):
            yield Static("", id="question", markup=False)
        yield Static("", id="answer-status", markup=False)
        yield Input(placeholder="answer: a label, or JSON of the specialist's output; enter to send", id="answer")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#reviews", DataTable).add_columns("id", "specialist", "conf.", "ticket / run", "best answer")
        self.query_one("#question-pane").border_title = "the question (tab here to scroll)"
        self.query_one("#answer-status").display = False
        self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    def action_refresh(self) -> None:
        table = self.query_one("#reviews", DataTable)
        selected = selected_key(table)
        lines = self.core.review_lines()
        table.clear()
        for line in lines:
            best = "-" if line.best_answer is None else compact(line.best_answer)
            where = f"ticket {line.ticket}" if line.ticket else f"run {line.run_id}"
            table.add_row(
                *cells(str(line.id), line.specialist, f"{line.confidence:.2f}", where, best[:60]),
                key=str(line.id),
            )
        shown = {line.id for line in lines}
        self.details = {k: v for k, v in self.details.items() if k in shown}
        keep_cursor(table, selected)
        if table.row_count == 0:
            self.query_one("#question", Static).update("no decisions waiting")
        elif selected_key(table) != selected:
            self._show(self.selected())

    def selected(self) -> int | None:
        key = selected_key(self.query_one("#reviews", DataTable))
        return None if key is None else int(key)

    def detail(self, review_id: int) -> ReviewDetail:
        """The review as the engine reads it: its evidence, answers and what it takes."""
        if review_id not in self.details:
            self.details[review_id] = self.core.engine.review_detail(review_id)
        return self.details[review_id]

    @on(DataTable.RowHighlighted, "#reviews")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(int(str(event.row_key.value)))

    def _show(self, review_id: int | None) -> None:
        if review_id is None:
            return
        review = self.detail(review_id)
        if self.confirming != review_id:
            self._say(None)
        self.query_one("#question", Static).update(review_text(review))
        self.query_one("#answer", Input).placeholder = f"answer review {review.id}: {review.expects}"

    def _say(self, text: str | None, *, error: bool = False) -> None:
        """The line above the answer box: a confirmation to give, or why an answer was refused."""
        if text is None:
            self.confirming = None
        status = self.query_one("#answer-status", Static)
        status.display = text is not None
        status.set_class(error, "error")
        status.update(text or "")

    def action_accept(self) -> None:
        review_id = self.selected()
        if review_id is None:
            return
        review = self.detail(review_id)
        if review.best_answer is None:
            self._say("the models gave no usable answer to accept: type one below", error=True)
            return
        if needs_confirming(review) and self.confirming != review.id:
            self._say(
                f"accept {compact(review.best_answer)} at confidence {review.confidence:.2f}? "
                "a or y: yes, escape: no (it becomes a labelled example)"
            )
            self.confirming = review.id
            return
        self._say(None)
        self.app.post_message(AnswerRequested(review.id, accept=True))

    def action_confirm(self) -> None:
        if self.confirming is not None and self.confirming == self.selected():
            self.action_accept()

    def action_back(self) -> None:
        """Escape takes back a confirmation first; with none pending it leaves the queue."""
        if self.confirming is not None:
            self._say(None)
            return
        self.app.pop_screen()

    def action_type_answer(self) -> None:
        self.query_one("#answer", Input).focus()

    @on(Input.Submitted, "#answer")
    def _typed(self, event: Input.Submitted) -> None:
        review_id = self.selected()
        if review_id is None or not event.value.strip():
            return
        self._say(None)
        self.typed_for = review_id  # kept in the box until the engine takes it, to fix a typo
        self.app.post_message(AnswerRequested(review_id, event.value))

    def answered(self, message: ReviewAnswered) -> None:
        """The engine took an answer (the queue refreshes) or refused it (its reason shows here)."""
        if message.error is not None:
            self._say(f"review {message.review_id}: {message.error}", error=True)
            return
        if message.review_id == self.typed_for:
            self.query_one("#answer", Input).value = ""
        self.action_refresh()

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Accept the best answer", "For the selected review", self.action_accept)
