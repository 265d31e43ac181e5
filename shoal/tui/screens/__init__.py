"""The TUI's five screens, one module each."""

from shoal.tui.screens.models import ModelsScreen
from shoal.tui.screens.new_task import NewTaskScreen
from shoal.tui.screens.reviews import ReviewScreen
from shoal.tui.screens.run_detail import RunScreen
from shoal.tui.screens.runs import RunsScreen

__all__ = ["ModelsScreen", "NewTaskScreen", "ReviewScreen", "RunScreen", "RunsScreen"]
