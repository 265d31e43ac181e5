"""`Shoal`, the engine: one object per process that owns the store, the checkpointer and the
wiring, and that the faces (CLI, TUI, your code) call. It is a thin facade over parts that each do
one job:

- `wiring.py`: settings -> specialists, planner, ladders, budgets, compiled graphs
- `runs.py`: start, continue, answer and close runs (the only code that invokes a graph)
- `heads.py`: trained classifier heads: attach, train, activate
- `admin.py`: backend health, Ollama pulls, how each specialist is set up
- `reviews.py`: what a person types -> the specialist's answer, one reading for every face
- `views.py`: what the faces show about runs, as typed rows
- tickets: `shoal.tickets.triage.TicketDesk`, handed the run driver

```python
from shoal import Shoal

shoal = Shoal.from_config()
report = shoal.run_sync("Ticket: order 123 arrived broken. Categorise it and get the order id.")
print(report.status, report.answer)
```
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.engine.admin import SpecialistSetup
    from shoal.engine.facade import Shoal
    from shoal.engine.reports import ReviewItem, RunReport
    from shoal.engine.runs import check_task
    from shoal.engine.views import HeadSummary
    from shoal.engine.wiring import Entities
    from shoal.errors import TaskError
    from shoal.tickets.triage import TicketOutcome

# Each name loads its module when first used: `shoal.engine.views`, which the read-only commands
# use, must not bring in the facade and LangGraph by way of this package.
_HOMES = {
    "SpecialistSetup": "shoal.engine.admin",
    "Shoal": "shoal.engine.facade",
    "HeadSummary": "shoal.engine.views",
    "ReviewItem": "shoal.engine.reports",
    "RunReport": "shoal.engine.reports",
    "check_task": "shoal.engine.runs",
    "Entities": "shoal.engine.wiring",
    "TaskError": "shoal.errors",
    "TicketOutcome": "shoal.tickets.triage",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'shoal.engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)


__all__ = [
    "Entities",
    "HeadSummary",
    "ReviewItem",
    "RunReport",
    "Shoal",
    "SpecialistSetup",
    "TaskError",
    "TicketOutcome",
    "check_task",
]
