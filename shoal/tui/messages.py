"""The TUI's messages, typed: what workers report and what screens ask of the app.

Workers never touch a widget: they post one of these, and a handler on the screen or app that
owns the widgets updates them. Screens never call the app either: they post a request, and the
app, which owns the long-running work (it outlives the screen that started it), acts on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from shoal.models.base import BackendHealth
    from shoal.status import RunStatus
    from shoal.tui.commands import TriageCommand

# --- screens -> app ------------------------------------------------------------------------


class StartRequested(Message):
    """Run a task for the planner in the background."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class TriageRequested(Message):
    """Triage a ticket file in the background, as `shoal triage` would with these options."""

    def __init__(self, command: TriageCommand) -> None:
        super().__init__()
        self.command = command


class RetryRequested(Message):
    """Resume a failed or stopped run."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class AnswerRequested(Message):
    """Answer a pending review with what a person typed (the engine reads it), or `accept` the
    models' best answer; its run then resumes."""

    def __init__(self, review_id: int, text: str | None = None, *, accept: bool = False) -> None:
        super().__init__()
        self.review_id = review_id
        self.text = text
        self.accept = accept


class CancelRequested(Message):
    """Cancel a run, if this window started it."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


# --- workers -> their owner -------------------------------------------------------------


class WorkFinished(Message):
    """A task, retry or ticket batch came to an end (done, or waiting for a person)."""

    def __init__(self, what: str, summary: str) -> None:
        super().__init__()
        self.what = what
        self.summary = summary


class WorkFailed(Message):
    """A task, retry or ticket batch could not start or stopped on an error."""

    def __init__(self, text: str, timeout: float | None = None) -> None:
        super().__init__()
        self.text = text
        self.timeout = timeout


class ReviewAnswered(Message):
    """An answer reached the engine; the run it resumed is now `status`, or `error` says why the
    answer was not taken (then `status` is None)."""

    def __init__(self, review_id: int, status: RunStatus | None, error: str | None = None) -> None:
        super().__init__()
        self.review_id = review_id
        self.status = status
        self.error = error


class BackendsChecked(Message):
    """Every backend's health, one quick attempt each."""

    def __init__(self, rows: list[BackendHealth]) -> None:
        super().__init__()
        self.rows = rows


class PullProgressed(Message):
    """A progress line of an Ollama pull."""

    def __init__(self, model: str, status: str, total: int | None, completed: int | None) -> None:
        super().__init__()
        self.model = model
        self.status = status
        self.total = total
        self.completed = completed


class PullFinished(Message):
    """An Ollama pull ended: the model is there, or `error` says why not."""

    def __init__(self, model: str, error: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.error = error
