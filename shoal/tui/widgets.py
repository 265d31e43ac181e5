"""What the screens share: a base screen over the core, keeping a table's cursor on its row while
the table is refilled, and showing stored text as it is.

DataTable cells and Tree labels given a `str` parse it as Rich markup, and a Static parses Textual
markup. What the screens show comes from tickets, tasks, models and error messages: "[ollama]"
would vanish, and a ticket saying "price [/b] is wrong" would raise MarkupError and close the app.
So cells and labels go in as `Text`, and Statics that show stored text are built `markup=False`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.text import Text
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


def cells(*values: str) -> list[Text]:
    """A table row's cells, shown as they are (as DataTable shows a one-line str cell, less markup)."""
    return [Text(value, no_wrap=True, end="") for value in values]


def label(value: str) -> Text:
    """A tree node's label, shown as it is."""
    return Text(value)
