"""What the screens share: a base screen over the core, and keeping a table's cursor on its row
while the table is refilled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual.app import SystemCommand
from textual.screen import Screen
from textual.widgets import DataTable

if TYPE_CHECKING:
    from shoal.store import Store
    from shoal.tui.core import Core


class ShoalScreen(Screen[None]):
    """A screen that reads the store and acts through the engine, both from the app's core."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core

    @property
    def store(self) -> Store:
        return self.core.store

    def commands(self) -> Iterable[SystemCommand]:
        """This screen's entries in the command palette, after the app's own."""
        return ()


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, or None if the table is empty."""
    if table.row_count == 0:
        return None
    return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)


def keep_cursor(table: DataTable[Any], key: str | None) -> None:
    """Put the cursor back on the row `key` after a refill, if that row is still there."""
    if key is not None and key in table.rows:
        table.move_cursor(row=table.get_row_index(key))
