"""What the TUI's screens act on, with no Textual in it: the settings, the store, and the engine.

What the screens list (runs, a run's steps and calls, the review queue) comes from the engine's
read-only views (`shoal.engine.views`), which load without LangGraph. The engine itself is
imported off the event loop and built on first use, so opening `shoal tui` paints at once and
loads no models. Work that outlives a call (a run, a triage batch, the run an answer
resumes) holds the engine through `lease()`: reloading the settings (the Models screen) gives
work started afterwards a new engine, and closes the old one only once the last work using it
has finished; closing it earlier cut the checkpointer's connection under a running triage.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.config import Settings
from shoal.engine import views
from shoal.status import RunStatus
from shoal.store import Store

if TYPE_CHECKING:
    from shoal.engine import Shoal
    from shoal.tickets.files import BadRow, TicketRow
    from shoal.tui.commands import TriageCommand


def _build(settings: Settings, store: Store) -> Shoal:
    from shoal.engine import Shoal

    return Shoal(settings, store=store)


class Core:
    """One per app: the screens read through `engine` and act through it."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: Shoal | None = None,
        build: Callable[[Settings, Store], Shoal] | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self._engine = engine
        # how an engine is made from settings over the app's one store (tests give a scripted router)
        self._build = build or _build
        self.store: Store = engine.store if engine is not None else Store(self.settings.db_path)
        self._users: dict[int, int] = {}  # id(engine) -> work in flight on it
        self._retired: list[Shoal] = []  # replaced engines that work still uses

    async def start(self) -> None:
        """Import the engine on a thread (LangGraph and the rest take seconds), then build it."""
        if self._engine is None:
            await asyncio.to_thread(importlib.import_module, "shoal.engine")
            _ = self.engine

    @property
    def engine(self) -> Shoal:
        """The engine for work starting now (built on first use, from the current settings)."""
        if self._engine is None:
            self._engine = self._build(self.settings, self.store)
        return self._engine

    # --- what the screens show: the engine's views, read from the file --------------------------

    def run_lines(self, status: RunStatus | None = None) -> list[views.RunLine]:
        return views.run_lines(self.store, status=status)

    def work_board(self) -> views.WorkBoard:
        return views.work_board(self.store, lease_s=self.settings.workers.lease_s)

    def run_detail(self, run_id: str) -> views.RunDetail:
        return views.run_detail(self.store, run_id)

    def review_lines(self) -> list[views.ReviewLine]:
        return views.review_lines(self.store)

    @staticmethod
    def exchange(call: views.CallLine) -> views.Exchange:
        return views.exchange(call)

    # --- the engine, for work ----------------------------------------------------------------

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Shoal]:
        """The current engine, kept open until the block ends even if the settings are reloaded."""
        engine = self.engine
        key = id(engine)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            yield engine
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                if any(old is engine for old in self._retired):
                    self._retired = [old for old in self._retired if old is not engine]
                    await engine.aclose()

    def in_use(self, engine: Shoal) -> bool:
        return bool(self._users.get(id(engine)))

    async def reload_settings(self, path: Path) -> None:
        """Read the settings again: new thresholds and models apply to work started from now on.

        The engine they replace is closed now if nothing uses it, else when its last work ends.
        The database stays the one this window opened."""
        self.settings = Settings.load(path).model_copy(update={"db_path": self.store.url or self.store.path})
        retired, self._engine = self._engine, None
        if retired is None:
            return
        if self.in_use(retired):
            self._retired.append(retired)
        else:
            await retired.aclose()

    async def read_tickets(self, command: TriageCommand) -> list[TicketRow | BadRow]:
        """A ticket file's rows as the command asks (columns, limit), read off the event loop.

        Raises OSError or a ShoalError."""
        from shoal.tickets.files import read_tickets

        max_chars = self.settings.tickets.max_chars

        def read() -> list[TicketRow | BadRow]:
            rows = read_tickets(
                command.file, text_column=command.text_column, id_column=command.id_column, max_chars=max_chars
            )
            return list(itertools.islice(rows, command.limit))

        return await asyncio.to_thread(read)

    async def aclose(self) -> None:
        """Close every engine (the app is ending: its workers are cancelled)."""
        engines = [*self._retired, *([self._engine] if self._engine is not None else [])]
        self._retired, self._engine = [], None
        for engine in engines:
            await engine.aclose()
