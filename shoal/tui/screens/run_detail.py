"""Run: one run's steps with confidence and evidence, its escalations, and every model call."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static, Tree

from shoal.tui.data import evidence_text, pretty
from shoal.tui.messages import CancelRequested, RetryRequested
from shoal.tui.widgets import ShoalScreen, cells, label

if TYPE_CHECKING:
    from shoal.tui.core import Core


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

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="run-header", markup=False)
        with Horizontal():
            yield Tree("plan", id="steps")
            with Vertical():
                yield DataTable(id="calls", cursor_type="row")
                yield Static("", id="detail-pane", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#calls", DataTable).add_columns("#", "step", "model", "tokens", "latency", "cost", "error")
        self.action_refresh()

    def action_refresh(self) -> None:
        run = self.store.find_run(self.run_id)
        self.query_one("#run-header", Static).update(
            f"run {run.id} · {run.workflow} · {run.status} · {run.model_calls} calls · {run.escalations} escalations"
            f" · ${run.cost_usd:.4f}\n{' '.join(run.task.split())[:300]}"
            + (f"\nerror: {run.error}" if run.error else "")
        )
        tree = self.query_one("#steps", Tree)
        tree.clear()
        tree.root.expand()
        escalations = self.store.escalations(run.id)
        for step in self.store.steps(run.id):
            confidence = "-" if step.confidence is None else f"{step.confidence:.2f}"
            node = tree.root.add(
                label(f"{step.step_id} · {step.specialist} · {step.status} · {confidence} · {step.answered_by or ''}"),
                data={"kind": "step", "id": step.step_id},
                expand=True,
            )
            node.add_leaf(label(f"model {step.model or '-'}"))
            for line in evidence_text(step.evidence_json).splitlines():
                node.add_leaf(label(line.strip()))
            if step.output_json:
                node.add_leaf(label(f"output {step.output_json[:200]}"))
            for item in (e for e in escalations if e.step_id == step.step_id):
                after = "-" if item.confidence_after is None else f"{item.confidence_after:.2f}"
                rung = f"↑ {item.rung} {item.outcome} {item.confidence_before:.2f}→{after} ${item.cost_usd:.4f}"
                node.add_leaf(label(f"{rung}: {item.reason}"))
        calls = self.query_one("#calls", DataTable)
        calls.clear()
        for call in self.store.model_calls(run.id):
            calls.add_row(
                *cells(
                    str(call.id),
                    call.step_id or "-",
                    call.model,
                    f"{call.tokens_in}+{call.tokens_out}",
                    f"{call.latency_s:.2f}s",
                    f"${call.cost_usd:.4f}",
                    (call.error or "")[:60],
                ),
                key=str(call.id),
            )

    def action_retry(self) -> None:
        run = self.store.find_run(self.run_id)
        if run.status not in ("failed", "stopped"):
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
        call = next((c for c in self.store.model_calls(self.run_id) if c.id == call_id), None)
        if call is not None:
            reply = call.reply_json or json.dumps({"error": call.error, "raw_text": call.raw_text})
            self.query_one("#detail-pane", Static).update(
                f"prompt:\n{pretty(call.request_json)}\n\nreply:\n{pretty(reply)}"
            )

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Retry this run", "Resume a failed or stopped run", self.action_retry)
        yield SystemCommand("Cancel this run", "Stop a run started in this window", self.action_cancel)
