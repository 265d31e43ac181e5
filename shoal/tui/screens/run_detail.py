"""Run: one run's steps with confidence and evidence, its escalations, and every model call with
its prompt and reply. Everything comes from the engine's `run_detail` view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, Tree

from shoal.status import RunStatus
from shoal.tui.data import evidence_lines, exchange_text, one_line
from shoal.tui.messages import CancelRequested, RetryRequested
from shoal.tui.widgets import ShoalScreen, cells, label

if TYPE_CHECKING:
    from shoal.engine.views import RunDetail
    from shoal.tui.core import Core

RETRYABLE = (RunStatus.FAILED, RunStatus.STOPPED)


class RunScreen(ShoalScreen):
    """One run: its steps with confidence and evidence, escalations, and every model call."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "refresh", "Refresh"),
        Binding("t", "retry", "Retry failed steps"),
        Binding("c", "cancel", "Cancel run"),
    ]

    def __init__(self, core: Core, run_id: str) -> None:
        super().__init__(core)
        self.run_id = run_id
        self.detail: RunDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="run-header", markup=False)
        with Horizontal(id="run-body"):
            yield Tree("plan", id="steps")
            with Vertical(id="call-side"):
                yield DataTable(id="calls", cursor_type="row")
                # one scrolling pane: the reply on top, so a long prompt never hides it
                with VerticalScroll(id="detail-pane"):
                    yield Static(
                        "arrows on the calls above show a call's reply and prompt", id="call-reply", markup=False
                    )
                    yield Static("", id="call-prompt", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#calls", DataTable).add_columns("#", "step", "model", "tokens", "latency", "cost", "error")
        self.query_one("#detail-pane").border_title = "call"
        self.action_refresh()

    def action_refresh(self) -> None:
        self.detail = detail = self.core.run_detail(self.run_id)
        run = detail.run
        self.query_one("#run-header", Static).update(
            f"run {run.id} · {run.workflow} · {run.status} · {run.model_calls} calls · {run.escalations} escalations"
            f" · ${run.cost_usd:.4f}\n{one_line(run.task, 300)}" + (f"\nerror: {run.error}" if run.error else "")
        )
        tree = self.query_one("#steps", Tree)
        tree.clear()
        tree.root.expand()
        for step in detail.steps:
            confidence = "-" if step.confidence is None else f"{step.confidence:.2f}"
            node = tree.root.add(
                label(f"{step.step_id} · {step.specialist} · {step.status} · {confidence} · {step.answered_by or ''}"),
                data=step.step_id,
                expand=True,
            )
            node.add_leaf(label(f"model {step.model or '-'}"))
            for line in evidence_lines(step.evidence):
                node.add_leaf(label(line))
            if step.output_json:
                node.add_leaf(label(f"output {step.output_json[:200]}"))
            if step.error:
                node.add_leaf(label(f"error {one_line(step.error, 200)}"))
            for item in (e for e in detail.escalations if e.step_id == step.step_id):
                after = "-" if item.confidence_after is None else f"{item.confidence_after:.2f}"
                rung = f"↑ {item.rung} {item.outcome} {item.confidence_before:.2f}→{after} ${item.cost_usd:.4f}"
                node.add_leaf(label(f"{rung}: {item.explained}"))
        calls = self.query_one("#calls", DataTable)
        calls.clear()
        for call in detail.calls:
            calls.add_row(
                *cells(
                    str(call.id),
                    call.step_id or "-",
                    call.model,
                    f"{call.tokens_in}+{call.tokens_out}",
                    f"{call.latency_s:.2f}s",
                    f"${call.cost_usd:.4f}",
                    one_line(call.error or "", 60),
                ),
                key=str(call.id),
            )

    def action_retry(self) -> None:
        run = self.core.run_detail(self.run_id).run
        if run.status not in RETRYABLE:
            self.notify(
                f"run {run.id} is {run.status}: only failed or stopped runs are retried",
                severity="warning",
                markup=False,
            )
            return
        self.app.post_message(RetryRequested(run.id))

    def action_cancel(self) -> None:
        self.app.post_message(CancelRequested(self.run_id))

    @on(DataTable.RowHighlighted, "#calls")
    def _show_call(self, event: DataTable.RowHighlighted) -> None:
        call_id = int(str(event.row_key.value))
        call = next((c for c in self.detail.calls if c.id == call_id), None) if self.detail else None
        if call is None:
            return
        reply, prompt = exchange_text(self.core.exchange(call))
        self.query_one("#call-reply", Static).update(f"reply ({call.model}, call {call.id}):\n{reply}\n")
        self.query_one("#call-prompt", Static).update(f"prompt:\n{prompt}")
        pane = self.query_one("#detail-pane", VerticalScroll)
        pane.border_title = f"call {call.id} · {call.step_id or '-'} (tab here, then arrows scroll)"
        pane.scroll_home(animate=False)

    @on(Tree.NodeHighlighted, "#steps")
    def _step_calls(self, event: Tree.NodeHighlighted[str]) -> None:
        """Moving through the steps moves the calls' cursor to that step's first call."""
        if self.detail is None or event.node.data is None:
            return
        first = next((i for i, c in enumerate(self.detail.calls) if c.step_id == event.node.data), None)
        if first is not None:
            self.query_one("#calls", DataTable).move_cursor(row=first)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Retry this run", "Resume a failed or stopped run", self.action_retry)
        yield SystemCommand("Cancel this run", "Stop a run started in this window", self.action_cancel)
