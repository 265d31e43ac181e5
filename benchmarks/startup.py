"""How long a fresh `shoal` process takes, from start to exit, for the commands an operator
types most: `import shoal`, `--help`, and the commands that only read the database.

The database is a temporary file filled first (task runs, triaged tickets, reviews waiting, a
trained head) by a scripted model, so nothing here measures a model. Each command runs `--n`
times (default 5) interleaved with the others, so drift in machine load hits them alike; the
median is reported, with the machine's load average, since a busy machine can double these.

Run by hand: `uv run python benchmarks/startup.py [--n 5] [--src DIR]`. `--src` puts another
checkout's `shoal` first on the path (to compare with an older commit: `git worktree add`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from shoal.models.base import ChatRequest

TICKET = "Ticket from Anna: my order 70012345 arrived broken and I want a refund. {n}"
PLAN = {"steps": [{"id": "kind", "specialist": "classifier", "instruction": "categorise it", "inputs": ["task"]}]}


async def fill(db: Path, runs: int) -> str:
    """`runs` task runs (every other one waiting for a person), tickets with reviews and a head;
    returns a run id for `shoal show`."""
    from shoal.config import Settings, SpecialistSettings
    from shoal.engine import Shoal
    from shoal.evaluation import Labelled
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend
    from shoal.tickets.files import TicketRow

    settings = Settings.load(env={"SHOAL_DB": str(db)})
    settings.specialists = {
        "classifier": SpecialistSettings(threshold=0.0),
        "summary": SpecialistSettings(threshold=1.0),
    }
    backend = ScriptedBackend(_answer)
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as engine:
        run_id = ""
        for n in range(runs):
            report = await engine.run(TICKET.format(n=n), plan=PLAN)
            run_id = report.run_id
        for n in range(3):
            await engine.triage_ticket(TicketRow(key=f"T{n}", line=n + 1, text=TICKET.format(n=n)), source="t.csv")
        rows = [Labelled(text=f"{w} question {i}", label=label) for w, label in WORDS.items() for i in range(10)]
        await engine.train("classifier", files=rows, baseline=0)
    return run_id


WORDS = {"order parcel": "ORDER", "refund money": "REFUND", "account login": "ACCOUNT"}


def _answer(request: ChatRequest) -> str:
    schema = request.output_schema
    if schema is None:
        return "{}"
    if schema.__name__ == "Label":
        labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", ["ORDER"])
        return json.dumps({"label": labels[0]})
    return {
        "TicketEntities": '{"order_id": "70012345"}',
        "Summary": '{"summary": "Order 70012345 arrived broken and a refund is wanted", "key_points": []}',
        "ReplyDraft": '{"reply": "Thank you, we are looking into your order now."}',
    }.get(schema.__name__, "{}")


def timed(args: list[str], env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    # run elsewhere than a checkout: `python -m` and `-c` put the working directory first on the path
    subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="runs of each command (the median is shown)")
    parser.add_argument("--runs", type=int, default=20, help="task runs to fill the database with")
    parser.add_argument("--src", type=Path, help="a checkout whose shoal to time instead of this one")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "shoal.db"
        run_id = asyncio.run(fill(db, options.runs))
        env = {**os.environ, "SHOAL_DB": str(db), "COLUMNS": "120", "XDG_CONFIG_HOME": folder}
        if options.src is not None:
            env["PYTHONPATH"] = str(options.src.resolve())
        shoal = [sys.executable, "-m", "shoal.cli"]
        commands = {
            "python -c 'import shoal'": [sys.executable, "-c", "import shoal"],
            "shoal --help": [*shoal, "--help"],
            "shoal runs": [*shoal, "runs"],
            f"shoal show {run_id[:6]}": [*shoal, "show", run_id[:6]],
            "shoal review": [*shoal, "review"],
            "shoal heads": [*shoal, "heads"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for args in commands.values():  # once each first: the page cache, not the code, is timed there
            timed(args, env, folder)
        for _ in range(options.n):
            for name, args in commands.items():
                times[name].append(timed(args, env, folder))
    load = os.getloadavg()
    table = Table(
        title=f"whole-process time, median of {options.n} ({os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f})"
    )
    for column in ("command", "median s", "min s", "max s"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, values in times.items():
        table.add_row(name, f"{statistics.median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
