"""Models: backends and their health; each specialist's model and threshold (editable into
shoal.toml); trained heads (activate one); pulling an Ollama model with a progress bar.

An edit writes only what was typed: a threshold alone leaves the model to `default_model` (writing
the model shown would pin it, and a later change of `default_model` would no longer reach it).
Saved settings apply to work started afterwards; the core keeps running work on its engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, Static

from shoal.engine.views import HeadMetrics
from shoal.errors import ConfigError
from shoal.tui.messages import BackendsChecked, PullFinished, PullProgressed
from shoal.tui.widgets import ShoalScreen, cells

if TYPE_CHECKING:
    from shoal.engine.admin import SpecialistSetup
    from shoal.tui.core import Core


def read_edit(typed: str) -> tuple[str | None, float | None]:
    """What an edit box holds: a threshold (a number), a model (anything else), or both."""
    model: str | None = None
    threshold: float | None = None
    for word in typed.split():
        try:
            number = float(word)
        except ValueError:
            if model is not None:
                raise ConfigError(f"two models given ({model}, {word}): give one model and/or one threshold") from None
            model = word
            continue
        if threshold is not None:
            raise ConfigError(f"two thresholds given ({threshold:g}, {word}): give one, between 0 and 1")
        threshold = number
    if model is None and threshold is None:
        raise ConfigError("nothing typed: give a threshold (0.55), a model (ollama:qwen2.5:3b), or both")
    return model, threshold


class ModelsScreen(ShoalScreen):
    """Backends and their health; each specialist's model and threshold, editable into shoal.toml."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
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
        with Vertical(id="edit-box"):
            yield Static("", id="edit-label", markup=False)
            yield Input(placeholder="a threshold (0.55), a model (ollama:qwen2.5:3b), or both", id="edit")
        yield Input(placeholder="Ollama model to pull, e.g. qwen2.5:3b (enter starts, escape closes)", id="pull")
        yield ProgressBar(id="pull-progress", show_eta=True)
        yield Static("", id="pull-status", markup=False)
        yield Footer()

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.setups: dict[str, SpecialistSetup] = {}
        self.editing: str | None = None  # the specialist the edit box is for

    def on_mount(self) -> None:
        self.query_one("#backends", DataTable).border_title = "backends"
        self.query_one("#specialists", DataTable).border_title = "specialists (e: edit)"
        self.query_one("#heads", DataTable).border_title = "trained heads (a: activate)"
        self.query_one("#backends", DataTable).add_columns("backend", "status", "where", "models")
        self.query_one("#specialists", DataTable).add_columns("specialist", "model", "threshold", "answers with")
        self.query_one("#heads", DataTable).add_columns(
            "head", "active", "trained on", "labels", "held-out acc.", "ECE", "escalated", "before", "embeddings", "at"
        )
        self.query_one("#edit-box").display = False
        self.query_one("#pull", Input).display = False
        self.query_one("#pull-progress", ProgressBar).display = False
        self.query_one("#pull-status", Static).display = False
        self.query_one("#specialists", DataTable).focus()  # what an operator comes here to change
        self.action_refresh()

    def action_refresh(self) -> None:
        engine = self.core.engine
        table = self.query_one("#specialists", DataTable)
        table.clear()
        self.setups = {setup.name: setup for setup in engine.specialist_settings()}
        for setup in self.setups.values():
            model = setup.model if self._model_set(setup.name) else f"{setup.model} (default)"
            table.add_row(*cells(setup.name, model, f"{setup.threshold:.2f}", setup.how), key=setup.name)
        heads = self.query_one("#heads", DataTable)
        heads.clear()
        for h in engine.heads():
            after, before = h.after or HeadMetrics(), h.before
            heads.add_row(
                *cells(
                    f"{h.specialist} v{h.version}",
                    "active" if h.active else "",
                    f"{h.examples} examples",
                    str(h.labels),
                    f"{after.accuracy:.3f}",
                    f"{after.ece:.3f}",
                    f"{after.escalated:.1%}",
                    f"{before.what} {before.accuracy:.3f}" if before else "-",
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

    def _model_set(self, name: str) -> bool:
        """Whether shoal.toml names this specialist's model (else it follows `default_model`)."""
        configured = self.core.settings.specialists.get(name)
        return configured is not None and configured.model is not None

    def _config_path(self) -> Path:
        return self.core.settings.source or Path.cwd() / "shoal.toml"

    def action_edit(self) -> None:
        table = self.query_one("#specialists", DataTable)
        if table.row_count == 0:
            return
        name = str(table.get_row_at(table.cursor_row)[0])
        setup = self.setups[name]
        self.editing = name
        follows = "" if self._model_set(name) else " (default_model)"
        self.query_one("#edit-label", Static).update(
            f"{name} answers with {setup.model}{follows} at threshold {setup.threshold:.2f}. "
            "Type a new threshold, a model, or both (enter saves, escape closes)."
        )
        box = self.query_one("#edit-box")
        box.border_title = f"edit {name}"
        box.border_subtitle = str(self._config_path())
        box.display = True
        self.add_class("editing")
        edit = self.query_one("#edit", Input)
        edit.value = ""
        edit.focus()

    def action_back(self) -> None:
        """Escape closes an open edit or pull box, and only with none open leaves the screen."""
        closed = False
        for box in (self.query_one("#edit-box"), self.query_one("#pull", Input)):
            closed = closed or bool(box.display)
            box.display = False
        self.remove_class("editing")
        if closed:
            self.editing = None
            self.query_one("#specialists", DataTable).focus()
        else:
            self.app.pop_screen()

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
        self.query_one("#pull-status", Static).display = True
        if message.total:
            self.query_one("#pull-progress", ProgressBar).update(total=message.total, progress=message.completed or 0)
        self.query_one("#pull-status", Static).update(f"pull {message.model}: {message.status}")

    @on(PullFinished)
    def _pull_finished(self, message: PullFinished) -> None:
        status = self.query_one("#pull-status", Static)
        status.display = True
        if message.error is not None:
            status.update(f"pull {message.model} failed: {message.error}")
            return
        status.update(f"pulled {message.model}")
        self.check_backends()

    @on(Input.Submitted, "#edit")
    async def _save(self, event: Input.Submitted) -> None:
        from shoal.config import save_specialist

        name = self.editing
        if name is None:
            return
        path = self._config_path()
        try:
            model, threshold = read_edit(event.value)
            save_specialist(path, name, model=model, threshold=threshold)
            await self.core.reload_settings(path)
        except (ValueError, ConfigError) as exc:  # shown in the box's label; the box stays open
            self.query_one("#edit-label", Static).update(f"edit {name}: {exc}")
            self.notify(str(exc), severity="error", markup=False)
            return
        self.query_one("#edit-box").display = False
        self.remove_class("editing")
        self.editing = None
        changed = ", ".join(
            part for part in (model, None if threshold is None else f"threshold {threshold:.2f}") if part
        )
        self.notify(f"{name}: {changed}, saved to {path}; work started from now on uses it", markup=False)
        self.query_one("#specialists", DataTable).focus()
        self.action_refresh()
