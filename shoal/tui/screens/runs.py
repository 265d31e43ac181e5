"""Runs: every run and ticket batch item, newest first, refreshed every second."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from shoal.status import RunStatus, WorkStatus
from shoal.tui.data import STATUSES, one_line
from shoal.tui.screens.run_detail import RunScreen
from shoal.tui.widgets import ShoalScreen, cells, keep_cursor, selected_key

if TYPE_CHECKING:
    from shoal.tui.core import Core


class RunsScreen(ShoalScreen):
    """Every run and ticket batch item, newest first, refreshed every second."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open run"),
        Binding("f", "filter", "Filter status"),
        Binding("v", "app.reviews", "Review queue"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.status_filter: RunStatus | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="filter-bar")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "workflow", "status", "steps", "esc.", "reviews", "cost", "task")
        self.action_refresh()
        self.set_interval(1.0, self.action_refresh)

    def action_refresh(self) -> None:
        bar = self.query_one("#filter-bar", Static)
        table = self.query_one("#runs", DataTable)
        selected = selected_key(table)
        table.clear()
        for line in self.core.run_lines(self.status_filter):
            table.add_row(
                *cells(
                    line.id,
                    line.workflow,
                    line.status,
                    f"{line.steps_done}/{line.steps_planned}",
                    str(line.escalations),
                    str(line.reviews_pending) if line.reviews_pending else "",
                    f"${line.cost_usd:.4f}",
                    one_line(line.task, 80),
                ),
                key=line.id,
            )
        keep_cursor(table, selected)
        shown = self.status_filter or "all"
        bar.update(f"status: {shown}  ({table.row_count} runs)  f: next filter, enter: open{workers(self.core)}")

    def action_filter(self) -> None:
        position = STATUSES.index(self.status_filter)
        self.show_status(STATUSES[(position + 1) % len(STATUSES)])

    def show_status(self, status: RunStatus | None) -> None:
        self.status_filter = status
        self.action_refresh()

    def action_open(self) -> None:
        run_id = selected_key(self.query_one("#runs", DataTable))
        if run_id is not None:
            self.app.push_screen(RunScreen(self.core, run_id))

    @on(DataTable.RowSelected, "#runs")
    def _open_row(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(RunScreen(self.core, str(event.row_key.value)))

    def commands(self) -> Iterable[SystemCommand]:
        for status in STATUSES:
            label = status or "all"
            yield SystemCommand(
                f"Show {label} runs", f"Filter the runs by status: {label}", partial(self.show_status, status)
            )


def workers(core: Core) -> str:
    """The workers' line under the filter (only when this database has a work queue in use)."""
    board = core.work_board()
    if not board.workers and not any(board.queue.values()):
        return ""
    live = board.live
    doing = "; ".join(f"{w.id.split(':')[0]}: {w.current}" for w in live if w.current)
    queued = board.queue.get(WorkStatus.QUEUED, 0)
    return f"\nworkers: {len(live)} live, {queued} queued" + (f" ({doing})" if doing else "")
