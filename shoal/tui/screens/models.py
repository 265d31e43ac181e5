"""Models: backends and their health; each specialist's model and threshold (editable into
shoal.toml); trained heads (activate one); pulling an Ollama model with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, Static

from shoal.tui.messages import BackendsChecked, PullFinished, PullProgressed
from shoal.tui.widgets import ShoalScreen, cells


class ModelsScreen(ShoalScreen):
    """Backends and their health; each specialist's model and threshold, editable into shoal.toml."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "edit", "Edit model/threshold"),
        Binding("a", "activate", "Activate head version"),
        Binding("p", "pull", "Pull Ollama model"),
        Binding("r", "refresh", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="backends", cursor_type="row")
        yield DataTable(id="specialists", cursor_type="row")
        yield DataTable(id="heads", cursor_type="row")
        yield Input(placeholder="MODEL THRESHOLD, e.g. ollama:qwen2.5:3b 0.7 (enter saves to shoal.toml)", id="edit")
        yield Input(placeholder="Ollama model to pull, e.g. qwen2.5:3b (enter starts)", id="pull")
        yield ProgressBar(id="pull-progress", show_eta=True)
        yield Static("", id="pull-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#backends", DataTable).add_columns("backend", "status", "where", "models")
        self.query_one("#specialists", DataTable).add_columns("specialist", "model", "threshold", "answers with")
        self.query_one("#heads", DataTable).add_columns(
            "head", "active", "trained on", "labels", "held-out acc.", "ECE", "escalated", "before", "embeddings", "at"
        )
        self.query_one("#edit", Input).display = False
        self.query_one("#pull", Input).display = False
        self.query_one("#pull-progress", ProgressBar).display = False
        self.action_refresh()

    def action_refresh(self) -> None:
        engine = self.core.engine
        table = self.query_one("#specialists", DataTable)
        table.clear()
        for setup in engine.specialist_settings():
            table.add_row(*cells(setup.name, setup.model, f"{setup.threshold:.2f}", setup.how), key=setup.name)
        heads = self.query_one("#heads", DataTable)
        heads.clear()
        for h in engine.heads():
            after, before = h.after or {}, h.before or {}
            heads.add_row(
                *cells(
                    f"{h.specialist} v{h.version}",
                    "active" if h.active else "",
                    f"{h.examples} examples",
                    str(h.labels),
                    f"{after.get('accuracy', 0):.3f}",
                    f"{after.get('ece', 0):.3f}",
                    f"{after.get('escalated', 0):.1%}",
                    f"{before.get('what', '')} {before.get('accuracy', 0):.3f}" if before else "-",
                    h.embed_model,
                    h.created_at.strftime("%Y-%m-%d %H:%M"),
                ),
                key=f"{h.specialist}:{h.version}",
            )
        self.check_backends()

    def action_activate(self) -> None:
        heads = self.query_one("#heads", DataTable)
        if heads.row_count == 0:
            self.notify("no trained heads yet: run `shoal train SPECIALIST --data FILE`", severity="warning")
            return
        name, _, version = str(heads.get_row_at(heads.cursor_row)[0]).rpartition(" v")
        try:
            self.core.engine.activate_head(name, int(version))
        except Exception as exc:  # shown to the operator
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(f"{name}: head v{version} is active", markup=False)
        self.action_refresh()

    @work(exclusive=True, group="health")
    async def check_backends(self) -> None:
        self.post_message(BackendsChecked(await self.core.engine.health()))

    @on(BackendsChecked)
    def _checked(self, message: BackendsChecked) -> None:
        table = self.query_one("#backends", DataTable)
        table.clear()
        for row in message.rows:
            models = ", ".join(m.name for m in row.models[:6]) or "-"
            status = "ready" if row.reachable else f"unavailable: {row.reason[:80]}"
            table.add_row(*cells(row.backend, status, row.where, models))

    def action_edit(self) -> None:
        table = self.query_one("#specialists", DataTable)
        if table.row_count == 0:
            return
        _, model, threshold, _ = table.get_row_at(table.cursor_row)
        edit = self.query_one("#edit", Input)
        edit.display = True
        edit.value = f"{model} {threshold}"
        edit.focus()

    def action_pull(self) -> None:
        box = self.query_one("#pull", Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#pull")
    def _pull(self, event: Input.Submitted) -> None:
        model = event.value.strip()
        if model:
            event.input.display = False
            bar = self.query_one("#pull-progress", ProgressBar)
            bar.display = True
            bar.update(total=None, progress=0)
            self.pull(model)

    @work(exclusive=True, group="pull")
    async def pull(self, model: str) -> None:
        try:
            async for step in self.core.engine.pull(model):
                self.post_message(PullProgressed(model, step.status, step.total, step.completed))
        except Exception as exc:  # shown to the operator
            self.post_message(PullFinished(model, str(exc)))
            return
        self.post_message(PullFinished(model))

    @on(PullProgressed)
    def _pull_progressed(self, message: PullProgressed) -> None:
        if message.total:
            self.query_one("#pull-progress", ProgressBar).update(total=message.total, progress=message.completed or 0)
        self.query_one("#pull-status", Static).update(f"pull {message.model}: {message.status}")

    @on(PullFinished)
    def _pull_finished(self, message: PullFinished) -> None:
        status = self.query_one("#pull-status", Static)
        if message.error is not None:
            status.update(f"pull {message.model} failed: {message.error}")
            return
        status.update(f"pulled {message.model}")
        self.check_backends()

    @on(Input.Submitted, "#edit")
    def _save(self, event: Input.Submitted) -> None:
        from shoal.config import save_specialist
        from shoal.errors import ConfigError

        table = self.query_one("#specialists", DataTable)
        name = str(table.get_row_at(table.cursor_row)[0])
        parts = event.value.split()
        try:
            if len(parts) != 2:
                raise ConfigError("give MODEL THRESHOLD, e.g. embedded:smollm2-135m 0.7")
            threshold = float(parts[1])
            path = self.core.settings.source or Path.cwd() / "shoal.toml"
            save_specialist(path, name, model=parts[0], threshold=threshold)
        except (ValueError, ConfigError) as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        retired = self.core.reload_settings(path)
        if retired is not None:  # closed on the app, so that leaving this screen does not cut it short
            self.app.run_worker(retired.aclose(), group="close")
        event.input.display = False
        self.notify(f"{name}: {parts[0]} at {threshold:.2f}, saved to {path}", markup=False)
        self.action_refresh()
