"""What the TUI's screens act on, with no Textual in it: the settings, the store, and the engine.

The engine is built on first use, so opening `shoal tui` to watch runs loads no models and not
even LangGraph; `import shoal.tui` stays light.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.config import Settings
from shoal.store import Store

if TYPE_CHECKING:
    from shoal.engine import Shoal
    from shoal.tickets.files import BadRow, TicketRow


class Core:
    """One per app: the screens read `store` and act through `engine`."""

    def __init__(self, settings: Settings | None = None, *, engine: Shoal | None = None) -> None:
        self.settings = settings or Settings.load()
        self._engine = engine
        self.store: Store = engine.store if engine is not None else Store(self.settings.db_path)

    @property
    def engine(self) -> Shoal:
        if self._engine is None:  # built on first use: reading runs needs no models
            from shoal.engine import Shoal

            self._engine = Shoal(self.settings, store=self.store)
        return self._engine

    def reload_settings(self, path: Path) -> Shoal | None:
        """New thresholds and models take effect for work started from now on.

        Returns the engine the new settings replace (None if none was built yet): the caller
        closes it once the work it is running lets go of it."""
        self.settings = Settings.load(path)
        retired = self._engine
        if retired is not None:
            from shoal.engine import Shoal

            self._engine = Shoal(self.settings, store=self.store)
        return retired

    async def read_tickets(self, path: Path) -> list[TicketRow | BadRow]:
        """A ticket file's rows, read off the event loop (raises OSError or a ShoalError)."""
        from shoal.tickets.files import read_tickets

        max_chars = self.settings.tickets.max_chars
        return await asyncio.to_thread(lambda: list(read_tickets(path.expanduser(), max_chars=max_chars)))

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
